"""One simulation run: a seed, a scenario, and everything that follows from them.

The run founds a cluster of real members on the simulated network and disks,
waits for a leader, then for the scenario's duration lets the workload's
clients send requests while the scenario's faults fire. Then it heals every
fault, restarts every crashed member, and demands that the cluster recovers
(a leader commits a new write and every member applies it) within a bound.
Throughout, the Monitor checks the cluster's invariants; afterwards the
clients' history is checked for linearizability.

Everything derives from the seed, Trio's scheduler included
(``sim.determinism``): the same seed gives the same trace hash, bit for bit.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from random import Random

import trio

from actors.leases import RELAY_RETRY_S
from sim.clock_faults import CLOCK_FAULT_KINDS, fire_clock_fault
from sim.cluster import MONITOR_INTERVAL_S, Monitor, SimCluster
from sim.determinism import TaskSteps, run_deterministic
from sim.faults_disk import DISK_FAULT_KINDS, fire_disk_fault
from sim.history import History, OpKind
from sim.lease_checker import Election, LeaseFacts, check_leases
from sim.linearizability import CheckResult, check_history
from sim.liveness import liveness_phase
from sim.mvcc_agreement import agreed_history, agreed_leases, check_mvcc_agreement
from sim.scenarios import SCENARIOS, Fault
from sim.v3_records import V3Log
from sim.watch_checker import AckedWrite, check_watches
from sim.workload import WorkloadOptions, run_workload
from sim.workload_streams import StreamOptions, run_stream_clients
from sim.workload_v3 import V3WorkloadOptions, run_v3_workload

log = logging.getLogger(__name__)

STARTUP_S_MAX = 15.0
"""A new cluster must elect a leader within this much virtual time."""
TASK_STEPS_PER_SIMULATED_S_MAX = 40_000
"""The watchdog's budget: a healthy run takes about 12,000 task steps per simulated second;
one that needs more than this (plus a fixed allowance) spins, and is stopped and reported."""
TASK_STEPS_ALLOWANCE = 1_000_000
APIS = ("v2", "v3")
"""The client APIs a run's workload can speak."""
STREAMS_SEED_SALT = 0x57EA
"""The v3 lease holders and watchers draw from their own generator (the seed's, salted), so
adding them left the KV clients' draws as they were."""


WATCHDOG_CHECK_EVERY_PASSES = 256
"""The watchdog compares the task steps with its budget every this many run-loop passes."""


class Watchdog(TaskSteps):
    """Stops a run that spins: counts task steps, a deterministic measure of work (wall time
    is not: it depends on the machine), and cancels the run past the budget.

    A deadlock needs no watchdog: every member ticks, so virtual time always moves on, and a
    stuck cluster fails the recovery deadline.

    With ``wall_s_max`` it also stops a run that has taken that much wall time (the sweep's
    guard against a seed that would hold a worker for ever). It looks only at its own
    checkpoints, between task steps, so the run ends through its cancel scope like any other
    stop; an exception raised into the run from a signal handler can land inside Trio's
    scheduler or be caught by member code that logs and goes on. Reading the wall clock does
    not make runs differ: the watchdog acts only once the limit is passed, and a run that
    passes it fails whatever it would have done.
    """

    def __init__(self, wall_s_max: float | None = None) -> None:
        super().__init__()
        self.passes = 0
        self.expired = False
        self.over_wall_time = False
        self.scope: trio.CancelScope | None = None
        self.wall_s_max = wall_s_max
        self._started_s = time.perf_counter()  # the harness's guard; not inside the simulation

    @property
    def steps(self) -> int:
        """Task steps so far (all of the run's, once it has ended)."""
        return self.count()

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1
        if self.passes % WATCHDOG_CHECK_EVERY_PASSES or self.expired or self.scope is None:
            return
        if self.wall_s_max is not None and time.perf_counter() - self._started_s > self.wall_s_max:
            self.expired = self.over_wall_time = True
            self.scope.cancel()
            return
        budget = TASK_STEPS_ALLOWANCE + trio.current_time() * TASK_STEPS_PER_SIMULATED_S_MAX
        if self.count() > budget:
            self.expired = True
            self.scope.cancel()


@dataclass(frozen=True)
class RunOptions:
    """What to run.

    Attributes:
        seed: decides everything else.
        scenario: a name from ``sim.scenarios.SCENARIOS``.
        planted_bug: a rule broken on purpose (``MemberConfig.planted_bugs`` names).
        duration_s: the faulty phase (the scenario's own by default).
        faults: an explicit schedule instead of the scenario's (replaying a shrunk run).
        clients / keys: the workload's size.
        operations_max: stop each client after this many requests (for shrinking).
        api: which API the clients speak: ``v2`` (``sim.workload``, HTTP keys API) or ``v3``
            (``sim.workload_v3``, the KV API over gRPC).
    """

    seed: int
    scenario: str = "swarm"
    planted_bug: str | None = None
    duration_s: float | None = None
    faults: tuple[Fault, ...] | None = None
    clients: int = 8
    keys: int = 4
    operations_max: int | None = None
    api: str = "v2"

    def __post_init__(self) -> None:
        if self.api not in APIS:
            raise ValueError(f"unknown api {self.api!r}; one of {', '.join(APIS)}")

    def replay_command(self, faults_file: str | None = None) -> str:
        """The command that runs this again (with its own fault schedule from a file)."""
        command = f"troika sim run --seed {self.seed} --scenario {self.scenario}"
        if self.planted_bug:
            command += f" --bug {self.planted_bug}"
        if self.duration_s is not None:
            command += f" --duration {self.duration_s:g}"
        if self.clients != RunOptions.clients:
            command += f" --clients {self.clients}"
        if faults_file is not None:
            command += f" --faults-file {faults_file}"
        if self.operations_max is not None:
            command += f" --operations-max {self.operations_max}"
        if self.api != RunOptions.api:
            command += f" --api {self.api}"
        return command


@dataclass
class RunResult:
    """What a run saw."""

    options: RunOptions
    faults: tuple[Fault, ...]
    violations: list[str] = field(default_factory=list)
    linearizability: str = "unknown"
    linearizability_detail: str = ""
    history: History | None = None
    events: list[tuple[float, str]] = field(default_factory=list)
    trace_hash: str = ""
    simulated_s: float = 0.0
    wall_s: float = 0.0
    operations: int = 0
    task_steps: int = 0
    check: CheckResult | None = None
    v3_log: V3Log | None = None
    """What the v3 lease holders and watchers recorded (v3 runs only)."""

    @property
    def passed(self) -> bool:
        """No invariant broken and the history linearizable (or too big to tell)."""
        return not self.violations and self.linearizability != "violation"


async def _fire(cluster: SimCluster, fault: Fault, rng: Random, nursery: trio.Nursery) -> None:
    """Carry out one fault, resolving symbolic targets against the cluster as it is now."""
    names = _resolve(cluster, fault.targets, rng)
    network = cluster.network
    others = [name for name in cluster.names if name not in names]
    match fault.kind:
        case "partition" | "isolate":
            network.partition(names, others)
        case "cut-one-way":
            if len(names) == 2:
                network.cut(names[0], names[1], one_way=True)
        case "clog":
            if len(names) == 2:
                network.clog(names[0], names[1], trio.current_time() + fault.duration_s)
        case "latency":
            for name in names:
                for other in others:
                    network.set_latency(name, other, fault.value_s, fault.value_s / 2)
            nursery.start_soon(_restore_latency, cluster, names, others, fault.duration_s)
        case "crash":
            for name in names:
                cluster.crash(name)
        case "restart":
            for name in names:
                await cluster.restart(name)
        case "restart-all":
            for name in cluster.names:
                await cluster.restart(name)
        case "reset":
            for name in names:
                network.reset(name)
        case "heal":
            network.heal()
        case "strand":  # (from, to), or one target: its connections to every other member
            for peer in names[1:2] or (others if names else []):
                network.strand(names[0], peer, fault.value_s, fault.duration_s)
        case kind if kind in DISK_FAULT_KINDS:
            fire_disk_fault(cluster, fault, names)
        case kind if kind in CLOCK_FAULT_KINDS:
            fire_clock_fault(cluster, fault, names, nursery)
        case _:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
    cluster.note(f"{fault.kind} {' '.join(names)}".rstrip())


async def _restore_latency(
    cluster: SimCluster, names: list[str], others: list[str], after_s: float
) -> None:
    await trio.sleep(after_s)
    options = cluster.options
    for name in names:
        for other in others:
            cluster.network.set_latency(name, other, options.latency_s, options.jitter_s)


def _resolve(cluster: SimCluster, targets: tuple[str, ...], rng: Random) -> list[str]:
    """Symbolic targets (leader, follower, random) as distinct member names."""
    chosen: list[str] = []
    for target in targets:
        candidates = [name for name in cluster.names if name not in chosen]
        if target == "leader":
            leader = cluster.leader()
            pick = leader if leader in candidates else None
        elif target == "follower":
            leader = cluster.leader()
            followers = [name for name in candidates if name != leader and name in cluster.up()]
            pick = rng.choice(followers) if followers else None
        elif target == "random":
            pick = rng.choice(candidates) if candidates else None
        else:
            pick = target if target in candidates else None
        if pick is None and candidates:
            pick = rng.choice(candidates)
        if pick is not None:
            chosen.append(pick)
    return chosen


async def _run_faults(
    cluster: SimCluster, faults: tuple[Fault, ...], start_s: float, rng: Random
) -> None:
    async with trio.open_nursery() as nursery:
        for fault in faults:
            await trio.sleep_until(start_s + fault.at_s)
            await _fire(cluster, fault, rng, nursery)


async def _simulate(
    options: RunOptions, faults: tuple[Fault, ...], result: RunResult, watchdog: Watchdog
) -> None:
    """The run, stopped by the watchdog if it spins."""
    result.history = History(clock=trio.current_time)
    with trio.CancelScope() as scope:
        watchdog.scope = scope
        await _simulate_cluster(options, faults, result)
    if watchdog.over_wall_time:
        result.violations.append(
            f"timeout: the seed took longer than {watchdog.wall_s_max:g}s of wall time and was "
            f"stopped at {trio.current_time():.1f}s simulated ({watchdog.steps} task steps)"
        )
        result.history.finish(note="stopped at the wall-clock limit")
        result.simulated_s = trio.current_time()
    elif watchdog.expired:
        result.violations.append(
            f"watchdog: {watchdog.steps} task steps by {trio.current_time():.1f}s simulated: "
            "the run spins (a livelock) and was stopped"
        )
        result.history.finish(note="the watchdog stopped the run")
        result.simulated_s = trio.current_time()


async def _simulate_cluster(
    options: RunOptions, faults: tuple[Fault, ...], result: RunResult
) -> None:
    rng = Random(options.seed)
    scenario = SCENARIOS[options.scenario]
    cluster_options = scenario.cluster(Random(rng.getrandbits(64)))
    if options.planted_bug:
        bugs = frozenset(options.planted_bug.split(","))  # several: comma-separated
        cluster_options = replace(cluster_options, planted_bugs=bugs)
    duration_s = options.duration_s if options.duration_s is not None else scenario.duration_s
    history = result.history
    assert history is not None
    async with trio.open_nursery() as nursery:
        cluster = SimCluster(cluster_options, Random(rng.getrandbits(64)), nursery)
        await cluster.start_all()
        monitor = Monitor(cluster)
        nursery.start_soon(monitor.run)
        if await cluster.wait_for_leader(STARTUP_S_MAX) is None:
            result.violations.append(f"liveness: no leader within {STARTUP_S_MAX:g}s of starting")
        start_s = trio.current_time()
        workload_rng, fault_rng = Random(rng.getrandbits(64)), Random(rng.getrandbits(64))
        async with trio.open_nursery() as phase:
            phase.start_soon(
                _workload(options, result),
                cluster,
                history,
                workload_rng,
                start_s + duration_s,
            )
            phase.start_soon(_run_faults, cluster, faults, start_s, fault_rng)
            await trio.sleep_until(start_s + duration_s)
            phase.cancel_scope.cancel()
        history.finish(note="the faulty phase ended")
        problem = await liveness_phase(cluster)
        if problem:
            result.violations.append(problem)
        else:
            problem = await check_mvcc_agreement(cluster)
            if problem:
                result.violations.append(problem)
            elif result.v3_log is not None:
                result.violations.extend(_check_streams(cluster, monitor, history, result.v3_log))
        monitor.check()
        result.violations.extend(monitor.violations)
        result.violations.extend(unreported_failures(cluster.open_failures, result.violations))
        result.events = list(cluster.events)
        result.simulated_s = trio.current_time()
        result.trace_hash = _trace_hash(cluster, history, result.v3_log)
        nursery.cancel_scope.cancel()


def unreported_failures(open_failures: list[str], reported: list[str]) -> list[str]:
    """The violations for what members met that only a bug explains
    (``SimCluster.open_failures``) and ``reported`` lacks: the liveness phase reports those
    of before the healing; one met after it (a member that stopped then) is reported here."""
    return [
        f"durability: {failure}"
        for failure in open_failures
        if f"durability: {failure}" not in reported
    ]


def _workload(
    options: RunOptions, result: RunResult
) -> Callable[[SimCluster, History, Random, float], Awaitable[object]]:
    """The run's client workload, as one call: cluster, history, rng, stop time. A v3 run's
    lease holders and watchers record into ``result.v3_log``."""

    async def v2(cluster: SimCluster, history: History, rng: Random, stop_at_s: float) -> None:
        workload = WorkloadOptions(clients=options.clients, keys=options.keys)
        await run_workload(cluster, history, options=workload, rng=rng, stop_at_s=stop_at_s,
                           operations_max=options.operations_max)  # fmt: skip

    async def v3(cluster: SimCluster, history: History, rng: Random, stop_at_s: float) -> None:
        workload = V3WorkloadOptions(clients=options.clients, keys=options.keys)
        log = result.v3_log = V3Log()
        streams_rng = Random(options.seed ^ STREAMS_SEED_SALT)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(
                run_stream_clients, cluster, log, options=StreamOptions(), rng=streams_rng,
                stop_at_s=stop_at_s))  # fmt: skip
            await run_v3_workload(
                cluster, history, options=workload, rng=rng, stop_at_s=stop_at_s,
                operations_max=options.operations_max)  # fmt: skip

    return v3 if options.api == "v3" else v2


def acked_writes(history: History, log: V3Log) -> list[AckedWrite]:
    """The writes clients were told succeeded, at the revisions they were told."""
    acked = []
    for op in history.operations:
        if not op.ok or op.index is None or op.kind not in _V3_WRITES or op.succeeded is False:
            continue
        value = None if op.kind is OpKind.DELETE_RANGE else (op.value or "").encode()
        acked.append(AckedWrite(op.key.encode(), op.index, value, op.describe()))
    for put in log.lease_puts:
        what = f"put with lease {put.lease_id}"
        acked.append(AckedWrite(put.key, put.revision, put.value, what))
    return acked


_V3_WRITES = frozenset({OpKind.PUT, OpKind.TXN, OpKind.DELETE_RANGE})


def _check_streams(
    cluster: SimCluster, monitor: Monitor, history: History, log: V3Log
) -> list[str]:
    """The watch and lease checkers, against the store the members agree on."""
    name = cluster.up()[0]
    reference = agreed_history(cluster, name)
    facts = LeaseFacts(
        final_leases=agreed_leases(cluster, name),
        extension_s=cluster.config(name).election_timeout_s(),
        election_seen_slack_s=MONITOR_INTERVAL_S,
        relay_retry_s=RELAY_RETRY_S,
        clock_rate_max=cluster.clock_extremes.rate_max,
        clock_rate_min=cluster.clock_extremes.rate_min,
    )
    elections = [Election(term, seen_s) for term, seen_s in sorted(monitor.leader_seen_s.items())]
    lines = check_watches(log.sessions, reference, acked_writes(history, log))
    return lines + check_leases(log, reference, facts, elections)


def _trace_hash(cluster: SimCluster, history: History, log: V3Log | None = None) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(cluster.network.digest().encode())
    for name in cluster.names:
        for time_s, event in cluster.slots[name].disk.trace:
            hasher.update(f"{name} {time_s!r} {event}\n".encode())
    hasher.update(cluster.state_digest().encode())
    hasher.update(history.to_json().encode())
    if log is not None:
        hasher.update(repr(log).encode())
    return hasher.hexdigest()


def run(
    options: RunOptions,
    wall_s_max: float | None = None,
    instruments: Sequence[trio.abc.Instrument] = (),
) -> RunResult:
    """Run one seed and check it; never raises for a violation, reports it. With
    ``wall_s_max``, a run that takes longer (wall clock) is stopped and fails as a timeout.
    ``instruments`` watch the run's Trio run loop beside its own (``bench.step_count``'s
    counter); they must not change what the run does."""
    if options.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {options.scenario!r}; one of {sorted(SCENARIOS)}")
    scenario = SCENARIOS[options.scenario]
    rng = Random(options.seed)
    rng.getrandbits(64)  # the cluster options' draw, as in _simulate
    duration_s = options.duration_s if options.duration_s is not None else scenario.duration_s
    faults = options.faults
    if faults is None:
        faults = scenario.schedule(Random(options.seed ^ 0x5CED), duration_s)
    result = RunResult(options, faults)
    watchdog = Watchdog(wall_s_max)
    started = time.perf_counter()  # reporting wall time; not inside the simulation
    run_deterministic(
        _simulate, options.seed, options, faults, result, watchdog,
        instruments=[watchdog, *instruments],
    )  # fmt: skip
    result.task_steps = watchdog.steps
    if result.history is not None:
        result.operations = len(result.history)
        verdict = check_history(result.history)
        result.linearizability = verdict.verdict.value
        result.linearizability_detail = verdict.summary()
        result.check = verdict
    result.wall_s = time.perf_counter() - started
    return result
