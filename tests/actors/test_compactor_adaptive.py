"""The adaptive compactor (issue 16 item 4): small steps while writes are quiet, waits while
they are busy, a forced compaction past the hard limit on history; run in virtual time with
its metrics."""

from __future__ import annotations

import trio
import trio.testing
from prometheus_client import CollectorRegistry

from actors.compactor import ADAPTIVE_INTERVAL_S, AdaptivePlan, run_compactor


def drive(plan: AdaptivePlan, rates: list[int], start: int = 0) -> list[tuple[str, int | None]]:
    """Step ``plan`` once a second with these writes a second; compactions applied at once."""
    revision, compacted = start, 0
    out = []
    for second, rate in enumerate(rates):
        revision += rate
        decision, target = plan.step(float(second), revision, compacted)
        if target is not None:
            assert target <= revision - plan.retention  # the retention is always kept
            assert target > compacted
            compacted = target
        out.append((decision, target))
    return out


def test_quiet_periods_compact_in_small_steps() -> None:
    plan = AdaptivePlan(retention=1000)
    decisions = drive(plan, [0, 3000, 0, 0, 0, 0])
    assert decisions[1] == ("nothing", None) or decisions[1][0] == "busy"
    # quiet again: steps of a tenth of the retention, from the compact revision up
    assert decisions[2:] == [("quiet", 100), ("quiet", 200), ("quiet", 300), ("quiet", 400)]


def test_busy_waits_and_the_hard_limit_forces_a_compaction() -> None:
    plan = AdaptivePlan(retention=1000)
    decisions = drive(plan, [1000] * 10)
    kinds = [kind for kind, _ in decisions]
    assert kinds[:1] == ["nothing"] and "quiet" not in kinds[2:]
    forced = [(second, target) for second, (kind, target) in enumerate(decisions)
              if kind == "forced"]  # fmt: skip
    # history above 4 x 1000 revisions: compacted to current - retention (5 s x 1000 - 1000)
    assert forced[0] == (4, 4000)
    assert plan.decisions["busy"] > 0 and plan.decisions["forced"] >= 1
    assert plan.history_revisions <= plan.history_max + 1000  # bounded under constant load


def test_a_drop_to_half_the_average_counts_as_quiet() -> None:
    plan = AdaptivePlan(retention=100)
    decisions = drive(plan, [200] * 6 + [50])
    assert decisions[5][0] in {"busy", "forced"} and decisions[6][0] == "quiet"


async def test_the_shell_compacts_only_while_leading_and_exports_metrics(
    autojump_clock: trio.testing.MockClock,
) -> None:
    revision = [0]
    compacted = [0]
    leading = [True]
    proposals: list[int] = []

    async def compact(target: int) -> bool:
        proposals.append(target)
        compacted[0] = target
        return True

    registry = CollectorRegistry()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_compactor(
            "adaptive", 100, is_leader=lambda: leading[0], revision=lambda: revision[0],
            compact=compact, compacted=lambda: compacted[0], registry=registry))  # fmt: skip
        revision[0] = 300
        await trio.sleep(ADAPTIVE_INTERVAL_S * 3.5)
        leading[0] = False
        count = len(proposals)
        await trio.sleep(ADAPTIVE_INTERVAL_S * 5)
        assert len(proposals) == count  # a follower never compacts
        nursery.cancel_scope.cancel()
    assert proposals[:2] == [10, 20]  # quiet: steps of a tenth of the retention
    value = registry.get_sample_value(
        "troika_adaptive_compaction_decisions_total", {"decision": "quiet"}
    )
    assert value is not None and value >= 2
    assert registry.get_sample_value("troika_adaptive_compaction_history_revisions") is not None
