"""The gRPC server against the real grpcio client, over TCP on 127.0.0.1, beside HTTP/1.1.

grpcio's synchronous channel runs in worker threads (``trio.to_thread``): the test side only.
The toy service below is built from etcd's messages; other gRPC tests import it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
import trio
from google.protobuf.message import Message

from net.etcdpb import kv_pb2, rpc_pb2
from net.grpc import GrpcLimits, GrpcServer
from net.grpc.limits import GRPC_OVERHEAD_BYTES, RECEIVE_MESSAGE_BYTES_MAX
from net.http import HttpServer, Request, Response
from net.network import Network
from net.tcp import TcpNetwork
from net.v3.errors import RpcError, StatusCode
from net.v3.methods import CallContext, Methods, SendMessage, StreamMethod, UnaryMethod

RANGE = "/etcdserverpb.KV/Range"
PUT = "/etcdserverpb.KV/Put"
WATCH = "/etcdserverpb.Watch/Watch"
LEASE_KEEP_ALIVE = "/etcdserverpb.Lease/LeaseKeepAlive"
ERROR_MESSAGE = "etcdserver: 100% not leader ✓ \n"


@dataclass
class Toy:
    """An echo service; remembers what its handlers saw."""

    contexts: list[CallContext] = field(default_factory=list)
    started: list[bytes] = field(default_factory=list)
    cancelled: list[bytes] = field(default_factory=list)
    started_event: trio.Event = field(default_factory=trio.Event)

    def methods(self) -> Methods:
        return {
            RANGE: UnaryMethod(rpc_pb2.RangeRequest, self.range),
            PUT: UnaryMethod(rpc_pb2.PutRequest, self.put),
            WATCH: StreamMethod(rpc_pb2.WatchRequest, self.watch),
            LEASE_KEEP_ALIVE: StreamMethod(rpc_pb2.LeaseKeepAliveRequest, self.flood),
        }

    async def range(self, request: Message, context: CallContext) -> Message:
        assert isinstance(request, rpc_pb2.RangeRequest)
        self.contexts.append(context)
        if request.key == b"fail":
            raise RpcError(StatusCode.FAILED_PRECONDITION, ERROR_MESSAGE)
        if request.key == b"bug":
            raise ValueError("a bug")
        if request.key.startswith(b"sleep"):
            self.started.append(request.key)
            self.started_event.set()
            try:
                await trio.sleep_forever()
            finally:
                self.cancelled.append(request.key)
        if request.key == b"yield":
            await trio.sleep(0.01)
        value = b"v" * request.limit
        return rpc_pb2.RangeResponse(
            kvs=[kv_pb2.KeyValue(key=request.key, value=value)], count=request.limit
        )

    async def put(self, request: Message, context: CallContext) -> Message:
        assert isinstance(request, rpc_pb2.PutRequest)
        self.contexts.append(context)
        return rpc_pb2.PutResponse(prev_kv=kv_pb2.KeyValue(key=request.key, value=request.value))

    async def watch(
        self, requests: AsyncIterator[Message], send: SendMessage, context: CallContext
    ) -> None:
        watch_id = 0
        async for request in requests:
            assert isinstance(request, rpc_pb2.WatchRequest)
            key = request.create_request.key
            if key == b"stop":
                raise RpcError(StatusCode.OUT_OF_RANGE, "stopped")
            watch_id += 1
            event = kv_pb2.Event(kv=kv_pb2.KeyValue(key=key))
            await send(rpc_pb2.WatchResponse(watch_id=watch_id, created=True, events=[event]))

    async def flood(
        self, requests: AsyncIterator[Message], send: SendMessage, context: CallContext
    ) -> None:
        """Server streaming: answers one request with ``TTL`` responses of ``ID`` bytes each."""
        async for request in requests:
            assert isinstance(request, rpc_pb2.LeaseKeepAliveRequest)
            self.started_event.set()
            for index in range(request.ID):
                header = rpc_pb2.ResponseHeader(member_id=index, cluster_id=1)
                await send(rpc_pb2.LeaseKeepAliveResponse(header=header, ID=index, TTL=1))
                self.started.append(b"%d" % index)
            return


async def http_echo(request: Request) -> Response:
    return Response(200, (("Content-Type", "text/plain"),), f"http {request.path}".encode())


@dataclass
class Served:
    address: str
    toy: Toy
    grpc_server: GrpcServer
    http: HttpServer


@asynccontextmanager
async def serving(
    network: Network | None = None, limits: GrpcLimits | None = None, address: str = ""
) -> AsyncIterator[Served]:
    """A toy gRPC service and an HTTP/1.1 echo on one listener."""
    network = network if network is not None else TcpNetwork()
    toy = Toy()
    grpc_server = GrpcServer(toy.methods(), limits)
    http = HttpServer(network, http_echo, http2=grpc_server.serve_connection)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(http.serve, address or "127.0.0.1:0")
        try:
            yield Served(bound, toy, grpc_server, http)
        finally:
            nursery.cancel_scope.cancel()


def _unary(channel: grpc.Channel, path: str, response: type[Message]) -> Any:
    return channel.unary_unary(
        path,
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response.FromString,
    )


async def in_thread(function: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(function)


@asynccontextmanager
async def grpcio_channel(address: str) -> AsyncIterator[grpc.Channel]:
    channel = grpc.insecure_channel(address)
    try:
        yield channel
    finally:
        await in_thread(channel.close)


async def test_the_receive_limit_is_etcds_request_limit_plus_grpc_overhead() -> None:
    assert GRPC_OVERHEAD_BYTES == 512 * 1024
    assert RECEIVE_MESSAGE_BYTES_MAX == 1_572_864 + 512 * 1024


async def test_unary_call_with_metadata_and_deadline() -> None:
    async with serving() as served, grpcio_channel(served.address) as channel:
        call = _unary(channel, RANGE, rpc_pb2.RangeResponse)
        metadata = (("authorization", "token-1"), ("x-custom", "a b"))
        request = rpc_pb2.RangeRequest(key=b"k", limit=3)
        before = trio.current_time()
        response = await in_thread(lambda: call(request, metadata=metadata, timeout=30))
        assert response.kvs[0].key == b"k"
        assert response.kvs[0].value == b"vvv"
        assert response.count == 3
        (context,) = served.toy.contexts
        assert context.get("authorization") == "token-1"
        assert context.get("x-custom") == "a b"
        assert all(not name.startswith((":", "grpc-")) for name, _ in context.metadata)
        assert context.get("content-type") is None
        assert context.get("te") is None
        assert context.deadline is not None
        assert before + 25 < context.deadline < before + 31


async def test_errors_come_as_trailers_with_percent_encoded_messages() -> None:
    async with serving() as served, grpcio_channel(served.address) as channel:
        call = _unary(channel, RANGE, rpc_pb2.RangeResponse)
        with pytest.raises(grpc.RpcError) as caught:
            await in_thread(lambda: call(rpc_pb2.RangeRequest(key=b"fail")))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert caught.value.details() == ERROR_MESSAGE
        with pytest.raises(grpc.RpcError) as caught:
            await in_thread(lambda: call(rpc_pb2.RangeRequest(key=b"bug")))
        assert caught.value.code() == grpc.StatusCode.UNKNOWN
        assert "a bug" in caught.value.details()


async def test_unknown_methods_and_services_are_unimplemented_in_grpc_gos_words() -> None:
    async with serving() as served, grpcio_channel(served.address) as channel:
        for path, details in [
            ("/etcdserverpb.KV/Nope", "unknown method Nope for service etcdserverpb.KV"),
            ("/etcdserverpb.Nope/Range", "unknown service etcdserverpb.Nope"),
        ]:
            call = _unary(channel, path, rpc_pb2.RangeResponse)
            request = rpc_pb2.RangeRequest(key=b"k")
            with pytest.raises(grpc.RpcError) as caught:
                await in_thread(partial(call, request))
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert caught.value.details() == details


async def test_a_malformed_request_is_internal_as_in_grpc_go() -> None:
    async with serving() as served, grpcio_channel(served.address) as channel:
        call = channel.unary_unary(
            RANGE,
            request_serializer=lambda raw: raw,
            response_deserializer=rpc_pb2.RangeResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as caught:
            await in_thread(lambda: call(b"\x0a\xff\xff\xff"))
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert caught.value.details().startswith("grpc: error unmarshalling request: ")


async def test_a_passed_deadline_cancels_the_handler() -> None:
    async with serving() as served, grpcio_channel(served.address) as channel:
        call = _unary(channel, RANGE, rpc_pb2.RangeResponse)
        with pytest.raises(grpc.RpcError) as caught:
            await in_thread(lambda: call(rpc_pb2.RangeRequest(key=b"sleep"), timeout=0.2))
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with trio.fail_after(5):
            while not served.toy.cancelled:
                await trio.sleep(0.01)
        assert served.toy.cancelled == [b"sleep"]


async def test_a_cancelled_call_cancels_its_handler_and_the_connection_goes_on() -> None:
    async with serving() as served, grpcio_channel(served.address) as channel:
        call = _unary(channel, RANGE, rpc_pb2.RangeResponse)
        future = await in_thread(lambda: call.future(rpc_pb2.RangeRequest(key=b"sleep-1")))
        with trio.fail_after(5):
            await served.toy.started_event.wait()
        assert served.toy.cancelled == []
        future.cancel()
        with trio.fail_after(5):
            while not served.toy.cancelled:
                await trio.sleep(0.01)
        assert served.toy.cancelled == [b"sleep-1"]
        response = await in_thread(lambda: call(rpc_pb2.RangeRequest(key=b"after", limit=1)))
        assert response.kvs[0].key == b"after"
        assert served.grpc_server.connections == 1


async def test_a_message_over_the_limit_is_resource_exhausted() -> None:
    limits = GrpcLimits(receive_message_bytes_max=1000, connection_buffer_bytes_max=1 << 20)
    async with serving(limits=limits) as served, grpcio_channel(served.address) as channel:
        call = _unary(channel, PUT, rpc_pb2.PutResponse)
        request = rpc_pb2.PutRequest(key=b"k", value=b"x" * 2000)
        size = request.ByteSize()
        with pytest.raises(grpc.RpcError) as caught:
            await in_thread(lambda: call(request))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert caught.value.details() == f"grpc: received message larger than max ({size} vs. 1000)"
        small = rpc_pb2.PutRequest(key=b"k", value=b"x" * 900)
        response = await in_thread(lambda: call(small))
        assert response.prev_kv.value == small.value


async def test_a_response_over_the_send_limit_is_resource_exhausted() -> None:
    limits = GrpcLimits(send_message_bytes_max=100)
    async with serving(limits=limits) as served, grpcio_channel(served.address) as channel:
        call = _unary(channel, RANGE, rpc_pb2.RangeResponse)
        with pytest.raises(grpc.RpcError) as caught:
            await in_thread(lambda: call(rpc_pb2.RangeRequest(key=b"k", limit=200)))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert caught.value.details().startswith("grpc: trying to send message larger than max (")


async def test_a_large_message_within_the_limit_crosses_the_flow_control_windows() -> None:
    async with serving() as served, grpcio_channel(served.address) as channel:
        call = _unary(channel, PUT, rpc_pb2.PutResponse)
        request = rpc_pb2.PutRequest(key=b"k", value=bytes(range(256)) * 6000)  # 1.5 MB
        response = await in_thread(lambda: call(request, timeout=30))
        assert response.prev_kv.value == request.value
        range_call = _unary(channel, RANGE, rpc_pb2.RangeResponse)
        big = await in_thread(lambda: range_call(rpc_pb2.RangeRequest(key=b"k", limit=3_000_000)))
        assert len(big.kvs[0].value) == 3_000_000


async def test_bidirectional_watch_stream() -> None:
    async with serving() as served, grpcio_channel(served.address) as channel:
        watch = channel.stream_stream(
            WATCH,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=rpc_pb2.WatchResponse.FromString,
        )

        def run() -> list[Any]:
            keys = [b"a", b"b", b"c"]
            requests: Iterator[Any] = (
                rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key))
                for key in keys
            )
            return list(watch(requests, timeout=30))

        responses = await in_thread(run)
        assert [r.watch_id for r in responses] == [1, 2, 3]
        assert [r.events[0].kv.key for r in responses] == [b"a", b"b", b"c"]
        assert all(r.created for r in responses)

        def stopped() -> list[Any]:
            requests = iter(
                [rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"stop"))]
            )
            return list(watch(requests, timeout=30))

        with pytest.raises(grpc.RpcError) as caught:
            await in_thread(stopped)
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert caught.value.details() == "stopped"


async def test_many_concurrent_calls_share_one_connection() -> None:
    calls = 300
    async with serving() as served, grpcio_channel(served.address) as channel:
        call = _unary(channel, RANGE, rpc_pb2.RangeResponse)

        def run() -> list[Any]:
            futures = [
                call.future(rpc_pb2.RangeRequest(key=b"yield", limit=n)) for n in range(calls)
            ]
            return [future.result(timeout=30) for future in futures]

        responses = await in_thread(run)
        assert [r.count for r in responses] == list(range(calls))
        assert served.grpc_server.connections == 1
        # They ran at once: each handler sleeps 10 ms, all of them take far less than 3 s.
        assert len(served.toy.contexts) == calls


async def test_http1_is_still_served_on_the_same_port() -> None:
    async with serving() as served, grpcio_channel(served.address) as channel:
        call = _unary(channel, RANGE, rpc_pb2.RangeResponse)
        response = await in_thread(lambda: call(rpc_pb2.RangeRequest(key=b"k", limit=1)))
        assert response.count == 1
        stream = await TcpNetwork().connect(served.address)
        await stream.send_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        with trio.fail_after(5):
            while b"http /version" not in received:
                received += await stream.receive_some(65536)
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
        await stream.aclose()


def test_the_toy_handlers_are_not_reached_by_threads() -> None:
    # The server side runs only in Trio's thread; grpcio's threads stay on the client side.
    assert threading.current_thread() is threading.main_thread()
    assert math.isfinite(1.0)
