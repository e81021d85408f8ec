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
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

import trio
from google.protobuf import json_format
from google.protobuf.message import Message

from net.etcdpb import rpc_pb2
from net.etcdpb.routes import GATEWAY_ROUTES, grpc_path
from net.grpc.client import CallStream, GrpcChannel
from net.http.client import HttpClient
from net.http.errors import HttpConnectError, HttpError, HttpProtocolError, HttpTimeout
from net.network import Network, NetworkError, StreamHandler
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
JSON_CONTENT_TYPE = ("Content-Type", "application/json")

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
    )
)

ResponseT = TypeVar("ResponseT", bound=Message)


def endpoint_url(endpoint: str) -> str:
    """An endpoint as etcdctl takes it (``host:port`` or a URL) as ``http://host:port``.

    Raises:
        ValueError: neither form, or a scheme other than http(s).
    """
    text = endpoint.strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    scheme = text.split("://", 1)[0]
    if scheme not in ("http", "https"):
        raise ValueError(f"endpoint {endpoint!r} is not host:port or http://host:port")
    return text


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


class _DialTimeoutNetwork:
    """A Network whose ``connect`` gives up after the dial timeout."""

    def __init__(self, network: Network, dial_timeout_s: float) -> None:
        self._network = network
        self._dial_timeout_s = dial_timeout_s

    async def connect(self, address: str) -> trio.abc.Stream:
        with trio.move_on_after(self._dial_timeout_s):
            return await self._network.connect(address)
        raise NetworkError(f"no connection to {address} within {self._dial_timeout_s} s")

    async def serve(
        self,
        address: str,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        raise NotImplementedError("a client network does not serve")


class V3Client:
    """Talks to a cluster's client URLs through the JSON gateway.

    Args:
        network: how to reach the servers.
        endpoints: ``host:port`` or ``http://host:port``, tried in order.
        dial_timeout_s: the bound on opening one connection.
        timeout_s: the bound on one request, failover included.

    Raises:
        ValueError: no endpoints, or one that is not an endpoint.
    """

    def __init__(
        self,
        network: Network,
        endpoints: Sequence[str],
        *,
        dial_timeout_s: float = DIAL_TIMEOUT_SECONDS,
        timeout_s: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.endpoints = tuple(endpoint_url(endpoint) for endpoint in endpoints)
        if not self.endpoints:
            raise ValueError("a V3Client needs at least one endpoint")
        self.timeout_s = timeout_s
        self._network = _DialTimeoutNetwork(network, dial_timeout_s)
        self._http = HttpClient(self._network)
        self._current = 0

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

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, response_type: type[ResponseT]
    ) -> AsyncIterator[CallStream[ResponseT]]:
        """A gRPC stream (``WATCH_GRPC_PATH``, ``LEASE_KEEP_ALIVE_GRPC_PATH``) to the first
        endpoint that can be reached, from the one that last answered; it has no deadline
        (the caller bounds each wait), and leaving the block cancels it.

        Raises:
            RpcError: UNAVAILABLE when no endpoint could be reached (the last one's error),
                or the stream's own status.
        """
        async with contextlib.AsyncExitStack() as stack:
            call: CallStream[ResponseT] | None = None
            last_error: RpcError | None = None
            for attempt in range(len(self.endpoints)):
                index = (self._current + attempt) % len(self.endpoints)
                address = self.endpoints[index].split("://", 1)[1]
                channel = await stack.enter_async_context(GrpcChannel(self._network, address))
                try:
                    call = await stack.enter_async_context(
                        channel.stream(path, response_type, metadata=REQUIRE_LEADER_METADATA)
                    )
                except RpcError as error:
                    if error.code is not StatusCode.UNAVAILABLE:
                        raise
                    logger.debug("%s: %s; trying the next endpoint", address, error)
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
        """Send to the current endpoint, failing over; decode the answer.

        Raises:
            RpcError: the server answered with an error.
            HttpTimeout: no answer within ``timeout_s``.
            HttpError: no endpoint answered (the last endpoint's error).
        """
        body = encode_request(request)
        last_error: HttpError | None = None
        with trio.move_on_after(self.timeout_s):
            for attempt in range(len(self.endpoints)):
                index = (self._current + attempt) % len(self.endpoints)
                endpoint = self.endpoints[index]
                try:
                    reply = await self._http.request(
                        "POST",
                        endpoint + path,
                        headers=(JSON_CONTENT_TYPE,),
                        body=body,
                        timeout=None,
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
        raise HttpTimeout(f"POST {path}: no answer within {self.timeout_s} s")
