"""The HTTP/1.1 server's whole test suite again, with an HTTP/2 handler given to it.

Sniffing for the HTTP/2 preface must change nothing for HTTP/1.1: pipelining, slow clients,
400/408/413/431 all behave as without it. Every test of test_http_server runs here with the
``serving`` helper building ``HttpServer(..., http2=...)``; a handler that is never reached.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest
import trio

import tests.net.http_helpers
from net.http import HttpServer
from net.http.server import HTTP2_PREFACE
from tests.net.test_http_server import *  # noqa: F403
from tests.net.test_http_server import Recorder


class UnreachedHttp2:
    """Records what reaches it; nothing should, but the preface of the test below."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def __call__(self, stream: trio.abc.Stream, received: bytes) -> None:
        self.received.append(received)


@pytest.fixture(autouse=True)
def with_http2(monkeypatch: pytest.MonkeyPatch) -> Iterator[UnreachedHttp2]:
    handler = UnreachedHttp2()
    monkeypatch.setattr(tests.net.http_helpers, "HttpServer", partial(HttpServer, http2=handler))
    yield handler
    assert handler.received == [], "an HTTP/1.1 request was taken for HTTP/2"


async def test_the_preface_does_reach_the_http2_handler(with_http2: UnreachedHttp2) -> None:
    async with tests.net.http_helpers.serving(Recorder()) as served:
        stream = await served.connect()
        await stream.send_all(HTTP2_PREFACE + b"\x00\x00")
        with trio.fail_after(5):
            assert await stream.receive_some(100) == b""
    assert with_http2.received == [HTTP2_PREFACE + b"\x00\x00"]
    with_http2.received.clear()
