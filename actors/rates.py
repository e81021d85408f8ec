"""Message counts and rates for ``/v2/stats/self``, as etcd reports them.

etcd keeps the last requests in a queue and reports packages per second and
bytes per second over the time they span; this meter does the same over the
last ``SAMPLES_MAX`` events, timed with Trio's clock (virtual in the simulator).
"""

from __future__ import annotations

from collections import deque

import trio

SAMPLES_MAX = 200
"""Events the rates are computed over."""


class RateMeter:
    """Counts events, and measures their recent rate in events and bytes per second."""

    def __init__(self) -> None:
        self.count = 0
        self._samples: deque[tuple[float, int]] = deque(maxlen=SAMPLES_MAX)

    def record(self, size_bytes: int) -> None:
        """One event of ``size_bytes``."""
        self.count += 1
        self._samples.append((trio.current_time(), size_bytes))

    def rates(self) -> tuple[float, float]:
        """(events per second, bytes per second) over the recent events; 0 when idle."""
        if len(self._samples) < 2:
            return 0.0, 0.0
        span_s = trio.current_time() - self._samples[0][0]
        if span_s <= 0:
            return 0.0, 0.0
        total_bytes = sum(size for _, size in self._samples)
        return len(self._samples) / span_s, total_bytes / span_s
