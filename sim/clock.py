"""One simulated member's clocks: a wall clock that jumps, a monotonic clock that drifts.

Every member shares Trio's single virtual clock (*true time*). ``SimClock`` gives one member
its own view of it (``actors.clock.MemberClock``):

- **Wall clock**: true time from the simulation's epoch, plus the member's fixed skew, plus
  every jump so far (forward or back, seconds to minutes: an NTP step, an operator). A jump
  must change nothing that matters: nothing in member code measures elapsed time on it.
- **Monotonic clock**: piecewise linear in true time, ``base + rate * (true - base_true)``.
  ``rate`` is 1 until a drift fault sets it (1.03: the member's clock runs 3 % fast). Its
  origin is an arbitrary boot offset, not 0, so code that compares a member's monotonic
  reading with Trio's time (mixing clocks) is wrong by a lot, at once.

Sleeping on the monotonic clock is the point: ``sleep(d)`` ends when *this* clock has
advanced by ``d``, which is ``d / rate`` of true time; if the rate changes during the sleep,
the sleeper wakes (``_changed``), recomputes the true instant its deadline now falls at, and
sleeps on. So a fast member's ticks, elections, heartbeats and lease checks all come early in
true time, a slow member's late, and a rate change takes effect at once, mid-sleep.

Determinism: no randomness here (the cluster draws skew, boot offset and faults from the
seed), and every value derives from ``trio.current_time()``.
"""

from __future__ import annotations

from typing import Final

import trio

RATE_MIN: Final = 0.01
"""A monotonic clock never stops or runs backwards (a rate below this is refused)."""


class SimClock:
    """The wall and monotonic clocks of one simulated member (see the module docstring).

    Args:
        wall_origin_ns: the wall clock's reading at true time 0 (epoch plus skew).
        boot_offset_s: the monotonic clock's reading at true time ``start_s``.
        start_s: the true time the clock starts at (``trio.current_time()`` when built).
    """

    def __init__(self, wall_origin_ns: int, boot_offset_s: float, start_s: float) -> None:
        self._wall_origin_ns = wall_origin_ns
        self.jumped_ns = 0
        """The sum of every wall-clock jump so far."""
        self._base_true_s = start_s
        self._base_s = boot_offset_s
        self.rate = 1.0
        """Monotonic seconds per true second."""
        self._changed = trio.Event()

    # -- the wall clock --------------------------------------------------------------------

    def now_ns(self) -> int:
        return self._wall_origin_ns + self.jumped_ns + int(trio.current_time() * 1e9)

    def jump(self, by_s: float) -> None:
        """Step the wall clock by ``by_s`` (either way); the monotonic clock does not move."""
        self.jumped_ns += int(by_s * 1e9)

    # -- the monotonic clock ---------------------------------------------------------------

    def monotonic_s(self) -> float:
        return self._base_s + self.rate * (trio.current_time() - self._base_true_s)

    def true_at(self, monotonic_s: float) -> float:
        return self._base_true_s + (monotonic_s - self._base_s) / self.rate

    def set_rate(self, rate: float) -> None:
        """Run the monotonic clock at ``rate`` from now on (1.0: true time's rate); sleepers
        recompute when their deadlines fall."""
        if rate < RATE_MIN:
            raise ValueError(f"a monotonic clock rate must be at least {RATE_MIN}: {rate}")
        now_s = trio.current_time()
        self._base_s = self.monotonic_s()
        self._base_true_s = now_s
        self.rate = rate
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def sleep(self, duration_s: float) -> None:
        await self.sleep_until(self.monotonic_s() + duration_s)

    async def sleep_until(self, deadline_s: float) -> None:
        """Sleep until the monotonic clock reads ``deadline_s``, across rate changes."""
        while True:
            changed = self._changed
            with trio.move_on_at(self.true_at(deadline_s)) as scope:
                await changed.wait()
            if scope.cancelled_caught or not changed.is_set():
                return
