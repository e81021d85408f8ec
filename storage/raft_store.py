"""A replicated log's durable state over a KeyValueStore, knowing nothing of Raft.

Theory of operation
-------------------

``RaftStore`` keeps three things: a log of ``LogRecord`` (index, term, kind, data), one
``HardStateRecord`` (term, vote, commit) and the latest ``SnapshotRecord`` (index, term, the
configuration as voters and learners, and opaque data). An adapter in ``actors/`` maps the
Raft core's Entry, HardState and Snapshot to these records; nothing here knows what they mean
beyond what any such log obeys: indexes are contiguous, terms never decrease along the log,
and neither the hard state's term nor its commit index goes backwards.

Key layout, under a prefix (``b"raft/"`` by default)::

    log/<index: 8 bytes big-endian>   one LogRecord per index, in index order on disk
    hard_state                        the HardStateRecord
    compacted                         (index, term) of the last record compacted away
    snapshot/meta                     the snapshot's index, term, voters, learners (cbor2),
                                      the length and CRC-32 of its (small) data, and the
                                      number, total size and origin of its chunks
    snapshot/data                     the snapshot's small opaque data, as is
    snapshot/chunk/<index: 8 bytes BE><received: 1 byte><seq: 4 bytes BE>
                                      the snapshot's state, chunk by chunk: each value is
                                      sealed and names its index and sequence number

Snapshot chunks. A snapshot's state is a sequence of opaque chunks, each at most
``SNAPSHOT_CHUNK_BYTES_MAX`` and checked (seal, index, sequence) wherever it is read, so that
no one ever holds a whole snapshot as one value. The chunks of a snapshot are written first,
in as many batches as it takes (``put_snapshot_chunk``, unsynced) or, for the large ones a
member makes or receives, through one bulk write (``snapshot_chunk_writer``: its chunks pass
through neither RocksDB's memtables nor its write-ahead log), under a key set of their own
(index, and whether it was made here or received), which the metadata does not name yet: a
crash meanwhile leaves the current snapshot whole. ``save`` or ``create_snapshot`` then
writes the metadata that names them, in one batch whose fsync also covers the chunks (a crash
keeps a prefix of the batches, never the metadata without its chunks). Older chunk sets stay
until ``drop_snapshot_chunks_below`` (a reader that holds a scan of them, a sender or an
install, keeps its view anyway); opening the store drops every set but the current one.

Every value is sealed (``storage.sealed``: version byte, body, CRC-32) and checked when read:
a record that fails (a checksum, a length, an index that is not the one its key names, a hole
in the log) raises ``StorageCorrupted``, never a record built from bad bytes.

The log holds the records ``(compacted, last]``: ``first_index() == compacted + 1``, and
``term(first_index() - 1)`` answers the compacted record's term, so the record before the
first one can still be matched. A snapshot received from elsewhere (``save`` with a snapshot)
replaces the whole log: compacted and last both become the snapshot's index. A snapshot made
here (``create_snapshot``) leaves the log alone; ``compact`` then drops what it covers.

Invariants, checked on open: ``compacted <= snapshot index <= last`` (only what a snapshot
covers is compacted, and a snapshot covers only records the log has or had), and the first
record on disk is ``compacted + 1``. ``save`` keeps them by refusing entries that would
replace records the snapshot covers (committed records, which a log never rewrites).

Writes and reads
----------------

``save`` is the group commit of one Raft Ready: a snapshot, entries and a hard state in ONE
write batch, with one fsync. Every write method validates first and raises before writing
anything; then it applies its batch, updates this object's view of the log at once (with no
checkpoint in between, so a reader never sees the view and the store disagree), and only then
waits for the fsync, shielded from cancellation. A cancelled call therefore either did nothing
or completes. Reads are synchronous; a read that runs while a save waits for its fsync sees the
saved records (they are applied, just not yet durable). The Raft core reads stable entries only
and keeps the rest in its unstable log, so it does not notice; a caller that must only speak
for durable state waits for ``save`` to return, as the storage actor does.

A cache of the newest records, bounded by ``LOG_CACHE_BYTES_MAX``, answers ``term`` and
``entries`` near the tail (where a leader reads to replicate) without touching the store.
"""

from __future__ import annotations

import itertools
import logging
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cbor2
import trio

from storage.errors import (
    InvalidWrite,
    LogCompacted,
    LogUnavailable,
    SnapshotOutOfDate,
    StorageCorrupted,
)
from storage.kv import BulkWriter, KeyValueStore, WriteBatch, prefix_end
from storage.sealed import U64_MAX, check_u64, seal, unpack_exact, unseal

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = b"raft/"

SNAPSHOT_CHUNK_BYTES_MAX = 4 * 1024 * 1024
"""The largest snapshot chunk (its opaque body); a chunk holds at least one whole record."""

SNAPSHOT_CHUNK_VALUE_BYTES_MAX = SNAPSHOT_CHUNK_BYTES_MAX + 64
"""The largest stored (sealed) chunk value: a body and its header and seal."""

SNAPSHOT_CHUNKS_MAX = 1 << 20
"""The most chunks one snapshot may have."""

LOG_CACHE_BYTES_MAX = 8 * 1024 * 1024
"""The newest log records kept in memory, counted as data plus ``CACHE_RECORD_OVERHEAD_BYTES``."""

CACHE_RECORD_OVERHEAD_BYTES = 128
"""What one cached record costs beyond its data (the objects that hold it)."""

KIND_MAX = 255
"""Kinds are stored in one byte."""


# -- records -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log entry: its position, its term, what kind of payload it has, and the payload."""

    index: int
    term: int
    kind: int
    data: bytes

    def __post_init__(self) -> None:
        check_u64("index", self.index, minimum=1)
        check_u64("term", self.term)
        if type(self.kind) is not int or not 0 <= self.kind <= KIND_MAX:
            raise ValueError(f"kind must be an int in [0, {KIND_MAX}], not {self.kind!r}")
        if type(self.data) is not bytes:
            raise ValueError(f"data must be bytes, not {type(self.data).__name__}")

    def size_bytes(self) -> int:
        """What this record counts against the ``bytes_max`` of ``entries``: its data."""
        return len(self.data)


@dataclass(frozen=True, slots=True)
class HardStateRecord:
    """The state a member must have on disk before it speaks for it."""

    term: int = 0
    vote: int = 0
    commit: int = 0

    def __post_init__(self) -> None:
        check_u64("term", self.term)
        check_u64("vote", self.vote)
        check_u64("commit", self.commit)


def _check_members(name: str, members: object) -> None:
    if type(members) is not tuple:
        raise ValueError(f"{name} must be a tuple, not {type(members).__name__}")
    for member in members:
        check_u64(f"a member of {name}", member)


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    """Where a snapshot sits in the log, and the configuration at that point."""

    index: int
    term: int
    voters: tuple[int, ...]
    learners: tuple[int, ...]

    def __post_init__(self) -> None:
        check_u64("index", self.index, minimum=1)
        check_u64("term", self.term)
        _check_members("voters", self.voters)
        _check_members("learners", self.learners)


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """The state up to ``index`` and the configuration at that point.

    The state is ``chunks`` chunks (``size_bytes`` of sealed values in all) stored under the
    key set of (``index``, ``received``), written before the record (``put_snapshot_chunk``);
    ``data`` is small and opaque (a snapshot with no chunks may keep its whole state there).
    """

    index: int
    term: int
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    data: bytes = b""
    chunks: int = 0
    size_bytes: int = 0
    received: bool = False

    def __post_init__(self) -> None:
        SnapshotMetadata(self.index, self.term, self.voters, self.learners)
        if type(self.data) is not bytes:
            raise ValueError(f"data must be bytes, not {type(self.data).__name__}")
        check_u64("chunks", self.chunks)
        check_u64("size_bytes", self.size_bytes)
        if self.chunks > SNAPSHOT_CHUNKS_MAX:
            raise ValueError(f"{self.chunks} chunks is over the limit of {SNAPSHOT_CHUNKS_MAX}")
        if self.size_bytes > self.chunks * SNAPSHOT_CHUNK_VALUE_BYTES_MAX:
            raise ValueError(f"{self.size_bytes} bytes cannot be in {self.chunks} chunks")
        if type(self.received) is not bool:
            raise ValueError("received must be a bool")

    def metadata(self) -> SnapshotMetadata:
        """Everything but the data."""
        return SnapshotMetadata(self.index, self.term, self.voters, self.learners)


@dataclass(frozen=True, slots=True)
class _StoredSnapshot:
    """A snapshot's metadata as kept in memory, with what checks its data when it is read."""

    metadata: SnapshotMetadata
    data_size_bytes: int
    data_crc: int
    chunks: int = 0
    size_bytes: int = 0
    received: bool = False


# -- encodings ---------------------------------------------------------------------------------

_LOG_HEADER = struct.Struct(">QQB")  # index, term, kind; the data follows
_HARD_STATE = struct.Struct(">QQQ")  # term, vote, commit
_COMPACTED = struct.Struct(">QQ")  # index, term
_INDEX = struct.Struct(">Q")
_CHUNK_KEY = struct.Struct(">QBI")  # index, received, seq
_CHUNK_HEADER = struct.Struct(">QI")  # index, seq; the body follows


def _corrupted(key: bytes, error: Exception) -> StorageCorrupted:
    return StorageCorrupted(f"value of {key!r} is not a valid record: {error}")


def encode_log_record(record: LogRecord) -> bytes:
    """The sealed value of a log record."""
    return seal(_LOG_HEADER.pack(record.index, record.term, record.kind) + record.data)


def decode_log_record(key: bytes, value: bytes, index: int) -> LogRecord:
    """The log record stored under ``key``, which names ``index``.

    Raises:
        StorageCorrupted: the value fails validation or holds another index.
    """
    body = unseal(key, value)
    if len(body) < _LOG_HEADER.size:
        raise StorageCorrupted(f"value of {key!r} is too short for a log record")
    stored_index, term, kind = _LOG_HEADER.unpack_from(body)
    if stored_index != index:
        raise StorageCorrupted(f"log record for index {stored_index} stored under index {index}")
    try:
        return LogRecord(index, term, kind, bytes(body[_LOG_HEADER.size :]))
    except ValueError as error:
        raise _corrupted(key, error) from error


def encode_hard_state(record: HardStateRecord) -> bytes:
    """The sealed value of a hard state."""
    return seal(_HARD_STATE.pack(record.term, record.vote, record.commit))


def decode_hard_state(key: bytes, value: bytes) -> HardStateRecord:
    """A stored hard state.

    Raises:
        StorageCorrupted: the value fails validation.
    """
    term, vote, commit = unpack_exact(key, _HARD_STATE, unseal(key, value))
    return HardStateRecord(term, vote, commit)


def _encode_snapshot_metadata(snapshot: SnapshotRecord) -> bytes:
    body = [
        snapshot.index,
        snapshot.term,
        list(snapshot.voters),
        list(snapshot.learners),
        len(snapshot.data),
        zlib.crc32(snapshot.data),
        snapshot.chunks,
        snapshot.size_bytes,
        snapshot.received,
    ]
    return seal(cbor2.dumps(body))


def _decode_snapshot_metadata(key: bytes, value: bytes) -> _StoredSnapshot:
    try:
        body = cbor2.loads(unseal(key, value))
    except (cbor2.CBORDecodeError, ValueError) as error:
        raise _corrupted(key, error) from error
    if type(body) is not list or len(body) not in (6, 9):
        raise StorageCorrupted(f"value of {key!r} is not snapshot metadata")
    index, term, voters, learners, data_size_bytes, data_crc = body[:6]
    chunks, size_bytes, received = body[6:] if len(body) == 9 else (0, 0, False)
    if type(voters) is not list or type(learners) is not list:
        raise StorageCorrupted(f"value of {key!r} has malformed voters or learners")
    try:
        metadata = SnapshotMetadata(index, term, tuple(voters), tuple(learners))
        check_u64("data size", data_size_bytes)
        check_u64("data checksum", data_crc)
        SnapshotRecord(
            index, term, tuple(voters), tuple(learners), b"", chunks, size_bytes, received
        )
    except ValueError as error:
        raise _corrupted(key, error) from error
    return _StoredSnapshot(metadata, data_size_bytes, data_crc, chunks, size_bytes, received)


def encode_snapshot_chunk(index: int, seq: int, body: bytes) -> bytes:
    """The sealed value of chunk ``seq`` of the snapshot at ``index``: how it is stored and
    how it travels.

    Raises:
        ValueError: the body is over ``SNAPSHOT_CHUNK_BYTES_MAX`` or empty.
    """
    if not 0 < len(body) <= SNAPSHOT_CHUNK_BYTES_MAX:
        raise ValueError(f"a chunk of {len(body)} bytes (limit {SNAPSHOT_CHUNK_BYTES_MAX})")
    return seal(_CHUNK_HEADER.pack(index, seq) + body)


def decode_snapshot_chunk(key: bytes, value: bytes, index: int, seq: int) -> memoryview:
    """The body of a chunk value, checked: its seal, and that it is chunk ``seq`` of the
    snapshot at ``index``.

    Raises:
        StorageCorrupted: it is not (the message names ``key``).
    """
    body = unseal(key, value)
    if len(body) <= _CHUNK_HEADER.size or len(body) - _CHUNK_HEADER.size > SNAPSHOT_CHUNK_BYTES_MAX:
        raise StorageCorrupted(f"value of {key!r} is not a snapshot chunk")
    stored_index, stored_seq = _CHUNK_HEADER.unpack_from(body)
    if (stored_index, stored_seq) != (index, seq):
        raise StorageCorrupted(
            f"value of {key!r} is chunk {stored_seq} of snapshot {stored_index}, "
            f"not chunk {seq} of {index}"
        )
    return body[_CHUNK_HEADER.size :]


# -- the store ---------------------------------------------------------------------------------


class RaftStore:
    """The durable log, hard state and snapshot of one replica, over a KeyValueStore.

    ``RaftStore(kv)`` (or ``RaftStore.open(kv)``) loads and checks what is stored: the hard
    state, the snapshot's metadata, the compaction point, and the first and last index.

    Raises (from the constructor):
        StorageCorrupted: a stored value or an invariant between them fails validation.
    """

    def __init__(self, kv: KeyValueStore, *, prefix: bytes = DEFAULT_PREFIX) -> None:
        self._kv = kv
        self._log_prefix = prefix + b"log/"
        self._log_end = prefix_end(self._log_prefix)
        self._hard_state_key = prefix + b"hard_state"
        self._compacted_key = prefix + b"compacted"
        self._snapshot_meta_key = prefix + b"snapshot/meta"
        self._snapshot_data_key = prefix + b"snapshot/data"
        self._chunk_prefix = prefix + b"snapshot/chunk/"
        self._chunk_end = prefix_end(self._chunk_prefix)

        self._hard_state = self._load_hard_state()
        self._snapshot = self._load_snapshot_metadata()
        self._drop_stray_chunks()
        self._compacted_index, self._compacted_term = self._load_compacted()
        self._last_index = self._load_last_index()
        # The newest records: _cache[i] for i in [_cache_first, _last_index], or none.
        self._cache: dict[int, LogRecord] = {}
        self._cache_first = self._last_index + 1
        self._cache_bytes = 0

    @classmethod
    def open(cls, kv: KeyValueStore, *, prefix: bytes = DEFAULT_PREFIX) -> RaftStore:
        """Load the store kept in ``kv`` under ``prefix`` (empty if nothing is there)."""
        return cls(kv, prefix=prefix)

    # -- loading

    def _load_hard_state(self) -> HardStateRecord | None:
        value = self._kv.get(self._hard_state_key)
        if value is None:
            return None
        return decode_hard_state(self._hard_state_key, value)

    def _load_snapshot_metadata(self) -> _StoredSnapshot | None:
        value = self._kv.get(self._snapshot_meta_key)
        if value is None:
            return None
        return _decode_snapshot_metadata(self._snapshot_meta_key, value)

    def _load_compacted(self) -> tuple[int, int]:
        key = self._compacted_key
        value = self._kv.get(key)
        if value is None:
            return 0, 0  # nothing compacted yet (a local snapshot may exist)
        index, term = unpack_exact(key, _COMPACTED, unseal(key, value))
        snapshot = self._snapshot
        if snapshot is None or index > snapshot.metadata.index:
            raise StorageCorrupted(f"log compacted through {index}, beyond any stored snapshot")
        if index == snapshot.metadata.index and term != snapshot.metadata.term:
            raise StorageCorrupted(
                f"compacted record {index} has term {term}, the snapshot there term "
                f"{snapshot.metadata.term}"
            )
        return index, term

    def _load_last_index(self) -> int:
        first = next(self._kv.scan(self._log_prefix, self._log_end), None)
        last = next(self._kv.scan_reverse(self._log_prefix, self._log_end), None)
        if first is None or last is None:
            last_index = self._compacted_index
        else:
            first_record = self._decode_log_entry(*first)
            if first_record.index != self._compacted_index + 1:
                raise StorageCorrupted(
                    f"the log starts at {first_record.index}, but is compacted through "
                    f"{self._compacted_index}"
                )
            last_index = self._decode_log_entry(*last).index
        if last_index < self._snapshot_index():
            raise StorageCorrupted(
                f"the log ends at {last_index}, before the snapshot at {self._snapshot_index()}"
            )
        return last_index

    def _snapshot_index(self) -> int:
        return 0 if self._snapshot is None else self._snapshot.metadata.index

    # -- keys and decoding

    def _log_key(self, index: int) -> bytes:
        return self._log_prefix + _INDEX.pack(index)

    def _log_key_after(self, index: int) -> bytes:
        return self._log_key(index + 1) if index < U64_MAX else self._log_end

    def _decode_log_entry(self, key: bytes, value: bytes) -> LogRecord:
        suffix = key[len(self._log_prefix) :]
        if not key.startswith(self._log_prefix) or len(suffix) != _INDEX.size:
            raise StorageCorrupted(f"{key!r} is not a log key")
        (index,) = _INDEX.unpack(suffix)
        return decode_log_record(key, value, index)

    def _read_record(self, index: int) -> LogRecord:
        key = self._log_key(index)
        value = self._kv.get(key)
        if value is None:
            raise StorageCorrupted(
                f"log record {index} is missing (the log holds "
                f"({self._compacted_index}, {self._last_index}])"
            )
        return decode_log_record(key, value, index)

    # -- reads

    def hard_state(self) -> HardStateRecord | None:
        """The hard state saved last, or None if none was ever saved."""
        return self._hard_state

    def snapshot_metadata(self) -> SnapshotMetadata | None:
        """The latest snapshot without its data, or None if there is no snapshot."""
        return None if self._snapshot is None else self._snapshot.metadata

    def snapshot(self) -> SnapshotRecord | None:
        """The latest snapshot, its data read from the store and checked; None if none.

        Raises:
            StorageCorrupted: the data is missing or fails its length or checksum.
        """
        stored = self._snapshot
        if stored is None:
            return None
        meta = stored.metadata
        if stored.chunks:
            return SnapshotRecord(
                meta.index, meta.term, meta.voters, meta.learners, b"",
                stored.chunks, stored.size_bytes, stored.received,
            )  # fmt: skip
        key = self._snapshot_data_key
        data = self._kv.get(key)
        if data is None:
            raise StorageCorrupted(f"snapshot data {key!r} is missing")
        if len(data) != stored.data_size_bytes or zlib.crc32(data) != stored.data_crc:
            raise StorageCorrupted(f"snapshot data {key!r} fails its length or checksum")
        return SnapshotRecord(meta.index, meta.term, meta.voters, meta.learners, data)

    # -- snapshot chunks

    def _chunk_key(self, index: int, received: bool, seq: int) -> bytes:
        return self._chunk_prefix + _CHUNK_KEY.pack(index, int(received), seq)

    def _chunk_set_end(self, index: int, received: bool) -> bytes:
        """The key after every chunk of the set (index, received)."""
        if received:
            return self._chunk_key(index + 1, False, 0) if index < U64_MAX else self._chunk_end
        return self._chunk_key(index, True, 0)

    def snapshot_chunks(
        self, index: int, received: bool, chunks: int
    ) -> Iterator[tuple[int, memoryview, bytes]]:
        """``(seq, body, sealed value)`` of each chunk of the set (index, received), checked
        as it is read; the set is read as it is now (a scan made at the call), whatever
        happens to it while the iterator is consumed.

        Raises (while iterating):
            StorageCorrupted: a chunk fails its checks, is missing, or there are more than
                ``chunks`` (the message names the key).
        """
        start = self._chunk_key(index, received, 0)
        scan = self._kv.scan(start, self._chunk_set_end(index, received), bulk=True)
        return self._checked_chunks(scan, index, received, chunks)

    def _checked_chunks(
        self, scan: Iterator[tuple[bytes, bytes]], index: int, received: bool, chunks: int
    ) -> Iterator[tuple[int, memoryview, bytes]]:
        seq = 0
        for key, value in scan:
            expected = self._chunk_key(index, received, seq)
            if key != expected or seq >= chunks:
                missing = expected if seq < chunks else key
                raise StorageCorrupted(f"snapshot chunk {missing!r} is missing or extra")
            yield seq, decode_snapshot_chunk(key, value, index, seq), value
            seq += 1
        if seq != chunks:
            key = self._chunk_key(index, received, seq)
            raise StorageCorrupted(f"snapshot chunk {key!r} is missing")

    def put_snapshot_chunk(self, index: int, received: bool, seq: int, value: bytes) -> None:
        """Store one sealed chunk (``encode_snapshot_chunk``) of a snapshot not yet saved;
        unsynced: the save that names the snapshot fsyncs it.

        Raises:
            StorageCorrupted: the value is not chunk ``seq`` of ``index`` (names the key).
            InvalidWrite: that set is the current snapshot's.
        """
        check_u64("index", index, minimum=1)
        if seq >= SNAPSHOT_CHUNKS_MAX:
            raise InvalidWrite(f"chunk {seq} is over the limit of {SNAPSHOT_CHUNKS_MAX} chunks")
        self._check_not_current(index, received)
        key = self._chunk_key(index, received, seq)
        decode_snapshot_chunk(key, value, index, seq)
        batch = WriteBatch()
        batch.put(key, value)
        self._kv.apply(batch)

    def snapshot_chunk_writer(self, index: int, received: bool) -> SnapshotChunkWriter:
        """A writer of the chunks of the set (index, received), in order from 0, added at once
        and durably by its commit (``KeyValueStore.bulk_writer``); clear the set first.

        Raises:
            InvalidWrite: that set is the current snapshot's.
        """
        check_u64("index", index, minimum=1)
        self._check_not_current(index, received)
        return SnapshotChunkWriter(self, index, received, self._kv.bulk_writer())

    def clear_snapshot_chunks(self, index: int, received: bool) -> None:
        """Drop the chunks of the set (index, received), which must not be the current one's
        (unsynced: a crash may bring them back, unnamed)."""
        self._check_not_current(index, received)
        batch = WriteBatch()
        batch.delete_range(
            self._chunk_key(index, received, 0), self._chunk_set_end(index, received)
        )
        self._kv.apply(batch)

    def drop_snapshot_chunks_below(self, index: int) -> None:
        """Drop every chunk set of a snapshot below ``index`` but the current one's
        (unsynced: harmless if lost)."""
        stored = self._snapshot
        current = None if stored is None else (stored.metadata.index, stored.received)
        batch = WriteBatch()
        if current is None or current[0] >= index:
            batch.delete_range(self._chunk_prefix, self._chunk_key(index, False, 0))
        else:
            batch.delete_range(self._chunk_prefix, self._chunk_key(*current, 0))
            batch.delete_range(self._chunk_set_end(*current), self._chunk_key(index, False, 0))
        self._kv.apply(batch)

    def _drop_stray_chunks(self) -> None:
        """At open: every chunk set but the current snapshot's is a leftover."""
        first = next(self._kv.scan(self._chunk_prefix, self._chunk_end), None)
        if first is None:
            return
        batch = WriteBatch()
        stored = self._snapshot
        if stored is None or not stored.chunks:
            batch.delete_range(self._chunk_prefix, self._chunk_end)
        else:
            index, received = stored.metadata.index, stored.received
            batch.delete_range(self._chunk_prefix, self._chunk_key(index, received, 0))
            batch.delete_range(self._chunk_set_end(index, received), self._chunk_end)
        self._kv.apply(batch)

    def _check_not_current(self, index: int, received: bool) -> None:
        stored = self._snapshot
        if stored is not None and (stored.metadata.index, stored.received) == (index, received):
            raise InvalidWrite(f"chunks of snapshot {index} are the current snapshot's")

    def _check_chunks_written(self, snapshot: SnapshotRecord) -> None:
        """The first and the last chunk a snapshot names are in the store."""
        if not snapshot.chunks:
            return
        for seq in (0, snapshot.chunks - 1):
            key = self._chunk_key(snapshot.index, snapshot.received, seq)
            if self._kv.get(key) is None:
                raise InvalidWrite(f"snapshot {snapshot.index} names chunk {key!r}, not written")

    def first_index(self) -> int:
        """The index of the first record in the log (``last_index() + 1`` when it is empty)."""
        return self._compacted_index + 1

    def last_index(self) -> int:
        """The index of the last record (the compaction point when the log is empty)."""
        return self._last_index

    def term(self, index: int) -> int:
        """The term of the record at ``index``; ``first_index() - 1`` is answered too.

        Raises:
            LogCompacted: ``index`` is below ``first_index() - 1``.
            LogUnavailable: ``index`` is past ``last_index()``.
            StorageCorrupted: the record is missing or fails validation.
        """
        if index < self._compacted_index:
            raise LogCompacted(f"index {index} is compacted (first index {self.first_index()})")
        if index > self._last_index:
            raise LogUnavailable(f"index {index} is past the last index {self._last_index}")
        if index == self._compacted_index:
            return self._compacted_term
        record = self._cache.get(index)
        if record is None:
            record = self._read_record(index)
        return record.term

    def entries(self, low: int, high: int, bytes_max: int) -> list[LogRecord]:
        """The records ``[low, high)``, stopping before the one that would take their data past
        ``bytes_max`` bytes; at least one record when ``low < high``.

        Raises:
            ValueError: ``low > high``.
            LogCompacted: ``low`` is below ``first_index()``.
            LogUnavailable: ``high`` is past ``last_index() + 1``.
            StorageCorrupted: a record is missing or fails validation.
        """
        if low > high:
            raise ValueError(f"entries: low {low} is above high {high}")
        if low < self.first_index():
            raise LogCompacted(f"index {low} is compacted (first index {self.first_index()})")
        if high > self._last_index + 1:
            raise LogUnavailable(f"index {high - 1} is past the last index {self._last_index}")
        records: list[LogRecord] = []
        total_bytes = 0
        for record in self._records(low, high):
            total_bytes += record.size_bytes()
            if records and total_bytes > bytes_max:
                break
            records.append(record)
        return records

    def _records(self, low: int, high: int) -> Iterator[LogRecord]:
        """Records ``[low, high)``: from the store below the cache, then from the cache."""
        cached_from = min(max(low, self._cache_first), high)
        expected = low
        for key, value in self._kv.scan(self._log_key(low), self._log_key(cached_from)):
            record = self._decode_log_entry(key, value)
            if record.index != expected:
                break
            yield record
            expected += 1
        if expected != cached_from:
            raise StorageCorrupted(
                f"log record {expected} is missing (the log holds "
                f"({self._compacted_index}, {self._last_index}])"
            )
        for index in range(cached_from, high):
            yield self._cache[index]

    # -- writes

    async def save(
        self,
        hard_state: HardStateRecord | None,
        entries: Sequence[LogRecord],
        snapshot: SnapshotRecord | None,
        *,
        sync: bool = True,
    ) -> None:
        """Persist what one Raft Ready asks for, in one write batch (one fsync if ``sync``).

        In order: ``snapshot`` replaces the whole log (and must be newer than the one held);
        then ``entries`` replace every record from ``entries[0].index`` on (those below the
        first index are ignored); then ``hard_state`` replaces the hard state.

        Raises:
            SnapshotOutOfDate: ``snapshot`` is not newer than the stored one.
            InvalidWrite: the chunks ``snapshot`` names are not written; or ``entries`` are
                not contiguous, leave a gap after the log, lower
                the term, or would replace records the snapshot covers; or ``hard_state``
                lowers the term or the commit index.
            StorageFailed: the store failed (it takes no more writes).
        """
        batch = WriteBatch()
        if snapshot is not None:
            self._check_snapshot_is_newer(snapshot.index)
            self._check_chunks_written(snapshot)
            self._add_snapshot(batch, snapshot)
            batch.delete_range(self._log_prefix, self._log_end)
            batch.put(self._compacted_key, seal(_COMPACTED.pack(snapshot.index, snapshot.term)))
        appended = self._add_entries(batch, entries, snapshot)
        if hard_state is not None:
            self._check_hard_state(hard_state)
            batch.put(self._hard_state_key, encode_hard_state(hard_state))

        await trio.lowlevel.checkpoint_if_cancelled()
        self._kv.apply(batch)
        if snapshot is not None:
            self._install_snapshot(snapshot)
            self._compacted_index, self._compacted_term = snapshot.index, snapshot.term
            self._last_index = snapshot.index
            self._cache_clear()
        if appended:
            self._cache_truncate(appended[0].index)
            self._last_index = appended[-1].index
            self._cache_append(appended)
        if hard_state is not None:
            self._hard_state = hard_state
        await self._finish(sync=sync and len(batch) > 0)

    def _check_snapshot_is_newer(self, index: int) -> None:
        if self._snapshot is not None and index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(
                f"snapshot at {index} is not newer than the one at {self._snapshot.metadata.index}"
            )

    def _add_snapshot(self, batch: WriteBatch, snapshot: SnapshotRecord) -> None:
        batch.put(self._snapshot_meta_key, _encode_snapshot_metadata(snapshot))
        batch.put(self._snapshot_data_key, snapshot.data)

    def _install_snapshot(self, snapshot: SnapshotRecord) -> None:
        self._snapshot = _StoredSnapshot(
            snapshot.metadata(),
            len(snapshot.data),
            zlib.crc32(snapshot.data),
            snapshot.chunks,
            snapshot.size_bytes,
            snapshot.received,
        )

    def _add_entries(
        self, batch: WriteBatch, entries: Sequence[LogRecord], snapshot: SnapshotRecord | None
    ) -> Sequence[LogRecord]:
        """Add the records to write to ``batch``; return them (``entries`` less the compacted).

        ``snapshot`` is the one of the same save, if any: the log it leaves is empty.
        """
        if snapshot is None:
            compacted_index, compacted_term = self._compacted_index, self._compacted_term
            last_index, snapshot_index = self._last_index, self._snapshot_index()
        else:
            compacted_index, compacted_term = snapshot.index, snapshot.term
            last_index = snapshot_index = snapshot.index
        for previous, record in itertools.pairwise(entries):
            if record.index != previous.index + 1:
                raise InvalidWrite(f"entries are not contiguous: {previous.index}, {record.index}")
            if record.term < previous.term:
                raise InvalidWrite(f"term goes down from {previous.term} at {record.index}")
        if not entries or entries[-1].index <= compacted_index:
            return ()
        appended = entries[max(0, compacted_index + 1 - entries[0].index) :]
        first_new = appended[0].index
        if first_new > last_index + 1:
            raise InvalidWrite(f"entries from {first_new} leave a gap after {last_index}")
        if first_new <= snapshot_index:
            raise InvalidWrite(
                f"entries from {first_new} would replace records the snapshot at "
                f"{snapshot_index} covers"
            )
        previous_term = (
            compacted_term if first_new - 1 == compacted_index else self.term(first_new - 1)
        )
        if appended[0].term < previous_term:
            raise InvalidWrite(
                f"entry {first_new} has term {appended[0].term}, below {previous_term} before it"
            )
        if first_new <= last_index:
            batch.delete_range(self._log_key(first_new), self._log_end)
        for record in appended:
            batch.put(self._log_key(record.index), encode_log_record(record))
        return appended

    def _check_hard_state(self, hard_state: HardStateRecord) -> None:
        current = self._hard_state
        if current is None:
            return
        if hard_state.term < current.term:
            raise InvalidWrite(
                f"hard state term goes down from {current.term} to {hard_state.term}"
            )
        if hard_state.commit < current.commit:
            raise InvalidWrite(
                f"hard state commit goes down from {current.commit} to {hard_state.commit}"
            )

    async def create_snapshot(self, record: SnapshotRecord, *, sync: bool = True) -> None:
        """Store a snapshot made here, of the state at ``record.index`` (an applied index).

        The log is left alone; ``compact`` drops what the snapshot covers.

        Raises:
            SnapshotOutOfDate: ``record`` is not newer than the stored snapshot.
            LogUnavailable: ``record.index`` is past the last index.
            InvalidWrite: ``record.term`` is not the term of the record at its index, or the
                chunks it names are not written.
        """
        self._check_snapshot_is_newer(record.index)
        self._check_chunks_written(record)
        term = self.term(record.index)
        if term != record.term:
            raise InvalidWrite(
                f"snapshot at {record.index} says term {record.term}, the log says {term}"
            )
        batch = WriteBatch()
        self._add_snapshot(batch, record)

        await trio.lowlevel.checkpoint_if_cancelled()
        self._kv.apply(batch)
        self._install_snapshot(record)
        await self._finish(sync=sync)

    async def compact(self, index: int, *, sync: bool = False) -> None:
        """Drop the records up to ``index``, which the snapshot must cover.

        Losing an unsynced compaction in a crash is harmless (the records come back, and the
        compaction point with them), so it does not fsync unless asked.

        Raises:
            LogCompacted: ``index`` is compacted already.
            LogUnavailable: ``index`` is past the last index.
            InvalidWrite: no snapshot covers ``index``.
        """
        if index <= self._compacted_index:
            raise LogCompacted(f"index {index} is compacted already")
        if index > self._last_index:
            raise LogUnavailable(f"index {index} is past the last index {self._last_index}")
        snapshot_index = self._snapshot_index()
        if index > snapshot_index:
            raise InvalidWrite(
                f"cannot compact through {index}: the snapshot is at {snapshot_index}"
            )
        term = self.term(index)
        batch = WriteBatch()
        batch.delete_range(self._log_prefix, self._log_key_after(index))
        batch.put(self._compacted_key, seal(_COMPACTED.pack(index, term)))

        await trio.lowlevel.checkpoint_if_cancelled()
        self._kv.apply(batch)
        self._compacted_index, self._compacted_term = index, term
        self._cache_drop_through(index)
        await self._finish(sync=sync)

    async def _finish(self, *, sync: bool) -> None:
        """Wait for the fsync (if asked), shielded: the batch is applied already.

        Without an fsync, one uncancellable checkpoint: a shielded ``CancelScope`` costs
        several microseconds to enter and leave, on every unsynced save (a follower's commit
        index, say), for the same effect."""
        if sync:
            with trio.CancelScope(shield=True):
                await self._kv.sync()
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()

    # -- the cache of the newest records

    def _cache_clear(self) -> None:
        self._cache.clear()
        self._cache_bytes = 0
        self._cache_first = self._last_index + 1

    def _cache_truncate(self, index: int) -> None:
        """Drop cached records from ``index`` on."""
        cache_end = self._cache_first + len(self._cache)
        if index <= self._cache_first:
            self._cache.clear()
            self._cache_bytes = 0
            self._cache_first = index
            return
        for cached in range(index, cache_end):
            self._cache_bytes -= _cache_cost(self._cache.pop(cached))

    def _cache_append(self, records: Sequence[LogRecord]) -> None:
        """Cache records that follow the cached ones, then evict the oldest over the bound."""
        assert records[0].index == self._cache_first + len(self._cache), (
            records[0].index,
            self._cache_first,
            len(self._cache),
        )
        for record in records:
            self._cache[record.index] = record
            self._cache_bytes += _cache_cost(record)
        while self._cache and self._cache_bytes > LOG_CACHE_BYTES_MAX:
            self._cache_bytes -= _cache_cost(self._cache.pop(self._cache_first))
            self._cache_first += 1
        assert self._cache_first + len(self._cache) == self._last_index + 1

    def _cache_drop_through(self, index: int) -> None:
        """Drop cached records up to ``index`` (compacted away)."""
        while self._cache and self._cache_first <= index:
            self._cache_bytes -= _cache_cost(self._cache.pop(self._cache_first))
            self._cache_first += 1
        if not self._cache:
            self._cache_first = self._last_index + 1


def _cache_cost(record: LogRecord) -> int:
    return len(record.data) + CACHE_RECORD_OVERHEAD_BYTES


class SnapshotChunkWriter:
    """The chunks of one snapshot, in order, as one bulk write (``RaftStore``)."""

    def __init__(
        self, raft_store: RaftStore, index: int, received: bool, writer: BulkWriter
    ) -> None:
        self._raft_store = raft_store
        self._index = index
        self._received = received
        self._writer = writer
        self.chunks = 0
        """How many chunks were put."""

    def put(self, seq: int, value: bytes) -> None:
        """Add chunk ``seq``, the next one, sealed (``encode_snapshot_chunk``).

        Raises:
            StorageCorrupted: the value is not chunk ``seq`` of the snapshot (names the key).
            InvalidWrite: ``seq`` is not the next chunk, or over ``SNAPSHOT_CHUNKS_MAX``.
        """
        if seq != self.chunks:
            raise InvalidWrite(f"chunk {seq} of snapshot {self._index}, not {self.chunks}")
        if seq >= SNAPSHOT_CHUNKS_MAX:
            raise InvalidWrite(f"chunk {seq} is over the limit of {SNAPSHOT_CHUNKS_MAX} chunks")
        key = self._raft_store._chunk_key(self._index, self._received, seq)
        decode_snapshot_chunk(key, value, self._index, seq)
        self._writer.put(key, value)
        self.chunks += 1

    async def commit(self) -> None:
        """Add the chunks put, durably (``BulkWriter.commit``)."""
        self._raft_store._check_not_current(self._index, self._received)
        await self._writer.commit()

    def abort(self) -> None:
        """Add nothing; harmless after commit."""
        self._writer.abort()
