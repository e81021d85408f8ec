"""The member's clocks, injected: wall-clock time, and the monotonic time its timers run on.

etcd's v2 API speaks wall-clock time: a TTL becomes an expiration instant, and replies render
it in RFC 3339. That instant is the only wall-clock value member code needs, so it comes from
an injected ``Clock``.

Elapsed time is another clock: the Raft tick driver and the lessor (lease expiry) measure it
on the member's *monotonic* clock (``MemberClock``), never the wall clock, which can jump (an
NTP step, an operator): a jump must change nothing. In production both are Trio's clock
(``TrioClock``: the monotonic clock is ``trio.current_time()``, sleeping is ``trio.sleep``).
The simulator gives each member its own (``sim.clock.SimClock``): a wall clock with skew and
jumps, and a monotonic clock that drifts (runs faster or slower than true time), whose sleeps
end when *that* clock reaches the deadline, so one member's timers really run fast or slow.

Member code that wants "now" for a timer, or "sleep d" on one, asks its ``MemberClock``;
deadlines passed to Trio (``move_on_at``) go through ``true_at`` (identity in production).
"""

from __future__ import annotations

from typing import Protocol

import trio


class Clock(Protocol):
    """Wall-clock time in nanoseconds since the Unix epoch."""

    def now_ns(self) -> int:
        """The current wall-clock time."""
        ...


class MemberClock(Clock, Protocol):
    """A member's wall clock and its monotonic clock (seconds, arbitrary origin)."""

    def monotonic_s(self) -> float:
        """The member's monotonic time: what its timers measure elapsed time on."""
        ...

    def true_at(self, monotonic_s: float) -> float:
        """The Trio time at which the monotonic clock will read ``monotonic_s`` (for
        ``trio.move_on_at``; identity in production)."""
        ...

    async def sleep(self, duration_s: float) -> None:
        """Sleep until the monotonic clock has advanced by ``duration_s``."""
        ...


class TrioClock:
    """Wall time derived from Trio's clock: an epoch offset plus ``trio.current_time()``;
    the monotonic clock is Trio's own.

    Under a MockClock this is virtual wall time; with the real Trio clock it
    advances at the real rate from the given epoch.
    """

    def __init__(self, epoch_ns: int, *, started_s: float | None = None) -> None:
        """``epoch_ns`` is the wall time at ``started_s`` on Trio's clock (default: now)."""
        self._epoch_ns = epoch_ns
        start_s = trio.current_time() if started_s is None else started_s
        self._trio_start_ns = int(start_s * 1e9)

    def now_ns(self) -> int:
        return self._epoch_ns + int(trio.current_time() * 1e9) - self._trio_start_ns

    def monotonic_s(self) -> float:
        return trio.current_time()

    def true_at(self, monotonic_s: float) -> float:
        return monotonic_s

    async def sleep(self, duration_s: float) -> None:
        await trio.sleep(duration_s)
