"""etcd 3.4's v3election service (Campaign, Proclaim, Leader, Observe, Resign) over a
:class:`ConcurrencyBackend`.

An election named N is a queue of candidates' keys ``N/<lease hex>`` (each attached to the
candidate's lease); the leader is the key with the smallest create revision, and its value
is the leader's proclamation. Campaign puts the candidate's key (or finds it, when its lease
already campaigns, and proclaims the new value) and answers once every older key is gone,
with a :class:`LeaderKey` (name, key, create revision, lease) that Proclaim and Resign take
back: both act only while that key still has that create revision, so a leader whose lease
expired, or who resigned, can neither proclaim ("election: not leader") nor delete its
successor's key. Leader reads the current leader's key ("election: no leader" when there is
none); Observe streams the leader's key each time it is elected or proclaims.

Errors are etcd's: the concurrency package's are plain Go errors, so gRPC code Unknown (the
gateway's 500); KV failures keep their own codes.

Differences from etcd 3.4, all deliberate: a campaign whose key vanished while it waited
(its lease expired) is answered "election: not leader" rather than told it leads; a failed
or cancelled campaign deletes its key at once (etcd leaves it to the lease unless the call
was cancelled); Resign with lease 0 grants no lease (etcd grants one it never uses).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import trio
from google.protobuf.message import Message

from net.etcdpb import kv_pb2, rpc_pb2, v3election_pb2
from net.etcdpb.routes import grpc_path
from net.v3.concurrency import (
    CLEANUP_TIMEOUT_S,
    ConcurrencyBackend,
    client_errors,
    create_revision_is,
    first_created,
    prefix_range_end,
    session_lease,
    wait_deletes,
    waiter_key,
)
from net.v3.errors import RpcError, StatusCode
from net.v3.methods import CallContext, Methods, SendMessage, StreamMethod, unary_method

logger = logging.getLogger(__name__)

LeaderKey = v3election_pb2.LeaderKey


def not_leader() -> RpcError:
    """Proclaim by a candidate whose key is gone or was re-created (etcd's wording)."""
    return RpcError(StatusCode.UNKNOWN, "election: not leader")


def no_leader() -> RpcError:
    """Leader of an election with no candidate (etcd's wording)."""
    return RpcError(StatusCode.UNKNOWN, "election: no leader")


def missing_leader_key() -> RpcError:
    """Proclaim or Resign without a ``leader`` (etcd's wording)."""
    return RpcError(StatusCode.UNKNOWN, '"leader" field must be provided')


def campaign_txn(key: bytes, value: bytes, lease: int) -> rpc_pb2.TxnRequest:
    """Put the candidate's key if absent, else read it."""
    return rpc_pb2.TxnRequest(
        compare=[create_revision_is(key, 0)],
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))
        ],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
    )


def proclaim_txn(leader: LeaderKey, value: bytes, lease: int) -> rpc_pb2.TxnRequest:
    """Put ``value`` on the leader's key while it has the leader's create revision."""
    put = rpc_pb2.PutRequest(key=leader.key, value=value, lease=lease)
    return rpc_pb2.TxnRequest(
        compare=[create_revision_is(leader.key, leader.rev)],
        success=[rpc_pb2.RequestOp(request_put=put)],
    )


def resign_txn(leader: LeaderKey) -> rpc_pb2.TxnRequest:
    """Delete the leader's key while it has the leader's create revision."""
    delete = rpc_pb2.DeleteRangeRequest(key=leader.key)
    return rpc_pb2.TxnRequest(
        compare=[create_revision_is(leader.key, leader.rev)],
        success=[rpc_pb2.RequestOp(request_delete_range=delete)],
    )


class ElectionService:
    """The election RPCs; each public ``async`` method is one RPC."""

    def __init__(self, backend: ConcurrencyBackend) -> None:
        self._backend = backend

    async def campaign(
        self, request: v3election_pb2.CampaignRequest, context: CallContext
    ) -> v3election_pb2.CampaignResponse:
        self._backend.admit(context)
        with client_errors():
            return await self._campaign(request, context)

    async def _campaign(
        self, request: v3election_pb2.CampaignRequest, context: CallContext
    ) -> v3election_pb2.CampaignResponse:
        backend = self._backend
        lease = await session_lease(backend, request.lease, context)
        prefix = request.name + b"/"
        key = waiter_key(prefix, lease)
        response = await backend.txn(campaign_txn(key, request.value, lease), context)
        leader = LeaderKey(name=request.name, key=key, rev=response.header.revision, lease=lease)
        try:
            if not response.succeeded:  # this lease campaigns already: the same key again
                kv = response.responses[0].response_range.kvs[0]
                leader.rev = kv.create_revision
                if kv.value != request.value:
                    await self._proclaim_value(leader, request.value, lease, context)
            assert leader.rev > 0, leader.rev
            await wait_deletes(backend, prefix, leader.rev - 1, context)
            mine = await backend.range(rpc_pb2.RangeRequest(key=key), context)
            if not mine.kvs or mine.kvs[0].create_revision != leader.rev:
                raise not_leader()
        except BaseException:
            await self._abandon(leader, context)
            raise
        return v3election_pb2.CampaignResponse(header=response.header, leader=leader)

    async def proclaim(
        self, request: v3election_pb2.ProclaimRequest, context: CallContext
    ) -> v3election_pb2.ProclaimResponse:
        self._backend.admit(context)
        with client_errors():
            return await self._proclaim(request, context)

    async def _proclaim(
        self, request: v3election_pb2.ProclaimRequest, context: CallContext
    ) -> v3election_pb2.ProclaimResponse:
        if not request.HasField("leader"):
            raise missing_leader_key()
        lease = await session_lease(self._backend, request.leader.lease, context)
        header = await self._proclaim_value(request.leader, request.value, lease, context)
        return v3election_pb2.ProclaimResponse(header=header)

    async def leader(
        self, request: v3election_pb2.LeaderRequest, context: CallContext
    ) -> v3election_pb2.LeaderResponse:
        self._backend.admit(context)
        with client_errors():
            return await self._leader(request, context)

    async def _leader(
        self, request: v3election_pb2.LeaderRequest, context: CallContext
    ) -> v3election_pb2.LeaderResponse:
        response = await self._backend.range(first_created(request.name + b"/"), context)
        if not response.kvs:
            raise no_leader()
        return v3election_pb2.LeaderResponse(header=response.header, kv=response.kvs[0])

    async def resign(
        self, request: v3election_pb2.ResignRequest, context: CallContext
    ) -> v3election_pb2.ResignResponse:
        self._backend.admit(context)
        with client_errors():
            return await self._resign(request, context)

    async def _resign(
        self, request: v3election_pb2.ResignRequest, context: CallContext
    ) -> v3election_pb2.ResignResponse:
        if not request.HasField("leader"):
            raise missing_leader_key()
        response = await self._backend.txn(resign_txn(request.leader), context)
        return v3election_pb2.ResignResponse(header=response.header)

    async def observe(
        self, requests: AsyncIterator[Message], send: SendMessage, context: CallContext
    ) -> None:
        """Stream the leader's key: once per leader elected, then once per proclamation.

        As etcd's, the stream ends (with OK) when a read or watch fails.
        """
        self._backend.admit(context)
        async for request in requests:
            assert isinstance(request, v3election_pb2.LeaderRequest), type(request)
            try:
                await observe_leaders(self._backend, request.name + b"/", send, context)
            except RpcError as error:
                logger.debug("election observe of %r ended: %s", request.name, error)
            return

    async def _proclaim_value(
        self, leader: LeaderKey, value: bytes, lease: int, context: CallContext
    ) -> rpc_pb2.ResponseHeader:
        response = await self._backend.txn(proclaim_txn(leader, value, lease), context)
        if not response.succeeded:
            raise not_leader()
        return response.header

    async def _abandon(self, leader: LeaderKey, context: CallContext) -> None:
        """Resign a candidacy whose campaign failed or was cancelled."""
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT_S):
            try:
                await self._backend.txn(resign_txn(leader), context)
            except RpcError as error:  # the campaign's own failure is the answer
                logger.info(
                    "election: could not resign %r after a failed campaign: %s", leader.key, error
                )


async def observe_leaders(
    backend: ConcurrencyBackend, prefix: bytes, send: SendMessage, context: CallContext
) -> None:
    """Send a ``LeaderResponse`` for each leader of the election under ``prefix`` and each
    of its proclamations, until a watch ends."""
    while True:
        response = await backend.range(first_created(prefix), context)
        if response.kvs:
            header, kv = response.header, response.kvs[0]
        else:
            found = await _first_put(backend, prefix, response.header.revision)
            if found is None:
                return
            header, kv = found
        await send(v3election_pb2.LeaderResponse(header=header, kv=kv))
        if not await _follow(backend, kv.key, header.revision + 1, send):
            return


async def _first_put(
    backend: ConcurrencyBackend, prefix: bytes, revision: int
) -> tuple[rpc_pb2.ResponseHeader, kv_pb2.KeyValue] | None:
    """The first key put under ``prefix`` from ``revision`` (the new leader), with the
    header of its watch message at the put's revision; None if the watch ends first."""
    async with backend.watch(prefix, prefix_range_end(prefix), revision) as responses:
        async for response in responses:
            for event in response.events:
                if event.type == kv_pb2.Event.PUT:
                    header = rpc_pb2.ResponseHeader()
                    header.CopyFrom(response.header)
                    header.revision = event.kv.mod_revision
                    return header, event.kv
            if response.canceled:
                return None
    return None


async def _follow(
    backend: ConcurrencyBackend, key: bytes, revision: int, send: SendMessage
) -> bool:
    """Send each put of the leader's ``key`` from ``revision`` until it is deleted (True);
    False if the watch ends first."""
    async with backend.watch(key, b"", revision) as responses:
        async for response in responses:
            for event in response.events:
                if event.type == kv_pb2.Event.DELETE:
                    return True
                await send(v3election_pb2.LeaderResponse(header=response.header, kv=event.kv))
            if response.canceled:
                return False
    return False


def election_methods(backend: ConcurrencyBackend) -> Methods:
    """Election: Campaign, Proclaim, Leader, Observe (server streaming), Resign."""
    service = ElectionService(backend)
    return {
        grpc_path("Election", "Campaign"): unary_method(
            v3election_pb2.CampaignRequest, service.campaign
        ),
        grpc_path("Election", "Proclaim"): unary_method(
            v3election_pb2.ProclaimRequest, service.proclaim
        ),
        grpc_path("Election", "Leader"): unary_method(v3election_pb2.LeaderRequest, service.leader),
        grpc_path("Election", "Observe"): StreamMethod(
            v3election_pb2.LeaderRequest, service.observe
        ),
        grpc_path("Election", "Resign"): unary_method(v3election_pb2.ResignRequest, service.resign),
    }
