"""How the MVCC store's records look in a KeyValueStore.

Keys, under a prefix (``b"mvcc/"`` by default)::

    r<main:8><sub:8>   one version of one key (big-endian, so records sort by revision)
    m/revision         the current revision
    m/compact/scheduled  the revision of the last compaction asked for
    m/compact/finished   the revision of the last compaction whose records are all deleted

Every value is sealed (``storage.sealed``: version byte, body, CRC-32). A version's body is
``flags:1 create:8 mod:8 version:8 lease:8 key_length:4 key value`` (signed big-endian
integers); flag bit 0 marks a tombstone. A meta value's body is one signed 8-byte integer.
"""

from __future__ import annotations

import struct

from storage.errors import StorageCorrupted
from storage.mvcc.model import KeyValue
from storage.sealed import seal, unpack_exact, unseal

RECORD_TAG = b"r"
META_REVISION = b"m/revision"
META_COMPACT_SCHEDULED = b"m/compact/scheduled"
META_COMPACT_FINISHED = b"m/compact/finished"

_REVISION = struct.Struct(">QQ")
_HEADER = struct.Struct(">BqqqqI")
_META = struct.Struct(">q")
_TOMBSTONE_FLAG = 1


def record_key(prefix: bytes, main: int, sub: int) -> bytes:
    """The key of the version written at ``(main, sub)``."""
    return prefix + RECORD_TAG + _REVISION.pack(main, sub)


def parse_record_key(prefix: bytes, key: bytes) -> tuple[int, int]:
    """``(main, sub)`` of a record key.

    Raises:
        StorageCorrupted: not a record key.
    """
    head = len(prefix) + len(RECORD_TAG)
    if not key.startswith(prefix + RECORD_TAG) or len(key) != head + _REVISION.size:
        raise StorageCorrupted(f"not an mvcc record key: {key!r}")
    main, sub = _REVISION.unpack_from(key, head)
    return main, sub


def encode_record(kv: KeyValue) -> bytes:
    """The sealed value of a version."""
    flags = _TOMBSTONE_FLAG if kv.is_tombstone else 0
    header = _HEADER.pack(
        flags, kv.create_revision, kv.mod_revision, kv.version, kv.lease, len(kv.key)
    )
    return seal(header + kv.key + kv.value)


def decode_record(key: bytes, value: bytes, main: int) -> KeyValue:
    """The version a record holds, checked against its revision.

    Raises:
        StorageCorrupted: the value fails its seal, is malformed or disagrees with its key.
    """
    body = unseal(key, value)
    if len(body) < _HEADER.size:
        raise StorageCorrupted(f"mvcc record {key!r} is too short")
    flags, create, mod, version, lease, key_length = _HEADER.unpack_from(body)
    end = _HEADER.size + key_length
    if end > len(body):
        raise StorageCorrupted(f"mvcc record {key!r} has a key longer than itself")
    kv = KeyValue(bytes(body[_HEADER.size : end]), create, mod, version, bytes(body[end:]), lease)
    tombstone = bool(flags & _TOMBSTONE_FLAG)
    consistent = (
        flags & ~_TOMBSTONE_FLAG == 0
        and mod == main
        and tombstone == (version == 0)
        and (
            (create == 0 and lease == 0 and not kv.value)
            if tombstone
            else (0 < create <= mod and version > 0)
        )
    )
    if not consistent:
        raise StorageCorrupted(f"mvcc record {key!r} is inconsistent: {kv!r}"[:300])
    return kv


def encode_meta(value: int) -> bytes:
    """The sealed value of a meta revision."""
    return seal(_META.pack(value))


def decode_meta(key: bytes, value: bytes) -> int:
    """A meta revision.

    Raises:
        StorageCorrupted: the value fails its seal or has the wrong size.
    """
    (number,) = unpack_exact(key, _META, unseal(key, value))
    return number
