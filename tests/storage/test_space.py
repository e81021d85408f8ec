"""storage.space: when a member refuses new writes for want of room."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from actors.v3_backend import _adds_data
from net.etcdpb import raft_internal_pb2, rpc_pb2
from storage.kv import MemoryKeyValueStore, RocksKeyValueStore, WriteBatch
from storage.space import (
    CHECK_EVERY_WRITES,
    DISK_RESERVE_BYTES_DEFAULT,
    QUOTA_BACKEND_BYTES_DEFAULT,
    SpaceGuard,
    write_refusal,
)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def test_room_on_the_disk_and_under_the_quota_refuses_nothing(tmp_path: Path) -> None:
    guard = SpaceGuard(tmp_path, reserve_bytes=0, quota_bytes=1000)
    assert guard.problem(1000) is None


def test_a_store_over_the_quota_is_refused(tmp_path: Path) -> None:
    problem = SpaceGuard(tmp_path, reserve_bytes=0, quota_bytes=1000).problem(1001)
    assert problem is not None and "over the quota of 1000" in problem


def test_a_disk_under_the_reserve_is_refused_and_room_lifts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Another test in the same worker may have left the root logger at ERROR (troika serve's
    # --log-level): this logger's own level decides what reaches caplog.
    caplog.set_level(logging.WARNING, logger="storage.space")
    guard = SpaceGuard(tmp_path, reserve_bytes=free_bytes(tmp_path) * 2)
    problem = guard.check(0)
    assert problem is not None and "kept in reserve" in problem and str(tmp_path) in problem
    assert guard.check(0) is not None
    guard.reserve_bytes = 0  # as if space was freed
    assert guard.check(0) is None
    messages = [record.getMessage() for record in caplog.records]
    assert sum("refusing writes (NOSPACE)" in message for message in messages) == 1
    assert sum("taking writes again" in message for message in messages) == 1


def test_the_environment_sets_the_reserve_and_the_quota(tmp_path: Path) -> None:
    guard = SpaceGuard.from_environment(
        tmp_path, {"TROIKA_DISK_RESERVE_BYTES": "123", "TROIKA_QUOTA_BACKEND_BYTES": " 456 "}
    )
    assert (guard.reserve_bytes, guard.quota_bytes) == (123, 456)
    default = SpaceGuard.from_environment(tmp_path, {})
    assert (default.reserve_bytes, default.quota_bytes) == (
        DISK_RESERVE_BYTES_DEFAULT,
        QUOTA_BACKEND_BYTES_DEFAULT,
    )
    with pytest.raises(ValueError, match="TROIKA_DISK_RESERVE_BYTES"):
        SpaceGuard.from_environment(tmp_path, {"TROIKA_DISK_RESERVE_BYTES": "1e6"})


class SizedStore:
    """A store as ``write_refusal`` sees one, counting the looks at its size."""

    def __init__(self, space: SpaceGuard, size: int) -> None:
        self.space = space
        self.size = size
        self.looks = 0

    def size_bytes(self) -> tuple[int, int]:
        self.looks += 1
        return self.size, self.size


def test_far_from_the_limits_only_every_nth_write_looks(tmp_path: Path) -> None:
    store = SizedStore(SpaceGuard(tmp_path, reserve_bytes=0, quota_bytes=2**40), size=0)
    for _ in range(2 * CHECK_EVERY_WRITES):
        assert write_refusal(store) is None
    assert store.looks == 2
    store.space.quota_bytes = 1  # a new limit ends the skipping at once
    store.size = 10
    problem = write_refusal(store)
    assert problem is not None and "over the quota of 1" in problem


def test_near_a_limit_every_write_looks(tmp_path: Path) -> None:
    store = SizedStore(SpaceGuard(tmp_path, reserve_bytes=0, quota_bytes=2**20), size=0)
    for _ in range(5):
        assert write_refusal(store) is None
    assert store.looks == 5
    store.size = 2**20 + 1
    assert write_refusal(store) is not None
    assert write_refusal(store) is not None
    assert store.looks == 7


def test_only_a_rocksdb_store_carries_a_guard(tmp_path: Path) -> None:
    assert write_refusal(MemoryKeyValueStore()) is None
    store = RocksKeyValueStore(tmp_path / "db", space=SpaceGuard(tmp_path, reserve_bytes=0))
    try:
        assert write_refusal(store) is None
        batch = WriteBatch()
        batch.put(b"key", b"value" * 100)
        store.apply(batch)
        store.space.quota_bytes = 1
        problem = write_refusal(store)
        assert problem is not None and "over the quota of 1" in problem
    finally:
        store.close()


Internal = raft_internal_pb2.InternalRaftRequest


def put(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"v"))


def delete(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))


@pytest.mark.parametrize(
    ("request_", "refused"),
    [
        (raft_internal_pb2.InternalRaftRequest(put=rpc_pb2.PutRequest(key=b"k")), True),
        (raft_internal_pb2.InternalRaftRequest(lease_grant=rpc_pb2.LeaseGrantRequest(TTL=5)), True),
        (raft_internal_pb2.InternalRaftRequest(txn=rpc_pb2.TxnRequest(failure=[put(b"k")])), True),
        (
            raft_internal_pb2.InternalRaftRequest(
                txn=rpc_pb2.TxnRequest(
                    success=[rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[put(b"k")]))]
                )
            ),
            True,
        ),
        (
            raft_internal_pb2.InternalRaftRequest(txn=rpc_pb2.TxnRequest(success=[delete(b"k")])),
            False,
        ),
        (
            raft_internal_pb2.InternalRaftRequest(
                delete_range=rpc_pb2.DeleteRangeRequest(key=b"k")
            ),
            False,
        ),
        (
            raft_internal_pb2.InternalRaftRequest(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=1)),
            False,
        ),
    ],
)
def test_nospace_refuses_what_etcd_refuses(
    request_: raft_internal_pb2.InternalRaftRequest, refused: bool
) -> None:
    assert _adds_data(request_) is refused
