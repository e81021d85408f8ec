"""Many seeds across worker processes: ``troika sim sweep``.

Each worker process runs whole seeds (a run is deterministic, so where it
runs does not matter) and sends back a compact outcome; failures also write
their report files. A wall-clock limit per seed guards the sweep itself
(the simulation's own watchdog is deterministic; this is a harness guard):
a seed over the limit is reported as a failure, and replaying it shows why.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sim.report import summary_lines, write_failure
from sim.runner import RunOptions, run
from sim.scenarios import SCENARIOS


def quiet_member_logs() -> None:
    """Members log every lost connection; in a simulation full of faults, only errors matter."""
    logging.getLogger().setLevel(logging.ERROR)


SEED_WALL_S_MAX = 600.0
"""A seed that takes longer than this (wall clock) is stopped and reported."""


@dataclass(frozen=True)
class SeedOutcome:
    """One seed, as the sweep reports it."""

    seed: int
    scenario: str
    passed: bool
    summary: list[str]
    simulated_s: float
    wall_s: float
    operations: int
    report_dir: str = ""
    replay: str = ""
    """The command that replays the seed: it names every option the run had."""


@dataclass
class SweepSummary:
    """All seeds of a sweep."""

    outcomes: list[SeedOutcome] = field(default_factory=list)
    wall_s: float = 0.0
    resumed: int = 0
    """How many of ``outcomes`` came from an earlier sweep's results file."""

    @property
    def failures(self) -> list[SeedOutcome]:
        """The seeds that failed, in seed order."""
        return sorted((o for o in self.outcomes if not o.passed), key=lambda o: o.seed)

    def lines(self) -> list[str]:
        """The summary a person reads."""
        simulated = sum(o.simulated_s for o in self.outcomes)
        busy = sum(o.wall_s for o in self.outcomes)
        operations = sum(o.operations for o in self.outcomes)
        ran_here = len(self.outcomes) - self.resumed
        per_minute = ran_here * 60 / max(self.wall_s, 1e-9)
        lines = [
            f"{len(self.outcomes)} seeds: {len(self.outcomes) - len(self.failures)} passed, "
            f"{len(self.failures)} failed, {operations} client operations",
            f"{simulated:.0f}s simulated in {busy:.0f}s of worker time "
            f"({simulated / max(busy, 1e-9):.1f} simulated s per wall s per worker); "
            f"this sweep ran {ran_here} seeds in {self.wall_s:.0f}s "
            f"({per_minute:.1f} seeds/minute)",
        ]
        if self.resumed:
            lines.append(f"{self.resumed} seeds were read back from an earlier sweep's results")
        for outcome in self.failures:
            lines.append(f"FAILED seed {outcome.seed} ({outcome.scenario}):")
            lines.extend("  " + line for line in outcome.summary[1:])
            if outcome.report_dir:
                lines.append(f"  report: {outcome.report_dir}")
        return lines


def scenario_for(seed: int, scenario: str) -> str:
    """``all`` spreads the scenarios over the seeds; otherwise the one named."""
    if scenario != "all":
        return scenario
    names = sorted(SCENARIOS)
    return names[seed % len(names)]


class SeedTooSlow(Exception):
    """The seed passed the sweep's wall-clock limit."""


def _too_slow(signum: int, frame: object) -> None:
    raise SeedTooSlow(f"the seed took longer than {SEED_WALL_S_MAX:g}s of wall time")


def run_one(
    options: RunOptions, report_dir: str, wall_s_max: float = SEED_WALL_S_MAX
) -> SeedOutcome:
    """Run a seed in a worker (or here) and condense what it saw."""
    quiet_member_logs()
    previous = signal.signal(signal.SIGALRM, _too_slow)
    signal.setitimer(signal.ITIMER_REAL, wall_s_max)
    try:
        result = run(options)
    except SeedTooSlow as error:
        return SeedOutcome(
            options.seed, options.scenario, False,
            [f"SEED={options.seed} scenario={options.scenario}", f"FAILED: {error}",
             f"replay: {options.replay_command()}"],
            0.0, wall_s_max, 0, replay=options.replay_command(),
        )  # fmt: skip
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    written = ""
    if not result.passed and report_dir:
        written = str(write_failure(result, Path(report_dir)))
    return SeedOutcome(
        options.seed,
        options.scenario,
        result.passed,
        summary_lines(result),
        result.simulated_s,
        result.wall_s,
        result.operations,
        written,
        options.replay_command(),
    )


def load_results(path: Path) -> list[SeedOutcome]:
    """The outcomes an earlier sweep appended to ``path`` (none if it does not exist).

    A sweep stopped part way (Ctrl-C, a machine needed for something else)
    keeps every seed it finished, so a 10,000-seed sweep can run in pieces.
    A last line cut short by the stop is ignored.
    """
    if not path.exists():
        return []
    outcomes = []
    for line in path.read_text().splitlines():
        try:
            outcomes.append(SeedOutcome(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return outcomes


def earlier_outcomes(
    path: Path, seeds: Iterable[int], make_options: Callable[[int], RunOptions]
) -> list[SeedOutcome]:
    """The seeds of ``seeds`` that ``path`` already holds, run with the same options."""
    wanted = set(seeds)
    return [
        outcome
        for outcome in load_results(path)
        if outcome.seed in wanted and outcome.replay == make_options(outcome.seed).replay_command()
    ]


def append_result(path: Path, outcome: SeedOutcome) -> None:
    """Add one finished seed to a sweep's results file (one JSON object per line)."""
    with path.open("a") as results:
        results.write(json.dumps(dataclasses.asdict(outcome), sort_keys=True) + "\n")


def sweep(
    seeds: Iterable[int],
    make_options: Callable[[int], RunOptions],
    *,
    workers: int,
    report_dir: str = "",
    on_outcome: Callable[[SeedOutcome], None] | None = None,
    results_path: Path | None = None,
) -> SweepSummary:
    """Run every seed on ``workers`` processes; ``on_outcome`` sees each as it ends.

    With ``results_path``, each finished seed is appended there, and seeds
    already in it (from an earlier, interrupted sweep with the same options)
    are not run again.
    """
    summary = SweepSummary()
    wanted = set(seeds)
    if results_path is not None:
        earlier = earlier_outcomes(results_path, wanted, make_options)
        done = {o.seed for o in earlier}
        summary.outcomes.extend(earlier)
        summary.resumed = len(earlier)
        wanted -= done
        inner = on_outcome

        def on_outcome(outcome: SeedOutcome) -> None:
            append_result(results_path, outcome)
            if inner is not None:
                inner(outcome)

    started = time.perf_counter()  # the harness reports wall time
    options_list = [make_options(seed) for seed in sorted(wanted)]
    if workers <= 1:
        for options in options_list:
            _record(summary, run_one(options, report_dir), on_outcome)
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {
                pool.submit(run_one, options, report_dir): options for options in options_list
            }
            for future in concurrent.futures.as_completed(futures):
                options = futures[future]
                try:
                    outcome = future.result()
                except Exception as error:  # a worker that died: report it, keep sweeping
                    outcome = SeedOutcome(
                        options.seed, options.scenario, False,
                        [f"SEED={options.seed}", f"the worker failed: {error!r}",
                         f"replay: {options.replay_command()}"],
                        0.0, 0.0, 0, replay=options.replay_command(),
                    )  # fmt: skip
                _record(summary, outcome, on_outcome)
    summary.wall_s = time.perf_counter() - started
    return summary


def _record(
    summary: SweepSummary, outcome: SeedOutcome, on_outcome: Callable[[SeedOutcome], None] | None
) -> None:
    summary.outcomes.append(outcome)
    if on_outcome is not None:
        on_outcome(outcome)
