"""What only the RocksDB store does: its directory, its lock, its engine errors."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from storage.errors import StorageError, StorageLocked
from storage.kv import BULK_DIRECTORY, RocksKeyValueStore, WriteBatch

ROOT = Path(__file__).resolve().parents[2]


def test_opening_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "db"
    store = RocksKeyValueStore(path)
    try:
        assert path.is_dir()
        assert store.path == path
    finally:
        store.close()


def test_a_second_open_in_this_process_is_refused(tmp_path: Path) -> None:
    store = RocksKeyValueStore(tmp_path)
    try:
        with pytest.raises(StorageLocked, match="already open"):
            RocksKeyValueStore(tmp_path)
    finally:
        store.close()
    RocksKeyValueStore(tmp_path).close()  # and allowed once the first is closed


def test_an_open_from_another_process_is_refused(tmp_path: Path) -> None:
    store = RocksKeyValueStore(tmp_path)
    script = (
        "import sys\n"
        "from storage.errors import StorageLocked\n"
        "from storage.kv import RocksKeyValueStore\n"
        "try:\n"
        f"    RocksKeyValueStore({str(tmp_path)!r})\n"
        "except StorageLocked as error:\n"
        "    print('locked:', error)\n"
        "    sys.exit(3)\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
        )
    finally:
        store.close()
    assert result.returncode == 3, result.stderr
    assert "already open" in result.stdout


def test_a_file_where_the_directory_should_be_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"not a database")
    with pytest.raises(StorageError, match="cannot create the store directory"):
        RocksKeyValueStore(path)


async def test_unsynced_writes_survive_a_clean_close(tmp_path: Path) -> None:
    store = RocksKeyValueStore(tmp_path)
    batch = WriteBatch()
    batch.put(b"k", b"v")
    await store.write(batch, sync=False)
    store.close()
    store = RocksKeyValueStore(tmp_path)
    try:
        assert store.get(b"k") == b"v"
    finally:
        store.close()


def block_cache_bytes(store: RocksKeyValueStore) -> int:
    usage = store._open_db().property_int_value("rocksdb.block-cache-usage")
    assert usage is not None
    return usage


def test_bulk_reads_leave_the_block_cache_as_it_was(tmp_path: Path) -> None:
    """A snapshot or a load at start reads the store once; its blocks must not fill the cache
    (issue 13: they stayed resident in every member at the snapshot)."""
    store = RocksKeyValueStore(tmp_path / "kv")
    values = random.Random(13)
    for first in range(0, 4000, 500):
        batch = WriteBatch()
        for key in range(first, first + 500):
            batch.put(b"k%05d" % key, values.randbytes(300))  # incompressible
        store.apply(batch)
    store.close()  # flushed into table files: reads now go through the block cache

    store = RocksKeyValueStore(tmp_path / "kv")  # its check of every block included
    try:
        before = block_cache_bytes(store)
        assert len(list(store.scan(b"k", b"l", bulk=True))) == 4000
        assert block_cache_bytes(store) - before < 64 * 1024
        assert len(list(store.scan(b"k", b"l"))) == 4000
        assert block_cache_bytes(store) - before > 1024 * 1024  # the blocks a plain scan keeps
    finally:
        store.close()


async def test_a_bulk_write_goes_around_the_memtables_and_leaves_no_file(tmp_path: Path) -> None:
    store = RocksKeyValueStore(tmp_path / "kv")
    try:
        writer = store.bulk_writer()
        for key in range(2000):
            writer.put(b"chunk/%05d" % key, bytes(1000))
        await writer.commit()
        memtables = store._open_db().property_int_value("rocksdb.cur-size-all-mem-tables")
        assert memtables is not None and memtables < 256 * 1024  # 2 MB written
        assert len(list(store.scan(b"chunk/", b"chunk0"))) == 2000
        assert list((tmp_path / "kv" / BULK_DIRECTORY).iterdir()) == []
    finally:
        store.close()


def test_a_bulk_write_a_crash_interrupted_is_removed_at_open(tmp_path: Path) -> None:
    RocksKeyValueStore(tmp_path / "kv").close()
    leftover = tmp_path / "kv" / BULK_DIRECTORY / "0.sst"
    leftover.parent.mkdir()
    leftover.write_bytes(b"half a table file")
    RocksKeyValueStore(tmp_path / "kv").close()
    assert not leftover.exists()


async def test_a_batch_applied_during_a_bulk_commit_waits_for_its_own_fsync(
    tmp_path: Path,
) -> None:
    store = RocksKeyValueStore(tmp_path / "kv")
    try:
        writer = store.bulk_writer()
        writer.put(b"chunk", bytes(1000))
        batch = WriteBatch()
        batch.put(b"later", b"v")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.commit)
            while not store._fsync_in_flight:  # the ingest is running, in its thread
                await trio.sleep(0)
            store.apply(batch)
        assert store._synced_batches < store._applied_batches  # not covered by the commit
        await store.sync()
        assert store._synced_batches == store._applied_batches
    finally:
        store.close()
