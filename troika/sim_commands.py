"""``troika sim``: run, sweep and shrink deterministic simulations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sim.runner import RunOptions

sim_app = typer.Typer(help="Deterministic simulations of a whole cluster.", no_args_is_help=True)


@sim_app.callback()
def _quiet() -> None:
    """Deterministic simulations of a whole cluster."""
    from sim.sweep import quiet_member_logs

    quiet_member_logs()


def _scenario_name(value: str) -> str:
    from sim.scenarios import SCENARIOS

    if value not in SCENARIOS:
        names = ", ".join(sorted(SCENARIOS))
        raise typer.BadParameter(f"{value!r} is not a scenario; one of {names}")
    return value


def _scenario_name_or_all(value: str) -> str:
    return value if value == "all" else _scenario_name(value)


def _bug_names(value: str | None) -> str | None:
    """Refuse an unknown planted bug here, before any run (the member refuses it at start)."""
    if value is None:
        return None
    from actors.bootstrap import KNOWN_PLANTED_BUGS

    unknown = set(value.split(",")) - KNOWN_PLANTED_BUGS
    if unknown:
        raise typer.BadParameter(f"unknown planted bugs: {', '.join(sorted(unknown))}")
    return value


Scenario = Annotated[
    str,
    typer.Option("--scenario", callback=_scenario_name,
                 help="A scenario name (troika sim scenarios)."),
]  # fmt: skip
Scenarios = Annotated[
    str,
    typer.Option("--scenario", callback=_scenario_name_or_all,
                 help="A scenario name (troika sim scenarios), or all (spread over the seeds)."),
]  # fmt: skip
Bug = Annotated[
    str | None,
    typer.Option("--bug", callback=_bug_names,
                 help="Plant bugs, comma-separated (troika sim bugs lists them; "
                 "docs/simulator.md says what each breaks and which check catches it)."),
]  # fmt: skip
Duration = Annotated[
    float | None,
    typer.Option("--duration", min=0, help="Seconds of faults (the scenario's default)."),
]


def _one_of(*choices: str) -> Callable[[str], str]:
    """An option callback that refuses a value outside ``choices`` as a usage error."""

    def check(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


Api = Annotated[
    str,
    typer.Option("--api", "--workload", callback=_one_of("v2", "v3"),
                 help="What the simulated clients speak: v2 (HTTP keys API) or v3 (KV over gRPC)."),
]  # fmt: skip
SweepApi = Annotated[
    str,
    typer.Option("--api", "--workload", callback=_one_of("v2", "v3", "all"),
                 help="What the simulated clients speak: v2 (HTTP keys API), v3 (KV over gRPC), "
                 "or all (each scenario both, in turns of the scenarios' seeds)."),
]  # fmt: skip
ReportDir = Annotated[
    str, typer.Option("--report-dir", help="Where failed runs write their report files.")
]


def _parse_seeds(text: str) -> range:
    low, separator, high = text.partition("..")
    try:
        seeds = range(int(low), int(high) + 1) if separator else range(int(low), int(low) + 1)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not N or A..B") from None
    if not seeds:
        raise typer.BadParameter(f"{text!r} is an empty range (A..B needs A <= B)")
    return seeds


@sim_app.command("scenarios")
def scenarios() -> None:
    """List the scenarios."""
    from sim.scenarios import SCENARIOS

    for name in sorted(SCENARIOS):
        typer.echo(f"{name:22s} {SCENARIOS[name].description}")


@sim_app.command("summary")
def summary(
    results: Annotated[
        Path, typer.Argument(help="A sweep's --results file (docs/sweeps/results-*.jsonl).")
    ],
) -> None:
    """Sum up a sweep's results file: seeds, passes, time, and by API and scenario."""
    from sim.sweep import load_results
    from troika.sweep_record import summary_lines

    if not results.is_file():
        raise typer.BadParameter(f"{results} is not a file", param_hint="RESULTS")
    outcomes = load_results(results)
    for line in summary_lines(outcomes):
        typer.echo(line)
    if any(not outcome.passed for outcome in outcomes):
        raise typer.Exit(1)


@sim_app.command("bugs")
def bugs() -> None:
    """List the bugs a run can plant (--bug)."""
    from actors.bootstrap import KNOWN_PLANTED_BUGS

    for name in sorted(KNOWN_PLANTED_BUGS):
        typer.echo(name)


def sweep_run_options(
    seed: int,
    scenario: str = "all",
    api: str = "all",
    bug: str | None = None,
    duration_s: float | None = None,
) -> RunOptions:
    """The options ``troika sim sweep`` runs ``seed`` with; ``scenario`` and ``api`` may be
    "all", which spreads them over the seeds. A sweep's record is checked against these."""
    from sim.runner import RunOptions
    from sim.sweep import api_for, scenario_for

    return RunOptions(
        seed=seed, scenario=scenario_for(seed, scenario), planted_bug=bug,
        duration_s=duration_s, api=api_for(seed, api, scenario),
    )  # fmt: skip


@sim_app.command("run")
def run_command(
    seed: Annotated[int, typer.Option("--seed", help="The seed: decides everything.")],
    scenario: Scenario = "swarm",
    bug: Bug = None,
    duration: Duration = None,
    clients: Annotated[int, typer.Option("--clients", min=1)] = 8,
    faults_file: Annotated[
        str | None, typer.Option("--faults-file", help="Replay this fault schedule (JSON).")
    ] = None,
    operations_max: Annotated[int | None, typer.Option("--operations-max", min=1)] = None,
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
    scenario: Scenarios = "all",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 2,
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
    api: SweepApi = "all",
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
            min=0,
            help="The determinism self-check: run one seed in N again (at least one) and "
            "fail on a different trace hash; 0 skips it.",
        ),
    ] = 50,
) -> None:
    """Run many seeds across processes (or a Dask cluster), with a progress bar and a
    summary."""
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sim.sweep import earlier_outcomes, sweep

    seed_range = _parse_seeds(seeds)

    def make_options(seed: int) -> RunOptions:
        return sweep_run_options(seed, scenario, api, bug, duration)

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
    trials: Annotated[int, typer.Option("--trials", min=1, help="Runs to spend at most.")] = 60,
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
