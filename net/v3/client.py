"""A v3 client over etcd's JSON gateway (``POST /v3/kv/range`` ...), over any Network.

The CLI (``troika get/put/del/txn/compaction``, ``troika lease ...``) uses it; it speaks
HTTP/1.1 through :class:`~net.http.client.HttpClient`, so it runs over TCP and over the
simulated network alike. Requests and responses are ``net.etcdpb`` protobuf messages, carried as the
gateway's JSON (``google.protobuf.json_format``: proto field names, int64 as strings,
bytes as base64). A failure the server reports becomes :class:`~net.v3.errors.RpcError`,
exactly as the gRPC transport would report it.

Endpoints fail over as the v2 client's callers do: a request goes to the endpoint that
last answered; when that one cannot be reached it goes to the next. A request that
reached a server and then lost its connection is sent again elsewhere only if it is a
read, since a put or a txn may have been applied.

Security is clientv3 3.4's (see ``net.client_tls`` for which endpoints speak TLS): the
gateway is reached over HTTPS (ALPN ``http/1.1``) and gRPC streams over TLS (ALPN ``h2``).
With :class:`Credentials`, the client calls ``Auth.Authenticate`` once before its first
request and sends the token with every call (the gateway's ``Authorization`` header, gRPC's
``token`` metadata, the names etcd reads); when the server answers that the token is invalid
or stale (a restarted member, an expired simple token, a changed auth store), it asks for a
new token once and sends the call again, as clientv3's retry interceptor does. A server with
auth disabled answers Authenticate with an error that clientv3 ignores, and so does this
client: it goes on without a token.

With a client certificate, unary calls to TLS endpoints go over gRPC instead of the gateway:
etcd 3.4's gateway refuses every request from a client whose certificate has a CommonName
("CommonName of client sending a request against gateway will be ignored and not used as
expected"), while its gRPC service takes the CommonName as the user.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import trio
from google.protobuf import json_format
from google.protobuf.message import Message

from net.client_tls import (
    ALPN_H2,
    ALPN_HTTP1,
    ClientTls,
    DialingNetwork,
    TlsDialingNetwork,
    endpoint_with_scheme,
)
from net.etcdpb import rpc_pb2
from net.etcdpb.routes import GATEWAY_ROUTES, grpc_path
from net.grpc.client import CallStream, GrpcChannel
from net.http.client import HttpClient
from net.http.errors import HttpConnectError, HttpError, HttpProtocolError, HttpTimeout
from net.network import Network, NetworkError, split_address
from net.v3.errors import RpcError, StatusCode

logger = logging.getLogger(__name__)

DIAL_TIMEOUT_SECONDS = 2.0
"""etcdctl's ``--dial-timeout`` default."""
REQUEST_TIMEOUT_SECONDS = 5.0
"""etcdctl's ``--command-timeout`` default: one request, all endpoints tried included."""

RANGE_PATH = "/v3/kv/range"
PUT_PATH = "/v3/kv/put"
DELETE_RANGE_PATH = "/v3/kv/deleterange"
TXN_PATH = "/v3/kv/txn"
COMPACT_PATH = "/v3/kv/compaction"
LEASE_GRANT_PATH = "/v3/lease/grant"
LEASE_REVOKE_PATH = "/v3/lease/revoke"
LEASE_TIME_TO_LIVE_PATH = "/v3/lease/timetolive"
LEASE_LEASES_PATH = "/v3/lease/leases"
MEMBER_ADD_PATH = "/v3/cluster/member/add"
MEMBER_REMOVE_PATH = "/v3/cluster/member/remove"
MEMBER_UPDATE_PATH = "/v3/cluster/member/update"
MEMBER_LIST_PATH = "/v3/cluster/member/list"
MEMBER_PROMOTE_PATH = "/v3/cluster/member/promote"
ALARM_PATH = "/v3/maintenance/alarm"
STATUS_PATH = "/v3/maintenance/status"
DEFRAGMENT_PATH = "/v3/maintenance/defragment"
MOVE_LEADER_PATH = "/v3/maintenance/transfer-leadership"
AUTH_ENABLE_PATH = "/v3/auth/enable"
AUTH_DISABLE_PATH = "/v3/auth/disable"
AUTHENTICATE_PATH = "/v3/auth/authenticate"
USER_ADD_PATH = "/v3/auth/user/add"
USER_GET_PATH = "/v3/auth/user/get"
USER_LIST_PATH = "/v3/auth/user/list"
USER_DELETE_PATH = "/v3/auth/user/delete"
USER_CHANGE_PASSWORD_PATH = "/v3/auth/user/changepw"
USER_GRANT_ROLE_PATH = "/v3/auth/user/grant"
USER_REVOKE_ROLE_PATH = "/v3/auth/user/revoke"
ROLE_ADD_PATH = "/v3/auth/role/add"
ROLE_GET_PATH = "/v3/auth/role/get"
ROLE_LIST_PATH = "/v3/auth/role/list"
ROLE_DELETE_PATH = "/v3/auth/role/delete"
ROLE_GRANT_PERMISSION_PATH = "/v3/auth/role/grant"
ROLE_REVOKE_PERMISSION_PATH = "/v3/auth/role/revoke"
JSON_CONTENT_TYPE = ("Content-Type", "application/json")
AUTHORIZATION_HEADER = "Authorization"
"""The gateway passes it on as the ``authorization`` metadata, which etcd reads as the token."""
TOKEN_METADATA = "token"
"""The gRPC metadata etcd reads the token from."""
AUTH_NOT_ENABLED = "etcdserver: authentication is not enabled"
"""Authenticate's answer when auth is off; clientv3 goes on without a token."""
TOKEN_REFRESH_ERRORS = frozenset(
    {
        "etcdserver: invalid auth token",
        "etcdserver: revision of auth store is old",
        "etcdserver: user name is empty",
    }
)
"""The errors after which clientv3 asks for a new token and sends the call again (once)."""

WATCH_GRPC_PATH = grpc_path("Watch", "Watch")
LEASE_KEEP_ALIVE_GRPC_PATH = grpc_path("Lease", "LeaseKeepAlive")
REQUIRE_LEADER_METADATA = (("hasleader", "true"),)
"""clientv3's ``WithRequireLeader``: a member that loses its leader ends the stream."""

assert all(
    path in GATEWAY_ROUTES
    for path in (
        RANGE_PATH,
        PUT_PATH,
        DELETE_RANGE_PATH,
        TXN_PATH,
        COMPACT_PATH,
        LEASE_GRANT_PATH,
        LEASE_REVOKE_PATH,
        LEASE_TIME_TO_LIVE_PATH,
        LEASE_LEASES_PATH,
        MEMBER_ADD_PATH,
        MEMBER_REMOVE_PATH,
        MEMBER_UPDATE_PATH,
        MEMBER_LIST_PATH,
        MEMBER_PROMOTE_PATH,
        ALARM_PATH,
        STATUS_PATH,
        DEFRAGMENT_PATH,
        MOVE_LEADER_PATH,
        AUTH_ENABLE_PATH,
        AUTH_DISABLE_PATH,
        AUTHENTICATE_PATH,
        USER_ADD_PATH,
        USER_GET_PATH,
        USER_LIST_PATH,
        USER_DELETE_PATH,
        USER_CHANGE_PASSWORD_PATH,
        USER_GRANT_ROLE_PATH,
        USER_REVOKE_ROLE_PATH,
        ROLE_ADD_PATH,
        ROLE_GET_PATH,
        ROLE_LIST_PATH,
        ROLE_DELETE_PATH,
        ROLE_GRANT_PERMISSION_PATH,
        ROLE_REVOKE_PERMISSION_PATH,
    )
)

ResponseT = TypeVar("ResponseT", bound=Message)


def endpoint_url(endpoint: str, tls: ClientTls | None = None) -> str:
    """An endpoint as etcdctl takes it (``host:port`` or a URL) as ``http(s)://host:port``
    (a bare one is ``https`` when ``tls`` says so).

    Raises:
        ValueError: neither form, or a scheme other than http(s).
    """
    return endpoint_with_scheme(endpoint, tls if tls is not None else ClientTls())


@dataclass(frozen=True, slots=True)
class Credentials:
    """etcdctl's ``--user`` and ``--password``."""

    user: str
    password: str


def rpc_error_from_body(status: int, body: bytes) -> RpcError:
    """The :class:`RpcError` a gateway error body (``{"error","message","code"}``) stands for.

    A body that is not the gateway's error JSON (a proxy's HTML, a 404 from something that
    is not etcd) becomes ``UNKNOWN`` with the HTTP status in the message.
    """
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("code"), int):
        message = data.get("message") or data.get("error") or ""
        try:
            code = StatusCode(data["code"])
        except ValueError:
            code = StatusCode.UNKNOWN
        return RpcError(code, str(message))
    text = body.decode("utf-8", errors="replace").strip()
    return RpcError(StatusCode.UNKNOWN, f"HTTP {status}: {text}" if text else f"HTTP {status}")


def decode_response(body: bytes, response_type: type[ResponseT]) -> ResponseT:
    """A successful gateway body as a protobuf message (unknown fields are ignored).

    Raises:
        HttpProtocolError: the body is not the JSON of ``response_type``.
    """
    response = response_type()
    try:
        json_format.Parse(body or b"{}", response, ignore_unknown_fields=True)
    except json_format.ParseError as error:
        raise HttpProtocolError(f"malformed gateway response: {error}") from error
    return response


def encode_request(request: Message) -> bytes:
    """A request message as the gateway's JSON (proto field names, int64 as strings)."""
    return json_format.MessageToJson(
        request, preserving_proto_field_name=True, indent=None
    ).encode()


class _DialTimeoutNetwork(DialingNetwork):
    """A Network whose ``connect`` gives up after the dial timeout."""

    def __init__(self, network: Network, dial_timeout_s: float) -> None:
        self._network = network
        self._dial_timeout_s = dial_timeout_s

    async def connect(self, address: str) -> trio.abc.Stream:
        with trio.move_on_after(self._dial_timeout_s):
            return await self._network.connect(address)
        raise NetworkError(f"no connection to {address} within {self._dial_timeout_s} s")


class V3Client:
    """Talks to a cluster's client URLs through the JSON gateway.

    Args:
        network: how to reach the servers.
        endpoints: ``host:port`` or ``http(s)://host:port``, tried in order.
        dial_timeout_s: the bound on opening one connection.
        timeout_s: the bound on one request, failover included.
        tls: etcdctl's TLS flags (which endpoints speak TLS, and how).
        credentials: the user to authenticate as (None: no token is sent).

    Raises:
        ValueError: no endpoints, or one that is not an endpoint.
        ClientTlsError: a TLS file cannot be loaded.
    """

    def __init__(
        self,
        network: Network,
        endpoints: Sequence[str],
        *,
        dial_timeout_s: float = DIAL_TIMEOUT_SECONDS,
        timeout_s: float = REQUEST_TIMEOUT_SECONDS,
        tls: ClientTls | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        tls = tls if tls is not None else ClientTls()
        self.endpoints = tuple(endpoint_url(endpoint, tls) for endpoint in endpoints)
        if not self.endpoints:
            raise ValueError("a V3Client needs at least one endpoint")
        self.timeout_s = timeout_s
        self.credentials = credentials
        secure = [_address(url) for url in self.endpoints if url.startswith("https://")]
        self._grpc_context = tls.context(ALPN_H2) if secure else None
        http_context = tls.context(ALPN_HTTP1) if secure else None
        self._secure = frozenset(secure)
        self._all_secure = tls.bare_endpoints_secure()
        self._grpc_unary = bool(tls.cert_file)
        self._network = _DialTimeoutNetwork(network, dial_timeout_s)
        contexts = {address: http_context for address in secure if http_context}
        default = http_context if self._all_secure else None
        http_network = TlsDialingNetwork(self._network, contexts, default)
        self._http = HttpClient(http_network)
        self._current = 0
        self._token: str | None = None
        self._authenticated = False

    @property
    def http(self) -> HttpClient:
        """The client's HTTP/1.1 connections (TLS where the endpoint is ``https``), for the
        endpoints' other HTTP APIs."""
        return self._http

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    async def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """``KV.Range``."""
        return await self._call(RANGE_PATH, request, rpc_pb2.RangeResponse, idempotent=True)

    async def put(self, request: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        """``KV.Put``."""
        return await self._call(PUT_PATH, request, rpc_pb2.PutResponse, idempotent=False)

    async def delete_range(
        self, request: rpc_pb2.DeleteRangeRequest
    ) -> rpc_pb2.DeleteRangeResponse:
        """``KV.DeleteRange``."""
        return await self._call(
            DELETE_RANGE_PATH, request, rpc_pb2.DeleteRangeResponse, idempotent=False
        )

    async def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """``KV.Txn`` (sent once: a txn with writes must not be applied twice)."""
        return await self._call(TXN_PATH, request, rpc_pb2.TxnResponse, idempotent=False)

    async def compact(self, request: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        """``KV.Compact``."""
        return await self._call(COMPACT_PATH, request, rpc_pb2.CompactionResponse, idempotent=True)

    async def lease_grant(self, request: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        """``Lease.LeaseGrant`` (sent once: a retried grant could leave a second lease)."""
        return await self._call(
            LEASE_GRANT_PATH, request, rpc_pb2.LeaseGrantResponse, idempotent=False
        )

    async def lease_revoke(
        self, request: rpc_pb2.LeaseRevokeRequest
    ) -> rpc_pb2.LeaseRevokeResponse:
        """``Lease.LeaseRevoke``."""
        return await self._call(
            LEASE_REVOKE_PATH, request, rpc_pb2.LeaseRevokeResponse, idempotent=False
        )

    async def lease_time_to_live(
        self, request: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        """``Lease.LeaseTimeToLive``."""
        return await self._call(
            LEASE_TIME_TO_LIVE_PATH, request, rpc_pb2.LeaseTimeToLiveResponse, idempotent=True
        )

    async def lease_leases(
        self, request: rpc_pb2.LeaseLeasesRequest
    ) -> rpc_pb2.LeaseLeasesResponse:
        """``Lease.LeaseLeases``."""
        return await self._call(
            LEASE_LEASES_PATH, request, rpc_pb2.LeaseLeasesResponse, idempotent=True
        )

    async def member_list(self) -> rpc_pb2.MemberListResponse:
        """``Cluster.MemberList``."""
        request = rpc_pb2.MemberListRequest()
        return await self._call(
            MEMBER_LIST_PATH, request, rpc_pb2.MemberListResponse, idempotent=True
        )

    async def member_add(self, request: rpc_pb2.MemberAddRequest) -> rpc_pb2.MemberAddResponse:
        """``Cluster.MemberAdd`` (sent once: a retried add could add a second member)."""
        return await self._call(
            MEMBER_ADD_PATH, request, rpc_pb2.MemberAddResponse, idempotent=False
        )

    async def member_remove(
        self, request: rpc_pb2.MemberRemoveRequest
    ) -> rpc_pb2.MemberRemoveResponse:
        """``Cluster.MemberRemove``."""
        return await self._call(
            MEMBER_REMOVE_PATH, request, rpc_pb2.MemberRemoveResponse, idempotent=False
        )

    async def member_update(
        self, request: rpc_pb2.MemberUpdateRequest
    ) -> rpc_pb2.MemberUpdateResponse:
        """``Cluster.MemberUpdate``."""
        return await self._call(
            MEMBER_UPDATE_PATH, request, rpc_pb2.MemberUpdateResponse, idempotent=False
        )

    async def member_promote(
        self, request: rpc_pb2.MemberPromoteRequest
    ) -> rpc_pb2.MemberPromoteResponse:
        """``Cluster.MemberPromote``."""
        return await self._call(
            MEMBER_PROMOTE_PATH, request, rpc_pb2.MemberPromoteResponse, idempotent=False
        )

    async def alarm(self, request: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        """``Maintenance.Alarm`` (list, activate or deactivate)."""
        return await self._call(ALARM_PATH, request, rpc_pb2.AlarmResponse, idempotent=False)

    async def status(self) -> rpc_pb2.StatusResponse:
        """``Maintenance.Status`` of the endpoint that answers (one endpoint: that member's)."""
        request = rpc_pb2.StatusRequest()
        return await self._call(STATUS_PATH, request, rpc_pb2.StatusResponse, idempotent=True)

    async def defragment(self) -> rpc_pb2.DefragmentResponse:
        """``Maintenance.Defragment`` of the endpoint that answers."""
        request = rpc_pb2.DefragmentRequest()
        return await self._call(
            DEFRAGMENT_PATH, request, rpc_pb2.DefragmentResponse, idempotent=True
        )

    async def move_leader(self, request: rpc_pb2.MoveLeaderRequest) -> rpc_pb2.MoveLeaderResponse:
        """``Maintenance.MoveLeader`` (only the leader accepts it)."""
        return await self._call(
            MOVE_LEADER_PATH, request, rpc_pb2.MoveLeaderResponse, idempotent=False
        )

    async def auth_enable(self) -> rpc_pb2.AuthEnableResponse:
        """``Auth.AuthEnable``."""
        request = rpc_pb2.AuthEnableRequest()
        return await self._call(
            AUTH_ENABLE_PATH, request, rpc_pb2.AuthEnableResponse, idempotent=True
        )

    async def auth_disable(self) -> rpc_pb2.AuthDisableResponse:
        """``Auth.AuthDisable``."""
        request = rpc_pb2.AuthDisableRequest()
        return await self._call(
            AUTH_DISABLE_PATH, request, rpc_pb2.AuthDisableResponse, idempotent=True
        )

    async def user_add(self, request: rpc_pb2.AuthUserAddRequest) -> rpc_pb2.AuthUserAddResponse:
        """``Auth.UserAdd``."""
        return await self._call(
            USER_ADD_PATH, request, rpc_pb2.AuthUserAddResponse, idempotent=False
        )

    async def user_get(self, request: rpc_pb2.AuthUserGetRequest) -> rpc_pb2.AuthUserGetResponse:
        """``Auth.UserGet``."""
        return await self._call(
            USER_GET_PATH, request, rpc_pb2.AuthUserGetResponse, idempotent=True
        )

    async def user_list(self) -> rpc_pb2.AuthUserListResponse:
        """``Auth.UserList``."""
        request = rpc_pb2.AuthUserListRequest()
        return await self._call(
            USER_LIST_PATH, request, rpc_pb2.AuthUserListResponse, idempotent=True
        )

    async def user_delete(
        self, request: rpc_pb2.AuthUserDeleteRequest
    ) -> rpc_pb2.AuthUserDeleteResponse:
        """``Auth.UserDelete``."""
        return await self._call(
            USER_DELETE_PATH, request, rpc_pb2.AuthUserDeleteResponse, idempotent=False
        )

    async def user_change_password(
        self, request: rpc_pb2.AuthUserChangePasswordRequest
    ) -> rpc_pb2.AuthUserChangePasswordResponse:
        """``Auth.UserChangePassword``."""
        return await self._call(
            USER_CHANGE_PASSWORD_PATH,
            request,
            rpc_pb2.AuthUserChangePasswordResponse,
            idempotent=True,
        )

    async def user_grant_role(
        self, request: rpc_pb2.AuthUserGrantRoleRequest
    ) -> rpc_pb2.AuthUserGrantRoleResponse:
        """``Auth.UserGrantRole``."""
        return await self._call(
            USER_GRANT_ROLE_PATH, request, rpc_pb2.AuthUserGrantRoleResponse, idempotent=False
        )

    async def user_revoke_role(
        self, request: rpc_pb2.AuthUserRevokeRoleRequest
    ) -> rpc_pb2.AuthUserRevokeRoleResponse:
        """``Auth.UserRevokeRole``."""
        return await self._call(
            USER_REVOKE_ROLE_PATH, request, rpc_pb2.AuthUserRevokeRoleResponse, idempotent=False
        )

    async def role_add(self, request: rpc_pb2.AuthRoleAddRequest) -> rpc_pb2.AuthRoleAddResponse:
        """``Auth.RoleAdd``."""
        return await self._call(
            ROLE_ADD_PATH, request, rpc_pb2.AuthRoleAddResponse, idempotent=False
        )

    async def role_get(self, request: rpc_pb2.AuthRoleGetRequest) -> rpc_pb2.AuthRoleGetResponse:
        """``Auth.RoleGet``."""
        return await self._call(
            ROLE_GET_PATH, request, rpc_pb2.AuthRoleGetResponse, idempotent=True
        )

    async def role_list(self) -> rpc_pb2.AuthRoleListResponse:
        """``Auth.RoleList``."""
        request = rpc_pb2.AuthRoleListRequest()
        return await self._call(
            ROLE_LIST_PATH, request, rpc_pb2.AuthRoleListResponse, idempotent=True
        )

    async def role_delete(
        self, request: rpc_pb2.AuthRoleDeleteRequest
    ) -> rpc_pb2.AuthRoleDeleteResponse:
        """``Auth.RoleDelete``."""
        return await self._call(
            ROLE_DELETE_PATH, request, rpc_pb2.AuthRoleDeleteResponse, idempotent=False
        )

    async def role_grant_permission(
        self, request: rpc_pb2.AuthRoleGrantPermissionRequest
    ) -> rpc_pb2.AuthRoleGrantPermissionResponse:
        """``Auth.RoleGrantPermission``."""
        return await self._call(
            ROLE_GRANT_PERMISSION_PATH,
            request,
            rpc_pb2.AuthRoleGrantPermissionResponse,
            idempotent=True,
        )

    async def role_revoke_permission(
        self, request: rpc_pb2.AuthRoleRevokePermissionRequest
    ) -> rpc_pb2.AuthRoleRevokePermissionResponse:
        """``Auth.RoleRevokePermission``."""
        return await self._call(
            ROLE_REVOKE_PERMISSION_PATH,
            request,
            rpc_pb2.AuthRoleRevokePermissionResponse,
            idempotent=False,
        )

    def grpc_channel(self, endpoint: str) -> GrpcChannel:
        """A gRPC channel to one of :attr:`endpoints` (TLS as that endpoint says); enter it
        with ``async with``."""
        address = _address(endpoint)
        secure = address in self._secure or self._all_secure
        context = self._grpc_context if secure else None
        return GrpcChannel(self._network, address, ssl_context=context)

    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        """The token's gRPC metadata (nothing before :meth:`authenticate` or without one)."""
        return () if self._token is None else ((TOKEN_METADATA, self._token),)

    async def grpc_unary(
        self, endpoint: str, path: str, request: Message, response_type: type[ResponseT]
    ) -> ResponseT:
        """One unary gRPC call to ``endpoint`` (for methods the gateway lacks, such as
        ``Maintenance.HashKV``), authenticated, within :attr:`timeout_s`.

        Raises:
            RpcError: the server's status, DEADLINE_EXCEEDED, or UNAVAILABLE.
        """
        await self.authenticate()
        async with self.grpc_channel(endpoint) as channel:
            return await channel.unary(
                path,
                request,
                response_type,
                timeout_s=self.timeout_s,
                metadata=self.grpc_metadata(),
            )

    async def authenticate(self, *, again: bool = False) -> None:
        """Ask for a token with :attr:`credentials` (once, or ``again``); nothing without
        credentials, or when the server has auth disabled.

        Raises:
            RpcError: the server refused (``etcdserver: authentication failed, invalid user
                ID or password``).
        """
        if self.credentials is None or (self._authenticated and not again):
            return
        self._token = None
        request = rpc_pb2.AuthenticateRequest(
            name=self.credentials.user, password=self.credentials.password
        )
        try:
            response = await self._send(
                AUTHENTICATE_PATH, request, rpc_pb2.AuthenticateResponse, idempotent=True
            )
        except RpcError as error:
            if error.message != AUTH_NOT_ENABLED:
                raise
        else:
            self._token = response.token or None
        self._authenticated = True

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, response_type: type[ResponseT]
    ) -> AsyncIterator[CallStream[ResponseT]]:
        """A gRPC stream (``WATCH_GRPC_PATH``, ``LEASE_KEEP_ALIVE_GRPC_PATH``) to the first
        endpoint that can be reached, from the one that last answered; it has no deadline
        (the caller bounds each wait), and leaving the block cancels it. With credentials,
        the token is asked for first (within :attr:`timeout_s`).

        Raises:
            RpcError: UNAVAILABLE when no endpoint could be reached (the last one's error),
                or the stream's own status.
            HttpTimeout: no token within :attr:`timeout_s`.
        """
        with trio.move_on_after(self.timeout_s) as scope:
            await self.authenticate()
        if scope.cancelled_caught:
            raise HttpTimeout(f"authenticate: no answer within {self.timeout_s} s")
        metadata = REQUIRE_LEADER_METADATA + self.grpc_metadata()
        async with contextlib.AsyncExitStack() as stack:
            call: CallStream[ResponseT] | None = None
            last_error: RpcError | None = None
            for attempt in range(len(self.endpoints)):
                index = (self._current + attempt) % len(self.endpoints)
                channel = await stack.enter_async_context(self.grpc_channel(self.endpoints[index]))
                try:
                    call = await stack.enter_async_context(
                        channel.stream(path, response_type, metadata=metadata)
                    )
                except RpcError as error:
                    if error.code is not StatusCode.UNAVAILABLE:
                        raise
                    logger.debug("%s: %s; trying the next endpoint", self.endpoints[index], error)
                    last_error = error
                    continue
                self._current = index
                break
            if call is None:
                assert last_error is not None
                raise last_error
            yield call

    async def _call(
        self, path: str, request: Message, response_type: type[ResponseT], *, idempotent: bool
    ) -> ResponseT:
        """Authenticate if not yet done, send (failing over), and once more with a new token
        if the server refused the token.

        Raises:
            RpcError: the server answered with an error.
            HttpTimeout: no answer within ``timeout_s``.
            HttpError: no endpoint answered (the last endpoint's error).
        """
        with trio.move_on_after(self.timeout_s):
            await self.authenticate()
            try:
                return await self._send(path, request, response_type, idempotent=idempotent)
            except RpcError as error:
                if self.credentials is None or error.message not in TOKEN_REFRESH_ERRORS:
                    raise
                logger.debug("%s: %s; asking for a new token", path, error)
            await self.authenticate(again=True)
            return await self._send(path, request, response_type, idempotent=idempotent)
        raise HttpTimeout(f"POST {path}: no answer within {self.timeout_s} s")

    async def _send(
        self, path: str, request: Message, response_type: type[ResponseT], *, idempotent: bool
    ) -> ResponseT:
        """Send to the current endpoint, failing over; decode the answer (unbounded: the
        caller bounds it).

        Raises:
            RpcError: the server answered with an error.
            HttpError: no endpoint answered (the last endpoint's error).
        """
        body = encode_request(request)
        headers = [JSON_CONTENT_TYPE]
        if self._token is not None and path != AUTHENTICATE_PATH:
            headers.append((AUTHORIZATION_HEADER, self._token))
        last_error: HttpError | RpcError | None = None
        for attempt in range(len(self.endpoints)):
            index = (self._current + attempt) % len(self.endpoints)
            endpoint = self.endpoints[index]
            if self._grpc_unary and _address(endpoint) in self._secure:
                try:
                    response = await self._send_grpc(endpoint, path, request, response_type)
                except RpcError as error:
                    if error.code is not StatusCode.UNAVAILABLE or not idempotent:
                        raise
                    logger.debug("%s: %s; trying the next endpoint", endpoint, error)
                    last_error = error
                    continue
                self._current = index
                return response
            try:
                reply = await self._http.request(
                    "POST", endpoint + path, headers=headers, body=body, timeout=None
                )
            except HttpConnectError as error:
                logger.debug("%s: %s; trying the next endpoint", endpoint, error)
                last_error = error
                continue
            except HttpProtocolError as error:
                if not idempotent:
                    raise
                logger.debug("%s: %s; trying the next endpoint", endpoint, error)
                last_error = error
                continue
            self._current = index
            if reply.status != 200:
                raise rpc_error_from_body(reply.status, reply.body)
            return decode_response(reply.body, response_type)
        assert last_error is not None
        raise last_error

    async def _send_grpc(
        self, endpoint: str, path: str, request: Message, response_type: type[ResponseT]
    ) -> ResponseT:
        """One unary call over gRPC: what :meth:`_send` does where etcd's gateway cannot
        serve (a client certificate: the gateway refuses one that names a CommonName)."""
        metadata = () if path == AUTHENTICATE_PATH else self.grpc_metadata()
        async with self.grpc_channel(endpoint) as channel:
            return await channel.unary(
                grpc_path(*GATEWAY_ROUTES[path]), request, response_type, metadata=metadata
            )


def _address(endpoint: str) -> str:
    """``host:port`` of an ``http(s)://host:port`` endpoint."""
    address = endpoint.split("://", 1)[1]
    split_address(address)
    return address
