"""``troika bench``: troika beside etcd 3.4, the same load, the same run, medians of several.

Theory of operation
-------------------

Both clusters are started first (members on loopback, data in one scratch directory) and stay
up for the whole run. Then every measurement is a *pair*: for each workload, connection count
and repetition, troika is measured and then etcd, back to back, so that whatever else the
machine does at that moment weighs on both. A figure in the table is the median of the
repetitions; the troika/etcd ratio is the median of the ratios of each pair (not the ratio of
the medians). The idle cluster of a pair costs little CPU (heartbeats only): the JSON keeps
each member's CPU seconds of every sample, so that is visible.

Per sample: ops/s, latency p50/p90/p99/max (``bench.loadgen``), the CPU seconds every member
used during the sample (from ``/proc``), each member's peak RSS so far (``VmHWM``), the
leader, and whether it changed. Before the clusters, the load generator's ceiling against a
trivial server is measured at each connection count, so a result near it is suspect.

The ``watch`` workload is a fan-out (``bench.watch``): its "connections" are watchers, its
operations are deliveries, its latency runs from a write's send to a watcher's receipt. The
v3 watch workloads (``v3-watch``, watchers multiplexed on one gRPC Watch stream per member;
``v3-watch-streams``, a stream per watcher; ``bench.watch_v3``) count the same way: events
delivered per second to all watchers of one prefix, while closed-loop puts write it.

Every sample also has the load generator's own CPU per operation (``client_cpu_us_per_op``),
so a reader sees what the client cost beside what the members cost.

The memory workloads (``mem-leases``, ``mem-watchers``, ``mem-keys``; ``bench.memory``) are
not rates: each repetition starts a cluster of its own, makes its leader hold
``--memory-items`` leases, watchers or 256-byte keys, and reads the leader's resident memory
before, while holding them, and its peak (every member's peak is in the JSON). They are
reported in a table, a JSON list and a chart row of their own.

The ``sim`` target runs the simulator instead (``sim.runner``, no faults): its figures are in
simulated time, with the simulation's speed beside them; they show the member code's cost,
not a machine's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from bench.clusters import EtcdCluster, ProcessCluster, TroikaCluster, etcd_available
from bench.loadgen import (
    V2_WORKLOADS,
    V3_WORKLOADS,
    CeilingResult,
    LatencySummary,
    LoadResult,
    LoadSpec,
    measure_ceiling,
    process_cpu_s,
    run_load,
)
from bench.memory import (
    ITEMS_DEFAULT,
    ITEMS_MAX,
    MEMORY_WORKLOADS,
    MemorySample,
    hold_and_measure,
    mib,
    proc_status_kib,
)
from bench.watch import WatchSpec, run_watch
from bench.watch_v3 import WATCH_WORKLOADS, WatchV3Spec, run_watch_v3
from sim.runner import RunOptions, run
from sim.sweep import quiet_member_logs

V2_BENCH_WORKLOADS: tuple[str, ...] = (*V2_WORKLOADS, "watch")
"""The v2 keys API's workloads: what ``troika bench`` runs by default."""
V3_WATCH_WORKLOADS: tuple[str, ...] = tuple(WATCH_WORKLOADS)
"""Watch fan-out over gRPC (``bench.watch_v3``)."""
BENCH_WORKLOADS: tuple[str, ...] = (
    *V2_BENCH_WORKLOADS, *V3_WORKLOADS, *V3_WATCH_WORKLOADS, *MEMORY_WORKLOADS
)  # fmt: skip
"""Every workload; the v3 KV ones (``bench.loadgen_v3``) over gRPC, and with ``-gw`` over the
gateway; the v3 watch fan-out; the memory of many leases, watchers or keys."""
FAN_OUT_WORKLOADS: tuple[str, ...] = ("watch", *V3_WATCH_WORKLOADS)
"""Workloads whose operations are deliveries to watchers (no HTTP ceiling applies)."""
CLIENT_BUSY_PERCENT = 90.0
"""A sample whose load generator used more of a core than this was limited by the client."""
SYSTEMS: tuple[str, ...] = ("troika", "etcd")
CEILING_DURATION_S = 2.0
BUSY_LOAD_AVERAGE = 1.0
"""A one-minute load average above this before the run is reported: the figures are noisy."""
KIB_PER_MIB = 1024


@dataclass(frozen=True)
class BenchPlan:
    """Everything a run measures."""

    workloads: tuple[str, ...] = ("put", "get-linearizable")
    connections: tuple[int, ...] = (1, 16, 64)
    runs: int = 3
    duration_s: float = 5.0
    warmup_s: float = 1.0
    key_size: int = 8
    value_size: int = 256
    key_space: int = 100_000
    sequential_keys: bool = False
    read_fraction: float = 0.9
    cluster_size: int = 3
    systems: tuple[str, ...] = SYSTEMS
    watch_writes: int = 200
    ceiling: bool = True
    watch_writers: int = 16
    """Puts in flight during a v3 watch sample."""
    memory_items: int = ITEMS_DEFAULT
    """Leases or watchers a member holds in a memory sample."""

    def __post_init__(self) -> None:
        unknown = set(self.workloads) - set(BENCH_WORKLOADS)
        if unknown or not self.workloads:
            raise ValueError(f"workloads are among {', '.join(BENCH_WORKLOADS)}")
        if not self.connections or min(self.connections) < 1:
            raise ValueError("connection counts must be at least 1")
        if self.runs < 1 or self.cluster_size < 1:
            raise ValueError("runs and cluster size must be at least 1")
        if not set(self.systems) <= set(SYSTEMS) or not self.systems:
            raise ValueError(f"systems are among {', '.join(SYSTEMS)}")
        if self.watch_writers < 1 or not 1 <= self.memory_items <= ITEMS_MAX:
            raise ValueError(f"watch writers at least 1, memory items within 1..{ITEMS_MAX}")

    def load_spec(self, workload: str, endpoint: str, connections: int, run: int) -> LoadSpec:
        """The load generator's spec for one sample (a different seed per repetition)."""
        return LoadSpec(
            endpoint=endpoint,
            workload=workload,  # type: ignore[arg-type]  # checked in __post_init__
            connections=connections,
            duration_s=self.duration_s,
            warmup_s=self.warmup_s,
            key_size=self.key_size,
            value_size=self.value_size,
            key_space=self.key_space,
            sequential_keys=self.sequential_keys,
            read_fraction=self.read_fraction,
            seed=run + 1,
        )

    @property
    def rate_workloads(self) -> tuple[str, ...]:
        """The workloads measured at each connection count (all but the memory ones)."""
        return tuple(w for w in self.workloads if w not in MEMORY_WORKLOADS)

    @property
    def memory_workloads(self) -> tuple[str, ...]:
        return tuple(w for w in self.workloads if w in MEMORY_WORKLOADS)

    @property
    def needs_ceiling(self) -> bool:
        """Whether a workload is compared with the HTTP client's ceiling (not fan-outs)."""
        return self.ceiling and any(w not in FAN_OUT_WORKLOADS for w in self.rate_workloads)

    def steps(self, systems: Sequence[str]) -> list[tuple[str, int, int, str]]:
        """Every rate sample in the order it is taken: workload, connections, repetition,
        system."""
        return [
            (workload, count, run, system)
            for workload in self.rate_workloads
            for count in self.connections
            for run in range(self.runs)
            for system in systems
        ]

    def memory_steps(self, systems: Sequence[str]) -> list[tuple[str, int, str]]:
        """Every memory sample in order: workload, repetition, system."""
        return [
            (workload, run, system)
            for workload in self.memory_workloads
            for run in range(self.runs)
            for system in systems
        ]


@dataclass(frozen=True)
class Sample:
    """One measurement of one system."""

    system: str
    workload: str
    connections: int
    run: int
    load: LoadResult
    leader: str
    leader_changed: bool
    member_cpu_s: dict[str, float]
    """CPU seconds each member used during the sample (warm-up and preload included)."""
    member_rss_peak_mib: dict[str, float]
    """Each member's peak resident memory since it started, at the end of the sample."""
    wall_s: float


@dataclass(frozen=True)
class Cell:
    """The median of one system's samples at one workload and connection count."""

    system: str
    workload: str
    connections: int
    runs: int
    ops_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms_per_op: float
    """All members' CPU per operation (median over the repetitions)."""
    rss_peak_mib: float
    """The largest member's peak resident memory (the largest over the repetitions)."""
    errors: int
    leader_changes: int
    client_cpu_us_per_op: float = 0.0
    """The load generator's CPU per operation (median over the repetitions)."""


def cell_of(samples: Sequence[Sample]) -> Cell:
    """The medians of the repetitions of one system, workload and connection count."""
    first = samples[0]

    def median(values: Iterator[float]) -> float:
        return round(statistics.median(values), 3)

    return Cell(
        system=first.system,
        workload=first.workload,
        connections=first.connections,
        runs=len(samples),
        ops_per_s=median(s.load.ops_per_s for s in samples),
        p50_ms=median(s.load.latency.p50_ms for s in samples),
        p90_ms=median(s.load.latency.p90_ms for s in samples),
        p99_ms=median(s.load.latency.p99_ms for s in samples),
        max_ms=median(s.load.latency.max_ms for s in samples),
        cpu_ms_per_op=round(statistics.median(_cpu_ms_per_op(s) for s in samples), 5),
        rss_peak_mib=max(max(s.member_rss_peak_mib.values(), default=0.0) for s in samples),
        errors=sum(s.load.errors for s in samples),
        leader_changes=sum(s.leader_changed for s in samples),
        client_cpu_us_per_op=median(s.load.client_cpu_us_per_op for s in samples),
    )


def _cpu_ms_per_op(sample: Sample) -> float:
    """All members' CPU over the operations of the whole sample.

    The CPU is measured over the sample's whole wall time (warm-up and, for reads, the
    preload included); the operations are counted only in the measured window, so they are
    scaled to the wall time at the measured rate. Close for long windows; an overestimate
    when a preload takes a large share of a short sample.
    """
    operations = sample.load.requests * sample.wall_s / max(sample.load.duration_s, 1e-9)
    return 1000.0 * sum(sample.member_cpu_s.values()) / operations if operations else 0.0


def pairwise_ratios(troika: Sequence[Sample], etcd: Sequence[Sample]) -> list[float]:
    """troika ops/s over etcd ops/s, pair by pair (same repetition)."""
    by_run = {sample.run: sample for sample in etcd}
    return [
        sample.load.ops_per_s / by_run[sample.run].load.ops_per_s
        for sample in troika
        if sample.run in by_run and by_run[sample.run].load.ops_per_s > 0
    ]


def pair_ratio(troika: Sequence[Sample], etcd: Sequence[Sample]) -> float | None:
    """The median of the pairwise ratios (``pairwise_ratios``)."""
    ratios = pairwise_ratios(troika, etcd)
    return round(statistics.median(ratios), 3) if ratios else None


@dataclass
class BenchReport:
    """What a run measured, and the notes a reader needs to trust it."""

    plan: BenchPlan
    machine: dict[str, Any]
    ceilings: list[CeilingResult] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    simulated: list[dict[str, Any]] = field(default_factory=list)
    memory: list[MemorySample] = field(default_factory=list)

    def cells(self) -> list[Cell]:
        """One cell per system, workload and connection count, in the plan's order."""
        groups: dict[tuple[str, str, int], list[Sample]] = {}
        for sample in self.samples:
            groups.setdefault((sample.workload, sample.system, sample.connections), []).append(
                sample
            )
        return [cell_of(group) for group in groups.values()]

    def samples_of(self, system: str, workload: str, connections: int) -> list[Sample]:
        """One system's repetitions at one workload and connection count."""
        key = (system, workload, connections)
        return [s for s in self.samples if (s.system, s.workload, s.connections) == key]

    def ratio(self, workload: str, connections: int) -> float | None:
        """troika/etcd at one workload and connection count (None without etcd)."""
        return pair_ratio(
            self.samples_of("troika", workload, connections),
            self.samples_of("etcd", workload, connections),
        )

    def to_json(self) -> dict[str, Any]:
        """Everything, samples included, for a results file."""
        return {
            "plan": asdict(self.plan),
            "machine": self.machine,
            "notes": self.notes,
            "ceiling": [asdict(ceiling) for ceiling in self.ceilings],
            "cells": [asdict(cell) for cell in self.cells()],
            "ratios": [
                {"workload": w, "connections": c, "troika_over_etcd": self.ratio(w, c)}
                for w in self.plan.rate_workloads
                for c in self.plan.connections
            ],
            "samples": [asdict(sample) for sample in self.samples],
            "memory": [asdict(sample) for sample in self.memory],
            "simulated": self.simulated,
        }


def report_from_json(data: dict[str, Any]) -> BenchReport:
    """A report back from its results file (to redraw the chart or re-read the table)."""
    fields: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in data["plan"].items()
    }
    plan = BenchPlan(**fields)
    report = BenchReport(plan, data["machine"], notes=list(data["notes"]))
    for raw in data["samples"]:
        load = dict(raw["load"])
        load["latency"] = LatencySummary(**load["latency"])
        load["by_kind"] = {k: LatencySummary(**v) for k, v in load["by_kind"].items()}
        report.samples.append(Sample(**{**raw, "load": LoadResult(**load)}))
    report.simulated = list(data.get("simulated", []))
    report.memory = [MemorySample(**raw) for raw in data.get("memory", [])]
    return report


def machine_facts() -> dict[str, Any]:
    """What a reader needs to place the figures."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_before": round(os.getloadavg()[0], 2),
    }


def rss_peak_mib(pid: int | None) -> float:
    """A process's peak resident memory (``VmHWM``), 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / KIB_PER_MIB, 1)
    except OSError:
        pass
    return 0.0


def measure_sample(
    plan: BenchPlan, cluster: ProcessCluster, workload: str, connections: int, run: int
) -> Sample:
    """One workload at one connection count against ``cluster``'s leader."""
    leader = cluster.wait_for_leader()
    pids = {cluster.names[i]: cluster.pid(i) for i in range(cluster.size)}
    cpu_before = {name: process_cpu_s(pid) for name, pid in pids.items()}
    began = time.perf_counter()
    if workload == "watch":
        spec = WatchSpec(
            leader=cluster.client_urls[leader],
            endpoints=cluster.client_urls,
            watchers=connections,
            writes=plan.watch_writes,
            key_size=plan.key_size,
            value_size=plan.value_size,
            prefix=f"watch{run}c{connections}",
        )
        load = trio.run(run_watch, spec)
    elif workload in WATCH_WORKLOADS:
        where = (leader, workload, connections, run)
        load = trio.run(run_watch_v3, watch_v3_spec(plan, cluster, where))
    else:
        spec_load = plan.load_spec(workload, cluster.client_urls[leader], connections, run)
        load = trio.run(run_load, spec_load)
    wall = time.perf_counter() - began
    return Sample(
        system=cluster.system,
        workload=workload,
        connections=connections,
        run=run,
        load=load,
        leader=cluster.names[leader],
        leader_changed=cluster.leader_index() != leader,
        member_cpu_s={
            name: round(process_cpu_s(pid) - cpu_before[name], 3) for name, pid in pids.items()
        },
        member_rss_peak_mib={name: rss_peak_mib(pid) for name, pid in pids.items()},
        wall_s=round(wall, 3),
    )


def watch_v3_spec(
    plan: BenchPlan, cluster: ProcessCluster, where: tuple[int, str, int, int]
) -> WatchV3Spec:
    """A v3 watch sample (``where``: leader index, workload, watchers, repetition): writes on
    the leader; watchers from the leader on, round robin, so that one watcher is on the leader
    in both systems."""
    leader, workload, watchers, run = where
    urls = cluster.client_urls
    return WatchV3Spec(
        leader=urls[leader],
        endpoints=[*urls[leader:], *urls[:leader]],
        watchers=watchers,
        mode=WATCH_WORKLOADS[workload],
        writers=plan.watch_writers,
        duration_s=plan.duration_s,
        warmup_s=plan.warmup_s,
        key_size=plan.key_size,
        value_size=plan.value_size,
        prefix=f"v3w{run}c{watchers}{WATCH_WORKLOADS[workload]}",
        seed=run + 1,
    )


def measure_memory(
    plan: BenchPlan, kind: type[ProcessCluster], workload: str, run: int, root: Path
) -> MemorySample:
    """One memory sample on a cluster started for it (so the peak is this load's)."""
    with kind(plan.cluster_size, root / f"{kind.system}-{workload}-{run}") as cluster:
        leader = cluster.wait_for_leader()
        pid = cluster.pid(leader)
        readings: dict[str, int] = {}

        def before() -> None:
            readings["before"] = proc_status_kib(pid, "VmRSS")

        def holding() -> None:
            readings["holding"] = proc_status_kib(pid, "VmRSS")
            readings["peak"] = proc_status_kib(pid, "VmHWM")

        outcome, setup_s, client_cpu_s = trio.run(
            hold_and_measure, cluster.client_urls[leader], workload, plan.memory_items, before,
            holding,
        )  # fmt: skip
        peaks = {
            name: mib(proc_status_kib(cluster.pid(index), "VmHWM"))
            for index, name in enumerate(cluster.names)
        }
    grown_kib = readings.get("holding", 0) - readings.get("before", 0)
    return MemorySample(
        system=kind.system,
        workload=workload,
        items=plan.memory_items,
        run=run,
        member=cluster.names[leader],
        rss_before_mib=mib(readings.get("before", 0)),
        rss_holding_mib=mib(readings.get("holding", 0)),
        rss_peak_mib=mib(readings.get("peak", 0)),
        kib_per_item=round(grown_kib / max(outcome.held, 1), 3),
        members_rss_peak_mib=peaks,
        held=outcome.held,
        setup_s=setup_s,
        client_cpu_s=client_cpu_s,
        errors=sum(outcome.errors.values()),
        error_kinds=dict(sorted(outcome.errors.items())),
    )


def measure_ceilings(plan: BenchPlan) -> list[CeilingResult]:
    """The load generator against a trivial server, at every connection count."""
    ceilings = []
    for count in plan.connections:
        spec = replace(
            plan.load_spec("put", "http://127.0.0.1:1", count, 0),
            duration_s=CEILING_DURATION_S,
            warmup_s=0.3,
        )
        ceilings.append(trio.run(measure_ceiling, spec))
    return ceilings


Progress = Callable[[str], None]
"""Told, before each sample, what is about to be measured."""


def run_bench(
    plan: BenchPlan, data_root: Path | None = None, progress: Progress = print
) -> BenchReport:
    """Start the clusters, take every sample, stop them: the report."""
    report = BenchReport(plan, machine_facts())
    if report.machine["load_average_before"] > BUSY_LOAD_AVERAGE:
        report.notes.append(
            f"the machine was busy before the run (load average "
            f"{report.machine['load_average_before']}): other processes shared the CPUs"
        )
    systems = list(plan.systems)
    if "etcd" in systems and not etcd_available():
        systems.remove("etcd")
        report.notes.append(
            "etcd is not installed: troika alone (apt-get install etcd-server for the comparison)"
        )
    if plan.needs_ceiling:
        progress("load generator ceiling")
        report.ceilings = measure_ceilings(plan)
    with (
        tempfile.TemporaryDirectory(prefix="troika-bench-") as scratch,
        contextlib.ExitStack() as stack,
    ):
        root = data_root or Path(scratch)
        clusters: dict[str, ProcessCluster] = {}
        for system in systems if plan.rate_workloads else ():
            progress(f"starting {system}")
            clusters[system] = stack.enter_context(KINDS[system](plan.cluster_size, root / system))
        for workload, count, run, system in plan.steps(systems):
            progress(f"{system} {workload} c={count} run {run + 1}/{plan.runs}")
            report.samples.append(measure_sample(plan, clusters[system], workload, count, run))
        stack.close()
        for workload, run, system in plan.memory_steps(systems):
            progress(f"{system} {workload} {plan.memory_items} run {run + 1}/{plan.runs}")
            report.memory.append(measure_memory(plan, KINDS[system], workload, run, root))
    _note_problems(report)
    return report


KINDS: dict[str, type[ProcessCluster]] = {"troika": TroikaCluster, "etcd": EtcdCluster}


def _note_problems(report: BenchReport) -> None:
    """Errors, leader changes and loads near the client's ceiling, said out loud."""
    for cell in report.cells():
        where = f"{cell.system} {cell.workload} c={cell.connections}"
        if cell.errors:
            report.notes.append(f"{where}: {cell.errors} errors (see the samples in the JSON)")
        if cell.leader_changes:
            report.notes.append(f"{where}: the leader changed during {cell.leader_changes} runs")
    for sample in report.samples:
        if sample.load.client_cpu_percent >= CLIENT_BUSY_PERCENT:
            report.notes.append(
                f"{sample.system} {sample.workload} c={sample.connections} run {sample.run + 1}: "
                f"the load generator used {sample.load.client_cpu_percent:.0f} % of a core "
                "(the client may be the limit)"
            )
    for held in report.memory:
        if held.errors or held.held < held.items:
            report.notes.append(
                f"{held.system} {held.workload} run {held.run + 1}: {held.held} of "
                f"{held.items} held, errors {held.error_kinds}"
            )
    ceiling_by_count = {c.load.connections: c.load.ops_per_s for c in report.ceilings}
    for cell in report.cells():
        if cell.workload in FAN_OUT_WORKLOADS:
            continue
        ceiling = ceiling_by_count.get(cell.connections)
        if ceiling and cell.ops_per_s > 0.5 * ceiling:
            report.notes.append(
                f"{cell.system} {cell.workload} c={cell.connections}: {cell.ops_per_s:.0f} ops/s "
                f"is over half the load generator's ceiling ({ceiling:.0f})"
            )


def format_table(report: BenchReport) -> str:
    """The side-by-side table a person reads (and the memory table, when measured)."""
    cells = {(c.system, c.workload, c.connections): c for c in report.cells()}
    header = (
        f"{'workload':<24} {'conns':>5} | {'troika ops/s':>12} {'p50':>7} {'p99':>7} "
        f"{'cpu/op':>6} {'rss':>5} {'cli/op':>6} | {'etcd ops/s':>10} {'p50':>7} {'p99':>7} "
        f"{'cpu/op':>6} {'rss':>5} {'cli/op':>6} | {'ratio':>5}"
    )
    lines = [header, "-" * len(header)]
    for workload in report.plan.rate_workloads:
        for count in report.plan.connections:
            row = f"{workload:<24} {count:>5} |"
            for system in SYSTEMS:
                cell = cells.get((system, workload, count))
                width = 12 if system == "troika" else 10
                if cell is None:
                    row += f" {'-':>{width}} {'':>7} {'':>7} {'':>6} {'':>5} {'':>6} |"
                    continue
                row += (
                    f" {cell.ops_per_s:>{width}.0f} {cell.p50_ms:>7.2f} {cell.p99_ms:>7.2f} "
                    f"{short_ms(cell.cpu_ms_per_op):>6} {cell.rss_peak_mib:>5.0f} "
                    f"{cell.client_cpu_us_per_op:>6.1f} |"
                )
            ratio = report.ratio(workload, count)
            row += f" {ratio:>5.2f}" if ratio is not None else f" {'-':>5}"
            lines.append(row)
    lines.append(
        "ops/s and latency (ms) are medians of the runs; cpu/op: CPU ms of all members per "
        "operation (us: microseconds); rss: largest member's peak MiB; cli/op: the load "
        "generator's CPU us per operation; ratio: troika/etcd ops/s, median of the pairs; "
        "watch workloads: ops are events delivered, conns are watchers"
    )
    if not report.plan.rate_workloads:
        lines = []
    if report.memory:
        lines.extend(["", *format_memory(report)])
    return "\n".join(lines)


def short_ms(value_ms: float) -> str:
    """Milliseconds in 6 characters: ``0.25``, or microseconds (``3.1us``) below 0.01 ms."""
    if value_ms >= 0.01 or value_ms == 0:
        return f"{value_ms:.2f}"
    return f"{value_ms * 1000:.1f}us"


def memory_cells(report: BenchReport) -> list[MemorySample]:
    """Per system and memory workload, the repetition with the median resident memory held."""
    groups: dict[tuple[str, str], list[MemorySample]] = {}
    for sample in report.memory:
        groups.setdefault((sample.workload, sample.system), []).append(sample)
    chosen = []
    for group in groups.values():
        ordered = sorted(group, key=lambda sample: sample.rss_holding_mib)
        chosen.append(ordered[(len(ordered) - 1) // 2])
    return chosen


def format_memory(report: BenchReport) -> list[str]:
    """The memory table: one row per system and workload (the median repetition)."""
    header = (
        f"{'memory workload':<16} {'system':<7} {'items':>7} {'held':>7} | {'rss before':>10} "
        f"{'holding':>8} {'peak':>8} | {'KiB/item':>8} {'setup s':>7}"
    )
    lines = [header, "-" * len(header)]
    for sample in memory_cells(report):
        lines.append(
            f"{sample.workload:<16} {sample.system:<7} {sample.items:>7} {sample.held:>7} | "
            f"{sample.rss_before_mib:>10.1f} {sample.rss_holding_mib:>8.1f} "
            f"{sample.rss_peak_mib:>8.1f} | {sample.kib_per_item:>8.2f} {sample.setup_s:>7.2f}"
        )
    lines.append(
        "the leader of a fresh cluster: resident MiB before, while holding the items, and its "
        "peak; KiB/item: (holding - before) / items held; median of the runs by MiB held"
    )
    return lines


@contextlib.contextmanager
def member_logs_quieted() -> Iterator[None]:
    """The simulated members' logs quieted for a while: the root logger's level comes back
    after, so that the process (a test worker running other tests next) logs as before."""
    root = logging.getLogger()
    level = root.level
    quiet_member_logs()
    try:
        yield
    finally:
        root.setLevel(level)


def run_simulated(plan: BenchPlan, progress: Progress = print) -> BenchReport:
    """The ``sim`` target: the simulator's own workload, no faults, one run per count and seed.

    The simulated clients (``sim.workload``) send v2 writes, compare-and-swaps, deletes and
    linearizable reads through the HTTP API over the simulated network, to the members of a
    simulated cluster; ``connections`` is their number. Figures are per simulated second.
    """
    report = BenchReport(plan, machine_facts())
    report.notes.append(
        "simulated target: the simulator's mixed workload (writes, CAS, deletes, linearizable "
        "reads) on a simulated network and disk; ops/s are per simulated second"
    )
    with member_logs_quieted():
        for count in plan.connections:
            for seed in range(plan.runs):
                progress(f"sim clients={count} seed {seed}")
                report.simulated.append(simulated_row(count, seed, plan.duration_s))
    return report


def simulated_row(clients: int, seed: int, duration_s: float) -> dict[str, Any]:
    """One fault-free swarm run of ``clients`` simulated clients, as the report keeps it."""
    result = run(
        RunOptions(seed=seed, scenario="swarm", faults=(), clients=clients, duration_s=duration_s)
    )
    simulated_s, wall_s = result.simulated_s, result.wall_s
    return {
        "clients": clients,
        "seed": seed,
        "operations": result.operations,
        "simulated_s": round(simulated_s, 3),
        "wall_s": round(wall_s, 3),
        "ops_per_simulated_s": round(result.operations / simulated_s, 1) if simulated_s else 0.0,
        "simulated_s_per_wall_s": round(simulated_s / wall_s, 2) if wall_s else 0.0,
        "passed": result.passed,
    }


def format_simulated(report: BenchReport) -> str:
    """The sim target's table: medians over the seeds of each client count."""
    lines = [f"{'clients':>7} | {'ops per simulated s':>19} | {'simulated s per wall s':>22}"]
    for count in report.plan.connections:
        mine = [row for row in report.simulated if row["clients"] == count]
        if not mine:
            continue
        rate = statistics.median(row["ops_per_simulated_s"] for row in mine)
        speed = statistics.median(row["simulated_s_per_wall_s"] for row in mine)
        failed = sum(not row["passed"] for row in mine)
        note = f"  ({failed} runs failed their checks)" if failed else ""
        lines.append(f"{count:>7} | {rate:>19.0f} | {speed:>22.2f}{note}")
    return "\n".join(lines)
