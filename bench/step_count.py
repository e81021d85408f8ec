"""How many Trio task steps and run-loop passes a request costs each member, and their CPU.

``python -m bench.step_count -w put -c 1``: a fresh troika cluster whose members run under a
Trio instrument that counts task steps by the task that takes them and the run loop's waits
for I/O (one a pass), reading the main thread's CPU clock on either side of each; a warm-up
load, then the counts are read, the measured load runs against the leader, and the counts are
read again. Per operation, for each member: passes, steps, the process's CPU and the main
thread's split into task steps, I/O waits and Trio's scheduling between them, and the tasks
that cost most. ``--hop-cost`` measures what a pass of Trio's run loop costs by itself, plain
and with the counter (the counter's own cost is in every figure).

The question it answers is one a sampling profile answers poorly: at one connection nothing
batches, and a request crosses a chain of stages (an HTTP connection, the Raft, storage and
apply actors, the peer writers and readers); is its cost the hops between them or the work
in each? The counts do not depend on how busy the machine is; the CPU figures do.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

import trio

from bench.clusters import TroikaCluster
from bench.loadgen import WORKLOADS, LoadSpec, run_load
from troika.cli import run_serve

SNAPSHOT_WAIT_S: Final = 10.0
"""How long the members have to write their counts after the signal."""
TOP_TASKS: Final = 8


class StepCounter(trio.abc.Instrument):
    """Counts task steps by task name and the run loop's I/O waits (one a pass), and the main
    thread's CPU time in each (``time.thread_time`` at either side: about a microsecond a
    reading, which the figures include)."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()
        self.step_cpu_s: defaultdict[str, float] = defaultdict(float)
        self.io_waits = 0
        self.io_cpu_s = 0.0
        self._started_s = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name] += 1
        self._started_s = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.step_cpu_s[task.name] += time.thread_time() - self._started_s

    def before_io_wait(self, timeout: float) -> None:
        self.io_waits += 1
        self._started_s = time.thread_time()

    def after_io_wait(self, timeout: float) -> None:
        self.io_cpu_s += time.thread_time() - self._started_s

    def snapshot(self) -> dict[str, object]:
        """The counts so far, with the process's and the main thread's CPU seconds (call on
        the main thread)."""
        return {"io_waits": self.io_waits, "io_cpu_s": self.io_cpu_s,
                "steps": dict(self.steps), "step_cpu_s": dict(self.step_cpu_s),
                "cpu_s": time.process_time(), "main_cpu_s": time.thread_time()}  # fmt: skip


def run_counted_member(out_prefix: str, troika_argv: list[str]) -> None:
    """Run ``troika serve ...`` (``troika_argv``) with a ``StepCounter`` on its run loop; each
    SIGUSR1 writes the counts so far to ``<out_prefix>.<n>.json``."""
    counter = StepCounter()
    written = 0

    def write_counts(signum: int, frame: FrameType | None) -> None:
        nonlocal written
        written += 1
        partial = Path(f"{out_prefix}.{written}.partial")
        partial.write_text(json.dumps(counter.snapshot()))
        partial.replace(f"{out_prefix}.{written}.json")  # the reader sees all of it or nothing

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
        paths = {name: self.counts_dir / f"{name}.{number}.json" for name in self.names}
        deadline_s = time.monotonic() + SNAPSHOT_WAIT_S
        while not all(path.exists() for path in paths.values()):
            if time.monotonic() > deadline_s:
                missing = sorted(name for name, path in paths.items() if not path.exists())
                raise RuntimeError(f"no counts from {', '.join(missing)}")
            time.sleep(0.05)
        return {name: json.loads(path.read_text()) for name, path in paths.items()}


@dataclass(frozen=True)
class MemberCounts:
    """One member's counts per operation over the measured load (CPU in microseconds)."""

    name: str
    passes: float
    steps: float
    cpu_us: float
    """The whole process: the main thread and the fsync and RocksDB worker threads."""
    main_cpu_us: float
    io_wait_cpu_us: float
    """The main thread in the run loop's waits for I/O (``epoll_wait``)."""
    step_cpu_us: float
    """The main thread in task steps: member code and the Trio calls it makes."""
    by_task: list[tuple[str, float, float]]
    """The tasks with the most CPU: name, steps, CPU."""

    @property
    def run_loop_cpu_us(self) -> float:
        """The main thread outside task steps and I/O waits: Trio's scheduling itself."""
        return self.main_cpu_us - self.io_wait_cpu_us - self.step_cpu_us


def _delta(first: dict[str, object], last: dict[str, object], key: str) -> float:
    return float(last[key]) - float(first[key])  # type: ignore[arg-type]


def _by_task(first: dict[str, object], last: dict[str, object], key: str) -> dict[str, float]:
    before, after = first[key], last[key]
    assert isinstance(before, dict) and isinstance(after, dict)
    return {task: value - before.get(task, 0) for task, value in after.items()}


def per_operation(
    before: dict[str, dict[str, object]], after: dict[str, dict[str, object]], operations: int
) -> list[MemberCounts]:
    """Each member's counts between two snapshots, divided by ``operations``."""
    members = []
    for name in sorted(after):
        first, last = before[name], after[name]
        steps = _by_task(first, last, "steps")
        step_cpu_s = _by_task(first, last, "step_cpu_s")
        by_task = sorted(
            ((task, count / operations, step_cpu_s[task] * 1e6 / operations)
             for task, count in steps.items() if count > 0),
            key=lambda item: -item[2],
        )  # fmt: skip
        per_op_us = 1e6 / operations
        members.append(
            MemberCounts(
                name=name,
                passes=_delta(first, last, "io_waits") / operations,
                steps=sum(steps.values()) / operations,
                cpu_us=_delta(first, last, "cpu_s") * per_op_us,
                main_cpu_us=_delta(first, last, "main_cpu_s") * per_op_us,
                io_wait_cpu_us=_delta(first, last, "io_cpu_s") * per_op_us,
                step_cpu_us=sum(step_cpu_s.values()) * per_op_us,
                by_task=by_task[:TOP_TASKS],
            )
        )
    return members


def report(workload: str, connections: int, leader: str, operations: int,
           members: list[MemberCounts]) -> str:  # fmt: skip
    """The counts as a person reads them."""
    lines = [f"{workload}, {connections} connection(s): {operations} operations, leader {leader}"]
    for member in members:
        role = "leader" if member.name == leader else "member"
        lines.append(
            f"  {member.name} ({role}), per operation: {member.passes:.1f} run-loop passes, "
            f"{member.steps:.1f} task steps; CPU {member.cpu_us:.0f} us, of it the main thread "
            f"{member.main_cpu_us:.0f} us: task steps {member.step_cpu_us:.0f}, "
            f"I/O waits {member.io_wait_cpu_us:.0f}, run loop {member.run_loop_cpu_us:.0f}"
        )
        lines.extend(
            f"      {steps:6.2f} steps {cpu_us:7.1f} us  {task}"
            for task, steps, cpu_us in member.by_task
        )
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


async def _relay(
    receive: trio.MemoryReceiveChannel[int], send: trio.MemorySendChannel[int]
) -> None:
    async for item in receive:
        send.send_nowait(item)


async def _pass_tokens(stages: int, tokens: int, cpu_s: list[float], width: int = 1) -> None:
    """``width`` chains of ``stages`` relays side by side; ``tokens`` rounds, each sending one
    token down every chain and waiting for them all: with ``width`` > 1 a pass of the run loop
    runs ``width`` steps, so the cost per step comes apart from the cost per pass."""
    async with trio.open_nursery() as nursery:
        heads, tails = [], []
        for _ in range(width):
            head, receive = trio.open_memory_channel[int](1)
            for _ in range(stages):
                send, next_receive = trio.open_memory_channel[int](1)
                nursery.start_soon(_relay, receive, send)
                receive = next_receive
            heads.append(head)
            tails.append(receive)
        started_s = time.process_time()
        for token in range(tokens):
            for head in heads:
                head.send_nowait(token)
            for tail in tails:
                await tail.receive()
        cpu_s.append(time.process_time() - started_s)
        nursery.cancel_scope.cancel()


def hop_cost_us(
    stages: int, tokens: int, counted: bool, width: int = 1, simulated: bool = False
) -> float:
    """CPU microseconds a hop of a token through a chain of ``stages`` tasks joined by memory
    channels, each hop one task step (and, with one chain, one run-loop pass) with nothing else
    to do: Trio's own cost of a step and a pass (with ``counted``, plus the ``StepCounter``'s).
    ``simulated``: under the simulator's run loop (``sim.determinism.run_deterministic``: a
    seeded scheduler, virtual time, garbage collected at fixed points) instead of
    ``trio.run``."""
    cpu_s: list[float] = []
    instruments = [StepCounter()] if counted else []
    if simulated:
        from sim.determinism import run_deterministic  # noqa: PLC0415  (only this mode)

        run_deterministic(
            _pass_tokens, 1, stages, tokens, cpu_s, width, instruments=instruments
        )  # fmt: skip
    else:
        trio.run(_pass_tokens, stages, tokens, cpu_s, width, instruments=instruments)
    return cpu_s[0] * 1e6 / (tokens * width * (stages + 1))


def count_simulated(seed: int, scenario: str, api: str, duration_s: float | None = None) -> str:
    """One simulated run (``troika sim run``) with a ``StepCounter`` beside its own
    instruments: CPU by task, the simulator's tasks and the members' alike."""
    import sim.runner  # noqa: PLC0415  (only this mode needs the simulator)
    from sim.sweep import quiet_member_logs  # noqa: PLC0415

    counter = StepCounter()
    quiet_member_logs()
    started_s = time.process_time()
    options = sim.runner.RunOptions(seed, scenario, api=api, duration_s=duration_s)
    result = sim.runner.run(options, instruments=[counter])
    cpu_s = time.process_time() - started_s
    in_steps_s = sum(counter.step_cpu_s.values())
    steps_by_task: Counter[str] = Counter()
    cpu_s_by_task: defaultdict[str, float] = defaultdict(float)
    for task, steps in counter.steps.items():
        short = task.split(".<locals>")[0]
        steps_by_task[short] += steps
        cpu_s_by_task[short] += counter.step_cpu_s[task]
    lines = [
        f"{scenario} seed {seed} ({api}): {result.operations} operations, "
        f"{result.simulated_s:.1f} s simulated, {cpu_s:.1f} s of CPU, passed: {result.passed}, "
        f"trace hash {result.trace_hash}",
        f"  {sum(counter.steps.values())} task steps: CPU in them {in_steps_s:.2f} s, in I/O "
        f"waits {counter.io_cpu_s:.2f} s, the rest (scheduling, checks, setup) "
        f"{cpu_s - in_steps_s - counter.io_cpu_s:.2f} s",
    ]
    for task, task_cpu_s in sorted(cpu_s_by_task.items(), key=lambda item: -item[1]):
        if task_cpu_s >= 0.005 * cpu_s:
            steps = steps_by_task[task]
            lines.append(
                f"  {task_cpu_s:7.2f} s {100 * task_cpu_s / cpu_s:5.1f} % {steps:9d} steps "
                f"{task_cpu_s * 1e6 / steps:6.1f} us a step  {task}"
            )
    return "\n".join(lines)


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
    parser.add_argument(
        "--hop-cost", action="store_true", help="Trio's cost of a pass, with and without a counter"
    )
    parser.add_argument(
        "--sim", nargs=3, metavar=("SEED", "SCENARIO", "API"),
        help="count one simulated run instead of a real cluster (e.g. 4242 split-brain v2)",
    )  # fmt: skip
    args = parser.parse_args(arguments)
    if args.sim:
        seed, scenario, api = args.sim
        print(count_simulated(int(seed), scenario, api))
        return
    if args.hop_cost:
        for counted in (False, True):
            costs = ", ".join(f"{hop_cost_us(stages, 20_000, counted):.1f}" for stages in (4, 16))
            label = "with the step counter" if counted else "plain Trio"
            print(f"{label}: {costs} us a hop (chains of 4 and 16 tasks)")
        for simulated in (False, True):
            costs = ", ".join(
                f"{hop_cost_us(16, 20_000 // width, False, width, simulated):.1f}"
                for width in (1, 16)
            )
            label = "the simulator's run loop" if simulated else "plain Trio"
            chains = "one chain of 16 tasks, a step a pass; 16 side by side"
            print(f"{label}: {costs} us a step ({chains})")
        return
    if args.duration <= 0 or args.warmup <= 0:
        parser.error("--duration and --warmup must be positive")
    if any(connections < 1 for connections in args.connections or ()):
        parser.error("--connections must be at least 1")
    for workload in args.workload or ["put"]:
        for connections in args.connections or [1]:
            print(count_workload(workload, connections, args.size, args.duration, args.warmup))


if __name__ == "__main__":
    main()
