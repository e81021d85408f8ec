"""How many Trio task steps and run-loop passes a request costs each member, by task.

``python -m bench.step_count -w put -c 1``: a fresh troika cluster whose members run under a
Trio instrument that counts task steps by the task that takes them and the run loop's waits
for I/O (one a pass); a warm-up load, then the counts are read, the measured load runs against
the leader, and the counts are read again. Per operation, for each member: passes, steps and
the tasks that take most of them, with its CPU (the instrument's own cost included).

The question it answers is the one a profile cannot: at one connection nothing batches, and a
request's cost is the chain of stages it crosses (an HTTP connection, the Raft, storage and
apply actors, the peer writers and readers), each hop a pass of the run loop. The counts do
not depend on how busy the machine is, so they can be taken beside other work.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

import trio

from bench.clusters import TroikaCluster
from bench.loadgen import WORKLOADS, LoadSpec, run_load
from troika.cli import run_serve

SNAPSHOT_SETTLE_S: Final = 0.3
"""Time for the members to write their counts after the signal."""
TOP_TASKS: Final = 8


class StepCounter(trio.abc.Instrument):
    """Counts task steps by task name and the run loop's I/O waits (one a pass)."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()
        self.io_waits = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name] += 1

    def before_io_wait(self, timeout: float) -> None:
        self.io_waits += 1


def run_counted_member(out_prefix: str, troika_argv: list[str]) -> None:
    """Run ``troika serve ...`` (``troika_argv``) with a ``StepCounter`` on its run loop; each
    SIGUSR1 writes the counts so far to ``<out_prefix>.<n>.json``."""
    counter = StepCounter()
    written = 0

    def write_counts(signum: int, frame: FrameType | None) -> None:
        nonlocal written
        written += 1
        counts = {"io_waits": counter.io_waits, "steps": dict(counter.steps),
                  "cpu_s": time.process_time()}  # fmt: skip
        Path(f"{out_prefix}.{written}.json").write_text(json.dumps(counts))

    signal.signal(signal.SIGUSR1, write_counts)
    if troika_argv[:1] != ["serve"]:
        raise SystemExit(f"bench.step_count member: expected a serve command, not {troika_argv}")
    run_serve(troika_argv[1:], os.environ, instruments=[counter])


class CountedTroikaCluster(TroikaCluster):
    """troika members run through ``run_counted_member``; counts land in ``counts_dir``."""

    def __init__(self, size: int, data_root: Path, counts_dir: Path) -> None:
        super().__init__(size, data_root)
        self.counts_dir = counts_dir

    def member_argv(self, index: int) -> list[str]:
        argv = super().member_argv(index)
        troika_at = argv.index("troika")
        prefix = str(self.counts_dir / self.names[index])
        return [sys.executable, "-m", "bench.step_count", "member", prefix, *argv[troika_at + 1 :]]

    def read_counts(self, number: int) -> dict[str, dict[str, object]]:
        """Signal every member for its counts and read them (the ``number``-th snapshot)."""
        for index in range(self.size):
            pid = self.pid(index)
            if pid is not None:
                os.kill(pid, signal.SIGUSR1)
        time.sleep(SNAPSHOT_SETTLE_S)
        return {
            name: json.loads((self.counts_dir / f"{name}.{number}.json").read_text())
            for name in self.names
        }


@dataclass(frozen=True)
class MemberCounts:
    """One member's counts per operation over the measured load."""

    name: str
    passes: float
    steps: float
    cpu_ms: float
    by_task: list[tuple[str, float]]


def per_operation(
    before: dict[str, dict[str, object]], after: dict[str, dict[str, object]], operations: int
) -> list[MemberCounts]:
    """Each member's counts between two snapshots, divided by ``operations``."""
    members = []
    for name in sorted(after):
        first, last = before[name], after[name]
        first_steps = first["steps"]
        last_steps = last["steps"]
        assert isinstance(first_steps, dict) and isinstance(last_steps, dict)
        steps = {task: count - first_steps.get(task, 0) for task, count in last_steps.items()}
        by_task = sorted(
            ((task, count / operations) for task, count in steps.items() if count > 0),
            key=lambda item: -item[1],
        )
        passes = float(last["io_waits"]) - float(first["io_waits"])  # type: ignore[arg-type]
        cpu_s = float(last["cpu_s"]) - float(first["cpu_s"])  # type: ignore[arg-type]
        members.append(
            MemberCounts(name, passes / operations, sum(steps.values()) / operations,
                         cpu_s * 1000 / operations, by_task[:TOP_TASKS])
        )  # fmt: skip
    return members


def report(workload: str, connections: int, leader: str, operations: int,
           members: list[MemberCounts]) -> str:  # fmt: skip
    """The counts as a person reads them."""
    lines = [f"{workload}, {connections} connection(s): {operations} operations, leader {leader}"]
    for member in members:
        role = "leader" if member.name == leader else "member"
        lines.append(
            f"  {member.name} ({role}): {member.passes:.1f} run-loop passes, "
            f"{member.steps:.1f} task steps, {member.cpu_ms:.2f} ms CPU per operation"
        )
        lines.extend(f"      {count:6.2f}  {task}" for task, count in member.by_task)
    return "\n".join(lines)


def count_workload(
    workload: str, connections: int, size: int, duration_s: float, warmup_s: float
) -> str:
    """One workload against a fresh counted cluster: the report."""
    with tempfile.TemporaryDirectory() as scratch:
        counts_dir = Path(scratch) / "counts"
        counts_dir.mkdir()
        with CountedTroikaCluster(size, Path(scratch), counts_dir) as cluster:
            leader = cluster.wait_for_leader()
            endpoint = cluster.client_urls[leader]

            def spec(seconds: float, seed: int) -> LoadSpec:
                return LoadSpec(endpoint=endpoint, workload=workload, connections=connections,  # type: ignore[arg-type]
                                duration_s=seconds, warmup_s=0.0, seed=seed)  # fmt: skip

            trio.run(run_load, spec(warmup_s, 1))
            before = cluster.read_counts(1)
            load = trio.run(run_load, spec(duration_s, 2))
            after = cluster.read_counts(2)
            operations = load.requests + load.errors
            if operations == 0:
                raise RuntimeError(f"{workload}: no operation completed")
            members = per_operation(before, after, operations)
            return report(workload, connections, cluster.names[leader], operations, members)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["member"] and len(arguments) >= 2:
        run_counted_member(arguments[1], arguments[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-w", "--workload", action="append", choices=WORKLOADS)
    parser.add_argument("-c", "--connections", type=int, action="append")
    parser.add_argument("--size", type=int, default=3, help="members")
    parser.add_argument("-d", "--duration", type=float, default=4.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before counting")
    args = parser.parse_args(arguments)
    if args.duration <= 0 or args.warmup <= 0:
        parser.error("--duration and --warmup must be positive")
    if any(connections < 1 for connections in args.connections or ()):
        parser.error("--connections must be at least 1")
    for workload in args.workload or ["put"]:
        for connections in args.connections or [1]:
            print(count_workload(workload, connections, args.size, args.duration, args.warmup))


if __name__ == "__main__":
    main()
