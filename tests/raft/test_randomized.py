"""Randomized message-level cluster tests of the Raft core.

Every seed draws its own fault mix (drops, duplicates, reorders, delays,
partitions, crashes that lose unpersisted state, compactions, transfers) and
checks Raft's safety properties after every step, then heals and demands a
commit on every member within a bounded number of ticks (sim.raft_fuzz).

The seed counts are CI's budget. Sweep more with
``python -m sim.raft_fuzz --seeds 0..99999``.
"""

from __future__ import annotations

import pytest

from actors.raft import PlantedBug
from sim.raft_fuzz import Fuzzer, FuzzOptions, format_failure, run_seed

SEEDS_PER_CHUNK = 50
FIVE_MEMBER_CHUNKS = 40  # 2,000 seeds
THREE_MEMBER_CHUNKS = 10  # 500 seeds
FAST_FIVE_MEMBER_CHUNKS = 4  # the default run's share (200 seeds); the other chunks are slow
FAST_THREE_MEMBER_CHUNKS = 2  # 100 seeds
PLANTED_BUG_SEEDS = 200
SAFETY_PROPERTIES = (
    "election safety",
    "log matching",
    "leader completeness",
    "state machine safety",
    "commit agreement",
)


def sweep(first_seed: int, count: int, options: FuzzOptions) -> list[str]:
    """Failure reports (each ending with its replay command) for a range of seeds."""
    failures = []
    for seed in range(first_seed, first_seed + count):
        result = run_seed(seed, options)
        if not result.passed:
            failures.append(format_failure(result, options))
    return failures


@pytest.mark.parametrize(
    "chunk",
    [
        pytest.param(chunk, marks=() if chunk < FAST_FIVE_MEMBER_CHUNKS else pytest.mark.slow)
        for chunk in range(FIVE_MEMBER_CHUNKS)
    ],
)
def test_five_members_every_fault(chunk: int) -> None:
    failures = sweep(chunk * SEEDS_PER_CHUNK, SEEDS_PER_CHUNK, FuzzOptions(members=5))
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize(
    "chunk",
    [
        pytest.param(chunk, marks=() if chunk < FAST_THREE_MEMBER_CHUNKS else pytest.mark.slow)
        for chunk in range(THREE_MEMBER_CHUNKS)
    ],
)
def test_three_members_every_fault(chunk: int) -> None:
    first = 100_000 + chunk * SEEDS_PER_CHUNK
    failures = sweep(first, SEEDS_PER_CHUNK, FuzzOptions(members=3))
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize(
    "bug", [PlantedBug.SKIP_ELECTION_RESTRICTION, PlantedBug.ACK_BEFORE_SYNC], ids=lambda b: b.value
)
def test_planted_bug_is_caught(bug: PlantedBug) -> None:
    """A rule broken on purpose must show up as a safety violation within the budget."""
    options = FuzzOptions(members=5, planted_bug=bug)
    for seed in range(PLANTED_BUG_SEEDS):
        result = run_seed(seed, options)
        if not result.passed and any(p in result.error for p in SAFETY_PROPERTIES):
            return
    pytest.fail(f"{bug.value} went unnoticed for {PLANTED_BUG_SEEDS} seeds")


def test_a_seed_replays_identically() -> None:
    """The same seed gives the same schedule and the same outcome, action for action."""
    traces = []
    for _ in range(2):
        fuzzer = Fuzzer(7, FuzzOptions(members=5, steps=1500))
        fuzzer.run_faults()
        fuzzer.run_recovery()
        states = [m.app.state_hash for m in fuzzer.cluster.members.values()]
        traces.append((fuzzer.trace, states))
    assert traces[0] == traces[1]
    assert len(traces[0][0]) > 500
