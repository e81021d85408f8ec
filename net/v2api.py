"""etcd 3.4's v2 HTTP API (and ``/version``, ``/health``) on top of a ``V2Backend``.

``V2Api`` is an HTTP handler (``net.http.Handler``) for a member's client port. It does what
etcd's ``v2http``, ``etcdhttp`` and Go's ``ServeMux`` do, byte for byte where clients can
tell (checked against etcd 3.4.23 on loopback):

- every answer carries etcd's CORS headers; ``OPTIONS`` on any path is ``200`` and empty;
- a path that is not clean (``//``, ``.``, ``..``) is redirected (``301``) to its clean form;
- unknown paths get Go's ``404 page not found``; a method a route does not take gets ``405``
  with ``Allow``;
- ``/v2/keys``: parameters from the query and, for PUT and POST, from an
  ``application/x-www-form-urlencoded`` body (body values first, as Go's ``ParseForm``
  merges them; a DELETE body is ignored, as in Go), validated in etcd's order with etcd's
  error codes, then proposed (PUT, POST, DELETE), read (GET, HEAD; ``quorum=true`` makes a
  GET linearizable) or watched (``wait=true``: headers first, then the event; with
  ``stream=true`` one event per chunk until the client leaves);
- ``/v2/members``, ``/v2/members/leader``, ``/v2/machines``, ``/v2/stats/{self,leader,store}``,
  ``/version`` and ``/health``;
- ``/v2/auth/enable``, ``/v2/auth/users[/<name>]`` and ``/v2/auth/roles[/<name>]`` (etcd 3.4's
  v2 auth, ``net.v2auth_http``), whose checks guard ``/v2/keys`` (the user's or the guest
  role's key patterns; refused: error 110) and writes to ``/v2/members`` (the root role).

Where we differ from etcd, on purpose: a path, query or form that is not UTF-8 after
unescaping is refused (400; etcd keeps the bytes and renders them as U+FFFD), with the shape
of etcd's form errors (errorCode 210, index 0) under ``/v2/keys`` and as plain text elsewhere.
The JSON error text of a malformed ``/v2/members`` body is Python's, not Go's. ``/metrics``
is not served here (404).

The backend is the member: ``V2Backend`` below is all this module needs of it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from net.backend import (
    BackendError,
    MemberIdExists,
    MemberInfo,
    MemberNotFound,
    MemberRemoved,
    PeerUrlExists,
)
from net.gocompat import (
    FormError,
    encode_json,
    escape_path,
    html_escape,
    mux_clean_path,
    parse_bool,
    parse_query,
    parse_uint64,
    unescape_path,
)
from net.http.messages import Request, Response, StreamingResponse, plain_text, reason_phrase
from net.v2auth import Passwords
from net.v2auth_http import AUTH_PREFIX, V2AuthApi, V2AuthStore, key_refusal
from net.v2json import error_json, error_status, event_json
from storage.v2store import clean_path
from storage.v2store.model import INT64_MAX, NS_PER_SECOND, Action, Event, V2Error, V2Request
from storage.v2store.watch import Watcher

logger = logging.getLogger(__name__)

CORS_HEADERS: tuple[tuple[str, str], ...] = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
    ("Access-Control-Allow-Headers", "accept, content-type, authorization"),
)
JSON = ("Content-Type", "application/json")
TEXT = ("Content-Type", "text/plain; charset=utf-8")

KEYS_PREFIX = "/v2/keys"
MEMBERS_PREFIX = "/v2/members"
KEYS_METHODS = ("HEAD", "GET", "PUT", "POST", "DELETE")
MEMBERS_METHODS = ("GET", "POST", "DELETE", "PUT")
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE"})
FORM_METHODS = frozenset({"PUT", "POST", "PATCH"})
NO_VALUE_ACTIONS = frozenset({Action.SET, Action.COMPARE_AND_SWAP, Action.CREATE, Action.UPDATE})


class V2Backend(Protocol):
    """The member as the v2 API sees it.

    Reads of state (``raft_index``, ``members``, ...) are synchronous and local; the calls
    that go through Raft are async and may raise ``BackendTimeout`` or ``NoLeader``
    (``net.backend``), which the API answers as etcd answers its own timeouts.
    """

    @property
    def cluster_id(self) -> int:
        """The cluster id (``X-Etcd-Cluster-Id``, in hex)."""
        ...

    @property
    def member_id(self) -> int:
        """This member's id."""
        ...

    def now_ns(self) -> int:
        """Wall-clock nanoseconds since the epoch from the member's injected clock: a TTL
        becomes ``now_ns() + ttl``, and it is the ``time_ns`` of every request."""
        ...

    async def propose(self, request: V2Request) -> Event:
        """Put a PUT, POST or DELETE through Raft and return its event once applied here.

        Raises:
            V2Error: the store refused it (with the store index).
            BackendError: not done (``BackendTimeout``, ``NoLeader``).
        """
        ...

    async def read(self, request: V2Request) -> Event:
        """A GET (local, serializable) or a QGET (linearizable: ReadIndex, then local).

        Raises:
            V2Error: 100 and friends, with the store index.
            BackendError: a QGET could not be confirmed in time.
        """
        ...

    def watch(self, path: str, recursive: bool, stream: bool, since_index: int) -> Watcher:
        """Start a watch on the local store (``V2Store.watch``); ``since_index`` 0 is "next".

        Raises:
            V2Error: 401 when ``since_index`` is older than the event history.
        """
        ...

    def raft_index(self) -> int:
        """The committed Raft index (``X-Raft-Index``)."""
        ...

    def store_index(self) -> int:
        """The local v2 store's index (``X-Etcd-Index``): every v2 write raises it, so a
        local read stays true while it is unchanged."""
        ...

    def raft_term(self) -> int:
        """The current Raft term (``X-Raft-Term``)."""
        ...

    def members(self) -> list[MemberInfo]:
        """Every member, learners included, sorted by id."""
        ...

    def leader(self) -> MemberInfo | None:
        """The leader this member knows of, if any."""
        ...

    async def add_member(self, peer_urls: tuple[str, ...], is_learner: bool = False) -> MemberInfo:
        """Add a member (its id chosen by the backend, its name empty, no client URLs yet).

        Raises:
            PeerUrlExists, MemberIdExists: refused.
            BackendError: not done.
        """
        ...

    async def remove_member(self, member_id: int) -> None:
        """Remove a member.

        Raises:
            MemberNotFound, MemberRemoved: no such member (now).
            BackendError: not done.
        """
        ...

    async def update_member(self, member_id: int, peer_urls: tuple[str, ...]) -> None:
        """Change a member's peer URLs.

        Raises:
            MemberNotFound, PeerUrlExists: refused.
            BackendError: not done.
        """
        ...

    def stats_self(self) -> dict[str, Any]:
        """``/v2/stats/self``: name, id (hex), state, startTime, leaderInfo{leader, ...}, ..."""
        ...

    def stats_leader(self) -> dict[str, Any] | None:
        """``/v2/stats/leader`` on the leader; None elsewhere (then 403)."""
        ...

    def stats_store(self) -> dict[str, Any]:
        """``/v2/stats/store`` (``V2Store.stats_json()``)."""
        ...

    async def health(self, excluded_alarms: frozenset[str] = frozenset()) -> bool:
        """Whether ``/health`` says true: no alarm (but those named in ``excluded_alarms``,
        e.g. "NOSPACE"), a leader, a linearizable read in time."""
        ...

    def version(self) -> tuple[str, str]:
        """(server version, cluster version), e.g. ("3.4.23", "3.4.0")."""
        ...


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """A parsed ``/v2/keys`` request: the store request and the HTTP-only options."""

    request: V2Request
    wait: bool = False
    wait_index: int = 0
    stream: bool = False
    quorum: bool = False
    no_value_on_success: bool = False


def _invalid(code: int, cause: str) -> V2Error:
    return V2Error(code, cause, 0)


def parse_key_request(method: str, key: str, form: dict[str, list[str]], now_ns: int) -> KeyRequest:
    """Validate a keys request exactly as etcd's ``parseKeyRequest`` does, in its order.

    Args:
        method: the HTTP method (HEAD, GET, PUT, POST or DELETE).
        key: the key path (after ``/v2/keys``), decoded.
        form: the merged form (``request_form``); a parameter's first value counts.
        now_ns: the member's wall clock, for ``ttl`` and ``time_ns``.

    Raises:
        V2Error: a parameter error (codes 201-212, index 0).
    """

    def first(name: str) -> str | None:
        values = form.get(name)
        return values[0] if values else None

    def uint(name: str, code: int, cause: str) -> int:
        text = first(name)
        if text is None:
            return 0
        try:
            return parse_uint64(text)
        except ValueError:
            raise _invalid(code, cause) from None

    def flag(name: str, cause: str | None = None) -> bool:
        text = first(name)
        if text is None:
            return False
        try:
            return parse_bool(text)
        except ValueError:
            raise _invalid(209, cause or f'invalid value for "{name}"') from None

    prev_index = uint("prevIndex", 203, 'invalid value for "prevIndex"')
    wait_index = uint("waitIndex", 203, 'invalid value for "waitIndex"')
    recursive = flag("recursive")
    sort = flag("sorted")
    wait = flag("wait")
    dir = flag("dir")
    quorum = flag("quorum")
    stream = flag("stream")
    if wait and method != "GET":
        raise _invalid(209, '"wait" can only be used with GET requests')
    prev_value = first("prevValue")
    if prev_value == "":
        raise _invalid(201, '"prevValue" cannot be empty')
    no_value_on_success = flag("noValueOnSuccess")
    ttl: int | None = None
    if first("ttl"):
        ttl = uint("ttl", 202, 'invalid value for "ttl"')
    prev_exist = flag("prevExist", "invalid value for prevExist") if "prevExist" in form else None
    refresh = flag("refresh", "invalid value for refresh") if "refresh" in form else False
    value = first("value") or ""
    if refresh:
        if value != "":
            raise _invalid(211, "A value was provided on a refresh")
        if ttl is None:
            raise _invalid(212, "No TTL value set")
    expiration_ns = 0
    if ttl is not None:
        expiration_ns = min(now_ns + ttl * NS_PER_SECOND, INT64_MAX)
    if method == "GET" and quorum:
        store_method = "QGET"
    elif method == "HEAD":
        store_method = "GET"
    else:
        store_method = method
    request = V2Request(
        method=store_method,
        path=key,
        value=value,
        dir=dir,
        prev_value=prev_value or "",
        prev_index=prev_index,
        prev_exist=prev_exist,
        expiration_ns=expiration_ns,
        refresh=refresh,
        recursive=recursive,
        sorted=sort,
        time_ns=now_ns,
    )
    return KeyRequest(request, wait, wait_index, stream, quorum, no_value_on_success)


def request_form(request: Request) -> dict[str, list[str]]:
    """Go's ``Request.ParseForm``: a PUT, POST or PATCH form body first, then the query.

    Raises:
        FormError: the body or the query is malformed (Go's message), or not UTF-8.
    """
    form: dict[str, list[str]] = {}
    if request.method in FORM_METHODS and request.body:
        media_type = (request.headers.get("content-type") or "").split(";", 1)[0]
        if media_type.strip().lower() == "application/x-www-form-urlencoded":
            parse_query(request.body.decode("latin-1"), form)
    if request.query:
        parse_query(request.query, form)
    return form


def parse_peer_urls(value: object) -> tuple[str, ...]:
    """The ``peerURLs`` of a member request, validated and sorted as etcd's
    ``types.NewURLs`` does.

    Raises:
        ValueError: etcd's message for the first bad URL (or for none at all).
    """
    if not isinstance(value, dict):
        raise ValueError("json: cannot unmarshal non-object into a member request")
    urls = value.get("peerURLs")
    if urls is None:
        urls = []
    if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
        raise ValueError("json: cannot unmarshal peerURLs into Go value of type []string")
    if not urls:
        raise ValueError("no valid URLs given")
    checked: list[str] = []
    for text in urls:
        url = text.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "unix", "unixs"):
            raise ValueError(f"URL scheme must be http, https, unix, or unixs: {url}")
        host, colon, port = parts.netloc.rpartition(":")
        if not colon or not host or "/" in port:
            raise ValueError(f'URL address does not have the form "host:port": {url}')
        if parts.path:
            raise ValueError(f"URL must not contain a path: {url}")
        checked.append(url)
    return tuple(sorted(checked))


def member_json(member: MemberInfo) -> dict[str, Any]:
    """A member as ``/v2/members`` shows it: hex id, no learner flag."""
    return {
        "id": f"{member.id:x}",
        "name": member.name,
        "peerURLs": list(member.peer_urls),
        "clientURLs": list(member.client_urls),
    }


def _message(status: int, message: str, *headers: tuple[str, str]) -> Response:
    """etcd's ``httptypes.HTTPError``: ``{"message": ...}`` without a trailing newline."""
    return Response(status, (*headers, JSON), encode_json({"message": message}))


def _not_allowed(allow: str) -> Response:
    return plain_text(405, "Method Not Allowed", (("Allow", allow),))


def _with_cors(response: Response | StreamingResponse) -> Response | StreamingResponse:
    headers = (*CORS_HEADERS, *response.headers)
    if type(response) is Response:  # made directly: a third of dataclasses.replace's cost
        return Response(response.status, headers, response.body)
    return dataclasses.replace(response, headers=headers)


class NoPasswords:
    """``Passwords`` for an API built without them (tests, ``/health`` alone): creating a
    user fails (500) and no password matches."""

    async def hash(self, password: str) -> str:
        raise BackendError("this API has no password hasher")

    async def check(self, hashed: str, password: str) -> bool:
        return False


class V2Api:
    """The v2 client API of one member.

    Args:
        backend: the member.
        passwords: bcrypt for v2 auth (the member's seeded salts and hasher).
        client_cert_auth: whether ``--client-cert-auth`` is on (then a client certificate's
            CommonName names the v2 auth user of a request without credentials).
    """

    def __init__(
        self,
        backend: V2Backend,
        passwords: Passwords | None = None,
        client_cert_auth: Callable[[], bool] = lambda: False,
    ) -> None:
        self._backend = backend
        store = V2AuthStore(backend, passwords or NoPasswords())
        self.auth = V2AuthApi(store, self._cluster_header, client_cert_auth)

    async def __call__(self, request: Request) -> Response | StreamingResponse:
        """Answer any request on the client port (unknown paths get 404)."""
        response = await self.route(request)
        if response is None:
            response = plain_text(404, "404 page not found")
        return _with_cors(response)

    async def route(self, request: Request) -> Response | StreamingResponse | None:
        """Answer a request this API serves, without CORS headers; None for other paths.

        Another API on the same port (the v3 gateway) can try its own routes when this
        returns None.
        """
        if request.method == "OPTIONS":
            return Response(200)
        try:
            path = unescape_path(request.path)
        except FormError as error:
            return self._bad_path(request, error)
        clean = mux_clean_path(path)
        if clean != path and request.method != "CONNECT":
            return _redirect(request, clean)
        if path == KEYS_PREFIX or path.startswith(KEYS_PREFIX + "/"):
            return await self._keys(request, path)
        if path == MEMBERS_PREFIX or path.startswith(MEMBERS_PREFIX + "/"):
            return await self._members(request, path)
        if path.startswith(AUTH_PREFIX + "/"):
            return await self.auth.route(request, path)
        match path:
            case "/v2/machines":
                return self._machines(request)
            case "/v2/stats/self" | "/v2/stats/leader" | "/v2/stats/store":
                return self._stats(request, path)
            case "/version":
                return self._version(request)
            case "/health":
                return await self._health(request)
        return None

    def _cluster_header(self) -> tuple[str, str]:
        return ("X-Etcd-Cluster-Id", f"{self._backend.cluster_id:x}")

    def _bad_path(self, request: Request, error: FormError) -> Response:
        if request.path.startswith(KEYS_PREFIX) and "UTF-8" in str(error):
            return _key_error(V2Error(210, str(error), 0), self._cluster_header())
        return plain_text(400, f"400 Bad Request: {error}")

    # ---------------------------------------------------------------- /v2/keys

    async def _keys(self, request: Request, path: str) -> Response | StreamingResponse:
        if request.method not in KEYS_METHODS:
            return _not_allowed(",".join(KEYS_METHODS))
        cluster = self._cluster_header()
        backend = self._backend
        try:
            form = request_form(request)
        except FormError as error:
            return _key_error(V2Error(210, str(error), 0), cluster)
        key = clean_path(path[len(KEYS_PREFIX) :])
        try:
            parsed = parse_key_request(request.method, key, form, backend.now_ns())
        except V2Error as error:
            return _key_error(error, cluster)
        if not await self.auth.key_allowed(
            request, path[len(KEYS_PREFIX) :], parsed.request.recursive
        ):
            return key_refusal(cluster)
        try:
            if parsed.wait and not parsed.quorum:
                return self._watch(parsed, cluster)
            if parsed.request.method in WRITE_METHODS:
                event = await backend.propose(parsed.request)
            else:
                event = await backend.read(parsed.request)
        except V2Error as error:
            return _key_error(error, cluster)
        except BackendError as error:
            logger.info("v2 %s %s failed: %s", request.method, key, error)
            return _key_error(V2Error(300, str(error), 0), cluster)
        return self._event_response(event, parsed.no_value_on_success, cluster)

    def _event_response(
        self, event: Event, no_value_on_success: bool, cluster: tuple[str, str]
    ) -> Response:
        if no_value_on_success and event.action in NO_VALUE_ACTIONS:
            body: dict[str, Any] = {"action": event.action.value}
        else:
            body = event_json(event)
        headers = (
            JSON,
            cluster,
            ("X-Etcd-Index", str(event.etcd_index)),
            ("X-Raft-Index", str(self._backend.raft_index())),
            ("X-Raft-Term", str(self._backend.raft_term())),
        )
        status = 201 if event.created() else 200
        return Response(status, headers, encode_json(body, newline=True))

    def _watch(self, parsed: KeyRequest, cluster: tuple[str, str]) -> StreamingResponse:
        request = parsed.request
        watcher = self._backend.watch(
            request.path, request.recursive, parsed.stream, parsed.wait_index
        )
        headers = (
            JSON,
            cluster,
            ("X-Etcd-Index", str(watcher.start_index)),
            ("X-Raft-Index", str(self._backend.raft_index())),
            ("X-Raft-Term", str(self._backend.raft_term())),
        )

        async def release() -> None:
            watcher.remove()

        return StreamingResponse(200, headers, _watch_events(watcher, parsed.stream), release)

    # ---------------------------------------------------------------- /v2/members

    async def _members(self, request: Request, path: str) -> Response:
        if request.method not in MEMBERS_METHODS:
            return _not_allowed(",".join(MEMBERS_METHODS))
        if not await self.auth.write_root_allowed(request):
            return _message(401, "Insufficient credentials")
        cluster = self._cluster_header()
        rest = path[len(MEMBERS_PREFIX) :].removeprefix("/")
        match request.method:
            case "GET":
                return self._members_get(rest, cluster)
            case "POST":
                return await self._members_add(request, cluster)
            case "DELETE":
                return await self._members_remove(rest, cluster)
            case _:
                return await self._members_update(request, rest, cluster)

    def _members_get(self, rest: str, cluster: tuple[str, str]) -> Response:
        if rest == "":
            members = sorted(self._backend.members(), key=lambda member: member.id)
            body = {"members": [member_json(member) for member in members]}
            return Response(200, (cluster, JSON), encode_json(body, newline=True))
        if rest == "leader":
            leader = self._backend.leader()
            if leader is None:
                return _message(503, "During election", cluster)
            return Response(200, (cluster, JSON), encode_json(member_json(leader), newline=True))
        return _message(404, "Not found", cluster)

    async def _members_add(self, request: Request, cluster: tuple[str, str]) -> Response:
        peer_urls = _member_request(request, cluster)
        if isinstance(peer_urls, Response):
            return peer_urls
        try:
            member = await self._backend.add_member(peer_urls)
        except (PeerUrlExists, MemberIdExists) as error:
            return _message(409, str(error), cluster)
        except BackendError as error:
            logger.info("member add failed: %s", error)
            return _message(500, "Internal Server Error", cluster)
        return Response(201, (cluster, JSON), encode_json(member_json(member), newline=True))

    async def _members_remove(self, rest: str, cluster: tuple[str, str]) -> Response:
        member_id = _member_id(rest, cluster)
        if isinstance(member_id, Response):
            return member_id
        try:
            await self._backend.remove_member(member_id)
        except MemberRemoved:
            return _message(410, f"Member permanently removed: {member_id:x}", cluster)
        except MemberNotFound:
            return _message(404, f"No such member: {member_id:x}", cluster)
        except BackendError as error:
            logger.info("member remove failed: %s", error)
            return _message(500, "Internal Server Error", cluster)
        return Response(204, (cluster,))

    async def _members_update(
        self, request: Request, rest: str, cluster: tuple[str, str]
    ) -> Response:
        member_id = _member_id(rest, cluster)
        if isinstance(member_id, Response):
            return member_id
        peer_urls = _member_request(request, cluster)
        if isinstance(peer_urls, Response):
            return peer_urls
        try:
            await self._backend.update_member(member_id, peer_urls)
        except PeerUrlExists as error:
            return _message(409, str(error), cluster)
        except MemberNotFound:
            return _message(404, f"No such member: {member_id:x}", cluster)
        except BackendError as error:
            logger.info("member update failed: %s", error)
            return _message(500, "Internal Server Error", cluster)
        return Response(204, (cluster,))

    # ---------------------------------------------------------------- the rest

    def _machines(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _not_allowed("GET,HEAD")
        urls = sorted(url for member in self._backend.members() for url in member.client_urls)
        return Response(200, (TEXT,), ", ".join(urls).encode())

    def _stats(self, request: Request, path: str) -> Response:
        if request.method != "GET":
            return _not_allowed("GET")
        if path == "/v2/stats/self":
            stats = self._backend.stats_self()
        elif path == "/v2/stats/store":
            stats = self._backend.stats_store()
        else:
            leader_stats = self._backend.stats_leader()
            if leader_stats is None:
                return _message(403, "not current leader")
            stats = leader_stats
        return Response(200, (JSON,), encode_json(stats))

    def _version(self, request: Request) -> Response:
        if request.method != "GET":
            return _not_allowed("GET")
        server, cluster = self._backend.version()
        body = encode_json({"etcdserver": server, "etcdcluster": cluster})
        return Response(200, (JSON,), body)

    async def _health(self, request: Request) -> Response:
        if request.method != "GET":
            return _not_allowed("GET")
        try:  # Go's URL.Query(): a malformed pair is skipped, never an error
            excluded = frozenset(parse_query(request.query).get("exclude", []))
        except FormError:
            excluded = frozenset()
        if await self._backend.health(excluded):
            return Response(200, (TEXT,), b'{"health":"true"}')
        return plain_text(503, '{"health":"false"}')


async def _watch_events(watcher: Watcher, stream: bool) -> AsyncIterator[bytes]:
    """The body of a watch: each event as one JSON line; a plain watch ends after one."""
    async for event in watcher:
        yield encode_json(event_json(event), newline=True)
        if not stream:
            return


def _key_error(error: V2Error, cluster: tuple[str, str]) -> Response:
    """etcd's ``v2error.Error.WriteTo``: the error JSON and ``X-Etcd-Index``, no Raft headers."""
    headers = (cluster, JSON, ("X-Etcd-Index", str(error.index)))
    return Response(error_status(error), headers, encode_json(error_json(error), newline=True))


def _member_id(text: str, cluster: tuple[str, str]) -> int | Response:
    """etcd's ``getID``: a hex id, 405 when missing, 404 when not hex."""
    if text == "":
        return plain_text(405, "Method Not Allowed", (cluster,))
    try:
        if not text.isascii() or not text.isalnum():
            raise ValueError(text)
        member_id = int(text, 16)
        if member_id >= 2**64:
            raise ValueError(text)
    except ValueError:
        return _message(404, f"No such member: {text}", cluster)
    return member_id


def _member_request(request: Request, cluster: tuple[str, str]) -> tuple[str, ...] | Response:
    """etcd's ``unmarshalRequest`` of a member create or update: JSON ``{"peerURLs":[...]}``."""
    content_type = request.headers.get("content-type") or ""
    media_type = (
        content_type.split(";", 1)[0].strip().lower() if ";" in content_type else content_type
    )
    if media_type != "application/json":
        return _message(415, f"Bad Content-Type {media_type}, accept application/json", cluster)
    try:
        document = json.loads(request.body)
    except (ValueError, RecursionError) as error:
        text = "unexpected end of JSON input" if not request.body.strip() else str(error)
        return _message(400, text, cluster)
    try:
        return parse_peer_urls(document)
    except ValueError as error:
        return _message(400, str(error), cluster)


def _redirect(request: Request, clean: str) -> Response:
    """Go's ``ServeMux`` redirect of an unclean path: 301 to the clean one, query kept."""
    query = "".join(f"%{ord(char):02X}" if ord(char) > 0x7F else char for char in request.query)
    location = escape_path(clean) + (f"?{query}" if query else "")
    headers: list[tuple[str, str]] = [("Location", location)]
    body = b""
    if request.method in ("GET", "HEAD"):
        headers.append(("Content-Type", "text/html; charset=utf-8"))
    if request.method == "GET":
        body = f'<a href="{html_escape(location)}">{reason_phrase(301)}</a>.\n\n'.encode()
    return Response(301, tuple(headers), body)
