"""``troika bench``: troika beside etcd 3.4 on this machine, the same load in the same run."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from bench.suite import BenchPlan

ALL = "all"
ALL_V3 = "all-v3"
WATCH_V3 = "watch-v3"
MEMORY = "memory"
EVERYTHING = "everything"


def expand_workloads(names: tuple[str, ...]) -> tuple[str, ...]:
    """The workloads named, with ``all`` (the v2 ones and watch), ``all-v3`` (the v3 KV ones,
    the v3 watch fan-outs and memory), ``watch-v3``, ``memory`` and ``everything`` expanded,
    each once, in order."""
    from bench.loadgen import V3_WORKLOADS
    from bench.memory import MEMORY_WORKLOADS
    from bench.suite import V2_BENCH_WORKLOADS, V3_WATCH_WORKLOADS

    every_v3 = (*V3_WORKLOADS, *V3_WATCH_WORKLOADS, *MEMORY_WORKLOADS)
    groups = {
        ALL: V2_BENCH_WORKLOADS,
        ALL_V3: every_v3,
        WATCH_V3: V3_WATCH_WORKLOADS,
        MEMORY: MEMORY_WORKLOADS,
        EVERYTHING: (*V2_BENCH_WORKLOADS, *every_v3),
    }
    expanded: list[str] = []
    for name in names:
        for item in groups.get(name, (name,)):
            if item not in expanded:
                expanded.append(item)
    return tuple(expanded)


def bench_command(
    workload: Annotated[
        list[str] | None,
        typer.Option(
            "--workload",
            "-w",
            help="put, get-linearizable, get-serializable, cas, mixed, watch (the v2 API); "
            "v3-put, v3-range, v3-range-serializable, v3-txn (v3 over gRPC), the same with -gw "
            "(over the JSON gateway); v3-watch (watchers multiplexed on a gRPC Watch stream "
            "per member), v3-watch-streams (a stream per watcher): -c counts watchers; "
            "mem-leases, mem-watchers, mem-keys (a member's memory holding --memory-items of "
            "them; mem-keys: 256-byte values, issue 13 compares at 100000); "
            "all (the v2 ones), all-v3, watch-v3, memory, or everything "
            "(repeat the option for several; default: all).",
        ),
    ] = None,
    connections: Annotated[
        list[int] | None,
        typer.Option("--connections", "-c", help="Connection counts (repeat; default: 1 16 64)."),
    ] = None,
    runs: Annotated[int, typer.Option("--runs", help="Repetitions; figures are medians.")] = 3,
    duration: Annotated[float, typer.Option("--duration", "-d", help="Seconds measured.")] = 5.0,
    warmup: Annotated[float, typer.Option("--warmup", help="Seconds before measuring.")] = 1.0,
    key_size: Annotated[int, typer.Option("--key-size")] = 8,
    value_size: Annotated[int, typer.Option("--value-size")] = 256,
    key_space: Annotated[int, typer.Option("--key-space", help="Distinct keys of puts.")] = 100_000,
    sequential_keys: Annotated[bool, typer.Option("--sequential-keys")] = False,
    read_fraction: Annotated[float, typer.Option("--read-fraction", help="Of mixed.")] = 0.9,
    watch_writes: Annotated[
        int, typer.Option("--watch-writes", help="Writes each watcher must see (watch).")
    ] = 200,
    watch_writers: Annotated[
        int, typer.Option("--watch-writers", help="Puts in flight during v3 watch samples.")
    ] = 16,
    memory_items: Annotated[
        int, typer.Option("--memory-items", help="Leases, watchers or keys held (mem-*).")
    ] = 10_000,
    size: Annotated[int, typer.Option("--size", help="Members per cluster.")] = 3,
    system: Annotated[
        list[str] | None,
        typer.Option("--system", help="troika and/or etcd (repeat; default: both)."),
    ] = None,
    target: Annotated[
        str, typer.Option("--target", help="processes (real clusters) or sim (the simulator).")
    ] = "processes",
    json_path: Annotated[Path, typer.Option("--json", help="Results file.")] = Path("bench.json"),
    png_path: Annotated[Path, typer.Option("--png", help="Chart file.")] = Path("bench.png"),
    no_ceiling: Annotated[
        bool, typer.Option("--no-ceiling", help="Skip the load generator's own ceiling.")
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Keep member data and logs here.")
    ] = None,
) -> None:
    """Measure troika and etcd 3.4 side by side: a table, a JSON file and a chart."""
    from bench.suite import SYSTEMS, BenchPlan

    workloads = expand_workloads(tuple(workload or (ALL,)))
    try:
        plan = BenchPlan(
            workloads=workloads,
            connections=tuple(connections or (1, 16, 64)),
            runs=runs,
            duration_s=duration,
            warmup_s=warmup,
            key_size=key_size,
            value_size=value_size,
            key_space=key_space,
            sequential_keys=sequential_keys,
            read_fraction=read_fraction,
            cluster_size=size,
            systems=tuple(system or SYSTEMS),
            watch_writes=watch_writes,
            ceiling=not no_ceiling,
            watch_writers=watch_writers,
            memory_items=memory_items,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if target == "sim":
        _bench_simulated(plan, json_path)
    elif target == "processes":
        _bench_processes(plan, json_path, png_path, data_dir)
    else:
        raise typer.BadParameter(f"--target is processes or sim, not {target!r}")


def _bench_processes(
    plan: BenchPlan, json_path: Path, png_path: Path, data_dir: Path | None
) -> None:
    from bench.chart import draw
    from bench.suite import format_table, run_bench

    with _progress_bar(_sample_count(plan)) as advance:
        report = run_bench(plan, data_dir, progress=advance)
    for ceiling in report.ceilings:
        load = ceiling.load
        typer.echo(
            f"load generator ceiling c={load.connections}: {load.ops_per_s:.0f} req/s "
            f"(limited by {ceiling.limited_by})"
        )
    typer.echo(format_table(report))
    for note in report.notes:
        typer.echo(f"note: {note}")
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    draw(report, png_path)
    typer.echo(f"results: {json_path}, chart: {png_path}")


def _bench_simulated(plan: BenchPlan, json_path: Path) -> None:
    from bench.suite import format_simulated, run_simulated

    with _progress_bar(len(plan.connections) * plan.runs) as advance:
        report = run_simulated(plan, progress=advance)
    typer.echo(format_simulated(report))
    for note in report.notes:
        typer.echo(f"note: {note}")
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    typer.echo(f"results: {json_path}")


def _sample_count(plan: BenchPlan) -> int:
    from bench.clusters import etcd_available

    systems = [s for s in plan.systems if s != "etcd" or etcd_available()]
    starts = len(systems) if plan.rate_workloads else 0
    steps = len(plan.steps(systems)) + len(plan.memory_steps(systems))
    return steps + starts + int(plan.needs_ceiling)


@contextlib.contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar that moves one step each time the bench says what comes next."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("bench", total=total)
        started = False

        def advance(description: str) -> None:
            nonlocal started
            if started:
                progress.advance(task)
            started = True
            progress.update(task, description=description)

        yield advance
