"""Our gRPC client against our server, in virtual time: on in-memory streams and on the
simulator's network (latency, small TCP windows)."""

from __future__ import annotations

from random import Random

import pytest
import trio
import trio.testing

from net.etcdpb import rpc_pb2
from net.grpc import GrpcChannel, GrpcLimits
from net.grpc.client import CLIENT_LIMITS
from net.v3.errors import RpcError, StatusCode
from sim.network import SimNetwork
from tests.net.memory_network import MemoryNetwork
from tests.net.test_grpc_server import (
    ERROR_MESSAGE,
    LEASE_KEEP_ALIVE,
    PUT,
    RANGE,
    WATCH,
    serving,
)


def watch_request(key: bytes) -> rpc_pb2.WatchRequest:
    return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key))


async def test_unary_calls_with_metadata(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with (
        serving(network, address="server:0") as served,
        GrpcChannel(network, served.address) as channel,
    ):
        response = await channel.unary(
            RANGE,
            rpc_pb2.RangeRequest(key=b"k", limit=2),
            rpc_pb2.RangeResponse,
            timeout_s=10,
            metadata=[("Authorization", "t")],
        )
        assert response.kvs[0].value == b"vv"
        put = await channel.unary(
            PUT, rpc_pb2.PutRequest(key=b"a", value=b"b"), rpc_pb2.PutResponse
        )
        assert put.prev_kv.value == b"b"
        first, second = served.toy.contexts
        assert first.get("authorization") == "t"
        assert first.deadline == pytest.approx(10.0, abs=0.01)
        assert second.deadline is None


async def test_statuses_are_raised_as_rpc_errors(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with (
        serving(network, address="server:0") as served,
        GrpcChannel(network, served.address) as channel,
    ):
        with pytest.raises(RpcError) as caught:
            await channel.unary(RANGE, rpc_pb2.RangeRequest(key=b"fail"), rpc_pb2.RangeResponse)
        assert caught.value == RpcError(StatusCode.FAILED_PRECONDITION, ERROR_MESSAGE)
        with pytest.raises(RpcError) as caught:
            await channel.unary("/etcdserverpb.KV/X", rpc_pb2.RangeRequest(), rpc_pb2.RangeResponse)
        assert caught.value.code is StatusCode.UNIMPLEMENTED
        assert caught.value.message == "unknown method X for service etcdserverpb.KV"


async def test_nobody_listening_is_unavailable(autojump_clock: trio.testing.MockClock) -> None:
    async with GrpcChannel(MemoryNetwork(), "nobody:1") as channel:
        with pytest.raises(RpcError) as caught:
            await channel.unary(RANGE, rpc_pb2.RangeRequest(), rpc_pb2.RangeResponse)
        assert caught.value.code is StatusCode.UNAVAILABLE


async def test_a_deadline_passes_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with (
        serving(network, address="server:0") as served,
        GrpcChannel(network, served.address) as channel,
    ):
        started = trio.current_time()
        with pytest.raises(RpcError) as caught:
            await channel.unary(
                RANGE, rpc_pb2.RangeRequest(key=b"sleep"), rpc_pb2.RangeResponse, timeout_s=7
            )
        assert caught.value.code is StatusCode.DEADLINE_EXCEEDED
        assert trio.current_time() - started == pytest.approx(7.0, abs=0.01)
        await trio.sleep(0.1)
        assert served.toy.cancelled == [b"sleep"]
        ok = await channel.unary(RANGE, rpc_pb2.RangeRequest(key=b"k"), rpc_pb2.RangeResponse)
        assert ok.kvs[0].key == b"k"


async def test_leaving_a_stream_cancels_the_call_on_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    async with (
        serving(network, address="server:0") as served,
        GrpcChannel(network, served.address) as channel,
    ):
        async with channel.stream(RANGE, rpc_pb2.RangeResponse) as call:
            await call.send(rpc_pb2.RangeRequest(key=b"sleep"))
            await call.done_writing()
            await served.toy.started_event.wait()
        await trio.sleep(1)
        assert served.toy.cancelled == [b"sleep"]
        assert served.grpc_server.connections == 1


async def test_bidirectional_stream_and_its_error_status(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    async with (
        serving(network, address="server:0") as served,
        GrpcChannel(network, served.address) as channel,
    ):
        async with channel.stream(WATCH, rpc_pb2.WatchResponse) as call:
            received = []
            for key in (b"a", b"b", b"c"):
                await call.send(watch_request(key))
                response = await call.__anext__()
                received.append((response.watch_id, response.events[0].kv.key))
            await call.done_writing()
            rest = [response async for response in call]
        assert received == [(1, b"a"), (2, b"b"), (3, b"c")]
        assert rest == []
        with pytest.raises(RpcError) as caught:
            async with channel.stream(WATCH, rpc_pb2.WatchResponse) as call:
                await call.send(watch_request(b"stop"))
                async for _ in call:
                    pass
        assert caught.value == RpcError(StatusCode.OUT_OF_RANGE, "stopped")


async def test_on_the_simulated_network_with_latency_and_small_windows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = SimNetwork(Random(3), latency_s=0.01, jitter_s=0.005, window_bytes=4096)
    server_limits = GrpcLimits(stream_window_bytes=2048, connection_window_bytes=8192)
    client_limits = GrpcLimits(
        stream_window_bytes=1024,
        connection_window_bytes=4096,
        receive_message_bytes_max=CLIENT_LIMITS.receive_message_bytes_max,
        connection_buffer_bytes_max=CLIENT_LIMITS.connection_buffer_bytes_max,
    )
    async with (
        serving(network.host("server"), server_limits, "server:0") as served,
        GrpcChannel(network.host("client"), served.address, client_limits) as channel,
    ):
        results: dict[int, int] = {}

        async def one(index: int) -> None:
            request = rpc_pb2.RangeRequest(key=b"k%d" % index, limit=index * 10)
            response = await channel.unary(RANGE, request, rpc_pb2.RangeResponse)
            results[index] = len(response.kvs[0].value)

        async with trio.open_nursery() as nursery:
            for index in range(100):
                nursery.start_soon(one, index)
        assert results == {index: index * 10 for index in range(100)}
        assert served.grpc_server.connections == 1

        big = rpc_pb2.PutRequest(key=b"big", value=b"z" * 100_000)
        put = await channel.unary(PUT, big, rpc_pb2.PutResponse)
        assert put.prev_kv.value == big.value

        flood = rpc_pb2.LeaseKeepAliveRequest(ID=500)
        async with channel.stream(LEASE_KEEP_ALIVE, rpc_pb2.LeaseKeepAliveResponse) as call:
            await call.send(flood)
            await call.done_writing()
            ids = [response.ID async for response in call]
        assert ids == list(range(500))
