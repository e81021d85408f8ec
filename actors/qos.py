"""Per-tenant QoS on the member that serves a request (issue 16 item 3): request and byte
rates, open watches, and the ``/troika/v1/qos`` endpoints that set the limits.

Why here
--------

The limits are replicated (``storage.qos``, applied by ``actors.state_machine``): every member
holds the same table. Rates are enforced by the member that **serves** the request, with token
buckets on Trio's clock (virtual in the simulator; no wall clock), so each member gives a tenant
at most its rate: a cluster of N members serves at most N times a read rate in all. Writes are
charged again at the leader (``actors.qos_leader``), which holds the cluster to the write rate.
Space quotas are enforced at apply (``actors.qos_apply``), where every member agrees.

The hook
--------

:func:`qos_methods` wraps the KV calls and the Watch stream of the client port's method table,
as ``actors.usage.record_methods`` does: no service changes. With no tenant set, a call costs
one attribute chain and one empty-dict test before the handler runs.

- Range, and a Txn without writes: a read of the tenant of its key(s) (one request token; the
  response's bytes charged after it is served, so the bucket may go into bounded debt);
- Put, DeleteRange, a Txn with writes: a write (one request token and the request's key and
  value bytes, taken before anything is proposed);
- over a rate: the request waits for tokens due within ``WAIT_MAX_S`` (0.25 s; its turn
  reserved, as a shaper), else, after that same wait (a tarpit), gRPC ResourceExhausted
  "etcdserver: too many requests" (etcd's error when its apply falls behind), before the
  request is served: nothing changes;
- Watch: a create on a key of a tenant with ``watches_max`` open watches on this member is
  answered ``created`` and ``canceled`` (watch id -1, that reason), and the stream goes on.
  A watch is counted from its create's answer until it is canceled or its stream ends.

A txn's tenants are those of every key its operations name (both branches, nested txns
included), each charged.

Users and roles
---------------

With auth, the caller is known here (``actors.auth_gate`` binds it in ``REQUEST_AUTH`` before
this wrapper runs). When the table holds user or role tenants, a request of a caller who has
one is charged to the caller's tenants instead of its keys' prefix tenants
(``QosTable.caller_tenants``: the user's own tenant, else every role tenant among its roles,
so the tightest binds), one request token and the bytes of all its keys. Likewise a watch
create on the Watch stream (the gate binds the caller for the stream): it is counted against
the caller's tenants that carry ``watches_max`` (each must be under it) instead of its key's
prefix tenant, so a user's or role's watches are bounded whatever keys they watch. Roles are
read at each create. Space and lease quotas stay with prefixes (they count what is stored,
whoever stored it).
"""

from __future__ import annotations

import json
import logging
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Final, NoReturn

import trio
from google.protobuf.message import Message

from actors.auth_backend import REQUEST_AUTH
from actors.envelope import EnvelopeKind
from actors.member import Member, NoLeader, RequestTimeout
from actors.qos_leader import LeaderAdmission, LeaderRefused
from actors.watch_backend import MemberWatchBackend
from net.etcdpb import rpc_pb2
from net.etcdpb.routes import grpc_path
from net.http.messages import Handler, Request, Response, StreamingResponse
from net.v3 import errors
from net.v3.errors import RpcError
from net.v3.methods import (
    CallContext,
    Methods,
    SendMessage,
    StreamHandler,
    StreamMethod,
    UnaryHandler,
    UnaryMethod,
)
from storage.auth.store import AuthError, AuthInfo
from storage.qos import QosError, QosTable, TenantLimits, TokenBucket
from storage.qos.limits import (
    ROLE,
    USER,
    TenantId,
    TenantKind,
    encode_delete,
    encode_delete_caller,
    encode_set,
    encode_set_caller,
)

log = logging.getLogger(__name__)

QOS_PATH: Final = "/troika/v1/qos"
QOS_SET_PATH: Final = "/troika/v1/qos/set"
QOS_DELETE_PATH: Final = "/troika/v1/qos/delete"
BODY_BYTES_MAX: Final = 64 * 1024
WAIT_MAX_S: Final = 0.25
"""A request over its tenant's rate waits for tokens due within this (its place in line
reserved), else it is refused. A closed-loop flood is slowed to the rate rather than spun
into refusals it answers at once with another request (each costs the member a parse)."""

LEADER_REFUSAL_PENALTY_TOKENS: Final = 4
"""Write requests a member owes its tenant's bucket for each of its writes the leader refused
(``QosLimiter.charge_leader_refusal``); the bucket's debt stays bounded (``storage.qos``)."""
INVALID_WATCH_ID: Final = -1
TOO_MANY_REQUESTS: Final = "etcdserver: too many requests"
JSON_TYPE: Final = ("Content-Type", "application/json")

READ: Final = False
WRITE: Final = True

Charge = tuple[TenantId, bool, int]
"""What one request costs one tenant: (tenant, write?, bytes)."""


@dataclass(slots=True)
class TenantBuckets:
    """One tenant's buckets on this member (None: that rate is not limited). A bucket holds
    one second of its rate."""

    read_requests: TokenBucket | None
    write_requests: TokenBucket | None
    read_bytes: TokenBucket | None
    write_bytes: TokenBucket | None

    @classmethod
    def of(cls, limits: TenantLimits, now_s: float) -> TenantBuckets:
        def bucket(rate: int) -> TokenBucket | None:
            return TokenBucket(rate, rate, updated_s=now_s) if rate else None

        return cls(
            bucket(limits.read_requests_per_s),
            bucket(limits.write_requests_per_s),
            bucket(limits.read_bytes_per_s),
            bucket(limits.write_bytes_per_s),
        )


class QosLimiter:
    """The member's buckets and open-watch counts, rebuilt when the replicated table
    changes (a changed limit starts with full buckets)."""

    def __init__(self, member: Member) -> None:
        # Weakly: the registry of limiters (``_LIMITERS``) is keyed weakly by the member, and a
        # value that held its key strongly would keep every member alive for ever (in the
        # simulator, every member instance of every run a sweep worker ran).
        self._member_ref = weakref.ref(member)
        self._version = -1
        self._table: QosTable | None = None
        self.buckets: dict[TenantId, TenantBuckets] = {}
        self.watches: dict[TenantId, int] = {}
        """Open watches counted per tenant (a prefix, or a user's or role's)."""
        self.refused = 0
        """Requests refused for a rate (for tests and logs)."""
        self.delayed = 0
        """Requests that waited for their tenant's tokens."""

    @property
    def _member(self) -> Member:
        member = self._member_ref()
        if member is None:
            raise RuntimeError("the member of this QoS limiter is gone")
        return member

    @property
    def table(self) -> QosTable:
        """The applied table (the state machine may replace it on a snapshot install)."""
        return self._member.machine.qos.table

    def _current(self, now_s: float) -> dict[TenantId, TenantBuckets]:
        table = self.table
        if table is not self._table or table.version != self._version:
            self._table, self._version = table, table.version
            every: list[tuple[TenantId, TenantLimits]] = [
                *table.tenants.items(),
                *table.callers.items(),
            ]
            self.buckets = {
                tenant: TenantBuckets.of(limits, now_s)
                for tenant, limits in every
                if limits.has_rates
            }
        return self.buckets

    def caller_tenants(self, info: AuthInfo | None = None) -> list[TenantId]:
        """The user or role tenants of the caller (``info``, else the request's; empty: none,
        or no caller)."""
        table = self.table
        info = info if info is not None else REQUEST_AUTH.get()
        if not table.callers or info is None or not info.username:
            return []
        user = self._member.machine.auth.store.user(info.username)
        roles = user.roles if user is not None else ()
        return [*table.caller_tenants(info.username, roles)]

    def charges(self, observations: list[tuple[bool, bytes, int]]) -> list[Charge]:
        """(tenant, write?, bytes) to charge for a request's (write?, key, bytes): its
        caller's tenants once for the whole request, else each key's prefix tenant."""
        callers = self.caller_tenants()
        if callers:
            is_write = any(write for write, _, _ in observations)
            size_bytes = sum(size for _, _, size in observations)
            return [(tenant, is_write, size_bytes) for tenant in callers]
        table = self.table
        return [
            (tenant, is_write, size_bytes)
            for is_write, key, size_bytes in observations
            if (tenant := table.tenant_of(key)) is not None
        ]

    async def admit(self, charges: list[Charge]) -> None:
        """Take a request's tokens: (tenant, write?, bytes) per charge, waiting (at most
        ``WAIT_MAX_S`` in all) for tokens a tenant's rate will give it soon.

        Raises:
            RpcError: a tenant is over a rate ("etcdserver: too many requests").
        """
        now_s = trio.current_time()
        buckets = self._current(now_s)
        if not buckets:
            return
        wait_s = 0.0
        for tenant, is_write, size_bytes in charges:
            found = buckets.get(tenant)
            if found is None:
                continue
            requests = found.write_requests if is_write else found.read_requests
            volume = found.write_bytes if is_write else found.read_bytes
            amounts = ((requests, 1), (volume, size_bytes if is_write else 0))
            for bucket, amount in amounts:
                if bucket is None:
                    continue
                waited = bucket.reserve(amount, now_s, WAIT_MAX_S - wait_s)
                if waited is None:
                    await self._refuse(tenant)
                wait_s = max(wait_s, waited or 0.0)
        if wait_s > 0:
            self.delayed += 1
            await trio.sleep(wait_s)

    def charge_read(self, charges: list[Charge], size_bytes: int) -> None:
        """Charge a served read's response bytes to the tenants it was admitted for."""
        for tenant, _, _ in charges:
            found = self.buckets.get(tenant)
            if found is not None and found.read_bytes is not None:
                found.read_bytes.charge(size_bytes, trio.current_time())

    def charge_leader_refusal(self, charges: list[Charge]) -> None:
        """Owe ``LEADER_REFUSAL_PENALTY_TOKENS`` more write requests for a write the leader
        refused, so this member admits fewer of the tenant's writes.

        Why: each member admits up to the tenant's whole rate, and a write the leader then
        refuses has cost a log entry replicated to and fsynced by every member (the refusal
        is an entry). With the penalty, members whose clients spread a flood over the cluster
        settle near their share of the rate and refuse the rest locally (a tarpit, no entry):
        without it, the leader refused about two writes in three of such a flood.
        """
        now_s = trio.current_time()
        for tenant, is_write, _ in charges:
            found = self.buckets.get(tenant)
            if is_write and found is not None and found.write_requests is not None:
                found.write_requests.charge(LEADER_REFUSAL_PENALTY_TOKENS, now_s)

    async def _refuse(self, tenant: TenantId) -> NoReturn:
        """Refuse after ``WAIT_MAX_S`` (nothing spent): a closed-loop client gets at most
        one refusal a wait per connection, not one as fast as the member can parse."""
        await trio.sleep(WAIT_MAX_S)
        self.refused += 1
        if self.refused & (self.refused - 1) == 0:  # 1, 2, 4, 8, ...: bounded log volume
            log.warning("qos: tenant %r over its rate (%d refused so far)", tenant, self.refused)
        raise errors.too_many_requests()


# -- what a request names ------------------------------------------------------------------


def observations(request: Message) -> Iterator[tuple[bool, bytes, int]]:
    """(write?, key, bytes) of each key a KV request names."""
    match request:
        case rpc_pb2.RangeRequest():
            yield READ, request.key, 0
        case rpc_pb2.PutRequest():
            yield WRITE, request.key, len(request.key) + len(request.value)
        case rpc_pb2.DeleteRangeRequest():
            yield WRITE, request.key, len(request.key)
        case rpc_pb2.TxnRequest():
            ops = [*txn_observations(request)]
            writes = any(is_write for is_write, _, _ in ops)
            for _, key, size_bytes in ops:
                yield writes, key, size_bytes


def txn_observations(request: rpc_pb2.TxnRequest) -> Iterator[tuple[bool, bytes, int]]:
    """Every operation of both branches, nested txns included."""
    for op in (*request.success, *request.failure):
        kind = op.WhichOneof("request")
        if kind == "request_txn":
            yield from txn_observations(op.request_txn)
        elif kind is not None:
            yield from observations(getattr(op, kind))


# -- the method wrappers ----------------------------------------------------------------------

_LIMITERS: weakref.WeakKeyDictionary[Member, QosLimiter] = weakref.WeakKeyDictionary()
LIMITED_KV = frozenset(grpc_path("KV", name) for name in ("Range", "Put", "DeleteRange", "Txn"))
WATCH_PATH = grpc_path("Watch", "Watch")


def limiter_of(member: Member) -> QosLimiter:
    """The member's one limiter, shared by its client listeners."""
    limiter = _LIMITERS.get(member)
    if limiter is None:
        limiter = QosLimiter(member)
        _LIMITERS[member] = limiter
    return limiter


def qos_methods(member: Member, methods: Methods) -> Methods:
    """``methods`` with the KV calls metered and the Watch stream's creates counted."""
    limiter = limiter_of(member)
    wrapped = dict(methods)
    for path in LIMITED_KV & methods.keys():
        method = methods[path]
        assert isinstance(method, UnaryMethod), path
        wrapped[path] = UnaryMethod(method.request_type, _limited_unary(limiter, method))
    watch = methods.get(WATCH_PATH)
    if isinstance(watch, StreamMethod):
        wrapped[WATCH_PATH] = StreamMethod(
            watch.request_type, _limited_watch(member, limiter, watch)
        )
    return wrapped


def _limited_unary(limiter: QosLimiter, method: UnaryMethod) -> UnaryHandler:
    handler = method.handler
    machine_of = limiter._member

    async def call(request: Message, context: CallContext) -> Message:
        if not machine_of.machine.qos.table.limited:
            return await handler(request, context)
        charges = limiter.charges(list(observations(request)))
        await limiter.admit(charges)
        try:
            response = await handler(request, context)
        except LeaderRefused:  # over the rate cluster-wide (actors.qos_leader)
            limiter.refused += 1
            limiter.charge_leader_refusal(charges)
            raise
        if isinstance(request, rpc_pb2.RangeRequest):
            limiter.charge_read(charges, response.ByteSize())
        return response

    return call


def _limited_watch(member: Member, limiter: QosLimiter, method: StreamMethod) -> StreamHandler:
    handler = method.handler
    view = MemberWatchBackend(member)

    def refused() -> rpc_pb2.WatchResponse:
        response = rpc_pb2.WatchResponse(
            watch_id=INVALID_WATCH_ID, created=True, canceled=True, cancel_reason=TOO_MANY_REQUESTS
        )
        header = response.header
        header.cluster_id, header.member_id = view.cluster_id, view.member_id
        header.revision, header.raft_term = member.machine.mvcc.current_revision, view.raft_term()
        return response

    async def call(
        requests: AsyncIterator[Message], send: SendMessage, context: CallContext
    ) -> None:
        caller = REQUEST_AUTH.get()  # bound by the auth gate for the stream (None: no auth)
        pending: deque[list[TenantId]] = deque()  # tenants of creates not yet answered
        opened: dict[int, list[TenantId]] = {}  # watch id -> tenants counted

        def release(tenants: list[TenantId]) -> None:
            for tenant in tenants:
                limiter.watches[tenant] -= 1

        async def admitted() -> AsyncIterator[Message]:
            async for request in requests:
                if isinstance(request, rpc_pb2.WatchRequest) and request.HasField("create_request"):
                    tenants = _watch_tenants(limiter, request.create_request.key, caller)
                    if tenants is None:
                        await send(refused())
                        continue
                    pending.append(tenants)
                yield request

        async def counted(message: Message) -> None:
            if isinstance(message, rpc_pb2.WatchResponse):
                if message.created and pending:
                    tenants = pending.popleft()
                    if message.canceled:
                        release(tenants)
                    elif tenants:
                        opened[message.watch_id] = tenants
                elif message.canceled and message.watch_id in opened:
                    release(opened.pop(message.watch_id))
            await send(message)

        try:
            await handler(admitted(), counted, context)
        finally:
            for tenants in (*pending, *opened.values()):
                release(tenants)

    return call


def _watch_tenants(
    limiter: QosLimiter, key: bytes, caller: AuthInfo | None
) -> list[TenantId] | None:
    """The tenants a new watch is counted against (counted now; empty if no limit counts it),
    or None if one of them is at its ``watches_max`` (the watch must not open). The caller's
    user or role tenants replace the key's prefix tenant, as for rates."""
    table = limiter.table
    if not table.limited:
        return []
    callers = limiter.caller_tenants(caller) if caller is not None else []
    named = callers or _prefix_tenant(table, key)
    counted = [
        (tenant, found.watches_max)
        for tenant in named
        if (found := _limits_of(table, tenant)) is not None and found.watches_max
    ]
    if any(limiter.watches.get(tenant, 0) >= most for tenant, most in counted):
        return None
    for tenant, _ in counted:
        limiter.watches[tenant] = limiter.watches.get(tenant, 0) + 1
    return [tenant for tenant, _ in counted]


def _limits_of(table: QosTable, tenant: TenantId) -> TenantLimits | None:
    if isinstance(tenant, bytes):
        return table.tenants.get(tenant)
    return table.callers.get(tenant)


def _prefix_tenant(table: QosTable, key: bytes) -> list[TenantId]:
    tenant = table.tenant_of(key) if table.tenants else None
    return [tenant] if tenant is not None else []


def tenant_label(tenant: TenantId) -> str:
    """A tenant as the JSON answers name it: its prefix, or ``user:NAME`` / ``role:NAME``."""
    if isinstance(tenant, bytes):
        return tenant.decode("utf-8", "surrogateescape")
    kind, name = tenant
    return f"{kind}:{name}"


# -- the HTTP endpoints ------------------------------------------------------------------------


def qos_routes(member: Member, fallback: Handler) -> Handler:
    """``/troika/v1/qos`` (GET: the tenants, their space use and this member's counts),
    ``/troika/v1/qos/set`` and ``/troika/v1/qos/delete`` (POST, a JSON body; with auth
    enabled, the ``Authorization`` token of a root user); every other path to ``fallback``."""

    async def handle(request: Request) -> Response | StreamingResponse:
        if not request.path.startswith(QOS_PATH):
            return await fallback(request)
        if request.path == QOS_PATH and request.method == "GET":
            return _json(qos_answer(member))
        if request.path in (QOS_SET_PATH, QOS_DELETE_PATH) and request.method == "POST":
            return await _change(member, request)
        return _json({"error": f"no such path or method: {request.method} {request.path}"}, 404)

    return handle


def qos_answer(member: Member) -> dict[str, object]:
    """The JSON of ``GET /troika/v1/qos``."""
    qos = member.machine.qos
    limiter = limiter_of(member)
    leader = member.raft_actor.admission
    return {
        "member_id": f"{member.member_id:x}",
        "tenants": qos.table.to_json(),
        "usage": {
            prefix.decode("utf-8", "surrogateescape"): usage.to_json()
            for prefix, usage in sorted(qos.usage.usage.items())
        },
        "watches": {
            tenant_label(tenant): count
            for tenant, count in sorted(limiter.watches.items(), key=lambda item: repr(item[0]))
            if count
        },
        "refused": limiter.refused,
        "delayed": limiter.delayed,
        "refused_as_leader": leader.refused if isinstance(leader, LeaderAdmission) else 0,
    }


async def _change(member: Member, request: Request) -> Response:
    denied = _admin_denied(member, request)
    if denied is not None:
        return _json({"error": denied}, 403)
    try:
        body = _parse_change(request)
    except QosError as error:
        return _json({"error": str(error)}, 400)
    try:
        outcome = await member.propose(EnvelopeKind.QOS, body)
    except (RequestTimeout, NoLeader) as error:
        return _json({"error": str(error) or type(error).__name__}, 503)
    if isinstance(outcome, RpcError):
        return _json({"error": str(outcome)}, 400)
    return _json(qos_answer(member))


def _parse_change(request: Request) -> bytes:
    """The ``QOS`` entry body a set or delete asks for.

    Raises:
        QosError: a malformed body.
    """
    if len(request.body) > BODY_BYTES_MAX:
        raise QosError("body too large")
    try:
        item = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError) as error:
        raise QosError(f"body is not JSON: {error}") from None
    named = [kind for kind in ("prefix", USER, ROLE) if isinstance(item, dict) and kind in item]
    if len(named) != 1 or type(item[named[0]]) is not str or not item[named[0]]:
        raise QosError('body must be {"prefix"|"user"|"role": "...", <limit>: <integer>, ...}')
    kind = named[0]
    name = item.pop(kind)
    deleting = request.path == QOS_DELETE_PATH
    if kind == "prefix":
        prefix = name.encode("utf-8", "surrogateescape")
        return (
            encode_delete(prefix) if deleting else encode_set(prefix, TenantLimits.from_plain(item))
        )
    caller: TenantKind = USER if kind == USER else ROLE
    if deleting:
        return encode_delete_caller(caller, name)
    return encode_set_caller(caller, name, TenantLimits.from_plain(item))


def _admin_denied(member: Member, request: Request) -> str | None:
    """Why a change is refused under auth (None: auth is off, or a root user's token)."""
    auth = member.machine.auth
    if not auth.store.enabled:
        return None
    token = request.headers.get("Authorization")
    info = auth.tokens.info(token, auth.store.revision) if token else None
    try:
        auth.store.check_admin(info)
    except AuthError as error:
        return f"troika: qos: auth: {error}"
    return None


def _json(value: object, status: int = 200) -> Response:
    return Response(status, (JSON_TYPE,), json.dumps(value).encode() + b"\n")
