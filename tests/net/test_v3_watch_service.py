"""The Watch RPC (``net.v3.watch_service``) over gRPC in memory, on a hub over a real MVCC store.

What the process differential suite cannot show cheaply: a client that resets its watch
stream leaves the connection serving, progress notifications in virtual time, etcd's
fragment splitting at its exact boundary.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from net.etcdpb import kv_pb2, rpc_pb2
from net.grpc import GrpcServer
from net.grpc.client import GrpcChannel
from net.v3.watch_service import WatchService, fragments, watch_methods
from storage.mvcc import MvccStore
from storage.mvcc.watch import WatchHub, WatchResponse, WatchStream
from tests.net.memory_network import MemoryNetwork

WATCH = "/etcdserverpb.Watch/Watch"
ADDRESS = "127.0.0.1:2379"


class Backend:
    """A member reduced to ids, a term and a hub over a store."""

    cluster_id = 11
    member_id = 22

    def __init__(self, progress_interval_s: float = 600.0) -> None:
        self.store = MvccStore()
        self.hub = WatchHub(self.store)
        self.progress_interval_s = progress_interval_s

    def raft_term(self) -> int:
        return 3

    def open_watch_stream(self, wake: Callable[[], None]) -> WatchStream:
        return self.hub.open_stream(wake)

    def watch_progress_interval_s(self) -> float:
        return self.progress_interval_s

    def put(self, key: bytes, value: bytes) -> None:
        with self.store.write() as txn:
            txn.put(key, value)
        self.hub.publish(self.store.take_events())


def create(key: bytes, **fields: object) -> rpc_pb2.WatchRequest:
    request = rpc_pb2.WatchCreateRequest(key=key, **fields)  # type: ignore[arg-type]
    return rpc_pb2.WatchRequest(create_request=request)


async def serve(nursery: trio.Nursery, backend: Backend) -> MemoryNetwork:
    network = MemoryNetwork()
    server = GrpcServer(watch_methods(backend))
    await nursery.start(network.serve, ADDRESS, server.serve_connection)
    return network


async def test_a_reset_watch_stream_leaves_the_connection_serving(autojump_clock: object) -> None:
    backend = Backend()
    async with trio.open_nursery() as nursery:
        network = await serve(nursery, backend)
        async with GrpcChannel(network, ADDRESS) as channel:
            async with channel.stream(WATCH, rpc_pb2.WatchResponse) as call:
                await call.send(create(b"k"))
                created = await call.__anext__()
                assert created.created and created.header.cluster_id == 11
            # leaving the block reset the stream (RST_STREAM CANCEL); the hub forgets it
            await trio.sleep(1)
            assert backend.hub.watcher_count() == 0
            async with channel.stream(WATCH, rpc_pb2.WatchResponse) as call:
                await call.send(create(b"k", prev_kv=True))
                assert (await call.__anext__()).created
                backend.put(b"k", b"v")
                response = await call.__anext__()
                assert [event.kv.value for event in response.events] == [b"v"]
                assert response.header.revision == 2 and response.header.raft_term == 3
        nursery.cancel_scope.cancel()


async def test_the_end_of_the_requests_does_not_end_the_stream(autojump_clock: object) -> None:
    backend = Backend()
    async with trio.open_nursery() as nursery:
        network = await serve(nursery, backend)
        async with (
            GrpcChannel(network, ADDRESS) as channel,
            channel.stream(WATCH, rpc_pb2.WatchResponse) as call,
        ):
            await call.send(create(b"k"))
            await call.done_writing()  # a half-close, as etcd3gw's body ends
            assert (await call.__anext__()).created
            await trio.sleep(30)
            backend.put(b"k", b"v")
            assert (await call.__anext__()).events
        nursery.cancel_scope.cancel()


async def test_progress_notifications_reach_quiet_watchers_each_interval(
    autojump_clock: object,
) -> None:
    backend = Backend(progress_interval_s=10.0)
    async with trio.open_nursery() as nursery:
        network = await serve(nursery, backend)
        async with (
            GrpcChannel(network, ADDRESS) as channel,
            channel.stream(WATCH, rpc_pb2.WatchResponse) as call,
        ):
            await call.send(create(b"k", progress_notify=True))
            await call.send(create(b"j", watch_id=5))
            started = trio.current_time()
            assert (await call.__anext__()).created
            assert (await call.__anext__()).created
            progress = await call.__anext__()
            assert 10 <= trio.current_time() - started < 11
            assert (progress.watch_id, progress.header.revision) == (0, 1)
            assert not progress.events and not progress.created
            backend.put(b"k", b"v")
            assert (await call.__anext__()).events
            # the next tick is skipped (events were sent), the one after is not
            progress = await call.__anext__()
            assert 30 <= trio.current_time() - started < 31
            assert (progress.watch_id, progress.header.revision) == (0, 2)
        nursery.cancel_scope.cancel()


def _response(values: list[int]) -> rpc_pb2.WatchResponse:
    response = rpc_pb2.WatchResponse(watch_id=1)
    response.header.revision = 9
    for number, size in enumerate(values):
        kv = kv_pb2.KeyValue(key=b"k%d" % number, value=b"x" * size, mod_revision=9)
        response.events.append(kv_pb2.Event(kv=kv))
    return response


def test_fragments_split_as_etcd_does() -> None:
    assert fragments(_response([600, 600]), 1000) != [_response([600, 600])]
    small = _response([100, 100])
    assert fragments(small, 1000) == [small]
    one = _response([5000])
    assert fragments(one, 1000) == [one]  # one event is never split
    parts = fragments(_response([400, 400, 400, 400, 400]), 1000)
    assert [len(part.events) for part in parts] == [2, 2, 1]
    assert [part.fragment for part in parts] == [True, True, False]
    assert all(part.header.revision == 9 and part.watch_id == 1 for part in parts)
    joined = [event for part in parts for event in part.events]
    assert joined == list(_response([400, 400, 400, 400, 400]).events)


def test_a_compaction_cancel_has_a_header_without_revision() -> None:
    message = WatchService(Backend()).message(
        WatchResponse(3, 0, canceled=True, compact_revision=7)
    )
    assert message.HasField("header") and message.header.revision == 0
    assert (message.watch_id, message.canceled, message.compact_revision) == (3, True, 7)


async def test_watchers_of_one_revision_keep_their_own_prev_kv(autojump_clock: object) -> None:
    """The sender encodes an event once for every watcher that got the same event object; a
    watcher with ``prev_kv`` gets a different object, so it keeps its ``prev_kv``."""
    backend = Backend()
    backend.put(b"k", b"old")
    async with trio.open_nursery() as nursery:
        network = await serve(nursery, backend)
        async with (
            GrpcChannel(network, ADDRESS) as channel,
            channel.stream(WATCH, rpc_pb2.WatchResponse) as call,
        ):
            for request in (create(b"k"), create(b"k", prev_kv=True), create(b"k")):
                await call.send(request)
            for _ in range(3):
                assert (await call.__anext__()).created
            backend.put(b"k", b"new")
            responses = {}
            for _ in range(3):
                response = await call.__anext__()
                responses[response.watch_id] = response
            prevs = [responses[i].events[0].prev_kv.value for i in range(3)]
            assert prevs == [b"", b"old", b""]
            assert all(responses[i].events[0].kv.value == b"new" for i in range(3))
        nursery.cancel_scope.cancel()
