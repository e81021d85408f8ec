"""actors.alarms: the alarm table as etcd applies AlarmRequests, and which writes NOSPACE
refuses."""

from __future__ import annotations

import cbor2

from actors.alarms import AlarmTable, adds_data
from actors.raft import ConfState, SnapshotMetadata
from actors.state_machine import SNAPSHOT_ALARMS_KEY, StateMachine, decode_snapshot_chunk
from net.etcdpb import raft_internal_pb2, rpc_pb2
from storage.applied_state import AppliedState
from storage.auth.store import PREFIX as AUTH_PREFIX
from storage.kv import MemoryKeyValueStore

GET = rpc_pb2.AlarmRequest.GET
ACTIVATE = rpc_pb2.AlarmRequest.ACTIVATE
DEACTIVATE = rpc_pb2.AlarmRequest.DEACTIVATE


def alarm(action: int, member_id: int = 5, kind: int = rpc_pb2.NOSPACE) -> rpc_pb2.AlarmRequest:
    return rpc_pb2.AlarmRequest(action=action, memberID=member_id, alarm=kind)  # type: ignore[arg-type]


def listed(response: rpc_pb2.AlarmResponse) -> list[tuple[int, int]]:
    return [(a.memberID, a.alarm) for a in response.alarms]


def test_activate_get_deactivate_as_etcd_answers() -> None:
    table = AlarmTable()
    assert listed(table.apply(alarm(GET))) == []
    assert listed(table.apply(alarm(ACTIVATE))) == [(5, rpc_pb2.NOSPACE)]
    assert listed(table.apply(alarm(ACTIVATE))) == []  # already active: nothing changed
    assert listed(table.apply(alarm(ACTIVATE, 6, rpc_pb2.CORRUPT))) == [(6, rpc_pb2.CORRUPT)]
    assert listed(table.apply(alarm(GET, 0, rpc_pb2.NONE))) == [
        (5, rpc_pb2.NOSPACE),
        (6, rpc_pb2.CORRUPT),
    ]
    assert listed(table.apply(alarm(GET, 0, rpc_pb2.CORRUPT))) == [(6, rpc_pb2.CORRUPT)]
    assert listed(table.apply(alarm(ACTIVATE, 7, rpc_pb2.NONE))) == []
    assert table.no_space()
    assert listed(table.apply(alarm(DEACTIVATE))) == [(5, rpc_pb2.NOSPACE)]
    assert listed(table.apply(alarm(DEACTIVATE))) == []
    assert not table.no_space()
    assert AlarmTable.decode(table.encode()).active() == table.active()


def test_nospace_refuses_what_adds_data_only() -> None:
    put = raft_internal_pb2.InternalRaftRequest(put=rpc_pb2.PutRequest(key=b"k"))
    txn_put = rpc_pb2.TxnRequest(
        failure=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k"))]
    )
    txn_read = rpc_pb2.TxnRequest(
        success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"k"))]
    )
    grant = raft_internal_pb2.InternalRaftRequest(lease_grant=rpc_pb2.LeaseGrantRequest(TTL=5))
    delete = raft_internal_pb2.InternalRaftRequest(
        delete_range=rpc_pb2.DeleteRangeRequest(key=b"k")
    )
    compact = raft_internal_pb2.InternalRaftRequest(compaction=rpc_pb2.CompactionRequest())
    for refused in (put, grant, raft_internal_pb2.InternalRaftRequest(txn=txn_put)):
        assert adds_data(refused)
    for allowed in (delete, compact, raft_internal_pb2.InternalRaftRequest(txn=txn_read)):
        assert not adds_data(allowed)


async def test_alarms_and_auth_travel_in_raft_snapshots_and_survive_a_restart() -> None:
    """A member that installs a snapshot (it was down while NOSPACE was raised) holds the
    alarms and the users of the member that made it, persisted: a restart keeps them. A
    snapshot from before alarms travelled (no alarm record) installs an empty table."""
    kv = MemoryKeyValueStore()
    applied = AppliedState(kv)
    leader = StateMachine.empty()
    leader.alarms.apply(alarm(ACTIVATE, 7))
    leader.auth.store.user_add("alice", b"hash", no_password=False)
    leader.applied_index = 30
    await leader.persist(applied)
    bodies = list(leader.snapshot_chunks(kv, applied))
    keys = [key for body in bodies for key, _ in decode_snapshot_chunk(body)]
    assert SNAPSHOT_ALARMS_KEY in keys
    assert any(key.startswith(AUTH_PREFIX) for key in keys)

    target_kv = MemoryKeyValueStore()
    target_applied = AppliedState(target_kv)
    lagging = StateMachine.empty()
    metadata = SnapshotMetadata(30, 2, ConfState((1, 2, 3), ()))
    await lagging.install_snapshot(target_kv, target_applied, metadata, bodies)
    assert lagging.alarms.active() == [(7, rpc_pb2.NOSPACE)]
    assert lagging.auth.store.user_list() == ["alice"]
    restarted = StateMachine.load(target_kv, AppliedState(target_kv))
    assert restarted.alarms.no_space()
    assert restarted.auth.store.user_list() == ["alice"]

    old = [cbor2.dumps([[k, v] for k, v in decode_snapshot_chunk(body) if k != SNAPSHOT_ALARMS_KEY])
           for body in bodies]  # fmt: skip
    again = StateMachine.empty()
    again.alarms.apply(alarm(ACTIVATE, 9))  # a stale alarm of its own: replaced
    await again.install_snapshot(
        MemoryKeyValueStore(), AppliedState(MemoryKeyValueStore()), metadata, old
    )
    assert again.alarms.active() == []
