"""The HTTP/1.1 server, serving the v2 API and the v3 JSON gateway (over fakes), against
random and mutated requests, pipelining, chunked bodies, slow and half-closed clients.

Properties, for every input: what the server sends parses as a sequence of HTTP/1.1
responses; nothing follows a response that says ``Connection: close``; the connection task
never raises and no handler fails (no "handler failed" 500); the server ends the connection
within its timeouts (virtual time), except while a streaming response (a watch) is open to a
client that keeps its side open.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httptools
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from actors.client_api import route_client_paths
from net.http import HttpServer, ServerLimits
from net.v2api import V2Api
from net.v3.gateway import JsonGateway
from net.v3.service import v3_methods
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.harness import ConnectionHandler, Conversation, LogRecords, converse, run_virtual
from tests.fuzz.mutations import mutated
from tests.net.test_v3_service import FakeV3Backend
from tests.net.v2_fake import FakeBackend

LIMITS = ServerLimits(
    request_header_bytes_max=4096,
    request_body_bytes_max=8192,
    header_timeout_seconds=10,
    body_timeout_seconds=20,
    idle_timeout_seconds=30,
    send_timeout_seconds=10,
    receive_bytes_max=1024,
)
BOUND_S = 200.0
"""Longer than any sum of the server's timeouts for one connection (virtual seconds)."""

FORM = "Content-Type: application/x-www-form-urlencoded"
REQUESTS = [
    b"GET /v2/keys/a HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /v2/keys/?recursive=true&sorted=true HTTP/1.1\r\nHost: t\r\n\r\n",
    f"PUT /v2/keys/a HTTP/1.1\r\nHost: t\r\n{FORM}\r\nContent-Length: 13\r\n\r\n"
    "value=1&ttl=5".encode(),
    f"POST /v2/keys/q?x=%zz HTTP/1.1\r\nHost: t\r\n{FORM}\r\nTransfer-Encoding: chunked\r\n\r\n"
    "7\r\nvalue=1\r\n0\r\n\r\n".encode(),
    b"DELETE /v2/keys/a?prevExist=false&recursive=1 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /v2/keys/a?wait=true&waitIndex=1 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /v2/members HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b'Content-Length: 32\r\n\r\n{"peerURLs":["http://10.0.0.1:2"]}',
    b"GET /v2/stats/self HTTP/1.0\r\n\r\n",
    b"HEAD /version HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"OPTIONS /health HTTP/1.1\r\nHost: t\r\n\r\n",
    b'POST /v3/kv/range HTTP/1.1\r\nHost: t\r\nContent-Length: 14\r\n\r\n{"key":"YQ=="}',
    b"POST /v3/kv/put HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 29\r\n\r\n"
    b'{"key":"YQ==","value":"Yg=="}',
    b"POST /v3beta/kv/txn HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\n"
    b'{"compare":[{"key":"YQ==","target":"MOD"}]}',
    b"POST /v3/maintenance/status HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
    b"GET /v2/../keys//a HTTP/1.1\r\nHost: t\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
]


@st.composite
def sessions(draw: st.DrawFn) -> tuple[list[bytes], bool, list[float]]:
    """A client: some requests (valid or mutated) back to back, cut into chunks sent with
    pauses, then a half-close or not."""
    requests = draw(st.lists(mutated(REQUESTS), min_size=1, max_size=4))
    data = b"".join(requests)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
    chunks = [data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    pauses = draw(st.lists(st.sampled_from([0.0, 0.0, 0.0, 5.0, 15.0, 40.0]), max_size=len(chunks)))
    return [chunk for chunk in chunks if chunk], draw(st.booleans()), pauses


class _Responses:
    """httptools callbacks: counts complete responses and notes their framing."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.complete: list[tuple[int, bool]] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self.in_message = False

    def on_message_begin(self) -> None:
        self.in_message = True
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value.lower()))

    def on_message_complete(self) -> None:
        self.in_message = False
        closes = (b"connection", b"close") in self.headers
        self.complete.append((self.parser.get_status_code(), closes))

    @property
    def chunked(self) -> bool:
        return (b"transfer-encoding", b"chunked") in self.headers


def check_responses(sent: bytes, conversation: Conversation) -> None:
    """The properties of the module docstring, on what the server sent."""
    received = conversation.received
    if b"HEAD" in sent.upper():
        # A reply to HEAD has a Content-Length and no body: only the first line can be read
        # without knowing which request each reply answers.
        assert not received or received.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), received[:80]
        return
    responses = _Responses()
    try:
        responses.parser.feed_data(received)
    except httptools.HttpParserUpgrade:
        raise AssertionError("the server sent an upgrade") from None
    statuses = [status for status, _ in responses.complete]
    assert all(100 <= status <= 599 for status in statuses), statuses
    for index, (_status, closes) in enumerate(responses.complete):
        if closes:
            assert index == len(responses.complete) - 1, "a response after Connection: close"
            assert not responses.in_message, "bytes after Connection: close"
    if responses.in_message:
        # Only a streaming (chunked) response may be cut off: a watch ended by the client
        # leaving, or still open.
        assert responses.chunked, received[-200:]
    if conversation.still_running:
        assert responses.in_message and responses.chunked, "the server hung"


@asynccontextmanager
async def client_port() -> AsyncIterator[tuple[ConnectionHandler, FakeBackend, FakeV3Backend]]:
    """The member's HTTP stack (v2 API and gateway) over fakes, as actors.client_api builds."""
    v2 = FakeBackend()
    v3 = FakeV3Backend()
    async with trio.open_nursery() as streams:
        gateway = JsonGateway(v3_methods(v3), streams)
        server = HttpServer(_NoNetwork(), route_client_paths(gateway, V2Api(v2), V2Api(v2)), LIMITS)  # type: ignore[arg-type]
        yield server.serve_stream, v2, v3
        streams.cancel_scope.cancel()


class _NoNetwork:
    async def serve(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("not listening in these tests")


def _serve_one(chunks: list[bytes], half_close: bool, pauses: list[float]) -> None:
    async def main() -> None:
        with LogRecords("net.http.server") as logs:
            async with client_port() as (serve, _, _):
                conversation = await converse(
                    serve, chunks, half_close=half_close, pauses_s=pauses, bound_s=BOUND_S
                )
        failures = [record for record in logs.records if record.levelno >= logging.ERROR]
        assert not failures, [record.getMessage() for record in failures]
        check_responses(b"".join(chunks), conversation)

    run_virtual(main)


@fuzz_settings(fast=40, ci=2500)
@given(sessions())
@example(([REQUESTS[0] + REQUESTS[2] + REQUESTS[10]], True, []))
@example(([REQUESTS[5]], False, []))  # a watch that stays open while the client does
@example(([REQUESTS[3][:60]], False, []))  # headers never finished: 408
@example(([b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: \xb2\r\n\r\n"], True, []))
@example(([b"GET /v2/keys/a HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\n\r\n"], True, []))
def test_the_client_port_answers_or_closes(session: tuple[list[bytes], bool, list[float]]) -> None:
    _serve_one(*session)


@fuzz_settings(fast=40, ci=2500)
@given(st.binary(max_size=300), st.booleans())
def test_the_client_port_survives_random_bytes(data: bytes, half_close: bool) -> None:
    _serve_one([data] if data else [], half_close, [])
