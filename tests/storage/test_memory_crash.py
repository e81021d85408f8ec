"""MemoryKeyValueStore.crash(): a power loss takes back what no sync covered, nothing else."""

from __future__ import annotations

import pytest
import trio

from storage.errors import StorageClosed, StorageError
from storage.kv import MemoryKeyValueStore, WriteBatch


def put(key: bytes, value: bytes) -> WriteBatch:
    batch = WriteBatch()
    batch.put(key, value)
    return batch


def contents(store: MemoryKeyValueStore) -> dict[bytes, bytes]:
    return dict(store.scan(b"", b"\xff"))


async def test_a_crash_loses_unsynced_writes_and_keeps_synced_ones() -> None:
    store = MemoryKeyValueStore()
    await store.write(put(b"synced", b"1"), sync=True)
    await store.write(put(b"unsynced", b"2"), sync=False)
    assert store.unsynced_batch_count == 1
    restarted = store.crash()
    assert contents(restarted) == {b"synced": b"1"}
    assert restarted.unsynced_batch_count == 0


async def test_a_synced_write_makes_the_writes_before_it_durable() -> None:
    store = MemoryKeyValueStore()
    await store.write(put(b"a", b"1"), sync=False)
    await store.write(put(b"b", b"2"), sync=False)
    await store.write(put(b"c", b"3"), sync=True)
    await store.write(put(b"d", b"4"), sync=False)
    assert contents(store.crash()) == {b"a": b"1", b"b": b"2", b"c": b"3"}


async def test_a_crash_takes_back_overwrites_and_deletes() -> None:
    store = MemoryKeyValueStore()
    setup = WriteBatch()
    for key in (b"a", b"b", b"c", b"d"):
        setup.put(key, b"old-" + key)
    await store.write(setup, sync=True)
    before = contents(store)
    changes = WriteBatch()
    changes.put(b"a", b"new")
    changes.delete(b"b")
    changes.delete_range(b"c", b"z")
    changes.put(b"cc", b"created")
    changes.put(b"a", b"newer")
    await store.write(changes, sync=False)
    more = WriteBatch()
    more.delete_range(b"", b"\xff")
    await store.write(more, sync=False)
    assert contents(store) == {}
    assert contents(store.crash()) == before


async def test_a_crash_may_keep_a_prefix_of_the_unsynced_batches() -> None:
    store = MemoryKeyValueStore()
    for number in range(5):
        await store.write(put(b"k%d" % number, b"v"), sync=False)
    restarted = store.crash(keep_unsynced_batches=2)
    assert sorted(contents(restarted)) == [b"k0", b"k1"]
    with pytest.raises(ValueError):
        MemoryKeyValueStore().crash(keep_unsynced_batches=-1)


async def test_the_crashed_store_is_closed_and_the_restarted_one_works() -> None:
    store = MemoryKeyValueStore()
    await store.write(put(b"a", b"1"), sync=True)
    restarted = store.crash()
    with pytest.raises(StorageClosed):
        store.get(b"a")
    with pytest.raises(StorageClosed):
        await store.write(put(b"b", b"2"), sync=True)
    with pytest.raises(StorageClosed):
        store.reopen()
    await restarted.write(put(b"b", b"2"), sync=False)
    assert contents(restarted.crash()) == {b"a": b"1"}


async def test_reopen_after_a_clean_close_keeps_everything() -> None:
    store = MemoryKeyValueStore()
    await store.write(put(b"a", b"1"), sync=False)
    with pytest.raises(StorageError, match="close"):
        store.reopen()
    store.close()
    reopened = store.reopen()
    assert contents(reopened) == {b"a": b"1"}
    assert reopened.unsynced_batch_count == 0
    with pytest.raises(StorageClosed):
        store.reopen()


class SlowDisk(MemoryKeyValueStore):
    """An fsync that lasts until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.fsync_started = trio.Event()
        self.fsync_may_finish = trio.Event()

    async def _wait_for_fsync(self) -> None:
        self.fsync_started.set()
        await self.fsync_may_finish.wait()


async def test_a_sync_cut_short_by_a_crash_syncs_nothing() -> None:
    store = SlowDisk()
    store.apply(put(b"a", b"1"))
    async with trio.open_nursery() as nursery:

        async def sync() -> None:
            with pytest.raises(StorageClosed):
                await store.sync()

        nursery.start_soon(sync)
        await store.fsync_started.wait()
        restarted = store.crash()
        store.fsync_may_finish.set()
    assert contents(restarted) == {}
