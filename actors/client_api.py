"""The member's client port: the v2 HTTP API, the v3 JSON gateway and v3 gRPC on one listener.

etcd serves all three on each client URL: a connection that opens with the
HTTP/2 preface is gRPC, anything else is HTTP/1.1, where ``/v3/`` and
``/v3beta/`` paths go to the gateway and the rest to the v2 API. Both v3
transports serve the one method table built over ``MemberV3Backend``.
Nothing is served before the member has published its client URLs, as etcd
serves clients only once it is ready.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial

import trio
from google.protobuf.message import Message

from actors.api_backend import MemberPasswords, MemberV2Backend, gate_until_published
from actors.auth_gate import MemberAuthRpcBackend, authorize_methods
from actors.cluster_backend import MemberClusterBackend
from actors.maintenance_backend import MemberMaintenanceBackend
from actors.member import Member
from actors.qos import qos_methods, qos_routes
from actors.usage import record_methods, record_v2, recorder_of, usage_answer
from actors.v3_backend import MemberV3Backend
from actors.watch_backend import MemberWatchBackend
from net.grpc.limits import GRPC_OVERHEAD_BYTES, GrpcLimits
from net.grpc.server import GrpcServer
from net.http.messages import Handler, Request, Response, StreamingResponse
from net.http.server import HttpServer, ServerLimits
from net.inspect_api import inspect_routes
from net.v2api import V2Api
from net.v3 import errors
from net.v3.auth_service import auth_methods
from net.v3.cluster_service import cluster_methods
from net.v3.concurrency import ServiceBackend, waits_for_others
from net.v3.election_service import election_methods
from net.v3.gateway import V3_PREFIX, V3BETA_PREFIX, JsonGateway
from net.v3.lease_service import LeaseService, lease_methods
from net.v3.lock_service import lock_methods
from net.v3.maintenance_service import maintenance_methods
from net.v3.methods import (
    CallContext,
    Method,
    Methods,
    SendMessage,
    StreamHandler,
    StreamMethod,
    UnaryMethod,
)
from net.v3.service import REQUIRE_LEADER_KEY, ServiceLimits, V3Service, v3_methods
from net.v3.watch_service import WatchService, watch_methods

NO_LEADER_ELECTIONS_MAX = 3
"""Election timeouts in a row without a leader after which a stream whose caller requires one
(``hasleader`` metadata) ends with "etcdserver: no leader" (etcd's ``maxNoLeaderCnt``)."""


def gate_methods(member: Member, methods: Methods) -> Methods:
    """The same methods, each waiting (at most a request timeout) for the member to publish;
    streams also get etcd's stream interceptor rules: none on a learner, and the ``hasleader``
    rule (``require_leader``)."""

    async def ready() -> None:
        if not member.published.is_set():
            with trio.move_on_after(member.config.request_timeout_s):
                await member.published.wait()

    def gated(method: Method) -> Method:
        if isinstance(method, UnaryMethod):
            unary = method.handler

            async def call(request: Message, context: CallContext) -> Message:
                await ready()
                return await unary(request, context)

            return UnaryMethod(method.request_type, call)
        stream = method.handler

        async def call_stream(
            requests: AsyncIterator[Message], send: SendMessage, context: CallContext
        ) -> None:
            await ready()
            if member.is_learner():
                raise errors.not_supported_for_learner()  # etcd: no stream RPC on a learner
            if context.get(REQUIRE_LEADER_KEY) == "true":
                await require_leader(member, stream, requests, send, context)
            else:
                await stream(requests, send, context)

        return StreamMethod(method.request_type, call_stream)

    return {path: gated(method) for path, method in methods.items()}


async def require_leader(
    member: Member,
    stream: StreamHandler,
    requests: AsyncIterator[Message],
    send: SendMessage,
    context: CallContext,
) -> None:
    """etcd's stream interceptor for a caller that requires a leader: refused at once while
    there is none, and ended with "etcdserver: no leader" once the member has seen none at
    ``NO_LEADER_ELECTIONS_MAX`` election-timeout checks in a row (so a watcher on a member
    cut off from the cluster learns it and reconnects elsewhere)."""
    if member.leader_id() == 0:
        raise errors.no_leader()
    lost = False

    async def monitor(scope: trio.CancelScope) -> None:
        nonlocal lost
        missing = 0
        while True:
            await trio.sleep(member.config.election_timeout_s())
            missing = missing + 1 if member.leader_id() == 0 else 0
            if missing >= NO_LEADER_ELECTIONS_MAX:
                lost = True
                scope.cancel()
                return

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(monitor, nursery.cancel_scope)
            await stream(requests, send, context)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # the handler's own error (an RpcError, the transport's "stream closed"), not a group
        failures = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
        if failures:
            raise failures[0] from None
        raise
    if lost:
        raise errors.no_leader()


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error


REQUEST_BODY_BYTES_MIN = 4 << 20
"""The least the client port reads of a body (v2 and gateway requests). etcd reads any body;
a gateway request is then refused by its own gRPC limit (``--max-request-bytes`` plus 512 KiB
of protobuf: "received message larger than max") and a proposal over ``--max-request-bytes``
by the v3 service ("request is too large"). A base64-encoded request past both fits, so troika
gives the same answers; a larger body is refused with 413."""

MAX_REQUEST_BYTES_MAX = 7 << 20
"""The largest ``--max-request-bytes`` taken: a proposal must fit in one log entry
(``actors.envelope.ENVELOPE_BYTES_MAX``, 8 MiB) with its envelope."""


def body_bytes_max(limits: ServiceLimits) -> int:
    """The client port's body bound for these limits: a base64-encoded largest gRPC message."""
    base64_bytes = -(-4 * (limits.max_request_bytes + GRPC_OVERHEAD_BYTES) // 3)
    return max(REQUEST_BODY_BYTES_MIN, base64_bytes + 64 * 1024)


def concurrency_backend(
    member: Member, service: V3Service, limits: ServiceLimits | None = None
) -> ServiceBackend:
    """The member as the lock and election services use it: the v3 service's KV calls, the
    Lease service's grant and a watcher of the member's hub."""
    lease = LeaseService(MemberV3Backend(member), service)
    watch = WatchService(MemberWatchBackend(member), limits)
    return ServiceBackend(service, lease.grant, watch.open_watch)


TROIKA_PATHS_PREFIX = "/troika/v1/"
"""troika's own HTTP paths (``qos_routes``, ``inspect_routes``)."""


def route_client_paths(gateway: Handler, troika_paths: Handler, v2: Handler) -> Handler:
    """The client port's HTTP/1.1 requests by path: ``/v3/`` and ``/v3beta/`` to the JSON
    gateway, ``/troika/v1/`` to troika's own paths, everything else to the v2 API (which
    answers ``/v3alpha/`` with Go's 404, as etcd 3.4 does). One test per request, where a
    chain of wrappers, each passing on what it does not serve, cost a call apiece."""

    async def handle(request: Request) -> Response | StreamingResponse:
        path = request.path
        if path.startswith((V3_PREFIX, V3BETA_PREFIX)):
            return await gateway(request)
        if path.startswith(TROIKA_PATHS_PREFIX):
            return await troika_paths(request)
        return await v2(request)

    return handle


async def serve_client_api(
    member: Member,
    address: str,
    *,
    limits: ServiceLimits | None = None,
    wrap_http: Callable[[Handler], Handler] | None = None,
    wrap_methods: Callable[[Methods], Methods] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the member's client APIs on ``address`` until cancelled.

    Args:
        member: the member.
        address: where to listen.
        limits: ``--max-txn-ops`` and ``--max-request-bytes`` (etcd's defaults if None).
        wrap_http: applied to the HTTP/1.1 handler (the composition root's ``/metrics``,
            ``--enable-v2``), outermost.
        wrap_methods: applied to the gRPC/gateway method table (the root's gRPC metrics).
        task_status: told the bound address once listening.
    """
    limits = limits if limits is not None else ServiceLimits()
    if limits.max_request_bytes > MAX_REQUEST_BYTES_MAX:
        raise ValueError(f"--max-request-bytes must be at most {MAX_REQUEST_BYTES_MAX}")
    receive_bytes_max = limits.max_request_bytes + GRPC_OVERHEAD_BYTES
    backend = MemberV3Backend(member)
    service = V3Service(backend, limits)
    concurrency = concurrency_backend(member, service, limits)
    every_method = {
        **v3_methods(backend, limits),
        **lease_methods(backend, service),
        **watch_methods(MemberWatchBackend(member), limits),
        **lock_methods(concurrency),
        **election_methods(concurrency),
        **cluster_methods(MemberClusterBackend(member, limits.learners_max), service),
        **maintenance_methods(MemberMaintenanceBackend(member), service),
        **auth_methods(MemberAuthRpcBackend(member), service),
    }
    usage = recorder_of(member)  # issue 16: requests counted by key prefix
    metered = qos_methods(member, every_method)  # issue 16: per-tenant rates, after auth
    methods = record_methods(usage, gate_methods(member, authorize_methods(member, metered)))
    if wrap_methods is not None:
        methods = wrap_methods(methods)
    async with trio.open_nursery() as streams:
        gateway = JsonGateway(methods, streams, receive_message_bytes_max=receive_bytes_max)
        v2_api = V2Api(
            MemberV2Backend(member),
            MemberPasswords(member),
            client_cert_auth=lambda: member.auth.client_cert_auth,
        )
        v2 = record_v2(usage, v2_api)
        inspect = partial(usage_answer, member)
        troika_paths = qos_routes(member, inspect_routes(usage, inspect, v2))
        http = gate_until_published(member, route_client_paths(gateway, troika_paths, v2))
        server = HttpServer(
            member.network,
            http if wrap_http is None else wrap_http(http),
            ServerLimits(request_body_bytes_max=body_bytes_max(limits)),
            http2=GrpcServer(
                methods, GrpcLimits(receive_message_bytes_max=receive_bytes_max)
            ).serve_connection,
            watched=lambda request: waits_for_others(request.path),
        )
        await server.serve(address, task_status=task_status)
        streams.cancel_scope.cancel()
