"""An HTTP/1.1 client over a :class:`~net.network.Network`, parsed by httptools.

One :class:`HttpClient` keeps a small pool of idle keep-alive connections per
address and reuses them; requests on one connection are never pipelined. A
request sent on a reused connection that the server had already closed (it
fails before any byte of a response arrives) is retried once on a new one.

Two ways to read a response:

- :meth:`HttpClient.request` reads the whole response (bounded by
  ``response_body_bytes_max``) and returns a :class:`ClientResponse`.
- :meth:`HttpClient.stream` returns once the status line and headers are in,
  and yields the body piece by piece: one item per HTTP chunk of a chunked
  body (a v2 ``stream=true`` watch sends one JSON event per chunk), or per
  receive otherwise.

Used by the CLI, the simulator's workload clients and the benchmarks.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httptools
import trio

from net.http.errors import HttpConnectError, HttpProtocolError, HttpTimeout, ResponseTooLarge
from net.http.messages import HeaderPairs, Headers
from net.network import Network, NetworkError, address_from_url

RESPONSE_HEADER_BYTES_MAX = 1 << 20
RESPONSE_BODY_BYTES_MAX = 64 << 20
"""The whole body of a response read by ``request``; one chunk of a streamed one."""
IDLE_CONNECTIONS_PER_ADDRESS_MAX = 8
REQUEST_TIMEOUT_SECONDS = 30.0
RECEIVE_BYTES_MAX = 65536
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """The bounds of one client; every field is validated positive."""

    response_header_bytes_max: int = RESPONSE_HEADER_BYTES_MAX
    response_body_bytes_max: int = RESPONSE_BODY_BYTES_MAX
    idle_connections_per_address_max: int = IDLE_CONNECTIONS_PER_ADDRESS_MAX
    receive_bytes_max: int = RECEIVE_BYTES_MAX

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"ClientLimits.{name} must be positive, not {value!r}")


@dataclass(frozen=True, slots=True)
class ClientResponse:
    """A complete response."""

    status: int
    headers: Headers
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            ValueError: the body is not JSON.
        """
        return json.loads(self.body)


class _StopParsing(Exception):
    """Raised in a parser callback to end the parse of this response."""


class _ResponseParser:
    """httptools callbacks for one response: bytes in, status, headers and body pieces out."""

    def __init__(self, limits: ClientLimits, head_only: bool) -> None:
        self._limits = limits
        self._head_only = head_only
        self._parser = httptools.HttpResponseParser(self)
        self.started = False
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.extra_data = False
        self.error: HttpProtocolError | None = None
        self.pieces: deque[bytes] = deque()
        self._chunked = False
        self._length_known = False
        self._header_bytes = 0
        self._chunk = bytearray()
        self._body_bytes = 0

    def feed(self, data: bytes | bytearray) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.error = HttpProtocolError("the server switched protocols")
        except httptools.HttpParserError as error:
            if self.error is None and not self.complete:
                self.error = HttpProtocolError(f"malformed response: {error}")

    def feed_eof(self) -> None:
        """The server closed: that ends a body delimited by the close, and nothing else."""
        if self.complete:
            return
        if self.headers_done and not self._chunked and not self._length_known:
            self._end_piece()
            self.complete = True
            self.keep_alive = False
            return
        if self.error is None:
            self.error = HttpProtocolError("the server closed the connection mid-response")

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra_data = True
            raise _StopParsing("bytes after the response")
        self.started = True

    def on_status(self, status: bytes) -> None:
        self._count_header_bytes(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim reply; its on_message_complete resets us
        self.status = status
        self.headers_done = True
        headers = Headers(self.headers)
        encoding = (headers.get("transfer-encoding") or "").lower()
        self._chunked = "chunked" in encoding
        self._length_known = "content-length" in headers
        if self._head_only or status in (204, 304):
            self.complete = True
            self.keep_alive = self._parser.should_keep_alive()
            raise _StopParsing("no body follows")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._chunked:
            self._chunk += body
            if len(self._chunk) > self._limits.response_body_bytes_max:
                self._fail(ResponseTooLarge("a response chunk passed the limit"))
        else:
            self.pieces.append(body)

    def on_chunk_complete(self) -> None:
        self._end_piece()

    def on_message_complete(self) -> None:
        if not self.headers_done:
            self.headers = []  # the end of an interim (1xx) reply
            self._header_bytes = 0
            return
        self._end_piece()
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()

    def _end_piece(self) -> None:
        if self._chunk:
            self.pieces.append(bytes(self._chunk))
            self._chunk.clear()

    def _count_header_bytes(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > self._limits.response_header_bytes_max:
            self._fail(ResponseTooLarge("response headers passed the limit"))

    def _fail(self, error: HttpProtocolError) -> None:
        self.error = error
        raise _StopParsing(str(error))


class _Connection:
    """One client connection; serves one request at a time."""

    def __init__(self, address: str, stream: trio.abc.Stream, reused: bool = False) -> None:
        self.address = address
        self.stream = stream
        self.reused = reused

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


class StreamingClientResponse:
    """A response whose status and headers are in and whose body is read on demand."""

    def __init__(
        self,
        connection: _Connection,
        parser: _ResponseParser,
        limits: ClientLimits,
    ) -> None:
        self._connection = connection
        self._parser = parser
        self._limits = limits
        self.status = parser.status
        self.headers = Headers(parser.headers)

    @property
    def complete(self) -> bool:
        """Whether the whole body has been read."""
        return self._parser.complete and not self._parser.pieces

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body: one item per HTTP chunk (chunked bodies) or per receive (others).

        Raises:
            HttpProtocolError: the server broke the protocol or closed mid-body.
        """
        parser = self._parser
        while True:
            while parser.pieces:
                yield parser.pieces.popleft()
            if parser.complete:
                return
            await _receive_into(self._connection, parser, self._limits)

    async def read(self) -> bytes:
        """The rest of the body, bounded by ``response_body_bytes_max``.

        Raises:
            ResponseTooLarge: the body passed the bound.
        """
        body = bytearray()
        async for piece in self.chunks():
            body += piece
            if len(body) > self._limits.response_body_bytes_max:
                raise ResponseTooLarge("the response body passed the limit")
        return bytes(body)


async def _receive_into(
    connection: _Connection, parser: _ResponseParser, limits: ClientLimits
) -> None:
    """Read once from the connection into the parser; raise what the parser found wrong."""
    try:
        data = await connection.stream.receive_some(limits.receive_bytes_max)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        data = b""
    if data:
        parser.feed(data)
    else:
        parser.feed_eof()
    if parser.error is not None:
        raise parser.error


IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Requests that may be sent twice: a v2 PUT or DELETE may not (it may be a compare-and-swap)."""


class _StaleConnection(Exception):
    """A reused connection turned out closed before any response byte: retry on a new one."""


class HttpClient:
    """An HTTP/1.1 client with keep-alive connection reuse.

    Args:
        network: how to reach servers.
        base_url: ``"http://host:port"`` that relative paths are sent to.
        limits: the bounds.
    """

    def __init__(
        self, network: Network, base_url: str | None = None, *, limits: ClientLimits | None = None
    ) -> None:
        self._network = network
        self._base_address = address_from_url(base_url) if base_url is not None else None
        self._limits = limits if limits is not None else ClientLimits()
        self._idle: dict[str, deque[_Connection]] = {}
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: HeaderPairs = (),
        body: bytes = b"",
        timeout: float | None = REQUEST_TIMEOUT_SECONDS,
    ) -> ClientResponse:
        """Send one request and read the whole response.

        Args:
            method: ``"GET"``, ``"PUT"``, ...
            url: ``"http://host:port/path?query"``, or ``"/path?query"`` with a base_url.
            headers: extra header fields (``Host`` and ``Content-Length`` are set here).
            body: the request body.
            timeout: seconds for the whole exchange; None waits forever.

        Raises:
            HttpConnectError: the server could not be reached.
            HttpTimeout: no complete response in time.
            HttpProtocolError: the server broke the protocol (ResponseTooLarge included).
        """
        try:
            with trio.fail_at(_deadline(timeout)):
                async with self.stream(
                    method, url, headers=headers, body=body, timeout=None
                ) as reply:
                    content = await reply.read()
                    return ClientResponse(reply.status, reply.headers, content)
        except trio.TooSlowError as error:
            raise HttpTimeout(f"{method} {url}: no response in {timeout} s") from error

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: HeaderPairs = (),
        body: bytes = b"",
        timeout: float | None = REQUEST_TIMEOUT_SECONDS,
    ) -> AsyncIterator[StreamingClientResponse]:
        """Send one request; yield the response once its headers are in.

        ``timeout`` bounds the wait for the headers only (a watch's body may
        take forever). The connection goes back to the pool only if the body
        was read to its end.

        Raises:
            the same errors as :meth:`request`.
        """
        address, target = self._split(url)
        data = _encode_request(method, target, address, headers, body)
        try:
            with trio.fail_at(_deadline(timeout)):
                connection, parser = await self._exchange(
                    address, data, method == "HEAD", method in IDEMPOTENT_METHODS
                )
        except trio.TooSlowError as error:
            raise HttpTimeout(f"{method} {url}: no response headers in {timeout} s") from error
        reply = StreamingClientResponse(connection, parser, self._limits)
        try:
            yield reply
        finally:
            if reply.complete and parser.keep_alive and not parser.extra_data:
                await self._release(connection)
            else:
                await connection.aclose()

    async def aclose(self) -> None:
        """Close every idle connection; the client must not be used afterwards."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await connection.aclose()

    def _split(self, url: str) -> tuple[str, str]:
        if url.startswith("/"):
            if self._base_address is None:
                raise ValueError(f"a relative URL {url!r} needs a client with a base_url")
            return self._base_address, url
        address = address_from_url(url)
        target = url.split("://", 1)[1][len(address) :] or "/"
        if not target.startswith("/"):
            target = "/" + target
        return address, target

    async def _exchange(
        self, address: str, data: bytes, head_only: bool, idempotent: bool
    ) -> tuple[_Connection, _ResponseParser]:
        """Send the request and read up to the end of the response headers.

        A pooled connection may have been closed by the server while idle: a request whose
        send fails on one is sent again on a fresh connection (the server never got it
        whole). But when the connection breaks after the request was sent, the server may
        have applied it: only an idempotent request is sent again; anything else fails,
        and the caller must treat its outcome as unknown.
        """
        while True:
            connection = await self._connection_to(address)
            parser = _ResponseParser(self._limits, head_only)
            try:
                await self._send_and_read_head(connection, parser, data, idempotent)
            except _StaleConnection:
                await connection.aclose()
                continue
            except BaseException:
                await connection.aclose()
                raise
            return connection, parser

    async def _send_and_read_head(
        self, connection: _Connection, parser: _ResponseParser, data: bytes, idempotent: bool
    ) -> None:
        try:
            await connection.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            if connection.reused:
                raise _StaleConnection from error
            raise HttpProtocolError("the connection broke while sending the request") from error
        while not parser.headers_done:
            try:
                await _receive_into(connection, parser, self._limits)
            except HttpProtocolError:
                if connection.reused and not parser.started and idempotent:
                    raise _StaleConnection from None
                raise

    async def _connection_to(self, address: str) -> _Connection:
        if self._closed:
            raise HttpConnectError("the client is closed")
        idle = self._idle.get(address)
        if idle:
            return idle.pop()
        try:
            stream = await self._network.connect(address)
        except (NetworkError, OSError) as error:
            raise HttpConnectError(f"cannot connect to {address}: {error}") from error
        return _Connection(address, stream)

    async def _release(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.address, deque())
        if self._closed or len(idle) >= self._limits.idle_connections_per_address_max:
            await connection.aclose()
            return
        connection.reused = True
        idle.append(connection)


def _deadline(timeout: float | None) -> float:
    """The absolute deadline of a timeout in seconds (None: never)."""
    return math.inf if timeout is None else trio.current_time() + timeout


def _encode_request(
    method: str, target: str, address: str, headers: HeaderPairs, body: bytes
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\n", f"Host: {address}\r\n"]
    for name, value in headers:
        if name.lower() in ("host", "content-length", "transfer-encoding"):
            continue
        if "\r" in name + value or "\n" in name + value:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}\r\n")
    if body or method in BODY_METHODS:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode() + body
