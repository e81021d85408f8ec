"""storage.snapshot_file: a snapshot body read back whole, and every kind of damage refused."""

from __future__ import annotations

import hashlib

import pytest

from storage.snapshot_file import (
    DIGEST_BYTES,
    PAGE_BYTES,
    SnapshotFileError,
    SnapshotHeader,
    parse_snapshot,
    snapshot_body,
    with_digest,
)

RECORDS = [(b"lease/1", b"l"), *((f"mvcc/{n:04}".encode(), b"v" * 300) for n in range(5000))]
HEADER = SnapshotHeader(1, 2, 30, 5001, 7, len(RECORDS))


def test_a_snapshot_reads_back_whole_and_is_etcdctl_sized() -> None:
    data = with_digest(snapshot_body(HEADER, RECORDS))
    assert len(data) % PAGE_BYTES == DIGEST_BYTES  # etcdctl snapshot save's hasChecksum
    parsed = parse_snapshot(data)
    assert parsed.header == HEADER
    assert list(parsed.records) == RECORDS
    assert parsed.digest == hashlib.sha256(data[:-DIGEST_BYTES]).digest()


def test_an_empty_store_is_a_snapshot_too() -> None:
    header = SnapshotHeader(1, 2, 1, 1, 0, 0)
    assert parse_snapshot(with_digest(snapshot_body(header, []))).records == ()


@pytest.mark.parametrize("position", [0, 20, 5000, -40])
def test_a_flipped_byte_is_caught_by_the_digest(position: int) -> None:
    data = bytearray(with_digest(snapshot_body(HEADER, RECORDS)))
    data[position] ^= 0x01
    with pytest.raises(SnapshotFileError, match="sha256"):
        parse_snapshot(bytes(data))


def test_damage_behind_a_recomputed_digest_is_caught_by_the_frames() -> None:
    body = bytearray(snapshot_body(HEADER, RECORDS))
    body[16:20] = (10**7).to_bytes(4, "big")  # the header frame's length
    with pytest.raises(SnapshotFileError, match="runs past"):
        parse_snapshot(with_digest(bytes(body)))
    with pytest.raises(SnapshotFileError, match="not a troika snapshot"):
        parse_snapshot(with_digest(b"\0" * 4096))  # an etcd bbolt file starts otherwise
    with pytest.raises(SnapshotFileError, match="too short"):
        parse_snapshot(b"abc")


@pytest.mark.parametrize(
    ("records", "problem"),
    [
        ([(b"v2/x", b"1")], "not MVCC or lease"),
        ([(b"mvcc/b", b"1"), (b"mvcc/a", b"1")], "key order"),
    ],
)
def test_records_outside_the_v3_state_are_refused(
    records: list[tuple[bytes, bytes]], problem: str
) -> None:
    with pytest.raises(SnapshotFileError, match=problem):
        snapshot_body(SnapshotHeader(1, 2, 3, 4, 0, len(records)), records)
