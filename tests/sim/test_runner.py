"""Whole simulations: replay bit for bit, catch planted bugs, shrink, report, sweep.

The sweep is CI's budget (10 chunks of 10 seeds, every scenario, 6 s of faults
each): a check of each change that keeps ``.ci/run`` under 45 minutes on a slow 2-core machine.
The deep check is ``troika sim sweep --seeds 0..9999 --workers 2`` (docs/sweeps/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.history import History
from sim.report import summary_lines, write_failure
from sim.runner import RunOptions, run
from sim.scenarios import SCENARIOS
from sim.shrink import shrink
from sim.sweep import scenario_for

ROOT = Path(__file__).resolve().parents[2]
SWEEP_CHUNKS = 20
FAST_SWEEP_CHUNKS = 1  # default run: seeds 0-4, five scenarios; the slow 100 cover every one
SEEDS_PER_CHUNK = 5
SWEEP_DURATION_S = 6.0
PLANTED_BUG_SEEDS_MAX = 200


def test_a_seed_replays_bit_for_bit() -> None:
    first = run(RunOptions(seed=7, scenario="swarm", duration_s=4))
    second = run(RunOptions(seed=7, scenario="swarm", duration_s=4))
    other = run(RunOptions(seed=8, scenario="swarm", duration_s=4))
    assert first.operations > 100
    assert first.trace_hash == second.trace_hash
    assert first.history is not None and second.history is not None
    assert first.history.to_json() == second.history.to_json()
    assert other.trace_hash != first.trace_hash


def test_the_trace_does_not_depend_on_the_hash_seed_of_the_process() -> None:
    hashes = set()
    for hash_seed in ("1", "2"):
        environment = dict(os.environ, PYTHONHASHSEED=hash_seed)
        output = subprocess.run(
            [sys.executable, "-m", "troika", "sim", "run", "--seed", "3", "--scenario",
             "leader-isolation", "--duration", "3"],
            capture_output=True, text=True, env=environment, cwd=ROOT, check=False, timeout=300,
        ).stdout  # fmt: skip
        assert output.startswith("SEED=3"), output
        hashes.add(next(line for line in output.splitlines() if line.startswith("trace hash")))
    assert len(hashes) == 1, hashes


@pytest.mark.parametrize(
    ("bug", "scenario", "duration_s"),
    [
        ("quorum-read-without-read-index", "split-brain", 12.0),
        ("ack-before-sync", "crash-during-commit", 8.0),
        pytest.param("skip-election-restriction", "swarm", 10.0, marks=pytest.mark.slow),
    ],
)
def test_a_planted_bug_is_caught_within_200_seeds(
    bug: str, scenario: str, duration_s: float
) -> None:
    for seed in range(PLANTED_BUG_SEEDS_MAX):
        result = run(
            RunOptions(seed=seed, scenario=scenario, planted_bug=bug, duration_s=duration_s)
        )
        if not result.passed:
            clean = run(RunOptions(seed=seed, scenario=scenario, duration_s=duration_s))
            assert clean.passed, "\n".join(summary_lines(clean))
            return
    pytest.fail(f"{bug} went unnoticed for {PLANTED_BUG_SEEDS_MAX} seeds of {scenario}")


# Slow: .ci/run's longer simulator step runs it, outside the README's 5 minutes.
@pytest.mark.slow
def test_shrinking_keeps_a_failing_run_and_makes_it_smaller() -> None:
    options = RunOptions(
        seed=2, scenario="split-brain", planted_bug="quorum-read-without-read-index", duration_s=12
    )
    shrunk = shrink(options, trials_max=6)
    assert not shrunk.original.passed
    assert not shrunk.smallest.passed
    assert len(shrunk.smallest.faults) <= len(shrunk.original.faults)
    assert shrunk.smallest.operations <= shrunk.original.operations
    assert shrunk.trials <= 6


def test_a_failure_leaves_a_report_a_history_and_a_timeline(tmp_path: Path) -> None:
    options = RunOptions(
        seed=2, scenario="split-brain", planted_bug="quorum-read-without-read-index", duration_s=12
    )
    result = run(options)
    assert not result.passed
    directory = write_failure(result, tmp_path)
    report = (directory / "report.txt").read_text()
    assert report.startswith("SEED=2 ")
    assert "replay: troika sim run --seed 2 --scenario split-brain" in report
    assert json.loads((directory / "faults.json").read_text())[0]["kind"] == "partition"
    page = (directory / "timeline.html").read_text()
    assert "<svg" in page and "c1" in page
    history = History.from_json((directory / "history.json").read_text())
    assert result.history is not None
    assert history.operations == result.history.operations


@pytest.mark.parametrize(
    "chunk",
    [
        pytest.param(chunk, marks=() if chunk < FAST_SWEEP_CHUNKS else pytest.mark.slow)
        for chunk in range(SWEEP_CHUNKS)
    ],
)
def test_sweep_every_scenario(chunk: int) -> None:
    failures = []
    for seed in range(chunk * SEEDS_PER_CHUNK, (chunk + 1) * SEEDS_PER_CHUNK):
        options = RunOptions(
            seed=seed, scenario=scenario_for(seed, "all"), duration_s=SWEEP_DURATION_S
        )
        result = run(options)
        if not result.passed:
            failures.append("\n".join(summary_lines(result)))
    assert not failures, "\n\n".join(failures)


def test_the_sweep_covers_every_scenario() -> None:
    seeds = range(SWEEP_CHUNKS * SEEDS_PER_CHUNK)
    assert {scenario_for(seed, "all") for seed in seeds} == set(SCENARIOS)
