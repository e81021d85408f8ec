"""Auto-compaction: the leader proposes v3 compactions as etcd 3.4's compactor does.

``--auto-compaction-mode`` / ``--auto-compaction-retention`` (etcd's v3compactor):

- periodic, retention P: the revision is sampled every P/10 (P capped at an hour for the
  sampling step), and once P has passed since the start (or since the last compaction, capped
  at an hour), the member compacts to the oldest sample still within the window, the revision
  of about P ago. So with P = 1 h a compaction runs every 6 minutes after the first hour, each
  keeping the last hour of history.
- revision, retention R: every 5 minutes, compact to current revision - R when that is
  positive and not the revision compacted last time.

Only the leader runs it (etcd pauses the compactor on followers), and a compaction is an
ordinary proposal, so every member applies the same one. "Already compacted" counts as done.

The decisions are :class:`PeriodicPlan` and :class:`RevisionPlan`, pure objects driven by a
time in seconds and a revision (tests step them directly); :func:`run_compactor` is the shell
that samples the member on Trio's clock, so the simulator's virtual clock drives it too.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import trio

log = logging.getLogger(__name__)

HOUR_S: Final = 3600.0
RETRY_DIVISOR: Final = 10
"""A periodic compactor samples the revision ten times a (capped) period."""
REVISION_INTERVAL_S: Final = 300.0
"""A revision compactor looks every 5 minutes (etcd's revInterval)."""
MODES: Final = ("periodic", "revision")


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
) -> None:
    """Run etcd's compactor of ``mode`` until cancelled (does nothing for retention 0).

    Args:
        mode: "periodic" (``retention`` in seconds) or "revision" (revisions).
        retention: etcd's parsed ``--auto-compaction-retention``.
        is_leader: whether this member leads now (only the leader compacts).
        revision: the current revision of the v3 store.
        compact: proposes a compaction.
    """
    assert mode in MODES, mode
    if retention <= 0:
        return
    if mode == "revision":
        await _run_revision(RevisionPlan(int(retention)), is_leader, revision, compact)
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
