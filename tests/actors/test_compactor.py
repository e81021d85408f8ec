"""Auto-compaction: etcd 3.4's periodic and revision compactors (v3compactor), stepped as pure
plans and run in virtual time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors.compactor import (
    REVISION_INTERVAL_S,
    PeriodicPlan,
    RevisionPlan,
    run_compactor,
)


def test_periodic_samples_a_tenth_of_the_period_and_compacts_to_a_period_ago() -> None:
    plan = PeriodicPlan(period_s=10.0, started_s=0.0)
    assert plan.interval_s() == 1.0
    assert plan.samples_max() == 11
    compacted = []
    revision = 100
    now_s = 0.0
    for _ in range(25):
        plan.record(revision)
        now_s += plan.interval_s()
        revision += 10  # ten writes a second
        target = plan.due(now_s)
        if target is not None:
            compacted.append((now_s, target))
            plan.done(now_s)
    # nothing before one period; then every period (< 1 h) the revision of about a period ago
    assert compacted[0] == (10.0, 100)
    assert [t for t, _ in compacted] == [10.0, 20.0]
    # the oldest of the 11 samples kept: taken at 9 s, the start of the interval a period ago
    assert compacted[1][1] == 100 + 10 * 9


def test_periodic_of_a_day_samples_every_six_minutes_and_compacts_hourly_after_a_day() -> None:
    plan = PeriodicPlan(period_s=24 * 3600.0, started_s=0.0)
    assert plan.interval_s() == 360.0
    assert plan.due(23 * 3600.0) is None
    plan.record(5)
    assert plan.due(24 * 3600.0) == 5
    plan.done(24 * 3600.0)
    plan.record(6)
    assert plan.due(24 * 3600.0 + 1800.0) is None
    assert plan.due(25 * 3600.0) == 5  # the oldest sample still in the day's window


def test_revision_keeps_the_last_retention_revisions_and_never_repeats() -> None:
    plan = RevisionPlan(retention=1000)
    assert plan.due(900) is None
    assert plan.due(1500) == 500
    plan.done(500)
    assert plan.due(1500) is None  # nothing written since
    assert plan.due(1600) == 600


async def test_revision_compactor_runs_only_on_the_leader_every_five_minutes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    proposals: list[tuple[float, int]] = []
    leader = False
    revision = 5000

    async def compact(target: int) -> bool:
        proposals.append((trio.current_time(), target))
        return True

    with trio.move_on_after(3 * REVISION_INTERVAL_S + 1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: run_compactor(
                    "revision",
                    100,
                    is_leader=lambda: leader,
                    revision=lambda: revision,
                    compact=compact,
                )
            )
            await trio.sleep(REVISION_INTERVAL_S + 1)
            assert proposals == []  # a follower never compacts
            leader = True
            await trio.sleep(REVISION_INTERVAL_S)
            revision = 6000
    assert [target for _, target in proposals] == [4900, 5900]
    assert proposals[1][0] - proposals[0][0] == pytest.approx(REVISION_INTERVAL_S)


async def test_periodic_compactor_retries_a_failed_compaction(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcomes = [False, True]
    targets: list[int] = []
    revision = 1

    async def compact(target: int) -> bool:
        targets.append(target)
        return outcomes.pop(0) if outcomes else True

    async def writer() -> None:
        nonlocal revision
        while True:
            await trio.sleep(0.1)
            revision += 1

    with trio.move_on_after(12.05):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(
                lambda: run_compactor(
                    "periodic", 10.0, is_leader=lambda: True, revision=lambda: revision,
                    compact=compact,
                )
            )  # fmt: skip
    # due at 10 s (failed), retried a sampling interval later (done), then not again by 12 s
    assert len(targets) == 2
    assert targets[0] == 1


async def test_retention_zero_is_off() -> None:
    async def compact(target: int) -> bool:
        raise AssertionError("compacted with auto-compaction off")

    await run_compactor("periodic", 0, is_leader=lambda: True, revision=lambda: 9, compact=compact)
