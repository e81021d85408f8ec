"""The replicated half of etcd's lessor: which leases exist, their TTLs, and their keys.

etcd splits a lease in two. What every member agrees on comes from the log: a lease is
granted (with its TTL) and revoked by log entries, and the keys attached to it are those whose
live version carries its id. When it expires is the leader's own business (``actors.lessor``):
it is never replicated, so a follower never deletes anything on its own clock.

This module is the agreed half, a pure state machine beside the MVCC store:

- ``grant(id, ttl)`` and ``revoke(id)`` apply the two log entries (``revoke`` returns the
  keys to delete, sorted, which the caller deletes in one MVCC write, as etcd does);
- ``observe(events)`` follows the MVCC store's events, so a key is attached to the lease of
  its live version and detached when it is overwritten or deleted;
- ``take_changes()`` / ``load()`` / ``reload()`` persist the leases beside the MVCC records
  (attachments are not persisted: ``load`` rebuilds them from the store's live keys).

Records, under ``PREFIX``: ``lease/<id:8 signed big-endian>`` -> sealed ``<ttl:8>``. The
TTL floor (etcd's minimum TTL, from the election timeout) is applied at grant; a member
configured with another floor keeps the TTLs already granted.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from storage.errors import StorageCorrupted
from storage.kv import prefix_end
from storage.mvcc.model import EventType, TxnEvents
from storage.mvcc.store import GTE_RANGE_END, MvccStore
from storage.sealed import seal, unpack_exact, unseal

PREFIX: Final = b"lease/"
MAX_LEASE_TTL_S: Final = 9_000_000_000
"""etcd's largest TTL ("too large lease TTL" above it)."""
NO_LEASE: Final = 0
LEASES_MAX: Final = 1_000_000
"""The most leases a store holds; a grant past it is refused (etcd has no such bound, but
every lease costs memory on every member)."""

_ID = struct.Struct(">q")
_TTL = struct.Struct(">q")


class LeaseError(Exception):
    """A lease request the state machine refuses; ``kind`` names etcd's error."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


LEASE_NOT_FOUND: Final = "not-found"
LEASE_EXISTS: Final = "exists"
LEASE_TTL_TOO_LARGE: Final = "ttl-too-large"
LEASES_TOO_MANY: Final = "too-many"


@dataclass(slots=True)
class Lease:
    """One granted lease and the keys whose live version carries it."""

    lease_id: int
    ttl_s: int
    keys: set[bytes] = field(default_factory=set)


class ReadableKV(Protocol):
    """What ``load`` reads: an ordered scan."""

    def scan(
        self, start: bytes, end: bytes, *, bulk: bool = False
    ) -> Iterable[tuple[bytes, bytes]]: ...


def record_key(lease_id: int) -> bytes:
    """The key of a lease's record."""
    return PREFIX + _ID.pack(lease_id)


def encode_record(ttl_s: int) -> bytes:
    """The sealed value of a lease's record."""
    return seal(_TTL.pack(ttl_s))


def decode_record(key: bytes, value: bytes) -> tuple[int, int]:
    """``(lease id, ttl)`` of a record.

    Raises:
        StorageCorrupted: a malformed key or value (naming the key).
    """
    if not key.startswith(PREFIX) or len(key) != len(PREFIX) + _ID.size:
        raise StorageCorrupted(f"not a lease record key: {key!r}")
    (lease_id,) = _ID.unpack_from(key, len(PREFIX))
    (ttl_s,) = unpack_exact(key, _TTL, unseal(key, value))
    if lease_id == NO_LEASE or not 0 < ttl_s <= MAX_LEASE_TTL_S:
        raise StorageCorrupted(f"lease record {key!r} holds id {lease_id}, ttl {ttl_s}")
    return lease_id, ttl_s


class LeaseTable:
    """The leases every member agrees on; see the module docstring.

    Args:
        min_ttl_s: the TTL floor applied at grant (etcd's minimum lease TTL).
    """

    def __init__(self, *, min_ttl_s: int = 1) -> None:
        assert min_ttl_s >= 1, min_ttl_s
        self.min_ttl_s = min_ttl_s
        self._leases: dict[int, Lease] = {}
        self._owner: dict[bytes, int] = {}
        self._changes: dict[bytes, bytes | None] = {}

    # -- reads ----------------------------------------------------------------------------

    def get(self, lease_id: int) -> Lease | None:
        """The lease, if granted."""
        return self._leases.get(lease_id)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._leases

    def __len__(self) -> int:
        return len(self._leases)

    def ids(self) -> list[int]:
        """Every granted lease id, ascending."""
        return sorted(self._leases)

    def ttls(self) -> list[tuple[int, int]]:
        """``(id, ttl)`` of every lease, by id."""
        return [(lease_id, self._leases[lease_id].ttl_s) for lease_id in sorted(self._leases)]

    def lease_of(self, key: bytes) -> int:
        """The lease the live version of ``key`` carries (``NO_LEASE`` if none)."""
        return self._owner.get(key, NO_LEASE)

    # -- the log's entries ----------------------------------------------------------------

    def grant(self, lease_id: int, ttl_s: int) -> Lease:
        """Grant a lease (TTL raised to the floor).

        Raises:
            LeaseError: id 0 (not found, as etcd), an id granted already, a TTL too large,
                or the table full.
        """
        if lease_id == NO_LEASE:
            raise LeaseError(LEASE_NOT_FOUND)
        if ttl_s > MAX_LEASE_TTL_S:
            raise LeaseError(LEASE_TTL_TOO_LARGE)
        if lease_id in self._leases:
            raise LeaseError(LEASE_EXISTS)
        if len(self._leases) >= LEASES_MAX:
            raise LeaseError(LEASES_TOO_MANY)
        lease = Lease(lease_id, max(ttl_s, self.min_ttl_s))
        self._leases[lease_id] = lease
        self._changes[record_key(lease_id)] = encode_record(lease.ttl_s)
        return lease

    def revoke(self, lease_id: int) -> list[bytes]:
        """Remove a lease; the keys attached to it, sorted (the caller deletes them all in
        one MVCC write, whose events then detach them).

        Raises:
            LeaseError: no such lease.
        """
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            raise LeaseError(LEASE_NOT_FOUND)
        self._changes[record_key(lease_id)] = None
        return sorted(lease.keys)

    def observe(self, transactions: Iterable[TxnEvents]) -> None:
        """Follow the MVCC writes: attach each put key to its version's lease, detach each
        overwritten or deleted one from its old lease."""
        for transaction in transactions:
            for event in transaction.events:
                key = event.kv.key
                old = self._owner.pop(key, NO_LEASE)
                if old != NO_LEASE:
                    lease = self._leases.get(old)
                    if lease is not None:
                        lease.keys.discard(key)
                if event.type is EventType.PUT and event.kv.lease != NO_LEASE:
                    self._attach(event.kv.lease, key)

    def _attach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is None:
            return  # the applier checks a put's lease first; a revoked one attaches nothing
        lease.keys.add(key)
        self._owner[key] = lease_id

    # -- persistence ----------------------------------------------------------------------

    def take_changes(self) -> list[tuple[bytes, bytes | None]]:
        """The records changed since the last call: ``(key, value)`` to put, ``(key, None)``
        to delete."""
        changes = sorted(self._changes.items())
        self._changes.clear()
        return changes

    @classmethod
    def load(cls, kv: ReadableKV, store: MvccStore, *, min_ttl_s: int = 1) -> LeaseTable:
        """The leases persisted in ``kv``, with the keys the store's live versions attach.

        Raises:
            StorageCorrupted: a record fails validation.
        """
        table = cls(min_ttl_s=min_ttl_s)
        table._install(kv, store)
        return table

    def reload(self, kv: ReadableKV, store: MvccStore) -> None:
        """Replace the whole state with what ``kv`` and ``store`` hold (after a snapshot was
        installed over both; nothing is left to ``take_changes``).

        Raises:
            StorageCorrupted: a record fails validation; the table is unchanged.
        """
        fresh = LeaseTable.load(kv, store, min_ttl_s=self.min_ttl_s)
        self._leases, self._owner = fresh._leases, fresh._owner
        self._changes.clear()

    def _install(self, kv: ReadableKV, store: MvccStore) -> None:
        for key, value in kv.scan(PREFIX, prefix_end(PREFIX), bulk=True):
            lease_id, ttl_s = decode_record(key, value)
            self._leases[lease_id] = Lease(lease_id, ttl_s)
        for version in store.range(b"", GTE_RANGE_END).kvs:
            if version.lease != NO_LEASE:
                self._attach(version.lease, version.key)
