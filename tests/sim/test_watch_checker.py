"""The watch checker on hand-made histories: a faithful watcher passes; a gap, a duplicate,
a reordering, a wrong prev_kv, an event the store lacks, a bad resume and an acknowledged
write missing from the store are each caught."""

from __future__ import annotations

from dataclasses import replace

from sim.v3_records import ChangeEvent, ReceivedEvent, Version, WatchSegment, WatchSession
from sim.watch_checker import AckedWrite, MvccHistory, check_watches, mvcc_history


def put(key: str, value: str, revision: int, created: int, version: int) -> Version:
    return Version(key.encode(), created, revision, version, value.encode(), 0)


def tombstone(key: str, revision: int) -> Version:
    return Version(key.encode(), 0, revision, 0, b"", 0)


A2 = put("a", "1", 2, 2, 1)
B3 = put("b", "1", 3, 3, 1)
A4 = put("a", "2", 4, 2, 2)
A5 = tombstone("a", 5)
B5 = put("b", "2", 5, 3, 2)  # a txn: deletes a, puts b, both at revision 5


def reference() -> MvccHistory:
    versions = [(2, 0, A2), (3, 0, B3), (4, 0, A4), (5, 0, A5), (5, 1, B5)]
    return mvcc_history(versions, compact_revision=0, revision=5)


def faithful(prev_kv: bool) -> list[ChangeEvent]:
    events = [event for _, _, event in reference().events]
    return events if prev_kv else [replace(event, prev_kv=None) for event in events]


def session(
    events: list[ChangeEvent], prev_kv: bool = True, split_at: int | None = None, start: int = 2
) -> WatchSession:
    watcher = WatchSession(1, b"\0", b"\0", prev_kv)
    received = [ReceivedEvent(event, 1.0 + n / 10) for n, event in enumerate(events)]
    if split_at is None:
        watcher.segments.append(WatchSegment("m1", start, 0.5, created_revision=1, events=received))
        return watcher
    resume = received[split_at - 1].event.revision + 1
    watcher.segments.append(WatchSegment("m1", start, 0.5, 1, received[:split_at], "reset"))
    watcher.segments.append(WatchSegment("m2", resume, 2.0, 4, received[split_at:]))
    return watcher


def test_the_reference_knows_what_each_event_replaced() -> None:
    events = {(revision, event.kv.key): event for revision, _, event in reference().events}
    assert events[(2, b"a")].prev_kv is None
    assert events[(4, b"a")].prev_kv == A2
    assert events[(5, b"a")].deleted and events[(5, b"a")].prev_kv == A4
    assert [event.kv for event in reference().at(5)] == [A5, B5]


def test_a_faithful_watcher_passes_with_and_without_prev_kv_and_across_a_resume() -> None:
    acked = [AckedWrite(b"a", 4, b"2"), AckedWrite(b"a", 5, None), AckedWrite(b"b", 5, b"2")]
    assert check_watches([session(faithful(True))], reference(), acked) == []
    assert check_watches([session(faithful(False), prev_kv=False)], reference(), acked) == []
    assert check_watches([session(faithful(True), split_at=2)], reference(), []) == []
    only_b = WatchSession(2, b"b", b"", False)
    events = [
        ReceivedEvent(replace(e, prev_kv=None), 1.0) for e in faithful(True) if e.kv.key == b"b"
    ]
    only_b.segments.append(WatchSegment("m3", 0, 0.1, created_revision=2, events=events))
    assert check_watches([only_b], reference(), []) == []


def test_a_gap_is_caught() -> None:
    events = faithful(True)
    del events[2]
    (line,) = check_watches([session(events)], reference(), [])
    assert "never received PUT a=2@4" in line and "gap" in line


def test_a_watcher_that_stops_early_owes_nothing_past_its_last_revision() -> None:
    assert check_watches([session(faithful(True)[:2])], reference(), []) == []


def test_a_duplicate_after_a_resume_is_caught() -> None:
    events = faithful(True)
    watcher = session(events, split_at=2)
    watcher.segments[1].start_revision = 3
    watcher.segments[1].events.insert(0, ReceivedEvent(events[1], 2.1))
    lines = check_watches([watcher], reference(), [])
    assert any("twice" in line for line in lines), lines


def test_a_resume_that_skips_revisions_is_caught() -> None:
    events = faithful(True)
    watcher = session(events[:2] + events[3:], split_at=2)
    watcher.segments[1].start_revision = 5
    lines = check_watches([watcher], reference(), [])
    assert any("resumed on m2 from revision 5, not 4" in line for line in lines), lines
    assert any("never received PUT a=2@4" in line for line in lines), lines


def test_events_out_of_order_are_caught() -> None:
    events = faithful(True)
    events[1], events[2] = events[2], events[1]
    lines = check_watches([session(events)], reference(), [])
    assert any("out of order" in line for line in lines), lines
    within = faithful(True)
    within[3], within[4] = within[4], within[3]
    lines = check_watches([session(within)], reference(), [])
    assert any("out of write order" in line for line in lines), lines


def test_a_wrong_or_missing_or_unasked_prev_kv_is_caught() -> None:
    events = faithful(True)
    events[2] = replace(events[2], prev_kv=B3)
    lines = check_watches([session(events)], reference(), [])
    assert any("with prev_kv b=1@3" in line and "replaced a=1@2" in line for line in lines)
    events = faithful(True)
    events[3] = replace(events[3], prev_kv=None)
    assert check_watches([session(events)], reference(), [])
    assert check_watches([session(faithful(True), prev_kv=False)], reference(), [])


def test_an_event_the_store_never_made_or_a_changed_one_is_caught() -> None:
    events = faithful(True)
    invented = ChangeEvent(False, put("c", "9", 4, 4, 1))
    lines = check_watches([session([*events[:3], invented, *events[3:]])], reference(), [])
    assert any("not in the agreed MVCC history" in line for line in lines), lines
    events[1] = replace(events[1], kv=replace(B3, value=b"other"))
    lines = check_watches([session(events)], reference(), [])
    assert any("but the agreed MVCC history has PUT b=1@3" in line for line in lines), lines


def test_an_acknowledged_write_missing_from_the_store_is_caught() -> None:
    lines = check_watches([], reference(), [AckedWrite(b"a", 4, b"other", "put")])
    assert lines and "put of a was acknowledged at revision 4" in lines[0]
    assert check_watches([], reference(), [AckedWrite(b"a", 9, b"2")])
    assert check_watches([], reference(), [AckedWrite(b"b", 5, None)])


def test_compacted_revisions_are_not_compared() -> None:
    compacted = replace(reference(), compact_revision=3)
    events = faithful(True)
    assert check_watches([session(events[2:], start=2)], compacted, []) == []
    assert check_watches([session(events[3:], start=4)], compacted, [])
