"""The MVCC store: revisions, generations, ranges, compaction, events, hashes, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.errors import StorageCorrupted
from storage.kv import KeyValueStore, MemoryKeyValueStore, RocksKeyValueStore, WriteBatch
from storage.mvcc import (
    NO_COMPACTION,
    Compacted,
    EventType,
    FutureRevision,
    KeyValue,
    MvccStore,
)
from storage.mvcc.codec import record_key


def put(store: MvccStore, key: bytes, value: bytes, lease: int = 0) -> KeyValue:
    with store.write() as txn:
        return txn.put(key, value, lease)


def delete(store: MvccStore, key: bytes, range_end: bytes = b"") -> list[KeyValue]:
    with store.write() as txn:
        return txn.delete_range(key, range_end)


def keys(store: MvccStore, key: bytes, range_end: bytes = b"", revision: int = 0) -> list[bytes]:
    return [kv.key for kv in store.range(key, range_end, revision=revision).kvs]


def persist(store: MvccStore, kv: KeyValueStore) -> None:
    batch = WriteBatch()
    for key, value in store.take_changes():
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    kv.apply(batch)


def everything(store: MvccStore) -> list[tuple[int, tuple[KeyValue, ...]]]:
    """The whole visible history: every key at every revision not compacted."""
    first = max(store.compact_revision, 1)
    return [
        (revision, store.range(b"\0", b"\0", revision=revision).kvs)
        for revision in range(first, store.current_revision + 1)
    ]


# -- revisions and generations ------------------------------------------------------------------


def test_a_new_store_is_at_revision_1_and_the_first_write_is_2() -> None:
    store = MvccStore()
    assert store.current_revision == 1
    assert store.compact_revision == NO_COMPACTION
    assert put(store, b"foo", b"bar") == KeyValue(b"foo", 2, 2, 1, b"bar", 0)
    assert store.current_revision == 2


def test_puts_count_versions_and_a_delete_ends_the_generation() -> None:
    store = MvccStore()
    put(store, b"k", b"1")
    assert put(store, b"k", b"2", lease=7) == KeyValue(b"k", 2, 3, 2, b"2", 7)
    assert delete(store, b"k") == [KeyValue(b"k", 2, 3, 2, b"2", 7)]
    assert store.range(b"k").kvs == ()
    assert store.current_revision == 4
    assert put(store, b"k", b"3") == KeyValue(b"k", 5, 5, 1, b"3", 0)


def test_past_revisions_show_the_store_as_it_was() -> None:
    store = MvccStore()
    put(store, b"k", b"1")  # 2
    put(store, b"k", b"2")  # 3
    delete(store, b"k")  # 4
    put(store, b"k", b"3")  # 5
    assert store.range(b"k", revision=1).kvs == ()
    assert store.range(b"k", revision=2).kvs == (KeyValue(b"k", 2, 2, 1, b"1", 0),)
    assert store.range(b"k", revision=3).kvs == (KeyValue(b"k", 2, 3, 2, b"2", 0),)
    assert store.range(b"k", revision=4).kvs == ()
    assert store.range(b"k", revision=5).kvs == (KeyValue(b"k", 5, 5, 1, b"3", 0),)
    assert store.range(b"k", revision=2).revision == 5  # the header is the current revision
    assert store.range(b"k", revision=-3).kvs == store.range(b"k").kvs


def test_a_delete_that_matches_nothing_writes_nothing() -> None:
    store = MvccStore()
    put(store, b"a", b"1")
    assert delete(store, b"zzz") == []
    assert delete(store, b"a/", b"a0") == []
    assert store.current_revision == 2
    assert store.take_events()[-1].revision == 2
    assert store.take_events() == []


def test_one_write_txn_is_one_revision_with_sub_revisions() -> None:
    store = MvccStore()
    with store.write() as txn:
        assert txn.revision == 1
        txn.put(b"a", b"1")
        assert txn.revision == 2
        txn.put(b"b", b"1")
        txn.put(b"a", b"2")  # the store allows it; the API refuses duplicate keys
        assert txn.range(b"a").kvs == (KeyValue(b"a", 2, 2, 2, b"2", 0),)
        assert store.range(b"a").kvs == ()  # not ended: invisible outside
        assert [kv.key for kv in txn.delete_range(b"a", b"c")] == [b"a", b"b"]
        assert txn.range(b"a", b"c").kvs == ()
    assert store.current_revision == 2
    changes = dict(store.take_changes())
    assert [key for key in changes if key.startswith(b"mvcc/r")] == [
        record_key(b"mvcc/", 2, sub) for sub in range(5)
    ]


def test_a_txn_reading_at_its_own_new_revision() -> None:
    store = MvccStore()
    put(store, b"a", b"1")
    with store.write() as txn:
        with pytest.raises(FutureRevision):
            txn.range(b"a", revision=3)
        txn.put(b"a", b"2")
        assert txn.range(b"a", revision=3).kvs[0].value == b"2"
        assert txn.range(b"a", revision=2).kvs[0].value == b"1"
        assert txn.range(b"a").revision == 3


# -- ranges -------------------------------------------------------------------------------------


@pytest.fixture
def abc() -> MvccStore:
    store = MvccStore()
    for key in (b"a", b"a/1", b"a/2", b"a/3", b"b", b"c\xff"):
        put(store, key, b"v" + key)
    return store


def test_range_end_forms(abc: MvccStore) -> None:
    assert keys(abc, b"a") == [b"a"]
    assert keys(abc, b"a/") == []
    assert keys(abc, b"a/", b"a0") == [b"a/1", b"a/2", b"a/3"]
    assert keys(abc, b"a/2", b"\0") == [b"a/2", b"a/3", b"b", b"c\xff"]
    assert keys(abc, b"\0", b"\0") == [b"a", b"a/1", b"a/2", b"a/3", b"b", b"c\xff"]
    assert keys(abc, b"b", b"a") == []  # an end before the key: nothing
    assert keys(abc, b"a", b"a") == []


def test_limit_cuts_kvs_but_not_count(abc: MvccStore) -> None:
    result = abc.range(b"a/", b"a0", limit=2)
    assert [kv.key for kv in result.kvs] == [b"a/1", b"a/2"]
    assert result.count == 3
    assert abc.range(b"a/", b"a0", limit=0).count == 3
    counted = abc.range(b"\0", b"\0", count_only=True)
    assert (counted.kvs, counted.count, counted.revision) == ((), 6, 7)


def test_deleted_keys_are_not_counted(abc: MvccStore) -> None:
    delete(abc, b"a/2")
    assert abc.range(b"a/", b"a0").count == 2
    assert abc.range(b"a/", b"a0", revision=7).count == 3


def test_future_revision() -> None:
    store = MvccStore()
    put(store, b"a", b"1")
    with pytest.raises(FutureRevision) as raised:
        store.range(b"a", revision=3)
    assert (raised.value.revision, raised.value.current_revision) == (3, 2)


# -- compaction ---------------------------------------------------------------------------------


def test_compaction_boundary_reading_at_the_compact_revision_is_allowed() -> None:
    store = MvccStore()
    for value in (b"1", b"2", b"3", b"4"):  # revisions 2..5
        put(store, b"k", value)
    store.compact(4)
    assert store.range(b"k", revision=4).kvs[0].value == b"3"
    with pytest.raises(Compacted) as raised:
        store.range(b"k", revision=3)
    assert raised.value.compact_revision == 4
    assert store.range(b"k").kvs[0].value == b"4"


def test_compact_errors_follow_etcd() -> None:
    store = MvccStore()
    store.compact(0)  # etcd accepts compacting at 0 on a new store
    with pytest.raises(Compacted):
        store.compact(0)
    store.compact(1)
    put(store, b"k", b"v")
    with pytest.raises(FutureRevision):
        store.compact(3)
    store.compact(2)
    with pytest.raises(Compacted):
        store.compact(2)
    with pytest.raises(Compacted):
        store.compact(1)


def test_compaction_keeps_the_latest_version_and_drops_dead_keys() -> None:
    store = MvccStore()
    put(store, b"live", b"1")  # 2
    put(store, b"live", b"2")  # 3
    put(store, b"dead", b"1")  # 4
    delete(store, b"dead")  # 5
    put(store, b"late", b"1")  # 6
    put(store, b"live", b"3")  # 7
    before = everything(store)
    store.take_changes()
    store.compact(6)
    pending = [store.compaction_pending]
    assert store.key_count() == 3
    assert store.compaction_step() is True
    pending.append(store.compaction_pending)
    assert pending == [True, False]
    assert store.key_count() == 2  # "dead" ended before 6: gone
    assert everything(store) == [entry for entry in before if entry[0] >= 6]
    changes = dict(store.take_changes())
    deleted = sorted(key for key, value in changes.items() if value is None)
    assert deleted == sorted(record_key(b"mvcc/", main, 0) for main in (2, 4, 5))


def test_compaction_steps_are_bounded_and_resume() -> None:
    store = MvccStore()
    for number in range(25):
        put(store, b"k%02d" % number, b"1")
        put(store, b"k%02d" % number, b"2")
    store.take_changes()
    store.compact(store.current_revision)
    steps = 0
    while not store.compaction_step(keys_max=10):
        steps += 1
        deleted = [key for key, value in store.take_changes() if value is None]
        assert len(deleted) == 10  # one superseded version per key
    assert steps == 2
    assert all(kv.version == 2 for kv in store.range(b"\0", b"\0").kvs)


def test_a_new_compaction_during_a_pending_one_restarts_from_the_first_key() -> None:
    store = MvccStore()
    for number in range(5):
        put(store, b"k%d" % number, b"1")
        put(store, b"k%d" % number, b"2")
    store.compact(6)
    assert store.compaction_step(keys_max=2) is False
    put(store, b"k0", b"3")
    store.compact(store.current_revision)
    while not store.compaction_step(keys_max=2):
        pass
    versions = [len(store._index.get(b"k%d" % n) or ()) for n in range(5)]
    assert versions == [1, 1, 1, 1, 1]


# -- events -------------------------------------------------------------------------------------


def test_events_per_write_txn() -> None:
    store = MvccStore()
    put(store, b"a", b"1")
    with store.write() as txn:
        txn.put(b"a", b"2")
        txn.put(b"b", b"1")
    delete(store, b"a", b"c")
    batches = store.take_events()
    assert [batch.revision for batch in batches] == [2, 3, 4]
    second = batches[1].events
    assert [event.type for event in second] == [EventType.PUT, EventType.PUT]
    assert second[0].prev_kv == KeyValue(b"a", 2, 2, 1, b"1", 0)
    assert second[1].prev_kv is None
    deletes = batches[2].events
    assert [event.type for event in deletes] == [EventType.DELETE, EventType.DELETE]
    assert deletes[0].kv == KeyValue(b"a", 0, 4, 0, b"", 0)  # key and mod_revision only
    assert deletes[0].prev_kv == KeyValue(b"a", 2, 3, 2, b"2", 0)


def test_events_can_be_turned_off() -> None:
    store = MvccStore(track_events=False)
    put(store, b"a", b"1")
    assert store.take_events() == []


# -- hashes -------------------------------------------------------------------------------------


def _fed(values: list[bytes]) -> MvccStore:
    store = MvccStore()
    for number, value in enumerate(values):
        put(store, b"k%d" % (number % 3), value)
    delete(store, b"k1")
    return store


def test_same_writes_same_hash_and_different_writes_differ() -> None:
    one, two = _fed([b"a", b"b", b"c", b"d"]), _fed([b"a", b"b", b"c", b"d"])
    assert one.hash_kv() == two.hash_kv()
    assert one.hash_kv(3) == two.hash_kv(3)
    assert one.hash_kv(3).hash != one.hash_kv().hash
    other = _fed([b"a", b"b", b"c", b"e"])
    assert other.hash_kv().hash != one.hash_kv().hash
    assert one.hash_kv(4).revision == one.current_revision


def test_hash_does_not_depend_on_compaction_progress() -> None:
    one, two = _fed([b"a", b"b", b"c", b"d", b"e"]), _fed([b"a", b"b", b"c", b"d", b"e"])
    one.compact(5)
    two.compact(5)
    assert two.compaction_step()
    assert one.hash_kv() == two.hash_kv()
    assert one.hash_kv().compact_revision == 5
    with pytest.raises(Compacted):
        one.hash_kv(5)  # etcd: a hash at the compact revision is refused
    with pytest.raises(FutureRevision):
        one.hash_kv(100)


# -- persistence --------------------------------------------------------------------------------


def _busy(store: MvccStore) -> None:
    for number in range(6):
        put(store, b"k%d" % (number % 4), b"v%d" % number, lease=number)
    delete(store, b"k1")
    with store.write() as txn:
        txn.put(b"k1", b"again")
        txn.delete_range(b"k2", b"k4")


def test_persist_and_load_memory() -> None:
    kv = MemoryKeyValueStore()
    store = MvccStore()
    _busy(store)
    persist(store, kv)
    loaded = MvccStore.load(kv)
    assert loaded.current_revision == store.current_revision
    assert everything(loaded) == everything(store)
    assert loaded.hash_kv() == store.hash_kv()
    put(loaded, b"x", b"y")
    put(store, b"x", b"y")
    assert loaded.hash_kv() == store.hash_kv()


def test_persist_and_load_rocksdb(tmp_path: Path) -> None:
    kv = RocksKeyValueStore(tmp_path / "db", fsync_in_thread=False)
    store = MvccStore()
    _busy(store)
    store.compact(5)
    store.compaction_step()
    persist(store, kv)
    kv.close()
    kv = RocksKeyValueStore(tmp_path / "db", fsync_in_thread=False)
    try:
        loaded = MvccStore.load(kv)
        assert everything(loaded) == everything(store)
        assert loaded.compact_revision == 5
        assert not loaded.compaction_pending
        with pytest.raises(Compacted):
            loaded.range(b"k0", revision=4)
    finally:
        kv.close()


def test_load_gives_exactly_the_last_committed_batch() -> None:
    kv = MemoryKeyValueStore()
    store = MvccStore()
    put(store, b"a", b"1")
    put(store, b"b", b"1")
    persist(store, kv)
    at_commit = everything(store)
    put(store, b"a", b"2")
    delete(store, b"b")
    store.take_changes()  # taken, never written: a crash before the batch
    loaded = MvccStore.load(kv)
    assert loaded.current_revision == 3
    assert everything(loaded) == at_commit


def test_an_interrupted_compaction_finishes_after_a_restart() -> None:
    kv = MemoryKeyValueStore()
    store = MvccStore()
    for number in range(10):
        put(store, b"k%d" % number, b"1")
        put(store, b"k%d" % number, b"2")
    store.compact(store.current_revision)
    assert store.compaction_step(keys_max=3) is False
    persist(store, kv)
    loaded = MvccStore.load(kv)
    assert loaded.compaction_pending
    assert loaded.compact_revision == store.compact_revision
    assert loaded.hash_kv() == store.hash_kv()
    while not loaded.compaction_step(keys_max=3):
        pass
    persist(loaded, kv)
    again = MvccStore.load(kv)
    assert not again.compaction_pending
    assert sum(1 for _ in kv.scan(b"mvcc/r", b"mvcc/s")) == 10
    assert everything(again) == everything(store)


def test_a_new_store_persists_its_revision_and_loads_empty() -> None:
    kv = MemoryKeyValueStore()
    persist(MvccStore(), kv)
    assert MvccStore.load(kv).current_revision == 1
    assert MvccStore.load(MemoryKeyValueStore()).current_revision == 1


def test_a_corrupted_record_is_refused() -> None:
    kv = MemoryKeyValueStore()
    store = MvccStore()
    put(store, b"a", b"1")
    persist(store, kv)
    key = record_key(b"mvcc/", 2, 0)
    value = kv.get(key)
    assert value is not None
    batch = WriteBatch()
    batch.put(key, value[:-1] + bytes([value[-1] ^ 1]))
    kv.apply(batch)
    with pytest.raises(StorageCorrupted):
        MvccStore.load(kv)


def test_a_record_past_the_revision_is_refused() -> None:
    kv = MemoryKeyValueStore()
    store = MvccStore()
    put(store, b"a", b"1")
    changes = [(key, value) for key, value in store.take_changes() if b"m/revision" not in key]
    batch = WriteBatch()
    for key, value in changes:
        assert value is not None
        batch.put(key, value)
    kv.apply(batch)
    with pytest.raises(StorageCorrupted):
        MvccStore.load(kv)


# -- snapshots ----------------------------------------------------------------------------------


def test_snapshot_and_restore_replace_the_whole_state() -> None:
    source = MvccStore()
    _busy(source)
    source.compact(6)  # not stepped: the snapshot applies it anyway
    items = list(source.snapshot_items())
    put(source, b"after", b"the snapshot")  # not in it

    kv = MemoryKeyValueStore()
    target = MvccStore()
    for number in range(20):
        put(target, b"old%d" % number, b"x")
    persist(target, kv)
    target.restore(items)
    assert target.current_revision == source.current_revision - 1
    assert target.compact_revision == 6
    assert not target.compaction_pending
    assert keys(target, b"old", b"old\xff") == []
    persist(target, kv)
    loaded = MvccStore.load(kv)
    assert everything(loaded) == everything(target)
    assert loaded.hash_kv() == target.hash_kv()
    assert not any(item.key.startswith(b"old") for _, kvs in everything(loaded) for item in kvs)
    records = [key for key, _ in items if key.startswith(b"mvcc/r")]
    assert [key for key, _ in kv.scan(b"mvcc/r", b"mvcc/s")] == sorted(records)


def test_restore_of_bad_items_leaves_the_store_alone() -> None:
    store = MvccStore()
    put(store, b"a", b"1")
    with pytest.raises(StorageCorrupted):
        store.restore([(b"mvcc/zzz", b"?")])
    assert keys(store, b"a") == [b"a"]


def test_a_loaded_store_has_nothing_to_write_until_it_changes() -> None:
    kv = MemoryKeyValueStore()
    store = MvccStore()
    _busy(store)
    persist(store, kv)
    loaded = MvccStore.load(kv)
    assert loaded.take_changes() == []
    put(loaded, b"k9", b"v")
    written = dict(loaded.take_changes())
    assert set(written) == {b"mvcc/m/revision", record_key(b"mvcc/", loaded.current_revision, 0)}
