"""The KeyValueStore contract, on RocksDB and in memory (see conftest.py)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import storage.kv
from storage.errors import InvalidWrite, StorageClosed, StorageError
from storage.kv import KeyValueStore, MemoryKeyValueStore, WriteBatch, prefix_end
from tests.storage.conftest import Backend

KEYS = [b"", b"\x00", b"a", b"a\x00", b"ab", b"b", b"\x7f", b"\xff", b"\xff\xff"]


def batch_of(*pairs: tuple[bytes, bytes]) -> WriteBatch:
    batch = WriteBatch()
    for key, value in pairs:
        batch.put(key, value)
    return batch


async def fill(kv: KeyValueStore, keys: list[bytes]) -> None:
    await kv.write(batch_of(*((key, b"v" + key) for key in keys)), sync=True)


def everything(kv: KeyValueStore) -> list[tuple[bytes, bytes]]:
    return list(kv.scan(b"", b"\xff" * 8))


# -- WriteBatch and helpers ---------------------------------------------------------------------


def test_a_batch_counts_its_operations_and_estimates_its_size() -> None:
    batch = WriteBatch()
    assert len(batch) == 0
    assert batch.size_bytes() == 0
    batch.put(b"key", b"value")
    batch.delete(b"gone")
    batch.delete_range(b"a", b"b")
    assert len(batch) == 3
    overhead = storage.kv.OPERATION_OVERHEAD_BYTES
    assert batch.size_bytes() == len(b"keyvalue") + len(b"gone") + 2 + 3 * overhead


def test_a_batch_refuses_what_is_not_bytes_and_backwards_ranges() -> None:
    batch = WriteBatch()
    with pytest.raises(TypeError):
        batch.put("key", b"value")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        batch.put(b"key", bytearray(b"value"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sorts after"):
        batch.delete_range(b"b", b"a")
    assert len(batch) == 0


def test_a_batch_yields_its_operations_in_order_as_objects_and_as_raw_tuples() -> None:
    batch = WriteBatch()
    batch.put(b"k", b"v")
    batch.delete(b"d")
    batch.delete_range(b"a", b"c")
    assert list(batch) == [
        storage.kv.Put(b"k", b"v"),
        storage.kv.Delete(b"d"),
        storage.kv.DeleteRange(b"a", b"c"),
    ]
    assert batch.raw() == [
        (storage.kv.PUT_KIND, b"k", b"v"),
        (storage.kv.DELETE_KIND, b"d", b""),
        (storage.kv.DELETE_RANGE_KIND, b"a", b"c"),
    ]


def test_touches_reports_writes_inside_a_range() -> None:
    batch = WriteBatch()
    batch.put(b"m", b"")
    assert batch.touches(b"a", b"z")
    assert not batch.touches(b"n", b"z")
    assert not batch.touches(b"a", b"m")
    deletes = WriteBatch()
    deletes.delete_range(b"c", b"f")
    assert deletes.touches(b"e", b"g")
    assert deletes.touches(b"a", b"d")
    assert not deletes.touches(b"f", b"g")
    assert not deletes.touches(b"a", b"c")


def test_prefix_end_bounds_exactly_the_keys_with_the_prefix() -> None:
    assert prefix_end(b"raft/") == b"raft0"
    assert prefix_end(b"a\xff\xff") == b"b"
    with pytest.raises(ValueError):
        prefix_end(b"\xff")
    with pytest.raises(ValueError):
        prefix_end(b"")


# -- reads and writes ---------------------------------------------------------------------------


async def test_get_answers_none_for_a_missing_key(kv: KeyValueStore) -> None:
    assert kv.get(b"missing") is None
    assert everything(kv) == []


async def test_a_put_is_read_back_and_overwritten(kv: KeyValueStore) -> None:
    await kv.write(batch_of((b"k", b"1")), sync=False)
    assert kv.get(b"k") == b"1"
    await kv.write(batch_of((b"k", b"2")), sync=True)
    assert kv.get(b"k") == b"2"
    await kv.write(batch_of((b"empty", b"")), sync=True)
    assert kv.get(b"empty") == b""


async def test_scan_is_in_key_order_over_a_half_open_range(kv: KeyValueStore) -> None:
    await fill(kv, list(reversed(KEYS)))
    assert [key for key, _ in everything(kv)] == sorted(KEYS)
    assert list(kv.scan(b"a", b"b")) == [(b"a", b"va"), (b"a\x00", b"va\x00"), (b"ab", b"vab")]
    assert list(kv.scan_reverse(b"a", b"b")) == [
        (b"ab", b"vab"),
        (b"a\x00", b"va\x00"),
        (b"a", b"va"),
    ]
    assert [key for key, _ in kv.scan(b"", b"a")] == [b"", b"\x00"]
    assert [key for key, _ in kv.scan_reverse(b"\x7f", b"\xff\xff")] == [b"\xff", b"\x7f"]
    assert [key for key, _ in kv.scan(b"\xff", b"\xff\xff\xff")] == [b"\xff", b"\xff\xff"]
    assert [key for key, _ in kv.scan_reverse(b"", b"\xff" * 4)] == sorted(KEYS, reverse=True)


async def test_a_bulk_scan_reads_what_a_scan_reads(kv: KeyValueStore) -> None:
    await fill(kv, KEYS)
    for start, end in [(b"", b"\xff" * 4), (b"a", b"b"), (b"b", b"a")]:
        assert list(kv.scan(start, end, bulk=True)) == list(kv.scan(start, end))


async def test_empty_and_backwards_ranges_scan_nothing(kv: KeyValueStore) -> None:
    await fill(kv, KEYS)
    for start, end in [(b"a", b"a"), (b"b", b"a"), (b"a\x01", b"ab")]:
        assert list(kv.scan(start, end)) == []
        assert list(kv.scan_reverse(start, end)) == []


async def test_a_scan_sees_the_store_as_it_was_when_called(kv: KeyValueStore) -> None:
    await fill(kv, [b"a", b"b", b"c"])
    forward = kv.scan(b"a", b"z")
    backward = kv.scan_reverse(b"a", b"z")
    later = WriteBatch()
    later.delete(b"b")
    later.put(b"bb", b"new")
    later.put(b"c", b"changed")
    await kv.write(later, sync=True)
    assert list(forward) == [(b"a", b"va"), (b"b", b"vb"), (b"c", b"vc")]
    assert list(backward) == [(b"c", b"vc"), (b"b", b"vb"), (b"a", b"va")]
    assert list(kv.scan(b"a", b"z")) == [(b"a", b"va"), (b"bb", b"new"), (b"c", b"changed")]


async def test_operations_of_a_batch_apply_in_order(kv: KeyValueStore) -> None:
    await fill(kv, [b"a", b"b", b"c", b"d"])
    batch = WriteBatch()
    batch.delete_range(b"a", b"z")
    batch.put(b"b", b"back")  # a put after the range delete wins
    batch.put(b"x", b"1")
    batch.delete(b"x")  # a delete after a put wins
    batch.delete(b"y")
    batch.put(b"y", b"2")  # and a put after a delete
    await kv.write(batch, sync=True)
    assert everything(kv) == [(b"b", b"back"), (b"y", b"2")]


async def test_delete_range_removes_exactly_the_half_open_range(kv: KeyValueStore) -> None:
    await fill(kv, KEYS)
    batch = WriteBatch()
    batch.delete_range(b"a", b"b")
    batch.delete_range(b"\x7f", b"\x7f")  # empty: nothing
    batch.delete(b"never-there")
    await kv.write(batch, sync=True)
    assert [key for key, _ in everything(kv)] == [b"", b"\x00", b"b", b"\x7f", b"\xff", b"\xff\xff"]


async def test_an_empty_batch_is_a_no_op(kv: KeyValueStore) -> None:
    await kv.write(WriteBatch(), sync=True)
    await kv.write(WriteBatch(), sync=False)
    assert everything(kv) == []


async def test_an_oversized_batch_is_refused_whole(
    kv: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.kv, "WRITE_BATCH_BYTES_MAX", 100)
    batch = batch_of((b"small", b"x"), (b"big", b"y" * 200))
    with pytest.raises(InvalidWrite, match="over the limit"):
        await kv.write(batch, sync=True)
    assert everything(kv) == []


async def test_a_write_cancelled_before_it_starts_has_no_effect(kv: KeyValueStore) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await kv.write(batch_of((b"k", b"v")), sync=True)
    assert scope.cancelled_caught
    assert kv.get(b"k") is None


async def test_a_write_completes_even_if_cancelled_while_it_syncs(kv: KeyValueStore) -> None:
    async def write() -> None:
        await kv.write(batch_of((b"k", b"v")), sync=True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert kv.get(b"k") == b"v"


async def test_readers_see_all_of_a_batch_or_none_of_it(kv: KeyValueStore) -> None:
    keys_per_batch = 50
    batches = 30
    scans_per_write_max = 20  # a reader that never stops would starve the fsync thread
    observed: list[int] = []
    done = trio.Event()
    write_started = trio.Event()

    async def write_batches() -> None:
        nonlocal write_started
        for round_number in range(batches):
            batch = WriteBatch()
            for key in range(keys_per_batch):
                batch.put(b"k%08d" % (round_number * keys_per_batch + key), b"v" * 100)
            started, write_started = write_started, trio.Event()
            started.set()
            await kv.write(batch, sync=True)
        done.set()
        write_started.set()

    async def read_counts() -> None:
        while not done.is_set():
            waiting_for = write_started
            for _ in range(scans_per_write_max):
                observed.append(sum(1 for _ in kv.scan(b"k", b"l")))
                await trio.lowlevel.checkpoint()
                if waiting_for is not write_started:
                    break  # the next write began: read during it too
            else:
                await waiting_for.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_counts)
        nursery.start_soon(write_batches)
    assert len(observed) >= batches
    assert all(count % keys_per_batch == 0 for count in observed), observed
    assert len(set(observed)) > batches // 2  # it did read between writes, not only at the ends
    assert sum(1 for _ in kv.scan(b"k", b"l")) == keys_per_batch * batches


async def test_concurrent_synced_writes_all_land(backend: Backend) -> None:
    kv = backend.open()

    async def writer(number: int) -> None:
        for round_number in range(5):
            await kv.write(batch_of((b"w%02d-%d" % (number, round_number), b"x")), sync=True)

    async with trio.open_nursery() as nursery:
        for number in range(20):
            nursery.start_soon(writer, number)
    kv = backend.reopen(kv)
    assert len(everything(kv)) == 100


async def test_sync_alone_makes_earlier_writes_durable(backend: Backend) -> None:
    kv = backend.open()
    kv.apply(batch_of((b"a", b"1")))
    assert kv.get(b"a") == b"1"
    await kv.sync()
    await kv.sync()  # nothing new: fine
    kv = backend.reopen(kv)
    assert kv.get(b"a") == b"1"


async def test_a_clean_reopen_keeps_every_write(backend: Backend) -> None:
    kv = backend.open()
    await fill(kv, KEYS)
    deletes = WriteBatch()
    deletes.delete(b"a")
    deletes.delete_range(b"\x7f", b"\xff\xff")
    await kv.write(deletes, sync=True)
    await kv.write(batch_of((b"unsynced", b"kept on a clean close")), sync=False)
    before = everything(kv)
    kv = backend.reopen(kv)
    assert everything(kv) == before
    assert kv.get(b"unsynced") == b"kept on a clean close"
    await kv.write(batch_of((b"after", b"reopen")), sync=True)
    kv = backend.reopen(kv)
    assert kv.get(b"after") == b"reopen"


async def test_a_closed_store_refuses_every_call(kv: KeyValueStore) -> None:
    kv.close()
    kv.close()  # twice is fine
    with pytest.raises(StorageClosed):
        kv.get(b"k")
    with pytest.raises(StorageClosed):
        kv.scan(b"a", b"b")
    with pytest.raises(StorageClosed):
        kv.scan_reverse(b"a", b"b")
    with pytest.raises(StorageClosed):
        kv.apply(batch_of((b"k", b"v")))
    with pytest.raises(StorageClosed):
        await kv.sync()
    with pytest.raises(StorageClosed):
        await kv.write(batch_of((b"k", b"v")), sync=False)


# -- bulk writes -------------------------------------------------------------------------------


async def test_a_bulk_write_is_read_only_after_its_commit(backend: Backend) -> None:
    kv = backend.open()
    await fill(kv, [b"a"])
    writer = kv.bulk_writer()
    for key in (b"b1", b"b2", b"b3"):
        writer.put(key, b"v" + key)
    assert kv.get(b"b1") is None
    assert [key for key, _ in everything(kv)] == [b"a"]
    await writer.commit()
    assert everything(kv) == [(b"a", b"va"), (b"b1", b"vb1"), (b"b2", b"vb2"), (b"b3", b"vb3")]
    kv = backend.reopen(kv)
    assert [key for key, _ in everything(kv)] == [b"a", b"b1", b"b2", b"b3"]


async def test_a_bulk_write_takes_only_ascending_keys(kv: KeyValueStore) -> None:
    writer = kv.bulk_writer()
    writer.put(b"b", b"1")
    for key in (b"b", b"a"):
        with pytest.raises(InvalidWrite, match="keys must ascend"):
            writer.put(key, b"2")
    with pytest.raises(TypeError):
        writer.put("c", b"3")  # type: ignore[arg-type]
    await writer.commit()
    assert everything(kv) == [(b"b", b"1")]


async def test_a_bulk_write_replaces_and_is_replaced_in_write_order(kv: KeyValueStore) -> None:
    await fill(kv, [b"a", b"b"])
    batch = WriteBatch()
    batch.delete_range(b"a", b"z")
    kv.apply(batch)
    writer = kv.bulk_writer()
    writer.put(b"b", b"bulk")
    await writer.commit()
    assert everything(kv) == [(b"b", b"bulk")]  # after the range delete applied before it
    await kv.write(batch_of((b"b", b"later")), sync=False)
    assert everything(kv) == [(b"b", b"later")]


async def test_an_aborted_or_empty_bulk_write_adds_nothing(kv: KeyValueStore) -> None:
    writer = kv.bulk_writer()
    writer.put(b"a", b"1")
    writer.abort()
    writer.abort()
    with pytest.raises(StorageError, match="done"):
        await writer.commit()
    empty = kv.bulk_writer()
    await empty.commit()
    with pytest.raises(StorageError, match="done"):
        empty.put(b"b", b"2")
    empty.abort()  # harmless after commit
    assert everything(kv) == []


async def test_a_bulk_commit_runs_to_its_end_if_cancelled(kv: KeyValueStore) -> None:
    writer = kv.bulk_writer()
    writer.put(b"a", b"1")
    with trio.CancelScope() as scope:
        scope.cancel()
        await writer.commit()
    assert everything(kv) == [(b"a", b"1")]


async def test_a_crash_after_a_bulk_commit_keeps_it_and_every_batch_before_it() -> None:
    kv = MemoryKeyValueStore()
    kv.apply(batch_of((b"before", b"1")))
    writer = kv.bulk_writer()
    writer.put(b"bulk", b"2")
    await writer.commit()
    kv.apply(batch_of((b"after", b"3")))
    kv = kv.crash()
    assert everything(kv) == [(b"before", b"1"), (b"bulk", b"2")]


async def test_a_crash_before_a_bulk_commit_keeps_none_of_it() -> None:
    kv = MemoryKeyValueStore()
    writer = kv.bulk_writer()
    writer.put(b"bulk", b"2")
    kv = kv.crash()
    assert everything(kv) == []
