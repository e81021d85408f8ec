"""The v3 KV API through real members in one process: writes through Raft, linearizable and
serializable reads, restarts, snapshots and compaction, with every member's MVCC state
compared by HashKV."""

from __future__ import annotations

import pytest
import trio

from actors.maintenance_backend import MemberMaintenanceBackend
from actors.member import Member
from actors.v3_backend import MemberV3Backend
from net.etcdpb import rpc_pb2
from net.v3 import errors
from net.v3.errors import RpcError, StatusCode
from tests.actors.cluster_helpers import InProcessCluster, start_cluster


def put(key: bytes, value: bytes) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=key, value=value)


async def settle(cluster: InProcessCluster) -> int:
    """Wait until every member has applied the same index; that index."""
    with trio.fail_after(30):
        while True:
            for member in cluster.members.values():
                await member.confirm_read()
            applied = {member.applied_index() for member in cluster.members.values()}
            if len(applied) == 1:
                return applied.pop()
            await trio.sleep(0.05)


def hashes(cluster: InProcessCluster, revision: int = 0) -> set[tuple[int, int, int]]:
    return {MemberV3Backend(m).hash_kv(revision) for m in cluster.members.values()}


def values(member: Member, key: bytes, range_end: bytes = b"") -> list[tuple[bytes, bytes]]:
    response = member.machine.kv.range(rpc_pb2.RangeRequest(key=key, range_end=range_end))
    return [(kv.key, kv.value) for kv in response.kvs]


async def test_writes_on_a_follower_are_read_linearizably_everywhere(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        follower = MemberV3Backend(next(m for m in cluster.members.values() if m is not leader))
        first = await follower.put(put(b"k", b"one"))
        second = await follower.put(put(b"k", b"two"))
        assert (first.header.revision, second.header.revision) == (2, 3)
        for member in cluster.members.values():
            got = await MemberV3Backend(member).range(rpc_pb2.RangeRequest(key=b"k"))
            assert [(kv.value, kv.version, kv.mod_revision) for kv in got.kvs] == [(b"two", 2, 3)]
        txn = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=b"k", target=rpc_pb2.Compare.VALUE, value=b"two")],
            success=[rpc_pb2.RequestOp(request_put=put(b"k", b"three"))],
        )
        applied = await MemberV3Backend(leader).txn(txn)
        assert applied.succeeded and applied.header.revision == 4
        await settle(cluster)
        assert len(hashes(cluster)) == 1
        nursery.cancel_scope.cancel()


async def test_a_read_only_txn_costs_no_revision(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        backend = MemberV3Backend(await cluster.leader())
        await backend.put(put(b"a", b"1"))
        applied_before = backend.raft_applied_index()
        reply = await backend.txn(
            rpc_pb2.TxnRequest(
                success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"a"))]
            )
        )
        assert reply.succeeded and reply.responses[0].response_range.kvs[0].value == b"1"
        assert backend.revision() == 2 and backend.raft_applied_index() == applied_before
        nursery.cancel_scope.cancel()


async def test_apply_errors_reach_the_proposer_and_change_nothing(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        backend = MemberV3Backend(await cluster.leader())
        with pytest.raises(RpcError) as refused:
            await backend.put(rpc_pb2.PutRequest(key=b"x", ignore_value=True))
        assert refused.value == errors.key_not_found()
        with pytest.raises(RpcError) as leased:
            await backend.put(rpc_pb2.PutRequest(key=b"x", value=b"v", lease=7))
        assert leased.value == errors.lease_not_found()
        assert backend.revision() == 1
        nursery.cancel_scope.cancel()


async def test_a_restarted_member_resumes_at_its_revision(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        backend = MemberV3Backend(leader)
        for number in range(10):
            await backend.put(put(b"k%d" % number, b"%d" % number))
        name = next(n for n, m in cluster.members.items() if m is not leader)
        await settle(cluster)
        cluster.stop(name)
        late = await backend.put(put(b"late", b"x"))
        restarted = await cluster.start(name)
        await settle(cluster)
        assert values(restarted, b"late") == [(b"late", b"x")]
        assert MemberV3Backend(restarted).revision() == late.header.revision == 12
        after = await MemberV3Backend(restarted).put(put(b"after", b"y"))
        assert after.header.revision == 13
        await settle(cluster)
        assert len(hashes(cluster)) == 1
        nursery.cancel_scope.cancel()


async def test_a_lagging_member_catches_up_from_a_snapshot_with_the_mvcc_state(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(
            nursery, snapshot_every_entries=20, snapshot_catch_up_entries=5
        )
        leader = await cluster.leader()
        backend = MemberV3Backend(leader)
        name = next(n for n, m in cluster.members.items() if m is not leader)
        stopped_at = await settle(cluster)
        cluster.stop(name)
        for number in range(60):
            await backend.put(put(b"s/%02d" % number, b"v%d" % number))
        await backend.compact(rpc_pb2.CompactionRequest(revision=30, physical=True))
        assert leader.state.raft_store.first_index() > stopped_at + 1  # only a snapshot helps
        rejoined = await cluster.start(name)
        await settle(cluster)
        assert len(values(rejoined, b"s/", b"s0")) == 60
        assert len(hashes(cluster)) == 1
        with pytest.raises(RpcError) as old:
            await MemberV3Backend(rejoined).range(rpc_pb2.RangeRequest(key=b"s/00", revision=20))
        assert old.value == errors.compacted()
        nursery.cancel_scope.cancel()


async def test_a_physical_compaction_answers_once_it_is_done(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        backend = MemberV3Backend(leader)
        for number in range(50):
            await backend.put(put(b"same", b"%d" % number))
        await backend.compact(rpc_pb2.CompactionRequest(revision=40, physical=True))
        assert not leader.machine.mvcc.compaction_pending
        with pytest.raises(RpcError) as again:
            await backend.compact(rpc_pb2.CompactionRequest(revision=40))
        assert again.value == errors.compacted()
        with pytest.raises(RpcError) as future:
            await backend.compact(rpc_pb2.CompactionRequest(revision=99))
        assert future.value == errors.future_revision()
        await settle(cluster)
        assert len(hashes(cluster, 45)) == 1
        nursery.cancel_scope.cancel()


async def test_a_backup_of_a_damaged_store_is_refused_as_corrupt(autojump_clock: object) -> None:
    """A record that fails its seal stops ``snapshot save`` with etcd's "corrupt cluster"
    instead of reaching a backup: the member checks every record as it reads it."""
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        await MemberV3Backend(leader).put(put(b"k", b"v"))
        await settle(cluster)
        name = next(name for name, member in cluster.members.items() if member is leader)
        backend = MemberMaintenanceBackend(leader)
        assert len(await backend.snapshot()) > 0  # served before the damage
        store = cluster.stores[name]
        key, value = next(store.scan(b"mvcc/", b"mvcc0"))
        store._values[key] = value[:-1] + bytes([value[-1] ^ 1])  # one bit flipped on disk
        with pytest.raises(RpcError) as refused:
            await backend.snapshot()
        assert refused.value == errors.corrupt()
        assert refused.value.code is StatusCode.DATA_LOSS
        nursery.cancel_scope.cancel()
