"""The v3 service: etcd 3.4's checks before proposing, header filling, the methods table.

``FakeV3Backend`` is an in-memory KV (a dict and a revision counter) that exercises the
plumbing; MVCC semantics are tested with the real store elsewhere.
"""

from __future__ import annotations

import zlib

import pytest

from net.backend import BackendBusy, BackendError, BackendTimeout, MemberInfo, NoLeader
from net.etcdpb import kv_pb2, rpc_pb2
from net.etcdpb.routes import grpc_path
from net.v3 import errors
from net.v3.errors import RpcError, StatusCode
from net.v3.methods import CallContext, UnaryMethod
from net.v3.service import (
    MAX_REQUEST_BYTES_DEFAULT,
    ServiceLimits,
    V3Service,
    check_txn,
    proposal_bytes,
    v3_methods,
)

CLUSTER_ID = 15982699985640266139
MEMBER_ID = 7101852577860610209
SELF = MemberInfo(MEMBER_ID, "n1", ("http://127.0.0.1:23800",), ("http://127.0.0.1:23790",))
OTHER = MemberInfo(0x91406527CEFE73C, "", ("http://127.0.0.1:23802",), (), is_learner=True)


def _in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


class FakeV3Backend:
    """A one-member cluster over a dict: revisions, prev_kv, txn with simple compares."""

    def __init__(self) -> None:
        self.kvs: dict[bytes, kv_pb2.KeyValue] = {}
        self.rev = 1
        self.compacted = 0
        self.term = 3
        self.learner = False
        self.leader_member: MemberInfo | None = SELF
        self.failure: Exception | None = None
        self.requests: list[object] = []

    @property
    def cluster_id(self) -> int:
        return CLUSTER_ID

    @property
    def member_id(self) -> int:
        return MEMBER_ID

    def raft_term(self) -> int:
        return self.term

    def raft_index(self) -> int:
        return 1190

    def raft_applied_index(self) -> int:
        return 1189

    def revision(self) -> int:
        return self.rev

    def members(self) -> list[MemberInfo]:
        return [OTHER, SELF]

    def leader(self) -> MemberInfo | None:
        return self.leader_member

    def is_learner(self) -> bool:
        return self.learner

    def version(self) -> tuple[str, str]:
        return ("3.4.23", "3.4.0")

    def db_size_bytes(self) -> tuple[int, int]:
        return (20480, 16384)

    def hash_kv(self, revision: int) -> tuple[int, int, int]:
        if revision > self.rev:
            raise errors.future_revision()
        return (zlib.crc32(repr(sorted(self.kvs.items())).encode()), -1, self.rev)

    def _begin(self, request: object) -> None:
        self.requests.append(request)
        if self.failure is not None:
            raise self.failure

    # reads and writes at the current revision

    def _range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        if request.revision > self.rev:
            raise errors.future_revision()
        found = [
            kv
            for key, kv in sorted(self.kvs.items())
            if _in_range(key, request.key, request.range_end)
        ]
        response = rpc_pb2.RangeResponse(count=len(found))
        response.header.revision = self.rev
        if not request.count_only:
            limit = request.limit or len(found)
            response.kvs.extend(found[:limit])
            response.more = len(found) > limit
        if request.keys_only:
            for kv in response.kvs:
                kv.ClearField("value")
        return response

    def _put(self, request: rpc_pb2.PutRequest, rev: int) -> rpc_pb2.PutResponse:
        response = rpc_pb2.PutResponse()
        old = self.kvs.get(request.key)
        if old is not None and request.prev_kv:
            response.prev_kv.CopyFrom(old)
        self.kvs[request.key] = kv_pb2.KeyValue(
            key=request.key,
            value=request.value,
            create_revision=old.create_revision if old else rev,
            mod_revision=rev,
            version=(old.version if old else 0) + 1,
            lease=request.lease,
        )
        response.header.revision = rev
        return response

    def _delete(self, request: rpc_pb2.DeleteRangeRequest, rev: int) -> rpc_pb2.DeleteRangeResponse:
        response = rpc_pb2.DeleteRangeResponse()
        for key in [k for k in sorted(self.kvs) if _in_range(k, request.key, request.range_end)]:
            old = self.kvs.pop(key)
            response.deleted += 1
            if request.prev_kv:
                response.prev_kvs.append(old)
        response.header.revision = rev
        return response

    def _compare(self, compare: rpc_pb2.Compare) -> bool:
        kv = self.kvs.get(compare.key, kv_pb2.KeyValue())
        field = compare.WhichOneof("target_union") or "version"
        mine, theirs = getattr(kv, field), getattr(compare, field)
        match compare.result:
            case rpc_pb2.Compare.EQUAL:
                return bool(mine == theirs)
            case rpc_pb2.Compare.NOT_EQUAL:
                return bool(mine != theirs)
            case rpc_pb2.Compare.GREATER:
                return bool(mine > theirs)
            case _:
                return bool(mine < theirs)

    def _txn(self, request: rpc_pb2.TxnRequest, rev: int) -> rpc_pb2.TxnResponse:
        succeeded = all(self._compare(compare) for compare in request.compare)
        response = rpc_pb2.TxnResponse(succeeded=succeeded)
        for op in request.success if succeeded else request.failure:
            out = response.responses.add()
            match op.WhichOneof("request"):
                case "request_range":
                    out.response_range.CopyFrom(self._range(op.request_range))
                case "request_put":
                    out.response_put.CopyFrom(self._put(op.request_put, rev))
                case "request_delete_range":
                    out.response_delete_range.CopyFrom(self._delete(op.request_delete_range, rev))
                case "request_txn":
                    out.response_txn.CopyFrom(self._txn(op.request_txn, rev))
                    out.response_txn.header.Clear()
                    out.response_txn.header.SetInParent()
        response.header.revision = rev
        return response

    async def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        self._begin(request)
        return self._range(request)

    async def put(self, request: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        self._begin(request)
        self.rev += 1
        return self._put(request, self.rev)

    async def delete_range(
        self, request: rpc_pb2.DeleteRangeRequest
    ) -> rpc_pb2.DeleteRangeResponse:
        self._begin(request)
        response = self._delete(request, self.rev + 1)
        if response.deleted:
            self.rev += 1
        else:
            response.header.revision = self.rev
        return response

    async def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        self._begin(request)
        writes = any(
            op.WhichOneof("request") != "request_range"
            for op in (*request.success, *request.failure)
        )
        if writes:
            self.rev += 1
        return self._txn(request, self.rev)

    async def compact(self, request: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        self._begin(request)
        if request.revision > self.rev:
            raise errors.future_revision()
        if request.revision <= self.compacted:
            raise errors.compacted()
        self.compacted = request.revision
        response = rpc_pb2.CompactionResponse()
        response.header.revision = self.rev
        return response


NO_CONTEXT = CallContext()


def _put_op(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key))


def _delete_op(key: bytes, end: bytes = b"") -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(
        request_delete_range=rpc_pb2.DeleteRangeRequest(key=key, range_end=end)
    )


def _txn_op(
    success: list[rpc_pb2.RequestOp],
    failure: tuple[rpc_pb2.RequestOp, ...] | list[rpc_pb2.RequestOp] = (),
) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=success, failure=failure))


def _refusal(request: rpc_pb2.TxnRequest, max_ops: int = 128) -> str | None:
    try:
        check_txn(request, max_ops)
    except RpcError as error:
        assert error.code == StatusCode.INVALID_ARGUMENT
        return error.message
    return None


DUPLICATE = "etcdserver: duplicate key given in txn request"


@pytest.mark.parametrize(
    ("success", "refusal"),
    [
        ([_put_op(b"a"), _put_op(b"b")], None),
        ([_put_op(b"a"), _put_op(b"a")], DUPLICATE),
        ([_put_op(b"b"), _delete_op(b"a", b"c")], DUPLICATE),
        ([_put_op(b"c"), _delete_op(b"a", b"c")], None),  # range_end is exclusive
        ([_put_op(b"a"), _delete_op(b"a")], DUPLICATE),
        # etcd 3.4 (checked live): a delete to the end of the keyspace clashes with nothing
        ([_put_op(b"b"), _delete_op(b"a", b"\0")], None),
        ([_put_op(b"a"), _txn_op([_put_op(b"a")])], DUPLICATE),
        ([_txn_op([_put_op(b"a")], [_put_op(b"a")])], None),  # only one branch runs
        ([_txn_op([_put_op(b"a")]), _txn_op([], [_put_op(b"a")])], DUPLICATE),
        ([_delete_op(b"a", b"z"), _txn_op([_put_op(b"k")])], DUPLICATE),
        ([_txn_op([_delete_op(b"a", b"z")]), _put_op(b"k")], DUPLICATE),
        ([_txn_op([_txn_op([_put_op(b"a")])]), _put_op(b"a")], DUPLICATE),
        ([rpc_pb2.RequestOp()], "etcdserver: key not found"),
        (
            [rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest())],
            "etcdserver: key is not provided",
        ),
        ([_txn_op([_put_op(b"")])], "etcdserver: key is not provided"),
    ],
)
def test_txn_checks(success: list[rpc_pb2.RequestOp], refusal: str | None) -> None:
    assert _refusal(rpc_pb2.TxnRequest(success=success)) == refusal
    assert _refusal(rpc_pb2.TxnRequest(failure=success)) == refusal


def test_txn_operation_budget_is_shared_with_nested_txns() -> None:
    too_many = "etcdserver: too many operations in txn request"
    three = [_put_op(b"a"), _put_op(b"b"), _put_op(b"c")]
    assert _refusal(rpc_pb2.TxnRequest(success=three), max_ops=3) is None
    assert _refusal(rpc_pb2.TxnRequest(success=three), max_ops=2) == too_many
    compares = [rpc_pb2.Compare(key=b"k")] * 3
    assert _refusal(rpc_pb2.TxnRequest(compare=compares), max_ops=2) == too_many
    # the outer txn uses 2 of 3; the nested one has 1 left and asks for 2
    nested = _txn_op([_put_op(b"x"), _put_op(b"y")])
    assert _refusal(rpc_pb2.TxnRequest(success=[nested, _put_op(b"z")]), max_ops=3) == too_many
    assert _refusal(rpc_pb2.TxnRequest(success=[nested, _put_op(b"z")]), max_ops=4) is None
    empty_compare = rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"")])
    assert _refusal(empty_compare) == "etcdserver: key is not provided"


async def _refused(call: object) -> RpcError:
    with pytest.raises(RpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_requests_refused_before_the_backend_sees_them() -> None:
    backend = FakeV3Backend()
    service = V3Service(backend)
    cases = [
        (service.range(rpc_pb2.RangeRequest(), NO_CONTEXT), "etcdserver: key is not provided"),
        (
            service.put(rpc_pb2.PutRequest(value=b"v"), NO_CONTEXT),
            "etcdserver: key is not provided",
        ),
        (
            service.put(rpc_pb2.PutRequest(key=b"k", value=b"v", ignore_value=True), NO_CONTEXT),
            "etcdserver: value is provided",
        ),
        (
            service.put(rpc_pb2.PutRequest(key=b"k", lease=5, ignore_lease=True), NO_CONTEXT),
            "etcdserver: lease is provided",
        ),
        (
            service.delete_range(rpc_pb2.DeleteRangeRequest(), NO_CONTEXT),
            "etcdserver: key is not provided",
        ),
        (
            service.txn(rpc_pb2.TxnRequest(success=[_put_op(b"a"), _put_op(b"a")]), NO_CONTEXT),
            DUPLICATE,
        ),
    ]
    for call, message in cases:
        error = await _refused(call)
        assert (error.code, error.message) == (StatusCode.INVALID_ARGUMENT, message)
    assert backend.requests == []
    # ignore_value and ignore_lease without a value or lease are fine
    await service.put(
        rpc_pb2.PutRequest(key=b"k", ignore_value=True, ignore_lease=True), NO_CONTEXT
    )
    assert len(backend.requests) == 1


async def test_request_size_limit_applies_to_proposals_only() -> None:
    backend = FakeV3Backend()
    service = V3Service(backend, ServiceLimits(max_request_bytes=1000))
    small = rpc_pb2.PutRequest(key=b"k", value=b"v" * 900)
    assert proposal_bytes(small) <= 1000
    await service.put(small, NO_CONTEXT)
    big = rpc_pb2.PutRequest(key=b"k", value=b"v" * 1000)
    error = await _refused(service.put(big, NO_CONTEXT))
    assert error == errors.request_too_large()
    big_txn = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=big)])
    assert await _refused(service.txn(big_txn, NO_CONTEXT)) == errors.request_too_large()
    # a read-only txn is not proposed (etcd 3.4), so it is not measured
    reads = [rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"k" * 600))] * 2
    await service.txn(rpc_pb2.TxnRequest(success=reads), NO_CONTEXT)
    assert MAX_REQUEST_BYTES_DEFAULT == 1536 * 1024
    with pytest.raises(ValueError):
        ServiceLimits(max_txn_ops=0)


async def test_header_is_filled_and_the_backend_revision_kept() -> None:
    backend = FakeV3Backend()
    service = V3Service(backend)
    put = await service.put(rpc_pb2.PutRequest(key=b"foo", value=b"bar"), NO_CONTEXT)
    assert put.header == rpc_pb2.ResponseHeader(
        cluster_id=CLUSTER_ID, member_id=MEMBER_ID, revision=2, raft_term=3
    )
    backend.rev = 7  # the backend's own revision wins over the current one
    got = await service.range(rpc_pb2.RangeRequest(key=b"foo"), NO_CONTEXT)
    assert got.header.revision == 7
    assert [kv.value for kv in got.kvs] == [b"bar"]
    compacted = await service.compact(rpc_pb2.CompactionRequest(revision=5), NO_CONTEXT)
    assert compacted.header.revision == 7


async def test_header_revision_falls_back_to_the_current_one() -> None:
    backend = FakeV3Backend()
    backend.rev = 9

    async def bare_range(request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        return rpc_pb2.RangeResponse()

    backend.range = bare_range  # type: ignore[method-assign]
    got = await V3Service(backend).range(rpc_pb2.RangeRequest(key=b"k"), NO_CONTEXT)
    assert (got.header.revision, got.header.raft_term) == (9, 3)


async def test_txn_sub_headers_are_left_to_the_backend() -> None:
    service = V3Service(FakeV3Backend())
    request = rpc_pb2.TxnRequest(success=[_put_op(b"a"), _txn_op([])])
    response = await service.txn(request, NO_CONTEXT)
    assert response.succeeded
    assert response.responses[0].response_put.header == rpc_pb2.ResponseHeader(revision=2)
    assert response.responses[1].response_txn.HasField("header")
    assert response.header.cluster_id == CLUSTER_ID


async def test_member_list_and_status() -> None:
    backend = FakeV3Backend()
    service = V3Service(backend)
    members = await service.member_list(rpc_pb2.MemberListRequest(), NO_CONTEXT)
    assert members.header == rpc_pb2.ResponseHeader(
        cluster_id=CLUSTER_ID, member_id=MEMBER_ID, raft_term=3
    )
    assert [
        (m.ID, m.name, list(m.peerURLs), list(m.clientURLs), m.isLearner) for m in members.members
    ] == [
        (OTHER.id, "", ["http://127.0.0.1:23802"], [], True),
        (MEMBER_ID, "n1", ["http://127.0.0.1:23800"], ["http://127.0.0.1:23790"], False),
    ]
    status = await service.status(rpc_pb2.StatusRequest(), NO_CONTEXT)
    assert status == rpc_pb2.StatusResponse(
        header=rpc_pb2.ResponseHeader(
            cluster_id=CLUSTER_ID, member_id=MEMBER_ID, revision=1, raft_term=3
        ),
        version="3.4.23",
        dbSize=20480,
        leader=MEMBER_ID,
        raftIndex=1190,
        raftTerm=3,
        raftAppliedIndex=1189,
        dbSizeInUse=16384,
    )
    backend.leader_member = None
    backend.learner = True
    status = await service.status(rpc_pb2.StatusRequest(), NO_CONTEXT)
    assert (status.leader, list(status.errors), status.isLearner) == (
        0,
        ["etcdserver: no leader"],
        True,
    )


async def test_learner_serves_only_serializable_ranges_and_status() -> None:
    backend = FakeV3Backend()
    backend.learner = True
    service = V3Service(backend)
    refused = errors.not_supported_for_learner()
    assert await _refused(service.put(rpc_pb2.PutRequest(key=b"k"), NO_CONTEXT)) == refused
    assert await _refused(service.range(rpc_pb2.RangeRequest(key=b"k"), NO_CONTEXT)) == refused
    assert await _refused(service.member_list(rpc_pb2.MemberListRequest(), NO_CONTEXT)) == refused
    assert refused.code == StatusCode.UNAVAILABLE
    await service.range(rpc_pb2.RangeRequest(key=b"k", serializable=True), NO_CONTEXT)
    await service.status(rpc_pb2.StatusRequest(), NO_CONTEXT)


async def test_hasleader_metadata_refuses_while_leaderless() -> None:
    backend = FakeV3Backend()
    backend.leader_member = None
    service = V3Service(backend)
    wants_leader = CallContext(metadata=(("hasleader", "true"),))
    error = await _refused(service.range(rpc_pb2.RangeRequest(key=b"k"), wants_leader))
    assert error == errors.no_leader()
    await service.range(rpc_pb2.RangeRequest(key=b"k"), NO_CONTEXT)


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (BackendTimeout(), RpcError(StatusCode.UNAVAILABLE, "etcdserver: request timed out")),
        (NoLeader(), RpcError(StatusCode.UNAVAILABLE, "etcdserver: no leader")),
        (
            BackendError("etcdserver: server stopped"),
            RpcError(StatusCode.UNKNOWN, "etcdserver: server stopped"),
        ),
        (errors.no_space(), errors.no_space()),
        (BackendBusy(), errors.too_many_requests()),
    ],
)
async def test_backend_failures_become_rpc_errors(failure: Exception, expected: RpcError) -> None:
    backend = FakeV3Backend()
    backend.failure = failure
    error = await _refused(V3Service(backend).put(rpc_pb2.PutRequest(key=b"k"), NO_CONTEXT))
    assert (error.code, error.message) == (expected.code, expected.message)


async def test_methods_table() -> None:
    backend = FakeV3Backend()
    methods = v3_methods(backend)
    assert set(methods) == {
        grpc_path("KV", name) for name in ("Range", "Put", "DeleteRange", "Txn", "Compact")
    } | {
        grpc_path("Cluster", "MemberList"),
        grpc_path("Maintenance", "Status"),
        grpc_path("Maintenance", "HashKV"),
    }
    put = methods["/etcdserverpb.KV/Put"]
    assert isinstance(put, UnaryMethod)
    assert put.request_type is rpc_pb2.PutRequest
    reply = await put.handler(rpc_pb2.PutRequest(key=b"k", value=b"v"), NO_CONTEXT)
    assert isinstance(reply, rpc_pb2.PutResponse)
    assert reply.header.revision == 2
    with pytest.raises(AssertionError):
        await put.handler(rpc_pb2.RangeRequest(key=b"k"), NO_CONTEXT)


async def test_hash_kv_fills_the_header_and_refuses_a_future_revision() -> None:
    backend = FakeV3Backend()
    service = V3Service(backend)
    await service.put(rpc_pb2.PutRequest(key=b"k", value=b"v"), NO_CONTEXT)
    reply = await service.hash_kv(rpc_pb2.HashKVRequest(), NO_CONTEXT)
    assert reply.header.revision == 2 and reply.header.member_id == backend.member_id
    assert reply.hash == backend.hash_kv(0)[0] and reply.compact_revision == -1
    error = await _refused(service.hash_kv(rpc_pb2.HashKVRequest(revision=9), NO_CONTEXT))
    assert error == errors.future_revision()


async def test_a_learner_serves_linearizable_ranges_only_when_asked_to() -> None:
    """etcd 3.4's interceptor: a learner serves serializable ranges and Status only; with
    ``--troika-learner-linearizable-reads`` it serves linearizable ranges too (through the
    backend's ReadIndex path), and still nothing that writes."""
    backend = FakeV3Backend()
    backend.learner = True
    linearizable = rpc_pb2.RangeRequest(key=b"k")
    serializable = rpc_pb2.RangeRequest(key=b"k", serializable=True)
    put = rpc_pb2.PutRequest(key=b"k", value=b"v")
    as_etcd = V3Service(backend)
    await as_etcd.range(serializable, NO_CONTEXT)
    refused = errors.not_supported_for_learner()
    assert await _refused(as_etcd.range(linearizable, NO_CONTEXT)) == refused
    scaled = V3Service(backend, ServiceLimits(learner_linearizable_reads=True))
    await scaled.range(linearizable, NO_CONTEXT)
    await scaled.range(serializable, NO_CONTEXT)
    assert await _refused(scaled.put(put, NO_CONTEXT)) == refused
