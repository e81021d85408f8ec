"""The gRPC server against a raw HTTP/2 peer that misbehaves, in virtual time."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import trio
import trio.testing

from net.etcdpb import rpc_pb2
from net.grpc import GrpcLimits
from net.grpc.framing import MessageDecoder, encode_message
from net.grpc.limits import CONCURRENT_STREAMS_MAX, IDLE_TIMEOUT_S
from net.http.server import HTTP2_PREFACE
from tests.net.memory_network import MemoryNetwork
from tests.net.test_grpc_server import LEASE_KEEP_ALIVE, RANGE, Served, serving


class RawPeer:
    """An h2 client engine over one stream, driven by hand."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.engine = h2.connection.H2Connection(config)
        self.events: list[h2.events.Event] = []
        self.eof = False

    async def start(self) -> None:
        self.engine.initiate_connection()
        await self.flush()

    async def flush(self) -> None:
        data = self.engine.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def read_until(self, done: Callable[[], bool], timeout_s: float = 30.0) -> None:
        with trio.fail_after(timeout_s):
            while not done() and not self.eof:
                data = await self.stream.receive_some(65536)
                if not data:
                    self.eof = True
                    return
                self.events += self.engine.receive_data(data)
                await self.flush()

    def call(self, path: str, payload: bytes, *, end: bool = True, **headers: str) -> int:
        stream_id = self.engine.get_next_available_stream_id()
        fields = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"server"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
        fields += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
        self.engine.send_headers(stream_id, fields)
        if payload or end:
            self.engine.send_data(stream_id, payload, end_stream=end)
        return stream_id

    def status(self, stream_id: int) -> tuple[int, str] | None:
        """(grpc-status, grpc-message) once the stream's last headers arrived."""
        for event in self.events:
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                fields = dict(event.headers or ())
                if event.stream_id == stream_id and b"grpc-status" in fields:
                    message = fields.get(b"grpc-message", b"").decode()
                    return int(fields[b"grpc-status"]), message
        return None

    def goaway(self) -> h2.events.ConnectionTerminated | None:
        for event in self.events:
            if isinstance(event, h2.events.ConnectionTerminated):
                return event
        return None


@asynccontextmanager
async def peer_of(limits: GrpcLimits | None = None) -> AsyncIterator[tuple[RawPeer, Served]]:
    network = MemoryNetwork()
    async with serving(network, limits, "server:0") as served:
        peer = RawPeer(await network.connect(served.address))
        await peer.start()
        yield peer, served


def more_than(count: Callable[[], int], bound: int) -> bool:
    return count() > bound


def range_message(key: bytes, limit: int = 0) -> bytes:
    return encode_message(rpc_pb2.RangeRequest(key=key, limit=limit).SerializeToString())


async def test_the_server_advertises_its_bounds(autojump_clock: trio.testing.MockClock) -> None:
    async with peer_of() as (peer, _):
        await peer.read_until(
            lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in peer.events)
        )
    (settings,) = [e for e in peer.events if isinstance(e, h2.events.RemoteSettingsChanged)]
    changed = {code: setting.new_value for code, setting in settings.changed_settings.items()}
    assert changed[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == CONCURRENT_STREAMS_MAX
    assert changed[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == 1 << 20


async def test_garbage_after_the_preface_gets_goaway_and_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    async with serving(network, None, "server:0") as served:
        stream = await network.connect(served.address)
        await stream.send_all(HTTP2_PREFACE + b"this is not an HTTP/2 frame at all")
        peer = RawPeer(stream)
        peer.engine.initiate_connection()
        peer.engine.data_to_send()
        await peer.read_until(lambda: False)
        assert peer.eof
        goaway = peer.goaway()
        assert goaway is not None and goaway.error_code != h2.errors.ErrorCodes.NO_ERROR
        assert served.grpc_server.connections == 0
        # The listener goes on serving.
        other = RawPeer(await network.connect(served.address))
        await other.start()
        stream_id = other.call(RANGE, range_message(b"k"))
        await other.flush()
        await other.read_until(lambda: other.status(stream_id) is not None)
        assert other.status(stream_id) == (0, "")


async def test_data_on_stream_zero_is_a_connection_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with peer_of() as (peer, _):
        await peer.stream.send_all(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
        await peer.read_until(lambda: False)
    goaway = peer.goaway()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert peer.eof


async def test_an_announced_giant_message_is_refused_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with peer_of() as (peer, _):
        giant = struct.pack(">BI", 0, 1 << 30) + b"only the start"
        stream_id = peer.call(RANGE, giant, end=False)
        await peer.flush()
        await peer.read_until(lambda: peer.status(stream_id) is not None)
        assert peer.status(stream_id) == (
            8,
            "grpc: received message larger than max (1073741824 vs. 2097152)",
        )
        after = peer.call(RANGE, range_message(b"after", 2))
        await peer.flush()
        await peer.read_until(lambda: peer.status(after) is not None)
        assert peer.status(after) == (0, "")


async def test_compressed_messages_are_refused_as_grpc_go_does(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with peer_of() as (peer, _):
        payload = rpc_pb2.RangeRequest(key=b"k").SerializeToString()
        compressed = struct.pack(">BI", 1, len(payload)) + payload
        plain = peer.call(RANGE, compressed)
        gzip = peer.call(RANGE, compressed, grpc_encoding="gzip")
        await peer.flush()
        await peer.read_until(lambda: None not in (peer.status(plain), peer.status(gzip)))
        assert peer.status(plain) == (
            13,
            "grpc: compressed flag set with identity or empty encoding",
        )
        assert peer.status(gzip) == (
            12,
            'grpc: Decompressor is not installed for grpc-encoding "gzip"',
        )


async def test_rst_stream_mid_call_cancels_the_handler_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with peer_of() as (peer, served):
        stream_id = peer.call(RANGE, range_message(b"sleep"), end=False)
        await peer.flush()
        with trio.fail_after(5):
            await served.toy.started_event.wait()
        peer.engine.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        after = peer.call(RANGE, range_message(b"after"))
        await peer.flush()
        await peer.read_until(lambda: peer.status(after) is not None)
        assert served.toy.cancelled == [b"sleep"]
        assert peer.status(after) == (0, "")
        assert peer.status(stream_id) is None


async def test_a_truncated_message_and_a_missing_one_are_internal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with peer_of() as (peer, _):
        truncated = peer.call(RANGE, range_message(b"key")[:-1])
        empty = peer.call(RANGE, b"")
        await peer.flush()
        await peer.read_until(lambda: None not in (peer.status(truncated), peer.status(empty)))
        assert peer.status(truncated) == (13, "grpc: stream ended inside a message")
        assert peer.status(empty) == (13, "grpc: error while receiving request: EOF")


async def test_requests_that_are_not_grpc_get_an_http_status(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with peer_of() as (peer, _):
        engine = peer.engine
        get = engine.get_next_available_stream_id()
        engine.send_headers(
            get,
            [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"s")],
            end_stream=True,
        )
        json = peer.call(RANGE, b"{}", content_type="application/json")
        await peer.flush()

        def statuses() -> dict[int, bytes]:
            return {
                e.stream_id: dict(e.headers or ())[b":status"]
                for e in peer.events
                if isinstance(e, h2.events.ResponseReceived) and e.stream_id is not None
            }

        await peer.read_until(lambda: len(statuses()) == 2)
        assert statuses() == {get: b"405", json: b"415"}


async def test_a_client_that_never_reads_is_held_by_flow_control(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with peer_of() as (peer, served):
        request = rpc_pb2.LeaseKeepAliveRequest(ID=100_000)
        stream_id = peer.call(LEASE_KEEP_ALIVE, encode_message(request.SerializeToString()))
        await peer.flush()
        await served.toy.started_event.wait()
        await trio.sleep(50)
        sent = len(served.toy.started)
        # The peer's windows are 65,535 bytes and each response takes at least 10: the handler
        # waits in send(), nothing piles up.
        assert 0 < sent < 65_535 // 10
        await trio.sleep(200)
        assert len(served.toy.started) == sent

        # Reading and acknowledging lets it go on.
        def data_bytes() -> int:
            return sum(
                e.flow_controlled_length or 0
                for e in peer.events
                if isinstance(e, h2.events.DataReceived)
            )

        acknowledged = 0
        for _ in range(20):
            await peer.read_until(partial(more_than, data_bytes, data_bytes()), timeout_s=5)
            peer.engine.acknowledge_received_data(data_bytes() - acknowledged, stream_id)
            acknowledged = data_bytes()
            await peer.flush()
        assert len(served.toy.started) > 2 * sent


async def test_an_idle_connection_gets_goaway_and_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with peer_of() as (peer, served):
        stream_id = peer.call(RANGE, range_message(b"k"))
        await peer.flush()
        await peer.read_until(lambda: peer.status(stream_id) is not None)
        finished = trio.current_time()
        await peer.read_until(lambda: False, timeout_s=IDLE_TIMEOUT_S + 10)
        assert trio.current_time() - finished >= IDLE_TIMEOUT_S
        goaway = peer.goaway()
        assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert peer.eof
        assert served.grpc_server.connections == 0


async def test_a_running_call_keeps_a_connection_from_idling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with peer_of() as (peer, served):
        peer.call(RANGE, range_message(b"sleep"))
        await peer.flush()
        await trio.sleep(IDLE_TIMEOUT_S * 3)
        assert served.grpc_server.connections == 1
        assert served.toy.cancelled == []


async def test_shutdown_sends_goaway(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with serving(network, None, "server:0") as served:
        peer = RawPeer(await network.connect(served.address))
        await peer.start()
        stream_id = peer.call(RANGE, range_message(b"k"))
        await peer.flush()
        await peer.read_until(lambda: peer.status(stream_id) is not None)
    await peer.read_until(lambda: False)
    goaway = peer.goaway()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert goaway.last_stream_id == stream_id


async def test_an_oversized_header_list_is_a_connection_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with peer_of(GrpcLimits(header_list_bytes_max=4096)) as (peer, served):
        await peer.read_until(
            lambda: any(isinstance(e, h2.events.SettingsAcknowledged) for e in peer.events)
        )
        peer.call(RANGE, range_message(b"k"), x_big="x" * 8000)
        await peer.flush()
        await peer.read_until(lambda: False)
        assert peer.goaway() is not None
        assert served.toy.contexts == []


async def test_a_trickled_preface_is_still_http2(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with serving(network, None, "server:0") as served:
        stream = await network.connect(served.address)
        for byte in HTTP2_PREFACE:
            await stream.send_all(bytes([byte]))
            await trio.sleep(0.1)
        peer = RawPeer(stream)
        peer.engine.initiate_connection()
        await stream.send_all(peer.engine.data_to_send()[len(HTTP2_PREFACE) :])
        stream_id = peer.call(RANGE, range_message(b"k"))
        await peer.flush()
        await peer.read_until(lambda: peer.status(stream_id) is not None)
        assert peer.status(stream_id) == (0, "")


async def test_a_stalled_partial_preface_is_a_slow_http1_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    async with serving(network, None, "server:0") as served:
        stream = await network.connect(served.address)
        await stream.send_all(HTTP2_PREFACE[:5])
        received = b""
        with trio.fail_after(60):
            while chunk := await stream.receive_some(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 408 ")
        assert served.grpc_server.connections == 0


async def test_messages_a_handler_does_not_take_are_bounded_by_withheld_acknowledgements(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = GrpcLimits(stream_window_bytes=65_535, stream_buffer_bytes_max=10_000)
    async with peer_of(limits) as (peer, served):
        await peer.read_until(
            lambda: any(isinstance(e, h2.events.SettingsAcknowledged) for e in peer.events)
        )
        stream_id = peer.call(RANGE, range_message(b"sleep"), end=False)
        await peer.flush()
        await served.toy.started_event.wait()
        chunk = range_message(b"x" * 1000)
        sent = 0
        for _ in range(50):
            while peer.engine.local_flow_control_window(stream_id) >= len(chunk):
                peer.engine.send_data(stream_id, chunk)
                sent += len(chunk)
            await peer.flush()
            with trio.move_on_after(1):
                await peer.read_until(lambda: False)
        # The handler took one message and waits; the server stopped acknowledging at its
        # buffer bound, so the peer could send no more than that and one window.
        assert 10_000 <= sent <= 10_000 + 65_535 + len(chunk)
        assert peer.engine.local_flow_control_window(stream_id) < len(chunk)
        assert served.toy.cancelled == []


async def test_a_burst_of_streamed_responses_shares_data_frames_in_order() -> None:
    """Responses a streaming handler sends without pausing are queued and go out in a few
    DATA frames (not one each), every one of them, in order, before the trailers."""
    responses = 200
    async with peer_of() as (peer, served):
        request = rpc_pb2.LeaseKeepAliveRequest(ID=responses)
        stream_id = peer.call(LEASE_KEEP_ALIVE, encode_message(request.SerializeToString()))
        await peer.flush()
        await peer.read_until(lambda: peer.status(stream_id) is not None)
        assert peer.status(stream_id) == (0, "")
        frames = [
            event
            for event in peer.events
            if isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id
        ]
        decoder = MessageDecoder(1 << 20)
        messages = [message for frame in frames for message in decoder.feed(frame.data or b"")]
        ids = [rpc_pb2.LeaseKeepAliveResponse.FromString(message).ID for message in messages]
        assert ids == list(range(responses))
        assert len(frames) <= responses // 20
        assert len(served.toy.started) == responses
