"""A token bucket: at most ``rate_per_s`` on average, bursts of at most ``burst``.

Pure: the caller passes the time (the serving member's Trio clock, virtual in the simulator;
never the wall clock). ``reserve`` spends now and says how long to wait first (bounded);
``take`` refuses when fewer tokens than asked remain and then takes
nothing; ``charge`` takes unconditionally (a read's response size, known only after it ran),
so the bucket may go into debt and later requests wait until it is paid back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

DEBT_BURSTS_MAX: Final = 4
"""A bucket owes at most this many bursts (one huge response does not shut a tenant out for
long)."""


@dataclass(slots=True)
class TokenBucket:
    """Tokens accrue at ``rate_per_s`` up to ``burst``; a request spends them."""

    rate_per_s: float
    burst: float
    tokens: float = field(default=-1.0)
    updated_s: float = field(default=0.0)

    def __post_init__(self) -> None:
        assert self.rate_per_s > 0, self.rate_per_s
        assert self.burst > 0, self.burst
        if self.tokens < 0:
            self.tokens = self.burst  # a new bucket starts full

    def _refill(self, now_s: float) -> None:
        elapsed_s = now_s - self.updated_s
        if elapsed_s > 0:
            self.tokens = min(self.burst, self.tokens + elapsed_s * self.rate_per_s)
        self.updated_s = max(self.updated_s, now_s)

    def take(self, amount: float, now_s: float) -> bool:
        """Spend ``amount`` if the bucket holds it (an amount over the burst needs a full
        bucket); whether it did."""
        self._refill(now_s)
        if self.tokens >= min(amount, self.burst) and self.tokens > 0:
            self.tokens -= amount
            self.tokens = max(self.tokens, -DEBT_BURSTS_MAX * self.burst)
            return True
        return False

    def reserve(self, amount: float, now_s: float, wait_max_s: float) -> float | None:
        """Spend ``amount`` now, in debt if need be, when the debt is paid back within
        ``wait_max_s``: the seconds to wait before serving (0: at once); None (nothing spent)
        when it would take longer. Waiters reserve in turn, so they wake one rate apart
        rather than all at once."""
        self._refill(now_s)
        wait_s = max(0.0, (amount - self.tokens) / self.rate_per_s) if amount > 0 else 0.0
        if amount <= 0 and self.tokens < 0:
            wait_s = -self.tokens / self.rate_per_s
        if wait_s > wait_max_s:
            return None
        self.tokens -= amount
        return wait_s

    def charge(self, amount: float, now_s: float) -> None:
        """Spend ``amount`` whatever the bucket holds (bounded debt)."""
        self._refill(now_s)
        self.tokens = max(self.tokens - amount, -DEBT_BURSTS_MAX * self.burst)
