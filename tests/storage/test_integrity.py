"""Bytes flipped in a RocksDB store's files are found when it opens (storage.integrity), and
a torn tail of the write-ahead log, as a crash leaves it, still opens."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from storage.errors import StorageCorrupted
from storage.integrity import WHAT_TO_DO, crc32c, damaged_log_records
from storage.kv import RocksKeyValueStore, WriteBatch

KEYS = 500


def value_of(number: int) -> bytes:
    return b"value-%05d-" % number + b"z" * 100


def write_keys(store: RocksKeyValueStore) -> None:
    for start in range(0, KEYS, 50):
        batch = WriteBatch()
        for number in range(start, start + 50):
            batch.put(b"key-%05d" % number, value_of(number))
        store.apply(batch)
    trio.run(store.sync)


@pytest.fixture
def crashed(tmp_path: Path) -> Iterator[Path]:
    """A store's directory as a crash leaves it: every write synced, all in the log."""
    store = RocksKeyValueStore(tmp_path / "live", fsync_in_thread=False)
    write_keys(store)
    copy = tmp_path / "crashed"
    shutil.copytree(tmp_path / "live", copy)  # taken while it is open: a crash's image
    store.close()
    yield copy


@pytest.fixture
def closed(tmp_path: Path) -> Path:
    """A store's directory after a clean close: the data in a table file."""
    path = tmp_path / "closed"
    store = RocksKeyValueStore(path, fsync_in_thread=False)
    write_keys(store)
    store.close()
    return path


def flip(file: Path, fraction: float) -> None:
    data = bytearray(file.read_bytes())
    data[int(len(data) * fraction)] ^= 0x10
    file.write_bytes(bytes(data))


def the_log(path: Path) -> Path:
    [log] = [log for log in path.glob("*.log") if log.stat().st_size > 0]
    return log


def reads_back(path: Path) -> int:
    store = RocksKeyValueStore(path, fsync_in_thread=False)
    try:
        found = 0
        for number in range(KEYS):
            value = store.get(b"key-%05d" % number)
            if value is not None:
                assert value == value_of(number)
                found += 1
        return found
    finally:
        store.close()


def test_an_untouched_crash_image_opens_with_everything(crashed: Path) -> None:
    assert reads_back(crashed) == KEYS


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.75])
def test_a_log_damaged_before_its_end_is_refused_naming_it(crashed: Path, fraction: float) -> None:
    log = the_log(crashed)
    flip(log, fraction)
    with pytest.raises(StorageCorrupted) as caught:
        RocksKeyValueStore(crashed, fsync_in_thread=False)
    message = str(caught.value)
    assert str(log) in message and "before its end" in message and "at offset" in message
    assert WHAT_TO_DO in message


def test_a_torn_log_tail_opens_with_the_whole_records_before_it(crashed: Path) -> None:
    log = the_log(crashed)
    data = log.read_bytes()
    log.write_bytes(data[:-50])  # the last record cut short, as a crash of the machine can
    found = reads_back(crashed)
    assert KEYS - 50 <= found < KEYS


def test_a_damaged_last_record_is_dropped_with_a_warning(
    crashed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="storage.integrity")
    flip(the_log(crashed), 0.999)
    found = reads_back(crashed)
    assert KEYS - 50 <= found < KEYS  # the last batch (one record) is gone, nothing else
    assert any("ends in a damaged record" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_a_damaged_table_file_is_refused_at_open_naming_it(closed: Path, fraction: float) -> None:
    [table] = list(closed.glob("*.sst"))
    flip(table, fraction)
    with pytest.raises(StorageCorrupted) as caught:
        RocksKeyValueStore(closed, fsync_in_thread=False)
    assert str(table) in str(caught.value) and WHAT_TO_DO in str(caught.value)


@pytest.mark.parametrize("name", ["CURRENT", "MANIFEST"])
def test_damaged_bookkeeping_is_refused_at_open(closed: Path, name: str) -> None:
    [file] = [file for file in closed.iterdir() if file.name.startswith(name)]
    flip(file, 0.5)
    with pytest.raises(StorageCorrupted) as caught:
        RocksKeyValueStore(closed, fsync_in_thread=False)
    assert WHAT_TO_DO in str(caught.value)


def test_without_the_log_check_a_damaged_log_loses_writes_silently(
    crashed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the check exists: RocksDB alone opens the damaged log and drops its tail."""
    flip(the_log(crashed), 0.5)
    monkeypatch.setattr("storage.kv.check_write_ahead_log", lambda path: None)
    assert reads_back(crashed) < KEYS


def test_without_the_manifest_check_a_flipped_length_empties_the_store(
    closed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the MANIFEST check exists: a flipped byte in the length of the record that names
    the table file, and RocksDB opens an empty store without a word."""
    [manifest] = list(closed.glob("MANIFEST-*"))
    data = bytearray(manifest.read_bytes())
    data[last_record_offset(bytes(data)) + 5] ^= 0x10  # the high byte of its length
    manifest.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupted, match="MANIFEST"):
        RocksKeyValueStore(closed, fsync_in_thread=False)
    monkeypatch.setattr("storage.kv.check_manifest", lambda path: None)
    assert reads_back(closed) < KEYS


def last_record_offset(data: bytes) -> int:
    """The offset of the last record that carries a table file (the longest one)."""
    offset, longest, longest_at = 0, -1, 0
    while offset + 7 <= len(data):
        length = int.from_bytes(data[offset + 4 : offset + 6], "little")
        if length > longest:
            longest, longest_at = length, offset
        offset += 7 + length
    return longest_at


def test_the_log_reader_checks_crc32c_as_rocksdb_writes_it(closed: Path) -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    [manifest] = list(closed.glob("MANIFEST-*"))
    data = manifest.read_bytes()
    assert damaged_log_records(data) == []
    assert damaged_log_records(data[:-3]) == [last_record_offset(data)] or damaged_log_records(
        data[:-3]
    )


def test_a_damaged_block_is_refused_on_read_too(closed: Path) -> None:
    """Damage that comes after the open (or an open without the full check) fails the read
    that meets it: RocksDB checks each block's checksum when it reads the block."""
    [table] = list(closed.glob("*.sst"))
    flip(table, 0.1)
    store = RocksKeyValueStore(closed, fsync_in_thread=False, verify_on_open=False)
    try:
        with pytest.raises(StorageCorrupted) as caught:
            for number in range(KEYS):
                store.get(b"key-%05d" % number)
        assert str(table) in str(caught.value) and WHAT_TO_DO in str(caught.value)
        with pytest.raises(StorageCorrupted):
            list(store.scan(b"", b"\xff"))
    finally:
        store.close()
