"""Plain HTTP against a member process, for the process tests: any method, any raw path and
query, headers as sent on the wire, no proxy, no redirects followed, watches read line by line.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

REQUEST_TIMEOUT_S = 15.0
FORM = "application/x-www-form-urlencoded"

T = TypeVar("T")


@dataclass(frozen=True)
class Exchange:
    """One request and its reply.

    Attributes:
        method / target: what was sent (target = path and query).
        status: the reply's status.
        headers: the reply's headers, names in lower case (a repeated header: the last).
        body: the reply's body (empty for HEAD).
        sent_at: wall-clock seconds when the request was sent (for expiration times).
    """

    method: str
    target: str
    status: int
    headers: dict[str, str]
    body: bytes
    sent_at: float

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    def header_int(self, name: str) -> int:
        """A header as an integer."""
        return int(self.headers[name.lower()])

    def __str__(self) -> str:
        return f"{self.method} {self.target} -> {self.status} {self.body[:300]!r}"


def _connection(url: str, timeout_s: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)


def _target(path: str, query: str | Mapping[str, str] | None) -> str:
    if not query:
        return path
    text = query if isinstance(query, str) else urlencode(query)
    return f"{path}?{text}"


def _encode_form(
    form: Mapping[str, str] | None, body: bytes | None, headers: Mapping[str, str] | None
) -> tuple[bytes | None, dict[str, str]]:
    sent_headers = dict(headers or {})
    if form is not None:
        sent_headers.setdefault("Content-Type", FORM)
        return urlencode(form).encode(), sent_headers
    return body, sent_headers


def send(
    url: str,
    method: str,
    path: str,
    *,
    query: str | Mapping[str, str] | None = None,
    form: Mapping[str, str] | None = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> Exchange:
    """Send one request to the member at ``url`` (``http://host:port``) and read the reply.

    ``path`` and a string ``query`` go on the wire as given; a mapping is urlencoded.
    ``form`` becomes an ``application/x-www-form-urlencoded`` body.
    """
    target = _target(path, query)
    data, sent_headers = _encode_form(form, body, headers)
    connection = _connection(url, timeout_s)
    try:
        sent_at = time.time()
        connection.request(method, target, body=data, headers=sent_headers)
        response = connection.getresponse()
        reply = response.read()
        names = {name.lower(): value for name, value in response.getheaders()}
        return Exchange(method, target, response.status, names, reply, sent_at)
    finally:
        connection.close()


class OpenWatch:
    """A long poll (``?wait=true``) whose headers have arrived; read events with ``line()``."""

    def __init__(self, url: str, path: str, query: str, timeout_s: float) -> None:
        self.target = _target(path, query)
        self._connection = _connection(url, timeout_s)
        self.sent_at = time.time()
        self._connection.request("GET", self.target)
        self._response = self._connection.getresponse()
        self.status = self._response.status
        self.headers = {name.lower(): value for name, value in self._response.getheaders()}

    def set_timeout(self, timeout_s: float) -> None:
        """How long ``line()`` waits."""
        sock = self._connection.sock
        assert sock is not None
        sock.settimeout(timeout_s)

    def line(self) -> bytes:
        """The next line of the body (one event), or b"" at its end.

        Raises:
            TimeoutError: nothing came within the timeout.
        """
        return self._response.readline()

    def rest(self) -> bytes:
        """The rest of the body."""
        return self._response.read()

    def close(self) -> None:
        """Leave (the server drops the watcher)."""
        self._connection.close()


def open_watch(
    url: str, path: str, query: str, *, timeout_s: float = REQUEST_TIMEOUT_S
) -> OpenWatch:
    """Start a watch and wait for its headers (a member flushes them before any event)."""
    return OpenWatch(url, path, query, timeout_s)


def put(url: str, key: str, value: str, **query: str) -> Exchange:
    """``PUT /v2/keys<key>`` with ``value`` in a form body (as etcdctl sends it)."""
    return send(url, "PUT", "/v2/keys" + key, query=query or None, form={"value": value})


def get(url: str, key: str, **query: str) -> Exchange:
    """``GET /v2/keys<key>``."""
    return send(url, "GET", "/v2/keys" + key, query=query or None)


def eventually(
    attempt: Callable[[], T], accept: Callable[[T], bool], *, timeout_s: float = 10.0
) -> T:
    """Call ``attempt`` until ``accept`` takes its result (connection errors count as a miss);
    the accepted result.

    Raises:
        AssertionError: not accepted in time (with the last result or error).
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            result = attempt()
        except OSError as error:
            last = error
        else:
            if accept(result):
                return result
            last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"not accepted within {timeout_s} s; last: {last}")
        time.sleep(0.05)
