"""Resource limits of the listeners that other test files do not cover: requests in flight per
HTTP/1.1 connection, calls per gRPC connection, a gRPC slowloris (a frame or a header block a
byte at a time), pings that would keep an idle gRPC connection open, and connections per peer
listener. (Header and body sizes, HTTP/1.1 slowloris and idle clients, connections per client
listener and the gRPC message size are in test_http_server.py, test_grpc_server.py and
test_grpc_hostile.py.)"""

from __future__ import annotations

import dataclasses

import h2.errors
import h2.events
import trio
import trio.testing

from net.etcdpb import rpc_pb2
from net.frames import FrameReader, encode_frame
from net.grpc import GrpcLimits
from net.grpc.framing import encode_message
from net.grpc.limits import FRAME_TIMEOUT_S, IDLE_TIMEOUT_S
from net.http import HttpServer, Request, Response, ServerLimits
from net.http.server import HTTP2_PREFACE, PIPELINED_REQUESTS_MAX
from net.peers import REFUSAL_TIMEOUT_SECONDS
from net.tcp import TcpNetwork
from tests.net.http_helpers import parse_all, read_until_eof, serving
from tests.net.memory_network import MemoryNetwork
from tests.net.test_grpc_hostile import RawPeer, peer_of, range_message
from tests.net.test_grpc_server import RANGE
from tests.net.test_grpc_server import serving as grpc_serving
from tests.net.test_http_server import Recorder, get
from tests.net.test_peers import FAST, hello, make_member, raw_connection, start

# -- HTTP/1.1: requests in flight per connection -------------------------------------------


async def test_a_pipelined_burst_past_the_bound_is_answered_up_to_it_then_closed() -> None:
    handler = Recorder()
    async with serving(handler) as served:
        stream = await served.connect()
        burst = PIPELINED_REQUESTS_MAX * 4
        await stream.send_all(b"".join(get(f"/{number}") for number in range(burst)))
        responses = parse_all(await read_until_eof(stream))
        assert [r.status for r in responses] == [200] * PIPELINED_REQUESTS_MAX
        assert [r.path for r in handler.requests] == [
            f"/{number}" for number in range(PIPELINED_REQUESTS_MAX)
        ]
        # The listener goes on: a new connection is served.
        other = await served.connect()
        await other.send_all(get("/after", "Connection: close"))
        [response] = parse_all(await read_until_eof(other))
        assert response.body == b"GET /after ? 0"


async def test_pipelined_requests_within_the_bound_are_all_answered() -> None:
    limits = ServerLimits(pipelined_requests_max=4)
    async with serving(Recorder(), limits) as served:
        stream = await served.connect()
        await stream.send_all(get("/1") + get("/2") + get("/3") + get("/4", "Connection: close"))
        assert len(parse_all(await read_until_eof(stream))) == 4
        stream = await served.connect()
        await stream.send_all(b"".join(get(f"/{number}") for number in range(9)))
        assert len(parse_all(await read_until_eof(stream))) == 4


# -- gRPC ----------------------------------------------------------------------------------


async def read_to_eof(stream: trio.abc.Stream) -> float:
    """Read until the server closes; when that was (Trio's clock)."""
    while await stream.receive_some(65536):
        pass
    return trio.current_time()


async def test_a_grpc_frame_trickled_a_byte_a_second_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with peer_of() as (peer, served):
        await peer.read_until(lambda: bool(peer.events))
        stream_id = peer.call(RANGE, range_message(b"k"))
        frames = peer.engine.data_to_send()
        started = trio.current_time()
        closed_at = None
        async with trio.open_nursery() as nursery:

            async def trickle() -> None:
                for byte in frames:
                    await peer.stream.send_all(bytes([byte]))
                    await trio.sleep(1)

            nursery.start_soon(trickle)
            with trio.fail_after(FRAME_TIMEOUT_S * 3):
                closed_at = await read_to_eof(peer.stream)
            nursery.cancel_scope.cancel()
        assert FRAME_TIMEOUT_S <= closed_at - started < FRAME_TIMEOUT_S + 2
        assert served.toy.contexts == []
        assert served.grpc_server.connections == 0
        assert stream_id == 1


async def test_a_header_block_trickled_in_continuation_frames_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with peer_of() as (peer, served):
        await peer.read_until(lambda: bool(peer.events))
        # HEADERS without END_HEADERS, then one-byte CONTINUATION frames, each whole: every
        # frame arrives in time, the request's headers never do.
        headers_frame = b"\x00\x00\x01\x01\x00\x00\x00\x00\x01\x82"  # :method GET, no end
        await peer.stream.send_all(headers_frame)
        started = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def trickle() -> None:
                while True:
                    await trio.sleep(1)
                    await peer.stream.send_all(b"\x00\x00\x01\x09\x00\x00\x00\x00\x01\x86")

            nursery.start_soon(trickle)
            with trio.fail_after(FRAME_TIMEOUT_S * 3):
                closed_at = await read_to_eof(peer.stream)
            nursery.cancel_scope.cancel()
        assert FRAME_TIMEOUT_S <= closed_at - started < FRAME_TIMEOUT_S + 2
        assert served.toy.contexts == []


async def test_pings_do_not_keep_an_idle_grpc_connection_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with peer_of() as (peer, served):
        stream_id = peer.call(RANGE, range_message(b"k"))
        await peer.flush()
        await peer.read_until(lambda: peer.status(stream_id) is not None)
        finished = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def ping() -> None:
                for number in range(10_000):
                    await trio.sleep(1)
                    peer.engine.ping(number.to_bytes(8, "big"))
                    await peer.flush()

            nursery.start_soon(ping)
            await peer.read_until(lambda: False, timeout_s=IDLE_TIMEOUT_S * 2)
            nursery.cancel_scope.cancel()
        assert IDLE_TIMEOUT_S <= trio.current_time() - finished < IDLE_TIMEOUT_S + 2
        assert any(isinstance(e, h2.events.PingAckReceived) for e in peer.events)
        goaway = peer.goaway()
        assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert served.grpc_server.connections == 0


async def test_a_slow_large_message_frame_by_frame_is_not_cut(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The frame clock restarts at every frame: a big message sent slowly, frame by frame,
    each frame whole in time, is served."""
    async with peer_of() as (peer, served):
        await peer.read_until(lambda: bool(peer.events))
        stream_id = peer.call(RANGE, b"", end=False)
        big = rpc_pb2.RangeRequest(key=b"k", range_end=b"z" * 100_000)  # the answer is small
        message = encode_message(big.SerializeToString())
        frame_bytes = peer.engine.max_outbound_frame_size
        for offset in range(0, len(message), frame_bytes):
            chunk = message[offset : offset + frame_bytes]
            end = offset + frame_bytes >= len(message)
            peer.engine.send_data(stream_id, chunk, end_stream=end)
        data = peer.engine.data_to_send()
        step = 4096  # each frame takes about four steps
        for offset in range(0, len(data), step):
            await peer.stream.send_all(data[offset : offset + step])
            await trio.sleep(FRAME_TIMEOUT_S / 5)
        await peer.read_until(lambda: peer.status(stream_id) is not None)
        assert peer.status(stream_id) == (0, "")
        assert served.grpc_server.connections == 1


async def test_a_client_past_the_concurrent_streams_bound_is_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = GrpcLimits(concurrent_streams_max=2)
    network = MemoryNetwork()
    async with grpc_serving(network, limits, "server:0") as served:
        peer = RawPeer(await network.connect(served.address))
        await peer.start()
        # Sent before the server's SETTINGS are read, so the client engine does not hold
        # the third call back: the server itself must refuse it (h2 ends the connection).
        for number in range(3):
            peer.call(RANGE, range_message(f"sleep-{number}".encode()))
        await peer.flush()
        await peer.read_until(lambda: False)
        goaway = peer.goaway()
        assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        assert peer.eof
        assert len(served.toy.started) <= 2
        assert sorted(served.toy.cancelled) == sorted(served.toy.started)
        assert served.grpc_server.connections == 0
        # A client that keeps to the bound runs that many calls at once on one connection.
        other = RawPeer(await network.connect(served.address))
        await other.start()
        await other.read_until(lambda: bool(other.events))
        for number in range(2):
            other.call(RANGE, range_message(f"sleep-again-{number}".encode()))
        await other.flush()
        with trio.move_on_after(1):
            await other.read_until(lambda: False)
        assert {b"sleep-again-0", b"sleep-again-1"} <= set(served.toy.started)
        assert other.goaway() is None


# -- peers: connections per listener --------------------------------------------------------


async def test_peer_connections_past_the_bound_are_closed_and_slots_come_back(
    nursery: trio.Nursery,
) -> None:
    limits = dataclasses.replace(FAST, connections_inbound_max=3)
    member = await start(nursery, make_member(2, limits=limits))
    silent = [await raw_connection(member.address) for _ in range(3)]
    await trio.sleep(0.05)
    extra, extra_reader = await raw_connection(member.address)
    with trio.fail_after(5):
        assert await extra.receive_some(100) == b""  # closed unanswered
    # Silent ones are dropped at the handshake deadline (then the refusal lingers a while),
    # and the slots serve a real peer.
    for stream, _ in silent:
        with trio.fail_after(limits.handshake_timeout_seconds + 5):
            while await stream.receive_some(100):
                pass
        await stream.aclose()
    await trio.sleep(REFUSAL_TIMEOUT_SECONDS + 0.5)
    stream, reader = await raw_connection(member.address)
    await stream.send_all(encode_frame(hello()))
    with trio.fail_after(5):
        assert await reader.receive() == {"ok": True}
    assert isinstance(extra_reader, FrameReader)


async def test_a_trickling_grpc_client_does_not_block_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A second connection on the same listener is served while the first trickles."""
    network = MemoryNetwork()
    async with grpc_serving(network, None, "server:0") as served:
        slow = await network.connect(served.address)
        await slow.send_all(HTTP2_PREFACE + b"\x00\x00")  # a frame header, never finished
        other = RawPeer(await network.connect(served.address))
        await other.start()
        stream_id = other.call(RANGE, range_message(b"k"))
        await other.flush()
        await other.read_until(lambda: other.status(stream_id) is not None)
        assert other.status(stream_id) == (0, "")
        with trio.fail_after(FRAME_TIMEOUT_S + 2):
            await read_to_eof(slow)


# -- HTTP/1.1: a client that does not read --------------------------------------------------


async def test_a_client_that_never_reads_its_answers_is_closed_after_the_send_timeout() -> None:
    """Real TCP (memory streams never push back): large answers fill the socket buffers, the
    server's write waits, and after ``send_timeout_seconds`` the connection is dropped."""
    body = b"x" * (1 << 20)

    async def large(request: Request) -> Response:
        return Response(200, (("Content-Type", "text/plain"),), body)

    limits = ServerLimits(send_timeout_seconds=0.5)
    server = HttpServer(TcpNetwork(), large, limits)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve, "127.0.0.1:0")
        stream = await TcpNetwork().connect(address)
        await stream.send_all(b"".join(get(f"/{number}") for number in range(64)))
        with trio.fail_after(10):
            while server.connections == 0:
                await trio.sleep(0.01)
            started = trio.current_time()
            while server.connections:
                await trio.sleep(0.05)
        assert trio.current_time() - started < 5
        await stream.aclose()
        nursery.cancel_scope.cancel()
