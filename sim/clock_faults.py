"""Clock faults on one member: its wall clock jumps, its monotonic clock drifts.

- ``clock-jump`` (``value_s``: seconds, either sign): the target's wall clock steps at once.
  Leases and Raft run on the monotonic clock, so nothing may change; only what etcd itself
  keeps in wall time moves (v2 TTL instants the leader stamps, ``started_at``).
- ``clock-drift`` (``value_s``: the rate, e.g. 1.05; ``duration_s``): the target's monotonic
  clock runs at that rate for that long, then at true time's rate again. Its Raft ticks,
  elections, heartbeats and lease expiry all run at that rate (``sim.clock.SimClock``).

The cluster remembers the fastest and slowest rate any clock ran at (``ClockExtremes``): the
lease checker's bounds scale with them (docs/simulator.md, Clock faults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from sim.cluster import SimCluster
    from sim.scenarios import Fault

CLOCK_JUMP: Final = "clock-jump"
CLOCK_DRIFT: Final = "clock-drift"
CLOCK_FAULT_KINDS: Final = frozenset({CLOCK_JUMP, CLOCK_DRIFT})


@dataclass
class ClockExtremes:
    """The fastest and slowest any member's monotonic clock ran during a run."""

    rate_max: float = 1.0
    rate_min: float = 1.0

    def saw(self, rate: float) -> None:
        """A clock ran at ``rate`` for a while."""
        self.rate_max = max(self.rate_max, rate)
        self.rate_min = min(self.rate_min, rate)


def fire_clock_fault(
    cluster: SimCluster, fault: Fault, names: list[str], nursery: trio.Nursery
) -> None:
    """Carry out a clock fault on its (resolved) targets."""
    for name in names:
        clock = cluster.slots[name].clock
        if fault.kind == CLOCK_JUMP:
            clock.jump(fault.value_s)
        elif fault.kind == CLOCK_DRIFT:
            clock.set_rate(fault.value_s)
            cluster.clock_extremes.saw(fault.value_s)
            nursery.start_soon(_end_drift, cluster, name, fault.duration_s, fault.value_s)
        else:
            raise ValueError(f"not a clock fault: {fault.kind!r}")


async def _end_drift(cluster: SimCluster, name: str, after_s: float, rate: float) -> None:
    """Back to true time's rate, unless a later drift fault set another rate meanwhile (it
    ends that one itself)."""
    await trio.sleep(after_s)
    clock = cluster.slots[name].clock
    if clock.rate == rate:
        clock.set_rate(1.0)
        cluster.note(f"clock-drift {name} ends")
