"""A `troika bench` results file read against issue 13's targets, as Markdown tables.

Why: the figures a closing note cites (each workload's ratio against its target, the
cluster's CPU per operation, the one-connection latencies, how many cores each system's
members used) must come from a command, not from a script written for the day. Run::

    python -m bench.targets bench.json

The targets are issue 13's: rates at least 1.0x etcd's for puts, CAS, linearizable reads
and transactions, 0.8x for serializable reads and watch deliveries (at every connection
count but one); at one connection a put's p50 at most 1.5x etcd's and its p99 at most 2x;
the cluster's CPU per operation within 1.3x.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.suite import BenchReport, Cell, Sample, pairwise_ratios, report_from_json, short_ms

RATE_TARGETS: Final = {
    "put": 1.0,
    "cas": 1.0,
    "get-linearizable": 1.0,
    "get-serializable": 0.8,
    "watch": 0.8,
    "v3-put": 1.0,
    "v3-txn": 1.0,
    "v3-range": 1.0,
    "v3-range-serializable": 0.8,
    "v3-watch": 0.8,
    "v3-watch-streams": 0.8,
    "v3-put-gw": 1.0,
    "v3-txn-gw": 1.0,
    "v3-range-gw": 1.0,
    "v3-range-serializable-gw": 0.8,
}
"""troika's rate over etcd's that issue 13 asks, by workload (``mixed`` has none)."""
P50_TARGET: Final = 1.5
P99_TARGET: Final = 2.0
LATENCY_WORKLOADS: Final = ("put", "cas", "v3-put", "v3-put-gw", "get-linearizable")
"""The one-connection rows shown; the target is the put's, the others stand beside it."""
CPU_TARGET: Final = 1.3


def api_of(workload: str) -> str:
    """Which client API a workload loads."""
    if not workload.startswith("v3"):
        return "v2"
    return "gateway" if workload.endswith("-gw") else "gRPC"


@dataclass(frozen=True, slots=True)
class Cores:
    """The cores one system's members used in one cell: the member the load generator
    talks to, and the others together (medians over the runs)."""

    leader: float
    others: float


def cores_of(samples: Iterable[Sample]) -> Cores | None:
    """Each member's CPU seconds over the sample's wall time, split leader / others."""
    leaders, others = [], []
    for sample in samples:
        if not sample.member_cpu_s or sample.wall_s <= 0:
            continue
        leader = sample.member_cpu_s.get(sample.leader, 0.0)
        rest = sum(sample.member_cpu_s.values()) - leader
        leaders.append(leader / sample.wall_s)
        others.append(rest / sample.wall_s)
    if not leaders:
        return None
    return Cores(statistics.median(leaders), statistics.median(others))


def _cpu_text(troika: Cell | None, etcd: Cell | None) -> str:
    if troika is None or etcd is None or etcd.cpu_ms_per_op <= 0:
        return "-"
    times = troika.cpu_ms_per_op / etcd.cpu_ms_per_op
    mark = "" if times <= CPU_TARGET else " over"
    return f"{short_ms(troika.cpu_ms_per_op)} / {short_ms(etcd.cpu_ms_per_op)} ({times:.1f}x{mark})"


def _ratio_text(ratio: float | None, target: float | None) -> str:
    if ratio is None:
        return "-"
    if target is None:
        return f"{ratio:.2f}"
    return f"**{ratio:.2f}**" if ratio >= target else f"{ratio:.2f}"


class TargetTables:
    """The tables of one report; connection counts other than 1 are the rate columns."""

    def __init__(self, report: BenchReport) -> None:
        self.report = report
        self.cells = {(c.system, c.workload, c.connections): c for c in report.cells()}
        self.rate_connections = [c for c in report.plan.connections if c != 1]

    def rates(self) -> list[str]:
        """Ratio (bold where it meets its target) and CPU per operation, per workload."""
        counts = self.rate_connections
        lines = [
            "| workload | API | target | "
            + " | ".join(f"ratio at {c}" for c in counts)
            + " | "
            + " | ".join(f"cpu ms/op at {c}, troika / etcd" for c in counts)
            + " |",
            "|---|---|---:|" + "---:|" * (2 * len(counts)),
        ]
        for workload in self.report.plan.rate_workloads:
            target = RATE_TARGETS.get(workload)
            ratios = [_ratio_text(self.report.ratio(workload, c), target) for c in counts]
            cpus = [
                _cpu_text(
                    self.cells.get(("troika", workload, c)), self.cells.get(("etcd", workload, c))
                )
                for c in counts
            ]
            target_text = "-" if target is None else f"{target}"
            lines.append(
                f"| {workload} | {api_of(workload)} | {target_text} | "
                + " | ".join(ratios + cpus)
                + " |"
            )
        return lines

    def pairs(self, workload: str, connections: int) -> list[float]:
        """The pairwise ratios (run by run) behind one cell's median."""
        troika = self.report.samples_of("troika", workload, connections)
        etcd = self.report.samples_of("etcd", workload, connections)
        return [round(ratio, 2) for ratio in pairwise_ratios(troika, etcd)]

    def one_connection(self) -> list[str]:
        """p50 and p99 at one connection, troika / etcd, against the put's targets."""
        lines = [
            f"| workload | p50 ms (target {P50_TARGET}x) | p99 ms (target {P99_TARGET}x) "
            "| cpu ms/op |",
            "|---|---:|---:|---:|",
        ]
        for workload in LATENCY_WORKLOADS:
            troika = self.cells.get(("troika", workload, 1))
            etcd = self.cells.get(("etcd", workload, 1))
            if troika is None or etcd is None or etcd.p50_ms <= 0 or etcd.p99_ms <= 0:
                continue
            p50 = troika.p50_ms / etcd.p50_ms
            p99 = troika.p99_ms / etcd.p99_ms
            lines.append(
                f"| {workload} | {troika.p50_ms:.2f} / {etcd.p50_ms:.2f} ({p50:.1f}x) "
                f"| {troika.p99_ms:.2f} / {etcd.p99_ms:.2f} ({p99:.1f}x) "
                f"| {troika.cpu_ms_per_op:.2f} / {etcd.cpu_ms_per_op:.2f} |"
            )
        return lines

    def cores(self) -> list[str]:
        """Cores used, leader + others, by each system at each rate connection count."""
        columns = [(system, c) for system in ("etcd", "troika") for c in self.rate_connections]
        lines = [
            "| workload | "
            + " | ".join(f"{system} at {c}: leader + others" for system, c in columns)
            + " |",
            "|---|" + "---:|" * len(columns),
        ]
        for workload in self.report.plan.rate_workloads:
            texts = []
            for system, count in columns:
                used = cores_of(self.report.samples_of(system, workload, count))
                texts.append("-" if used is None else f"{used.leader:.2f} + {used.others:.2f}")
            lines.append(f"| {workload} | " + " | ".join(texts) + " |")
        return lines

    def markdown(self) -> str:
        """All three tables, with the pairwise ratios of every cell below its target."""
        below = []
        for workload in self.report.plan.rate_workloads:
            target = RATE_TARGETS.get(workload)
            for count in self.rate_connections:
                ratio = self.report.ratio(workload, count)
                if target is not None and ratio is not None and ratio < target:
                    pairs = ", ".join(f"{p:.2f}" for p in self.pairs(workload, count))
                    below.append(f"- {workload} at {count}: {ratio:.2f} (pairs {pairs})")
        parts = [
            "Rates (troika / etcd, median of the pairwise ratios; bold: target met):",
            "",
            *self.rates(),
            "",
            "One connection:",
            "",
            *self.one_connection(),
            "",
            "Cores the members used:",
            "",
            *self.cores(),
            "",
            "Below target:",
            "",
            *(below or ["- none"]),
        ]
        return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.targets RESULTS.json``: print the tables."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) != 1:
        raise SystemExit("usage: python -m bench.targets RESULTS.json")
    report = report_from_json(json.loads(Path(arguments[0]).read_text()))
    print(TargetTables(report).markdown())


if __name__ == "__main__":
    main()
