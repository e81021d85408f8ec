"""The watch checker: every watcher saw the agreed history of its keys, in order, once.

This is what etcd's robustness tests verify of watches, checked on every simulated v3 run
(``sim.runner``) against two references:

- the *agreed MVCC history* (``MvccHistory``): every retained version of every key, read from
  one member after the run, once ``sim.mvcc_agreement`` has found every member's store equal
  (etcd's ``HashKV`` over the same versions). From it, the events each revision made, with the
  version each one replaced (``prev_kv``);
- the *acknowledged writes* (``AckedWrite``): each write a client was told succeeded, at the
  revision its response named. Each must be in the agreed history at that revision, as written.

For each logical watcher (``sim.v3_records.WatchSession``: the streams one client opened for
one key range, each resumed after the last event received), the events of all its streams,
concatenated, must be exactly the agreed history's events in its key range, from the revision
it started at through the last revision it received: ordered by revision (and, within one
revision, in the order the transaction wrote them), none missing (a gap), none twice (a
duplicate, say after a resume), none that the history lacks, each with the same version; with
``prev_kv`` equal to the version the history says it replaced when the watcher asked for it,
and absent when it did not. A stream that resumed must have resumed at the revision after the
last event of the one before (a client that skipped or repeated is the workload's bug, and
would hide the server's).

Revisions at or below the reference's compact revision are not compared (their versions are
gone); the KV workload does not compact, so in practice every revision is.

Pure: values in, a list of violation texts out (at most ``REPORTED_MAX`` of them, then a count).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from sim.v3_records import ChangeEvent, Version, WatchSession

REPORTED_MAX: Final = 12
"""Violation lines kept per check; the rest are counted."""


@dataclass(frozen=True, slots=True)
class MvccHistory:
    """The events of every retained revision, in order: ``(revision, sub, event)``.

    Attributes:
        events: sorted by ``(revision, sub)``; each ``prev_kv`` is the version it replaced.
        compact_revision: versions at or below it may be gone; events there are not checked.
        revision: the store's current revision.
    """

    events: tuple[tuple[int, int, ChangeEvent], ...]
    compact_revision: int
    revision: int

    def at(self, revision: int) -> list[ChangeEvent]:
        """The events of one revision, in write order."""
        return [event for main, _, event in self.events if main == revision]


def mvcc_history(
    versions: Iterable[tuple[int, int, Version]], compact_revision: int, revision: int
) -> MvccHistory:
    """The agreed history of a store's retained versions ``(main, sub, version)``.

    Each version becomes the event that wrote it (a tombstone: a DELETE), and replaced the
    key's previous retained version (none if that was a tombstone or there was none).
    """
    ordered = sorted(versions, key=lambda item: (item[2].key, item[0], item[1]))
    events: list[tuple[int, int, ChangeEvent]] = []
    previous: Version | None = None
    for main, sub, version in ordered:
        if previous is not None and previous.key != version.key:
            previous = None
        replaced = previous if previous is not None and previous.version > 0 else None
        deleted = version.version == 0
        events.append((main, sub, ChangeEvent(deleted, version, replaced)))
        previous = version
    events.sort(key=lambda item: (item[0], item[1]))
    return MvccHistory(tuple(events), compact_revision, revision)


@dataclass(frozen=True, slots=True)
class AckedWrite:
    """A write a client was told succeeded at ``revision``: a put of ``value``, or (value
    None) a delete of ``key``."""

    key: bytes
    revision: int
    value: bytes | None
    what: str = ""


class _Report:
    """Violation lines, bounded."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.dropped = 0

    def add(self, text: str) -> None:
        if len(self.lines) < REPORTED_MAX:
            self.lines.append(text)
        else:
            self.dropped += 1

    def done(self) -> list[str]:
        if self.dropped:
            return [*self.lines, f"watch: ... and {self.dropped} more"]
        return self.lines


def check_watches(
    sessions: Sequence[WatchSession], reference: MvccHistory, acked: Sequence[AckedWrite]
) -> list[str]:
    """Every violation of the watch and acknowledged-write rules (the module docstring)."""
    report = _Report()
    by_revision: dict[int, list[ChangeEvent]] = {}
    for revision, _, event in reference.events:
        by_revision.setdefault(revision, []).append(event)
    for write in acked:
        _check_acked(write, reference, by_revision.get(write.revision, []), report)
    for session in sessions:
        _check_session(session, reference, report)
    return report.done()


def _check_acked(
    write: AckedWrite, reference: MvccHistory, made: list[ChangeEvent], report: _Report
) -> None:
    if write.revision <= reference.compact_revision:
        return
    name = write.key.decode(errors="replace")
    what = write.what or ("delete" if write.value is None else "put")
    if write.revision > reference.revision:
        report.add(
            f"watch: {what} of {name} was acknowledged at revision {write.revision}, past the "
            f"agreed store's revision {reference.revision}"
        )
        return
    found = [event for event in made if event.kv.key == write.key]
    matches = [
        event
        for event in found
        if (event.deleted if write.value is None else event.kv.value == write.value)
    ]
    if not matches:
        shown = ", ".join(event.describe() for event in found) or "no event of that key"
        report.add(
            f"watch: {what} of {name} was acknowledged at revision {write.revision}, but the "
            f"agreed MVCC history has {shown} there"
        )


def _check_session(session: WatchSession, reference: MvccHistory, report: _Report) -> None:
    created = [segment for segment in session.segments if segment.effective_start is not None]
    if not created:
        return
    first = created[0].effective_start
    assert first is not None
    label = session.describe()
    received = _check_resumes(session, report)
    if not received:
        return
    last = received[-1].revision
    _check_order(label, received, report)
    floor = max(first, reference.compact_revision + 1)
    expected = [
        event
        for revision, _, event in reference.events
        if floor <= revision <= last and session.covers(event.kv.key)
    ]
    observed = [event for event in received if event.revision >= floor]
    _compare(label, session.prev_kv, observed=observed, expected=expected, last=last, report=report)


def _check_resumes(session: WatchSession, report: _Report) -> list[ChangeEvent]:
    """The session's events, concatenated; a resume that did not start after the last event
    received is reported."""
    received: list[ChangeEvent] = []
    next_revision: int | None = None
    for segment in session.segments:
        start = segment.effective_start
        if start is None:
            continue
        if next_revision is not None and segment.start_revision != next_revision:
            report.add(
                f"watch: {session.describe()} resumed on {segment.member} from revision "
                f"{segment.start_revision}, not {next_revision} (after the last it received)"
            )
        received.extend(item.event for item in segment.events)
        next_revision = received[-1].revision + 1 if received else start
    return received


def _check_order(label: str, received: Sequence[ChangeEvent], report: _Report) -> None:
    seen: set[tuple[int, bytes]] = set()
    previous = 0
    for event in received:
        if event.revision < previous:
            report.add(
                f"watch: {label} received {event.describe()} after an event of revision "
                f"{previous} (out of order)"
            )
        identity = (event.revision, event.kv.key)
        if identity in seen:
            report.add(f"watch: {label} received {event.describe()} twice (a duplicate)")
        seen.add(identity)
        previous = max(previous, event.revision)


def _compare(
    label: str,
    prev_kv: bool,
    *,
    observed: Sequence[ChangeEvent],
    expected: Sequence[ChangeEvent],
    last: int,
    report: _Report,
) -> None:
    """Observed against expected events, by (revision, key), then their order."""
    wanted = {(event.revision, event.kv.key): event for event in expected}
    got: dict[tuple[int, bytes], ChangeEvent] = {}
    for event in observed:
        got.setdefault((event.revision, event.kv.key), event)
    for identity, event in wanted.items():
        if identity not in got:
            report.add(
                f"watch: {label} never received {event.describe()} (a gap: it received events "
                f"through revision {last})"
            )
    for identity, event in got.items():
        reference = wanted.get(identity)
        if reference is None:
            report.add(
                f"watch: {label} received {event.describe()}, which is not in the agreed MVCC "
                "history"
            )
            continue
        if event.deleted != reference.deleted or event.kv != reference.kv:
            report.add(
                f"watch: {label} received {event.describe()} but the agreed MVCC history has "
                f"{reference.describe()}"
            )
        _check_prev_kv(label, prev_kv, event, reference, report)
    common = [identity for identity in wanted if identity in got]
    seen_order = [identity for identity in dict.fromkeys(
        (event.revision, event.kv.key) for event in observed) if identity in wanted]  # fmt: skip
    if common != seen_order:
        report.add(f"watch: {label} received the events of one revision out of write order")


def _check_prev_kv(
    label: str, prev_kv: bool, event: ChangeEvent, reference: ChangeEvent, report: _Report
) -> None:
    if not prev_kv:
        if event.prev_kv is not None:
            report.add(f"watch: {label} did not ask for prev_kv but got {event.describe()}")
        return
    if event.prev_kv != reference.prev_kv:
        had = "nothing" if reference.prev_kv is None else reference.prev_kv.describe()
        got = "nothing" if event.prev_kv is None else event.prev_kv.describe()
        report.add(
            f"watch: {label} received {event.describe()} with prev_kv {got}, but it replaced {had}"
        )
