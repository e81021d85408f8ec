"""KvApplier: the log's entry point, leases, totality on input the service would refuse."""

from __future__ import annotations

from actors.kv_applier import KvApplier
from net.etcdpb import raft_internal_pb2, rpc_pb2
from net.v3 import errors
from storage.mvcc import EventType, MvccStore

Put = rpc_pb2.PutRequest
Range = rpc_pb2.RangeRequest
Compare = rpc_pb2.Compare
RequestOp = rpc_pb2.RequestOp


def internal(**fields: object) -> raft_internal_pb2.InternalRaftRequest:
    return raft_internal_pb2.InternalRaftRequest(**fields)  # type: ignore[arg-type]


def test_apply_dispatches_and_returns_errors_as_values() -> None:
    applier = KvApplier(MvccStore())
    put = applier.apply(internal(put=Put(key=b"k", value=b"v")))
    assert isinstance(put, rpc_pb2.PutResponse)
    assert put.header.revision == 2
    assert applier.apply(internal(put=Put(key=b"k", value=b"v", lease=9))) == (
        errors.lease_not_found()
    )
    compacted = applier.apply(internal(compaction=rpc_pb2.CompactionRequest(revision=2)))
    assert isinstance(compacted, rpc_pb2.CompactionResponse)
    assert compacted.header.revision == 2
    assert applier.apply(internal(compaction=rpc_pb2.CompactionRequest(revision=2))) == (
        errors.compacted()
    )
    found = applier.apply(internal(range=Range(key=b"k")))
    assert isinstance(found, rpc_pb2.RangeResponse)
    assert [kv.value for kv in found.kvs] == [b"v"]
    deleted = applier.apply(internal(delete_range=rpc_pb2.DeleteRangeRequest(key=b"k")))
    assert isinstance(deleted, rpc_pb2.DeleteRangeResponse)
    assert (deleted.deleted, deleted.header.revision) == (1, 3)
    txn = applier.apply(internal(txn=rpc_pb2.TxnRequest()))
    assert isinstance(txn, rpc_pb2.TxnResponse)
    assert txn.succeeded
    assert txn.header.revision == 3
    grant = internal(lease_grant=rpc_pb2.LeaseGrantRequest(TTL=5, ID=1))
    assert applier.apply(grant) is None  # not a KV request
    assert applier.apply(internal()) is None


def test_leases_that_exist_attach_and_compare() -> None:
    applier = KvApplier(MvccStore(), lease_exists=lambda lease: lease == 7)
    applier.put(Put(key=b"k", value=b"v", lease=7))
    assert applier.range(Range(key=b"k")).kvs[0].lease == 7
    kept = applier.put(Put(key=b"k", value=b"w", ignore_lease=True, prev_kv=True))
    assert kept.prev_kv.lease == 7
    assert applier.range(Range(key=b"k")).kvs[0].lease == 7
    applier.put(Put(key=b"k", value=b"x"))  # lease 0 detaches
    assert applier.range(Range(key=b"k")).kvs[0].lease == 0
    compare = Compare(key=b"k", target=Compare.LEASE, result=Compare.LESS, lease=7)
    response = applier.txn(
        rpc_pb2.TxnRequest(
            compare=[compare],
            success=[RequestOp(request_put=Put(key=b"j", value=b"1", lease=7))],
        )
    )
    assert response.succeeded
    assert applier.range(Range(key=b"j")).kvs[0].lease == 7


def test_a_txn_is_one_revision_and_one_batch_of_events() -> None:
    store = MvccStore()
    applier = KvApplier(store)
    ops = [RequestOp(request_put=Put(key=b"k%d" % n, value=b"v")) for n in range(3)]
    ops.append(RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"k1")))
    response = applier.txn(rpc_pb2.TxnRequest(success=ops))
    assert response.header.revision == 2 == store.current_revision
    [batch] = store.take_events()
    assert batch.revision == 2
    assert [event.type for event in batch.events] == [EventType.PUT] * 3 + [EventType.DELETE]


def test_a_read_only_txn_does_not_move_the_revision() -> None:
    store = MvccStore()
    applier = KvApplier(store)
    applier.put(Put(key=b"k", value=b"v"))
    only_reads = [RequestOp(request_range=Range(key=b"k"))] * 2
    response = applier.txn(rpc_pb2.TxnRequest(success=only_reads))
    assert response.header.revision == 2 == store.current_revision
    assert [op.response_range.header.revision for op in response.responses] == [2, 2]


def test_input_the_service_refuses_does_not_crash() -> None:
    store = MvccStore()
    applier = KvApplier(store)
    applier.put(Put(key=b"k", value=b"v"))
    weird = rpc_pb2.TxnRequest(
        compare=[Compare(key=b"k", target=9, result=9)],  # type: ignore[arg-type]
        success=[
            RequestOp(),  # an empty union
            RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"k")),
            RequestOp(request_put=Put(key=b"k", ignore_value=True)),  # a duplicate key
            RequestOp(request_range=Range(key=b"k", sort_order=7, sort_target=9)),  # type: ignore[arg-type]
        ],
    )
    response = applier.txn(weird)
    assert response.succeeded  # an unknown operator compares as true, as in etcd
    assert len(response.responses) == 4
    assert store.current_revision == 3
    assert [kv.value for kv in applier.range(Range(key=b"k")).kvs] == [b""]
    empty = applier.put(Put())
    assert empty.header.revision == 4


def test_sort_ties_keep_key_order_and_limit_cuts_after_sorting() -> None:
    applier = KvApplier(MvccStore())
    for key in (b"c", b"a", b"b"):
        applier.put(Put(key=key, value=b"same"))
    applier.put(Put(key=b"a", value=b"same"))
    by_version = applier.range(
        Range(key=b"a", range_end=b"z", sort_target=Range.VERSION, sort_order=Range.DESCEND)
    )
    assert [kv.key for kv in by_version.kvs] == [b"a", b"b", b"c"]
    by_value = applier.range(Range(key=b"a", range_end=b"z", sort_target=Range.VALUE, limit=2))
    assert [kv.key for kv in by_value.kvs] == [b"a", b"b"]
    assert (by_value.more, by_value.count) == (True, 3)
