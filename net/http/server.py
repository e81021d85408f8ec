"""An HTTP/1.1 server over a :class:`~net.network.Network`, parsed by httptools.

Theory of operation
-------------------

Every accepted stream becomes one :class:`_Connection`. It owns an httptools
request parser whose callbacks build :class:`Request` values into a queue;
the connection task answers the queue in order, so pipelined requests are
answered in the order they arrived. The parser is fed only when the queue is
empty, so at most one receive buffer (``receive_bytes_max``) of unanswered
requests is ever held per connection.

A request goes through three phases, each with its own deadline in Trio's
clock (so the simulator's ``MockClock`` drives them like real time):

- idle: between requests; ``idle_timeout_seconds``, then the connection is
  closed quietly.
- headers: from the first byte of a request to the end of its headers;
  ``header_timeout_seconds`` (a slowloris trickle cannot stretch it).
- body: from the end of the headers to the end of the body;
  ``body_timeout_seconds``.

Bad input never reaches the handler and never escapes the connection task:
a parse error answers 400, oversized headers 431, an oversized body 413, a
missed deadline 408, each with ``Connection: close``; requests queued before
the bad one are answered first. A client that disconnects mid-request simply
ends its task. The number of connections served at once is bounded
(``connections_max``); one over the bound is answered 503 and closed. A
connection holds at most ``pipelined_requests_max`` parsed requests: past
that it answers them and closes.

A handler returns a :class:`Response` (sent with ``Content-Length``) or a
:class:`StreamingResponse` (headers sent at once, then one chunk of
``Transfer-Encoding: chunked`` per item, each flushed). While a stream is
open the connection keeps reading, so a client that goes away is noticed at
once and the stream's iterator is closed (this is how a v2 watch learns that
its client left). HEAD responses carry the headers of GET and no body.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import math
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

import httptools
import trio

from net.http.messages import (
    Handler,
    Headers,
    Request,
    Response,
    StreamingResponse,
    reason_phrase,
    status_has_body,
)
from net.network import Network
from net.tcp import direct_socket
from net.tls import verified_common_name

logger = logging.getLogger(__name__)

REQUEST_HEADER_BYTES_MAX = 1 << 20
"""Request line plus header fields; Go's ``http.DefaultMaxHeaderBytes`` (1 MiB), as etcd uses."""

REQUEST_BODY_BYTES_MAX = 1_572_864
"""etcd's default ``--max-request-bytes`` (1.5 MiB)."""

HEADER_TIMEOUT_SECONDS = 10.0
BODY_TIMEOUT_SECONDS = 60.0
IDLE_TIMEOUT_SECONDS = 300.0
SEND_TIMEOUT_SECONDS = 60.0
"""Longest wait for one write to be taken by a client that does not read."""

CONNECTIONS_MAX = 1024
RECEIVE_BYTES_MAX = 65536

PIPELINED_REQUESTS_MAX = 128
"""Parsed requests one connection may have waiting for their answers. Past it the connection
answers those and closes, as a server that caps requests per connection does; a client
retries the rest on a new connection. (One receive buffer could otherwise hold thousands of
tiny requests, each a Request in memory.) Handlers run one at a time per connection."""

LINGER_SECONDS = 1.0
"""On a close we start, how long we drain the client's input so our last reply is not reset."""
LINGER_BYTES_MAX = 1 << 20

CLOSE_ITERATOR_SECONDS = 1.0
"""Longest wait for a streaming response's iterator to clean up."""

CONTINUE_LINE = b"HTTP/1.1 100 Continue\r\n\r\n"

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""How an HTTP/2 connection with prior knowledge (gRPC) opens."""

Http2Handler = Callable[[trio.abc.Stream, bytes], Awaitable[None]]
"""Serves a connection that opened with :data:`HTTP2_PREFACE`, given the bytes read so far."""


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """The bounds of one server; every field is validated positive."""

    request_header_bytes_max: int = REQUEST_HEADER_BYTES_MAX
    request_body_bytes_max: int = REQUEST_BODY_BYTES_MAX
    header_timeout_seconds: float = HEADER_TIMEOUT_SECONDS
    body_timeout_seconds: float = BODY_TIMEOUT_SECONDS
    idle_timeout_seconds: float = IDLE_TIMEOUT_SECONDS
    send_timeout_seconds: float = SEND_TIMEOUT_SECONDS
    connections_max: int = CONNECTIONS_MAX
    receive_bytes_max: int = RECEIVE_BYTES_MAX
    pipelined_requests_max: int = PIPELINED_REQUESTS_MAX

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"ServerLimits.{name} must be positive, not {value!r}")


class HttpServer:
    """Serves one handler over HTTP/1.1 on any number of addresses of a Network.

    Args:
        network: where to listen.
        handler: the application.
        limits: the bounds; the defaults follow etcd.
        http2: serves connections that open with the HTTP/2 preface (gRPC), as etcd
            multiplexes both on its client port; without it they are answered 400.
        watched: the requests whose handler may wait long (a v3 Lock or Campaign): while
            one runs the connection reads ahead, and a client that leaves cancels it, as
            Go's net/http cancels a request's context. (Not every request: the extra task
            costs tens of microseconds.)
    """

    def __init__(
        self,
        network: Network,
        handler: Handler,
        limits: ServerLimits | None = None,
        *,
        http2: Http2Handler | None = None,
        watched: Callable[[Request], bool] | None = None,
    ) -> None:
        self._network = network
        self._handler = handler
        self._limits = limits if limits is not None else ServerLimits()
        self._http2 = http2
        self._watched = watched
        self._connections = 0

    @property
    def connections(self) -> int:
        """Connections being served right now."""
        return self._connections

    async def serve(
        self, address: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``address`` until cancelled; reports the bound address once listening."""
        await self._network.serve(address, self.serve_stream, task_status=task_status)

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve HTTP on one accepted stream until either side closes it."""
        if self._connections >= self._limits.connections_max:
            logger.warning("refusing a connection: %d served already", self._connections)
            await _refuse(stream, self._limits)
            return
        self._connections += 1
        try:
            connection = _Connection(stream, self._handler, self._limits, self._http2)
            connection.watched = self._watched
            await connection.run()
        finally:
            self._connections -= 1


async def _refuse(stream: trio.abc.Stream, limits: ServerLimits) -> None:
    reply = _error_response(503, "too many connections")
    with trio.move_on_after(limits.send_timeout_seconds):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(
                _head("1.1", reply, False, content_length=len(reply.body)) + reply.body
            )
    await _close_lingering(stream)


class _Phase(enum.Enum):
    IDLE = "idle"
    HEADERS = "headers"
    BODY = "body"


@dataclass(frozen=True, slots=True)
class _Rejection:
    """Why the connection will answer an error and close."""

    status: int
    reason: str


class _RequestTooBig(Exception):
    """Raised inside a parser callback to stop parsing; the rejection is kept aside."""


class _ClientGone(Exception):
    """The client closed, reset, or stopped reading."""


class _RequestParser:
    """The httptools callbacks: bytes in, :class:`Request` values out (no I/O)."""

    def __init__(self, limits: ServerLimits) -> None:
        self._limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self.ready: deque[Request] = deque()
        self.phase = _Phase.IDLE
        self.phase_started = 0.0
        self.rejection: _Rejection | None = None
        self.expect_continue = False
        self._url = bytearray()
        self._headers: list[tuple[str, str]] = []
        self._parsed_headers = Headers()
        self._header_bytes = 0
        self._body = bytearray()

    def feed(self, data: bytes | bytearray) -> None:
        """Parse ``data``; complete requests go to ``ready``, a fault to ``rejection``."""
        assert self.rejection is None, "fed after a rejection"
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades (WebSocket, h2c) are not served: answer what was parsed, then close.
            self.rejection = _Rejection(0, "upgrade requested")
        except httptools.HttpParserError as error:
            if self.rejection is None:
                self.rejection = _Rejection(400, f"malformed request: {error}")

    # httptools callbacks, in the order the parser calls them.

    def on_message_begin(self) -> None:
        self.phase = _Phase.HEADERS
        self.phase_started = trio.current_time()
        self.expect_continue = False
        self._url.clear()
        self._headers = []
        self._header_bytes = 0
        self._body = bytearray()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.phase = _Phase.BODY
        self.phase_started = trio.current_time()
        headers = self._parsed_headers = Headers(self._headers)
        if self._parser.get_http_version() == "1.1" and "host" not in headers:
            self._reject(400, "missing required Host header")
        length_text = headers.get("content-length")
        length = int(length_text) if length_text and length_text.strip().isdigit() else 0
        if length > self._limits.request_body_bytes_max:
            self._reject(413, "request body too large")
        expect = headers.get("expect", "") or ""
        self.expect_continue = expect.lower() == "100-continue"

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > self._limits.request_body_bytes_max:
            self._reject(413, "request body too large")
        self._body += body

    def on_message_complete(self) -> None:
        target = self._url.decode("latin-1")
        split = _split_target(target)
        if split is None:
            self._reject(400, f"malformed request target {target[:100]!r}")
        path, query = split
        self.ready.append(
            Request(
                method=self._parser.get_method().decode("latin-1"),
                target=target,
                path=path,
                query=query,
                headers=self._parsed_headers,
                body=bytes(self._body),
                http_version=self._parser.get_http_version(),
                keep_alive=self._parser.should_keep_alive(),
            )
        )
        self.phase = _Phase.IDLE
        self.phase_started = trio.current_time()
        self.expect_continue = False
        if len(self.ready) >= self._limits.pipelined_requests_max:
            # Status 0: answer what is queued, then close without a reply of our own.
            self._reject(0, "too many pipelined requests")

    def _count_header_bytes(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > self._limits.request_header_bytes_max:
            self._reject(431, "request headers too large")

    def _reject(self, status: int, reason: str) -> NoReturn:
        self.rejection = _Rejection(status, reason)
        raise _RequestTooBig(reason)


def _split_target(target: str) -> tuple[str, str] | None:
    """The (path, query) of a request target, both still percent-encoded; None if malformed."""
    if target == "*":
        return "*", ""
    if not target.startswith("/"):
        scheme, separator, rest = target.partition("://")
        if not separator or scheme.lower() not in ("http", "https"):
            return None
        ends = [index for index in (rest.find("/"), rest.find("?"), rest.find("#")) if index >= 0]
        target = rest[min(ends) :] if ends else ""
        if not target.startswith("/"):
            target = "/" + target
    target = target.split("#", 1)[0]
    path, _, query = target.partition("?")
    return path, query


class _Connection:
    """One client connection: receive, answer in order, close."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: Handler,
        limits: ServerLimits,
        http2: Http2Handler | None = None,
    ) -> None:
        self._stream = stream
        self._handler = handler
        self._limits = limits
        self._http2 = http2
        self._parser = _RequestParser(limits)
        self._direct = direct_socket(stream)
        self._receive_deadline = trio.CancelScope()
        """Around the whole connection, its deadline set only while a receive waits: the
        receives share it because a scope of their own costs each request some 6 us."""
        self._client_eof = False
        self._linger = False
        self._failed = False
        self.watched: Callable[[Request], bool] | None = None
        self._peer_name: str | None = None
        self._peer_name_known = False

    async def run(self) -> None:
        try:
            with self._receive_deadline:
                await self._serve()
            if self._receive_deadline.cancelled_caught:
                await self._missed_deadline()
        except _ClientGone:
            pass
        finally:
            if self._linger and not self._client_eof:
                await _close_lingering(self._stream)
            else:
                await trio.aclose_forcefully(self._stream)

    async def _serve(self) -> None:
        if self._http2 is not None and await self._sniffed_http2(self._http2):
            return
        while True:
            request = await self._next_request()
            if request is None:
                return
            if not await self._answer(request):
                return

    async def _sniffed_http2(self, http2: Http2Handler) -> bool:
        """Read the first bytes; hand the connection to ``http2`` if they are its preface.

        An HTTP/1.1 request differs from the preface within its first bytes ("GET", "PUT",
        "POST" all do), so it is fed to the parser at once; only a client that sent a part
        of the preface is waited for, within the header deadline (then answered 408 as a slow
        HTTP/1.1 request). Returns whether the connection is done with.
        """
        data = await self._receive()
        if data is None:
            return True
        received = bytes(data)
        started = trio.current_time()
        while len(received) < len(HTTP2_PREFACE) and HTTP2_PREFACE.startswith(received):
            with trio.move_on_at(started + self._limits.header_timeout_seconds):
                try:
                    more = await self._stream.receive_some(self._limits.receive_bytes_max)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    more = b""
                if not more:
                    self._client_eof = True
                    return True
                received += more
                continue
            break
        if received.startswith(HTTP2_PREFACE):
            await http2(self._stream, received)
            return True
        self._parser.feed(received)
        if self._parser.phase is not _Phase.IDLE:
            self._parser.phase_started = started
        return False

    async def _next_request(self) -> Request | None:
        """The next request to answer, or None when the connection should close."""
        parser = self._parser
        if parser.ready:
            # A pipelined request, answered without a receive: the answer's send does not
            # yield either (``_send``), so yield here to let the other connections run.
            await trio.lowlevel.checkpoint()
        while not parser.ready:
            if parser.rejection is not None:
                await self._reject(parser.rejection)
                return None
            if self._client_eof:
                return None
            if parser.expect_continue and parser.phase is _Phase.BODY:
                # Only now: an interim reply must not overtake answers still owed.
                parser.expect_continue = False
                await self._send(CONTINUE_LINE)
            data = await self._receive()
            if data is None:
                return None
            parser.feed(data)
        return parser.ready.popleft()

    async def _receive(self) -> bytes | bytearray | None:
        """Bytes from the client; None on EOF. A missed deadline cancels the connection's
        ``_receive_deadline`` (``_missed_deadline`` answers it)."""
        parser = self._parser
        started = parser.phase_started if parser.phase is not _Phase.IDLE else trio.current_time()
        deadline = self._receive_deadline
        deadline.deadline = started + self._timeout_of(parser.phase)
        receive_bytes_max = self._limits.receive_bytes_max
        data: bytes | bytearray
        try:
            if self._direct is not None:
                data = await self._direct.receive_some(receive_bytes_max)
            else:
                data = await self._stream.receive_some(receive_bytes_max)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        deadline.deadline = math.inf
        if deadline.cancel_called:
            # The deadline passed as the bytes came: missed all the same (and the handler
            # must not start inside a cancelled scope).
            await trio.lowlevel.checkpoint()
        if not data:
            self._client_eof = True
            if parser.phase is not _Phase.IDLE:
                logger.debug("client left in the middle of a request (%s)", parser.phase.value)
            return None
        return data

    async def _missed_deadline(self) -> None:
        """A receive's deadline passed: close an idle connection, answer 408 to a slow one."""
        phase = self._parser.phase
        if phase is _Phase.IDLE:
            logger.debug("closing an idle connection")
            return
        logger.info("request %s not received in %.1f s", phase.value, self._timeout_of(phase))
        await self._reject(_Rejection(408, f"request {phase.value} too slow"))

    def _timeout_of(self, phase: _Phase) -> float:
        limits = self._limits
        if phase is _Phase.IDLE:
            return limits.idle_timeout_seconds
        if phase is _Phase.HEADERS:
            return limits.header_timeout_seconds
        return limits.body_timeout_seconds

    async def _reject(self, rejection: _Rejection) -> None:
        self._linger = True
        if rejection.status == 0:
            return
        logger.info("rejecting a request: %d %s", rejection.status, rejection.reason)
        reply = _error_response(rejection.status, rejection.reason)
        await self._send(_head("1.1", reply, False, content_length=len(reply.body)) + reply.body)

    async def _answer(self, request: Request) -> bool:
        """Run the handler and send its response; whether the connection stays open."""
        if not self._peer_name_known:  # the TLS handshake is done once a request came
            self._peer_name = verified_common_name(self._stream)
            self._peer_name_known = True
        if self._peer_name is not None:
            request = dataclasses.replace(request, peer_common_name=self._peer_name)
        if self.watched is not None and self.watched(request):
            watched = await self._call_watched_handler(request)
            if watched is None:
                return False
            response = watched
        else:
            response = await self._call_handler(request)
        keep_alive = request.keep_alive and not self._failed and not _asks_close(response.headers)
        version = "1.0" if request.http_version == "1.0" else "1.1"
        if isinstance(response, StreamingResponse):
            return await self._stream_response(request, response, version, keep_alive)
        body = response.body if status_has_body(response.status, request.method) else b""
        head = _head(version, response, keep_alive, content_length=len(response.body))
        await self._send(head + body)
        return keep_alive

    async def _call_handler(self, request: Request) -> Response | StreamingResponse:
        try:
            return await self._handler(request)
        except Exception:
            # The one boundary where a bug in an application becomes a 500 for this client
            # instead of a dropped connection; trio.Cancelled is a BaseException and passes.
            logger.exception("handler failed on %s %s", request.method, request.path[:200])
            self._failed = True
            return _error_response(500, "internal server error")

    async def _call_watched_handler(self, request: Request) -> Response | StreamingResponse | None:
        """The handler's response, or None if the client left first (the handler is
        cancelled then)."""
        responses: list[Response | StreamingResponse] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_for_departure, nursery.cancel_scope)
            responses.append(await self._call_handler(request))
            nursery.cancel_scope.cancel()
        if self._client_eof or not responses:
            return None
        if self._parser.phase is not _Phase.IDLE:
            # A request read ahead meanwhile gets its full deadline from now.
            self._parser.phase_started = trio.current_time()
        return responses[0]

    async def _stream_response(
        self, request: Request, response: StreamingResponse, version: str, keep_alive: bool
    ) -> bool:
        chunked = version == "1.1"
        keep_alive = keep_alive and chunked
        extra = (("Transfer-Encoding", "chunked"),) if chunked else ()
        head = _head(version, response, keep_alive, extra=extra)
        try:
            await self._send(head)
            if not status_has_body(response.status, request.method):
                return keep_alive
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_for_departure, nursery.cancel_scope)
                async for chunk in response.chunks:
                    if chunk:
                        framed = b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk
                        await self._send(framed)
                nursery.cancel_scope.cancel()
            if self._client_eof:
                return False
            if self._parser.phase is not _Phase.IDLE:
                # A request read ahead during the stream gets its full deadline from now.
                self._parser.phase_started = trio.current_time()
            if chunked:
                await self._send(b"0\r\n\r\n")
            return keep_alive
        finally:
            await _close_stream_body(response)

    async def _watch_for_departure(self, stream_scope: trio.CancelScope) -> None:
        """While a stream is open: read ahead, and cancel the stream if the client leaves."""
        parser = self._parser
        while not parser.ready and parser.rejection is None:
            try:
                data = await self._stream.receive_some(self._limits.receive_bytes_max)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._client_eof = True
                stream_scope.cancel()
                return
            parser.feed(data)
        await trio.sleep_forever()

    async def _send(self, data: bytes) -> None:
        if self._direct is not None:
            # Most answers fit the socket's buffer: written at once, with no wait to bound.
            try:
                sent = self._direct.send_now(data)
            except trio.BrokenResourceError as error:
                raise _ClientGone from error
            if sent == len(data):
                return
            data = data[sent:]
        with trio.move_on_after(self._limits.send_timeout_seconds):
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                raise _ClientGone from error
            return
        logger.info("client did not take %d bytes in time", len(data))
        raise _ClientGone


async def _close_stream_body(response: StreamingResponse) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_ITERATOR_SECONDS):
        chunks = response.chunks
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()
        if response.on_close is not None:
            await response.on_close()


async def _close_lingering(stream: trio.abc.Stream) -> None:
    """Half-close and drain the client's input for a moment, so it reads our last reply."""
    with trio.move_on_after(LINGER_SECONDS):
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            drained = 0
            while drained < LINGER_BYTES_MAX:
                data = await stream.receive_some(RECEIVE_BYTES_MAX)
                if not data:
                    break
                drained += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(stream)


def _asks_close(headers: tuple[tuple[str, str], ...]) -> bool:
    return any(name.lower() == "connection" and value.lower() == "close" for name, value in headers)


def _error_response(status: int, detail: str) -> Response:
    """The plain-text reply of the server itself (not of the application), as Go writes it."""
    text = f"{status} {reason_phrase(status)}: {detail}"
    return Response(status, (("Content-Type", "text/plain; charset=utf-8"),), text.encode())


_SERVER_SET = frozenset({"content-length", "transfer-encoding", "connection"})


def _head(
    version: str,
    response: Response | StreamingResponse,
    keep_alive: bool,
    *,
    content_length: int | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """Status line and header fields; the framing fields are the server's, not the handler's."""
    lines = [f"HTTP/{version} {response.status} {reason_phrase(response.status)}\r\n"]
    for name, value in response.headers:
        if name.lower() not in _SERVER_SET:
            lines.append(f"{name}: {value}\r\n")
    if content_length is not None and response.status >= 200 and response.status not in (204, 304):
        lines.append(f"Content-Length: {content_length}\r\n")
    for name, value in extra:
        lines.append(f"{name}: {value}\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    elif version == "1.0":
        lines.append("Connection: keep-alive\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    if head.count("\r") != len(lines) or head.count("\n") != len(lines):
        # A CR or LF inside a field (each line ends in its one CRLF): rare, so the fields
        # are made single-line only then.
        one_lined = _one_lined(response)
        return _head(version, one_lined, keep_alive, content_length=content_length, extra=extra)
    return head.encode()


def _one_lined(response: Response | StreamingResponse) -> Response | StreamingResponse:
    """``response`` with CR and LF in its header fields turned into spaces."""
    headers = tuple((_one_line(name), _one_line(value)) for name, value in response.headers)
    return dataclasses.replace(response, headers=headers)


def _one_line(text: str) -> str:
    """Header text with CR and LF turned into spaces, as Go does, so no field can be injected."""
    return text.replace("\r", " ").replace("\n", " ")
