"""The sweep's wall-clock guard: a seed over its limit fails as a timeout, with its report,
wherever it runs, and a run that never yields is interrupted as a last resort.

Before the guard went through the run's watchdog, an alarm raised its exception into the run
wherever it happened to be: inside Trio's scheduler (a ``TrioInternalError``, reported as a
worker failure), inside a nursery (an exception group), or inside a connection handler that
logged it and went on (the seed ran on past its limit). Found when a sweep paused for 20
minutes (SIGSTOP) reported seed 138 as a worker failure.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import sim.sweep
from sim.runner import RunOptions, RunResult
from sim.sweep import SeedOutcome, run_one, run_one_remote

SLOW_ENOUGH = RunOptions(seed=1, scenario="corrupt-reads", duration_s=2.0)
"""A run of a few seconds of wall time, so that sub-second limits stop it part way."""


@pytest.mark.parametrize("wall_s_max", [0.2, 0.45, 0.7])
def test_a_seed_over_its_limit_fails_as_a_timeout_with_its_report(
    tmp_path: Path, wall_s_max: float
) -> None:
    outcome = run_one(SLOW_ENOUGH, str(tmp_path), wall_s_max=wall_s_max)
    assert not outcome.passed and outcome.kind == "timeout", outcome.summary
    assert any(f"longer than {wall_s_max:g}s of wall time" in line for line in outcome.summary)
    assert outcome.report_dir and (Path(outcome.report_dir) / "report.txt").exists()


def test_the_limit_holds_on_a_thread_that_cannot_take_signals() -> None:
    """Dask runs seeds on worker threads: the watchdog's guard needs no signal."""
    outcomes: list[SeedOutcome] = []
    worker = threading.Thread(
        target=lambda: outcomes.append(run_one_remote(SLOW_ENOUGH, wall_s_max=0.3)[0])
    )
    worker.start()
    worker.join(60)
    assert len(outcomes) == 1 and outcomes[0].kind == "timeout", outcomes


def test_a_seed_within_its_limit_is_untouched() -> None:
    quick = RunOptions(seed=0, scenario="leader-isolation", duration_s=1.0)
    assert run_one(quick, "", wall_s_max=120.0).passed


def _spin(seconds: float) -> None:
    ends_s = time.monotonic() + seconds
    while time.monotonic() < ends_s:
        pass


def test_a_run_that_never_yields_is_interrupted_whatever_it_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sim.sweep, "LAST_RESORT_GRACE_S", 0.1)

    def stuck(options: RunOptions, wall_s_max: float | None = None) -> RunResult:
        try:
            _spin(5.0)
        except sim.sweep.SeedTooSlow as error:  # as Trio wraps what lands in its scheduler
            raise RuntimeError("internal error in Trio") from error
        raise AssertionError("the alarm never came")

    monkeypatch.setattr(sim.sweep, "run", stuck)
    started_s = time.monotonic()
    outcome = run_one(SLOW_ENOUGH, "", wall_s_max=0.1)
    assert time.monotonic() - started_s < 3.0
    assert outcome.kind == "timeout" and "RuntimeError" in outcome.summary[1], outcome.summary


def test_an_error_of_the_run_itself_is_not_taken_for_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(options: RunOptions, wall_s_max: float | None = None) -> RunResult:
        raise ValueError("a bug in the harness")

    monkeypatch.setattr(sim.sweep, "run", broken)
    with pytest.raises(ValueError, match="a bug in the harness"):
        run_one(SLOW_ENOUGH, "", wall_s_max=30.0)
