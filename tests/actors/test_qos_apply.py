"""The state machine's per-tenant QoS: ``QOS`` entries, space quotas enforced at apply (a
refused write changes nothing), and the table in the applied state and Raft snapshots."""

from __future__ import annotations

from google.protobuf.message import Message

from actors.envelope import Envelope, EnvelopeKind, RequestId
from actors.qos_apply import QUOTA_EXCEEDED_MESSAGE
from actors.raft import ConfState, Entry, SnapshotMetadata
from actors.state_machine import SNAPSHOT_QOS_KEY, StateMachine, decode_snapshot_chunk
from net.etcdpb import raft_internal_pb2, rpc_pb2
from net.v3.errors import RpcError, StatusCode
from storage.applied_state import AppliedState
from storage.kv import MemoryKeyValueStore
from storage.qos import TenantLimits
from storage.qos.limits import encode_delete, encode_set


def _apply(machine: StateMachine, kind: EnvelopeKind, body: bytes) -> object:
    index = machine.applied_index + 1
    data = Envelope(kind, RequestId(1, index), body).encode()
    applied = machine.apply(Entry(index=index, term=1, data=data))
    assert applied is not None
    return applied.result


def _put(machine: StateMachine, key: bytes, value: bytes) -> object:
    request = raft_internal_pb2.InternalRaftRequest(put=rpc_pb2.PutRequest(key=key, value=value))
    return _apply(machine, EnvelopeKind.V3_REQUEST, request.SerializeToString())


def _txn(machine: StateMachine, compare_exists: bytes, puts: list[bytes]) -> object:
    ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=b"v")) for k in puts]
    txn = rpc_pb2.TxnRequest(
        compare=[
            rpc_pb2.Compare(
                key=compare_exists,
                target=rpc_pb2.Compare.VERSION,
                result=rpc_pb2.Compare.GREATER,
                version=0,
            )
        ],
        success=ops,
    )
    request = raft_internal_pb2.InternalRaftRequest(txn=txn)
    return _apply(machine, EnvelopeKind.V3_REQUEST, request.SerializeToString())


def _is_quota_error(outcome: object) -> bool:
    return (
        isinstance(outcome, RpcError)
        and outcome.code is StatusCode.RESOURCE_EXHAUSTED
        and str(outcome) == QUOTA_EXCEEDED_MESSAGE
    )


def test_a_write_past_a_quota_is_refused_and_changes_nothing() -> None:
    machine = StateMachine.empty()
    _put(machine, b"/a/0", b"before")
    limits = TenantLimits(keys_max=2)
    assert _apply(machine, EnvelopeKind.QOS, encode_set(b"/a/", limits)) is None
    assert isinstance(_put(machine, b"/a/1", b"v"), Message)
    revision = machine.mvcc.current_revision
    assert _is_quota_error(_put(machine, b"/a/2", b"v"))
    assert _is_quota_error(_txn(machine, b"/a/0", [b"/b/x", b"/a/3"]))  # the branch that runs
    assert machine.mvcc.current_revision == revision
    assert machine.take_kv_events()[-1].revision == revision  # no event for a refused write
    assert isinstance(_txn(machine, b"/missing", [b"/a/3"]), Message)  # a failure branch: empty
    assert isinstance(_put(machine, b"/a/1", b"an overwrite"), Message)
    assert isinstance(_put(machine, b"/b/1", b"another tenant"), Message)
    assert _apply(machine, EnvelopeKind.QOS, encode_delete(b"/a/")) is None
    assert isinstance(_put(machine, b"/a/2", b"v"), Message)


def test_a_bad_qos_entry_is_an_error_and_changes_nothing() -> None:
    machine = StateMachine.empty()
    outcome = _apply(machine, EnvelopeKind.QOS, encode_delete(b"/never/"))
    assert isinstance(outcome, RpcError) and outcome.code is StatusCode.INVALID_ARGUMENT
    assert len(machine.qos.table) == 0


async def test_limits_and_usage_travel_in_snapshots_and_survive_a_restart() -> None:
    kv = MemoryKeyValueStore()
    applied = AppliedState(kv)
    leader = StateMachine.empty()
    _apply(leader, EnvelopeKind.QOS, encode_set(b"/a/", TenantLimits(keys_max=1)))
    _put(leader, b"/a/1", b"v")
    await leader.persist(applied)
    bodies = list(leader.snapshot_chunks(kv, applied))
    assert SNAPSHOT_QOS_KEY in [key for body in bodies for key, _ in decode_snapshot_chunk(body)]

    target_kv = MemoryKeyValueStore()
    lagging = StateMachine.empty()
    metadata = SnapshotMetadata(leader.applied_index, 2, ConfState((1, 2, 3), ()))
    await lagging.install_snapshot(target_kv, AppliedState(target_kv), metadata, bodies)
    assert lagging.qos.table.tenants == leader.qos.table.tenants
    assert _is_quota_error(_put(lagging, b"/a/2", b"v"))

    restarted = StateMachine.load(kv, AppliedState(kv))
    assert restarted.qos.table.tenants == {b"/a/": TenantLimits(keys_max=1)}
    assert restarted.qos.usage.usage[b"/a/"].keys == 1
    assert _is_quota_error(_put(restarted, b"/a/2", b"v"))


def _grant(machine: StateMachine, lease_id: int) -> None:
    request = raft_internal_pb2.InternalRaftRequest(
        lease_grant=rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=60)
    )
    outcome = _apply(machine, EnvelopeKind.V3_REQUEST, request.SerializeToString())
    assert isinstance(outcome, Message)


def _put_leased(machine: StateMachine, key: bytes, lease_id: int) -> object:
    put = rpc_pb2.PutRequest(key=key, value=b"v", lease=lease_id)
    request = raft_internal_pb2.InternalRaftRequest(put=put)
    return _apply(machine, EnvelopeKind.V3_REQUEST, request.SerializeToString())


def _txn_leased(machine: StateMachine, key: bytes, lease_id: int) -> object:
    put = rpc_pb2.PutRequest(key=key, value=b"v", lease=lease_id)
    txn = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=put)])
    request = raft_internal_pb2.InternalRaftRequest(txn=txn)
    return _apply(machine, EnvelopeKind.V3_REQUEST, request.SerializeToString())


def _revoke(machine: StateMachine, lease_id: int) -> object:
    revoke = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
    request = raft_internal_pb2.InternalRaftRequest(lease_revoke=revoke)
    return _apply(machine, EnvelopeKind.V3_REQUEST, request.SerializeToString())


def _leased_tenant(machine: StateMachine) -> None:
    """/a/ at leases_max 2 holding leases 1 and 2 (3 and 4 granted, unattached)."""
    for lease_id in (1, 2, 3, 4):
        _grant(machine, lease_id)
    assert _apply(machine, EnvelopeKind.QOS, encode_set(b"/a/", TenantLimits(leases_max=2))) is None
    for key, lease_id in ((b"/a/1", 1), (b"/a/2", 2), (b"/a/3", 2)):
        assert isinstance(_put_leased(machine, key, lease_id), Message)


def test_a_put_or_txn_attaching_a_lease_past_leases_max_is_refused_on_every_member() -> None:
    members = [StateMachine.empty() for _ in range(3)]
    for machine in members:
        _leased_tenant(machine)
        revision = machine.mvcc.current_revision
        assert _is_quota_error(_put_leased(machine, b"/a/4", 3))
        assert _is_quota_error(_txn_leased(machine, b"/a/1", 4))  # moving a key to a new lease
        assert machine.mvcc.current_revision == revision  # nothing changed
        lease = machine.leases.get(3)
        assert lease is not None and not lease.keys  # the refused put attached nothing
        assert isinstance(_put_leased(machine, b"/a/4", 1), Message)  # a lease it holds
        assert isinstance(_put_leased(machine, b"/b/1", 3), Message)  # another prefix
        assert isinstance(_revoke(machine, 1), Message)  # deletes /a/1 and /a/4
        assert machine.qos.usage.usage[b"/a/"].leases == {2: 2}
        assert isinstance(_put_leased(machine, b"/a/4", 3), Message)  # room again
    assert len({machine.mvcc.current_revision for machine in members}) == 1
    assert len({str(machine.qos.usage.usage) for machine in members}) == 1


async def test_the_lease_count_survives_a_snapshot_and_a_restart() -> None:
    kv = MemoryKeyValueStore()
    applied = AppliedState(kv)
    leader = StateMachine.empty()
    _leased_tenant(leader)
    await leader.persist(applied)
    bodies = list(leader.snapshot_chunks(kv, applied))

    target_kv = MemoryKeyValueStore()
    lagging = StateMachine.empty()
    metadata = SnapshotMetadata(leader.applied_index, 2, ConfState((1, 2, 3), ()))
    await lagging.install_snapshot(target_kv, AppliedState(target_kv), metadata, bodies)
    restarted = StateMachine.load(kv, AppliedState(kv))
    for machine in (lagging, restarted):
        assert machine.qos.table.tenants == {b"/a/": TenantLimits(leases_max=2)}
        assert machine.qos.usage.usage[b"/a/"].leases == {1: 1, 2: 2}
        assert _is_quota_error(_put_leased(machine, b"/a/9", 3))
        assert isinstance(_put_leased(machine, b"/a/9", 2), Message)
