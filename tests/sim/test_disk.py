"""The simulated disk: synced data survives every crash, unsynced data may not."""

from __future__ import annotations

from random import Random

import pytest
import trio

from sim.disk import SimDisk, SimKeyValueStore
from storage.errors import StorageClosed
from storage.kv import WriteBatch


def batch(*pairs: tuple[bytes, bytes]) -> WriteBatch:
    written = WriteBatch()
    for key, value in pairs:
        written.put(key, value)
    return written


async def test_synced_data_survives_a_crash_and_unsynced_data_is_lost() -> None:
    disk = SimDisk("m1", Random(1))
    await disk.store.write(batch((b"a", b"1")), sync=True)
    await disk.store.write(batch((b"b", b"2")), sync=False)
    disk.store.apply(batch((b"a", b"overwritten"), (b"c", b"3")))
    old = disk.store
    store = disk.crash()
    assert store is disk.store
    assert isinstance(store, SimKeyValueStore)
    assert list(store.scan(b"", b"\xff")) == [(b"a", b"1")]
    with pytest.raises(StorageClosed):
        old.apply(batch((b"z", b"late")))
    assert disk.trace[-1][1] == "crash m1: kept 0 of 2 unsynced batches"


async def test_a_clean_restart_keeps_everything() -> None:
    disk = SimDisk("m1", Random(1))
    await disk.store.write(batch((b"a", b"1")), sync=False)
    store = disk.restart()
    assert store.get(b"a") == b"1"
    await store.write(batch((b"b", b"2")), sync=True)
    assert disk.crash().get(b"b") == b"2"


async def test_torn_writes_keep_a_prefix_of_whole_batches_chosen_by_the_seed() -> None:
    outcomes: set[tuple[tuple[bytes, bytes], ...]] = set()
    for seed in range(40):
        disk = SimDisk("m1", Random(seed), torn_writes=True)
        await disk.store.write(batch((b"synced", b"yes")), sync=True)
        for number in range(3):
            disk.store.apply(batch((b"k%d" % number, b"a"), (b"l%d" % number, b"b")))
        survivors = tuple(disk.crash().scan(b"", b"\xff"))
        outcomes.add(survivors)
        assert (b"synced", b"yes") in survivors
        keys = {key for key, _ in survivors}
        for number in range(3):
            # A batch is whole or absent, and never present without the batches before it.
            assert (b"k%d" % number in keys) == (b"l%d" % number in keys)
            if number and b"k%d" % number in keys:
                assert b"k%d" % (number - 1) in keys
    assert len(outcomes) == 4  # nothing, one, two or all three batches kept


async def test_the_seed_decides_what_a_torn_crash_keeps() -> None:
    async def survivors(seed: int) -> list[list[tuple[bytes, bytes]]]:
        disk = SimDisk("m1", Random(seed), torn_writes=True)
        kept = []
        for round_number in range(10):
            disk.store.apply(batch((b"r%d" % round_number, b"v")))
            kept.append(list(disk.crash().scan(b"", b"\xff")))
        return kept

    assert await survivors(5) == await survivors(5)
    assert await survivors(5) != await survivors(6)


async def test_fsyncs_take_virtual_time(autojump_clock: object) -> None:
    disk = SimDisk("m1", Random(2), fsync_latency_s=0.01, fsync_jitter_s=0.02)
    started = trio.current_time()
    await disk.store.write(batch((b"a", b"1")), sync=True)
    took_s = trio.current_time() - started
    assert 0.01 <= took_s < 0.03
    await disk.store.write(batch((b"b", b"2")), sync=False)
    assert trio.current_time() - started == took_s  # no fsync, no time
    assert disk.fsyncs == 1


async def test_a_crash_during_an_fsync_loses_what_it_would_have_synced(
    autojump_clock: object,
) -> None:
    disk = SimDisk("m1", Random(3), fsync_latency_s=1.0)
    async with trio.open_nursery() as nursery:

        async def write_and_sync() -> None:
            with pytest.raises(StorageClosed):
                await disk.store.write(batch((b"a", b"1")), sync=True)

        nursery.start_soon(write_and_sync)
        await trio.sleep(0.5)
        store = disk.crash()
    assert store.get(b"a") is None
