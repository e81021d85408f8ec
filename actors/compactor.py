"""Auto-compaction: the leader proposes v3 compactions as etcd 3.4's compactor does.

``--auto-compaction-mode`` / ``--auto-compaction-retention`` (etcd's v3compactor):

- periodic, retention P: the revision is sampled every P/10 (P capped at an hour for the
  sampling step), and once P has passed since the start (or since the last compaction, capped
  at an hour), the member compacts to the oldest sample still within the window, the revision
  of about P ago. So with P = 1 h a compaction runs every 6 minutes after the first hour, each
  keeping the last hour of history.
- revision, retention R: every 5 minutes, compact to current revision - R when that is
  positive and not the revision compacted last time.

troika adds a third mode (issue 16 item 4), ``adaptive``, retention R revisions: every
``ADAPTIVE_INTERVAL_S`` the leader looks at the write rate (revisions a second since the last
look) and, when it is quiet (at most ``QUIET_FRACTION`` of its recent average, or under
``QUIET_FLOOR_PER_S``), compacts a small step: at most ``step_revisions`` past the last
compaction, never within the last R revisions. Busy, it waits. A hard limit bounds the history
whatever the load: once more than ``HISTORY_FACTOR`` x R revisions are kept, it compacts to
current - R at once (``forced``), so space never runs out under a constant flood. The apply
actor reclaims any compaction a bounded step at a time between batches (``MvccStore.
compaction_step``), so a compaction never holds the apply path for longer than one step; small
adaptive steps make each compaction's work small too, and put it where clients do not wait.
Every decision is counted (``AdaptivePlan.decisions``, exported by :class:`AdaptiveCollector`
as ``troika_adaptive_compaction_*``) and each compaction is logged with its reason.

Only the leader runs it (etcd pauses the compactor on followers), and a compaction is an
ordinary proposal, so every member applies the same one. "Already compacted" counts as done.

The decisions are :class:`PeriodicPlan` and :class:`RevisionPlan`, pure objects driven by a
time in seconds and a revision (tests step them directly); :func:`run_compactor` is the shell
that samples the member on Trio's clock, so the simulator's virtual clock drives it too.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger(__name__)

HOUR_S: Final = 3600.0
RETRY_DIVISOR: Final = 10
"""A periodic compactor samples the revision ten times a (capped) period."""
REVISION_INTERVAL_S: Final = 300.0
"""A revision compactor looks every 5 minutes (etcd's revInterval)."""
MODES: Final = ("periodic", "revision", "adaptive")
ADAPTIVE_INTERVAL_S: Final = 1.0
"""How often the adaptive compactor looks at the write rate."""
QUIET_FRACTION: Final = 0.5
"""Quiet: a rate at most half the recent average..."""
QUIET_FLOOR_PER_S: Final = 20.0
"""... or under 20 revisions a second, whatever the average."""
RATE_SMOOTHING: Final = 0.2
"""Weight of the newest rate in the recent average (an exponential moving average)."""
HISTORY_FACTOR: Final = 4
"""The hard limit: at most 4 x the retention kept before a compaction is forced."""
STEP_DIVISOR: Final = 10
"""A quiet step compacts at most a tenth of the retention (at least one revision)."""
DECISIONS: Final = ("quiet", "forced", "busy", "nothing")


@dataclass
class PeriodicPlan:
    """etcd's periodic compactor, as a pure state machine.

    Call :meth:`step` every :meth:`interval_s` with the time and the current revision; it
    answers the revision to compact now, or None. Report the outcome with :meth:`done`.
    """

    period_s: float
    started_s: float
    samples: deque[int] = field(default_factory=deque)
    last_success_s: float = 0.0
    wait_s: float = 0.0

    def __post_init__(self) -> None:
        assert self.period_s > 0, self.period_s
        self.last_success_s = self.started_s
        self.wait_s = self.period_s

    def interval_s(self) -> float:
        """How often to sample (a tenth of the period, at most six minutes)."""
        return min(self.period_s, HOUR_S) / RETRY_DIVISOR

    def samples_max(self) -> int:
        """Samples kept: the window of one period, plus the current one."""
        return int(self.period_s / self.interval_s()) + 1

    def record(self, revision: int) -> None:
        """Note the revision at the start of a sampling interval."""
        self.samples.append(revision)
        while len(self.samples) > self.samples_max():
            self.samples.popleft()
        assert len(self.samples) <= self.samples_max()

    def due(self, now_s: float) -> int | None:
        """After an interval: the revision to compact to, or None (not yet due)."""
        if now_s - self.last_success_s < self.wait_s or not self.samples:
            return None
        return self.samples[0]

    def done(self, now_s: float) -> None:
        """The compaction succeeded (or was already done): the window moves on."""
        self.last_success_s = now_s
        self.wait_s = min(self.period_s, HOUR_S)


@dataclass
class RevisionPlan:
    """etcd's revision compactor: keep the last ``retention`` revisions."""

    retention: int
    last_compacted: int = 0

    def __post_init__(self) -> None:
        assert self.retention > 0, self.retention

    def due(self, revision: int) -> int | None:
        """The revision to compact to now, or None."""
        target = revision - self.retention
        if target <= 0 or target == self.last_compacted:
            return None
        return target

    def done(self, target: int) -> None:
        """The compaction to ``target`` succeeded (or was already done)."""
        self.last_compacted = target


@dataclass
class AdaptivePlan:
    """The adaptive compactor's decisions, pure: call :meth:`step` every interval with the
    time, the current revision and the compact revision; it answers (decision, target)."""

    retention: int
    average_rate_per_s: float = 0.0
    last: tuple[float, int] | None = None
    rate_per_s: float = 0.0
    history_revisions: int = 0
    decisions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DECISIONS, 0))

    def __post_init__(self) -> None:
        assert self.retention > 0, self.retention

    @property
    def history_max(self) -> int:
        """The hard limit on revisions kept."""
        return HISTORY_FACTOR * self.retention

    @property
    def step_revisions(self) -> int:
        """The most a quiet step compacts."""
        return max(1, self.retention // STEP_DIVISOR)

    def step(self, now_s: float, revision: int, compacted: int) -> tuple[str, int | None]:
        """The decision now: ``quiet`` or ``forced`` with the revision to compact to,
        ``busy`` (something to compact, but not now) or ``nothing``."""
        self._observe(now_s, revision)
        self.history_revisions = revision - max(compacted, 0)
        ceiling = revision - self.retention
        if ceiling <= compacted:
            return self._decide("nothing", None)
        if self.history_revisions > self.history_max:
            return self._decide("forced", ceiling)
        if self.rate_per_s <= max(QUIET_FLOOR_PER_S, QUIET_FRACTION * self.average_rate_per_s):
            return self._decide("quiet", min(ceiling, compacted + self.step_revisions))
        return self._decide("busy", None)

    def _observe(self, now_s: float, revision: int) -> None:
        if self.last is not None and now_s > self.last[0]:
            self.rate_per_s = max(0, revision - self.last[1]) / (now_s - self.last[0])
            self.average_rate_per_s += RATE_SMOOTHING * (self.rate_per_s - self.average_rate_per_s)
        self.last = (now_s, revision)

    def _decide(self, decision: str, target: int | None) -> tuple[str, int | None]:
        self.decisions[decision] += 1
        return decision, target

    def forget_rate(self) -> None:
        """Not leading: the next look starts a new rate (the revision went on meanwhile)."""
        self.last = None


class AdaptiveCollector(Collector):
    """Prometheus view of an adaptive plan: decisions by kind, history kept, the write rate
    it saw and its average (labels bounded: the four decisions)."""

    def __init__(self, plan: AdaptivePlan) -> None:
        self._plan = plan

    def collect(self) -> Iterator[Metric]:
        plan = self._plan
        decisions = CounterMetricFamily(
            "troika_adaptive_compaction_decisions",
            "Adaptive compactor decisions, by kind (quiet and forced compact).",
            labels=["decision"],
        )
        for name in DECISIONS:
            decisions.add_metric([name], plan.decisions[name])
        yield decisions
        yield GaugeMetricFamily(
            "troika_adaptive_compaction_history_revisions",
            "Revisions kept above the compact revision at the last look.",
            value=plan.history_revisions,
        )
        yield GaugeMetricFamily(
            "troika_adaptive_compaction_write_rate_per_second",
            "Revisions a second at the last look.",
            value=plan.rate_per_s,
        )
        yield GaugeMetricFamily(
            "troika_adaptive_compaction_average_write_rate_per_second",
            "The recent average the quiet test compares with.",
            value=plan.average_rate_per_s,
        )


Compact = Callable[[int], Awaitable[bool]]
"""Propose a compaction to a revision; True once applied or already compacted, False when it
failed and should be retried (no leader, timeout)."""


async def run_compactor(
    mode: str,
    retention: float,
    *,
    is_leader: Callable[[], bool],
    revision: Callable[[], int],
    compact: Compact,
    compacted: Callable[[], int] = lambda: 0,
    registry: CollectorRegistry | None = None,
) -> None:
    """Run etcd's compactor of ``mode`` until cancelled (does nothing for retention 0).

    Args:
        mode: "periodic" (``retention`` in seconds) or "revision" (revisions).
        retention: etcd's parsed ``--auto-compaction-retention``.
        is_leader: whether this member leads now (only the leader compacts).
        revision: the current revision of the v3 store.
        compact: proposes a compaction.
        compacted: the store's compact revision (adaptive mode).
        registry: where the adaptive mode's metrics are registered.
    """
    assert mode in MODES, mode
    if retention <= 0:
        return
    if mode == "revision":
        await _run_revision(RevisionPlan(int(retention)), is_leader, revision, compact)
    elif mode == "adaptive":
        adaptive = AdaptivePlan(int(retention))
        if registry is not None:
            registry.register(AdaptiveCollector(adaptive))
        await _run_adaptive(adaptive, is_leader, revision, compacted, compact)
    else:
        plan = PeriodicPlan(retention, trio.current_time())
        await _run_periodic(plan, is_leader, revision, compact)


async def _run_periodic(
    plan: PeriodicPlan,
    is_leader: Callable[[], bool],
    revision: Callable[[], int],
    compact: Compact,
) -> None:
    while True:
        plan.record(revision())
        await trio.sleep(plan.interval_s())
        if not is_leader():
            continue
        now_s = trio.current_time()
        target = plan.due(now_s)
        if target is None:
            continue
        log.info(
            "auto periodic compaction at revision %d (retention %.0f s)", target, plan.period_s
        )
        if await compact(target):
            plan.done(trio.current_time())


async def _run_revision(
    plan: RevisionPlan,
    is_leader: Callable[[], bool],
    revision: Callable[[], int],
    compact: Compact,
) -> None:
    while True:
        await trio.sleep(REVISION_INTERVAL_S)
        if not is_leader():
            continue
        target = plan.due(revision())
        if target is None:
            continue
        log.info("auto revision compaction at revision %d (retention %d)", target, plan.retention)
        if await compact(target):
            plan.done(target)


async def _run_adaptive(
    plan: AdaptivePlan,
    is_leader: Callable[[], bool],
    revision: Callable[[], int],
    compacted: Callable[[], int],
    compact: Compact,
) -> None:
    while True:
        await trio.sleep(ADAPTIVE_INTERVAL_S)
        if not is_leader():
            plan.forget_rate()
            continue
        decision, target = plan.step(trio.current_time(), revision(), compacted())
        if target is None:
            continue
        log.info(
            "auto adaptive compaction (%s) at revision %d: %.0f revisions/s (average %.0f), "
            "%d revisions kept (hard limit %d)",
            decision, target, plan.rate_per_s, plan.average_rate_per_s,
            plan.history_revisions, plan.history_max,
        )  # fmt: skip
        await compact(target)
