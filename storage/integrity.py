"""Corruption on disk found when a RocksDB store opens, before anything is served from it.

What RocksDB already finds, and what it does not
------------------------------------------------

Measured by flipping one byte at a time in a member's data directory and starting it
(``tests/process/test_faults_corruption.py``, ``tests/storage/test_integrity.py``):

- ``CURRENT`` and ``MANIFEST-*``: the open fails with RocksDB's ``Corruption`` (its own
  checksums), naming the file.
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
  tail passes, a damaged record fails). When that fails, it compares how far point-in-time
  recovery gets (``latest_sequence_number``) with how far a recovery that skips damaged
  records gets: if records can be read after the damage, the log is damaged in the middle and
  the open is refused; if not, only the tail is damaged (as a crash of the machine leaves it),
  and the store opens with that tail dropped and a warning naming the file.
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
    try:
        kept = _latest_sequence(path, rocksdict.DBRecoveryMode.point_in_time())
        readable = _latest_sequence(path, rocksdict.DBRecoveryMode.skip_any_corrupted_record())
    except Exception:
        return
    names = ", ".join(str(log) for log in logs)
    if readable > kept:
        raise corrupted(
            f"The write-ahead log of {path} ({names}) is damaged before its end "
            f"({strict_error}): recovery would stop at sequence number {kept} and silently "
            f"drop the records up to {readable} after it, acknowledged writes among them."
        )
    logger.warning(
        "the write-ahead log of %s (%s) ends in a damaged record (%s), as a crash of the "
        "machine can leave it; it is dropped, the log is recovered up to sequence number %d",
        path,
        names,
        strict_error,
        kept,
    )


def verify_every_block(db: rocksdict.Rdict, path: Path) -> int:
    """Read every key once, so RocksDB checks the checksum of every data block; the count.

    Raises:
        StorageCorrupted: a block fails its checksum (RocksDB's message names the file).
    """
    count = 0
    iterator = db.iter(rocksdict.ReadOptions())
    iterator.seek_to_first()
    try:
        while iterator.valid():
            count += 1
            iterator.next()
        iterator.status()
    except Exception as error:  # rocksdict raises plain Exception
        raise corrupted(f"Checking every block of {path} at start-up failed: {error}.") from error
    return count
