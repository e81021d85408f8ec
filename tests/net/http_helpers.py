"""Helpers for the HTTP tests: a served handler, and raw reads of responses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httptools
import trio

from net.http import Handler, HttpServer, ServerLimits
from tests.net.memory_network import MemoryNetwork


@dataclass
class Served:
    network: MemoryNetwork
    address: str
    server: HttpServer

    async def connect(self) -> trio.abc.Stream:
        return await self.network.connect(self.address)


@asynccontextmanager
async def serving(handler: Handler, limits: ServerLimits | None = None) -> AsyncIterator[Served]:
    """Serve ``handler`` on a MemoryNetwork for the duration of the block."""
    network = MemoryNetwork()
    server = HttpServer(network, handler, limits)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve, "server:0")
        try:
            yield Served(network, address, server)
        finally:
            nursery.cancel_scope.cancel()


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    chunks: list[bytes] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class _HeadersDone(Exception):
    """Stops the parser after the headers of a reply to HEAD."""


class _Collector:
    def __init__(self, head_only: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head_only = head_only
        self.done: list[RawResponse] = []
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()
        self._chunk = bytearray()
        self._chunks: list[bytes] = []

    def on_message_begin(self) -> None:
        self._headers, self._body, self._chunks = [], bytearray(), []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.head_only:
            self._finish()
            raise _HeadersDone

    def on_body(self, body: bytes) -> None:
        self._body += body
        self._chunk += body

    def on_chunk_complete(self) -> None:
        if self._chunk:
            self._chunks.append(bytes(self._chunk))
        self._chunk.clear()

    def on_message_complete(self) -> None:
        self._finish()

    def _finish(self) -> None:
        status = self.parser.get_status_code()
        self.done.append(RawResponse(status, self._headers, bytes(self._body), self._chunks))


async def read_responses(
    stream: trio.abc.Stream, count: int, *, head_only: bool = False
) -> list[RawResponse]:
    """Read exactly ``count`` responses (fewer if the server closes first; no bytes after them)."""
    collector = _Collector(head_only)
    while len(collector.done) < count:
        data = await stream.receive_some(65536)
        if not data:
            break
        try:
            collector.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            assert head_only
    return collector.done


async def read_until_eof(stream: trio.abc.Stream) -> bytes:
    """Everything the server sends until it closes."""
    received = bytearray()
    while True:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            break
        if not data:
            break
        received += data
    return bytes(received)


def parse_all(data: bytes) -> list[RawResponse]:
    """Every complete response in ``data``."""
    collector = _Collector(head_only=False)
    collector.parser.feed_data(data)
    return collector.done
