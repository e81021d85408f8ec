"""gRPC server counters (go-grpc-prometheus's names and labels) around a method table."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from actors.metrics import GRPC_CODE_NAMES, GrpcCounters, instrument_methods
from net.etcdpb import rpc_pb2
from net.v3 import errors
from net.v3.errors import StatusCode
from net.v3.methods import CallContext, SendMessage, StreamMethod, UnaryMethod

RANGE = "/etcdserverpb.KV/Range"
WATCH = "/etcdserverpb.Watch/Watch"


async def range_handler(request: Message, context: CallContext) -> Message:
    assert isinstance(request, rpc_pb2.RangeRequest)
    if request.key == b"compacted":
        raise errors.compacted()
    return rpc_pb2.RangeResponse()


async def watch_handler(
    requests: AsyncIterator[Message], send: SendMessage, context: CallContext
) -> None:
    async for _ in requests:
        await send(rpc_pb2.WatchResponse())
        await send(rpc_pb2.WatchResponse())


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_calls_are_counted_by_service_method_type_and_code() -> None:
    registry = CollectorRegistry()
    methods = instrument_methods(
        {
            RANGE: UnaryMethod(rpc_pb2.RangeRequest, range_handler),
            WATCH: StreamMethod(rpc_pb2.WatchRequest, watch_handler),
        },
        GrpcCounters(registry),
    )
    unary = methods[RANGE]
    assert isinstance(unary, UnaryMethod)
    context = CallContext()
    await unary.handler(rpc_pb2.RangeRequest(key=b"a"), context)
    with pytest.raises(errors.RpcError):
        await unary.handler(rpc_pb2.RangeRequest(key=b"compacted"), context)
    kv = {"grpc_type": "unary", "grpc_service": "etcdserverpb.KV", "grpc_method": "Range"}
    assert sample(registry, "grpc_server_started_total", **kv) == 2
    assert sample(registry, "grpc_server_handled_total", **kv, grpc_code="OK") == 1
    assert sample(registry, "grpc_server_handled_total", **kv, grpc_code="OutOfRange") == 1
    assert sample(registry, "grpc_server_msg_sent_total", **kv) == 1

    stream = methods[WATCH]
    assert isinstance(stream, StreamMethod)
    sent: list[Message] = []

    async def requests() -> AsyncIterator[Message]:
        for _ in range(3):
            yield rpc_pb2.WatchRequest()

    async def send(message: Message) -> None:
        sent.append(message)

    await stream.handler(requests(), send, context)
    watch = {
        "grpc_type": "bidi_stream",
        "grpc_service": "etcdserverpb.Watch",
        "grpc_method": "Watch",
    }
    assert sample(registry, "grpc_server_msg_received_total", **watch) == 3
    assert sample(registry, "grpc_server_msg_sent_total", **watch) == 6 == len(sent)
    assert sample(registry, "grpc_server_handled_total", **watch, grpc_code="OK") == 1

    async def slow_send(message: Message) -> None:
        await trio.sleep(1)

    async def cancelled_stream() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.handler(requests(), slow_send, context)

    await cancelled_stream()
    assert sample(registry, "grpc_server_handled_total", **watch, grpc_code="Canceled") == 1
    text = generate_latest(registry).decode()
    assert "grpc_server_handled_total{" in text


def test_every_grpc_code_has_grpc_gos_name() -> None:
    assert set(GRPC_CODE_NAMES) == set(StatusCode)
    assert GRPC_CODE_NAMES[StatusCode.DEADLINE_EXCEEDED] == "DeadlineExceeded"
