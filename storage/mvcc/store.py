"""etcd's v3 MVCC store (revisions, generations, tombstones, compaction) as a pure state machine.

Theory of operation
-------------------
The store has one revision counter, ``current_revision``: a new store is at 1, so the first
write is at 2, as in etcd. A write transaction (``write()``) gets main revision
``current_revision + 1``; each put or delete in it takes the next sub revision (0, 1, ...);
``end()`` moves the counter by exactly one if the transaction wrote anything (a delete that
matched nothing writes nothing). Reads inside a transaction see its own earlier writes; reads
on the store see only ended transactions.

Every key has versions: ``create_revision`` (the start of the current generation),
``mod_revision``, ``version`` (1 on create, +1 per put) and ``lease``. A delete writes a
tombstone, which ends the generation; a put after it starts a new one. A read at any revision
not compacted away sees the store as it was then (``range(..., revision=r)``).

Compaction (``compact(r)``) is logical at once: reads below ``r`` fail with ``Compacted``
(reading *at* ``r`` is allowed, as in etcd), and every version superseded at ``r`` stops being
visible to anything. The memory and the records are reclaimed later, in bounded steps
(``compaction_step(keys_max)``, which the apply stage calls between batches), so the apply path
never stalls on a large store. The scheduled and the finished compaction revisions are
persisted, so a restart finishes a compaction that was under way.

Persistence follows ``V2Store``: ``take_changes()`` returns the records written since the last
call (``(key, value)`` to put, ``(key, None)`` to delete), which the caller writes in the same
batch as the applied index; ``MvccStore.load(kv)`` rebuilds the store from those records, so a
restart resumes at exactly the last batch committed. The record layout is in
``storage.mvcc.codec``. Every retained version (values included) is also kept in memory (see
``storage.mvcc.index``), so reads never wait for the disk and see applied writes before they are
persisted. Memory is therefore proportional to the retained history: compaction bounds it.

``take_events()`` returns the events of each ended write transaction (for the watch service),
and is bounded the same way: the caller takes them after each applied batch.

Watchers that fall behind read past events back with ``events(start, end)``: the events of a
revision range in revision order, whole revisions at a time, with ``prev_kv`` as etcd's watch
computes it (the key read at ``mod_revision - 1``; none when that revision is compacted, and
none for a creation). A second in-memory index, from each revision to the keys it wrote in
write order, finds them; it holds the revisions from the compact revision on (every version
written there is retained, see below) and is trimmed in the same bounded compaction steps and
rebuilt by ``load``, ``restore`` and ``reload``. At the compact revision itself a delete is no
longer an event (a compaction at ``r`` drops a tombstone written at ``r``; leaving it out at
once keeps the answer the same before and after ``compaction_step`` ran).

Snapshots: ``snapshot_items()`` lists the records of the retained state (from memory, with the
compaction applied, whether or not ``take_changes()`` was called), ``restore(items)`` replaces
the whole state with such a list, and its next ``take_changes()`` deletes every old record.

Limits: keys and values are held in memory and written as single records; their size is the
caller's concern (etcd caps a request at 1.5 MiB). Revisions and leases are signed 64-bit.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Iterator
from typing import Final, Protocol

from storage.errors import StorageCorrupted
from storage.kv import prefix_end
from storage.mvcc.codec import (
    META_COMPACT_FINISHED,
    META_COMPACT_SCHEDULED,
    META_REVISION,
    RECORD_TAG,
    decode_meta,
    decode_record,
    encode_meta,
    encode_record,
    parse_record_key,
    record_key,
)
from storage.mvcc.errors import Compacted, FutureRevision
from storage.mvcc.index import History, KeyIndex, RevisionKeys
from storage.mvcc.model import (
    Event,
    EventType,
    HashResult,
    KeyValue,
    RangeResult,
    TxnEvents,
    tombstone,
)

logger = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = b"mvcc/"
FIRST_REVISION: Final = 1
"""The revision of a new store (its first write is at 2)."""

NO_COMPACTION: Final = -1
"""The compact revision of a store never compacted (etcd's: so compacting at 0 succeeds)."""

COMPACTION_KEYS_PER_STEP: Final = 1000
"""Keys one ``compaction_step`` visits by default (etcd's compaction batch limit)."""

COMPACTION_REVISIONS_PER_STEP: Final = 10_000
"""Revisions one ``compaction_step`` drops from the revision index by default (a dict removal
each, about 0.5 ms for all of them)."""

INT64_MAX: Final = (1 << 63) - 1
INT64_MIN: Final = -(1 << 63)

GTE_RANGE_END: Final = b"\0"
"""A range end meaning "every key from ``key`` on"."""


class ReadableKV(Protocol):
    """What ``MvccStore.load`` reads: an ordered scan."""

    def scan(
        self, start: bytes, end: bytes, *, bulk: bool = False
    ) -> Iterable[tuple[bytes, bytes]]: ...


def _check_bytes(name: str, value: object) -> None:
    if type(value) is not bytes:
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")


def _check_int64(name: str, value: object) -> None:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{name} {value} is out of the int64 range")


class MvccStore:
    """Keys with revisioned versions; see the module docstring.

    Args:
        prefix: where the records live in the KeyValueStore.
        track_events: keep the events of each write transaction for ``take_events()``.
    """

    def __init__(self, *, prefix: bytes = DEFAULT_PREFIX, track_events: bool = True) -> None:
        _check_bytes("prefix", prefix)
        self._prefix = prefix
        self._track_events = track_events
        self._index = KeyIndex()
        self._revision = FIRST_REVISION
        self._revision_persisted: int | None = None
        self._compact_revision = NO_COMPACTION
        self._compact_finished = NO_COMPACTION
        self._compaction_cursor: bytes | None = None
        self._changes: dict[bytes, bytes | None] = {}
        self._events: list[TxnEvents] = []
        self._txn: WriteTxn | None = None
        self._revision_keys = RevisionKeys(FIRST_REVISION + 1)

    # -- state ----------------------------------------------------------------------------

    @property
    def current_revision(self) -> int:
        """The revision of the last ended write transaction (1 for a new store)."""
        return self._revision

    @property
    def compact_revision(self) -> int:
        """The revision of the last compaction (``NO_COMPACTION`` if none)."""
        return self._compact_revision

    @property
    def compaction_pending(self) -> bool:
        """Whether ``compaction_step`` has records (or revision index entries) to reclaim."""
        return (
            self._compact_finished < self._compact_revision
            or self._revision_keys.floor < self._compact_revision
        )

    @property
    def prefix(self) -> bytes:
        """Where the records live in the KeyValueStore."""
        return self._prefix

    def key_count(self) -> int:
        """Keys with a retained version (live or not): the size of the index."""
        return len(self._index)

    # -- reads ----------------------------------------------------------------------------

    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        revision: int = 0,
        limit: int = 0,
        count_only: bool = False,
    ) -> RangeResult:
        """The live versions of the keys in a range, at a revision.

        Args:
            key: the first key.
            range_end: ``b""`` for ``key`` alone, ``b"\\0"`` for every key from ``key`` on,
                otherwise the end of ``[key, range_end)``.
            revision: the revision to read at; ``<= 0`` for the current one.
            limit: at most this many versions in ``kvs`` (``<= 0``: no limit); ``count``
                counts them all.
            count_only: leave ``kvs`` empty.

        Raises:
            FutureRevision: ``revision`` is past the current revision.
            Compacted: ``revision`` is below the compact revision.
        """
        return self._read(
            key,
            range_end,
            revision=revision,
            limit=limit,
            count_only=count_only,
            current=self._revision,
        )

    def _read(
        self,
        key: bytes,
        range_end: bytes,
        *,
        revision: int,
        limit: int,
        count_only: bool,
        current: int,
    ) -> RangeResult:
        if revision > current:
            raise FutureRevision(revision, current)
        at = current if revision <= 0 else revision
        if at < self._compact_revision:
            raise Compacted(at, self._compact_revision)
        kvs: list[KeyValue] = []
        count = 0
        limited = limit > 0 and not count_only
        for history in self._histories(key, range_end):
            newest = history[-1]
            kv: KeyValue | None
            if newest.mod_revision <= at:  # the common case: nothing written since (no bisect)
                kv = None if newest.version == 0 else newest
            else:
                kv = history.at(at)
            if kv is None:
                continue
            count += 1
            if count_only or (limited and len(kvs) >= limit):
                continue
            kvs.append(kv)
        return RangeResult(tuple(kvs), count, current)

    def events(
        self,
        start_revision: int,
        end_revision: int = 0,
        *,
        revisions_max: int = 0,
        events_max: int = 0,
    ) -> tuple[list[TxnEvents], int]:
        """The events of the revisions ``[start_revision, end_revision]``, in revision order.

        Whole revisions only: reading stops before a revision once ``revisions_max``
        revisions were read or ``events_max`` events found (``<= 0``: no bound; the first
        revision is always read whole). A PUT's ``prev_kv`` is the key at ``mod_revision -
        1`` (None for a creation), a DELETE's the version it deleted; None when that revision
        is compacted, as etcd's watch reads it.

        Args:
            start_revision: the first revision wanted.
            end_revision: the last one; ``<= 0`` for the current revision.

        Returns:
            The events, and the last revision read (``end_revision`` unless a bound cut the
            read short; every revision up to it is covered).

        Raises:
            Compacted: ``start_revision`` is below the compact revision.
            FutureRevision: ``end_revision`` is past the current revision.
        """
        assert self._txn is None, "read events between write transactions"
        end = self._revision if end_revision <= 0 else end_revision
        if end > self._revision:
            raise FutureRevision(end, self._revision)
        if start_revision < self._compact_revision:
            raise Compacted(start_revision, self._compact_revision)
        found: list[TxnEvents] = []
        count = 0
        start = max(start_revision, FIRST_REVISION + 1)
        for revision in range(start, end + 1):
            read = revision - start
            if read and (
                (revisions_max > 0 and read >= revisions_max)
                or (events_max > 0 and count >= events_max)
            ):
                return found, revision - 1
            events = self._events_at(revision)
            if events:
                found.append(TxnEvents(revision, events))
                count += len(events)
        return found, end

    def _events_at(self, revision: int) -> tuple[Event, ...]:
        """The events of one revision at or above the compact revision, in write order.

        At the compact revision only what the compaction keeps is an event: each key's last
        version there, unless a tombstone (``_kept_at_compaction``), whether or not
        ``compaction_step`` has reclaimed the rest yet.
        """
        compacted = self._compact_revision
        keys = self._revision_keys.get(revision)
        assert keys is not None or revision <= compacted, (revision, compacted)
        if revision <= compacted:
            return self._kept_at_compaction(keys or ())
        events: list[Event] = []
        occurrences: dict[bytes, int] = {}
        for key in keys or ():
            history = self._index.get(key)
            assert history is not None, key
            first = history.first_at(revision)
            position = first + occurrences.get(key, 0)  # the store allows a key twice
            occurrences[key] = occurrences.get(key, 0) + 1
            kv = history[position]
            assert kv.mod_revision == revision, (key, revision)
            prev: KeyValue | None = None
            creation = not kv.is_tombstone and kv.create_revision == revision
            if revision - 1 >= compacted and first > 0 and not creation:
                before = history[first - 1]
                prev = None if before.is_tombstone else before
            kind = EventType.DELETE if kv.is_tombstone else EventType.PUT
            events.append(Event(kind, kv, prev))
        return tuple(events)

    def _kept_at_compaction(self, keys: tuple[bytes, ...]) -> tuple[Event, ...]:
        """The events at the compact revision: the puts a compaction keeps, no ``prev_kv``
        (the revision before is compacted)."""
        revision = self._compact_revision
        events: list[Event] = []
        for index, key in enumerate(keys):
            if key in keys[index + 1 :]:
                continue  # superseded in the same revision
            history = self._index.get(key)
            kv = None if history is None else history.at(revision)
            if kv is not None and kv.mod_revision == revision:
                events.append(Event(EventType.PUT, kv, None))
        return tuple(events)

    def histories_page(self, start: bytes, end: bytes | None, count: int) -> list[History]:
        """Up to ``count`` histories of the keys in ``[start, end)`` (``end`` None: unbounded),
        in key order: a read-only view for statistics that page through the index between
        other work (``storage.usage``); the caller must not change them."""
        assert count > 0, count
        first = self._index.get(start)
        keys = self._index.keys_after(start, count - (first is not None))
        histories = [] if first is None else [first]
        for key in keys:
            history = self._index.get(key)
            if history is None or (end is not None and key >= end):
                break
            histories.append(history)
        return histories

    def _histories(self, key: bytes, range_end: bytes) -> Iterator[History]:
        if not range_end:
            history = self._index.get(key)
            if history is not None:
                yield history
            return
        end = None if range_end == GTE_RANGE_END else range_end
        yield from self._index.histories(key, end)

    # -- writes ---------------------------------------------------------------------------

    def write(self) -> WriteTxn:
        """Open the write transaction (one at a time); ``end()`` it, or use ``with``."""
        assert self._txn is None, "a write transaction is open already"
        self._txn = WriteTxn(self)
        return self._txn

    def _end(self, txn: WriteTxn, events: list[Event]) -> None:
        assert self._txn is txn
        self._txn = None
        if not events:
            return
        self._revision += 1
        assert txn.revision == self._revision
        self._revision_keys.add(self._revision, tuple(event.kv.key for event in events))
        if self._track_events:
            self._events.append(TxnEvents(self._revision, tuple(events)))

    def _record(self, main: int, sub: int, kv: KeyValue) -> None:
        self._index.history_for_write(kv.key).add(main, sub, kv)
        self._changes[record_key(self._prefix, main, sub)] = encode_record(kv)

    # -- compaction -----------------------------------------------------------------------

    def compact(self, revision: int) -> None:
        """Compact at ``revision``: reads below it fail from now on; the versions it supersedes
        are reclaimed by ``compaction_step``.

        Raises:
            Compacted: ``revision`` is not above the compact revision.
            FutureRevision: ``revision`` is past the current revision.
        """
        assert self._txn is None, "compact outside a write transaction"
        _check_int64("revision", revision)
        if revision <= self._compact_revision:
            raise Compacted(revision, self._compact_revision)
        if revision > self._revision:
            raise FutureRevision(revision, self._revision)
        self._compact_revision = revision
        self._compaction_cursor = None  # a new target: every key again (idempotent)
        self._changes[self._prefix + META_COMPACT_SCHEDULED] = encode_meta(revision)
        logger.debug("compaction at %d scheduled", revision)

    def compaction_step(
        self,
        keys_max: int = COMPACTION_KEYS_PER_STEP,
        revisions_max: int = COMPACTION_REVISIONS_PER_STEP,
    ) -> bool:
        """Reclaim what the pending compaction superseded in up to ``keys_max`` keys, and up to
        ``revisions_max`` compacted revisions of the revision index.

        Returns:
            Whether the compaction is finished (True at once when none is pending).
        """
        assert self._txn is None, "compact outside a write transaction"
        assert keys_max > 0 and revisions_max > 0, (keys_max, revisions_max)
        self._trim_revisions(revisions_max)
        if self._compact_finished < self._compact_revision:
            self._reclaim_records(keys_max)
        return not self.compaction_pending

    def _trim_revisions(self, revisions_max: int) -> None:
        """Forget up to ``revisions_max`` revisions below the compact revision in the
        revision index (no watcher reads them: a watch from there is cancelled)."""
        keys = self._revision_keys
        keys.drop_below(min(self._compact_revision, keys.floor + revisions_max))

    def _reclaim_records(self, keys_max: int) -> None:
        keys = self._index.keys_after(self._compaction_cursor, keys_max)
        emptied: list[bytes] = []
        for key in keys:
            history = self._index.get(key)
            assert history is not None
            position = history.retained_from(self._compact_revision)
            for main, sub in history.drop_before(position):
                self._changes[record_key(self._prefix, main, sub)] = None
            if not len(history):
                emptied.append(key)
        self._index.remove(emptied)
        if len(keys) < keys_max:
            self._compact_finished = self._compact_revision
            self._compaction_cursor = None
            self._changes[self._prefix + META_COMPACT_FINISHED] = encode_meta(
                self._compact_finished
            )
            logger.debug("compaction at %d finished", self._compact_finished)
            return
        self._compaction_cursor = keys[-1]

    # -- persistence ----------------------------------------------------------------------

    def take_changes(self) -> list[tuple[bytes, bytes | None]]:
        """The records changed since the last call, sorted by key: ``(key, value)`` to put,
        ``(key, None)`` to delete, all under the prefix. The caller writes them in the batch
        that carries the applied index."""
        assert self._txn is None, "take changes between write transactions"
        if self._revision != self._revision_persisted:
            self._changes[self._prefix + META_REVISION] = encode_meta(self._revision)
            self._revision_persisted = self._revision
        changes = sorted(self._changes.items())
        self._changes.clear()
        return changes

    def take_events(self) -> list[TxnEvents]:
        """The events of the write transactions ended since the last call, in order."""
        events, self._events = self._events, []
        return events

    @classmethod
    def load(
        cls, kv: ReadableKV, *, prefix: bytes = DEFAULT_PREFIX, track_events: bool = True
    ) -> MvccStore:
        """Rebuild the store from the records ``take_changes`` produced (a new store if none).

        A compaction that was under way is pending again (``compaction_step`` finishes it).

        Raises:
            StorageCorrupted: a record fails validation, or the records are inconsistent.
        """
        store = cls(prefix=prefix, track_events=track_events)
        if store._install(kv.scan(prefix, prefix_end(prefix), bulk=True)):
            store._revision_persisted = store._revision
        return store

    def _install(self, items: Iterable[tuple[bytes, bytes]]) -> bool:
        """Replace the in-memory state with records (validated before anything changes).

        Returns:
            Whether the records held the current revision (a store persisted before).
        """
        prefix = self._prefix
        versions: dict[bytes, list[tuple[int, int, KeyValue]]] = {}
        meta: dict[bytes, int] = {}
        record_prefix = prefix + RECORD_TAG
        for key, value in items:
            if key.startswith(record_prefix):
                main, sub = parse_record_key(prefix, key)
                kv = decode_record(key, value, main)
                versions.setdefault(kv.key, []).append((main, sub, kv))
            elif key[len(prefix) :] in (
                META_REVISION,
                META_COMPACT_SCHEDULED,
                META_COMPACT_FINISHED,
            ) and key.startswith(prefix):
                meta[key[len(prefix) :]] = decode_meta(key, value)
            else:
                raise StorageCorrupted(f"unknown mvcc record key {key!r}")
        revision = meta.get(META_REVISION, FIRST_REVISION)
        scheduled = meta.get(META_COMPACT_SCHEDULED, NO_COMPACTION)
        finished = meta.get(META_COMPACT_FINISHED, NO_COMPACTION)
        if versions and META_REVISION not in meta:
            raise StorageCorrupted("mvcc records without a revision")
        if not NO_COMPACTION <= finished <= scheduled <= revision or revision < FIRST_REVISION:
            raise StorageCorrupted(
                f"mvcc revisions out of order: finished compaction {finished}, "
                f"scheduled {scheduled}, current {revision}"
            )
        histories: dict[bytes, History] = {}
        for key, entries in versions.items():
            entries.sort(key=lambda entry: (entry[0], entry[1]))
            if entries[-1][0] > revision:
                raise StorageCorrupted(f"mvcc record at {entries[-1][0]} past revision {revision}")
            history = History()
            for main, sub, kv in entries:
                if history and (main, sub) <= history.last_revision():
                    raise StorageCorrupted(f"two mvcc records at revision {(main, sub)}")
                history.add(main, sub, kv)
            histories[key] = history
        self._index = KeyIndex.from_histories(histories)
        self._revision_keys = _revision_index(histories, max(scheduled, FIRST_REVISION + 1))
        self._revision = revision
        self._compact_revision = scheduled
        self._compact_finished = finished
        self._compaction_cursor = None
        return META_REVISION in meta

    # -- snapshots ------------------------------------------------------------------------

    def snapshot_items(self) -> Iterator[tuple[bytes, bytes]]:
        """The records of the whole retained state, for a Raft snapshot.

        Taken from memory when called (a shallow copy of the index; records are encoded as
        the iterator is consumed), with the compaction applied, so ``take_changes()`` need
        not be called first and later writes do not show. ``restore`` reads it back.
        """
        assert self._txn is None, "snapshot between write transactions"
        prefix = self._prefix
        compacted = self._compact_revision
        versions: list[tuple[int, int, KeyValue]] = []
        for _, history in self._index.items():
            start = history.retained_from(compacted)
            versions.extend(list(history.versions())[start:])
        meta = [
            (prefix + META_REVISION, encode_meta(self._revision)),
            (prefix + META_COMPACT_SCHEDULED, encode_meta(compacted)),
            (prefix + META_COMPACT_FINISHED, encode_meta(compacted)),
        ]
        return self._snapshot_stream(meta, versions)

    def _snapshot_stream(
        self, meta: list[tuple[bytes, bytes]], versions: list[tuple[int, int, KeyValue]]
    ) -> Iterator[tuple[bytes, bytes]]:
        yield from meta
        prefix = self._prefix
        for main, sub, kv in versions:
            yield record_key(prefix, main, sub), encode_record(kv)

    def restore(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Replace the whole state with ``snapshot_items()`` of another store.

        The next ``take_changes()`` deletes every record of the old state and writes the new
        ones (so memory holds both states' encoded records until then: a restore is not
        bounded by less than the state's size). Untaken events of the old state stay; no
        events are made for the restore (the watch service must resynchronise its watchers).

        Raises:
            StorageCorrupted: an item fails validation; the store is unchanged.
        """
        assert self._txn is None, "restore between write transactions"
        fresh = MvccStore(prefix=self._prefix, track_events=False)
        fresh._install(items)
        changes = self._changes
        prefix = self._prefix
        for _, history in self._index.items():
            for main, sub, _kv in history.versions():
                changes[record_key(prefix, main, sub)] = None
        for _, history in fresh._index.items():
            for main, sub, kv in history.versions():
                changes[record_key(prefix, main, sub)] = encode_record(kv)
        changes[prefix + META_COMPACT_SCHEDULED] = encode_meta(fresh._compact_revision)
        changes[prefix + META_COMPACT_FINISHED] = encode_meta(fresh._compact_finished)
        self._index = fresh._index
        self._revision_keys = fresh._revision_keys
        self._revision = fresh._revision
        self._revision_persisted = None
        self._compact_revision = fresh._compact_revision
        self._compact_finished = fresh._compact_finished
        self._compaction_cursor = None

    def reload(self, kv: ReadableKV) -> None:
        """Replace the whole state with the records in ``kv`` (written there by a snapshot
        install, so nothing is left to ``take_changes``). Untaken events of the old state
        stay; no events are made for it.

        Raises:
            StorageCorrupted: a record fails validation; the store is unchanged.
        """
        assert self._txn is None, "reload between write transactions"
        fresh = MvccStore.load(kv, prefix=self._prefix, track_events=False)
        self._index = fresh._index
        self._revision_keys = fresh._revision_keys
        self._revision = fresh._revision
        self._revision_persisted = fresh._revision_persisted
        self._compact_revision = fresh._compact_revision
        self._compact_finished = fresh._compact_finished
        self._compaction_cursor = None
        self._changes.clear()

    # -- checksums ------------------------------------------------------------------------

    def hash_kv(self, revision: int = 0) -> HashResult:
        """A CRC-32 of the retained versions up to ``revision`` (etcd's HashKV).

        It covers what a compaction keeps, whether or not ``compaction_step`` has run, so two
        members that applied the same entries give the same hash.

        Raises:
            Compacted: ``revision`` is at or below the compact revision.
            FutureRevision: ``revision`` is past the current revision.
        """
        assert self._txn is None, "hash between write transactions"
        if 0 < revision <= self._compact_revision:
            raise Compacted(revision, self._compact_revision)
        if revision > self._revision:
            raise FutureRevision(revision, self._revision)
        at = self._revision if revision <= 0 else revision
        crc = 0
        for _, history in self._index.items():
            start = history.retained_from(self._compact_revision)
            for main, sub, kv in list(history.versions())[start:]:
                if main > at:
                    break
                crc = zlib.crc32(record_key(b"", main, sub), crc)
                crc = zlib.crc32(encode_record(kv), crc)
        return HashResult(crc, self._compact_revision, self._revision)


def _revision_index(histories: dict[bytes, History], floor: int) -> RevisionKeys:
    """The keys each revision from ``floor`` on wrote, in write order, from the histories."""
    writes: dict[int, list[tuple[int, bytes]]] = {}
    for key, history in histories.items():
        for main, sub, _kv in history.versions():
            if main >= floor:
                writes.setdefault(main, []).append((sub, key))
    index = RevisionKeys(floor)
    for main in sorted(writes):
        index.add(main, tuple(key for _, key in sorted(writes[main])))
    return index


class WriteTxn:
    """The store's one open write transaction (from ``MvccStore.write()``).

    There is no rollback (as in etcd): a write is in the index at once, and ``end()`` (or
    leaving a ``with`` block, even by an exception) commits what was written. Callers check
    everything that can fail before the first write.
    """

    __slots__ = ("_events", "_main", "_store")

    def __init__(self, store: MvccStore) -> None:
        self._store: MvccStore | None = store
        self._main = store.current_revision + 1
        self._events: list[Event] = []

    @property
    def changed(self) -> bool:
        """Whether anything was written."""
        return bool(self._events)

    @property
    def revision(self) -> int:
        """The revision reads in this transaction see: the next one once it has written."""
        return self._main if self._events else self._main - 1

    def _open(self) -> MvccStore:
        assert self._store is not None, "the write transaction has ended"
        return self._store

    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        revision: int = 0,
        limit: int = 0,
        count_only: bool = False,
    ) -> RangeResult:
        """``MvccStore.range`` as this transaction sees the store (its own writes included)."""
        store = self._open()
        return store._read(
            key,
            range_end,
            revision=revision,
            limit=limit,
            count_only=count_only,
            current=self.revision,
        )

    def put(self, key: bytes, value: bytes, lease: int = 0) -> KeyValue:
        """Set ``key`` to ``value`` (with ``lease``, 0 for none); the new version."""
        store = self._open()
        _check_bytes("key", key)
        _check_bytes("value", value)
        _check_int64("lease", lease)
        history = store._index.get(key)
        prev = None if history is None else history.at(self._main)
        if prev is None:
            kv = KeyValue(key, self._main, self._main, 1, value, lease)
        else:
            kv = KeyValue(key, prev.create_revision, self._main, prev.version + 1, value, lease)
        store._record(self._main, len(self._events), kv)
        self._events.append(Event(EventType.PUT, kv, prev))
        return kv

    def delete_range(self, key: bytes, range_end: bytes = b"") -> list[KeyValue]:
        """Delete the live keys of a range (as ``range`` reads it); the versions deleted."""
        store = self._open()
        _check_bytes("key", key)
        _check_bytes("range_end", range_end)
        deleted = [
            kv
            for kv in (history.at(self._main) for history in store._histories(key, range_end))
            if kv is not None
        ]
        for prev in deleted:
            dead = tombstone(prev.key, self._main)
            store._record(self._main, len(self._events), dead)
            self._events.append(Event(EventType.DELETE, dead, prev))
        return deleted

    def end(self) -> None:
        """Commit: the revision moves by one if anything was written."""
        store = self._open()
        self._store = None
        store._end(self, self._events)

    def __enter__(self) -> WriteTxn:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._store is not None:
            self.end()
