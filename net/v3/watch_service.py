"""etcd 3.4's Watch RPC (``/etcdserverpb.Watch/Watch``, and ``/v3/watch`` on the gateway).

One call is one ``storage.mvcc.watch.WatchStream``: the client's requests create watchers
(``create_request``), cancel them (``cancel_request``) and ask for progress
(``progress_request``); the hub queues the responses and this service sends them, filling the
header (cluster id, member id, Raft term at sending; the revision the hub chose), as etcd's
``v3rpc/watch.go`` does:

- a create is answered ``created`` with the hub's revision, or ``created`` and ``canceled``
  with ``watch_id`` -1 and etcd's ``cancel_reason`` (a duplicate id, an empty range);
- a cancel of a known id is answered ``canceled``; of an unknown id, not at all;
- a watcher below the compact revision is answered ``canceled`` with ``compact_revision`` and
  a header without revision;
- a progress request is answered with ``watch_id`` -1; a ``progress_notify`` watcher gets an
  empty response every progress interval it was sent nothing (``progress_tick``);
- a response of a ``fragment`` watcher at or above ``--max-request-bytes`` plus gRPC's
  overhead, with two events or more, is split as etcd's ``sendFragments`` splits it: every
  part but the last marked ``fragment``.

The stream lives until the client leaves: the end of the client's requests (a gRPC
half-close, or the end of a gateway body) ends nothing, as in etcd; a request that cannot be
decoded ends the call with the transport's error. Responses are sent by one task, so they
leave in the order the hub queued them; requests are read by another, which stops reading
while ``CONTROL_RESPONSES_BUFFERED_MAX`` control responses wait to be sent.

Where we differ from etcd 3.4: a stream refuses a create past ``STREAM_WATCHERS_MAX``
watchers (or the member's ``HUB_WATCHERS_MAX``) with ``cancel_reason`` "troika: too many
watchers"; etcd has no bound. (etcd's ``hasleader`` rule for streams is the client port's:
``actors.client_api.require_leader``.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Protocol

import trio
from google.protobuf.message import Message

from net.etcdpb import kv_pb2, rpc_pb2
from net.etcdpb.routes import grpc_path
from net.grpc.limits import GRPC_OVERHEAD_BYTES
from net.v3.methods import CallContext, Methods, SendMessage, StreamMethod
from net.v3.service import ServiceLimits
from storage.mvcc.model import Event, EventType, KeyValue
from storage.mvcc.watch import (
    CONTROL_RESPONSES_BUFFERED_MAX,
    WatchCreate,
    WatchResponse,
    WatchStream,
)

RESPONSES_TAKEN_MAX = 64
"""Responses the sender takes from the stream's queue at a time (then sends one by one)."""

_NOPUT = rpc_pb2.WatchCreateRequest.NOPUT
_NODELETE = rpc_pb2.WatchCreateRequest.NODELETE


class WatchBackend(Protocol):
    """The member as the Watch RPC sees it."""

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

    def open_watch_stream(self, wake: Callable[[], None]) -> WatchStream:
        """A new stream of the member's watch hub; ``wake`` is called when it has responses."""
        ...

    def watch_progress_interval_s(self) -> float:
        """How often ``progress_notify`` watchers hear of progress (etcd: 10 min, plus up to
        10 % of jitter chosen per stream)."""
        ...


def create_of(request: rpc_pb2.WatchCreateRequest) -> WatchCreate:
    """The hub's create request for etcd's."""
    filters = set(request.filters)
    return WatchCreate(
        key=request.key,
        range_end=request.range_end,
        start_revision=request.start_revision,
        watch_id=request.watch_id,
        no_put=_NOPUT in filters,
        no_delete=_NODELETE in filters,
        prev_kv=request.prev_kv,
        progress_notify=request.progress_notify,
        fragment=request.fragment,
    )


def kv_message(kv: KeyValue) -> kv_pb2.KeyValue:
    """A version as ``mvccpb.KeyValue``."""
    return kv_pb2.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


def event_message(event: Event) -> kv_pb2.Event:
    """An event as ``mvccpb.Event``."""
    message = kv_pb2.Event(
        type=kv_pb2.Event.DELETE if event.type is EventType.DELETE else kv_pb2.Event.PUT,
        kv=kv_message(event.kv),
    )
    if event.prev_kv is not None:
        message.prev_kv.CopyFrom(kv_message(event.prev_kv))
    return message


def fragments(message: rpc_pb2.WatchResponse, limit_bytes: int) -> list[rpc_pb2.WatchResponse]:
    """etcd's ``sendFragments``: a response below ``limit_bytes`` or with fewer than two
    events whole; otherwise parts that each stop before the event that takes them to the limit
    (at least one event each), all but the last marked ``fragment``."""
    if message.ByteSize() < limit_bytes or len(message.events) < 2:
        return [message]
    parts: list[rpc_pb2.WatchResponse] = []
    events = list(message.events)
    shell = rpc_pb2.WatchResponse()
    shell.CopyFrom(message)
    del shell.events[:]
    shell.fragment = True
    index = 0
    while index < len(events):
        part = rpc_pb2.WatchResponse()
        part.CopyFrom(shell)
        while index < len(events):
            part.events.append(events[index])
            if len(part.events) > 1 and part.ByteSize() >= limit_bytes:
                del part.events[-1]
                break
            index += 1
        if index == len(events):
            part.fragment = False
        parts.append(part)
    return parts


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error


class _Signal:
    """A wake-up that is never lost: ``set`` before ``wait`` makes the next wait return."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


class WatchService:
    """The Watch RPC over a ``WatchBackend``."""

    def __init__(self, backend: WatchBackend, limits: ServiceLimits | None = None) -> None:
        self._backend = backend
        limits = limits if limits is not None else ServiceLimits()
        self._fragment_bytes = limits.max_request_bytes + GRPC_OVERHEAD_BYTES

    async def watch(
        self, requests: AsyncIterator[Message], send: SendMessage, context: CallContext
    ) -> None:
        """One Watch call: until the client leaves (or a request cannot be read)."""
        ready = _Signal()
        drained = _Signal()
        stream = self._backend.open_watch_stream(ready.set)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive, requests, stream, drained)
                nursery.start_soon(self._tick_progress, stream)
                await self._send(stream, send, ready, drained)
        except BaseExceptionGroup as group:
            # A task failed (the others were cancelled): raise its error as it is, so the
            # transport sees the RpcError, or its own "stream closed", not a group.
            failures = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
            if failures:
                raise failures[0] from None
            raise
        finally:
            stream.close()

    async def _receive(
        self, requests: AsyncIterator[Message], stream: WatchStream, drained: _Signal
    ) -> None:
        async for request in requests:
            assert isinstance(request, rpc_pb2.WatchRequest), type(request)
            while stream.control_backlog >= CONTROL_RESPONSES_BUFFERED_MAX:
                await drained.wait()
            kind = request.WhichOneof("request_union")
            if kind == "create_request":
                stream.create(create_of(request.create_request))
            elif kind == "cancel_request":
                stream.cancel(request.cancel_request.watch_id)
            elif kind == "progress_request":
                stream.request_progress()
            # nothing else: etcd ignores a request it does not know

    async def _tick_progress(self, stream: WatchStream) -> None:
        interval_s = self._backend.watch_progress_interval_s()
        while True:
            await trio.sleep(interval_s)
            stream.progress_tick()

    async def _send(
        self, stream: WatchStream, send: SendMessage, ready: _Signal, drained: _Signal
    ) -> None:
        while True:
            responses = stream.take(RESPONSES_TAKEN_MAX)
            if not responses:
                await ready.wait()
                continue
            drained.set()
            encoded: dict[int, kv_pb2.Event] = {}  # watchers of one revision share its events
            for response in responses:
                message = self.message(response, encoded)
                if response.fragment:
                    for part in fragments(message, self._fragment_bytes):
                        await send(part)
                else:
                    await send(message)

    @asynccontextmanager
    async def open_watch(
        self, key: bytes, range_end: bytes, start_revision: int
    ) -> AsyncIterator[AsyncIterator[rpc_pb2.WatchResponse]]:
        """One watcher inside the member (for the lock and election services): its messages
        after ``created``, as a Watch stream carries them; the iterator ends after one that
        cancels the watcher. The watcher goes when the context exits."""
        ready = _Signal()
        stream = self._backend.open_watch_stream(ready.set)
        try:
            stream.create(WatchCreate(key, range_end, start_revision))
            yield self._messages(stream, ready)
        finally:
            stream.close()

    async def _messages(
        self, stream: WatchStream, ready: _Signal
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        while True:
            responses = stream.take(RESPONSES_TAKEN_MAX)
            if not responses:
                await ready.wait()
                continue
            for response in responses:
                if response.created and not response.canceled:
                    continue
                yield self.message(response)
                if response.canceled:
                    return

    def message(
        self, response: WatchResponse, encoded: dict[int, kv_pb2.Event] | None = None
    ) -> rpc_pb2.WatchResponse:
        """A hub response as etcd's ``WatchResponse``, with the header filled.

        Args:
            encoded: events already encoded, by ``id`` of the hub's event (the hub hands the
                same event object to every watcher of a revision); valid only while the
                responses that hold those events are alive, so a sender keeps one per batch.
        """
        backend = self._backend
        message = rpc_pb2.WatchResponse(
            watch_id=response.watch_id,
            created=response.created,
            canceled=response.canceled,
            compact_revision=response.compact_revision,
            cancel_reason=response.cancel_reason,
        )
        events = message.events
        for event in response.events:
            if encoded is None:
                events.append(event_message(event))
                continue
            found = encoded.get(id(event))
            if found is None:
                found = encoded[id(event)] = event_message(event)
            events.append(found)
        header = message.header
        header.cluster_id = backend.cluster_id
        header.member_id = backend.member_id
        header.raft_term = backend.raft_term()
        header.revision = response.revision
        return message


def watch_methods(backend: WatchBackend, limits: ServiceLimits | None = None) -> Methods:
    """Watch: Watch (a bidirectional stream)."""
    service = WatchService(backend, limits)
    return {grpc_path("Watch", "Watch"): StreamMethod(rpc_pb2.WatchRequest, service.watch)}
