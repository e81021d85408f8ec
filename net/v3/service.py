"""The v3 RPCs served here, one implementation each, over a ``V3Backend`` (the member).

This is etcd 3.4's ``v3rpc`` layer: it checks a request the way etcd does before anything is
proposed (``v3rpc/key.go``: empty keys, ``ignore_value`` with a value, ``ignore_lease`` with a
lease, too many txn operations, duplicate keys among a txn's writes; ``etcdserver``: a request
too large for one Raft entry; the interceptor: learners serve only serializable ranges and
Status, and a ``hasleader: true`` caller is refused while there is no leader), hands it to the
backend, and fills the response header (cluster id, member id, Raft term; the revision the
backend set, or the current one when it set none, as etcd's ``header.fill``).

The methods are a :data:`~net.v3.methods.Methods` table keyed by gRPC path, so gRPC and the
JSON gateway serve exactly the same code: :func:`v3_methods` (or the three per service).
RPCs not listed are absent, and each transport answers them as unimplemented.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from google.protobuf.message import Message

from net.backend import BackendBusy, BackendError, BackendTimeout, MemberInfo, NoLeader
from net.etcdpb import raft_internal_pb2, rpc_pb2
from net.etcdpb.routes import grpc_path
from net.v3 import errors
from net.v3.errors import RpcError, StatusCode
from net.v3.methods import CallContext, Method, Methods, UnaryMethod

MAX_TXN_OPS_DEFAULT = 128
"""etcd's ``--max-txn-ops``: operations in one txn branch (and compares)."""

MAX_REQUEST_BYTES_DEFAULT = 1_572_864
"""etcd's ``--max-request-bytes`` (1.5 MiB): the largest request proposed as one entry."""

RAFT_REQUEST_ID_MAX = 2**64 - 1
"""The largest id etcd puts in a proposal's header; sizes are measured with it (worst case)."""

REQUIRE_LEADER_KEY = "hasleader"
"""Metadata a client sets to ``"true"`` to be refused at once while there is no leader."""


class V3Backend(Protocol):
    """The member as the v3 service sees it.

    State reads are synchronous and local (their names and signatures are those of
    ``net.v2api.V2Backend`` where both need the same thing, so one member class can be both).
    The KV calls are async: they return a response whose ``header`` carries only
    ``revision`` (the service fills the rest), and raise ``RpcError`` (compacted, future
    revision, no space, ...) or ``BackendError`` (``BackendTimeout``, ``NoLeader``).

    Every sub-response of a txn must have its header present (``header.SetInParent()``, with
    the revision of that point of the txn; a nested ``response_txn`` carries an empty one), as
    etcd's gateway shows ``"header":{}`` for a nested txn.
    """

    @property
    def cluster_id(self) -> int:
        """The cluster id."""
        ...

    @property
    def member_id(self) -> int:
        """This member's id."""
        ...

    def raft_term(self) -> int:
        """The current Raft term."""
        ...

    def raft_index(self) -> int:
        """The committed Raft index."""
        ...

    def raft_applied_index(self) -> int:
        """The last Raft index applied here."""
        ...

    def revision(self) -> int:
        """The MVCC store's current revision here."""
        ...

    def members(self) -> list[MemberInfo]:
        """Every member, learners included, sorted by id."""
        ...

    def leader(self) -> MemberInfo | None:
        """The leader this member knows of, if any."""
        ...

    def is_learner(self) -> bool:
        """Whether this member is a learner (then it serves only serializable reads)."""
        ...

    def version(self) -> tuple[str, str]:
        """(server version, cluster version), e.g. ("3.4.23", "3.4.0")."""
        ...

    def db_size_bytes(self) -> tuple[int, int]:
        """(size of the backend database, the part of it in use), in bytes."""
        ...

    def hash_kv(self, revision: int) -> tuple[int, int, int]:
        """(CRC-32 of the MVCC records up to ``revision``, the compact revision, the current
        revision) of this member's store: equal on every member that applied the same log.
        Raises ``RpcError`` (compacted, future revision)."""
        ...

    async def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """Read: linearizable unless ``request.serializable``."""
        ...

    async def put(self, request: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        """Propose a put and return its result once applied here."""
        ...

    async def delete_range(
        self, request: rpc_pb2.DeleteRangeRequest
    ) -> rpc_pb2.DeleteRangeResponse:
        """Propose a delete and return its result once applied here."""
        ...

    async def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """A txn: proposed, or (read-only) read like a range."""
        ...

    async def compact(self, request: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        """Propose a compaction (``physical``: answer once it is done)."""
        ...


LEARNERS_MAX_DEFAULT = 1
"""etcd 3.4's ``maxLearners``."""
LEARNERS_MAX_LIMIT = 8
"""The most learners ``--troika-max-learners`` may allow (each is one more stream of the
leader's log to send)."""


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """etcd's request limits (its command-line flags of the same names).

    Attributes:
        max_txn_ops: ``--max-txn-ops``.
        max_request_bytes: ``--max-request-bytes``.
        learner_linearizable_reads: ``--troika-learner-linearizable-reads`` (beyond etcd 3.4,
            which serves only serializable ranges on a learner): a learner serves a
            linearizable range too, at the read index it asks the leader for (Raft's ReadIndex
            forwarded as a follower's is) once it has applied it, so it sees every write
            acknowledged before the read began.
        learners_max: ``--troika-max-learners`` (etcd 3.4's ``maxLearners`` is 1, which
            MemberAdd keeps by default): how many learners MemberAdd lets a cluster hold, for
            read scaling with learners.
    """

    max_txn_ops: int = MAX_TXN_OPS_DEFAULT
    max_request_bytes: int = MAX_REQUEST_BYTES_DEFAULT
    learner_linearizable_reads: bool = False
    learners_max: int = LEARNERS_MAX_DEFAULT

    def __post_init__(self) -> None:
        if self.max_txn_ops < 1:
            raise ValueError(f"max_txn_ops {self.max_txn_ops} must be positive")
        if self.max_request_bytes < 1:
            raise ValueError(f"max_request_bytes {self.max_request_bytes} must be positive")
        if not 1 <= self.learners_max <= LEARNERS_MAX_LIMIT:
            raise ValueError(f"learners_max {self.learners_max} must be 1..{LEARNERS_MAX_LIMIT}")


# -- validation (pure) ----------------------------------------------------------------------


def check_range(request: rpc_pb2.RangeRequest) -> None:
    """Raises ``RpcError`` for a range etcd refuses before reading."""
    if not request.key:
        raise errors.key_not_provided()


def check_put(request: rpc_pb2.PutRequest) -> None:
    """Raises ``RpcError`` for a put etcd refuses before proposing."""
    if not request.key:
        raise errors.key_not_provided()
    if request.ignore_value and request.value:
        raise errors.value_provided()
    if request.ignore_lease and request.lease != 0:
        raise errors.lease_provided()


def check_delete_range(request: rpc_pb2.DeleteRangeRequest) -> None:
    """Raises ``RpcError`` for a delete etcd refuses before proposing."""
    if not request.key:
        raise errors.key_not_provided()


def check_txn(request: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    """Raises ``RpcError`` for a txn etcd refuses before proposing (in etcd's order).

    The operation count is the largest of compares, success and failure; a nested txn gets
    what is left of the budget. Then every branch must not write one key twice.
    """
    _check_txn_ops(request, max_txn_ops)
    _write_set(request.success)
    _write_set(request.failure)


def _check_txn_ops(request: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    ops = max(len(request.compare), len(request.success), len(request.failure))
    if ops > max_txn_ops:
        raise errors.too_many_txn_operations()
    for compare in request.compare:
        if not compare.key:
            raise errors.key_not_provided()
    for op in (*request.success, *request.failure):
        _check_request_op(op, max_txn_ops - ops)


def _check_request_op(op: rpc_pb2.RequestOp, max_txn_ops: int) -> None:
    kind = op.WhichOneof("request")
    if kind == "request_range":
        check_range(op.request_range)
    elif kind == "request_put":
        check_put(op.request_put)
    elif kind == "request_delete_range":
        check_delete_range(op.request_delete_range)
    elif kind == "request_txn":
        _check_txn_ops(op.request_txn, max_txn_ops)
    else:
        raise errors.key_not_found()


@dataclass(frozen=True, slots=True)
class _Interval:
    """A half-open key interval ``[begin, end)``; an empty ``end`` is +infinity.

    As etcd's ``adt`` string intervals: an interval whose end sorts before its begin (a
    delete with ``range_end`` ``"\\0"``) contains nothing, so it clashes with no put.
    """

    begin: bytes
    end: bytes

    def contains(self, key: bytes) -> bool:
        return self.begin <= key and (not self.end or key < self.end)


def _write_set(ops: Iterable[rpc_pb2.RequestOp]) -> tuple[set[bytes], list[_Interval]]:
    """The keys put and the intervals deleted by one branch, nested txns included.

    Raises:
        RpcError: a key is put twice, or put and deleted, in what may run together (the
            two branches of one nested txn may put the same key: only one runs).
    """
    ops = list(ops)
    deletes: list[_Interval] = []
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            delete = op.request_delete_range
            end = delete.range_end if delete.range_end else delete.key + b"\0"
            deletes.append(_Interval(delete.key, end))

    def deleted(key: bytes) -> bool:
        return any(interval.contains(key) for interval in deletes)

    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, deletes_then = _write_set(op.request_txn.success)
        puts_else, deletes_else = _write_set(op.request_txn.failure)
        for key in puts_then:
            if key in puts or deleted(key):
                raise errors.duplicate_key()
            puts.add(key)
        for key in puts_else:
            if (key in puts and key not in puts_then) or deleted(key):
                raise errors.duplicate_key()
            puts.add(key)
        deletes.extend(deletes_then)
        deletes.extend(deletes_else)

    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        key = op.request_put.key
        if key in puts or deleted(key):
            raise errors.duplicate_key()
        puts.add(key)
    return puts, deletes


def is_txn_read_only(request: rpc_pb2.TxnRequest) -> bool:
    """Whether every operation of both branches is a range (etcd reads such a txn without
    proposing it, so the request-size limit does not apply)."""
    return all(op.WhichOneof("request") == "request_range" for op in request.success) and all(
        op.WhichOneof("request") == "request_range" for op in request.failure
    )


def proposal_bytes(request: Message) -> int:
    """The size of ``request`` as the Raft entry etcd would propose (with a worst-case id).

    Raises:
        ValueError: not a request that is proposed.
    """
    header = raft_internal_pb2.RequestHeader(ID=RAFT_REQUEST_ID_MAX)
    match request:
        case rpc_pb2.PutRequest():
            entry = raft_internal_pb2.InternalRaftRequest(header=header, put=request)
        case rpc_pb2.DeleteRangeRequest():
            entry = raft_internal_pb2.InternalRaftRequest(header=header, delete_range=request)
        case rpc_pb2.TxnRequest():
            entry = raft_internal_pb2.InternalRaftRequest(header=header, txn=request)
        case rpc_pb2.CompactionRequest():
            entry = raft_internal_pb2.InternalRaftRequest(header=header, compaction=request)
        case _:
            raise ValueError(f"{type(request).__name__} is not proposed")
    return entry.ByteSize()


def check_size(request: Message, max_request_bytes: int) -> None:
    """Raises ``RpcError`` "request is too large" for a proposal over the limit."""
    if proposal_bytes(request) > max_request_bytes:
        raise errors.request_too_large()


def backend_error(error: BackendError) -> RpcError:
    """The gRPC error of a member failure (etcd's ``togRPCError``)."""
    if isinstance(error, BackendTimeout):
        return errors.request_timed_out()
    if isinstance(error, NoLeader):
        return errors.no_leader()
    if isinstance(error, BackendBusy):
        return errors.too_many_requests()
    return RpcError(StatusCode.UNKNOWN, str(error))


# -- the service --------------------------------------------------------------------------------

_Request = TypeVar("_Request", bound=Message)
_Response = TypeVar("_Response", bound=Message)


class V3Service:
    """The KV, Cluster and Maintenance RPCs over one backend.

    Each public ``async`` method is one RPC, with the signature of a
    :data:`~net.v3.methods.UnaryHandler`.
    """

    def __init__(self, backend: V3Backend, limits: ServiceLimits | None = None) -> None:
        self._backend = backend
        self._limits = limits if limits is not None else ServiceLimits()

    # KV

    async def range(
        self, request: rpc_pb2.RangeRequest, context: CallContext
    ) -> rpc_pb2.RangeResponse:
        learner_ok = request.serializable or self._limits.learner_linearizable_reads
        self.admit(context, learner_ok=learner_ok)
        check_range(request)
        response = await self.call_backend(self._backend.range, request)
        self.fill_header(response.header)
        return response

    async def put(self, request: rpc_pb2.PutRequest, context: CallContext) -> rpc_pb2.PutResponse:
        self.admit(context)
        check_put(request)
        check_size(request, self._limits.max_request_bytes)
        response = await self.call_backend(self._backend.put, request)
        self.fill_header(response.header)
        return response

    async def delete_range(
        self, request: rpc_pb2.DeleteRangeRequest, context: CallContext
    ) -> rpc_pb2.DeleteRangeResponse:
        self.admit(context)
        check_delete_range(request)
        check_size(request, self._limits.max_request_bytes)
        response = await self.call_backend(self._backend.delete_range, request)
        self.fill_header(response.header)
        return response

    async def txn(self, request: rpc_pb2.TxnRequest, context: CallContext) -> rpc_pb2.TxnResponse:
        self.admit(context)
        check_txn(request, self._limits.max_txn_ops)
        if not is_txn_read_only(request):
            check_size(request, self._limits.max_request_bytes)
        response = await self.call_backend(self._backend.txn, request)
        self.fill_header(response.header)
        return response

    async def compact(
        self, request: rpc_pb2.CompactionRequest, context: CallContext
    ) -> rpc_pb2.CompactionResponse:
        self.admit(context)
        check_size(request, self._limits.max_request_bytes)
        response = await self.call_backend(self._backend.compact, request)
        self.fill_header(response.header)
        return response

    # Cluster

    async def member_list(
        self, request: rpc_pb2.MemberListRequest, context: CallContext
    ) -> rpc_pb2.MemberListResponse:
        self.admit(context)
        response = rpc_pb2.MemberListResponse(
            members=[member_message(member) for member in self._backend.members()]
        )
        self._fill_cluster(response.header)
        return response

    # Maintenance

    async def status(
        self, request: rpc_pb2.StatusRequest, context: CallContext
    ) -> rpc_pb2.StatusResponse:
        self.admit(context, learner_ok=True)
        backend = self._backend
        leader = backend.leader()
        db_size, db_size_in_use = backend.db_size_bytes()
        response = rpc_pb2.StatusResponse(
            version=backend.version()[0],
            dbSize=db_size,
            leader=leader.id if leader is not None else 0,
            raftIndex=backend.raft_index(),
            raftTerm=backend.raft_term(),
            raftAppliedIndex=backend.raft_applied_index(),
            dbSizeInUse=db_size_in_use,
            isLearner=backend.is_learner(),
        )
        if leader is None:
            response.errors.append(errors.no_leader().message)
        self.fill_header(response.header)
        return response

    async def hash_kv(
        self, request: rpc_pb2.HashKVRequest, context: CallContext
    ) -> rpc_pb2.HashKVResponse:
        self.admit(context)
        crc, compact_revision, revision = self._backend.hash_kv(request.revision)
        response = rpc_pb2.HashKVResponse(hash=crc, compact_revision=compact_revision)
        response.header.revision = revision
        self.fill_header(response.header)
        return response

    # helpers

    def admit(self, context: CallContext, *, learner_ok: bool = False) -> None:
        """etcd's unary interceptor: learners and the ``hasleader`` metadata."""
        if not learner_ok and self._backend.is_learner():
            raise errors.not_supported_for_learner()
        if context.get(REQUIRE_LEADER_KEY) == "true" and self._backend.leader() is None:
            raise errors.no_leader()

    @staticmethod
    async def call_backend(
        call: Callable[[_Request], Awaitable[_Response]], request: _Request
    ) -> _Response:
        try:
            return await call(request)
        except BackendError as error:
            raise backend_error(error) from error

    def fill_header(self, header: rpc_pb2.ResponseHeader) -> None:
        """etcd's ``header.fill``: cluster, member, term, and the current revision unless the
        backend set one (shared by the other v3 services)."""
        self._fill_cluster(header)
        if header.revision == 0:
            header.revision = self._backend.revision()

    def fill_cluster_header(self, header: rpc_pb2.ResponseHeader) -> None:
        """The header of a Cluster RPC: cluster, member, term, no revision."""
        self._fill_cluster(header)

    def _fill_cluster(self, header: rpc_pb2.ResponseHeader) -> None:
        header.cluster_id = self._backend.cluster_id
        header.member_id = self._backend.member_id
        header.raft_term = self._backend.raft_term()


def member_message(member: MemberInfo) -> rpc_pb2.Member:
    """A member as v3 shows it."""
    return rpc_pb2.Member(
        ID=member.id,
        name=member.name,
        peerURLs=list(member.peer_urls),
        clientURLs=list(member.client_urls),
        isLearner=member.is_learner,
    )


def _unary(
    request_type: type[_Request], handler: Callable[[_Request, CallContext], Awaitable[Message]]
) -> Method:
    """A table entry for ``handler``, whose transports decode ``request_type`` for it."""

    async def call(request: Message, context: CallContext) -> Message:
        assert isinstance(request, request_type), type(request)
        return await handler(request, context)

    return UnaryMethod(request_type, call)


def kv_methods(service: V3Service) -> Methods:
    """KV: Range, Put, DeleteRange, Txn, Compact."""
    return {
        grpc_path("KV", "Range"): _unary(rpc_pb2.RangeRequest, service.range),
        grpc_path("KV", "Put"): _unary(rpc_pb2.PutRequest, service.put),
        grpc_path("KV", "DeleteRange"): _unary(rpc_pb2.DeleteRangeRequest, service.delete_range),
        grpc_path("KV", "Txn"): _unary(rpc_pb2.TxnRequest, service.txn),
        grpc_path("KV", "Compact"): _unary(rpc_pb2.CompactionRequest, service.compact),
    }


def cluster_methods(service: V3Service) -> Methods:
    """Cluster: MemberList."""
    return {
        grpc_path("Cluster", "MemberList"): _unary(rpc_pb2.MemberListRequest, service.member_list)
    }


def maintenance_methods(service: V3Service) -> Methods:
    """Maintenance: Status, HashKV (gRPC only: etcd 3.4's gateway maps HashKV to the path of
    Hash, so it cannot be reached there)."""
    return {
        grpc_path("Maintenance", "Status"): _unary(rpc_pb2.StatusRequest, service.status),
        grpc_path("Maintenance", "HashKV"): _unary(rpc_pb2.HashKVRequest, service.hash_kv),
    }


def v3_methods(backend: V3Backend, limits: ServiceLimits | None = None) -> Methods:
    """Every RPC this module serves, over ``backend``."""
    service = V3Service(backend, limits)
    return {**kv_methods(service), **cluster_methods(service), **maintenance_methods(service)}
