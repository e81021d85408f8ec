"""Named fault scenarios: each turns a seed into a schedule of faults.

A schedule is plain data (a tuple of :class:`Fault`), so a run can print
it, a failing run can be replayed from it, and the shrinker can drop faults
from it. Targets may be symbolic ("leader", "follower", "minority"), and are
resolved when the fault fires, from the cluster as it is then (which the
seed decides too).

Scenario names are the CLI's (kebab case). ``swarm`` draws its fault knobs
per seed and mixes everything, as TigerBeetle's VOPR and swarm testing do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from random import Random

from sim.clock_faults import CLOCK_DRIFT, CLOCK_JUMP
from sim.cluster import ClusterOptions
from sim.faults_disk import CORRUPT_KINDS, FAIL_KINDS, SLOW_DISK, SLOW_FSYNC_S


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault at a virtual time (seconds after the cluster is up).

    ``kind`` is one of: partition (``targets``: the minority side, possibly
    symbolic; the rest is the other side), isolate, cut (two targets), cut-one-way
    (from, to), clog (two targets, for ``duration_s``), latency (``duration_s``
    of ``value_s`` extra delay on a target's links), crash, restart, restart-all,
    reset, heal, strand (from, to, or one target and all its peers: connections that stall
    for ``duration_s``, are given up, and deliver a prefix of what they held ``value_s``
    after the new connection's first bytes); and the disk faults of ``sim.faults_disk``
    (fail-write-EIO and the like, slow-disk for ``duration_s`` with fsyncs of ``value_s``,
    corrupt-read-bit and corrupt-read-zero); and the clock faults of
    ``sim.clock_faults`` (clock-jump by ``value_s`` seconds, clock-drift at rate ``value_s``
    for ``duration_s``).
    """

    at_s: float
    kind: str
    targets: tuple[str, ...] = ()
    duration_s: float = 0.0
    value_s: float = 0.0

    def describe(self) -> str:
        """One line for reports."""
        text = f"{self.at_s:7.3f}s {self.kind}"
        if self.targets:
            text += " " + " ".join(self.targets)
        if self.duration_s:
            text += f" for {self.duration_s:.3f}s"
        if self.kind == CLOCK_JUMP:
            text += f" by {self.value_s:+g}s"
        elif self.kind == CLOCK_DRIFT:
            text += f" at rate {self.value_s:g}"
        elif self.value_s:
            text += f" +{self.value_s * 1000:.0f}ms"
        return text


@dataclass(frozen=True)
class Scenario:
    """A named way to break a cluster."""

    name: str
    description: str
    cluster: Callable[[Random], ClusterOptions]
    schedule: Callable[[Random, float], tuple[Fault, ...]]
    duration_s: float = 20.0


@dataclass(frozen=True)
class SwarmKnobs:
    """Per-seed weights of each fault kind for ``swarm``."""

    weights: dict[str, int] = field(default_factory=dict)
    mean_gap_s: float = 1.0


def _default_cluster(rng: Random) -> ClusterOptions:
    fsync_s = rng.choice((0.0002, 0.001, 0.005, 0.02))
    return ClusterOptions(
        size=5,
        latency_s=rng.choice((0.0005, 0.001, 0.005)),
        jitter_s=rng.choice((0.0, 0.002, 0.01)),
        fsync_latency_s=fsync_s,
        fsync_jitter_s=fsync_s * rng.choice((0.1, 1.0, 3.0)),
        clock_skew_s_max=rng.choice((0.0, 0.05, 0.3)),
    )


def _three_member_cluster(rng: Random) -> ClusterOptions:
    return replace(_default_cluster(rng), size=3)


def _crash_cluster(rng: Random) -> ClusterOptions:
    """Three members on slow disks (fsyncs of 5 to 60 ms): crashes often land mid-fsync."""
    fsync_s = rng.choice((0.005, 0.02))
    return replace(
        _default_cluster(rng), size=3, fsync_latency_s=fsync_s, fsync_jitter_s=2 * fsync_s
    )


def _split_brain(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    """etcd's split brain: the leader and one follower in a minority, the rest on the
    other side; the minority must commit nothing and serve no linearizable read."""
    start = rng.uniform(2.0, 4.0)
    length = rng.uniform(5.0, 9.0)
    return (
        Fault(start, "partition", ("leader", "follower"), duration_s=length),
        Fault(start + length, "heal"),
    )


def _fault_then_heal(
    rng: Random,
    duration_s: float,
    *,
    kind: str,
    draw_targets: Callable[[Random], tuple[str, ...]],
    first_s: tuple[float, float],
    margin_s: float,
    length_s: tuple[float, float],
    gap_s: tuple[float, float],
) -> tuple[Fault, ...]:
    """One fault, healed after a while, again and again until ``margin_s`` before the end.

    The draws come in a fixed order (the first instant; then per fault its targets, its
    length, the gap after it), so a seed gives the same schedule every time.
    """
    faults = []
    at = rng.uniform(*first_s)
    while at < duration_s - margin_s:
        targets = draw_targets(rng)
        length = rng.uniform(*length_s)
        faults.append(Fault(at, kind, targets, duration_s=length))
        faults.append(Fault(at + length, "heal"))
        at += length + rng.uniform(*gap_s)
    return tuple(faults)


def _leader_isolation(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    return _fault_then_heal(
        rng, duration_s, kind="isolate", draw_targets=lambda _: ("leader",),
        first_s=(1.0, 3.0), margin_s=2, length_s=(1.0, 4.0), gap_s=(1.0, 3.0),
    )  # fmt: skip


def _flapping_partitions(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    sides = (("random",), ("random", "random"), ("leader",), ("leader", "random"))
    return _fault_then_heal(
        rng, duration_s, kind="partition", draw_targets=lambda r: r.choice(sides),
        first_s=(0.5, 1.5), margin_s=1, length_s=(0.2, 1.5), gap_s=(0.1, 1.0),
    )  # fmt: skip


def _one_way_partition(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    pairs = (("leader", "follower"), ("follower", "leader"), ("random", "random"))
    return _fault_then_heal(
        rng, duration_s, kind="cut-one-way", draw_targets=lambda r: r.choice(pairs),
        first_s=(1.0, 3.0), margin_s=2, length_s=(1.0, 4.0), gap_s=(0.5, 2.0),
    )  # fmt: skip


def _rolling_restart(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    faults = []
    at = rng.uniform(1.0, 2.0)
    for name in ClusterOptions().names():
        faults.append(Fault(at, "crash", (name,)))
        at += rng.uniform(0.5, 2.0)
        faults.append(Fault(at, "restart", (name,)))
        at += rng.uniform(1.0, 2.5)
    return tuple(fault for fault in faults if fault.at_s < duration_s)


def _crash_during_commit(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    faults = []
    at = rng.uniform(1.0, 2.0)
    while at < duration_s - 1:
        targets = rng.choice((("leader",), ("follower",), ("leader", "follower")))
        faults.append(Fault(at, "crash", targets))
        at += rng.uniform(0.05, 1.5)
        faults.append(Fault(at, "restart-all"))
        at += rng.uniform(0.5, 2.5)
    return tuple(faults)


def _unsynced_loss(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    """Crash a majority at once (power loss): unsynced writes are lost on all of them."""
    faults = []
    at = rng.uniform(2.0, 4.0)
    while at < duration_s - 2:
        faults.append(Fault(at, "crash", ("leader", "follower", "follower")))
        at += rng.uniform(0.1, 1.0)
        faults.append(Fault(at, "restart-all"))
        at += rng.uniform(2.0, 5.0)
    return tuple(faults)


def _snapshot_catch_up(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    """A follower falls far behind (the log is compacted past it) and catches up by snapshot."""
    start = rng.uniform(1.0, 2.0)
    length = rng.uniform(8.0, 12.0)
    kind = rng.choice(("isolate", "crash"))
    if kind == "crash":
        return (Fault(start, "crash", ("follower",)), Fault(start + length, "restart-all"))
    return (
        Fault(start, "isolate", ("follower",), duration_s=length),
        Fault(start + length, "heal"),
    )


def _snapshot_cluster(rng: Random) -> ClusterOptions:
    return replace(_default_cluster(rng), snapshot_every_entries=40, snapshot_catch_up_entries=10)


def _disk_faults(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    """Failures on one member after another: a failed write or fsync, often a crash of that
    member a little later (what a failed fsync doomed is lost then), and a restart of every
    stopped member after that; now and then a slow disk instead."""
    faults: list[Fault] = []
    at = rng.uniform(0.5, 1.5)
    while at < duration_s - 1:
        member = rng.choice(MEMBERS)
        if rng.random() < 0.25:
            length = rng.uniform(1.0, 3.0)
            faults.append(Fault(at, SLOW_DISK, (member,), length, rng.choice(SLOW_FSYNC_S)))
            at += rng.uniform(0.5, 2.0)
            continue
        faults.append(Fault(at, rng.choice(FAIL_KINDS), (member,)))
        later = at + rng.uniform(0.2, 1.5)
        if rng.random() < 0.7:
            faults.append(Fault(later, "crash", (member,)))
        faults.append(Fault(later + rng.uniform(0.2, 1.0), "restart-all"))
        at = later + rng.uniform(0.5, 1.5)
    faults.sort(key=lambda fault: fault.at_s)
    return tuple(faults)


def _corrupt_reads(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    """Damaged reads on one member after another, mostly followed by a crash and restart of
    that member (opening its data reads every value, so the damaged read lands there);
    otherwise it lands on a read while the member runs (a snapshot it makes, old entries a
    lagging follower needs)."""
    faults: list[Fault] = []
    at = rng.uniform(0.5, 1.5)
    while at < duration_s - 1:
        member = rng.choice(MEMBERS)
        faults.append(Fault(at, rng.choice(CORRUPT_KINDS), (member,)))
        later = at + rng.uniform(0.1, 1.0)
        if rng.random() < 0.8:
            faults.append(Fault(later, "crash", (member,)))
        faults.append(Fault(later + rng.uniform(0.2, 1.0), "restart-all"))
        at = later + rng.uniform(0.5, 1.5)
    faults.sort(key=lambda fault: fault.at_s)
    return tuple(faults)


def _slow_disk(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    """A member's disk stalls (fsyncs of hundreds of ms), and the member crashes during a
    stall now and then (what it had not synced is lost), then restarts."""
    faults: list[Fault] = []
    at = rng.uniform(0.5, 1.5)
    while at < duration_s - 1:
        member = rng.choice(MEMBERS)
        length = rng.uniform(1.0, 3.0)
        faults.append(Fault(at, SLOW_DISK, (member,), length, rng.choice(SLOW_FSYNC_S)))
        if rng.random() < 0.6:
            crash_at = at + rng.uniform(0.2, length)
            faults.append(Fault(crash_at, "crash", (member,)))
            faults.append(Fault(crash_at + rng.uniform(0.2, 1.0), "restart-all"))
        at += length + rng.uniform(0.3, 1.5)
    faults.sort(key=lambda fault: fault.at_s)
    return tuple(faults)


STRAND_DELAYS_S = (0.001, 0.003, 0.01, 0.03)
"""How long after the new connection's first bytes a stranded one's held bytes arrive."""


def _stale_reconnect(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    """A member's connections to another stall and are given up while their bytes are still
    on the way; they arrive just behind the new connection's first bytes (reordering across
    a reconnect). Mostly the leader's connections to every follower at once: nothing commits
    while they stall, so a late append lands above what its follower knows is committed."""
    pairs = (("leader", "follower"), ("follower", "leader"), ("random", "random"))
    faults = []
    at = rng.uniform(0.5, 1.5)
    while at < duration_s - 1:
        targets = ("leader",) if rng.random() < 0.6 else rng.choice(pairs)
        stall_s, delay_s = rng.uniform(0.02, 0.3), rng.choice(STRAND_DELAYS_S)
        faults.append(Fault(at, "strand", targets, stall_s, delay_s))
        at += stall_s + rng.expovariate(1 / 0.4)
    return tuple(faults)


CLOCK_JUMPS_S = (1.0, 5.0, 30.0, 120.0, 300.0)
"""How far a wall clock jumps (either way): an NTP step to an operator's mistake."""
CLOCK_RATES = (0.5, 0.9, 0.97, 1.03, 1.1, 1.5, 2.0)
"""Rates a drifting monotonic clock runs at: a few percent, and far beyond any real quartz
(tens of ppm) to show what the lease checker's scaled bounds still hold to."""


def _clock_faults(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    """One member's clocks go wrong, again and again: its wall clock jumps (seconds to
    minutes, forward or back), or its monotonic clock drifts fast or slow for a few seconds.
    Targets are mostly the leader (whose clock decides lease expiry)."""
    faults: list[Fault] = []
    at = rng.uniform(0.5, 1.5)
    while at < duration_s - 1:
        target = rng.choice(("leader", "leader", "follower", "random"))
        if rng.random() < 0.5:
            jump_s = rng.choice((-1, 1)) * rng.choice(CLOCK_JUMPS_S)
            faults.append(Fault(at, CLOCK_JUMP, (target,), value_s=jump_s))
            at += rng.uniform(0.3, 1.5)
            continue
        length = rng.uniform(1.0, 4.0)
        faults.append(Fault(at, CLOCK_DRIFT, (target,), length, rng.choice(CLOCK_RATES)))
        at += rng.uniform(0.3, length)
    return tuple(faults)


MEMBERS = ClusterOptions().names()
"""Disk faults name members (a symbolic target could resolve to another member at the crash)."""


SWARM_KINDS = ("partition", "isolate", "cut-one-way", "clog", "latency", "crash", "reset",
               CLOCK_JUMP, CLOCK_DRIFT, "corrupt-read")  # fmt: skip


def draw_swarm_knobs(rng: Random) -> SwarmKnobs:
    """Each fault kind is off for some seeds and frequent for others."""
    weights = {kind: rng.choice((0, 0, 1, 3, 6)) for kind in SWARM_KINDS}
    if not any(weights.values()):
        weights[rng.choice(SWARM_KINDS)] = 1
    return SwarmKnobs(weights, mean_gap_s=rng.choice((0.3, 1.0, 2.5)))


def _swarm(rng: Random, duration_s: float) -> tuple[Fault, ...]:
    knobs = draw_swarm_knobs(rng)
    kinds = [kind for kind, weight in knobs.weights.items() for _ in range(weight)]
    faults: list[Fault] = []
    at = rng.uniform(0.5, 2.0)
    while at < duration_s - 1:
        kind = rng.choice(kinds)
        length = rng.uniform(0.3, 4.0)
        faults.extend(_swarm_fault(rng, kind, at, length))
        at += rng.expovariate(1 / knobs.mean_gap_s)
    faults.sort(key=lambda fault: fault.at_s)
    return tuple(faults)


def _swarm_fault(rng: Random, kind: str, at: float, length: float) -> list[Fault]:
    target = rng.choice(("leader", "follower", "random"))
    match kind:
        case "corrupt-read":  # a damaged read, then a crash and restart that open its data
            member = rng.choice(MEMBERS)
            damaged = Fault(at, rng.choice(CORRUPT_KINDS), (member,))
            return [damaged, Fault(at + length / 2, "crash", (member,)),
                    Fault(at + length, "restart-all")]  # fmt: skip
        case "partition":
            side = rng.choice(((target,), (target, "random")))
            return [Fault(at, "partition", side, duration_s=length), Fault(at + length, "heal")]
        case "isolate":
            return [Fault(at, "isolate", (target,), duration_s=length), Fault(at + length, "heal")]
        case "cut-one-way":
            pair = (target, rng.choice(("leader", "follower", "random")))
            return [Fault(at, "cut-one-way", pair, duration_s=length), Fault(at + length, "heal")]
        case "clog":
            return [Fault(at, "clog", (target, "random"), duration_s=length)]
        case "latency":
            extra = rng.choice((0.01, 0.05, 0.2))
            return [Fault(at, "latency", (target,), duration_s=length, value_s=extra)]
        case "crash":
            return [Fault(at, "crash", (target,)), Fault(at + length, "restart-all")]
        case "reset":
            return [Fault(at, "reset", (target,))]
        case "clock-jump":
            jump_s = rng.choice((-1, 1)) * rng.choice(CLOCK_JUMPS_S)
            return [Fault(at, CLOCK_JUMP, (target,), value_s=jump_s)]
        case "clock-drift":
            return [Fault(at, CLOCK_DRIFT, (target,), length, rng.choice(CLOCK_RATES))]
    raise AssertionError(kind)


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("split-brain", "leader and one follower cut off in a minority of 5",
                 _default_cluster, _split_brain),
        Scenario("leader-isolation", "the leader is cut off from everyone, again and again",
                 _default_cluster, _leader_isolation),
        Scenario("flapping-partitions", "short random partitions, one after another",
                 _default_cluster, _flapping_partitions),
        Scenario("one-way-partition", "links that carry bytes one way only",
                 _default_cluster, _one_way_partition),
        Scenario("rolling-restart", "every member crashes and restarts in turn",
                 _default_cluster, _rolling_restart),
        Scenario("crash-during-commit", "the leader, and a follower, crash mid-write",
                 _crash_cluster, _crash_during_commit),
        Scenario("unsynced-loss", "a majority loses power at once, losing unsynced writes",
                 _default_cluster, _unsynced_loss),
        Scenario("snapshot-catch-up", "a follower falls behind the compacted log",
                 _snapshot_cluster, _snapshot_catch_up),
        Scenario("disk-faults", "writes and fsyncs that fail (EIO, ENOSPC), crashes after them",
                 _default_cluster, _disk_faults),
        Scenario("corrupt-reads", "reads that come back damaged, crashes and restarts",
                 _snapshot_cluster, _corrupt_reads),
        Scenario("slow-disk", "a disk whose fsyncs take hundreds of ms, crashes during it",
                 _default_cluster, _slow_disk),
        Scenario("stale-reconnect", "connections given up with bytes still on the way",
                 _default_cluster, _stale_reconnect),
        Scenario("clock-faults", "one member's wall clock jumps, its monotonic clock drifts",
                 _default_cluster, _clock_faults),
        Scenario("swarm", "every fault kind, knobs drawn per seed", _default_cluster, _swarm),
    )
}  # fmt: skip
