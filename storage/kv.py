"""An ordered key-value store: one small interface, RocksDB and memory behind it.

Theory of operation
-------------------

Keys and values are ``bytes``; keys sort bytewise. A write is a ``WriteBatch`` of puts, deletes
and range deletes, applied in order and atomically: a reader sees all of a batch or none of it.
Writing has two steps, which the interface keeps apart because durable state built on top
(``RaftStore``, ``AppliedState``) has to update its in-memory view between them:

- ``apply(batch)`` (synchronous): the batch becomes visible to every later read at once. It is
  in the engine's write-ahead log but not yet fsynced: a crash of the machine may lose it.
- ``await sync()``: every batch applied so far is durable when it returns (one fsync). Calls
  that overlap share an fsync where they can (group commit): a sync that finds its batches
  already covered by one that finished while it waited returns without another fsync.

``await write(batch, sync=...)`` is the two together, and is all-or-nothing under cancellation:
it is a cancellation point only before the batch is applied; once applied, it runs to the end
(the fsync, if asked for, is shielded). So a cancelled ``write`` has no effect at all.

Bulk writes. ``bulk_writer()`` takes many records written once (a snapshot's chunks: 34 MB at
100,000 keys) apart from the batches: ``put`` them in ascending key order, then ``await
commit()`` adds them all at once, durable when it returns, together with every batch applied
before it (a crash keeps all of them or none, and never them without an earlier batch). On
RocksDB they go into a table file of their own, which commit ingests, so they pass through
neither the memtables nor the write-ahead log: through ``apply`` they filled the memtables of
every member at once, the whole of a member's peak above etcd's at 100,000 keys (issue 13).

Reads (``get``, ``scan``, ``scan_reverse``) are synchronous and run on the event loop. A scan
sees the store as it was when ``scan`` was called, whatever is written while it is consumed.

Crashes. A clean ``close()`` loses nothing. A crash of the machine loses the batches applied
after the last completed ``sync()``; RocksDB recovers a prefix of its write-ahead log
(point-in-time recovery), so a crash may also keep some of those batches, in order.
``MemoryKeyValueStore.crash`` models exactly that, for the simulator.

The fsync and the event loop (measured)
----------------------------------------

Measured on the development VM (2 vCPUs, ext4 on a virtio disk, other work running), 128-byte
records. A bare rocksdict write with ``sync=True``, inline, 400 writes of one record: p50 0.16
ms, p99 0.29 ms, max 0.7 ms; without sync 0.004 ms; a plain file's fdatasync p50 0.12-0.17 ms.
Through this store (``python -m bench.storage_fsync --writes 1000``; ``loop stall`` is how late
a task sleeping 1 ms at a time wakes while the writes run)::

    fsync   records/write  p50 ms  p99 ms  max ms  writes/s  loop stall max ms
    thread        1         0.45    0.62    2.8     2210        2.1
    thread      100         0.55    0.77    2.6     1498        2.3
    inline        1         0.21    0.89    1.6     4081        1.4
    inline      100         0.54    1.82    3.9     1412        4.2

(An earlier, busier run: inline with 100 records per write reached p99 16.5 ms, max 30 ms,
and stalled the loop 32 ms; the thread mode's stalls stayed under 2 ms.) Inline, the loop
stalls for the whole fsync: about 0.2 ms per synced write on this disk, but the cost is the
disk's (milliseconds on network block storage, ten on a spinning disk, far more when the
device is busy), and a stalled loop delays ticks, heartbeats and every client.

So ``RocksKeyValueStore`` applies batches on the loop (cheap: a memtable insert and an
unsynced log append) and runs only the fsync (``flush_wal(sync=True)``, which releases the
GIL: a thread spinning in Python kept running throughout a 14 ms fsync, its longest pause
0.16 ms) in a worker thread through ``trio.to_thread.run_sync``, one fsync at a time. The
handoff costs 0.1-0.25 ms per fsync here, which group commit spreads over every batch one
fsync covers. ``fsync_in_thread=False`` does the fsync inline instead (for a fast disk, or
to compare). RocksDB documents the one difference between a synced write and a write followed
by ``SyncWAL``: the batch is visible before its fsync completes, which is the contract above.

``MemoryKeyValueStore`` never uses threads (the deterministic simulator runs on it): ``apply``
changes its maps in place and ``sync`` is a single checkpoint.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import rocksdict
import trio

from storage.errors import (
    InvalidWrite,
    StorageClosed,
    StorageCorrupted,
    StorageError,
    StorageFailed,
    StorageLocked,
)
from storage.integrity import (
    check_manifest,
    check_write_ahead_log,
    corrupted,
    verify_every_block,
)
from storage.space import SpaceGuard

logger = logging.getLogger(__name__)

MEMTABLE_BYTES: Final = 8 * 1024 * 1024
"""RocksDB's write buffer (its default is 64 MiB, and two may be held while one flushes).
Every write a member makes (Raft entries, then the applied records) passes through it, so
the memtables were most of the resident-set growth of a member loaded with 100,000 keys
(issue 13: at most etcd's); 8 MiB flushes more often, in RocksDB's background threads."""
MEMTABLES_MAX: Final = 2
BULK_DIRECTORY: Final = "bulk"
"""Under a RocksDB store's directory: the table files of bulk writers not yet committed
(RocksDB leaves subdirectories alone; what a crash left there goes at the next open)."""
WRITE_BATCH_BYTES_MAX = 256 * 1024 * 1024
"""The largest batch ``apply`` accepts, by ``WriteBatch.size_bytes()``."""

OPERATION_OVERHEAD_BYTES = 16
"""What one operation costs beyond its keys and value, in the size estimate of a batch."""


@dataclass(frozen=True, slots=True)
class Put:
    """Set ``key`` to ``value``."""

    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key`` (nothing happens if it is absent)."""

    key: bytes


@dataclass(frozen=True, slots=True)
class DeleteRange:
    """Remove every key in ``[start, end)``."""

    start: bytes
    end: bytes


Operation = Put | Delete | DeleteRange

PUT_KIND: Final = 0
DELETE_KIND: Final = 1
DELETE_RANGE_KIND: Final = 2
RawOperation = tuple[int, bytes, bytes]
"""``(PUT_KIND, key, value)``, ``(DELETE_KIND, key, b"")`` or
``(DELETE_RANGE_KIND, start, end)``."""


def _require_bytes(name: str, value: object) -> None:
    if type(value) is not bytes:
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")


def _check_bulk_put(last: bytes | None, key: bytes, value: bytes) -> None:
    """A bulk writer's record: bytes, its key after ``last``."""
    _require_bytes("key", key)
    _require_bytes("value", value)
    if last is not None and key <= last:
        raise InvalidWrite(f"bulk write of {key!r} after {last!r}: keys must ascend")


class WriteBatch:
    """Puts, deletes and range deletes, applied in the order they were added, atomically.

    A later operation wins over an earlier one on the same key: ``delete_range(a, z)`` then
    ``put(b"m", v)`` leaves ``m`` set. A batch can be applied more than once.

    The operations are held as plain ``(kind, key, value_or_end)`` tuples: a member adds
    several per client write (the log entry, the hard state, the MVCC records) and a frozen
    dataclass per operation cost about 0.9 us to build against 0.1 us for a tuple (issue 13).
    ``__iter__`` still yields ``Put``/``Delete``/``DeleteRange``; the stores read ``raw()``.
    """

    __slots__ = ("_operations", "_size_bytes")

    def __init__(self) -> None:
        self._operations: list[RawOperation] = []
        self._size_bytes = 0

    def put(self, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value``."""
        if type(key) is not bytes or type(value) is not bytes:
            _require_bytes("key", key)
            _require_bytes("value", value)
        self._operations.append((PUT_KIND, key, value))
        self._size_bytes += len(key) + len(value) + OPERATION_OVERHEAD_BYTES

    def delete(self, key: bytes) -> None:
        """Remove ``key``."""
        _require_bytes("key", key)
        self._operations.append((DELETE_KIND, key, b""))
        self._size_bytes += len(key) + OPERATION_OVERHEAD_BYTES

    def delete_range(self, start: bytes, end: bytes) -> None:
        """Remove every key in ``[start, end)``.

        Raises:
            ValueError: ``start`` sorts after ``end``.
        """
        _require_bytes("start", start)
        _require_bytes("end", end)
        if start > end:
            raise ValueError(f"delete_range start {start!r} sorts after end {end!r}")
        self._operations.append((DELETE_RANGE_KIND, start, end))
        self._size_bytes += len(start) + len(end) + OPERATION_OVERHEAD_BYTES

    def __len__(self) -> int:
        return len(self._operations)

    def __iter__(self) -> Iterator[Operation]:
        for kind, first, second in self._operations:
            if kind == PUT_KIND:
                yield Put(first, second)
            elif kind == DELETE_KIND:
                yield Delete(first)
            else:
                yield DeleteRange(first, second)

    def raw(self) -> list[RawOperation]:
        """The operations as ``(kind, key, value_or_end)`` tuples, in order (not a copy: the
        caller must not change it)."""
        return self._operations

    def size_bytes(self) -> int:
        """An estimate of the batch's size: its keys and values plus a small cost per operation."""
        return self._size_bytes

    def touches(self, start: bytes, end: bytes) -> bool:
        """Whether any operation writes or deletes a key in ``[start, end)``."""
        for kind, first, second in self._operations:
            if kind == DELETE_RANGE_KIND:
                if first < second and first < end and start < second:
                    return True
            elif start <= first < end:
                return True
        return False


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with ``prefix``.

    So ``scan(prefix, prefix_end(prefix))`` visits exactly the keys with that prefix.

    Raises:
        ValueError: the prefix is empty or all ``0xff`` bytes (no such key exists).
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        raise ValueError(f"no key bounds the prefix {prefix!r}")
    return stripped[:-1] + bytes([stripped[-1] + 1])


def check_batch_size(batch: WriteBatch) -> None:
    """Refuse a batch larger than ``WRITE_BATCH_BYTES_MAX``.

    Raises:
        InvalidWrite: the batch is too large.
    """
    if batch.size_bytes() > WRITE_BATCH_BYTES_MAX:
        raise InvalidWrite(
            f"write batch of {batch.size_bytes()} bytes is over the limit of "
            f"{WRITE_BATCH_BYTES_MAX} bytes"
        )


class KeyValueStore(Protocol):
    """An ordered byte store with atomic batches and explicit durability (see the module)."""

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None."""
        ...

    def scan(
        self, start: bytes, end: bytes, *, bulk: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` for every key in ``[start, end)``, in ascending key order, as the
        store was at the call.

        ``bulk``: a pass over much of the store that reads each record once (a snapshot, a
        load at start): its blocks stay out of the engine's block cache, which would otherwise
        grow by what the pass read and keep it (issue 13: about 8 MiB of a member's peak at
        100,000 keys) while evicting what the member reads again (the log's tail).
        """
        ...

    def scan_reverse(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The same pairs as ``scan(start, end)``, in descending key order."""
        ...

    def apply(self, batch: WriteBatch) -> None:
        """Apply the batch atomically; visible at once, durable only after ``sync()``.

        Raises:
            InvalidWrite: the batch is over ``WRITE_BATCH_BYTES_MAX``; nothing was applied.
            StorageFailed: the engine failed; the store takes no more writes.
        """
        ...

    async def sync(self) -> None:
        """Make every batch applied so far durable (fsync).

        Raises:
            StorageFailed: the fsync failed; the store takes no more writes.
        """
        ...

    async def write(self, batch: WriteBatch, *, sync: bool) -> None:
        """``apply(batch)``, then ``sync()`` if asked; all or nothing under cancellation."""
        ...

    def close(self) -> None:
        """Make everything durable and release the store; later calls raise StorageClosed."""
        ...

    def bulk_writer(self) -> BulkWriter:
        """A writer of records added at once by its ``commit`` (see "Bulk writes")."""
        ...

    def size_bytes(self) -> tuple[int, int]:
        """(the store's size, the part of it holding live data), in bytes: estimates, for
        status reports (etcd's ``dbSize`` and ``dbSizeInUse``)."""
        ...


class BulkWriter(Protocol):
    """Records for one ``commit``; a writer is used once (see the module, "Bulk writes")."""

    def put(self, key: bytes, value: bytes) -> None:
        """Add a record, its key after every key put before; not readable before ``commit``.

        Raises:
            InvalidWrite: the key does not sort after the last one; nothing was added.
            StorageFailed: the engine failed (a full disk); the store takes no more writes.
        """
        ...

    async def commit(self) -> None:
        """Add every record put to the store, all at once and durably, with every batch
        applied before the call; the writer is done. All or nothing under cancellation: not
        cancellable once begun.

        Raises:
            StorageFailed: the engine failed; nothing was added, and the store takes no more
                writes.
        """
        ...

    def abort(self) -> None:
        """Drop what was put (nothing is added); harmless after ``commit`` or twice."""
        ...


async def write_then_sync(store: KeyValueStore, batch: WriteBatch, *, sync: bool) -> None:
    """The ``write`` of both implementations: cancellable only before the batch is applied."""
    await trio.lowlevel.checkpoint_if_cancelled()
    store.apply(batch)
    if sync:
        with trio.CancelScope(shield=True):
            await store.sync()
    else:
        await trio.lowlevel.cancel_shielded_checkpoint()


# -- RocksDB -----------------------------------------------------------------------------------


def _engine_error(error: Exception, action: str, path: Path) -> StorageError:
    """Our error for an exception raised by rocksdict (which raises plain ``Exception``)."""
    message = str(error)
    if message.startswith("Corruption"):
        return corrupted(f"{action} {path}: {message}.")
    if "No space left on device" in message:
        return StorageFailed(
            f"{action} {path}: the disk is full ({message}). Free space on that file system "
            "and start the member again: what it acknowledged is in its write-ahead log."
        )
    return StorageFailed(f"{action} {path}: {message}")


class RocksKeyValueStore:
    """A ``KeyValueStore`` on RocksDB (rocksdict, raw bytes mode), in directory ``path``.

    Batches are applied on the event loop; fsyncs run in a worker thread unless
    ``fsync_in_thread`` is False (see the module docstring for why, and the measurement).

    Raises (from the constructor):
        StorageLocked: the directory is open already, in this process or another.
        StorageError: the path cannot be made a directory, or RocksDB cannot open it.
        StorageCorrupted: corruption found while opening: RocksDB's checks, a write-ahead
            log damaged before its end, a data block failing its checksum when every key is
            read once (``verify_on_open``; see ``storage.integrity``). The message names the
            file and says what to do.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fsync_in_thread: bool = True,
        space: SpaceGuard | None = None,
        verify_on_open: bool = True,
    ) -> None:
        self._path = Path(path)
        self._fsync_in_thread = fsync_in_thread
        self.space = space if space is not None else SpaceGuard.from_environment(self._path)
        """When new client writes must be refused for want of room (``storage.space``)."""
        try:
            self._path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(
                f"cannot create the store directory {self._path}: {error}"
            ) from error
        check_manifest(self._path)
        check_write_ahead_log(self._path)
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_wal_recovery_mode(rocksdict.DBRecoveryMode.point_in_time())
        options.set_write_buffer_size(MEMTABLE_BYTES)
        options.set_max_write_buffer_number(MEMTABLES_MAX)
        try:
            self._db: rocksdict.Rdict | None = rocksdict.Rdict(str(self._path), options)
        except Exception as error:  # rocksdict raises plain Exception; we re-raise typed
            message = str(error)
            if not message.startswith("Corruption") and "/LOCK" in message:
                raise StorageLocked(
                    f"the store {self._path} is already open (in this process or another): {error}"
                ) from error
            raise _engine_error(error, "cannot open the store", self._path) from error
        if verify_on_open:
            try:
                verify_every_block(self._db, self._path)
            except StorageCorrupted:
                self._db.close()
                raise
        self._write_options = rocksdict.WriteOptions()
        self._write_options.sync = False
        self._bulk_files = itertools.count()
        _remove_bulk_leftovers(self._path / BULK_DIRECTORY)
        self._sync_lock = trio.Lock()
        self._fsync_limiter = trio.CapacityLimiter(1)
        self._applied_batches = 0
        self._synced_batches = 0
        self._fsync_in_flight = False
        self._failed = False
        self._failure = ""

    @property
    def path(self) -> Path:
        """The store's directory."""
        return self._path

    def size_bytes(self) -> tuple[int, int]:
        db = self._open_db()
        memtables = db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        files = db.property_int_value("rocksdb.total-sst-files-size") or 0
        live = db.property_int_value("rocksdb.estimate-live-data-size") or 0
        return files + memtables, min(files, live) + memtables

    def defragment(self) -> None:
        """Compact every level now, giving back the space of deleted and overwritten records
        (etcd's Defragment). It runs on the calling thread and blocks the event loop meanwhile,
        as etcd's defragmentation blocks the member's reads and writes."""
        self._writable_db().compact_range(None, None)

    def _open_db(self) -> rocksdict.Rdict:
        if self._db is None:
            raise StorageClosed(f"the store {self._path} is closed")
        return self._db

    def _writable_db(self) -> rocksdict.Rdict:
        db = self._open_db()
        if self._failed:
            raise StorageFailed(
                f"the store {self._path} failed earlier and takes no writes: {self._failure}"
            )
        return db

    def get(self, key: bytes) -> bytes | None:
        db = self._open_db()
        try:
            value = db.get(key)
        except Exception as error:  # rocksdict raises plain Exception; we re-raise typed
            raise _engine_error(error, "cannot read from", self._path) from error
        assert value is None or isinstance(value, bytes), type(value)
        return value

    def scan(
        self, start: bytes, end: bytes, *, bulk: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        db = self._open_db()
        if start >= end:
            return iter(())
        options = rocksdict.ReadOptions()
        if bulk:
            # rocksdict's stub omits the flag the binding takes
            options.fill_cache(False)  # type: ignore[call-arg]
        options.set_iterate_upper_bound(end)
        iterator = db.iter(options)  # created now, so the scan sees the store as of now
        iterator.seek(start)
        return self._forward(iterator, end)

    def scan_reverse(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        db = self._open_db()
        if start >= end:
            return iter(())
        iterator = db.iter()
        iterator.seek_for_prev(end)
        return self._backward(iterator, start, end)

    def _forward(self, iterator: rocksdict.RdictIter, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        while iterator.valid():
            key = iterator.key()
            if key >= end:
                break
            yield key, iterator.value()
            iterator.next()
        self._check_iterator(iterator)

    def _backward(
        self, iterator: rocksdict.RdictIter, start: bytes, end: bytes
    ) -> Iterator[tuple[bytes, bytes]]:
        if iterator.valid() and iterator.key() >= end:
            iterator.prev()
        while iterator.valid():
            key = iterator.key()
            if key < start:
                break
            yield key, iterator.value()
            iterator.prev()
        self._check_iterator(iterator)

    def _check_iterator(self, iterator: rocksdict.RdictIter) -> None:
        try:
            iterator.status()
        except Exception as error:  # rocksdict raises plain Exception; we re-raise typed
            raise _engine_error(error, "cannot scan", self._path) from error

    def apply(self, batch: WriteBatch) -> None:
        db = self._writable_db()
        check_batch_size(batch)
        if not len(batch):
            return
        rocks_batch = rocksdict.WriteBatch(raw_mode=True)
        for kind, first, second in batch.raw():
            if kind == PUT_KIND:
                rocks_batch.put(first, second)
            elif kind == DELETE_KIND:
                rocks_batch.delete(first)
            elif first < second:
                rocks_batch.delete_range(first, second)
        try:
            db.write(rocks_batch, self._write_options)
        except Exception as error:  # rocksdict raises plain Exception; we re-raise typed
            raise self._fail(_engine_error(error, "cannot write to", self._path)) from error
        self._applied_batches += 1

    async def sync(self) -> None:
        self._writable_db()
        target = self._applied_batches
        async with self._sync_lock:
            db = self._writable_db()
            if self._synced_batches >= target:
                return  # an fsync that finished while we waited covered our batches
            reached = self._applied_batches
            self._fsync_in_flight = True
            try:
                if self._fsync_in_thread:
                    # nondeterminism-ok: the RocksDB store only; the simulator runs the memory one
                    await trio.to_thread.run_sync(db.flush_wal, True, limiter=self._fsync_limiter)
                else:
                    db.flush_wal(True)
            except Exception as error:  # rocksdict raises plain Exception; we re-raise typed
                raise self._fail(_engine_error(error, "cannot fsync", self._path)) from error
            finally:
                self._fsync_in_flight = False
            self._synced_batches = reached

    async def write(self, batch: WriteBatch, *, sync: bool) -> None:
        await write_then_sync(self, batch, sync=sync)

    def bulk_writer(self) -> BulkWriter:
        self._writable_db()
        directory = self._path / BULK_DIRECTORY
        try:
            directory.mkdir(exist_ok=True)
        except OSError as error:
            raise self._fail(_engine_error(error, "cannot write to", directory)) from error
        return _RocksBulkWriter(self, directory / f"{next(self._bulk_files)}.sst")

    async def _ingest(self, writer: rocksdict.SstFileWriter | None, path: Path) -> None:
        """A bulk commit: fsync the batches applied so far, then finish the table file and
        ingest it (RocksDB moves it in, fsyncs it and records it in its manifest), off the
        event loop as the fsync is, and one at a time with the fsyncs (``close`` waits for
        neither). Batches applied meanwhile are not covered: their own sync is."""
        with trio.CancelScope(shield=True):
            try:
                await self.sync()
                if writer is not None:  # else nothing was put
                    async with self._sync_lock:
                        await self._finish_and_ingest(writer, path)
            finally:
                path.unlink(missing_ok=True)  # a hard link once ingested: only the name goes

    async def _finish_and_ingest(self, writer: rocksdict.SstFileWriter, path: Path) -> None:
        db = self._writable_db()

        def finish_and_ingest() -> None:
            writer.finish()
            options = rocksdict.IngestExternalFileOptions()
            options.set_move_files(True)
            db.ingest_external_file([str(path)], options)

        self._fsync_in_flight = True
        try:
            if self._fsync_in_thread:
                # nondeterminism-ok: the RocksDB store only; the simulator runs the memory one
                await trio.to_thread.run_sync(finish_and_ingest, limiter=self._fsync_limiter)
            else:
                finish_and_ingest()
        except Exception as error:  # rocksdict raises plain Exception; we re-raise typed
            raise self._fail(_engine_error(error, "cannot ingest into", self._path)) from error
        finally:
            self._fsync_in_flight = False

    def _fail(self, error: StorageError) -> StorageError:
        """Mark the store failed (it takes no more writes), remembering why; ``error``."""
        self._failed = True
        self._failure = str(error)
        return error

    def close(self) -> None:
        """Fsync what is unsynced, and close RocksDB; closing twice is allowed.

        Raises:
            StorageError: an fsync is in flight (close from the task that writes, after it).
        """
        if self._db is None:
            return
        if self._fsync_in_flight:
            raise StorageError(f"cannot close {self._path} while an fsync is in flight")
        db, self._db = self._db, None
        try:
            if not self._failed:
                db.flush_wal(True)
        finally:
            try:
                db.close()
            except Exception as error:  # rocksdict raises plain Exception
                if not self._failed:
                    raise _engine_error(error, "cannot close", self._path) from error
                # Failed already (a full disk, say): that error was raised and is the news;
                # RocksDB repeats it on close, and the write-ahead log recovers on reopen.
                logger.warning("closing %s after its failure: %s", self._path, error)


class _OnceUsed:
    """What both bulk writers share: once committed or aborted, a writer takes nothing more."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._done = False

    def _check_not_done(self) -> None:
        if self._done:
            raise StorageError(f"{self._name} is done")

    def _finish_once(self) -> bool:
        """Mark the writer done; whether it was not done before."""
        first = not self._done
        self._done = True
        return first


class _RocksBulkWriter(_OnceUsed):
    """A ``BulkWriter`` into one table file (``rocksdict.SstFileWriter``, opened at the first
    record), which commit ingests."""

    def __init__(self, store: RocksKeyValueStore, path: Path) -> None:
        super().__init__(f"the bulk writer of {path}")
        self._store = store
        self._path = path
        self._writer: rocksdict.SstFileWriter | None = None
        self._last: bytes | None = None

    def put(self, key: bytes, value: bytes) -> None:
        self._check_not_done()
        _check_bulk_put(self._last, key, value)
        store = self._store
        store._writable_db()
        try:
            if self._writer is None:
                writer = rocksdict.SstFileWriter(rocksdict.Options(raw_mode=True))
                writer.open(str(self._path))
                self._writer = writer
            self._writer[key] = value
        except Exception as error:  # rocksdict raises plain Exception; we re-raise typed
            raise store._fail(_engine_error(error, "cannot write to", self._path)) from error
        self._last = key

    async def commit(self) -> None:
        self._check_not_done()
        self._finish_once()
        writer, self._writer = self._writer, None
        await self._store._ingest(writer, self._path)

    def abort(self) -> None:
        if self._finish_once():
            self._writer = None
            self._path.unlink(missing_ok=True)


def _remove_bulk_leftovers(directory: Path) -> None:
    """At open: the table files of bulk writers a crash interrupted."""
    if not directory.is_dir():
        return
    for leftover in directory.iterdir():
        logger.info("removing %s, a bulk write that was never committed", leftover)
        leftover.unlink()


# -- memory ------------------------------------------------------------------------------------

_Undo = list[tuple[bytes, bytes | None]]
"""How to take one applied batch back: (key, value before) in the order they were changed."""


class MemoryKeyValueStore:
    """A ``KeyValueStore`` in memory: a dict and a sorted list of its keys.

    It keeps, for every batch applied since the last ``sync()``, what the batch overwrote, so
    that ``crash()`` can take those batches back: the machine lost power before they reached
    the disk. A simulated disk can subclass this to add latency (override ``_wait_for_fsync``)
    or faults.

    ``close()`` then ``reopen()`` models a clean restart (nothing lost); ``crash()`` a power
    loss. Both hand the data to a new store and leave this one closed, so that a task of the
    old incarnation that still holds it cannot write into the new one.
    """

    def __init__(self) -> None:
        self._values: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._unsynced: list[_Undo] = []
        self._applied_batches = 0
        """Batches applied so far; ``_unsynced`` holds the newest of them."""
        self._closed = False
        self._handed_on = False

    # -- reads

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self._values.get(key)

    def scan(
        self, start: bytes, end: bytes, *, bulk: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return iter(self._range(start, end))  # no cache to keep a bulk scan out of

    def scan_reverse(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        return reversed(self._range(start, end))

    def size_bytes(self) -> tuple[int, int]:
        self._check_open()
        total = sum(len(key) + len(value) for key, value in self._values.items())
        return total, total

    def _range(self, start: bytes, end: bytes) -> list[tuple[bytes, bytes]]:
        """Copied now, so that the scan sees the store as of the call."""
        self._check_open()
        if start >= end:
            return []
        low = bisect.bisect_left(self._keys, start)
        high = bisect.bisect_left(self._keys, end, lo=low)
        values = self._values
        return [(key, values[key]) for key in self._keys[low:high]]

    # -- writes

    def apply(self, batch: WriteBatch) -> None:
        self._check_open()
        check_batch_size(batch)
        if len(batch):
            self._apply_raw(batch.raw())

    def _apply_raw(self, operations: Iterable[RawOperation]) -> None:
        """One batch, as ``apply`` and a bulk commit write it."""
        undo: _Undo = []
        for kind, first, second in operations:
            if kind == PUT_KIND:
                undo.append((first, self._values.get(first)))
                self._put(first, second)
            elif kind == DELETE_KIND:
                undo.append((first, self._values.get(first)))
                self._delete(first)
            else:
                undo.extend(self._range(first, second))
                self._delete_range(first, second)
        self._unsynced.append(undo)
        self._applied_batches += 1

    def _put(self, key: bytes, value: bytes) -> None:
        if key not in self._values:
            bisect.insort(self._keys, key)
        self._values[key] = value

    def _delete(self, key: bytes) -> None:
        if self._values.pop(key, None) is not None:
            del self._keys[bisect.bisect_left(self._keys, key)]

    def _delete_range(self, start: bytes, end: bytes) -> None:
        if start >= end:
            return
        low = bisect.bisect_left(self._keys, start)
        high = bisect.bisect_left(self._keys, end, lo=low)
        for key in self._keys[low:high]:
            del self._values[key]
        del self._keys[low:high]

    async def sync(self) -> None:
        """Everything applied before the call is durable when it returns.

        A crash while a sync is in its checkpoint loses what it would have synced: the
        sync raises StorageClosed.
        """
        self._check_open()
        target = self._applied_batches
        await self._wait_for_fsync()
        self._check_open()
        del self._unsynced[: self._unsynced_before(target)]

    def _unsynced_before(self, target: int) -> int:
        """How many of the unsynced batches came before batch number ``target``: what an fsync
        begun when ``target`` batches were applied covers. Counted by number, not position:
        another sync may have settled some of them while this one waited, and a batch applied
        meanwhile is not covered."""
        return max(0, target - self._first_unsynced)

    @property
    def _first_unsynced(self) -> int:
        """The number of the oldest unsynced batch (batches are numbered from 0 as applied)."""
        return self._applied_batches - len(self._unsynced)

    async def _wait_for_fsync(self) -> None:
        """The time an fsync takes: one checkpoint here; a simulated disk may sleep."""
        await trio.lowlevel.checkpoint()

    async def write(self, batch: WriteBatch, *, sync: bool) -> None:
        await write_then_sync(self, batch, sync=sync)

    def bulk_writer(self) -> BulkWriter:
        self._check_open()
        return _MemoryBulkWriter(self)

    async def _commit_bulk(self, records: list[tuple[bytes, bytes]]) -> None:
        """The records as one batch (no size limit: RocksDB's table files have none), and an
        fsync: so a crash keeps them all with every batch before them, or none."""
        with trio.CancelScope(shield=True):
            self._check_open()
            if records:
                self._apply_raw([(PUT_KIND, key, value) for key, value in records])
            await self.sync()

    def close(self) -> None:
        """A clean close: everything applied is durable; closing twice is allowed."""
        self._unsynced.clear()
        self._closed = True

    # -- restarts, for tests and the simulator

    @property
    def unsynced_batch_count(self) -> int:
        """How many applied batches a crash now would lose."""
        return len(self._unsynced)

    def crash(self, *, keep_unsynced_batches: int = 0) -> MemoryKeyValueStore:
        """Lose power: take back every batch applied since the last sync but the first
        ``keep_unsynced_batches`` of them (a prefix of the log survives, as in RocksDB's
        point-in-time recovery), and return the store the machine finds on restart.

        This store is closed afterwards.
        """
        self._check_open()
        if keep_unsynced_batches < 0:
            raise ValueError(f"keep_unsynced_batches must be >= 0, not {keep_unsynced_batches}")
        lost = self._unsynced[keep_unsynced_batches:]
        for undo in reversed(lost):
            self._take_back(undo)
        logger.debug("crash: lost %d unsynced batches", len(lost))
        self._unsynced.clear()
        self._closed = True
        return self._hand_on()

    def reopen(self) -> MemoryKeyValueStore:
        """The store that opening this one again after ``close()`` finds: all of its data.

        Raises:
            StorageError: the store is still open.
            StorageClosed: its data was handed on already (reopened or crashed before).
        """
        if not self._closed:
            raise StorageError("reopen() needs a closed store; close() it first")
        return self._hand_on()

    def _take_back(self, undo: _Undo) -> None:
        for key, value in reversed(undo):
            if value is None:
                self._delete(key)
            else:
                self._put(key, value)

    def _hand_on(self) -> MemoryKeyValueStore:
        if self._handed_on:
            raise StorageClosed("this store's data was handed on to another store already")
        store = MemoryKeyValueStore()
        store._values, store._keys = self._values, self._keys
        self._values, self._keys = {}, []
        self._handed_on = True
        return store

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("the store is closed")


class _MemoryBulkWriter(_OnceUsed):
    """A ``BulkWriter`` that keeps its records in a list until commit."""

    def __init__(self, store: MemoryKeyValueStore) -> None:
        super().__init__("this bulk writer")
        self._store = store
        self._records: list[tuple[bytes, bytes]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self._check_not_done()
        _check_bulk_put(self._records[-1][0] if self._records else None, key, value)
        self._store._check_open()
        self._records.append((key, value))

    async def commit(self) -> None:
        self._check_not_done()
        self._finish_once()
        records, self._records = self._records, []
        await self._store._commit_bulk(records)

    def abort(self) -> None:
        self._finish_once()
        self._records = []
