"""etcd 3.4's v3lock service (Lock, Unlock) over a :class:`ConcurrencyBackend`.

A lock named N is held by the key under ``N/`` with the smallest create revision. Lock puts
the caller's key ``N/<lease hex>`` (attached to its lease) in one txn that also reads the
current holder, so an uncontended lock costs one proposal; a contended one then waits for
the deletion of every key created before its own (:func:`~net.v3.concurrency.wait_deletes`)
and answers once it is first. The key returned is the lock's fencing token: its create
revision only grows from one holder to the next, so a client guards each write with a txn
comparing the key's create revision (docs/lock.md). Unlock deletes the key; so does the
lease's revocation or expiry, which is how a holder whose lease expires loses the lock.

Differences from etcd 3.4, both deliberate: a waiter whose own key vanished while it waited
(its lease expired) is answered "mutex: session is expired" as etcd 3.5 does, not told it
holds the lock; and a cancelled Lock deletes its key within :data:`CLEANUP_TIMEOUT_S`.
"""

from __future__ import annotations

import logging

import trio

from net.etcdpb import rpc_pb2, v3lock_pb2
from net.etcdpb.routes import grpc_path
from net.v3.concurrency import (
    CLEANUP_TIMEOUT_S,
    ConcurrencyBackend,
    client_errors,
    create_revision_is,
    first_created,
    session_expired,
    session_lease,
    wait_deletes,
    waiter_key,
)
from net.v3.errors import RpcError
from net.v3.methods import CallContext, Methods, unary_method

logger = logging.getLogger(__name__)


def lock_txn(key: bytes, prefix: bytes, lease: int) -> rpc_pb2.TxnRequest:
    """Put ``key`` if absent, else read it; either way read the holder under ``prefix``."""
    holder = rpc_pb2.RequestOp(request_range=first_created(prefix))
    return rpc_pb2.TxnRequest(
        compare=[create_revision_is(key, 0)],
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, lease=lease)),
            holder,
        ],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key)), holder],
    )


class LockService:
    """Lock and Unlock; each public ``async`` method is one RPC."""

    def __init__(self, backend: ConcurrencyBackend) -> None:
        self._backend = backend

    async def lock(
        self, request: v3lock_pb2.LockRequest, context: CallContext
    ) -> v3lock_pb2.LockResponse:
        self._backend.admit(context)
        with client_errors():
            return await self._lock(request, context)

    async def unlock(
        self, request: v3lock_pb2.UnlockRequest, context: CallContext
    ) -> v3lock_pb2.UnlockResponse:
        self._backend.admit(context)
        with client_errors():
            response = await self._backend.delete_range(
                rpc_pb2.DeleteRangeRequest(key=request.key), context
            )
        return v3lock_pb2.UnlockResponse(header=response.header)

    async def _lock(
        self, request: v3lock_pb2.LockRequest, context: CallContext
    ) -> v3lock_pb2.LockResponse:
        backend = self._backend
        lease = await session_lease(backend, request.lease, context)
        prefix = request.name + b"/"
        key = waiter_key(prefix, lease)
        response = await backend.txn(lock_txn(key, prefix, lease), context)
        if response.succeeded:
            my_revision = response.header.revision
        else:  # this lease already waits for or holds the lock: the same key again
            my_revision = response.responses[0].response_range.kvs[0].create_revision
        assert my_revision > 0, my_revision
        holder = response.responses[1].response_range.kvs
        if not holder or holder[0].create_revision == my_revision:
            return v3lock_pb2.LockResponse(header=response.header, key=key)
        assert holder[0].create_revision < my_revision, "the holder is the oldest key"
        try:
            await wait_deletes(backend, prefix, my_revision - 1, context)
            mine = await backend.range(rpc_pb2.RangeRequest(key=key), context)
        except BaseException:
            await self._abandon(key, context)
            raise
        if not mine.kvs or mine.kvs[0].create_revision != my_revision:
            raise session_expired()
        return v3lock_pb2.LockResponse(header=mine.header, key=key)

    async def _abandon(self, key: bytes, context: CallContext) -> None:
        """Delete a waiter's key after its wait failed or was cancelled (as etcd does)."""
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT_S):
            try:
                await self._backend.delete_range(rpc_pb2.DeleteRangeRequest(key=key), context)
            except RpcError as error:  # the wait's own failure is the answer
                logger.info("lock: could not delete %r after a failed wait: %s", key, error)


def lock_methods(backend: ConcurrencyBackend) -> Methods:
    """Lock: Lock, Unlock."""
    service = LockService(backend)
    return {
        grpc_path("Lock", "Lock"): unary_method(v3lock_pb2.LockRequest, service.lock),
        grpc_path("Lock", "Unlock"): unary_method(v3lock_pb2.UnlockRequest, service.unlock),
    }
