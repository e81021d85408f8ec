"""The machinery of the differential suite: run one request sequence against troika and etcd,
and compare what came back once the numbers that may differ are put on a common footing.

Indexes: each system's store index has its own history (etcd keeps its membership in the
same store), so a case starts with an anchor write and every index of the case is compared
as a delta from it (``B+3``): ``X-Etcd-Index``, ``createdIndex``, ``modifiedIndex``,
``index``, the number in an in-order key name, and the indexes inside a ``cause``. 0 stays 0
(parameter errors); an index older than the anchor becomes ``old``.

Times: ``expiration`` must be RFC 3339 UTC and is compared as seconds from the request (2 s
apart at most); ``ttl`` may differ by 1.

Headers: status, ``Content-Type``, ``X-Etcd-Index`` (as a delta), the presence of
``X-Raft-Index`` and ``X-Raft-Term``, the presence and format of ``X-Etcd-Cluster-Id`` (lower
case hex), the CORS headers, ``Allow`` and ``Location``. Bodies: JSON compared as data (and
whether it ends in a newline), anything else byte for byte.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from tests.process.v2http import Exchange, OpenWatch, open_watch, send

EXPIRATION_TOLERANCE_S = 2.0
TTL_TOLERANCE_S = 1
WATCH_READ_TIMEOUT_S = 4.0
"""Long enough for a TTL of 1 s to expire (etcd takes up to about 1.5 s)."""
BULK_WRITERS = 16

INDEX_FIELDS = frozenset({"createdIndex", "modifiedIndex", "index"})
IN_ORDER_KEY = re.compile(r"/(\d{20})(?=/|$|\))")
COMPARE_CAUSE = re.compile(r"^\[(.*) != (.*)\]$")
HISTORY_CAUSE = re.compile(r"^(the requested history has been cleared )\[(\d+)/(\d+)\]$")
EXPIRATION = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
CLUSTER_ID = re.compile(r"^[1-9a-f][0-9a-f]{0,15}$")
TEMPLATE_INDEX = re.compile(r"\{idx([+-]\d+)\}")
COMPARED_HEADERS = (
    "content-type",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "allow",
    "location",
)


# ---------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Req:
    """One request, compared unless ``check`` is False.

    ``path``, ``query`` and form values may hold ``{p}`` (the case's key prefix, e.g.
    ``/diff/row-05``) and ``{idx+N}`` (the anchor index plus N, per system).
    """

    method: str
    path: str
    query: str = ""
    form: Mapping[str, str] | None = None
    check: bool = True


@dataclass(frozen=True)
class Watch:
    """Open a long poll; compare its status and headers (they come before any event)."""

    name: str
    path: str
    query: str


@dataclass(frozen=True)
class Read:
    """Read the next event line of an open watch and compare it."""

    name: str


@dataclass(frozen=True)
class Writes:
    """``count`` writes under ``path`` from concurrent clients (setup; each must succeed)."""

    path: str
    count: int


Step = Req | Watch | Read | Writes


@dataclass(frozen=True)
class Case:
    """A named request sequence (named after the ETCD_API.md row it checks)."""

    name: str
    steps: tuple[Step, ...]
    xfail: str | None = None

    @property
    def slug(self) -> str:
        """The case's key prefix name, unique per case."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")[:80]


def keys(key: str) -> str:
    """A key path under the case prefix: "" is the prefix itself."""
    return "/v2/keys{p}" + (f"/{key}" if key else "")


def PUT(key: str, query: str = "", **form: str) -> Req:
    """PUT a key under the prefix, the form (if any) in the body as etcdctl sends it."""
    return Req("PUT", keys(key), query, form or None)


def POST(key: str, query: str = "", **form: str) -> Req:
    """POST (an in-order key) under the prefix."""
    return Req("POST", keys(key), query, form or None)


def GET(key: str, query: str = "") -> Req:
    """GET a key under the prefix."""
    return Req("GET", keys(key), query)


def DELETE(key: str, query: str = "") -> Req:
    """DELETE a key under the prefix."""
    return Req("DELETE", keys(key), query)


# ---------------------------------------------------------------------------- normalizing


@dataclass
class Normalizer:
    """One system's view of a case: its anchor index and key prefix."""

    base: int
    prefix: str

    def index(self, number: int) -> int | str:
        if number == 0:
            return 0
        if number < self.base:
            return "old"
        return f"B+{number - self.base}"

    def fill(self, text: str) -> str:
        """Resolve ``{p}`` and ``{idx+N}``."""
        text = text.replace("{p}", self.prefix)
        return TEMPLATE_INDEX.sub(lambda match: str(self.base + int(match.group(1))), text)

    def key(self, text: str) -> str:
        return IN_ORDER_KEY.sub(lambda match: f"/<{self.index(int(match.group(1)))}>", text)

    def cause(self, text: str) -> str:
        def side(value: str) -> str:
            return str(self.index(int(value))) if value.isdigit() else value

        compare = COMPARE_CAUSE.match(text)
        if compare:
            return f"[{side(compare.group(1))} != {side(compare.group(2))}]"
        history = HISTORY_CAUSE.match(text)
        if history:
            oldest, requested = side(history.group(2)), side(history.group(3))
            return f"{history.group(1)}[{oldest}/{requested}]"
        return self.key(text)

    def json(self, value: Any, sent_at: float) -> Any:
        """Indexes as deltas, in-order keys and causes mapped, expiration as seconds from
        ``sent_at`` (or a note on its bad format)."""
        if isinstance(value, list):
            return [self.json(item, sent_at) for item in value]
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for name, item in value.items():
            if name in INDEX_FIELDS and isinstance(item, int):
                out[name] = self.index(item)
            elif name == "key" and isinstance(item, str):
                out[name] = self.key(item)
            elif name == "cause" and isinstance(item, str):
                out[name] = self.cause(item)
            elif name == "expiration" and isinstance(item, str):
                out[name] = expiration_offset(item, sent_at)
            else:
                out[name] = self.json(item, sent_at)
        return out

    def headers(self, status: int, headers: Mapping[str, str]) -> dict[str, Any]:
        shown: dict[str, Any] = {"status": status}
        for name in COMPARED_HEADERS:
            if name in headers:
                shown[name] = headers[name]
        if "x-etcd-index" in headers:
            shown["x-etcd-index"] = self.index(int(headers["x-etcd-index"]))
        for name in ("x-raft-index", "x-raft-term"):
            if name in headers:
                shown[name] = "present" if headers[name].isdigit() else headers[name]
        if "x-etcd-cluster-id" in headers:
            cluster_id = headers["x-etcd-cluster-id"]
            shown["x-etcd-cluster-id"] = "hex" if CLUSTER_ID.match(cluster_id) else cluster_id
        return shown

    def body(self, headers: Mapping[str, str], body: bytes, sent_at: float) -> Any:
        if headers.get("content-type", "").startswith("application/json") and body:
            try:
                document = json.loads(body)
            except ValueError:
                return {"unparsable JSON": body.decode(errors="replace")}
            return {"json": self.json(document, sent_at), "newline": body.endswith(b"\n")}
        return body.decode(errors="replace")


class AnyIndex(Normalizer):
    """For replies outside a case: an index is compared as present (non-zero) or 0."""

    def index(self, number: int) -> int | str:
        return 0 if number == 0 else "index"


def expiration_offset(text: str, sent_at: float) -> Any:
    """An RFC 3339 expiration as whole seconds after ``sent_at``; the text if malformed."""
    if not EXPIRATION.match(text):
        return f"malformed expiration {text!r}"
    seconds, _, fraction = text[:-1].partition(".")
    moment = datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    at = moment.timestamp() + (float("0." + fraction) if fraction else 0.0)
    return ExpiresIn(at - sent_at)


@dataclass(frozen=True)
class ExpiresIn:
    """An expiration, as seconds after the request that saw it."""

    seconds: float

    def __repr__(self) -> str:
        return f"<expires in {self.seconds:.1f} s>"


# ---------------------------------------------------------------------------- comparing


def differences(troika: Any, etcd: Any, where: str = "") -> list[str]:
    """Where two normalized values differ (ttl within 1 s, expirations within 2 s)."""
    if isinstance(troika, dict) and isinstance(etcd, dict):
        found: list[str] = []
        if list(troika) != list(etcd) and set(troika) != set(etcd):
            only_troika = sorted(set(troika) - set(etcd))
            only_etcd = sorted(set(etcd) - set(troika))
            found.append(
                f"{where or '.'}: fields only in troika {only_troika}, only in etcd {only_etcd}"
            )
        for name in troika.keys() & etcd.keys():
            if name == "ttl" and isinstance(troika[name], int) and isinstance(etcd[name], int):
                if abs(troika[name] - etcd[name]) > TTL_TOLERANCE_S:
                    found.append(f"{where}.ttl: troika {troika[name]} != etcd {etcd[name]}")
                continue
            found.extend(differences(troika[name], etcd[name], f"{where}.{name}"))
        return found
    if isinstance(troika, list) and isinstance(etcd, list):
        if len(troika) != len(etcd):
            return [f"{where}: troika has {len(troika)} items, etcd {len(etcd)}: {troika} / {etcd}"]
        found = []
        for number, (left, right) in enumerate(zip(troika, etcd, strict=True)):
            found.extend(differences(left, right, f"{where}[{number}]"))
        return found
    if isinstance(troika, ExpiresIn) and isinstance(etcd, ExpiresIn):
        if abs(troika.seconds - etcd.seconds) > EXPIRATION_TOLERANCE_S:
            return [f"{where}: troika {troika} != etcd {etcd}"]
        return []
    if troika != etcd:
        return [f"{where}: troika {troika!r} != etcd {etcd!r}"]
    return []


# ---------------------------------------------------------------------------- running


@dataclass
class Side:
    """One system during a case."""

    name: str
    url: str
    normalizer: Normalizer
    watches: dict[str, OpenWatch] = field(default_factory=dict)

    def close(self) -> None:
        for watch in self.watches.values():
            watch.close()
        self.watches.clear()


Observation = tuple[dict[str, Any], Any]
"""Normalized (headers, body) of one step."""


def anchor(url: str, slug: str) -> int:
    """Write the case's anchor key; its index is the case's base."""
    reply = send(url, "PUT", f"/v2/keys/_anchors/{slug}", form={"value": "anchor"})
    assert reply.status in (200, 201), reply
    return reply.header_int("X-Etcd-Index")


def observe_exchange(side: Side, exchange: Exchange) -> Observation:
    normalizer = side.normalizer
    headers = normalizer.headers(exchange.status, exchange.headers)
    return headers, normalizer.body(exchange.headers, exchange.body, exchange.sent_at)


def perform(side: Side, step: Step) -> Observation | None:
    """Do ``step`` on one system; what to compare (None for setup steps)."""
    fill = side.normalizer.fill
    match step:
        case Req(method, path, query, form, check):
            exchange = send(
                side.url,
                method,
                fill(path),
                query=fill(query) or None,
                form=None if form is None else {name: fill(v) for name, v in form.items()},
            )
            return observe_exchange(side, exchange) if check else None
        case Watch(name, path, query):
            watch = open_watch(side.url, fill(path), fill(query))
            side.watches[name] = watch
            return side.normalizer.headers(watch.status, watch.headers), None
        case Read(name):
            watch = side.watches[name]
            watch.set_timeout(WATCH_READ_TIMEOUT_S)
            try:
                line = watch.line()
            except TimeoutError:
                return {"read": f"no event within {WATCH_READ_TIMEOUT_S} s"}, None
            if not line:
                return {"read": "end of the watch"}, None
            return {"read": "event"}, {
                "json": side.normalizer.json(json.loads(line), time.time()),
                "newline": line.endswith(b"\n"),
            }
        case Writes(path, count):
            bulk_writes(side.url, fill(path), count)
            return None


def bulk_writes(url: str, path: str, count: int) -> None:
    """``count`` PUTs to ``path/<n>`` from concurrent clients (keep-alive connections)."""

    def writer(first: int) -> list[int]:
        parts = urlsplit(url)
        assert parts.hostname is not None
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        statuses: list[int] = []
        try:
            for number in range(first, count, BULK_WRITERS):
                body = urlencode({"value": str(number)})
                headers = {"Content-Type": "application/x-www-form-urlencoded"}
                connection.request("PUT", f"/v2/keys{path}/{number % 50}", body, headers)
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
        finally:
            connection.close()
        return statuses

    with ThreadPoolExecutor(BULK_WRITERS) as pool:
        statuses = [status for part in pool.map(writer, range(BULK_WRITERS)) for status in part]
    assert len(statuses) == count
    assert set(statuses) <= {200, 201}, sorted(set(statuses))


def run_case(case: Case, troika_url: str, etcd_url: str) -> list[str]:
    """Run ``case`` on both systems step by step; every difference found, described."""
    prefix = f"/diff/{case.slug}"
    sides = [
        Side("troika", troika_url, Normalizer(anchor(troika_url, case.slug), prefix)),
        Side("etcd", etcd_url, Normalizer(anchor(etcd_url, case.slug), prefix)),
    ]
    found: list[str] = []
    try:
        for number, step in enumerate(case.steps, start=1):
            troika, etcd = (perform(side, step) for side in sides)
            if troika is None or etcd is None:
                continue
            for part, left, right in (
                ("headers", troika[0], etcd[0]),
                ("body", troika[1], etcd[1]),
            ):
                for difference in differences(left, right):
                    found.append(f"step {number} {describe(step)} {part}{difference}")
    finally:
        for side in sides:
            side.close()
            send(side.url, "DELETE", f"/v2/keys{prefix}", query="recursive=true")
    return found


def describe(step: Step) -> str:
    match step:
        case Req(method, path, query, form, _):
            text = f"{method} {path}" + (f"?{query}" if query else "")
            return text + (f" form={dict(form)}" if form else "")
        case Watch(name, path, query):
            return f"watch {name}: GET {path}?{query}"
        case Read(name):
            return f"read watch {name}"
        case Writes(path, count):
            return f"{count} writes under {path}"


def compare_exchanges(
    troika: Exchange, etcd: Exchange, normalize: Callable[[Any], Any] = lambda value: value
) -> list[str]:
    """Compare two replies outside a case (no index anchor): headers and body as data."""
    plain = AnyIndex(base=1, prefix="")
    found: list[str] = []
    for part, left, right in (
        (
            "headers",
            plain.headers(troika.status, troika.headers),
            plain.headers(etcd.status, etcd.headers),
        ),
        (
            "body",
            normalize(plain.body(troika.headers, troika.body, troika.sent_at)),
            normalize(plain.body(etcd.headers, etcd.body, etcd.sent_at)),
        ),
    ):
        found.extend(f"{part}{difference}" for difference in differences(left, right))
    return found
