"""The MVCC store's events of a revision range (``MvccStore.events``), for watchers that catch up.

The reference is what ``take_events()`` handed out as the writes happened: without compaction
``events`` must give exactly that back, in order, after any restart, restore or reload; with a
compaction the events from the compact revision on, with etcd's rules for ``prev_kv``.
"""

from __future__ import annotations

from random import Random

import pytest

from storage.kv import MemoryKeyValueStore, WriteBatch
from storage.mvcc import Compacted, EventType, FutureRevision, MvccStore, TxnEvents
from storage.mvcc.model import Event

KEYS = [b"a", b"b", b"c", b"d", b"e"]


def _random_writes(store: MvccStore, rng: Random, revisions: int) -> list[TxnEvents]:
    """Random puts, deletes and multi-key txns; the events ``take_events`` gave."""
    seen: list[TxnEvents] = []
    while store.current_revision < revisions + 1:
        with store.write() as txn:
            for key in rng.sample(KEYS, rng.randint(1, 3)):
                if rng.random() < 0.3:
                    txn.delete_range(key)
                else:
                    txn.put(key, b"v%d" % rng.randrange(100), rng.choice([0, 0, 7]))
        seen.extend(store.take_events())
    return seen


def _persist(store: MvccStore, kv: MemoryKeyValueStore) -> None:
    batch = WriteBatch()
    for key, value in store.take_changes():
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    kv.apply(batch)


def _without_prev_below(txns: list[TxnEvents], compacted: int) -> list[TxnEvents]:
    """What a watch reads from ``compacted`` on: prev_kv only where ``mod_revision - 1`` is
    not compacted, no delete at the compact revision itself."""
    result = []
    for txn in txns:
        if txn.revision < compacted:
            continue
        events = tuple(
            Event(e.type, e.kv, e.prev_kv if txn.revision - 1 >= compacted else None)
            for e in txn.events
            if not (txn.revision == compacted and e.type is EventType.DELETE)
        )
        if events:
            result.append(TxnEvents(txn.revision, events))
    return result


@pytest.mark.parametrize("seed", range(5))
def test_events_give_back_what_take_events_gave(seed: int) -> None:
    store = MvccStore()
    seen = _random_writes(store, Random(seed), 60)
    events, through = store.events(2)
    assert (events, through) == (seen, store.current_revision)
    middle, through = store.events(10, 20)
    assert middle == [txn for txn in seen if 10 <= txn.revision <= 20]
    assert through == 20


def test_prev_kv_is_the_key_before_and_none_for_a_creation() -> None:
    store = MvccStore()
    with store.write() as txn:
        txn.put(b"k", b"1")
    with store.write() as txn:
        txn.put(b"k", b"2")
    with store.write() as txn:
        txn.delete_range(b"k")
    with store.write() as txn:
        txn.put(b"k", b"3")
    events, _ = store.events(2)
    assert [(t.revision, t.events[0].type) for t in events] == [
        (2, EventType.PUT),
        (3, EventType.PUT),
        (4, EventType.DELETE),
        (5, EventType.PUT),
    ]
    prevs = [t.events[0].prev_kv for t in events]
    assert prevs[0] is None and prevs[3] is None  # creations
    assert prevs[1] is not None and prevs[1].value == b"1"
    assert prevs[2] is not None and prevs[2].value == b"2" and prevs[2].mod_revision == 3
    assert events[2].events[0].kv.mod_revision == 4 and events[2].events[0].kv.version == 0


def test_bounds_cut_between_revisions_and_the_reads_join_up() -> None:
    store = MvccStore()
    seen = _random_writes(store, Random(7), 50)
    for revisions_max, events_max in [(1, 0), (7, 0), (0, 1), (0, 5), (3, 4)]:
        joined: list[TxnEvents] = []
        start = 2
        while start <= store.current_revision:
            events, through = store.events(
                start, revisions_max=revisions_max, events_max=events_max
            )
            assert events and events[0].revision == start
            assert through >= start
            if revisions_max:
                assert through - start + 1 <= revisions_max
            if events_max:
                assert sum(len(t.events) for t in events[:-1]) < events_max
            joined.extend(events)
            start = through + 1
        assert joined == seen


def test_errors_follow_the_range_reads() -> None:
    store = MvccStore()
    _random_writes(store, Random(1), 10)
    with pytest.raises(FutureRevision):
        store.events(2, store.current_revision + 1)
    store.compact(6)
    with pytest.raises(Compacted):
        store.events(5)
    assert store.events(store.current_revision + 1) == ([], store.current_revision)


@pytest.mark.parametrize("seed", range(6))
def test_after_a_compaction_the_answer_does_not_depend_on_the_steps(seed: int) -> None:
    rng = Random(seed)
    store = MvccStore()
    seen = _random_writes(store, rng, 40)
    compacted = rng.randint(3, 35)
    store.compact(compacted)
    expected = _without_prev_below(seen, compacted)
    assert store.events(compacted)[0] == expected
    while not store.compaction_step(keys_max=1):
        assert store.events(compacted)[0] == expected
    assert store.events(compacted)[0] == expected
    assert not store.compaction_pending
    assert store._revision_keys.floor >= compacted  # the index is trimmed


def test_the_revision_index_is_trimmed_in_bounded_steps() -> None:
    store = MvccStore()
    for i in range(30):
        with store.write() as txn:
            txn.put(b"k", b"%d" % i)
    store.compact(25)
    assert store.compaction_step(revisions_max=10) is False  # 10 of 23 revisions trimmed
    assert store.compaction_pending
    assert store._revision_keys.floor == 12
    while not store.compaction_step(revisions_max=10):
        pass
    assert store._revision_keys.floor == 25


@pytest.mark.parametrize("seed", range(4))
def test_load_restore_and_reload_rebuild_the_revision_index(seed: int) -> None:
    rng = Random(seed)
    store = MvccStore()
    kv = MemoryKeyValueStore()
    seen = _random_writes(store, rng, 30)
    store.compact(12)
    store.compaction_step(keys_max=2)  # a compaction under way when persisted
    _persist(store, kv)
    expected = _without_prev_below(seen, 12)
    assert store.events(12)[0] == expected

    loaded = MvccStore.load(kv)
    assert loaded.events(12)[0] == expected

    restored = MvccStore()
    _random_writes(restored, rng, 50)
    restored.restore(store.snapshot_items())
    assert restored.events(12)[0] == expected

    reloaded = MvccStore()
    _random_writes(reloaded, rng, 5)
    reloaded.reload(kv)
    assert reloaded.events(12)[0] == expected
    # and they go on from there
    for other in (loaded, restored, reloaded):
        with other.write() as txn:
            txn.put(b"z", b"new")
        events, _ = other.events(other.current_revision)
        assert [e.kv.key for t in events for e in t.events] == [b"z"]
