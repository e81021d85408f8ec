"""The values that cross the HTTP layer: headers, requests and responses.

Requests are parsed by the server and handed to an application handler;
responses are what the handler hands back. All of them are immutable values.
Header names and values are ``str`` decoded as Latin-1 (HTTP header bytes are
not UTF-8 by definition), so no byte is ever lost or rejected by decoding.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field

HeaderPairs = Iterable[tuple[str, str]]


class Headers:
    """An ordered, case-insensitive multi-dict of header fields.

    Iterating yields ``(name, value)`` pairs in arrival order with the names
    as sent; lookups ignore case.
    """

    __slots__ = ("_by_name", "_items")

    def __init__(self, items: HeaderPairs = ()) -> None:
        self._items: tuple[tuple[str, str], ...] = tuple(items)
        by_name: dict[str, list[str]] = {}
        for name, value in self._items:
            by_name.setdefault(name.lower(), []).append(value)
        self._by_name = by_name

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        values = self._by_name.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in arrival order."""
        return list(self._by_name.get(name.lower(), ()))

    def items(self) -> tuple[tuple[str, str], ...]:
        """All ``(name, value)`` pairs in arrival order."""
        return self._items

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed HTTP request.

    Attributes:
        method: upper-case method, e.g. ``"GET"``.
        target: the raw request target as sent (Latin-1 decoded, still percent-encoded).
        path: the path part of the target, still percent-encoded (``"/v2/keys/a%20b"``).
        query: the raw query string without the ``?`` (``""`` when absent).
        headers: the header fields.
        body: the whole body (de-chunked).
        http_version: ``"1.1"`` or ``"1.0"``.
        keep_alive: whether the client lets the connection stay open afterwards.
        peer_common_name: the CommonName of the client certificate a TLS connection verified
            (None: no TLS, or no verified certificate); with ``--client-cert-auth`` it names
            the v2 auth user of a request without credentials, as in etcd.
    """

    method: str
    target: str
    path: str
    query: str
    headers: Headers
    body: bytes = b""
    http_version: str = "1.1"
    keep_alive: bool = True
    peer_common_name: str | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response: the server adds ``Content-Length`` and ``Connection``."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class StreamingResponse:
    """A response whose body is produced over time.

    The server writes the status line and headers at once (so a long poll's
    client sees them before the first event), then each chunk from ``chunks``
    as one ``Transfer-Encoding: chunked`` chunk, flushed on its own. Empty
    chunks are skipped (an empty chunk would end the body). When the iterator
    ends, the body ends. If the client goes away first, the server stops
    iterating and calls ``on_close`` (and ``aclose()`` on an async generator),
    so watchers are released.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    chunks: AsyncIterator[bytes]
    on_close: Callable[[], Awaitable[None]] | None = field(default=None)


Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]
"""An application: one request in, one response out."""


REASONS: dict[int, str] = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    414: "Request URI Too Long",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}
"""Reason phrases, spelled as Go's ``net/http`` spells them (etcd's wire format)."""


def reason_phrase(status: int) -> str:
    """The reason phrase of ``status`` (``""`` for an unknown code)."""
    return REASONS.get(status, "")


def status_has_body(status: int, method: str) -> bool:
    """Whether a response with this status to this method carries a body."""
    return not (method == "HEAD" or status < 200 or status in (204, 304))


def plain_text(status: int, text: str, headers: HeaderPairs = ()) -> Response:
    """A ``text/plain`` response shaped like Go's ``http.Error``: the text plus a newline."""
    return Response(
        status,
        (
            *headers,
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-Content-Type-Options", "nosniff"),
        ),
        (text + "\n").encode(),
    )
