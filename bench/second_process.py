"""A member's client load served by one process or by two: what a second core buys.

Why: issue 13 lists "more than one core per member" among its levers (client-facing work in
worker processes). troika's member is one thread, saturated at about one core under load,
where etcd's member uses 1.3-1.4 cores of this machine. Building a member of several
processes is a design of its own; this measures what it could give before anything is
built. A follower stands in for the member's second process:

- a serializable read takes the same path on the follower as on the leader (the same API,
  the same applied state) on a process of its own;
- a linearizable read on the follower also costs the leader a share of a ReadIndex round, as
  a second process of the leader's own would;
- a write on the follower is parsed and answered there and reaches the leader as a forwarded
  proposal, so the leader keeps Raft and its apply and sheds the client's HTTP and JSON.

For each system a 3-member cluster (``bench.clusters``, as ``troika bench`` starts them), and
in each run, one after the other:

- ``one``: C connections against the leader, as ``troika bench`` loads it;
- ``two``: C/2 against the leader and C/2 against a follower, at once, from this process
  (writers on their own key prefixes).

Reported per system and arrangement: operations a second (the median of the runs; in ``two``
the sum of the two loads, each over its own window), the CPU an operation of the members
loaded and of all of them, and troika's rate over etcd's in the same run, with one process
and with two. Run::

    python -m bench.second_process -w v3-range-serializable-gw -c 64 --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, Literal

import trio

from bench.clusters import ProcessCluster, etcd_available
from bench.loadgen import LoadResult, LoadSpec, process_cpu_s, run_load
from bench.suite import KINDS

Arrangement = Literal["one", "two"]
ARRANGEMENTS: Final[tuple[Arrangement, ...]] = ("one", "two")
READ_WORKLOADS: Final = (
    "get-linearizable",
    "get-serializable",
    "v3-range",
    "v3-range-serializable",
    "v3-range-gw",
    "v3-range-serializable-gw",
)
WRITE_WORKLOADS: Final = ("put", "v3-put", "v3-put-gw", "v3-txn", "v3-txn-gw")
"""Each load of these writes under a prefix of its own (``bench0``, ``bench1``): two
loads' compare-and-swap workers would otherwise swap the same keys."""
CLUSTER_SIZE: Final = 3


@dataclass(frozen=True, slots=True)
class SpreadSample:
    """One run of one arrangement against one system."""

    system: str
    arrangement: Arrangement
    run: int
    ops_per_s: float
    errors: int
    cpu_us_per_op: float
    """The CPU of the members the load went to, per operation, while every load measured."""
    cluster_cpu_us_per_op: float
    """The same for all the members (a linearizable read costs the leader and the voters
    their share of a ReadIndex round wherever it is served, a write its replication)."""
    windows_apart_s: float
    """How far apart the loads' measured windows ended (0 for ``one``)."""


def endpoints_of(cluster: ProcessCluster, arrangement: Arrangement) -> list[int]:
    """The members an arrangement loads: the leader, and in ``two`` the next member too."""
    leader = cluster.wait_for_leader()
    if arrangement == "one":
        return [leader]
    return [leader, (leader + 1) % cluster.size]


def split_connections(connections: int, servers: int) -> list[int]:
    """``connections`` shared among ``servers`` loads as evenly as they go."""
    if connections < servers:
        raise ValueError(f"{connections} connections cannot load {servers} servers")
    share, extra = divmod(connections, servers)
    return [share + (1 if index < extra else 0) for index in range(servers)]


CPU_SAMPLE_INTERVAL_S: Final = 0.05
PRELOAD_RUN_S: Final = 0.2
"""A short load on the leader that writes the read keys before the measured loads start."""


class CpuTrace:
    """The summed CPU seconds of some processes, sampled every 50 ms, to read the CPU spent
    between two instants (the loads' common window, which only they know when it starts)."""

    def __init__(self, pids: Sequence[int | None]) -> None:
        self._pids = pids
        self.points: list[tuple[float, float]] = []

    async def record(self) -> None:
        while True:
            self.points.append((time.perf_counter(), sum(process_cpu_s(p) for p in self._pids)))
            await trio.sleep(CPU_SAMPLE_INTERVAL_S)

    def cpu_s_between(self, start_s: float, end_s: float) -> float:
        return self._at(end_s) - self._at(start_s)

    def _at(self, when_s: float) -> float:
        """The CPU at ``when_s``, between the samples either side of it."""
        before = max((p for p in self.points if p[0] <= when_s), default=self.points[0])
        after = min((p for p in self.points if p[0] >= when_s), default=self.points[-1])
        if after[0] == before[0]:
            return before[1]
        share = (when_s - before[0]) / (after[0] - before[0])
        return before[1] + share * (after[1] - before[1])


async def _loads(
    specs: Sequence[LoadSpec], traces: Sequence[CpuTrace]
) -> list[tuple[LoadResult, float]]:
    """Run the loads at once, ``traces`` beside them; each result with when its window ended
    (``perf_counter`` seconds: a load returns as its window closes)."""
    results: list[tuple[LoadResult, float] | None] = [None] * len(specs)

    async def one(index: int, spec: LoadSpec) -> None:
        result = await run_load(spec)
        results[index] = (result, time.perf_counter())

    async with trio.open_nursery() as outer:
        for trace in traces:
            outer.start_soon(trace.record)
        async with trio.open_nursery() as nursery:
            for index, spec in enumerate(specs):
                nursery.start_soon(one, index, spec)
        outer.cancel_scope.cancel()
    return [result for result in results if result is not None]


@dataclass(frozen=True, slots=True)
class SpreadPlan:
    workload: str
    connections: int
    runs: int
    duration_s: float
    warmup_s: float


def load_specs(plan: SpreadPlan, endpoints: Sequence[str], run: int) -> list[LoadSpec]:
    """One load a serving member, the connections split among them; the read keys are
    written before (``preload=False``), and writers keep to a key prefix of their own."""
    counts = split_connections(plan.connections, len(endpoints))
    return [
        LoadSpec(
            endpoint=endpoint,
            workload=plan.workload,  # type: ignore[arg-type]  # checked in main
            connections=count,
            duration_s=plan.duration_s,
            warmup_s=plan.warmup_s,
            seed=run + 1,
            prefix=f"bench{number}" if plan.workload in WRITE_WORKLOADS else "bench",
            preload=False,
        )
        for number, (endpoint, count) in enumerate(zip(endpoints, counts, strict=True))
    ]


def measure(
    plan: SpreadPlan, cluster: ProcessCluster, arrangement: Arrangement, run: int
) -> SpreadSample:
    """One run of ``arrangement`` against ``cluster``."""
    serving = endpoints_of(cluster, arrangement)
    pids = [cluster.pid(index) for index in serving]
    specs = load_specs(plan, [cluster.client_urls[index] for index in serving], run)
    trio.run(
        run_load,
        dataclasses.replace(specs[0], duration_s=PRELOAD_RUN_S, warmup_s=0.0, preload=True),
    )
    serving_trace = CpuTrace(pids)
    cluster_trace = CpuTrace([cluster.pid(index) for index in range(cluster.size)])
    ended = trio.run(_loads, specs, [serving_trace, cluster_trace])
    ends = [at for _, at in ended]
    ops_per_s = sum(result.ops_per_s for result, _ in ended)
    common_start_s, common_end_s = max(ends) - plan.duration_s, min(ends)
    op_count = ops_per_s * (common_end_s - common_start_s)

    def us_per_op(trace: CpuTrace) -> float:
        spent_s = trace.cpu_s_between(common_start_s, common_end_s)
        return round(1e6 * spent_s / op_count, 1) if op_count > 0 else 0.0

    return SpreadSample(
        system=cluster.system,
        arrangement=arrangement,
        run=run,
        ops_per_s=ops_per_s,
        errors=sum(result.errors for result, _ in ended),
        cpu_us_per_op=us_per_op(serving_trace),
        cluster_cpu_us_per_op=us_per_op(cluster_trace),
        windows_apart_s=round(max(ends) - min(ends), 3),
    )


def run_spread(plan: SpreadPlan, systems: Sequence[str]) -> list[SpreadSample]:
    """Every system up at once; each run takes ``one`` then ``two``, troika then etcd."""
    samples: list[SpreadSample] = []
    with (
        tempfile.TemporaryDirectory(prefix="troika-second-process-") as scratch,
        contextlib.ExitStack() as stack,
    ):
        clusters = {
            system: stack.enter_context(KINDS[system](CLUSTER_SIZE, Path(scratch) / system))
            for system in systems
        }
        for run in range(plan.runs):
            for arrangement in ARRANGEMENTS:
                for system in systems:
                    sample = measure(plan, clusters[system], arrangement, run)
                    print(describe(sample), flush=True)
                    samples.append(sample)
    return samples


def describe(sample: SpreadSample) -> str:
    return (
        f"{sample.system:6s} {sample.arrangement:3s} run {sample.run + 1}: "
        f"{sample.ops_per_s:,.0f} ops/s, {sample.errors} errors, CPU an op: the members "
        f"loaded {sample.cpu_us_per_op:.0f} us, all {sample.cluster_cpu_us_per_op:.0f} us; "
        f"windows {sample.windows_apart_s:.2f} s apart"
    )


def _median(
    samples: Sequence[SpreadSample], system: str, arrangement: Arrangement, field: str
) -> float:
    values = [
        getattr(s, field) for s in samples if (s.system, s.arrangement) == (system, arrangement)
    ]
    return statistics.median(values) if values else 0.0


def median_rate(samples: Sequence[SpreadSample], system: str, arrangement: Arrangement) -> float:
    return _median(samples, system, arrangement, "ops_per_s")


def summary(samples: Sequence[SpreadSample]) -> str:
    """The medians as a Markdown table, and troika over etcd with one process and with two."""
    lines = [
        "| system | one process: ops/s | CPU an op: loaded / all | two processes: ops/s "
        "| CPU an op: loaded / all | two over one |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    systems = sorted({s.system for s in samples}, reverse=True)
    for system in systems:
        cells = []
        for arrangement in ARRANGEMENTS:
            loaded = _median(samples, system, arrangement, "cpu_us_per_op")
            every = _median(samples, system, arrangement, "cluster_cpu_us_per_op")
            rate = median_rate(samples, system, arrangement)
            cells.append(f"{rate:,.0f} | {loaded:.0f} / {every:.0f} us")
        one, two = median_rate(samples, system, "one"), median_rate(samples, system, "two")
        lines.append(f"| {system} | {' | '.join(cells)} | {two / one if one else 0:.2f} |")
    etcd_one = median_rate(samples, "etcd", "one")
    if etcd_one and "troika" in systems:
        etcd_two = median_rate(samples, "etcd", "two")
        lines.append("")
        for arrangement in ARRANGEMENTS:
            rate = median_rate(samples, "troika", arrangement)
            lines.append(
                f"troika with {arrangement}: {rate / etcd_one:.2f}x etcd's one process, "
                f"{rate / etcd_two if etcd_two else 0:.2f}x etcd's two"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-w", "--workload", choices=READ_WORKLOADS + WRITE_WORKLOADS, default=READ_WORKLOADS[-1]
    )
    parser.add_argument("-c", "--connections", type=int, default=64, help="in all")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--system", action="append", choices=sorted(KINDS))
    parser.add_argument("--json", type=Path, help="keep every sample here")
    arguments = parser.parse_args(argv)
    systems = arguments.system or ["troika", "etcd"]
    if "etcd" in systems and not etcd_available():
        parser.error("etcd is not installed (apt-get install etcd-server), or pass --system troika")
    plan = SpreadPlan(
        arguments.workload,
        arguments.connections,
        arguments.runs,
        arguments.duration,
        arguments.warmup,
    )
    if plan.connections < 2:
        parser.error("--connections must be at least 2: the arrangement 'two' splits them")
    samples = run_spread(plan, systems)
    if arguments.json is not None:
        arguments.json.write_text(json.dumps([asdict(s) for s in samples], indent=1) + "\n")
    print(summary(samples))


if __name__ == "__main__":
    main()
