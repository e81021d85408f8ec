"""The MVCC store against a plain model: the whole key space at every revision.

Seeded random runs (hypothesis is not a dependency here): writes in transactions, compactions
and their steps, restarts from the persisted records and snapshot restores, every read
checked against the model, and a twin store fed the same writes but never compacted
physically or restarted must keep the same hash.
"""

from __future__ import annotations

import random

import pytest

from storage.kv import MemoryKeyValueStore, WriteBatch
from storage.mvcc import Compacted, FutureRevision, KeyValue, MvccStore

KEYS = [b"a", b"a/1", b"a/2", b"a\xff", b"b", b"b\x00", b"c"]
State = dict[bytes, KeyValue]


class Model:
    """Every revision's full state; what a compaction removes is only the right to read it."""

    def __init__(self) -> None:
        self.states: list[State] = [{}, {}]  # revisions 0 and 1
        self.compact_revision = -1

    @property
    def revision(self) -> int:
        return len(self.states) - 1

    def read(self, key: bytes, end: bytes, revision: int) -> list[KeyValue] | type[Exception]:
        if revision > self.revision:
            return FutureRevision
        at = self.revision if revision <= 0 else revision
        if at < self.compact_revision:
            return Compacted
        state = self.states[at]
        return [state[k] for k in sorted(state) if in_range(k, key, end)]


def in_range(candidate: bytes, key: bytes, end: bytes) -> bool:
    if not end:
        return candidate == key
    if end == b"\0":
        return candidate >= key
    return key <= candidate < end


def persist(store: MvccStore, kv: MemoryKeyValueStore) -> None:
    batch = WriteBatch()
    for key, value in store.take_changes():
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    kv.apply(batch)


def random_range(rng: random.Random) -> tuple[bytes, bytes]:
    key = rng.choice([*KEYS, b"\0"])
    end = rng.choice([b"", b"", b"\0", rng.choice(KEYS), b"a0", b"zz"])
    return key, end


def check_reads(rng: random.Random, store: MvccStore, model: Model) -> None:
    for _ in range(4):
        key, end = random_range(rng)
        revision = rng.randint(model.compact_revision - 1, model.revision + 1)
        expected = model.read(key, end, revision)
        if isinstance(expected, list):
            limit = rng.choice([0, 0, 1, 2])
            result = store.range(key, end, revision=revision, limit=limit)
            assert result.count == len(expected)
            assert list(result.kvs) == (expected[:limit] if limit else expected)
            assert result.revision == model.revision
        else:
            with pytest.raises(expected):
                store.range(key, end, revision=revision)


def write_txn(rng: random.Random, stores: list[MvccStore], model: Model) -> None:
    state = dict(model.states[-1])
    main = model.revision + 1
    wrote = False
    txns = [store.write() for store in stores]
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.7:
            key, value, lease = rng.choice(KEYS), b"%d" % rng.randint(0, 9), rng.choice([0, 5])
            prev = state.get(key)
            create, version = (
                (main, 1) if prev is None else (prev.create_revision, prev.version + 1)
            )
            state[key] = KeyValue(key, create, main, version, value, lease)
            for txn in txns:
                assert txn.put(key, value, lease) == state[key]
            wrote = True
        else:
            key, end = random_range(rng)
            gone = [state.pop(k) for k in sorted(state) if in_range(k, key, end)]
            for txn in txns:
                assert txn.delete_range(key, end) == gone
            wrote = wrote or bool(gone)
        key, end = random_range(rng)
        for txn in txns:
            seen = txn.range(key, end).kvs
            assert list(seen) == [state[k] for k in sorted(state) if in_range(k, key, end)]
    for txn in txns:
        txn.end()
    if wrote:
        model.states.append(state)


@pytest.mark.parametrize("seed", range(40))
def test_store_matches_the_model(seed: int) -> None:
    rng = random.Random(seed)
    model = Model()
    kv = MemoryKeyValueStore()
    store = MvccStore()
    twin = MvccStore(track_events=False)  # same writes; never stepped, restarted or restored
    for _ in range(120):
        roll = rng.random()
        if roll < 0.6:
            write_txn(rng, [store, twin], model)
        elif roll < 0.7:
            revision = rng.randint(model.compact_revision - 1, model.revision + 1)
            if revision <= model.compact_revision:
                with pytest.raises(Compacted):
                    store.compact(revision)
            elif revision > model.revision:
                with pytest.raises(FutureRevision):
                    store.compact(revision)
            else:
                store.compact(revision)
                twin.compact(revision)
                model.compact_revision = revision
        elif roll < 0.8:
            store.compaction_step(keys_max=rng.randint(1, 3))
        elif roll < 0.9:
            persist(store, kv)
            store = MvccStore.load(kv)
        else:
            fresh_kv = MemoryKeyValueStore()
            fresh = MvccStore()
            write_txn(rng, [fresh], Model())  # some state of its own, replaced
            persist(fresh, fresh_kv)
            fresh.restore(store.snapshot_items())
            persist(fresh, fresh_kv)
            store, kv = MvccStore.load(fresh_kv), fresh_kv
        assert store.current_revision == model.revision
        assert store.compact_revision == model.compact_revision
        check_reads(rng, store, model)
        assert store.hash_kv() == twin.hash_kv()
    while not store.compaction_step(keys_max=2):
        pass
    persist(store, kv)
    assert MvccStore.load(kv).hash_kv() == twin.hash_kv()
    for _, history in store._index.items():  # nothing left that the compaction superseded
        assert history.retained_from(store.compact_revision) == 0
