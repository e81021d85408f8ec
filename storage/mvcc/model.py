"""The values the MVCC store hands out: key-value versions, events and range results."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One version of a key, as etcd's ``mvccpb.KeyValue``.

    A tombstone (the version written by a delete) has ``version == 0``, ``create_revision ==
    0``, an empty value and no lease: exactly the ``kv`` of a DELETE event.
    """

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    value: bytes
    lease: int

    @property
    def is_tombstone(self) -> bool:
        """Whether this version is a delete (live versions count from 1)."""
        return self.version == 0


def tombstone(key: bytes, revision: int) -> KeyValue:
    """The version a delete at ``revision`` leaves: only the key and the mod revision."""
    return KeyValue(key, 0, revision, 0, b"", 0)


class EventType(enum.IntEnum):
    """etcd's ``mvccpb.Event.EventType`` (same numbers)."""

    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Event:
    """One change of one key in a write transaction.

    ``kv`` is the new version (a tombstone for a DELETE); ``prev_kv`` the version it replaced,
    or None if the key did not exist.
    """

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class TxnEvents:
    """The events of one committed write transaction, all at ``revision``, in write order."""

    revision: int
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class RangeResult:
    """What a range read found.

    Attributes:
        kvs: the versions found, in ascending key order, at most ``limit`` of them.
        count: how many keys matched before the limit.
        revision: the store's revision the read saw (the current one, not the one asked for).
    """

    kvs: tuple[KeyValue, ...]
    count: int
    revision: int


@dataclass(frozen=True, slots=True)
class HashResult:
    """``MvccStore.hash_kv``: a checksum of the records up to ``revision``."""

    hash: int
    compact_revision: int
    revision: int
