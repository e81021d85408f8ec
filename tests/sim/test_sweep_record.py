"""The long sweep's record in docs/sweeps/ belongs to the code it names.

The 10,000-seed sweep runs in pieces across sessions and keeps its results file in the
repository (docs/sweeps/README.md). A record is worth something only while it describes the
code beside it: these tests check that every recorded seed passed with the sweep's own options
and that a sample of its seeds replays here with the recorded trace hash. A record whose code
has since changed (``git diff REV -- sim actors storage net`` not empty) says nothing of this
code, and its replay test is skipped, saying so.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sim.runner import RunOptions, RunResult, run
from sim.sweep import SeedOutcome, load_results
from troika.sim_commands import sweep_run_options

REPOSITORY = Path(__file__).resolve().parents[2]
RECORDS = sorted((REPOSITORY / "docs" / "sweeps").glob("results-*.jsonl"))
SIMULATED_CODE = ("sim", "actors", "storage", "net")
"""What a simulated run imports of ours (``troika/`` is only the CLI around it)."""


def sweep_options(seed: int) -> RunOptions:
    """The options ``troika sim sweep --seeds A..B`` gives ``seed`` (every scenario, both APIs)."""
    return sweep_run_options(seed)


def record_revision(path: Path) -> str:
    """The commit a record's name gives (``results-REV.jsonl``)."""
    return path.stem.removeprefix("results-")


def code_differs_from(revision: str) -> str:
    """Why this checkout's simulated code is not ``revision``'s ("" when it is the same)."""
    try:
        diff = subprocess.run(
            ["git", "diff", "--stat", revision, "--", *SIMULATED_CODE],
            cwd=REPOSITORY, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"git could not compare: {error}"
    if diff.returncode != 0:
        return f"git could not compare with {revision}: {diff.stderr.strip()}"
    return f"the simulated code changed since {revision}" if diff.stdout.strip() else ""


def record_problems(outcomes: list[SeedOutcome]) -> list[str]:
    """What makes a record not a passing sweep of ``sweep_options``: failures, seeds twice,
    seeds run with other options."""
    problems = []
    seen: set[int] = set()
    for outcome in outcomes:
        if outcome.seed in seen:
            problems.append(f"seed {outcome.seed} is recorded twice")
        seen.add(outcome.seed)
        if not outcome.passed:
            problems.append(f"seed {outcome.seed} failed: {outcome.replay}")
        if outcome.replay != sweep_options(outcome.seed).replay_command():
            problems.append(f"seed {outcome.seed} ran other options: {outcome.replay}")
    return problems


def replay_sample(outcomes: list[SeedOutcome]) -> list[SeedOutcome]:
    """The quickest recorded seed of each API: a replay of each is cheap and covers both."""
    quickest: dict[str, SeedOutcome] = {}
    for outcome in outcomes:
        api = sweep_options(outcome.seed).api
        if api not in quickest or outcome.wall_s < quickest[api].wall_s:
            quickest[api] = outcome
    return [quickest[api] for api in sorted(quickest)]


def replay_mismatches(
    sample: list[SeedOutcome], run_seed: Callable[[int], RunResult] | None = None
) -> list[str]:
    """Run each seed of ``sample`` here (with ``run_seed``, by default a sweep's run); what
    differs from its record."""
    run_seed = run_seed or (lambda seed: run(sweep_options(seed)))
    mismatches = []
    for recorded in sample:
        result = run_seed(recorded.seed)
        if (result.passed, result.trace_hash) != (recorded.passed, recorded.trace_hash):
            mismatches.append(
                f"seed {recorded.seed} ({recorded.replay}): recorded "
                f"{recorded.passed} {recorded.trace_hash}, here {result.passed} {result.trace_hash}"
            )
    return mismatches


def _quick_outcome(seed: int) -> SeedOutcome:
    options = sweep_options(seed)
    return SeedOutcome(
        seed, options.scenario, True, [], 1.0, 1.0, 1, "", options.replay_command(), "0" * 32
    )


@pytest.mark.parametrize("record", RECORDS, ids=lambda path: path.name)
def test_every_recorded_seed_passed_with_the_sweeps_options(record: Path) -> None:
    outcomes = load_results(record)
    assert outcomes, f"{record} holds no seeds"
    assert record_problems(outcomes) == []


@pytest.mark.parametrize("record", RECORDS, ids=lambda path: path.name)
def test_recorded_seeds_replay_here_with_their_trace_hashes(record: Path) -> None:
    why = code_differs_from(record_revision(record))
    if why:
        pytest.skip(f"{record.name} says nothing of this code: {why}")
    outcomes = load_results(record)
    sample = replay_sample(outcomes)
    recorded_apis = {sweep_options(outcome.seed).api for outcome in outcomes}
    assert sample and {sweep_options(outcome.seed).api for outcome in sample} == recorded_apis
    assert replay_mismatches(sample) == []


def test_a_record_with_a_failure_or_other_options_is_refused() -> None:
    good = _quick_outcome(3)
    failed = dataclasses.replace(_quick_outcome(4), passed=False)
    v2_seed = _quick_outcome(5)
    other_api = dataclasses.replace(v2_seed, replay=v2_seed.replay + " --api v3")
    problems = record_problems([good, failed, other_api, good])
    assert problems == [
        f"seed 4 failed: {failed.replay}",
        f"seed 5 ran other options: {other_api.replay}",
        "seed 3 is recorded twice",
    ]


def test_a_replay_with_another_trace_hash_is_caught() -> None:
    """The planted fault: a record whose hash is not the one the seed gives here (the honest
    side, a record that replays equal, is the record test above)."""
    seed = 2  # crash-during-commit, v2: one of the quickest seeds
    tampered = dataclasses.replace(_quick_outcome(seed), trace_hash="f" * 32)
    mismatches = replay_mismatches([tampered])
    assert len(mismatches) == 1
    assert mismatches[0].startswith(f"seed {seed} ({tampered.replay}): recorded True {'f' * 32}")
    here_hash = mismatches[0].rsplit(" ", 1)[1]
    assert len(here_hash) == 32 and here_hash != "f" * 32


def test_a_replay_compares_the_run_it_is_given() -> None:
    """``replay_mismatches`` reports only the seeds whose run differs from the record."""
    recorded = dataclasses.replace(_quick_outcome(7), trace_hash="a" * 32)
    failed_here = dataclasses.replace(_quick_outcome(8), trace_hash="a" * 32)
    results = {
        7: RunResult(sweep_options(7), faults=(), trace_hash="a" * 32),
        8: RunResult(sweep_options(8), faults=(), violations=["planted"], trace_hash="a" * 32),
    }
    assert replay_mismatches([recorded, failed_here], run_seed=results.__getitem__) == [
        f"seed 8 ({failed_here.replay}): recorded True {'a' * 32}, here False {'a' * 32}"
    ]
