"""The HTTP server against well-behaved and hostile clients, in virtual time."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from net.http import Request, Response, ServerLimits, StreamingResponse
from net.http.server import (
    BODY_TIMEOUT_SECONDS,
    HEADER_TIMEOUT_SECONDS,
    IDLE_TIMEOUT_SECONDS,
    LINGER_SECONDS,
    REQUEST_BODY_BYTES_MAX,
)
from tests.net.http_helpers import parse_all, read_responses, read_until_eof, serving


class Recorder:
    """An echo handler that remembers what it was given."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        text = f"{request.method} {request.path} ?{request.query} {len(request.body)}"
        return Response(200, (("Content-Type", "text/plain"),), text.encode())


def get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_keep_alive_serves_requests_one_after_another() -> None:
    handler = Recorder()
    async with serving(handler) as served:
        stream = await served.connect()
        for path in ("/a", "/b?x=1"):
            await stream.send_all(get(path))
            [response] = await read_responses(stream, 1)
            assert response.status == 200
            assert response.header("Content-Length") == str(len(response.body))
            assert response.header("Connection") is None
        assert [r.path for r in handler.requests] == ["/a", "/b"]
        assert handler.requests[1].query == "x=1"
        assert handler.requests[1].headers.get("HOST") == "test"
        assert served.network.connections_opened == 1


async def test_pipelined_requests_are_answered_in_order() -> None:
    handler = Recorder()
    async with serving(handler) as served:
        stream = await served.connect()
        body = b"value=1"
        put = (
            b"PUT /v2/keys/k HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" + body
        )
        await stream.send_all(get("/first") + put + get("/third"))
        responses = await read_responses(stream, 3)
        assert [r.body for r in responses] == [
            b"GET /first ? 0",
            b"PUT /v2/keys/k ? 7",
            b"GET /third ? 0",
        ]
        assert handler.requests[1].body == body


async def test_head_sends_get_headers_without_a_body() -> None:
    async with serving(Recorder()) as served:
        stream = await served.connect()
        await stream.send_all(b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n" + get("/y"))
        data = b""
        while b"GET /y" not in data:
            data += await stream.receive_some(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Length: 11\r\n" in head + b"\r\n"  # len(b"HEAD /x ? 0")
        assert rest.startswith(b"HTTP/1.1 200 OK")


async def test_oversized_body_is_refused_with_413_and_closed() -> None:
    handler = Recorder()
    async with serving(handler) as served:
        stream = await served.connect()
        size = REQUEST_BODY_BYTES_MAX + 1
        await stream.send_all(
            f"PUT /k HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        [response] = parse_all(await read_until_eof(stream))
        assert response.status == 413
        assert response.header("Connection") == "close"
        assert handler.requests == []


async def test_oversized_chunked_body_is_refused_with_413() -> None:
    handler = Recorder()
    limits = ServerLimits(request_body_bytes_max=100)
    async with serving(handler, limits) as served:
        stream = await served.connect()
        chunk = b"a" * 60
        await stream.send_all(
            b"POST /k HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"3c\r\n"
            + chunk
            + b"\r\n3c\r\n"
            + chunk
            + b"\r\n0\r\n\r\n"
        )
        [response] = parse_all(await read_until_eof(stream))
        assert response.status == 413
        assert handler.requests == []


async def test_a_body_at_the_limit_is_accepted() -> None:
    handler = Recorder()
    limits = ServerLimits(request_body_bytes_max=100)
    async with serving(handler, limits) as served:
        stream = await served.connect()
        await stream.send_all(b"PUT /k HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
        await stream.send_all(b"x" * 100)
        [response] = await read_responses(stream, 1)
        assert response.status == 200
        assert handler.requests[0].body == b"x" * 100


async def test_expect_continue_gets_an_interim_reply() -> None:
    handler = Recorder()
    async with serving(handler) as served:
        stream = await served.connect()
        await stream.send_all(
            b"PUT /k HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await stream.receive_some(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await stream.send_all(b"abc")
        [response] = await read_responses(stream, 1)
        assert response.body == b"PUT /k ? 3"


async def test_expect_continue_with_a_too_large_body_gets_413_at_once() -> None:
    async with serving(Recorder()) as served:
        stream = await served.connect()
        size = REQUEST_BODY_BYTES_MAX * 2
        await stream.send_all(
            f"PUT /k HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        [response] = parse_all(await read_until_eof(stream))
        assert response.status == 413


async def test_slowloris_header_trickle_times_out(autojump_clock: trio.abc.Clock) -> None:
    handler = Recorder()
    async with serving(handler) as served:
        stream = await served.connect()
        started = trio.current_time()
        received = bytearray()

        async def trickle() -> None:
            with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
                for index in range(1000):
                    await stream.send_all(b"GET / HTTP/1.1\r\n" if index == 0 else b"X")
                    await trio.sleep(1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            received += await read_until_eof(stream)
            elapsed = trio.current_time() - started
            nursery.cancel_scope.cancel()
        [response] = parse_all(bytes(received))
        assert response.status == 408
        assert HEADER_TIMEOUT_SECONDS <= elapsed < HEADER_TIMEOUT_SECONDS + 3
        assert handler.requests == []
        await trio.sleep(LINGER_SECONDS + 1)
        assert served.server.connections == 0


async def test_slow_body_times_out(autojump_clock: trio.abc.Clock) -> None:
    async with serving(Recorder()) as served:
        stream = await served.connect()
        started = trio.current_time()
        await stream.send_all(b"PUT /k HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
        [response] = parse_all(await read_until_eof(stream))
        assert response.status == 408
        elapsed = trio.current_time() - started
        assert BODY_TIMEOUT_SECONDS <= elapsed < BODY_TIMEOUT_SECONDS + 3


async def test_an_idle_connection_is_closed_quietly(autojump_clock: trio.abc.Clock) -> None:
    async with serving(Recorder()) as served:
        stream = await served.connect()
        await stream.send_all(get("/a"))
        await read_responses(stream, 1)
        started = trio.current_time()
        assert await read_until_eof(stream) == b""
        assert trio.current_time() - started == pytest.approx(IDLE_TIMEOUT_SECONDS)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GARBAGE\r\n\r\n",
        b"\x00\x01\x02\xff\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET nopath HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ],
)
async def test_malformed_requests_get_400_and_close(garbage: bytes) -> None:
    handler = Recorder()
    async with serving(handler) as served:
        stream = await served.connect()
        await stream.send_all(garbage)
        responses = parse_all(await read_until_eof(stream))
        assert [response.status for response in responses] == [400]
        assert responses[0].header("Connection") == "close"
        assert handler.requests == []


async def test_a_good_request_before_garbage_is_still_answered() -> None:
    handler = Recorder()
    async with serving(handler) as served:
        stream = await served.connect()
        await stream.send_all(get("/ok") + b"NOT HTTP AT ALL\r\n\r\n")
        responses = parse_all(await read_until_eof(stream))
        assert [response.status for response in responses] == [200, 400]


async def test_missing_host_is_refused_like_go() -> None:
    async with serving(Recorder()) as served:
        stream = await served.connect()
        await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
        [response] = parse_all(await read_until_eof(stream))
        assert response.status == 400
        assert response.body == b"400 Bad Request: missing required Host header"


async def test_oversized_headers_get_431() -> None:
    limits = ServerLimits(request_header_bytes_max=1000)
    async with serving(Recorder(), limits) as served:
        stream = await served.connect()
        await stream.send_all(get("/", "X-Big: " + "a" * 2000))
        [response] = parse_all(await read_until_eof(stream))
        assert response.status == 431


async def test_half_a_request_then_eof_leaks_nothing(autojump_clock: trio.abc.Clock) -> None:
    handler = Recorder()
    async with serving(handler) as served:
        for partial in (
            b"GET /x HTT",
            b"PUT /k HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nab",
        ):
            stream = await served.connect()
            await stream.send_all(partial)
            await stream.aclose()
        await trio.sleep(1)
        assert served.server.connections == 0
        assert handler.requests == []


async def test_http_1_0_gets_a_1_0_reply_and_a_close() -> None:
    async with serving(Recorder()) as served:
        stream = await served.connect()
        await stream.send_all(b"GET /old HTTP/1.0\r\n\r\n")
        data = await read_until_eof(stream)
        assert data.startswith(b"HTTP/1.0 200 OK\r\n")
        assert b"Connection: close\r\n" in data


async def test_connection_close_is_honoured() -> None:
    async with serving(Recorder()) as served:
        stream = await served.connect()
        await stream.send_all(get("/a", "Connection: close") + get("/never"))
        responses = parse_all(await read_until_eof(stream))
        assert [r.body for r in responses] == [b"GET /a ? 0"]


async def test_absolute_form_targets_are_split() -> None:
    handler = Recorder()
    async with serving(handler) as served:
        stream = await served.connect()
        await stream.send_all(get("http://h:1/v2/keys/a?b=c#frag"))
        await read_responses(stream, 1)
        assert (handler.requests[0].path, handler.requests[0].query) == ("/v2/keys/a", "b=c")


async def test_a_failing_handler_gives_500_and_the_server_goes_on() -> None:
    calls: list[str] = []

    async def handler(request: Request) -> Response:
        calls.append(request.path)
        if request.path == "/boom":
            raise RuntimeError("a bug")
        return Response(200, (), b"fine")

    async with serving(handler) as served:
        stream = await served.connect()
        await stream.send_all(get("/boom"))
        [response] = parse_all(await read_until_eof(stream))
        assert response.status == 500
        other = await served.connect()
        await other.send_all(get("/fine"))
        [response] = await read_responses(other, 1)
        assert response.body == b"fine"


async def test_connections_over_the_bound_get_503() -> None:
    limits = ServerLimits(connections_max=1)
    async with serving(Recorder(), limits) as served:
        first = await served.connect()
        await first.send_all(get("/a"))
        await read_responses(first, 1)
        second = await served.connect()
        [response] = parse_all(await read_until_eof(second))
        assert response.status == 503
        await first.send_all(get("/b"))
        [response] = await read_responses(first, 1)
        assert response.status == 200


class Events:
    """A streaming body fed by the test: one chunk per send; records when it is closed."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[bytes](10)
        self.closed = trio.Event()
        self.finished = False

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.receive:
                yield chunk
        finally:
            self.finished = True

    async def on_close(self) -> None:
        self.closed.set()

    async def handler(self, request: Request) -> StreamingResponse:
        headers = (("Content-Type", "application/json"),)
        return StreamingResponse(200, headers, self.chunks(), self.on_close)


async def test_streaming_flushes_headers_then_one_chunk_per_item() -> None:
    events = Events()
    async with serving(events.handler) as served:
        stream = await served.connect()
        await stream.send_all(get("/watch"))
        head = await stream.receive_some(65536)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
        await events.send.send(b'{"a":1}\n')
        assert await stream.receive_some(65536) == b'8\r\n{"a":1}\n\r\n'
        await events.send.send(b"")
        await events.send.send(b"xy")
        assert await stream.receive_some(65536) == b"2\r\nxy\r\n"
        await events.send.aclose()
        assert await stream.receive_some(65536) == b"0\r\n\r\n"
        await events.closed.wait()
        await stream.send_all(get("/watch"))  # still keep-alive
        assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200 OK")


async def test_a_client_leaving_a_stream_closes_its_iterator() -> None:
    events = Events()
    async with serving(events.handler) as served:
        stream = await served.connect()
        await stream.send_all(get("/watch"))
        await stream.receive_some(65536)
        await stream.aclose()
        with trio.fail_after(5):
            await events.closed.wait()
        assert events.finished
        await trio.sleep(0.1)
        assert served.server.connections == 0


async def test_head_of_a_stream_sends_headers_only() -> None:
    events = Events()
    async with serving(events.handler) as served:
        stream = await served.connect()
        await stream.send_all(b"HEAD /watch HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await stream.receive_some(65536)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
        with trio.fail_after(5):
            await events.closed.wait()


async def test_random_bytes_never_crash_the_server() -> None:
    generator = random.Random(20261121)
    prefixes = [b"", b"GET / HTTP/1.1\r\nHost: t\r\n", b"POST /v2/keys/a HTTP/1.1\r\n"]
    async with serving(Recorder()) as served:
        for _ in range(200):
            stream = await served.connect()
            noise = bytes(generator.randrange(256) for _ in range(generator.randrange(1, 200)))
            await stream.send_all(generator.choice(prefixes) + noise)
            await stream.send_eof()  # type: ignore[attr-defined]
            with trio.fail_after(5):
                data = await read_until_eof(stream)
            for response in parse_all(data):
                assert response.status in (200, 400, 413, 431)
        await trio.testing.wait_all_tasks_blocked()
        assert served.server.connections == 0


async def test_a_request_read_ahead_during_a_long_stream_gets_its_deadline_afresh(
    autojump_clock: trio.abc.Clock,
) -> None:
    events = Events()
    async with serving(events.handler) as served:
        stream = await served.connect()
        await stream.send_all(get("/watch"))
        await stream.receive_some(65536)
        await stream.send_all(get("/next")[:-2])  # the next request, all but its end
        await trio.sleep(HEADER_TIMEOUT_SECONDS * 3)
        await events.send.send(b"event")
        await events.send.aclose()
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            data += await stream.receive_some(65536)
        assert data == b"5\r\nevent\r\n0\r\n\r\n"
        await trio.sleep(1)
        await stream.send_all(b"\r\n")
        assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200 OK\r\n")


async def test_a_line_break_in_a_response_header_cannot_inject_a_field() -> None:
    async def handler(request: Request) -> Response:
        del request
        return Response(200, (("X-Echo", "a\r\nX-Injected: 1"), ("X-Plain", "b")), b"ok")

    async with serving(handler) as served:
        stream = await served.connect()
        await stream.send_all(get("/x"))
        [response] = await read_responses(stream, 1)
        assert response.header("X-Echo") == "a  X-Injected: 1"
        assert response.header("X-Injected") is None
        assert response.header("X-Plain") == "b"
        assert response.body == b"ok"
