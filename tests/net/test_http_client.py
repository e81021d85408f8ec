"""The HTTP client against our server: reuse, retry, streaming, timeouts and bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from net.http import Request, Response, ServerLimits, StreamingResponse
from net.http.client import ClientLimits, HttpClient
from net.http.errors import HttpConnectError, HttpProtocolError, HttpTimeout, ResponseTooLarge
from tests.net.http_helpers import serving
from tests.net.memory_network import MemoryNetwork


async def app(request: Request) -> Response | StreamingResponse:
    if request.path == "/stream":

        async def chunks() -> AsyncIterator[bytes]:
            for index in range(3):
                yield b'{"n":%d}\n' % index

        return StreamingResponse(200, (("Content-Type", "application/json"),), chunks())
    if request.path == "/forever":
        await trio.sleep_forever()
    if request.path == "/big":
        return Response(200, (), b"x" * 5000)
    headers = (("X-Method", request.method), ("X-Query", request.query))
    return Response(201 if request.method == "PUT" else 200, headers, request.body or b"hello")


async def test_requests_reuse_one_connection() -> None:
    async with serving(app) as served:
        client = HttpClient(served.network, f"http://{served.address}")
        first = await client.request("GET", "/a?x=1")
        second = await client.request("PUT", "/a", body=b"value=2")
        assert (first.status, first.body, first.headers.get("x-query")) == (200, b"hello", "x=1")
        assert (second.status, second.body) == (201, b"value=2")
        assert served.network.connections_opened == 1
        await client.aclose()


async def test_absolute_urls_pick_their_address() -> None:
    async with serving(app) as served:
        client = HttpClient(served.network)
        reply = await client.request("DELETE", f"http://{served.address}/k?recursive=true")
        assert reply.headers.get("X-Method") == "DELETE"
        assert reply.headers.get("X-Query") == "recursive=true"
        with pytest.raises(ValueError, match="base_url"):
            await client.request("GET", "/relative")


async def test_head_reads_no_body_and_keeps_the_connection() -> None:
    async with serving(app) as served:
        client = HttpClient(served.network, f"http://{served.address}")
        head = await client.request("HEAD", "/a")
        assert (head.status, head.body, head.headers.get("Content-Length")) == (200, b"", "5")
        assert (await client.request("GET", "/a")).body == b"hello"
        assert served.network.connections_opened == 1


async def test_a_connection_the_server_closed_is_retried(autojump_clock: trio.abc.Clock) -> None:
    limits = ServerLimits(idle_timeout_seconds=5)
    async with serving(app, limits) as served:
        client = HttpClient(served.network, f"http://{served.address}")
        await client.request("GET", "/a")
        await trio.sleep(10)  # the server closes the idle connection
        reply = await client.request("PUT", "/a", body=b"again")
        assert reply.body == b"again"
        assert served.network.connections_opened == 2


async def test_stream_yields_one_item_per_chunk() -> None:
    async with serving(app) as served:
        client = HttpClient(served.network, f"http://{served.address}")
        async with client.stream("GET", "/stream") as reply:
            assert reply.status == 200
            assert [chunk async for chunk in reply.chunks()] == [
                b'{"n":0}\n',
                b'{"n":1}\n',
                b'{"n":2}\n',
            ]
        await client.request("GET", "/a")
        assert served.network.connections_opened == 1


async def test_leaving_a_stream_early_closes_its_connection() -> None:
    async with serving(app) as served:
        client = HttpClient(served.network, f"http://{served.address}")
        async with client.stream("GET", "/stream") as reply:
            async for _chunk in reply.chunks():
                break
        await client.request("GET", "/a")
        assert served.network.connections_opened == 2


async def test_timeout_raises_http_timeout(autojump_clock: trio.abc.Clock) -> None:
    async with serving(app) as served:
        client = HttpClient(served.network, f"http://{served.address}")
        started = trio.current_time()
        with pytest.raises(HttpTimeout):
            await client.request("GET", "/forever", timeout=3)
        assert trio.current_time() - started == pytest.approx(3)
        assert (await client.request("GET", "/a")).status == 200


async def test_nobody_listening_is_a_connect_error() -> None:
    client = HttpClient(MemoryNetwork(), "http://nowhere:1")
    with pytest.raises(HttpConnectError):
        await client.request("GET", "/")


async def test_a_body_over_the_bound_is_refused() -> None:
    async with serving(app) as served:
        limits = ClientLimits(response_body_bytes_max=1000)
        client = HttpClient(served.network, f"http://{served.address}", limits=limits)
        with pytest.raises(ResponseTooLarge):
            await client.request("GET", "/big")


async def test_garbage_from_the_server_is_a_protocol_error() -> None:
    network = MemoryNetwork()

    async def liar(stream: trio.abc.Stream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"NOT HTTP\r\n\r\n")

    async def truncated(stream: trio.abc.Stream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")

    async with trio.open_nursery() as nursery:
        await nursery.start(network.serve, "liar:1", liar)
        await nursery.start(network.serve, "truncated:1", truncated)
        client = HttpClient(network)
        with pytest.raises(HttpProtocolError, match="malformed"):
            await client.request("GET", "http://liar:1/")
        with pytest.raises(HttpProtocolError, match="closed"):
            await client.request("GET", "http://truncated:1/")
        nursery.cancel_scope.cancel()


async def test_a_body_delimited_by_close_is_read() -> None:
    network = MemoryNetwork()

    async def old_server(stream: trio.abc.Stream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n400 Bad")

    async with trio.open_nursery() as nursery:
        await nursery.start(network.serve, "old:1", old_server)
        reply = await HttpClient(network).request("GET", "http://old:1/")
        assert (reply.status, reply.body) == (400, b"400 Bad")
        nursery.cancel_scope.cancel()


class _ApplyThenBreak:
    """A server that reads a whole request, counts it as applied, and breaks the connection
    before answering: the client cannot know whether the request took effect."""

    def __init__(self) -> None:
        self.applied: list[bytes] = []
        self.connections = 0

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            data += chunk
        if self.connections == 1:
            # The first connection answers normally, so that the client pools it.
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                data += chunk
        self.applied.append(data.split(b"\r\n", 1)[0])
        await trio.aclose_forcefully(stream)


async def test_a_write_is_never_sent_twice_when_the_connection_breaks() -> None:
    """Found by the simulator: a PUT whose pooled connection broke after the server got it was
    sent again, so a compare-and-delete could apply and then report "key not found"."""
    server = _ApplyThenBreak()
    network = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        await nursery.start(network.serve, "server:1", server.handle)
        client = HttpClient(network, "http://server:1")
        await client.request("GET", "/warm")
        with pytest.raises(HttpProtocolError):
            await client.request("DELETE", "/v2/keys/k?prevIndex=32")
        assert server.applied == [b"DELETE /v2/keys/k?prevIndex=32 HTTP/1.1"]
        nursery.cancel_scope.cancel()


async def test_a_read_is_sent_again_when_a_pooled_connection_breaks() -> None:
    server = _ApplyThenBreak()
    network = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        await nursery.start(network.serve, "server:1", server.handle)
        client = HttpClient(network, "http://server:1")
        await client.request("GET", "/warm")
        with pytest.raises(HttpProtocolError):
            await client.request("GET", "/v2/keys/k")
        # Sent twice: once on the pooled connection, once on a fresh one (which broke too).
        assert server.applied == [b"GET /v2/keys/k HTTP/1.1"] * 2
        nursery.cancel_scope.cancel()
