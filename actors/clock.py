"""Wall-clock time for the member, injected.

Raft runs on ticks and Trio's clock, but etcd's v2 API speaks wall-clock
time: a TTL becomes an expiration instant, and replies render it in RFC 3339.
That instant is the only wall-clock value member code needs, so it comes
from an injected Clock: the real one in the composition root, a virtual one
in the simulator (with per-member skew).
"""

from __future__ import annotations

from typing import Protocol

import trio


class Clock(Protocol):
    """Wall-clock time in nanoseconds since the Unix epoch."""

    def now_ns(self) -> int:
        """The current wall-clock time."""
        ...


class TrioClock:
    """Wall time derived from Trio's clock: an epoch offset plus ``trio.current_time()``.

    Under a MockClock this is virtual wall time; with the real Trio clock it
    advances at the real rate from the given epoch.
    """

    def __init__(self, epoch_ns: int) -> None:
        self._epoch_ns = epoch_ns
        self._trio_start_ns = int(trio.current_time() * 1e9)

    def now_ns(self) -> int:
        return self._epoch_ns + int(trio.current_time() * 1e9) - self._trio_start_ns
