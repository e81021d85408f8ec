"""Client-side recipes on leases and watches, as clientv3 and its ``concurrency`` package
build them: lease keep-alive, watch (with resumption), sessions, the mutex and the election.

``etcdctl lock`` and ``etcdctl elect`` do not call etcd's Lock and Election services: they
run these recipes over plain KV, Lease and Watch calls (a key per session under the lock's or
election's prefix, created with the session's lease; the oldest key holds the lock). troika's
commands do the same, request for request, so that they interoperate with etcdctl's on either
server: a troika ``lock`` and an etcdctl ``lock`` of one name exclude each other.

Everything here is ``async`` over a :class:`~net.v3.client.V3Client`; the waits are bounded
by the lease (a keep-alive unanswered for a TTL ends the session, as clientv3's deadline loop
does) or by named constants.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from net.etcdpb import kv_pb2, rpc_pb2
from net.v3.client import (
    LEASE_KEEP_ALIVE_GRPC_PATH,
    TOKEN_REFRESH_ERRORS,
    WATCH_GRPC_PATH,
    V3Client,
)
from net.v3.errors import RpcError, StatusCode
from troika.v3_commands import prefix_range_end

logger = logging.getLogger(__name__)

STREAM_RETRY_PAUSE_SECONDS = 0.5
"""clientv3's ``retryConnWait``: the pause before a broken stream is opened again."""
STREAM_RETRIES_MAX = 120
"""Consecutive failed attempts to (re)open a stream before giving up (about a minute)."""
FIRST_KEEP_ALIVE_TIMEOUT_SECONDS = 5.0
"""How long the first keep-alive answer may take (later ones: the lease's TTL)."""
UNLOCK_TIMEOUT_SECONDS = 5.0
"""The bound on deleting a waiter's key after its wait was cancelled or failed."""
SESSION_TTL_SECONDS = 60
"""concurrency.NewSession's default TTL (``elect``; ``lock`` takes ``--ttl``, default 10)."""

RETRIED_CODES = frozenset({StatusCode.UNAVAILABLE, StatusCode.INTERNAL})
"""The stream errors after which clientv3 opens the stream again."""

PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE


class LostWatcher(Exception):
    """A watch ended without the event it waited for."""


# -- lease keep-alive ----------------------------------------------------------------------------


async def keep_alive(
    client: V3Client,
    lease_id: int,
    on_response: Callable[[rpc_pb2.LeaseKeepAliveResponse], None],
    *,
    once: bool = False,
) -> rpc_pb2.LeaseKeepAliveResponse | None:
    """Keep a lease alive as clientv3's ``KeepAlive`` does: a request now, then one a third
    of the TTL after each answer; a broken stream is opened again.

    Args:
        client: the client.
        lease_id: the lease.
        on_response: called with each answer of a live lease (TTL > 0).
        once: stop after the first answer (``KeepAliveOnce``).

    Returns:
        The answer that ended it (TTL <= 0: the lease expired or was revoked), or None when
        no answer came within the lease's TTL (clientv3 then gives up the lease too).

    Raises:
        RpcError: the stream failed with something other than UNAVAILABLE or INTERNAL, or
            no endpoint could be reached ``STREAM_RETRIES_MAX`` times running.
    """
    deadline = trio.current_time() + FIRST_KEEP_ALIVE_TIMEOUT_SECONDS
    failures = 0
    renewed = False
    while True:
        try:
            async with client.stream(
                LEASE_KEEP_ALIVE_GRPC_PATH, rpc_pb2.LeaseKeepAliveResponse
            ) as call:
                failures = 0
                while True:
                    await call.send(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
                    response = None
                    with trio.move_on_at(deadline):
                        response = await call.__anext__()
                    if response is None:
                        return None
                    if response.TTL <= 0:
                        return response
                    renewed = False
                    on_response(response)
                    if once:
                        return response
                    deadline = trio.current_time() + response.TTL
                    await trio.sleep(response.TTL / 3)
        except (RpcError, StopAsyncIteration) as error:
            if await _renewed(client, error, renewed):
                renewed = True
                continue
            failures = _stream_failure(error, failures)
            if trio.current_time() >= deadline:
                return None
            await trio.sleep(STREAM_RETRY_PAUSE_SECONDS)


async def _renewed(client: V3Client, error: BaseException | str, already: bool) -> bool:
    """Whether the stream was refused for its token and a new one was got (not ``already``
    since the last good answer: clientv3 renews a token once before it gives up); the caller
    then opens the stream again at once."""
    message = error.message if isinstance(error, RpcError) else str(error)
    if client.credentials is None or already or message not in TOKEN_REFRESH_ERRORS:
        return False
    logger.debug("stream refused its token (%s); asking for a new one", message)
    await client.authenticate(again=True)
    return True


def _stream_failure(error: BaseException, failures: int) -> int:
    """Count a stream that broke; raise the error when it is not worth another attempt.

    As clientv3's ``isHaltErr``, UNAVAILABLE and INTERNAL are worth another attempt: a send on
    a stream whose connection went away reports INTERNAL (no trailers came)."""
    if isinstance(error, RpcError) and error.code not in RETRIED_CODES:
        raise error
    if failures + 1 >= STREAM_RETRIES_MAX:
        if isinstance(error, RpcError):
            raise error
        raise RpcError(StatusCode.UNAVAILABLE, "stream ended")
    logger.debug("stream broke (%s); opening it again", error)
    return failures + 1


# -- watch ---------------------------------------------------------------------------------------


def is_progress_notify(response: rpc_pb2.WatchResponse) -> bool:
    """clientv3's ``IsProgressNotify``: a header with nothing else."""
    return (
        not response.events
        and not response.canceled
        and not response.created
        and not response.compact_revision
        and response.header.revision != 0
    )


async def watch(
    client: V3Client,
    request: rpc_pb2.WatchCreateRequest,
    on_response: Callable[[rpc_pb2.WatchResponse], Awaitable[bool]],
) -> rpc_pb2.WatchResponse | None:
    """Watch as clientv3 does: every response but the creation's goes to ``on_response``
    (which returns True to stop); a broken stream is opened again from the revision after
    the last event seen, so no event is lost or repeated.

    Returns:
        The response that cancelled the watch (compacted, or refused), which ``on_response``
        has seen too; None when ``on_response`` stopped it.

    Raises:
        RpcError: as :func:`keep_alive`.
    """
    create = rpc_pb2.WatchCreateRequest()
    create.CopyFrom(request)
    failures = 0
    renewed = False
    while True:
        try:
            async with client.stream(WATCH_GRPC_PATH, rpc_pb2.WatchResponse) as call:
                await call.send(rpc_pb2.WatchRequest(create_request=create))
                async for response in call:
                    if response.canceled and await _renewed(
                        client, response.cancel_reason, renewed
                    ):
                        renewed = True
                        break
                    failures = 0
                    if response.created and not response.canceled:
                        renewed = False
                        continue
                    if response.events:
                        create.start_revision = response.events[-1].kv.mod_revision + 1
                    if await on_response(response) or response.canceled:
                        return response if response.canceled else None
                else:
                    raise StopAsyncIteration
        except (RpcError, StopAsyncIteration) as error:
            if await _renewed(client, error, renewed):
                renewed = True
                continue
            failures = _stream_failure(error, failures)
            await trio.sleep(STREAM_RETRY_PAUSE_SECONDS)


_KNOWN_CANCEL_REASONS = frozenset(
    {
        "etcdserver: mvcc: required revision has been compacted",
        "etcdserver: mvcc: required revision is a future revision",
        "etcdserver: no leader",
        "etcdserver: permission denied",
    }
)


def watch_error(response: rpc_pb2.WatchResponse) -> str:
    """clientv3's ``WatchResponse.Err()`` for a cancelled watch, as ``%v`` prints it."""
    if response.compact_revision:
        return "etcdserver: mvcc: required revision has been compacted"
    reason = response.cancel_reason
    if not reason:
        return "etcdserver: mvcc: required revision is a future revision"
    if reason in _KNOWN_CANCEL_REASONS:
        return reason
    return f"rpc error: code = FailedPrecondition desc = {reason}"


async def wait_delete(client: V3Client, key: bytes, revision: int) -> None:
    """Wait until ``key`` is deleted at or after ``revision``.

    Raises:
        LostWatcher: the watch was cancelled first.
    """

    async def deleted(response: rpc_pb2.WatchResponse) -> bool:
        return any(event.type == DELETE for event in response.events)

    ended = await watch(
        client, rpc_pb2.WatchCreateRequest(key=key, start_revision=revision), deleted
    )
    if ended is not None:
        raise LostWatcher(watch_error(ended))


def first_create_range(
    prefix: bytes, *, last: bool = False, max_create_revision: int = 0
) -> rpc_pb2.RangeRequest:
    """``Get(prefix, WithFirstCreate())`` (or ``WithLastCreate()``): the oldest (newest) key
    under ``prefix``, optionally among those created at or before ``max_create_revision``."""
    return rpc_pb2.RangeRequest(
        key=prefix,
        range_end=prefix_range_end(prefix),
        limit=1,
        sort_target=rpc_pb2.RangeRequest.CREATE,
        sort_order=rpc_pb2.RangeRequest.DESCEND if last else rpc_pb2.RangeRequest.ASCEND,
        max_create_revision=max_create_revision,
    )


async def wait_deletes(
    client: V3Client, prefix: bytes, max_create_revision: int
) -> rpc_pb2.ResponseHeader:
    """Wait until no key under ``prefix`` created at or before ``max_create_revision`` is
    left (the waiters ahead in the queue), newest first, as concurrency's ``waitDeletes``.

    Returns:
        The header of the read that found none.
    """
    while True:
        response = await client.range(
            first_create_range(prefix, last=True, max_create_revision=max_create_revision)
        )
        if not response.kvs:
            return response.header
        await wait_delete(client, response.kvs[0].key, response.header.revision)


# -- sessions, the mutex and the election ----------------------------------------------------------


@dataclass(slots=True)
class Session:
    """A lease kept alive in the background; ``done`` is set when it is no longer kept."""

    lease_id: int
    done: trio.Event


async def open_session(client: V3Client, ttl_s: int, nursery: trio.Nursery) -> Session:
    """``concurrency.NewSession``: grant a lease of ``ttl_s`` seconds (60 when not > 0) and
    keep it alive in ``nursery`` until the nursery is cancelled or the lease ends."""
    granted = await client.lease_grant(
        rpc_pb2.LeaseGrantRequest(TTL=ttl_s if ttl_s > 0 else SESSION_TTL_SECONDS)
    )
    session = Session(granted.ID, trio.Event())

    async def keep() -> None:
        try:
            await keep_alive(client, granted.ID, lambda _: None)
        except RpcError as error:
            logger.debug("session %x: keep-alive failed: %s", granted.ID, error)
        finally:
            session.done.set()

    nursery.start_soon(keep)
    return session


def session_key(prefix: bytes, session: Session) -> bytes:
    """The session's key under a lock's or election's prefix: ``<prefix><lease in hex>``."""
    return prefix + f"{session.lease_id:x}".encode()


@dataclass(frozen=True, slots=True)
class Held:
    """A lock or leadership held: the session's key, its create revision, and the header of
    the response that granted it (``ETCD_LOCK_REV`` is its revision)."""

    key: bytes
    revision: int
    header: rpc_pb2.ResponseHeader


def _create_revision_is(key: bytes, revision: int) -> rpc_pb2.Compare:
    return rpc_pb2.Compare(
        key=key,
        target=rpc_pb2.Compare.CREATE,
        result=rpc_pb2.Compare.EQUAL,
        create_revision=revision,
    )


async def lock(client: V3Client, session: Session, name: bytes) -> Held:
    """``concurrency.Mutex.Lock``: put the session's key under ``name/`` unless it is there,
    then wait for every older key to go; the lock is held once none is left.

    Raises:
        LostWatcher, RpcError: the wait failed (the key is deleted again first).
    """
    prefix = name + b"/"
    key = session_key(prefix, session)
    owner = rpc_pb2.RequestOp(request_range=first_create_range(prefix))
    response = await client.txn(
        rpc_pb2.TxnRequest(
            compare=[_create_revision_is(key, 0)],
            success=[
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, lease=session.lease_id)),
                owner,
            ],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key)), owner],
        )
    )
    revision = response.header.revision
    if not response.succeeded:
        revision = response.responses[0].response_range.kvs[0].create_revision
    owners = response.responses[1].response_range.kvs
    if not owners or owners[0].create_revision == revision:
        return Held(key, revision, response.header)
    try:
        header = await wait_deletes(client, prefix, revision - 1)
    except (RpcError, LostWatcher, trio.Cancelled):
        with trio.CancelScope(shield=True), trio.move_on_after(UNLOCK_TIMEOUT_SECONDS):
            await unlock(client, key)
        raise
    return Held(key, revision, header)


async def unlock(client: V3Client, key: bytes) -> None:
    """``Mutex.Unlock``: delete the session's key."""
    await client.delete_range(rpc_pb2.DeleteRangeRequest(key=key))


async def campaign(client: V3Client, session: Session, name: bytes, value: bytes) -> Held:
    """``concurrency.Election.Campaign``: put the session's key under ``name/`` with the
    proposal (or proclaim it on the key already there), then wait to be the oldest."""
    prefix = name + b"/"
    key = session_key(prefix, session)
    response = await client.txn(
        rpc_pb2.TxnRequest(
            compare=[_create_revision_is(key, 0)],
            success=[
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(key=key, value=value, lease=session.lease_id)
                )
            ],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
        )
    )
    revision = response.header.revision
    if not response.succeeded:
        existing = response.responses[0].response_range.kvs[0]
        revision = existing.create_revision
        if existing.value != value:
            await proclaim(client, session, Held(key, revision, response.header), value)
    await wait_deletes(client, prefix, revision - 1)
    return Held(key, revision, response.header)


async def proclaim(client: V3Client, session: Session, held: Held, value: bytes) -> None:
    """``Election.Proclaim``: a new value on the leader's key, if it is still ours.

    Raises:
        RpcError: ``election: not leader`` (UNKNOWN) when the key is gone or newer.
    """
    response = await client.txn(
        rpc_pb2.TxnRequest(
            compare=[_create_revision_is(held.key, held.revision)],
            success=[
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(
                        key=held.key, value=value, lease=session.lease_id
                    )
                )
            ],
        )
    )
    if not response.succeeded:
        raise RpcError(StatusCode.UNKNOWN, "election: not leader")


async def resign(client: V3Client, held: Held) -> None:
    """``Election.Resign``: delete the leader's key if it is still ours."""
    await client.txn(
        rpc_pb2.TxnRequest(
            compare=[_create_revision_is(held.key, held.revision)],
            success=[
                rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=held.key))
            ],
        )
    )


async def observe(
    client: V3Client,
    name: bytes,
    on_leader: Callable[[rpc_pb2.RangeResponse], Awaitable[None]],
) -> None:
    """``Election.Observe``: each leader's key and each value it proclaims, in order, as
    range responses; returns when a watch is lost (etcdctl: ``elect: observer lost``)."""
    prefix = name + b"/"
    while True:
        found = await client.range(first_create_range(prefix))
        if found.kvs:
            header, kv = found.header, found.kvs[0]
        else:
            first = await _first_put(client, prefix, found.header.revision)
            if first is None:
                return
            header, kv = first
        await on_leader(rpc_pb2.RangeResponse(header=header, kvs=[kv]))
        if not await _follow_leader(client, found, kv.key, header.revision + 1, on_leader):
            return


async def _first_put(
    client: V3Client, prefix: bytes, revision: int
) -> tuple[rpc_pb2.ResponseHeader, kv_pb2.KeyValue] | None:
    """The first key put under ``prefix`` from ``revision`` on (None if the watch ended)."""
    seen: list[tuple[rpc_pb2.ResponseHeader, kv_pb2.KeyValue]] = []

    async def first_put(response: rpc_pb2.WatchResponse) -> bool:
        for event in response.events:
            if event.type == PUT:
                header = rpc_pb2.ResponseHeader()
                header.CopyFrom(response.header)
                header.revision = event.kv.mod_revision
                seen.append((header, event.kv))
                return True
        return False

    request = rpc_pb2.WatchCreateRequest(
        key=prefix, range_end=prefix_range_end(prefix), start_revision=revision
    )
    ended = await watch(client, request, first_put)
    return seen[0] if ended is None and seen else None


async def _follow_leader(
    client: V3Client,
    found: rpc_pb2.RangeResponse,
    key: bytes,
    revision: int,
    on_leader: Callable[[rpc_pb2.RangeResponse], Awaitable[None]],
) -> bool:
    """Pass on each new value of the leader's key until it is deleted (True) or the watch is
    lost (False). Each update is the first read's response with the event's header and kv,
    as clientv3 reuses it."""
    deleted = False

    async def follow(response: rpc_pb2.WatchResponse) -> bool:
        nonlocal deleted
        for event in response.events:
            if event.type == DELETE:
                deleted = True
                return True
            update = rpc_pb2.RangeResponse()
            update.CopyFrom(found)
            update.header.CopyFrom(response.header)
            del update.kvs[:]
            update.kvs.append(event.kv)
            await on_leader(update)
        return False

    await watch(client, rpc_pb2.WatchCreateRequest(key=key, start_revision=revision), follow)
    return deleted
