"""Sealed values: a format version in front, a CRC-32 behind, checked on every read.

Every value ``RaftStore`` and ``AppliedState`` write is ``version | body | crc32(version |
body)`` (the CRC big-endian). ``unseal`` refuses a value that is too short, fails its checksum
or carries another version, so a torn or flipped value raises ``StorageCorrupted`` before
anything is built from it. RocksDB checksums its own blocks too; this covers the memory store,
the simulator's disk faults, and a value written under the wrong key by a bug of ours.

``PLANTED.skip_checksum`` is a planted bug for the simulator (``skip-seal-check``): the CRC is
not checked, so a value damaged on its way back from the disk is used as if good. Only the
simulator sets it (``sim.cluster``, from the run's ``--bug``); it is process-wide, as the
checksum code is.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from storage.errors import StorageCorrupted

FORMAT_VERSION = 1
"""The version byte of every sealed value; bump it when an encoding changes."""

U64_MAX = (1 << 64) - 1

_CRC = struct.Struct(">I")
SEAL_OVERHEAD_BYTES = 1 + _CRC.size
SKIP_SEAL_CHECK = "skip-seal-check"
"""The planted bug's name (``--bug``)."""


@dataclass
class _Planted:
    skip_checksum: bool = False


PLANTED = _Planted()
"""Planted bugs of this module (the simulator's; always off in production)."""


def seal(body: bytes) -> bytes:
    """``body`` with the version in front and the checksum behind."""
    sealed = bytes([FORMAT_VERSION]) + body
    return sealed + _CRC.pack(zlib.crc32(sealed))


def unseal(key: bytes, value: bytes) -> memoryview:
    """The body of a sealed value, without copying it.

    Raises:
        StorageCorrupted: the value is too short, fails its checksum, or has another version.
    """
    if len(value) < SEAL_OVERHEAD_BYTES:
        raise StorageCorrupted(f"value of {key!r} is {len(value)} bytes, too short to be sealed")
    view = memoryview(value)
    (stored_crc,) = _CRC.unpack_from(value, len(value) - _CRC.size)
    if zlib.crc32(view[: -_CRC.size]) != stored_crc and not PLANTED.skip_checksum:
        raise StorageCorrupted(f"value of {key!r} fails its checksum")
    if value[0] != FORMAT_VERSION:
        raise StorageCorrupted(
            f"value of {key!r} has format version {value[0]}, not {FORMAT_VERSION}"
        )
    return view[1 : -_CRC.size]


def checked_records(records: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    """The records as they are, each checked against its seal as it is read, so a value
    damaged on the disk or on its way back stops a copy of the store (a Raft snapshot, a
    backup) there instead of reaching whoever installs it.

    Raises:
        StorageCorrupted: a value fails its seal.
    """
    for key, value in records:
        unseal(key, value)
        yield key, value


def unpack_exact(key: bytes, layout: struct.Struct, body: memoryview) -> tuple[int, ...]:
    """The fields of a fixed-size body.

    Raises:
        StorageCorrupted: the body has another size than the layout.
    """
    if len(body) != layout.size:
        raise StorageCorrupted(f"value of {key!r} is {len(body)} bytes, expected {layout.size}")
    fields: tuple[int, ...] = layout.unpack(body)
    return fields


def check_u64(name: str, value: object, *, minimum: int = 0) -> None:
    """Refuse anything but an int in ``[minimum, 2**64)`` (bools included).

    Raises:
        ValueError: out of range or not an int.
    """
    if type(value) is not int:
        raise ValueError(f"{name} must be an int, not {type(value).__name__}")
    if not minimum <= value <= U64_MAX:
        raise ValueError(f"{name} must be in [{minimum}, 2**64), not {value}")
