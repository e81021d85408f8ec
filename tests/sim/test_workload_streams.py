"""The lease holders' and watchers' pieces that need no cluster: ids, event conversion, where
a watcher resumes, and acknowledged writes taken from a history."""

from __future__ import annotations

from net.etcdpb import kv_pb2
from sim.history import History, OpKind
from sim.runner import acked_writes
from sim.v3_records import (
    ChangeEvent,
    LeasePut,
    ReceivedEvent,
    V3Log,
    Version,
    WatchSegment,
    WatchSession,
    lease_of_key,
)
from sim.workload_streams import _resume_at, change_of, lease_id_for


def test_lease_ids_are_the_holders_own() -> None:
    assert lease_id_for(2, 7) == 2_000_007
    assert lease_of_key(b"lease/2000007/1") == 2_000_007


def test_events_convert_with_and_without_prev_kv() -> None:
    kv = kv_pb2.KeyValue(key=b"k", create_revision=3, mod_revision=5, version=2, value=b"v")
    prev = kv_pb2.KeyValue(key=b"k", create_revision=3, mod_revision=3, version=1, value=b"u")
    with_prev = change_of(kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv, prev_kv=prev))
    assert with_prev == ChangeEvent(
        False, Version(b"k", 3, 5, 2, b"v", 0), Version(b"k", 3, 3, 1, b"u", 0)
    )
    gone = kv_pb2.KeyValue(key=b"k", mod_revision=6)
    deleted = change_of(kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=gone))
    assert deleted.deleted and deleted.prev_kv is None and deleted.revision == 6


def test_a_watcher_resumes_after_its_last_event_or_where_it_was_created() -> None:
    session = WatchSession(1, b"k", b"l", False)
    session.segments.append(WatchSegment("m1", 0, 0.0))  # never created
    assert _resume_at(session, 0) == 0
    session.segments.append(WatchSegment("m2", 0, 1.0, created_revision=9))
    assert _resume_at(session, 0) == 10
    event = ChangeEvent(False, Version(b"k1", 12, 12, 1, b"v", 0))
    session.segments[-1].events.append(ReceivedEvent(event, 1.5))
    session.segments.append(WatchSegment("m3", 13, 2.0, created_revision=15))
    assert _resume_at(session, 13) == 13


def test_acknowledged_writes_are_the_ok_writes_at_their_revisions() -> None:
    history = History()
    put = history.invoke(1, OpKind.PUT, "k1", value="a", time_s=0.0)
    history.ok(put, index=4, time_s=0.1)
    txn = history.invoke(1, OpKind.TXN, "k1", value="b", prev_index=4, time_s=0.2)
    history.ok(txn, output_value="a", index=4, succeeded=False, time_s=0.3)
    delete = history.invoke(1, OpKind.DELETE_RANGE, "k1", time_s=0.4)
    history.ok(delete, index=6, succeeded=True, time_s=0.5)
    lost = history.invoke(1, OpKind.PUT, "k2", value="c", time_s=0.6)
    history.indeterminate(lost, time_s=0.7)
    log = V3Log(lease_puts=[LeasePut(7, b"lease/7/0", b"x", 8, 0.9)])
    found = [(w.key, w.revision, w.value) for w in acked_writes(history, log)]
    assert found == [(b"k1", 4, b"a"), (b"k1", 6, None), (b"lease/7/0", 8, b"x")]
