"""RaftStore on every backend: the log, the hard state, snapshots, compaction, reopening,
and refusing corrupt records."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from random import Random

import pytest
import trio

import storage.raft_store
from storage.errors import (
    InvalidWrite,
    LogCompacted,
    LogUnavailable,
    SnapshotOutOfDate,
    StorageCorrupted,
)
from storage.kv import KeyValueStore, MemoryKeyValueStore, WriteBatch
from storage.raft_store import (
    HardStateRecord,
    LogRecord,
    RaftStore,
    SnapshotMetadata,
    SnapshotRecord,
    encode_snapshot_chunk,
)
from tests.storage.conftest import Backend

BIG = 1 << 40


def records(first: int, last: int, term: int, size_bytes: int = 3) -> list[LogRecord]:
    """Records ``first..last`` of one term, each with ``size_bytes`` of data."""
    return [
        LogRecord(index, term, index % 2, bytes([index % 256]) * size_bytes)
        for index in range(first, last + 1)
    ]


def snapshot_at(index: int, term: int, data: bytes = b"state") -> SnapshotRecord:
    return SnapshotRecord(index, term, (1, 2, 3), (4,), data)


def whole_log(store: RaftStore) -> list[LogRecord]:
    return store.entries(store.first_index(), store.last_index() + 1, BIG)


def state_of(store: RaftStore) -> tuple[object, ...]:
    """Everything a reader can see, to compare two stores."""
    return (
        store.hard_state(),
        store.snapshot(),
        store.first_index(),
        store.last_index(),
        store.term(store.first_index() - 1),
        whole_log(store),
    )


def put_raw(kv: KeyValueStore, key: bytes, value: bytes | None) -> None:
    batch = WriteBatch()
    if value is None:
        batch.delete(key)
    else:
        batch.put(key, value)
    kv.apply(batch)


def log_key(index: int) -> bytes:
    return b"raft/log/" + index.to_bytes(8, "big")


# -- records ------------------------------------------------------------------------------------


def test_records_refuse_out_of_range_fields() -> None:
    with pytest.raises(ValueError):
        LogRecord(0, 1, 0, b"")
    with pytest.raises(ValueError):
        LogRecord(1, -1, 0, b"")
    with pytest.raises(ValueError):
        LogRecord(1, 1, 256, b"")
    with pytest.raises(ValueError):
        LogRecord(1, 1, True, b"")
    with pytest.raises(ValueError):
        LogRecord(1, 1, 0, "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        HardStateRecord(term=1 << 64)
    with pytest.raises(ValueError):
        SnapshotRecord(1, 1, [1], (), b"")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SnapshotRecord(0, 1, (1,), (), b"")
    assert snapshot_at(5, 2).metadata() == SnapshotMetadata(5, 2, (1, 2, 3), (4,))


# -- an empty store -----------------------------------------------------------------------------


async def test_an_empty_store_has_an_empty_log(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    assert store.hard_state() is None
    assert store.snapshot() is None
    assert store.snapshot_metadata() is None
    assert (store.first_index(), store.last_index()) == (1, 0)
    assert store.term(0) == 0
    assert store.entries(1, 1, BIG) == []
    with pytest.raises(LogUnavailable):
        store.term(1)
    with pytest.raises(LogUnavailable):
        store.entries(1, 2, BIG)


# -- appending ----------------------------------------------------------------------------------


async def test_appended_records_are_read_back(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    await store.save(HardStateRecord(1, 2, 0), records(1, 5, term=1), None)
    assert (store.first_index(), store.last_index()) == (1, 5)
    assert store.entries(1, 6, BIG) == records(1, 5, term=1)
    assert store.entries(2, 4, BIG) == records(2, 3, term=1)
    assert [store.term(index) for index in range(6)] == [0, 1, 1, 1, 1, 1]
    assert store.hard_state() == HardStateRecord(1, 2, 0)
    await store.save(None, records(6, 7, term=2), None)
    assert store.entries(5, 8, BIG) == records(5, 5, term=1) + records(6, 7, term=2)


async def test_new_records_replace_the_suffix_from_their_first_index(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    await store.save(None, records(1, 6, term=1), None)
    await store.save(None, records(3, 4, term=2), None)
    assert store.last_index() == 4
    assert whole_log(store) == records(1, 2, term=1) + records(3, 4, term=2)
    with pytest.raises(LogUnavailable):
        store.term(5)
    await store.save(None, records(5, 5, term=3), None)
    assert store.term(5) == 3


async def test_records_below_the_first_index_are_ignored(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    await store.save(None, [], snapshot_at(5, 2))
    await store.save(None, records(3, 7, term=2), None)
    assert (store.first_index(), store.last_index()) == (6, 7)
    assert whole_log(store) == records(6, 7, term=2)
    await store.save(None, records(2, 4, term=2), None)  # all compacted: nothing happens
    assert whole_log(store) == records(6, 7, term=2)


async def test_appends_that_would_break_the_log_are_refused(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    await store.save(HardStateRecord(2, 1, 3), records(1, 3, term=2), None)
    with pytest.raises(InvalidWrite, match="gap"):
        await store.save(None, records(5, 6, term=2), None)
    with pytest.raises(InvalidWrite, match="contiguous"):
        await store.save(None, [*records(4, 4, term=2), *records(6, 6, term=2)], None)
    with pytest.raises(InvalidWrite, match="term goes down"):
        await store.save(None, [*records(4, 4, term=3), *records(5, 5, term=2)], None)
    with pytest.raises(InvalidWrite, match="below 2"):
        await store.save(None, records(4, 4, term=1), None)
    with pytest.raises(InvalidWrite, match="term goes down"):
        await store.save(HardStateRecord(1, 1, 3), records(4, 4, term=2), None)
    with pytest.raises(InvalidWrite, match="commit goes down"):
        await store.save(HardStateRecord(2, 1, 2), [], None)
    await store.create_snapshot(snapshot_at(2, 2))
    with pytest.raises(InvalidWrite, match="snapshot at 2 covers"):
        await store.save(None, records(2, 4, term=3), None)
    assert store.last_index() == 3  # nothing of the refused saves was written
    assert store.hard_state() == HardStateRecord(2, 1, 3)
    assert RaftStore.open(kv).last_index() == 3


# -- reading ------------------------------------------------------------------------------------


async def test_entries_stop_at_the_byte_limit_but_return_at_least_one(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    await store.save(None, records(1, 10, term=1, size_bytes=10), None)
    assert len(store.entries(1, 11, 25)) == 2
    assert len(store.entries(1, 11, 30)) == 3
    assert len(store.entries(1, 11, 0)) == 1
    assert len(store.entries(1, 11, 9)) == 1
    assert len(store.entries(4, 11, BIG)) == 7


async def test_reads_outside_the_log_raise_typed_errors(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    await store.save(None, records(1, 10, term=1), None)
    await store.create_snapshot(snapshot_at(6, 1))
    await store.compact(4)
    assert store.first_index() == 5
    assert store.term(4) == 1
    with pytest.raises(LogCompacted):
        store.term(3)
    with pytest.raises(LogCompacted):
        store.entries(4, 6, BIG)
    with pytest.raises(LogUnavailable):
        store.term(11)
    with pytest.raises(LogUnavailable):
        store.entries(5, 12, BIG)
    with pytest.raises(ValueError):
        store.entries(7, 6, BIG)
    assert store.entries(5, 5, BIG) == []


# -- snapshots and compaction -------------------------------------------------------------------


async def test_a_received_snapshot_replaces_the_whole_log(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    await store.save(HardStateRecord(1, 1, 3), records(1, 8, term=1), None)
    await store.save(HardStateRecord(3, 0, 20), [], snapshot_at(20, 3, b"the state"))
    assert (store.first_index(), store.last_index()) == (21, 20)
    assert store.term(20) == 3
    assert store.entries(21, 21, BIG) == []
    with pytest.raises(LogCompacted):
        store.term(8)
    assert store.snapshot() == snapshot_at(20, 3, b"the state")
    assert store.snapshot_metadata() == SnapshotMetadata(20, 3, (1, 2, 3), (4,))
    assert list(kv.scan(b"raft/log/", b"raft/log0")) == []


async def test_a_snapshot_and_records_after_it_in_one_save(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    await store.save(None, records(1, 3, term=1), None)
    await store.save(HardStateRecord(4, 2, 12), records(9, 12, term=4), snapshot_at(10, 4))
    assert (store.first_index(), store.last_index()) == (11, 12)
    assert whole_log(store) == records(11, 12, term=4)
    assert store.hard_state() == HardStateRecord(4, 2, 12)


async def test_an_old_snapshot_is_refused_and_nothing_is_written(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    await store.save(None, [], snapshot_at(10, 2))
    with pytest.raises(SnapshotOutOfDate):
        await store.save(HardStateRecord(9, 9, 9), records(11, 12, term=2), snapshot_at(10, 2))
    with pytest.raises(SnapshotOutOfDate):
        await store.save(None, [], snapshot_at(5, 1))
    assert store.hard_state() is None
    assert store.last_index() == 10


async def test_a_local_snapshot_keeps_the_log_until_compacted(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    await store.save(None, records(1, 10, term=2), None)
    await store.create_snapshot(snapshot_at(7, 2, b"applied through 7"))
    assert (store.first_index(), store.last_index()) == (1, 10)
    assert store.snapshot() == snapshot_at(7, 2, b"applied through 7")
    with pytest.raises(InvalidWrite, match="snapshot is at 7"):
        await store.compact(8)
    await store.compact(5)
    assert (store.first_index(), store.last_index()) == (6, 10)
    assert store.term(5) == 2
    assert whole_log(store) == records(6, 10, term=2)
    with pytest.raises(LogCompacted):
        await store.compact(5)
    await store.compact(7)
    assert store.first_index() == 8
    assert RaftStore.open(kv).first_index() == 8


async def test_a_local_snapshot_must_be_newer_and_match_the_log(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    await store.save(None, records(1, 5, term=2), None)
    with pytest.raises(InvalidWrite, match="term"):
        await store.create_snapshot(snapshot_at(3, 1))
    with pytest.raises(LogUnavailable):
        await store.create_snapshot(snapshot_at(6, 2))
    await store.create_snapshot(snapshot_at(4, 2))
    with pytest.raises(SnapshotOutOfDate):
        await store.create_snapshot(snapshot_at(4, 2))
    with pytest.raises(SnapshotOutOfDate):
        await store.create_snapshot(snapshot_at(3, 2))


# -- reopening ----------------------------------------------------------------------------------


async def test_reopening_restores_everything_exactly(backend: Backend) -> None:
    kv = backend.open()
    store = RaftStore.open(kv)
    await store.save(HardStateRecord(1, 1, 0), records(1, 20, term=1), None)
    await store.save(HardStateRecord(2, 3, 15), records(18, 25, term=2), None)
    await store.create_snapshot(snapshot_at(15, 1, b"x" * 1000))
    await store.compact(12)
    await store.save(None, records(26, 26, term=2, size_bytes=0), None, sync=False)
    before = state_of(store)
    kv = backend.reopen(kv)
    again = RaftStore.open(kv)
    assert state_of(again) == before
    assert again.snapshot_metadata() == store.snapshot_metadata()
    assert again.term(12) == 1


async def test_reopening_after_a_received_snapshot(backend: Backend) -> None:
    kv = backend.open()
    store = RaftStore.open(kv)
    await store.save(HardStateRecord(5, 0, 30), records(31, 33, term=5), snapshot_at(30, 5))
    before = state_of(store)
    kv = backend.reopen(kv)
    assert state_of(RaftStore.open(kv)) == before


async def test_the_store_lives_under_its_prefix(kv: KeyValueStore) -> None:
    one = RaftStore.open(kv, prefix=b"group/1/")
    two = RaftStore.open(kv, prefix=b"group/2/")
    await one.save(HardStateRecord(1, 1, 1), records(1, 3, term=1), None)
    await two.save(None, records(1, 1, term=7), None)
    assert RaftStore.open(kv, prefix=b"group/1/").last_index() == 3
    assert RaftStore.open(kv, prefix=b"group/2/").term(1) == 7
    assert RaftStore.open(kv).last_index() == 0


# -- the cache ----------------------------------------------------------------------------------


async def test_reads_that_span_the_store_and_the_cache_agree_with_the_store(
    kv: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_cost = 10 + storage.raft_store.CACHE_RECORD_OVERHEAD_BYTES
    monkeypatch.setattr(storage.raft_store, "LOG_CACHE_BYTES_MAX", 5 * record_cost)
    store = RaftStore.open(kv)
    for first in range(1, 40, 4):
        await store.save(None, records(first, first + 3, term=1 + first // 10, size_bytes=10), None)
    await store.save(None, records(38, 41, term=9, size_bytes=10), None)
    fresh = RaftStore.open(kv)  # nothing cached: every read goes to the store
    for low in range(1, 42, 3):
        for high in range(low, 42, 5):
            assert store.entries(low, high, 45) == fresh.entries(low, high, 45)
    assert [store.term(index) for index in range(42)] == [fresh.term(index) for index in range(42)]


class CountingStore(MemoryKeyValueStore):
    """Counts the reads that reach the store."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key: bytes) -> bytes | None:
        self.reads += 1
        return super().get(key)

    def scan(
        self, start: bytes, end: bytes, *, bulk: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        self.reads += start < end
        return super().scan(start, end, bulk=bulk)


async def test_reads_near_the_tail_are_answered_from_the_cache() -> None:
    kv = CountingStore()
    store = RaftStore.open(kv)
    await store.save(None, records(1, 100, term=1), None)
    kv.reads = 0
    assert store.entries(50, 101, BIG) == records(50, 100, term=1)
    assert store.term(100) == 1
    assert store.term(1) == 1
    assert kv.reads == 0
    assert RaftStore.open(kv).entries(50, 101, BIG) == records(50, 100, term=1)
    assert kv.reads > 0


# -- corruption ---------------------------------------------------------------------------------


async def saved_store(kv: KeyValueStore) -> RaftStore:
    store = RaftStore.open(kv)
    await store.save(HardStateRecord(2, 1, 4), records(1, 6, term=2, size_bytes=8), None)
    await store.create_snapshot(snapshot_at(3, 2, b"snapshot data"))
    return store


async def test_a_flipped_byte_in_a_record_is_detected(kv: KeyValueStore) -> None:
    await saved_store(kv)
    value = kv.get(log_key(4))
    assert value is not None
    put_raw(kv, log_key(4), value[:10] + bytes([value[10] ^ 1]) + value[11:])
    store = RaftStore.open(kv)
    with pytest.raises(StorageCorrupted, match="checksum"):
        store.term(4)
    with pytest.raises(StorageCorrupted, match="checksum"):
        store.entries(1, 7, BIG)
    assert store.entries(1, 4, BIG) == records(1, 3, term=2, size_bytes=8)


async def test_truncated_and_misplaced_records_are_detected(kv: KeyValueStore) -> None:
    await saved_store(kv)
    value = kv.get(log_key(2))
    assert value is not None
    put_raw(kv, log_key(3), value)  # a valid record, under the wrong index
    put_raw(kv, log_key(5), value[:3])
    store = RaftStore.open(kv)
    with pytest.raises(StorageCorrupted, match="stored under index 3"):
        store.term(3)
    with pytest.raises(StorageCorrupted, match="too short"):
        store.term(5)


async def test_a_hole_in_the_log_is_detected(kv: KeyValueStore) -> None:
    await saved_store(kv)
    put_raw(kv, log_key(4), None)
    store = RaftStore.open(kv)
    with pytest.raises(StorageCorrupted, match="4 is missing"):
        store.term(4)
    with pytest.raises(StorageCorrupted, match="4 is missing"):
        store.entries(2, 6, BIG)


async def test_corrupt_metadata_fails_the_open(kv: KeyValueStore) -> None:
    await saved_store(kv)
    for key in (b"raft/hard_state", b"raft/snapshot/meta"):
        good = kv.get(key)
        assert good is not None
        put_raw(kv, key, good[:-1] + bytes([good[-1] ^ 0x80]))
        with pytest.raises(StorageCorrupted):
            RaftStore.open(kv)
        put_raw(kv, key, good)
    RaftStore.open(kv)


async def test_a_log_that_does_not_start_after_the_compaction_point_fails_the_open(
    kv: KeyValueStore,
) -> None:
    store = await saved_store(kv)
    await store.compact(2)
    put_raw(kv, log_key(3), None)
    with pytest.raises(StorageCorrupted, match="starts at 4"):
        RaftStore.open(kv)


async def test_corrupt_snapshot_data_is_detected_when_read(kv: KeyValueStore) -> None:
    await saved_store(kv)
    put_raw(kv, b"raft/snapshot/data", b"snapshot dat!")
    store = RaftStore.open(kv)
    assert store.snapshot_metadata() == SnapshotMetadata(3, 2, (1, 2, 3), (4,))
    with pytest.raises(StorageCorrupted, match="checksum"):
        store.snapshot()
    put_raw(kv, b"raft/snapshot/data", None)
    with pytest.raises(StorageCorrupted, match="missing"):
        store.snapshot()


async def test_a_value_of_another_format_version_is_refused(kv: KeyValueStore) -> None:
    await saved_store(kv)
    put_raw(kv, b"raft/hard_state", b"\x02" + b"\x00" * 24 + b"\x00" * 4)
    with pytest.raises(StorageCorrupted):
        RaftStore.open(kv)


# -- durability and concurrency -----------------------------------------------------------------


async def test_only_synced_saves_survive_a_crash() -> None:
    kv = MemoryKeyValueStore()
    store = RaftStore.open(kv)
    await store.save(HardStateRecord(1, 1, 0), records(1, 3, term=1), None, sync=True)
    await store.save(HardStateRecord(2, 1, 0), records(4, 5, term=2), None, sync=False)
    restarted = RaftStore.open(kv.crash())
    assert restarted.hard_state() == HardStateRecord(1, 1, 0)
    assert restarted.last_index() == 3


async def test_a_save_cancelled_before_it_starts_writes_nothing(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.save(HardStateRecord(1, 1, 0), records(1, 3, term=1), None)
    assert store.last_index() == 0
    assert RaftStore.open(kv).last_index() == 0


async def test_readers_during_saves_always_see_a_consistent_log(kv: KeyValueStore) -> None:
    store = RaftStore.open(kv)
    rng = Random(7)
    done = trio.Event()
    reads = 0

    async def writer() -> None:
        term = 1
        for _ in range(150):
            term += 1
            last = store.last_index()
            first_new = max(store.first_index(), last + 1 - rng.randrange(4))
            await store.save(None, records(first_new, first_new + rng.randrange(1, 4), term), None)
        done.set()

    async def reader() -> None:
        nonlocal reads
        while not done.is_set():
            log = whole_log(store)
            assert [record.index for record in log] == list(
                range(store.first_index(), store.last_index() + 1)
            )
            reads += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(writer)
    assert reads > 0


# -- a model check ------------------------------------------------------------------------------


class LogModel:
    """The obvious implementation: a dict of records and a few integers."""

    def __init__(self) -> None:
        self.log: dict[int, LogRecord] = {}
        self.compacted = (0, 0)
        self.snapshot_index = 0
        self.last = 0

    def save(self, entries: Sequence[LogRecord], snapshot: SnapshotRecord | None) -> None:
        if snapshot is not None:
            self.log = {}
            self.compacted = (snapshot.index, snapshot.term)
            self.snapshot_index = snapshot.index
            self.last = snapshot.index
        kept = [record for record in entries if record.index > self.compacted[0]]
        if kept:
            self.log = {index: r for index, r in self.log.items() if index < kept[0].index}
            self.log.update((record.index, record) for record in kept)
            self.last = kept[-1].index

    def term(self, index: int) -> int:
        return self.compacted[1] if index == self.compacted[0] else self.log[index].term


@pytest.mark.parametrize("seed", range(4))
async def test_random_operations_match_a_model_and_survive_reopening(
    backend: Backend, seed: int
) -> None:
    rng = Random(seed)
    kv = backend.open()
    store = RaftStore.open(kv)
    model = LogModel()
    term = 1
    for step in range(120):
        choice = rng.random()
        if choice < 0.6:
            term += rng.random() < 0.3
            first_new = rng.randint(max(model.snapshot_index - 2, 1), model.last + 1)
            kept_first = max(first_new, model.compacted[0] + 1)
            term = max(term, model.term(kept_first - 1))
            new = records(first_new, first_new + rng.randrange(5), term)
            if new[-1].index > model.compacted[0] and kept_first <= model.snapshot_index:
                with pytest.raises(InvalidWrite, match="snapshot"):
                    await store.save(None, new, None)
                continue
            await store.save(None, new, None, sync=rng.random() < 0.5)
            model.save(new, None)
        elif choice < 0.7:
            term += 1
            index = model.last + rng.randrange(1, 5)
            snapshot = snapshot_at(index, term, b"snap %d" % step)
            await store.save(None, [], snapshot)
            model.save([], snapshot)
        elif choice < 0.85 and model.last > model.snapshot_index:
            index = rng.randint(model.snapshot_index + 1, model.last)
            await store.create_snapshot(snapshot_at(index, model.term(index), b"local"))
            model.snapshot_index = index
        elif model.snapshot_index > model.compacted[0]:
            index = rng.randint(model.compacted[0] + 1, model.snapshot_index)
            await store.compact(index)
            model.compacted = (index, model.term(index))
            model.log = {i: r for i, r in model.log.items() if i > index}
        assert store.first_index() == model.compacted[0] + 1
        assert store.last_index() == model.last
        assert whole_log(store) == [
            model.log[i] for i in range(model.compacted[0] + 1, model.last + 1)
        ]
        assert store.term(model.compacted[0]) == model.compacted[1]
    before = state_of(store)
    kv = backend.reopen(kv)
    assert state_of(RaftStore.open(kv)) == before


def three_chunks_of_snapshot_20() -> tuple[list[bytes], list[bytes]]:
    """Three chunk bodies and their sealed values, chunks 0-2 of snapshot 20."""
    bodies = [b"first chunk", b"second chunk", b"third chunk"]
    return bodies, [encode_snapshot_chunk(20, seq, body) for seq, body in enumerate(bodies)]


async def test_a_corrupt_snapshot_chunk_is_detected_when_read_naming_its_key(
    kv: KeyValueStore,
) -> None:
    store = RaftStore(kv)
    bodies, values = three_chunks_of_snapshot_20()
    for seq, value in enumerate(values):
        store.put_snapshot_chunk(20, True, seq, value)
    record = SnapshotRecord(20, 3, (1, 2, 3), (), b"", 3, sum(map(len, values)), True)
    await store.save(HardStateRecord(3, 0, 20), [], record)
    assert [bytes(body) for _, body, _ in store.snapshot_chunks(20, True, 3)] == bodies
    key = [k for k, _ in kv.scan(b"raft/snapshot/chunk/", b"raft/snapshot/chunk0")][1]
    batch = WriteBatch()
    batch.put(key, values[1][:-1] + bytes([values[1][-1] ^ 1]))
    await kv.write(batch, sync=True)
    reopened = RaftStore(kv)
    assert reopened.snapshot() == record
    with pytest.raises(StorageCorrupted, match=re.escape(repr(key))):
        list(reopened.snapshot_chunks(20, True, 3))
    batch = WriteBatch()
    batch.delete(key)
    await kv.write(batch, sync=True)
    with pytest.raises(StorageCorrupted, match=re.escape(repr(key))):
        list(RaftStore(kv).snapshot_chunks(20, True, 3))


async def test_a_chunk_writer_takes_checked_chunks_in_order_and_commits_them_at_once(
    kv: KeyValueStore,
) -> None:
    store = RaftStore(kv)
    bodies, values = three_chunks_of_snapshot_20()
    writer = store.snapshot_chunk_writer(20, received=True)
    with pytest.raises(InvalidWrite, match="not 0"):
        writer.put(1, values[1])
    with pytest.raises(StorageCorrupted, match="is chunk 1 of snapshot 20, not chunk 0"):
        writer.put(0, values[1])
    for seq, value in enumerate(values):
        writer.put(seq, value)
    assert writer.chunks == 3
    assert list(kv.scan(b"raft/snapshot/chunk/", b"raft/snapshot/chunk0")) == []
    await writer.commit()
    record = SnapshotRecord(20, 3, (1, 2, 3), (), b"", 3, sum(map(len, values)), True)
    await store.save(HardStateRecord(3, 0, 20), [], record)
    assert [bytes(body) for _, body, _ in store.snapshot_chunks(20, True, 3)] == bodies
    with pytest.raises(InvalidWrite, match="current snapshot"):
        store.snapshot_chunk_writer(20, received=True)


async def test_a_snapshot_needs_its_chunks_written_first(kv: KeyValueStore) -> None:
    store = RaftStore(kv)
    record = SnapshotRecord(20, 3, (1, 2, 3), (), b"", 2, 100, True)
    with pytest.raises(InvalidWrite):
        await store.save(HardStateRecord(3, 0, 20), [], record)
    assert store.snapshot_metadata() is None
