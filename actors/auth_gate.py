"""etcd's auth interceptor for troika's method table: who calls, and what they may do before
anything is read or proposed.

Every v3 RPC passes here (``authorize_methods``, under ``actors.client_api.gate_methods``).
While auth is disabled and the call carries no token, the handler runs as it is: one flag
and one metadata look-up. Otherwise the caller is resolved (``MemberAuth.caller``: a token,
or the client certificate's CommonName), bound to the task in ``REQUEST_AUTH`` (so every
entry the handler proposes carries it, and ``actors.auth_apply`` checks it on every member),
and the checks etcd makes on the receiving member are made here:

- Range and a txn without writes (read locally, never proposed): read on every range, as
  etcd's ``doSerialize``; "revision of auth store is old" if the store changed meanwhile;
- Watch: each create on the stream is checked for read on its range; a refused one is
  answered ``created`` and ``canceled`` with watch id -1 and etcd's reason (a gRPC status
  printed as Go prints it), and the stream goes on (etcd checks a from-key watch as a watch
  of its key alone; so here). The caller resolved at the stream's start is bound in
  ``REQUEST_AUTH`` for the whole stream (nothing is proposed from it; ``actors.qos`` counts
  its creates against the caller's user or role tenant);
- Lock, and Campaign, Leader and Observe of an election: read on the name's prefix (etcd's
  lock and election servers are clients of the KV API, whose reads are checked); their
  writes are checked at apply like any other;
- Defragment, Snapshot, Hash, HashKV, MemberAdd, MemberRemove, MemberUpdate,
  MemberPromote: the root role (etcd's ``authMaintenanceServer``, which answers with the
  auth store's raw error, code UNKNOWN and an ``auth:`` message, and
  ``checkMembershipOperationPermission``, which answers etcd's usual errors).

Everything else (Put, DeleteRange, txns with writes, LeaseRevoke, the Auth RPCs) is checked
at apply. LeaseGrant, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases, Compact, Alarm, Status
and MemberList are not checked, as in etcd 3.4.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from actors.auth_apply import AuthApplier, rpc_error
from actors.auth_backend import REQUEST_AUTH, MemberAuth, token_of
from actors.member import Member
from actors.v3_backend import MemberV3Backend, txn_has_writes
from net.etcdpb import raft_internal_pb2, rpc_pb2, v3election_pb2, v3lock_pb2
from net.etcdpb.routes import grpc_path
from net.v3 import errors
from net.v3.errors import RpcError, StatusCode
from net.v3.methods import (
    CallContext,
    Method,
    Methods,
    SendMessage,
    StreamMethod,
    UnaryMethod,
)
from net.v3.service import V3Service
from storage.auth import store as auth
from storage.auth.store import FROM_KEY, AuthError, AuthInfo
from storage.kv import prefix_end

INVALID_WATCH_ID: Final = -1
"""clientv3's ``InvalidWatchID``: the id of a refused watch create."""

MAINTENANCE_ADMIN_PATHS: Final = frozenset(
    {
        grpc_path("Maintenance", "Defragment"),
        grpc_path("Maintenance", "Snapshot"),
        grpc_path("Maintenance", "Hash"),
        grpc_path("Maintenance", "HashKV"),
    }
)
"""etcd's ``authMaintenanceServer`` returns the auth store's own error here, unconverted: gRPC
code UNKNOWN and the ``auth:`` message (e.g. "auth: permission denied")."""
ADMIN_PATHS: Final = MAINTENANCE_ADMIN_PATHS | frozenset(
    {
        grpc_path("Cluster", "MemberAdd"),
        grpc_path("Cluster", "MemberRemove"),
        grpc_path("Cluster", "MemberUpdate"),
        grpc_path("Cluster", "MemberPromote"),
    }
)
_WATCH: Final = grpc_path("Watch", "Watch")
_RANGE: Final = grpc_path("KV", "Range")
_TXN: Final = grpc_path("KV", "Txn")
_NAMED_PREFIX_PATHS: Final = frozenset(
    {
        "/v3lockpb.Lock/Lock",
        "/v3electionpb.Election/Campaign",
        "/v3electionpb.Election/Leader",
        "/v3electionpb.Election/Observe",
    }
)
_CHECKED_AFTER: Final = frozenset({_RANGE, _TXN})


AUTH_MESSAGES: Final = {
    auth.USER_EMPTY: "auth: user name is empty",
    auth.USER_NOT_FOUND: "auth: user not found",
    auth.PERMISSION_DENIED: "auth: permission denied",
}
"""The auth store's own messages of the errors ``check_admin`` raises."""


def go_status_text(error: RpcError) -> str:
    """A gRPC status as Go's ``status.Error().Error()`` prints it (etcd's watch cancel
    reasons): ``rpc error: code = PermissionDenied desc = ...``."""
    code = "".join(part.capitalize() for part in error.code.name.split("_"))
    return f"rpc error: code = {code} desc = {error.message}"


class MemberAuthRpcBackend(MemberV3Backend):
    """Implements ``net.v3.auth_service.AuthBackend`` for one member."""

    async def propose_auth(self, entry: raft_internal_pb2.InternalRaftRequest) -> Message:
        response = await self._propose(entry)
        assert isinstance(response, Message), response
        return response

    async def hash_password(self, password: str) -> str:
        return await self.member.auth.hash_password(password)

    async def authenticate(self, name: str, password: str) -> rpc_pb2.AuthenticateResponse:
        return await self.member.auth.authenticate(name, password)


def _named_prefix(request: Message) -> bytes:
    """The key prefix a lock or an election request names."""
    assert isinstance(
        request,
        v3lock_pb2.LockRequest | v3election_pb2.CampaignRequest | v3election_pb2.LeaderRequest,
    ), type(request)
    return request.name + b"/"


class AuthGate:
    """The checks of one member; see the module docstring."""

    def __init__(self, member: Member) -> None:
        self._auth: MemberAuth = member.auth
        self._store = member.machine.auth.store  # reloaded in place, never replaced
        self._service = V3Service(MemberV3Backend(member))

    def bypass(self, context: CallContext) -> bool:
        """Whether the call needs nothing: auth disabled and no token."""
        return not self._store.enabled and token_of(context) is None

    async def caller(self, context: CallContext) -> AuthInfo:
        """The caller (an empty one when unknown). Raises ``RpcError``."""
        info = await self._auth.caller(context)
        return info if info is not None else AuthInfo()

    def before(self, path: str, request: Message, info: AuthInfo) -> None:
        """The receiving member's checks of a unary call. Raises ``RpcError``."""
        store = self._auth.store
        try:
            if path == _RANGE:
                assert isinstance(request, rpc_pb2.RangeRequest), type(request)
                store.check_range(info, request.key, request.range_end)
            elif path == _TXN:
                assert isinstance(request, rpc_pb2.TxnRequest), type(request)
                if not txn_has_writes(request):
                    self._auth_txn(info, request)
            elif path in MAINTENANCE_ADMIN_PATHS:
                try:
                    store.check_admin(info)
                except AuthError as error:
                    raise RpcError(StatusCode.UNKNOWN, AUTH_MESSAGES[error.kind]) from None
            elif path in ADMIN_PATHS:
                store.check_admin(info)
            elif path in _NAMED_PREFIX_PATHS:
                prefix = _named_prefix(request)
                try:
                    store.check_range(info, prefix, prefix_end(prefix))
                except AuthError as error:
                    # etcd's lock and election servers pass on their KV client's error as it
                    # is: code UNKNOWN, the KV error's message
                    raise RpcError(StatusCode.UNKNOWN, rpc_error(error).message) from None
        except AuthError as error:
            raise rpc_error(error) from None

    def _auth_txn(self, info: AuthInfo, request: rpc_pb2.TxnRequest) -> None:
        AuthApplier(self._auth.store).check_txn(info, request)

    def after(self, path: str, info: AuthInfo) -> None:
        """etcd's ``doSerialize`` end: a local read whose token predates an auth change that
        happened while it read is refused."""
        if path in _CHECKED_AFTER and info.revision not in (0, self._auth.store.revision):
            raise errors.auth_old_revision()

    def watch_refusal(self, info: AuthInfo, create: rpc_pb2.WatchCreateRequest) -> str | None:
        """The cancel reason of a refused watch create, or None."""
        key = create.key or b"\0"
        range_end = b"" if create.range_end == FROM_KEY else create.range_end
        try:
            self._auth.store.check_range(info, key, range_end)
        except AuthError as error:
            reason = rpc_error(error)
            if reason not in (
                errors.invalid_auth_token(),
                errors.auth_old_revision(),
                errors.user_empty(),
            ):
                reason = errors.permission_denied()
            return go_status_text(reason)
        return None

    def refused_watch(self, reason: str) -> rpc_pb2.WatchResponse:
        """The answer to a refused watch create."""
        response = rpc_pb2.WatchResponse(
            watch_id=INVALID_WATCH_ID, created=True, canceled=True, cancel_reason=reason
        )
        self._service.fill_header(response.header)
        return response


def authorize_methods(member: Member, methods: Methods) -> Methods:
    """The same methods behind the member's auth checks."""
    gate = AuthGate(member)
    return {path: _authorized(gate, path, method) for path, method in methods.items()}


def _authorized(gate: AuthGate, path: str, method: Method) -> Method:
    if isinstance(method, UnaryMethod):
        return UnaryMethod(method.request_type, _unary(gate, path, method.handler))
    stream = method.handler

    async def call_stream(
        requests: AsyncIterator[Message], send: SendMessage, context: CallContext
    ) -> None:
        if gate.bypass(context):
            await stream(requests, send, context)
            return
        if path == _WATCH:  # as etcd: an unknown token cancels each create, not the stream
            try:
                caller: AuthInfo | RpcError = await gate.caller(context)
            except RpcError as error:
                caller = error
            watcher = REQUEST_AUTH.set(caller if isinstance(caller, AuthInfo) else None)
            try:
                await stream(_permitted_watches(gate, caller, requests, send), send, context)
            finally:
                REQUEST_AUTH.reset(watcher)
            return
        info = await gate.caller(context)
        bound = REQUEST_AUTH.set(info)
        try:
            if path in ADMIN_PATHS:  # Snapshot: checked before it starts, whatever it reads
                gate.before(path, Empty(), info)
            else:
                first = _FirstChecked(gate, path, info, requests)
                requests = first.requests()
            await stream(requests, send, context)
        finally:
            REQUEST_AUTH.reset(bound)

    return StreamMethod(method.request_type, call_stream)


def _unary(
    gate: AuthGate, path: str, handler: Callable[[Message, CallContext], Awaitable[Message]]
) -> Callable[[Message, CallContext], Awaitable[Message]]:
    async def call(request: Message, context: CallContext) -> Message:
        if gate.bypass(context):
            return await handler(request, context)
        info = await gate.caller(context)
        bound = REQUEST_AUTH.set(info)
        try:
            gate.before(path, request, info)
            response = await handler(request, context)
            gate.after(path, info)
            return response
        finally:
            REQUEST_AUTH.reset(bound)

    return call


async def _permitted_watches(
    gate: AuthGate,
    caller: AuthInfo | RpcError,
    requests: AsyncIterator[Message],
    send: SendMessage,
) -> AsyncIterator[Message]:
    """The stream's requests without the refused creates, each answered here (all of them
    when the caller could not be resolved)."""
    async for request in requests:
        assert isinstance(request, rpc_pb2.WatchRequest), type(request)
        if request.HasField("create_request"):
            if isinstance(caller, RpcError):
                reason: str | None = go_status_text(caller)
            else:
                reason = gate.watch_refusal(caller, request.create_request)
            if reason is not None:
                await send(gate.refused_watch(reason))
                continue
        yield request


class _FirstChecked:
    """A server-streaming call's one request, checked like a unary call's (Snapshot, Observe)."""

    def __init__(
        self, gate: AuthGate, path: str, info: AuthInfo, requests: AsyncIterator[Message]
    ) -> None:
        self._gate, self._path, self._info, self._requests = gate, path, info, requests

    async def requests(self) -> AsyncIterator[Message]:
        async for request in self._requests:
            self._gate.before(self._path, request, self._info)
            yield request
