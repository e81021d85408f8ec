"""TcpNetwork: trio's stream contract over loopback, refusal, port 0, failing handlers."""

from __future__ import annotations

import logging
import socket

import pytest
import trio
import trio.testing

from net.network import ConnectionRefused, split_address
from net.tcp import TcpNetwork

LOOPBACK = "127.0.0.1:0"


async def connected_pair(
    nursery: trio.Nursery,
) -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
    """A client stream and the server's end of it, both from TcpNetwork, over loopback."""
    network = TcpNetwork()
    accepted_send, accepted_receive = trio.open_memory_channel[trio.abc.Stream](1)

    async def handler(stream: trio.abc.Stream) -> None:
        await accepted_send.send(stream)
        await trio.sleep_forever()  # the handler's return would close the stream under the test

    address = await nursery.start(network.serve, LOOPBACK, handler)
    client = await network.connect(address)
    server = await accepted_receive.receive()
    assert isinstance(client, trio.SocketStream)
    assert isinstance(server, trio.SocketStream)
    return client, server


async def fill_stream(stream: trio.abc.SendStream) -> None:
    """Write until the kernel's buffers are full."""

    async def sender() -> None:
        while True:
            await stream.send_all(b"x" * 10000)

    async def waiter(nursery: trio.Nursery) -> None:
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        nursery.start_soon(waiter, nursery)


async def test_tcp_streams_pass_the_half_closeable_stream_checks(nursery: trio.Nursery) -> None:
    async def stream_maker() -> tuple[trio.SocketStream, trio.SocketStream]:
        client, server = await connected_pair(nursery)
        assert isinstance(client, trio.SocketStream)
        assert isinstance(server, trio.SocketStream)
        return client, server

    async def clogged_stream_maker() -> tuple[trio.SocketStream, trio.SocketStream]:
        client, server = await stream_maker()
        for stream in (client, server):
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        await fill_stream(client)
        await fill_stream(server)
        return client, server

    await trio.testing.check_half_closeable_stream(stream_maker, clogged_stream_maker)


async def test_streams_have_no_delay(nursery: trio.Nursery) -> None:
    client, server = await connected_pair(nursery)
    for stream in (client, server):
        assert isinstance(stream, trio.SocketStream)
        assert stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_port_zero_reports_the_bound_port(nursery: trio.Nursery) -> None:
    address = await nursery.start(TcpNetwork().serve, LOOPBACK, _echo)
    host, port = split_address(address)
    assert host == "127.0.0.1"
    assert port != 0
    stream = await TcpNetwork().connect(address)
    await stream.send_all(b"ping")
    assert await stream.receive_some(4) == b"ping"
    await stream.aclose()


async def test_connect_to_a_closed_port_is_refused() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefused):
        await TcpNetwork().connect(f"127.0.0.1:{port}")


async def test_connect_to_an_unknown_host_is_refused() -> None:
    with pytest.raises(ConnectionRefused):
        await TcpNetwork().connect("no-such-host.invalid:2380")


async def test_a_failing_handler_is_logged_and_the_server_goes_on(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def handler(stream: trio.abc.Stream) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("handler bug")
        await _echo(stream)

    address = await nursery.start(TcpNetwork().serve, LOOPBACK, handler)
    with caplog.at_level(logging.ERROR, logger="net.tcp"):
        first = await TcpNetwork().connect(address)
        assert await first.receive_some(10) == b""  # closed by the server
        second = await TcpNetwork().connect(address)
        await second.send_all(b"still serving")
        assert await second.receive_some(100) == b"still serving"
    assert any("handler failed" in record.getMessage() for record in caplog.records)
    assert any("handler bug" in record.exc_text for record in caplog.records if record.exc_text)
    await first.aclose()
    await second.aclose()


async def test_the_stream_is_closed_when_the_handler_returns(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        await stream.send_all(b"bye")

    address = await nursery.start(TcpNetwork().serve, LOOPBACK, handler)
    stream = await TcpNetwork().connect(address)
    received = b""
    while chunk := await stream.receive_some(10):
        received += chunk
    assert received == b"bye"
    await stream.aclose()


async def test_cancelling_serve_stops_listening() -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(TcpNetwork().serve, LOOPBACK, _echo)
        nursery.cancel_scope.cancel()
    with pytest.raises(ConnectionRefused):
        await TcpNetwork().connect(address)


async def _echo(stream: trio.abc.Stream) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data)
