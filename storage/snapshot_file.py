"""A backup of a member's v3 state: what Maintenance.Snapshot streams and restore reads back.

Why a format of our own: etcd's snapshot is its bbolt file, which troika does not have. What a
client does with the stream is the same: ``etcdctl snapshot save`` writes every byte it
receives to the file and checks that a SHA-256 trails it (etcd's server sends the digest of the
database as the stream's last message); ``troika snapshot restore`` checks that digest again
and builds a new cluster's data directory from the records.

Layout (all of it, then the digest)::

    MAGIC (16 bytes)
    frame*          u32 big-endian length, then that many bytes of CBOR
    zero bytes      up to a multiple of PAGE_BYTES (a zero length ends the frames)
    sha256 (32 bytes) of everything before it

The padding is there for ``etcdctl snapshot save``: it takes a stream as a database followed
by its digest only if its length is a multiple of 512 plus 32 (bbolt files are whole pages).

The first frame is the header, a CBOR map (``SnapshotHeader``): the format version, the
member and cluster it was taken from, its applied Raft index, the MVCC revision and compact
revision, and how many records follow. Every later frame is a CBOR list of ``[key, value]``
pairs, in ascending key order across frames, each key under one of ``RECORD_PREFIXES`` (the
auth store's, the lease table's and the MVCC store's records, as they are stored). v2 data and
the member table are not in it: etcd's restore does not bring back v2 data, and the members
come from the restore's flags.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import cbor2

MAGIC: Final = b"troika-snapshot1"
FORMAT_VERSION: Final = 1
DIGEST_BYTES: Final = 32
FRAME_HEADER_BYTES: Final = 4
FRAME_BYTES_MAX: Final = 8 * 1024 * 1024
"""A frame longer than this is refused when reading (frames are cut at ``FRAME_BYTES``)."""
FRAME_BYTES: Final = 1024 * 1024
"""Records are cut into frames of about this many key and value bytes."""
RECORD_PREFIXES: Final = (b"auth/", b"lease/", b"mvcc/")
"""The records a snapshot holds (``actors.state_machine``'s auth, lease and MVCC prefixes, in
key order): users and roles come back with a restore, as from etcd's bbolt file."""
READ_BYTES: Final = 64 * 1024
PAGE_BYTES: Final = 512
"""The body is padded to a multiple of this (``etcdctl snapshot save``'s ``hasChecksum``)."""


class SnapshotFileError(ValueError):
    """The file is not a troika snapshot, or it is damaged (its message says how)."""


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """What a snapshot says about itself.

    Attributes:
        cluster_id / member_id: where it was taken.
        applied_index: the Raft index its state is as of.
        revision / compact_revision: the MVCC store's, at that index.
        records: how many ``[key, value]`` records follow.
    """

    cluster_id: int
    member_id: int
    applied_index: int
    revision: int
    compact_revision: int
    records: int

    def encode(self) -> bytes:
        return cbor2.dumps(
            {
                "format": FORMAT_VERSION,
                "cluster_id": self.cluster_id,
                "member_id": self.member_id,
                "applied_index": self.applied_index,
                "revision": self.revision,
                "compact_revision": self.compact_revision,
                "records": self.records,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> SnapshotHeader:
        """Raises SnapshotFileError: not a header of this format."""
        item = _loads(data)
        if not isinstance(item, dict) or item.get("format") != FORMAT_VERSION:
            raise SnapshotFileError("the snapshot header is not of format 1")
        fields = ("cluster_id", "member_id", "applied_index", "revision", "compact_revision")
        values: list[int] = []
        for name in (*fields, "records"):
            value = item.get(name)
            if type(value) is not int or value < 0:
                raise SnapshotFileError(f"the snapshot header's {name} is malformed")
            values.append(value)
        return cls(*values)


def encode_frame(body: bytes) -> bytes:
    """One length-prefixed frame."""
    assert len(body) <= FRAME_BYTES_MAX, len(body)
    return len(body).to_bytes(FRAME_HEADER_BYTES, "big") + body


def snapshot_body(header: SnapshotHeader, records: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Everything but the digest: the magic, the header frame, the record frames.

    Raises:
        ValueError: a record is outside ``RECORD_PREFIXES``, out of order, too large, or the
            count differs from the header's.
    """
    parts = [MAGIC, encode_frame(header.encode())]
    count = 0
    for frame in record_frames(records):
        parts.append(encode_frame(frame))
        count += len(cbor2.loads(frame))
    if count != header.records:
        raise ValueError(f"the header says {header.records} records, {count} were given")
    size_bytes = sum(map(len, parts))
    parts.append(bytes(-size_bytes % PAGE_BYTES))
    return b"".join(parts)


def record_frames(records: Iterable[tuple[bytes, bytes]]) -> Iterator[bytes]:
    """Records as CBOR frame bodies of about ``FRAME_BYTES`` each (none when no records)."""
    pairs: list[list[bytes]] = []
    size_bytes = 0
    previous: bytes | None = None
    for key, value in records:
        _check_record(key, value, previous)
        previous = key
        if pairs and size_bytes + len(key) + len(value) > FRAME_BYTES:
            yield cbor2.dumps(pairs)
            pairs, size_bytes = [], 0
        pairs.append([key, value])
        size_bytes += len(key) + len(value)
    if pairs:
        yield cbor2.dumps(pairs)


def _check_record(key: bytes, value: bytes, previous: bytes | None) -> None:
    if type(key) is not bytes or type(value) is not bytes:
        raise SnapshotFileError("snapshot records must be bytes")
    if not key.startswith(RECORD_PREFIXES):
        raise SnapshotFileError(f"snapshot record {key!r} is not MVCC or lease data")
    if previous is not None and key <= previous:
        raise SnapshotFileError("snapshot records are not in key order")
    if len(key) + len(value) > FRAME_BYTES_MAX // 2:
        raise SnapshotFileError(f"snapshot record {key!r} is too large")


def with_digest(body: bytes) -> bytes:
    """``body`` with its SHA-256 after it (what ``etcdctl snapshot save`` writes)."""
    return body + hashlib.sha256(body).digest()


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A snapshot read back and checked: its header and its records."""

    header: SnapshotHeader
    records: tuple[tuple[bytes, bytes], ...]
    size_bytes: int
    digest: bytes


def read_snapshot(path: Path) -> SnapshotFile:
    """Read and check a snapshot file: the trailing SHA-256, the magic, every frame.

    Raises:
        SnapshotFileError: too short, a digest that does not match, not our format, or a
            malformed frame or record (the message says which).
        OSError: the file cannot be read.
    """
    with path.open("rb") as file:
        data = _read_all(file)
    return parse_snapshot(data)


def _read_all(file: BinaryIO) -> bytes:
    chunks = []
    while chunk := file.read(READ_BYTES):
        chunks.append(chunk)
    return b"".join(chunks)


def parse_snapshot(data: bytes) -> SnapshotFile:
    """``read_snapshot`` of bytes in memory."""
    if len(data) < len(MAGIC) + DIGEST_BYTES:
        raise SnapshotFileError(f"{len(data)} bytes: too short to be a snapshot")
    body, digest = data[:-DIGEST_BYTES], data[-DIGEST_BYTES:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotFileError("the snapshot's sha256 does not match its content")
    if not body.startswith(MAGIC):
        raise SnapshotFileError("not a troika snapshot (an etcd bbolt file is not restored)")
    frames = list(_frames(body, len(MAGIC)))
    if not frames:
        raise SnapshotFileError("the snapshot has no header")
    header = SnapshotHeader.decode(frames[0])
    records: list[tuple[bytes, bytes]] = []
    for frame in frames[1:]:
        item = _loads(frame)
        if not isinstance(item, list):
            raise SnapshotFileError("a record frame must be a list of [key, value]")
        for pair in item:
            if not isinstance(pair, list) or len(pair) != 2:
                raise SnapshotFileError("a record must be [key, value]")
            key, value = pair
            _check_record(key, value, records[-1][0] if records else None)
            records.append((key, value))
    if len(records) != header.records:
        raise SnapshotFileError(f"the header says {header.records} records, found {len(records)}")
    return SnapshotFile(header, tuple(records), len(data), digest)


def _frames(body: bytes, offset: int) -> Iterator[bytes]:
    while offset < len(body):
        rest = body[offset:]
        if len(rest) < FRAME_HEADER_BYTES or not any(rest[:FRAME_HEADER_BYTES]):
            if any(rest):
                raise SnapshotFileError(
                    "the snapshot ends inside a frame, or its padding is not zeros"
                )
            return
        length = int.from_bytes(rest[:FRAME_HEADER_BYTES], "big")
        offset += FRAME_HEADER_BYTES
        if length > FRAME_BYTES_MAX or offset + length > len(body):
            raise SnapshotFileError(f"a frame of {length} bytes runs past the snapshot's end")
        yield body[offset : offset + length]
        offset += length


def _loads(data: bytes) -> Any:
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as error:
        raise SnapshotFileError(f"a snapshot frame is not cbor: {error}") from None
