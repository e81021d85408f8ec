"""``troika sim``: run, sweep and shrink deterministic simulations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

sim_app = typer.Typer(help="Deterministic simulations of a whole cluster.", no_args_is_help=True)


@sim_app.callback()
def _quiet() -> None:
    """Deterministic simulations of a whole cluster."""
    from sim.sweep import quiet_member_logs

    quiet_member_logs()


Scenario = Annotated[
    str, typer.Option("--scenario", help="A scenario name (troika sim scenarios), or all.")
]
Bug = Annotated[
    str | None,
    typer.Option("--bug", help="Plant a bug: quorum-read-without-read-index, ack-before-sync, "
                 "skip-election-restriction, commit-by-counting-old-term, peer-no-redial, "
                 "retry-failed-fsync, peer-keep-stale-streams, truncate-on-stale-append, "
                 "skip-seal-check, lessor-wall-clock, and the v3 watch and lease bugs "
                 "(docs/simulator.md; comma-separated for several)."),
]  # fmt: skip
Duration = Annotated[
    float | None, typer.Option("--duration", help="Seconds of faults (the scenario's default).")
]
Api = Annotated[
    str,
    typer.Option("--api", "--workload",
                 help="What the simulated clients speak: v2 (HTTP keys API) or v3 (KV over gRPC)."),
]  # fmt: skip
ReportDir = Annotated[
    str, typer.Option("--report-dir", help="Where failed runs write their report files.")
]


def _parse_seeds(text: str) -> range:
    low, separator, high = text.partition("..")
    try:
        return range(int(low), int(high) + 1) if separator else range(int(low), int(low) + 1)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not N or A..B") from None


@sim_app.command("scenarios")
def scenarios() -> None:
    """List the scenarios."""
    from sim.scenarios import SCENARIOS

    for name in sorted(SCENARIOS):
        typer.echo(f"{name:22s} {SCENARIOS[name].description}")


@sim_app.command("run")
def run_command(
    seed: Annotated[int, typer.Option("--seed", help="The seed: decides everything.")],
    scenario: Scenario = "swarm",
    bug: Bug = None,
    duration: Duration = None,
    clients: Annotated[int, typer.Option("--clients")] = 8,
    faults_file: Annotated[
        str | None, typer.Option("--faults-file", help="Replay this fault schedule (JSON).")
    ] = None,
    operations_max: Annotated[int | None, typer.Option("--operations-max")] = None,
    report_dir: ReportDir = "sim-reports",
    api: Api = "v2",
) -> None:
    """Run one seed; print its seed first and its trace hash last."""
    from sim.report import faults_from_json, summary_lines, write_failure
    from sim.runner import RunOptions, run

    faults = faults_from_json(Path(faults_file).read_text()) if faults_file else None
    options = RunOptions(
        seed=seed, scenario=scenario, planted_bug=bug, duration_s=duration, faults=faults,
        clients=clients, operations_max=operations_max, api=api,
    )  # fmt: skip
    typer.echo(f"SEED={seed}")
    result = run(options)
    for line in summary_lines(result)[1:]:
        typer.echo(line)
    if not result.passed:
        typer.echo(f"report: {write_failure(result, Path(report_dir))}")
        raise typer.Exit(1)


@sim_app.command("sweep")
def sweep_command(
    seeds: Annotated[str, typer.Option("--seeds", help="A..B (inclusive).")] = "0..99",
    scenario: Scenario = "all",
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 2,
    bug: Bug = None,
    duration: Duration = None,
    report_dir: ReportDir = "sim-reports",
    results: Annotated[
        str | None,
        typer.Option(
            "--results",
            help="Append each finished seed to this JSON-lines file; seeds already in it "
            "are not run again (an interrupted sweep resumes).",
        ),
    ] = None,
    api: Api = "v2",
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="Run the seeds as tasks on this Dask scheduler (tcp://HOST:8786) instead of "
            "local processes (--workers is then ignored).",
        ),
    ] = None,
    recheck_every: Annotated[
        int,
        typer.Option(
            "--recheck-every",
            help="The determinism self-check: run one seed in N again (at least one) and "
            "fail on a different trace hash; 0 skips it.",
        ),
    ] = 50,
) -> None:
    """Run many seeds across processes (or a Dask cluster), with a progress bar and a
    summary."""
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sim.runner import RunOptions
    from sim.sweep import earlier_outcomes, scenario_for, sweep

    seed_range = _parse_seeds(seeds)

    def make_options(seed: int) -> RunOptions:
        return RunOptions(
            seed=seed, scenario=scenario_for(seed, scenario), planted_bug=bug,
            duration_s=duration, api=api,
        )  # fmt: skip

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("failed: {task.fields[failed]}"))  # fmt: skip
    with Progress(*columns) as progress:
        earlier = earlier_outcomes(Path(results), seed_range, make_options) if results else []
        failed = sum(1 for o in earlier if not o.passed)
        already = len(earlier)
        task = progress.add_task("sweep", total=len(seed_range), completed=already, failed=failed)

        def on_outcome(outcome: object) -> None:
            nonlocal failed
            failed += not getattr(outcome, "passed", True)
            progress.update(task, advance=1, failed=failed)

        summary = sweep(
            seed_range,
            make_options,
            workers=workers,
            report_dir=report_dir,
            on_outcome=on_outcome,
            results_path=Path(results) if results else None,
            scheduler=scheduler,
            recheck_every=recheck_every,
        )
    for line in summary.lines():
        typer.echo(line)
    if summary.failures:
        raise typer.Exit(1)


@sim_app.command("shrink")
def shrink_command(
    seed: Annotated[int, typer.Option("--seed")],
    scenario: Scenario = "swarm",
    bug: Bug = None,
    duration: Duration = None,
    trials: Annotated[int, typer.Option("--trials", help="Runs to spend at most.")] = 60,
    report_dir: ReportDir = "sim-reports",
    api: Api = "v2",
) -> None:
    """Find a shorter fault schedule and fewer operations that still fail, and print them."""
    from sim.report import faults_to_json, summary_lines, write_failure
    from sim.runner import RunOptions, RunResult
    from sim.shrink import shrink

    options = RunOptions(
        seed=seed, scenario=scenario, planted_bug=bug, duration_s=duration, api=api
    )

    def on_trial(result: RunResult) -> None:
        verdict = "fails" if not result.passed else "passes"
        typer.echo(
            f"  trial: {len(result.faults)} faults, {result.operations} operations: {verdict}"
        )

    try:
        shrunk = shrink(options, trials_max=trials, on_trial=on_trial)
    except ValueError as error:
        typer.echo(str(error))
        raise typer.Exit(2) from None
    smallest = shrunk.smallest
    directory = write_failure(smallest, Path(report_dir) / "shrunk")
    faults_file = directory / "faults.json"
    faults_file.write_text(faults_to_json(smallest.faults) + "\n")
    typer.echo(
        f"shrunk in {shrunk.trials} runs: {len(shrunk.original.faults)} -> {len(smallest.faults)} "
        f"faults, {shrunk.original.operations} -> {smallest.operations} operations"
    )
    for line in summary_lines(smallest):
        typer.echo(line)
    typer.echo(f"replay the shrunk run: {smallest.options.replay_command(str(faults_file))}")
