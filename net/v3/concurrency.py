"""What the lock and election services need of the member, and the waits both are built on.

etcd 3.4 serves v3lock and v3election with its own Go client (``clientv3/concurrency``): a
lock or a candidacy is a key ``<name>/<lease id in lower-case hex>`` attached to a lease,
the holder is the key with the smallest create revision under ``<name>/``, and a waiter
waits until every key created before its own is deleted (unlocked, resigned, or removed
with its lease). troika does the same on the server: :class:`ConcurrencyBackend` is the
small interface the two services use (the KV calls with the v3 service's checks and
headers, a lease grant for a request that names no lease, and a watch), and
:func:`wait_deletes` is the wait.

A waiter never polls: it reads the newest key created before its own, watches that key
from the read's revision until a DELETE event, and reads again. Each key it waits for is
deleted at most once, so the loop runs at most once per older waiter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Protocol

from net.etcdpb import kv_pb2, rpc_pb2
from net.etcdpb.routes import GATEWAY_ROUTES
from net.v3 import errors
from net.v3.errors import RpcError, StatusCode
from net.v3.methods import CallContext
from net.v3.service import V3Service

SESSION_TTL_S = 60
"""The TTL of the lease granted for a lock or a campaign that names none (etcd's
``concurrency`` default session TTL). It is granted and never kept alive, as etcd's server
orphans the session at once: such a lock is held for at most this long."""

CLEANUP_TIMEOUT_S = 5.0
"""How long a cancelled lock or campaign may spend deleting its own key (etcd deletes it
with the client's background context; troika bounds it)."""


WAITING_RPCS = frozenset({("Lock", "Lock"), ("Election", "Campaign")})
"""The RPCs that wait for other clients (for as long as the holder keeps its lease)."""

_WAITING_GATEWAY_PATHS = frozenset(
    path for path, route in GATEWAY_ROUTES.items() if route in WAITING_RPCS
)


def waits_for_others(gateway_path: str) -> bool:
    """Whether a gateway request (``/v3/`` or ``/v3beta/``) is a Lock or a Campaign: the
    HTTP server then watches for the client leaving while it waits, and cancels it, so a
    waiter that gave up leaves the queue (as etcd's gateway cancels the call's context)."""
    path = gateway_path
    if path.startswith("/v3beta/"):
        path = "/v3/" + path.removeprefix("/v3beta/")
    return path in _WAITING_GATEWAY_PATHS


class ConcurrencyBackend(Protocol):
    """The member as the lock and election services see it.

    The KV calls are the v3 service's: the request is checked as a client's would be
    (``hasleader``, learners, sizes), the response header is complete, and failures are
    ``RpcError``.
    """

    def admit(self, context: CallContext) -> None:
        """etcd's interceptor, before the handler: a learner refuses, and so does a member
        without a leader when the caller set ``hasleader``. Raises ``RpcError``."""
        ...

    async def range(
        self, request: rpc_pb2.RangeRequest, context: CallContext
    ) -> rpc_pb2.RangeResponse:
        """A linearizable read."""
        ...

    async def txn(self, request: rpc_pb2.TxnRequest, context: CallContext) -> rpc_pb2.TxnResponse:
        """A txn, proposed through Raft."""
        ...

    async def delete_range(
        self, request: rpc_pb2.DeleteRangeRequest, context: CallContext
    ) -> rpc_pb2.DeleteRangeResponse:
        """A delete, proposed through Raft."""
        ...

    async def grant_lease(self, ttl_s: int, context: CallContext) -> int:
        """Grant a lease of ``ttl_s`` seconds with an id the server picks; its id."""
        ...

    def watch(
        self, key: bytes, range_end: bytes, start_revision: int
    ) -> AbstractAsyncContextManager[AsyncIterator[rpc_pb2.WatchResponse]]:
        """Watch ``[key, range_end)`` (one key when ``range_end`` is empty) from
        ``start_revision``: every change in revision order, as the messages a Watch stream
        would carry (header and events). The iterator ends after a message that cancels the
        watch (``canceled``, with ``compact_revision`` when the revision was compacted)."""
        ...


@contextmanager
def client_errors() -> Iterator[None]:
    """Report a failure of the member as etcd's lock and election servers do.

    They call the member through etcd's own client, which turns every etcd error into a
    plain Go error: the message stays, the gRPC code becomes Unknown (the gateway's 500), so
    a Lock with a missing lease answers "etcdserver: requested lease not found" with code 2,
    not 5.
    """
    try:
        yield
    except RpcError as error:
        if error.code == StatusCode.UNKNOWN:
            raise
        raise RpcError(StatusCode.UNKNOWN, error.message) from error


def session_expired() -> RpcError:
    """A waiter whose key was deleted (its lease expired or was revoked) while it waited.

    etcd 3.4's lock answered such a waiter as if it held the lock (the Jepsen finding fixed
    in etcd 3.5, which answers with this message); troika answers as 3.5 does.
    """
    return RpcError(StatusCode.UNKNOWN, "mutex: session is expired")


def lost_watch() -> RpcError:
    """The watch of a waited-for key ended without its deletion (etcd's wording)."""
    return RpcError(StatusCode.UNKNOWN, "lost watcher waiting for delete")


def prefix_range_end(prefix: bytes) -> bytes:
    """The end of the range of keys starting with ``prefix`` (etcd's ``GetPrefixRangeEnd``:
    the last byte below 0xff incremented, or ``\\0``, every key, when there is none)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\x00"
    return stripped[:-1] + bytes([stripped[-1] + 1])


def waiter_key(prefix: bytes, lease: int) -> bytes:
    """A session's key under ``prefix``: the lease id in lower-case hex, as Go's ``%x`` of a
    signed id (a negative id gets a minus sign)."""
    return prefix + format(lease, "x").encode()


def first_created(prefix: bytes) -> rpc_pb2.RangeRequest:
    """The key under ``prefix`` with the smallest create revision: the holder."""
    return rpc_pb2.RangeRequest(
        key=prefix,
        range_end=prefix_range_end(prefix),
        sort_target=rpc_pb2.RangeRequest.CREATE,
        sort_order=rpc_pb2.RangeRequest.ASCEND,
        limit=1,
    )


def last_created_before(prefix: bytes, max_create_revision: int) -> rpc_pb2.RangeRequest:
    """The key under ``prefix`` created last at or before ``max_create_revision``: the one a
    waiter waits for next."""
    return rpc_pb2.RangeRequest(
        key=prefix,
        range_end=prefix_range_end(prefix),
        sort_target=rpc_pb2.RangeRequest.CREATE,
        sort_order=rpc_pb2.RangeRequest.DESCEND,
        limit=1,
        max_create_revision=max_create_revision,
    )


def create_revision_is(key: bytes, revision: int) -> rpc_pb2.Compare:
    """A txn compare: ``key``'s create revision equals ``revision`` (0: the key is absent)."""
    return rpc_pb2.Compare(
        key=key,
        target=rpc_pb2.Compare.CREATE,
        result=rpc_pb2.Compare.EQUAL,
        create_revision=revision,
    )


async def wait_delete(backend: ConcurrencyBackend, key: bytes, revision: int) -> None:
    """Return once ``key`` is deleted at or after ``revision``.

    Raises:
        RpcError: the watch was cancelled (compacted past ``revision``) or ended.
    """
    async with backend.watch(key, b"", revision) as responses:
        async for response in responses:
            if any(event.type == kv_pb2.Event.DELETE for event in response.events):
                return
            if response.canceled:
                if response.compact_revision:
                    raise errors.compacted()
                break
    raise lost_watch()


async def wait_deletes(
    backend: ConcurrencyBackend, prefix: bytes, max_create_revision: int, context: CallContext
) -> rpc_pb2.ResponseHeader:
    """Wait until no key under ``prefix`` has a create revision up to
    ``max_create_revision``; the header of the read that found none."""
    request = last_created_before(prefix, max_create_revision)
    while True:
        response = await backend.range(request, context)
        if not response.kvs:
            return response.header
        await wait_delete(backend, response.kvs[0].key, response.header.revision)


async def session_lease(backend: ConcurrencyBackend, lease: int, context: CallContext) -> int:
    """The lease a lock or candidacy is attached to: ``lease``, or when it is 0 a new one of
    :data:`SESSION_TTL_S` (etcd's server-side session)."""
    if lease != 0:
        return lease
    return await backend.grant_lease(SESSION_TTL_S, context)


GrantCall = Callable[
    [rpc_pb2.LeaseGrantRequest, CallContext], Awaitable[rpc_pb2.LeaseGrantResponse]
]
"""The Lease service's LeaseGrant (``LeaseService.grant``)."""

WatchOpener = Callable[
    [bytes, bytes, int], AbstractAsyncContextManager[AsyncIterator[rpc_pb2.WatchResponse]]
]
"""Opens a watch as :meth:`ConcurrencyBackend.watch` does (the member's watch hub)."""


class ServiceBackend:
    """The :class:`ConcurrencyBackend` of a member: the KV calls and the interceptor's
    checks of its v3 service, the Lease service's grant, and the member's watch hub."""

    def __init__(self, service: V3Service, grant: GrantCall, watch: WatchOpener) -> None:
        self._service = service
        self._grant = grant
        self._watch = watch

    def admit(self, context: CallContext) -> None:
        self._service.admit(context)

    async def range(
        self, request: rpc_pb2.RangeRequest, context: CallContext
    ) -> rpc_pb2.RangeResponse:
        return await self._service.range(request, context)

    async def txn(self, request: rpc_pb2.TxnRequest, context: CallContext) -> rpc_pb2.TxnResponse:
        return await self._service.txn(request, context)

    async def delete_range(
        self, request: rpc_pb2.DeleteRangeRequest, context: CallContext
    ) -> rpc_pb2.DeleteRangeResponse:
        return await self._service.delete_range(request, context)

    async def grant_lease(self, ttl_s: int, context: CallContext) -> int:
        response = await self._grant(rpc_pb2.LeaseGrantRequest(TTL=ttl_s), context)
        assert response.ID != 0, "a granted lease has an id"
        return response.ID

    def watch(
        self, key: bytes, range_end: bytes, start_revision: int
    ) -> AbstractAsyncContextManager[AsyncIterator[rpc_pb2.WatchResponse]]:
        return self._watch(key, range_end, start_revision)
