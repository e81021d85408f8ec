"""troika's inspection endpoints on the client port: ``/troika/v1/hot`` and ``/troika/v1/usage``.

These are not etcd's (etcd has no such view): JSON over HTTP/1.1 beside the v2 API and the v3
gateway, under a path etcd never uses. Query parameters:

- ``/troika/v1/hot?prefix=P&depth=N&window=1m&limit=K``: the member's hot keys (depth 0) or
  prefixes at depth ``N`` that start with ``P``, over the window (``1m``, ``5m``, ``15m``), with
  their space-saving bounds (``count - error <= true <= count``), and a per-minute series;
- ``/troika/v1/usage?prefix=P&depth=N&limit=K``: storage use under ``P`` grouped at depth ``N``.
- ``/troika/v1/hot.html``: the hot answer drawn as a page (``net.inspect_page``).

``P`` is percent-encoded (any bytes). Errors are ``400`` with ``{"error": "..."}``. The
answers are made by an :class:`InspectBackend` (the member's recorder, ``actors.usage``).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from net.http.messages import Handler, Request, Response, StreamingResponse
from net.inspect_page import hot_page

HOT_PATH: Final = "/troika/v1/hot"
HOT_PAGE_PATH: Final = "/troika/v1/hot.html"
USAGE_PATH: Final = "/troika/v1/usage"
LIMIT_DEFAULT: Final = 20
JSON_TYPE: Final = ("Content-Type", "application/json")


class InspectError(Exception):
    """A query the endpoints refuse (400)."""


class InspectBackend(Protocol):
    """What answers the endpoints."""

    def hot(self, prefix: bytes, depth: int, window: str, limit: int) -> dict[str, object]:
        """The hot answer (raises ``InspectError``)."""
        ...


UsageAnswer = Callable[[bytes, int, int], Awaitable[dict[str, object]]]
"""(prefix, depth, limit) to the usage answer (raises ``InspectError``)."""


def parse_query(query: str) -> tuple[bytes, int, str, int]:
    """(prefix, depth, window, limit) from a query string.

    Raises:
        InspectError: a number that is not one.
    """
    fields = urllib.parse.parse_qs(query, keep_blank_values=True, encoding="latin-1")

    def first(name: str, default: str) -> str:
        values = fields.get(name)
        return values[0] if values else default

    prefix = first("prefix", "").encode("latin-1")  # percent-decoded bytes, one per char
    try:
        depth = int(first("depth", "1"))
        limit = int(first("limit", str(LIMIT_DEFAULT)))
    except ValueError:
        raise InspectError("depth and limit must be integers") from None
    return prefix, depth, first("window", "1m"), limit


def inspect_routes(backend: InspectBackend, usage: UsageAnswer, fallback: Handler) -> Handler:
    """A handler answering the inspection paths and sending every other path to
    ``fallback``."""

    async def handle(request: Request) -> Response | StreamingResponse:
        if not request.path.startswith("/troika/v1/"):
            return await fallback(request)
        try:
            prefix, depth, window, limit = parse_query(request.query)
            if request.path == HOT_PATH:
                return _json(backend.hot(prefix, depth, window, limit))
            if request.path == HOT_PAGE_PATH:
                page = hot_page([backend.hot(prefix, depth, window, limit)])
                return Response(200, (("Content-Type", "text/html; charset=utf-8"),), page)
            if request.path == USAGE_PATH:
                return _json(await usage(prefix, depth, limit))
        except InspectError as error:
            return _json({"error": str(error)}, 400)
        return _json({"error": f"no such path: {request.path}"}, 404)

    return handle


def _json(value: object, status: int = 200) -> Response:
    return Response(status, (JSON_TYPE,), json.dumps(value).encode() + b"\n")
