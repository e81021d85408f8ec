"""Many seeds across worker processes: ``troika sim sweep``.

Each worker process runs whole seeds (a run is deterministic, so where it
runs does not matter) and sends back a compact outcome; failures also write
their report files. A wall-clock limit per seed guards the sweep itself
(the simulation's own watchdog is deterministic; this is a harness guard):
a seed over the limit is reported as a failure, and replaying it shows why.

Where seeds run: local worker processes by default, or the workers of a Dask
distributed cluster (``scheduler="tcp://HOST:8786"``, ``sim.dask_sweep``). Either
way outcomes stream back into the same resumable JSON-lines file.

The determinism self-check: after the seeds, a sweep runs a sample of them again
(one in ``recheck_every``, at least one) wherever a worker is free, and fails if a
trace hash differs: the sweep checks its own premise, that a seed replays.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sim.report import (
    failure_files,
    failure_kind,
    run_directory,
    summary_lines,
    write_failure,
    write_files,
)
from sim.runner import APIS, RunOptions, RunResult, run
from sim.scenarios import SCENARIOS


def quiet_member_logs() -> None:
    """Members log every lost connection; in a simulation full of faults, only errors matter."""
    logging.getLogger().setLevel(logging.ERROR)


SEED_WALL_S_MAX = 600.0
"""A seed that takes longer than this (wall clock) is stopped and reported."""
LAST_RESORT_GRACE_S = 60.0
"""How long after its limit a seed that has not stopped itself is interrupted by a signal."""
RECHECK_EVERY = 50
"""The determinism self-check reruns one seed in this many (at least one per sweep)."""


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
    trace_hash: str = ""
    """The run's trace hash ("" when it was stopped): the determinism self-check compares it."""
    kind: str = ""
    """What a failure broke: ``sim.report.failure_kind``'s (``FAILURE_KINDS`` or timeout), or
    worker, determinism."""


@dataclass
class SweepSummary:
    """All seeds of a sweep."""

    outcomes: list[SeedOutcome] = field(default_factory=list)
    wall_s: float = 0.0
    resumed: int = 0
    """How many of ``outcomes`` came from an earlier sweep's results file."""
    rechecked: list[int] = field(default_factory=list)
    """The seeds the determinism self-check ran again."""
    nondeterministic: list[SeedOutcome] = field(default_factory=list)
    """Determinism failures: a seed whose rerun gave another trace hash."""

    @property
    def failures(self) -> list[SeedOutcome]:
        """The seeds that failed (determinism failures included), in seed order."""
        failed = [o for o in self.outcomes if not o.passed] + self.nondeterministic
        return sorted(failed, key=lambda o: o.seed)

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
        if self.rechecked:
            verdict = "DIFFERENT for some" if self.nondeterministic else "all equal"
            lines.append(
                f"determinism self-check: {len(self.rechecked)} seeds run again "
                f"({', '.join(map(str, self.rechecked[:10]))}"
                f"{', ...' if len(self.rechecked) > 10 else ''}): trace hashes {verdict}"
            )
        for outcome in self.failures:
            kind = f", {outcome.kind}" if outcome.kind else ""
            lines.append(f"FAILED seed {outcome.seed} ({outcome.scenario}{kind}):")
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


def api_for(seed: int, api: str, scenario: str) -> str:
    """``all`` gives every scenario both APIs in turn; otherwise the one named.

    With the scenarios spread over the seeds, seed ``s`` runs scenario ``s mod n``, and an
    API alternating seed by seed would tie each scenario to one API (``n`` is even): so it
    changes once a round of ``n`` seeds (seeds 0 to n-1 speak v2, n to 2n-1 v3, and so on).
    With one scenario it changes every seed.
    """
    if api != "all":
        return api
    round_seeds = len(SCENARIOS) if scenario == "all" else 1
    return APIS[(seed // round_seeds) % len(APIS)]


class SeedTooSlow(Exception):
    """The seed ran past the sweep's wall-clock limit and did not stop itself (last resort)."""


def _seed_outcome(options: RunOptions, result: RunResult, report_dir: str) -> SeedOutcome:
    return SeedOutcome(
        options.seed,
        options.scenario,
        result.passed,
        summary_lines(result),
        result.simulated_s,
        result.wall_s,
        result.operations,
        report_dir,
        options.replay_command(),
        result.trace_hash,
        failure_kind(result),
    )


def _too_slow_outcome(options: RunOptions, error: BaseException, wall_s: float) -> SeedOutcome:
    return SeedOutcome(
        options.seed, options.scenario, False,
        [f"SEED={options.seed} scenario={options.scenario}",
         f"FAILED: the seed took longer than {wall_s:g}s of wall time and was interrupted "
         f"({type(error).__name__})", f"replay: {options.replay_command()}"],
        0.0, wall_s, 0, replay=options.replay_command(), kind="timeout",
    )  # fmt: skip


def worker_failed_outcome(options: RunOptions, error: BaseException) -> SeedOutcome:
    """A seed whose worker died (or raised): reported, with its replay command."""
    return SeedOutcome(
        options.seed, options.scenario, False,
        [f"SEED={options.seed}", f"the worker failed: {error!r}",
         f"replay: {options.replay_command()}"],
        0.0, 0.0, 0, replay=options.replay_command(), kind="worker",
    )  # fmt: skip


def _run_guarded(options: RunOptions, wall_s_max: float) -> RunResult | SeedOutcome:
    """Run a seed under the wall-clock guard.

    The run's own watchdog stops it at ``wall_s_max`` between task steps: it fails as a
    ``timeout`` with its report, on local workers and Dask's alike. A run that cannot get
    there (a task that never yields) is interrupted by an alarm ``LAST_RESORT_GRACE_S``
    later, where only a main thread can take one: whatever that raises, wherever it lands
    (inside Trio's scheduler it surfaces as ``TrioInternalError``, inside a nursery as an
    exception group), the seed is reported as a timeout.
    """
    if threading.current_thread() is not threading.main_thread():
        return run(options, wall_s_max=wall_s_max)
    interrupted = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        raise SeedTooSlow(f"the seed took longer than {wall_s_max:g}s of wall time")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, wall_s_max + LAST_RESORT_GRACE_S)
    try:
        return run(options, wall_s_max=wall_s_max)
    except Exception as error:
        if not interrupted:
            raise
        return _too_slow_outcome(options, error, wall_s_max)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_one(
    options: RunOptions, report_dir: str, wall_s_max: float = SEED_WALL_S_MAX
) -> SeedOutcome:
    """Run a seed in a worker (or here) and condense what it saw."""
    quiet_member_logs()
    result = _run_guarded(options, wall_s_max)
    if isinstance(result, SeedOutcome):
        return result
    written = ""
    if not result.passed and report_dir:
        written = str(write_failure(result, Path(report_dir)))
    return _seed_outcome(options, result, written)


_ONE_SIMULATION_AT_A_TIME = threading.Lock()
"""A simulation seeds Trio's module-level scheduler generator: two at once in one process
(a Dask worker with several threads) would share it, and neither would replay."""


def run_one_remote(
    options: RunOptions, wall_s_max: float = SEED_WALL_S_MAX
) -> tuple[SeedOutcome, dict[str, str]]:
    """Run a seed on a remote worker: the outcome and, for a failure, its report files (by
    name), which the sweep writes where it was started."""
    with _ONE_SIMULATION_AT_A_TIME:
        quiet_member_logs()
        result = _run_guarded(options, wall_s_max)
    if isinstance(result, SeedOutcome):
        return result, {}
    files = failure_files(result) if not result.passed else {}
    return _seed_outcome(options, result, ""), files


def write_remote_report(
    outcome: SeedOutcome, files: dict[str, str], report_dir: str
) -> SeedOutcome:
    """Write a remote seed's report files under ``report_dir``; the outcome names them."""
    if not files or not report_dir:
        return outcome
    directory = run_directory(Path(report_dir), outcome.seed, outcome.scenario)
    return dataclasses.replace(outcome, report_dir=str(write_files(directory, files)))


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


OutcomeSource = Callable[[list[RunOptions]], Iterator[SeedOutcome]]
"""Runs seeds somewhere and yields each outcome as it ends (in any order)."""


PR_SET_PDEATHSIG = 1
"""Linux's prctl option: the signal the kernel sends a process when its parent ends."""


def die_with_parent(parent_pid: int) -> None:
    """A pool worker's start: end when the sweep that started it ends, however it ends.

    A sweep killed with SIGTERM (or SIGKILL) cannot shut its pool down, and each worker
    would go on running the seeds already handed to it, for results that go nowhere, on
    cores a measurement wants. On Linux the kernel sends the worker SIGKILL when its parent
    ends; elsewhere the workers still outlive it. ``parent_pid`` closes the race of a
    parent that ended before the request was made.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(1)


def worker_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """``workers`` fresh processes (spawned, not forked) that end with this one."""
    return concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )


def local_outcomes(workers: int, report_dir: str) -> OutcomeSource:
    """Seeds on ``workers`` local processes (here, with one)."""

    def outcomes(options_list: list[RunOptions]) -> Iterator[SeedOutcome]:
        if workers <= 1:
            for options in options_list:
                yield run_one(options, report_dir)
            return
        with worker_pool(workers) as pool:
            futures = {
                pool.submit(run_one, options, report_dir): options for options in options_list
            }
            for future in concurrent.futures.as_completed(futures):
                try:
                    yield future.result()
                except Exception as error:  # a worker that died: report it, keep sweeping
                    yield worker_failed_outcome(futures[future], error)

    return outcomes


def recheck_sample(outcomes: Iterable[SeedOutcome], every: int) -> list[SeedOutcome]:
    """The outcomes the determinism self-check reruns: one in ``every`` of those with a trace
    hash, in seed order, the first always (so every sweep checks at least one)."""
    hashed = sorted((o for o in outcomes if o.trace_hash), key=lambda o: o.seed)
    return hashed[:: max(every, 1)]


def sweep(
    seeds: Iterable[int],
    make_options: Callable[[int], RunOptions],
    *,
    workers: int,
    report_dir: str = "",
    on_outcome: Callable[[SeedOutcome], None] | None = None,
    results_path: Path | None = None,
    scheduler: str | None = None,
    recheck_every: int = RECHECK_EVERY,
) -> SweepSummary:
    """Run every seed on ``workers`` processes (or on the Dask cluster at ``scheduler``);
    ``on_outcome`` sees each as it ends.

    With ``results_path``, each finished seed is appended there, and seeds
    already in it (from an earlier, interrupted sweep with the same options)
    are not run again. Then a sample of the seeds (``recheck_sample``) runs again
    and must give the same trace hashes; ``recheck_every=0`` skips that.
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

    if scheduler is not None:
        from sim.dask_sweep import dask_outcomes  # noqa: PLC0415 (distributed: only when asked)

        source = dask_outcomes(scheduler, report_dir)
    else:
        source = local_outcomes(workers, report_dir)
    started = time.perf_counter()  # the harness reports wall time
    for outcome in source([make_options(seed) for seed in sorted(wanted)]):
        _record(summary, outcome, on_outcome)
    if recheck_every > 0:
        _recheck(summary, source, make_options, recheck_every)
    summary.wall_s = time.perf_counter() - started
    return summary


def _recheck(
    summary: SweepSummary,
    source: OutcomeSource,
    make_options: Callable[[int], RunOptions],
    every: int,
) -> None:
    """Run the sample again; a different trace hash is a determinism failure."""
    first = {o.seed: o for o in recheck_sample(summary.outcomes, every)}
    summary.rechecked = sorted(first)
    for again in source([make_options(seed) for seed in sorted(first)]):
        before = first[again.seed]
        if again.trace_hash == before.trace_hash:
            continue
        if not again.trace_hash:  # the rerun itself failed (a lost worker, the time limit)
            why = f"the determinism self-check could not run seed {again.seed} again:"
            failed = dataclasses.replace(again, summary=[again.summary[0], why, *again.summary[1:]])
            summary.nondeterministic.append(failed)
            continue
        summary.nondeterministic.append(
            SeedOutcome(
                again.seed,
                again.scenario,
                False,
                [
                    f"SEED={again.seed} scenario={again.scenario}",
                    f"FAILED (determinism): trace hash {before.trace_hash} the first time, "
                    f"{again.trace_hash or 'none'} when run again",
                    f"replay: {before.replay} (run it twice and compare the trace hashes)",
                ],
                again.simulated_s,
                again.wall_s,
                again.operations,
                replay=before.replay,
                trace_hash=again.trace_hash,
                kind="determinism",
            )
        )


def _record(
    summary: SweepSummary, outcome: SeedOutcome, on_outcome: Callable[[SeedOutcome], None] | None
) -> None:
    summary.outcomes.append(outcome)
    if on_outcome is not None:
        on_outcome(outcome)
