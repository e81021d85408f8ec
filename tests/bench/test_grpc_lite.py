"""The lean gRPC client against an in-process HTTP/2 server built on the h2 library.

The server splits and packs messages across DATA frames on purpose, ends one call with
trailers only (after a call whose headers could have filled an HPACK dynamic table), and
grants only the default 64 KiB windows, so a large request must wait for its updates.
"""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
import trio

from bench.grpc_lite import LiteConnection, LiteRpcError, request_header_block, status_of
from net.etcdpb import kv_pb2, rpc_pb2

BIG_BYTES = 200_000
GRPC = "application/grpc"
H2 = h2.connection.H2Connection


def grpc_frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def whole_messages(buffer: bytearray) -> list[bytes]:
    messages = []
    while len(buffer) >= 5:
        (length,) = struct.unpack_from(">I", buffer, 1)
        if len(buffer) < 5 + length:
            break
        messages.append(bytes(buffer[5 : 5 + length]))
        del buffer[: 5 + length]
    return messages


class FakeServer:
    """Answers Put with revision 7, /fail with a trailers-only NOT_FOUND, /big with the size
    it received, /hang-up by closing the connection, and a Watch create with ``created`` then
    three events in awkward frames."""

    def __init__(self) -> None:
        self.paths: dict[int, str] = {}
        self.buffers: dict[int, bytearray] = {}
        self.hang_up = False

    async def serve(self, stream: trio.SocketStream) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        connection = h2.connection.H2Connection(config)
        connection.initiate_connection()
        await stream.send_all(connection.data_to_send())
        while data := await stream.receive_some(65536):
            for event in connection.receive_data(data):
                self.handle(connection, event)
            await stream.send_all(connection.data_to_send())
            if self.hang_up:
                await stream.aclose()
                return

    def handle(self, connection: h2.connection.H2Connection, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            headers = {str(name): str(value) for name, value in event.headers}
            assert headers["content-type"] == GRPC and headers["te"] == "trailers"
            self.paths[event.stream_id] = headers[":path"]
            self.buffers[event.stream_id] = bytearray()
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None and event.data is not None
            connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            buffer = self.buffers[event.stream_id]
            buffer += event.data
            for message in whole_messages(buffer):
                self.answer(connection, event.stream_id, message)

    def answer(
        self, connection: h2.connection.H2Connection, stream_id: int, message: bytes
    ) -> None:
        path = self.paths[stream_id]
        ok = [(":status", "200"), ("content-type", "application/grpc")]
        if path == "/hang-up":
            self.hang_up = True
            return
        if path == "/fail":
            trailers = [*ok, ("grpc-status", "5"), ("grpc-message", "requested lease not found")]
            connection.send_headers(stream_id, trailers, end_stream=True)
            return
        if path.endswith("/Watch"):
            self.watch(connection, stream_id, rpc_pb2.WatchRequest.FromString(message))
            return
        revision = 7 if path.endswith("/Put") else len(message)
        response = rpc_pb2.PutResponse(header=rpc_pb2.ResponseHeader(revision=revision))
        connection.send_headers(stream_id, ok)
        connection.send_data(stream_id, grpc_frame(response.SerializeToString()))
        connection.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)

    @staticmethod
    def watch(
        connection: h2.connection.H2Connection, stream_id: int, request: rpc_pb2.WatchRequest
    ) -> None:
        watch_id = request.create_request.watch_id
        connection.send_headers(
            stream_id, [(":status", "200"), ("content-type", "application/grpc")]
        )
        created = rpc_pb2.WatchResponse(watch_id=watch_id, created=True)
        events = [
            grpc_frame(
                rpc_pb2.WatchResponse(
                    watch_id=watch_id,
                    events=[kv_pb2.Event(kv=kv_pb2.KeyValue(key=b"k", mod_revision=revision))],
                ).SerializeToString()
            )
            for revision in (10, 11, 12)
        ]
        connection.send_data(stream_id, grpc_frame(created.SerializeToString()))
        connection.send_data(stream_id, events[0] + events[1])  # two in one frame
        connection.send_data(stream_id, events[2][:4])  # one across two frames
        connection.send_data(stream_id, events[2][4:])


async def start(nursery: trio.Nursery) -> LiteConnection:
    server = FakeServer()
    listeners = await nursery.start(trio.serve_tcp, server.serve, 0)
    port = listeners[0].socket.getsockname()[1]
    connection = LiteConnection("127.0.0.1", port)
    await nursery.start(connection.run)
    return connection


def test_request_headers_decode_to_a_grpc_request_without_table_state() -> None:
    block = request_header_block("/etcdserverpb.KV/Put", "127.0.0.1:2379")
    for _ in range(2):  # the same bytes decode the same with any decoder
        assert [(str(n), str(v)) for n, v in hpack.Decoder().decode(block)] == [
            (":method", "POST"), (":scheme", "http"), (":path", "/etcdserverpb.KV/Put"),
            (":authority", "127.0.0.1:2379"), ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]  # fmt: skip
    trailers = hpack.Encoder().encode([("grpc-status", "9"), ("grpc-message", "nope")])
    assert status_of(trailers) == (9, "nope")
    assert status_of(b"\xff\xff\xff")[0] == 2  # unreadable: UNKNOWN, not an exception


async def test_unary_calls_errors_and_a_request_larger_than_the_window(
    nursery: trio.Nursery,
) -> None:
    connection = await start(nursery)
    put = rpc_pb2.PutRequest(key=b"a", value=b"b").SerializeToString()
    for _ in range(3):
        answer = await connection.unary("/etcdserverpb.KV/Put", put)
        assert rpc_pb2.PutResponse.FromString(answer).header.revision == 7
    with pytest.raises(LiteRpcError) as failure:
        await connection.unary("/fail", put)
    assert (failure.value.code, failure.value.message) == (5, "requested lease not found")
    big = await connection.unary("/big", b"x" * BIG_BYTES)
    assert rpc_pb2.PutResponse.FromString(big).header.revision == BIG_BYTES


async def test_a_stream_gets_every_message_however_the_frames_cut_them(
    nursery: trio.Nursery,
) -> None:
    connection = await start(nursery)
    received: list[rpc_pb2.WatchResponse] = []
    enough = trio.Event()

    def on_message(data: memoryview) -> None:
        received.append(rpc_pb2.WatchResponse.FromString(bytes(data)))
        if len(received) == 4:
            enough.set()

    stream_id = connection.open_stream("/etcdserverpb.Watch/Watch", on_message, lambda _: None)
    create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(watch_id=3))
    await connection.send(stream_id, create.SerializeToString())
    with trio.fail_after(5):
        await enough.wait()
    assert received[0].created and received[0].watch_id == 3
    assert [r.events[0].kv.mod_revision for r in received[1:]] == [10, 11, 12]


async def test_a_connection_that_breaks_fails_its_calls_and_every_later_one(
    nursery: trio.Nursery,
) -> None:
    connection = await start(nursery)
    for path in ("/hang-up", "/etcdserverpb.KV/Put"):
        with pytest.raises(LiteRpcError) as failure:
            await connection.unary(path, b"")
        assert failure.value.code == 14  # UNAVAILABLE
