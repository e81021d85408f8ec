"""Corruption on disk found when a RocksDB store opens, before anything is served from it.

What RocksDB already finds, and what it does not
------------------------------------------------

Measured by flipping one byte at a time in a member's data directory and starting it
(``tests/process/test_faults_corruption.py``, ``tests/storage/test_integrity.py``):

- ``CURRENT``: the open fails with RocksDB's ``Corruption``. ``MANIFEST-*`` mostly too, but
  not always: a flipped byte in its last record made RocksDB take the record for a torn write
  and open an empty store (every key gone, no error). ``check_manifest`` reads the MANIFEST
  record by record (RocksDB's log format, CRC-32C) and refuses any damaged record, one cut
  short by the end of the file included (a flipped length looks like that).
- ``*.sst`` data blocks: each block has a checksum, verified when the block is read. A member
  reads most of its data at start-up, but not all of it (a block of old Raft log entries, of
  keys nobody reads), so a damaged block could wait to fail a later read.
  ``verify_every_block`` reads every key once at open, so the damage is found then.
- ``*.log``, the write-ahead log, is the gap. The store opens it in point-in-time recovery
  (a crash may tear the last record, and that must not stop the member), and in that mode
  RocksDB treats the first record that fails its checksum as the end of the log: everything
  after it, acknowledged writes included, is dropped without a word, and the member starts
  and answers "key not found" for keys it acknowledged. ``check_write_ahead_log`` opens the
  store read-only first in the strict mode (``tolerate_corrupted_tail_records``: an incomplete
  tail passes, a damaged record fails; C speed). Only when that fails it reads the log itself,
  record by record (RocksDB's log format, CRC-32C, in Python: slow, but only on damage): if an
  intact record follows a damaged one, the log is damaged in the middle and the open is
  refused, naming the file and the offset; if not, only the tail is damaged (as a crash of the
  machine leaves it), and the store opens with that tail dropped and a warning. (Comparing
  RocksDB's own recovery modes does not tell the two apart: its skip-damaged-records mode
  also stopped at a damaged whole record.)
- ``IDENTITY``, ``LOG``, ``OPTIONS-*`` and ``rocksdict-config.json`` hold nothing the store
  reads back; a flip there changes nothing.

Every value troika writes is also sealed (``storage.sealed``: a CRC-32 checked on each read),
which catches what slips past RocksDB (a value written under the wrong key by a bug, the memory
store of the simulator).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

import rocksdict

from storage.errors import StorageCorrupted

logger = logging.getLogger(__name__)

WHAT_TO_DO: Final = (
    "The member's data is damaged; do not start it on this directory. Keep a copy for "
    "diagnosis, then either restore the directory from a backup, or remove the member from "
    "the cluster (etcdctl member remove), add it back (etcdctl member add) and start it "
    "with an empty data directory and --initial-cluster-state existing, so it copies the "
    "data from the leader."
)


def corrupted(what: str) -> StorageCorrupted:
    """A ``StorageCorrupted`` that says what was found and what to do about it."""
    return StorageCorrupted(f"{what} {WHAT_TO_DO}")


def _latest_sequence(path: Path, mode: rocksdict.DBRecoveryMode) -> int:
    """RocksDB's last sequence number after recovering the log in ``mode``, read-only."""
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(False)
    options.set_wal_recovery_mode(mode)
    db = rocksdict.Rdict(str(path), options, access_type=rocksdict.AccessType.read_only())
    try:
        sequence = db.latest_sequence_number()
    finally:
        db.close()
    assert isinstance(sequence, int), sequence
    return sequence


def check_write_ahead_log(path: Path) -> None:
    """Refuse a store whose write-ahead log is damaged before its end (see the module).

    Does nothing for a new store, a store with an empty log, or a store RocksDB cannot open
    read-only for another reason (the real open reports that).

    Raises:
        StorageCorrupted: records can be read after a damaged one; names the log files.
    """
    if not (path / "CURRENT").exists():
        return
    logs = sorted(log for log in path.glob("*.log") if log.stat().st_size > 0)
    if not logs:
        return
    try:
        _latest_sequence(path, rocksdict.DBRecoveryMode.tolerate_corrupted_tail_records())
        return
    except Exception as error:  # rocksdict raises plain Exception
        if not str(error).startswith("Corruption"):
            return
        strict_error = str(error)
    for log in logs:
        data = log.read_bytes()
        if log == logs[-1]:
            damaged_at = damaged_before_the_end(data)
        else:  # records of the next log follow whatever is damaged here
            damaged_at = next(iter(damaged_log_records(data)), None)
        if damaged_at is not None:
            raise corrupted(
                f"The write-ahead log {log} of {path} is damaged at offset {damaged_at}, "
                f"before its end ({strict_error}): recovery would stop there and silently "
                "drop the records after it, acknowledged writes among them."
            )
    logger.warning(
        "the write-ahead log of %s (%s) ends in a damaged record (%s), as a crash of the "
        "machine can leave it; that record is dropped",
        path,
        ", ".join(str(log) for log in logs),
        strict_error,
    )


# -- RocksDB's log format (the MANIFEST, the write-ahead log), checked record by record -----

LOG_BLOCK_BYTES: Final = 32 * 1024
"""RocksDB's log files (the MANIFEST, the write-ahead log) are written in blocks of this size."""
LOG_HEADER_BYTES: Final = 7
"""A record's header: masked CRC-32C (4, little-endian), payload length (2), type (1)."""
RECYCLABLE_HEADER_BYTES: Final = 11
RECYCLABLE_TYPES: Final = frozenset({5, 6, 7, 8})
"""Record types of a recycled log, whose header also holds a log number (4)."""
CRC_MASK_DELTA: Final = 0xA282EAD8


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE: Final = _crc32c_table()


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C (Castagnoli), as RocksDB checksums its log records. Pure Python: used on the
    MANIFEST only, which is small."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _unmask(masked: int) -> int:
    rotated = (masked - CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


def log_records(data: bytes) -> list[tuple[int, bool]]:
    """(offset, intact) of every record of a RocksDB log file, in order.

    A record is damaged when it fails its checksum or its length runs past its block or past
    the end of the file. After a damaged record whose length is plausible the walk goes on
    after it (a flipped payload byte); after one whose length is not, at the next block,
    where a record must begin.
    """
    records: list[tuple[int, bool]] = []
    offset = 0
    while offset < len(data):
        left_in_block = LOG_BLOCK_BYTES - offset % LOG_BLOCK_BYTES
        if left_in_block < LOG_HEADER_BYTES:
            offset += left_in_block  # the block's zero trailer
            continue
        header = data[offset : offset + LOG_HEADER_BYTES]
        if len(header) < LOG_HEADER_BYTES:
            records.append((offset, False))
            break
        masked = int.from_bytes(header[:4], "little")
        length = int.from_bytes(header[4:6], "little")
        kind = header[6]
        if masked == 0 and length == 0 and kind == 0:
            offset += left_in_block  # zero padding (a preallocated or recycled tail)
            continue
        header_bytes = RECYCLABLE_HEADER_BYTES if kind in RECYCLABLE_TYPES else LOG_HEADER_BYTES
        end = offset + header_bytes + length
        if header_bytes + length > left_in_block or end > len(data):
            records.append((offset, False))
            offset += left_in_block
            continue
        covered = data[offset + 6 : end]  # the type byte (and log number), then the payload
        records.append((offset, crc32c(covered) == _unmask(masked)))
        offset = end
    return records


def damaged_log_records(data: bytes) -> list[int]:
    """Offsets of the damaged records of a RocksDB log file (see ``log_records``); a record
    cut short by the end of the file counts (a flipped length looks just like it)."""
    return [offset for offset, intact in log_records(data) if not intact]


def damaged_before_the_end(data: bytes) -> int | None:
    """The offset of the first damaged record that an intact record follows, or None (no
    damage, or damage only in the records at the end, as a torn write leaves them)."""
    first_damaged = None
    for offset, intact in log_records(data):
        if not intact and first_damaged is None:
            first_damaged = offset
        elif intact and first_damaged is not None:
            return first_damaged
    return None


def check_manifest(path: Path) -> None:
    """Refuse a store whose MANIFEST has a damaged record (RocksDB may take a damaged last
    record for a torn write and open without the table files it names: an empty store).

    Raises:
        StorageCorrupted: names the MANIFEST and the offset.
    """
    current = path / "CURRENT"
    if not current.exists():
        return
    name = current.read_text(errors="replace").strip()
    manifest = path / name
    if not name.startswith("MANIFEST-") or not manifest.is_file():
        return  # RocksDB's own open reports a damaged CURRENT
    damaged = damaged_log_records(manifest.read_bytes())
    if damaged:
        raise corrupted(
            f"The MANIFEST of {path} ({manifest}) has damaged records at offsets "
            f"{damaged[:5]}: RocksDB could open without the table files they name."
        )


def verify_every_block(db: rocksdict.Rdict, path: Path) -> int:
    """Read every key once, so RocksDB checks the checksum of every data block; the count.

    Raises:
        StorageCorrupted: a block fails its checksum (RocksDB's message names the file).
    """
    count = 0
    options = rocksdict.ReadOptions()
    # a pass read once: its blocks stay out of the block cache (``KeyValueStore.scan``'s bulk);
    # rocksdict's stub omits the flag the binding takes
    options.fill_cache(False)  # type: ignore[call-arg]
    iterator = db.iter(options)
    iterator.seek_to_first()
    try:
        while iterator.valid():
            count += 1
            iterator.next()
        iterator.status()
    except Exception as error:  # rocksdict raises plain Exception
        raise corrupted(f"Checking every block of {path} at start-up failed: {error}.") from error
    return count
