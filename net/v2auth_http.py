"""etcd 3.4's v2 auth over HTTP: ``/v2/auth/...`` and the checks on ``/v2/keys`` and
``/v2/members``.

``V2AuthStore`` is etcd's ``v2auth`` store: it keeps users, roles and the enabled flag as
JSON in the v2 store's system namespace (``storage.v2store.store.system_path``), through
the member's ordinary v2 requests, so every write goes through Raft and moves the store
index as etcd's do (the first write of a member also creates ``/2``, ``/2/users``,
``/2/roles`` and ``/2/enabled``, each once in the cluster, as etcd's
``ensureAuthDirectories`` does). ``V2AuthApi`` serves the endpoints (``/v2/auth/enable``,
``/v2/auth/users[/<name>]``, ``/v2/auth/roles[/<name>]``) with etcd's statuses, bodies and
messages, and answers whether a request may go on:

- ``/v2/auth/*`` but ``GET /v2/auth/enable``: the root role, from HTTP basic auth;
- ``/v2/keys``: with an ``Authorization`` header, that user's roles (a recursive request
  needs a ``*`` pattern covering the key); without one, the guest role (none: refused);
- ``/v2/members``: the root role for anything but GET and HEAD.

When auth is off everything is allowed. Passwords are checked with bcrypt on every request
that carries them, as in etcd (``Passwords``, injected). With ``--client-cert-auth``, a
request without an ``Authorization`` header is the user named by its verified client
certificate's CommonName (``Request.peer_common_name``; no such user: the guest role for
keys, refused for root's endpoints), as etcd's ``userFromClientCertificate``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar

from net.backend import BackendError
from net.gocompat import FormError, encode_json, mux_clean_path, parse_query
from net.http.messages import Request, Response, plain_text
from net.v2auth import (
    GUEST_ROLE,
    GUEST_ROLE_DOCUMENT,
    ROOT_ROLE,
    ROOT_ROLE_DOCUMENT,
    ROOT_USER,
    AuthError,
    InvalidJson,
    Passwords,
    Role,
    User,
    auth_error,
    basic_auth,
    decode_role,
    decode_user,
    load_role,
    load_user,
    merge_role,
    merge_user,
    with_root_role,
)
from net.v2json import error_json, error_status
from storage.v2store.model import ErrorCode, Event, V2Error, V2Request
from storage.v2store.store import system_path

logger = logging.getLogger(__name__)

AUTH_PREFIX: Final = "/v2/auth"
PERMS_PREFIX: Final = "/2"
"""etcd's ``StorePermsPrefix``: where users, roles and the flag live (system namespace)."""
JSON: Final = ("Content-Type", "application/json")
NO_AUTH_MESSAGE: Final = "Insufficient credentials"
READ_METHODS: Final = frozenset({"GET", "HEAD"})

T = TypeVar("T")


class V2Doer(Protocol):
    """What the auth store needs of the member (``net.v2api.V2Backend`` has it)."""

    def now_ns(self) -> int:
        """The member's clock (the time of a proposed write)."""
        ...

    async def propose(self, request: V2Request) -> Event:
        """A write through Raft (V2Error for a refused one, BackendError if not done)."""
        ...

    async def read(self, request: V2Request) -> Event:
        """A GET (local) or QGET (linearizable)."""
        ...

    def store_index(self) -> int:
        """The local v2 store's index: a local read stays true while it is unchanged."""
        ...


class V2AuthStore:
    """etcd's v2 auth store: users, roles and the enabled flag as system-namespace records.

    Args:
        backend: the member's v2 requests.
        passwords: bcrypt (injected).
    """

    def __init__(self, backend: V2Doer, passwords: Passwords) -> None:
        self._backend = backend
        self.passwords = passwords
        self._ensured = False
        self._enabled_at_index = -1
        """The store index ``_enabled`` was read at (-1: never)."""
        self._enabled = False

    # ---------------------------------------------------------------- the enabled flag

    async def enabled(self) -> bool:
        """Whether checks are on (a local read of ``/2/enabled``; missing: off).

        Every ``/v2/keys`` request asks, so the answer is kept while the store's index stays
        where it was read (only a v2 write moves it, and only a v2 write changes the flag):
        the read cost some 5 us of a linearizable get's 150 (issue 13).
        """
        index = self._backend.store_index()
        if index != self._enabled_at_index:
            self._enabled = await self._read_enabled()
            self._enabled_at_index = index
        return self._enabled

    async def _read_enabled(self) -> bool:
        try:
            event = await self._get("/enabled")
        except V2Error:
            return False
        try:
            return json.loads(event.node.value or "") is True
        except ValueError:
            logger.warning("v2 auth: /2/enabled holds %r, not JSON", event.node.value)
            return False

    async def enable(self) -> None:
        """Turn checks on: needs a root user; creates the guest role if there is none.

        Raises:
            AuthError: 409 already on, or no root user.
        """
        if await self.enabled():
            raise auth_error(409, "already enabled")
        try:
            await self.get_user(ROOT_USER, quorum=True)
        except AuthError:
            raise auth_error(409, "No root user available, please create one") from None
        try:
            await self.get_role(GUEST_ROLE, quorum=True)
        except AuthError:
            await self.create_role(GUEST_ROLE_DOCUMENT)
        await self._set("/enabled", "true", exist=True)
        logger.info("v2 auth: enabled")

    async def disable(self) -> None:
        """Turn checks off.

        Raises:
            AuthError: 409 already off.
        """
        if not await self.enabled():
            raise auth_error(409, "already disabled")
        await self._set("/enabled", "false", exist=True)
        logger.info("v2 auth: disabled")

    # ---------------------------------------------------------------- users

    async def all_users(self) -> list[str]:
        """Every user name, sorted."""
        return await self._names("/users/")

    async def get_user(self, name: str, *, quorum: bool = False) -> User:
        """A user (the root user always with the root role).

        Raises:
            AuthError: 404 no such user.
        """
        try:
            event = await self._get(f"/users/{name}", quorum=quorum)
        except V2Error as error:
            if error.code == ErrorCode.KEY_NOT_FOUND:
                raise auth_error(404, f"User {name} does not exist.") from None
            raise
        user = _stored(load_user, event)
        return with_root_role(user) if user.user == ROOT_USER else user

    async def create_or_update_user(self, user: User) -> tuple[User, bool]:
        """Update the user if it exists, else create it; (the user, whether created)."""
        try:
            await self.get_user(user.user, quorum=True)
        except AuthError:
            return await self.create_user(user), True
        return await self.update_user(user), False

    async def create_user(self, user: User) -> User:
        """Create a user (the root user gets the root role).

        Raises:
            AuthError: 400 no password, 409 exists.
        """
        if user.user == ROOT_USER:
            user = with_root_role(user)
        if not user.password:
            raise auth_error(400, f"Cannot create user {user.user} with an empty password")
        hashed = await self.passwords.hash(user.password)
        user = User(user.user, hashed, user.roles, user.grant, user.revoke)
        try:
            await self._set(f"/users/{user.user}", _dump(user.to_json()), exist=False)
        except V2Error as error:
            if error.code == ErrorCode.NODE_EXIST:
                raise auth_error(409, f"User {user.user} already exists.") from None
            raise
        logger.info("v2 auth: created user %s", user.user)
        return user

    async def update_user(self, user: User) -> User:
        """Change a user's password, grant or revoke roles.

        Raises:
            AuthError: 404 no such user, 409 a bad grant or revoke, 400 nothing changes.
        """
        old = await self.get_user(user.user, quorum=True)
        new = await merge_user(old, user, self.passwords)
        if new == old:
            raise auth_error(400, "User not updated. Use grant/revoke/password to update the user.")
        await self._set(f"/users/{user.user}", _dump(new.to_json()), exist=True)
        logger.info("v2 auth: updated user %s", user.user)
        return new

    async def delete_user(self, name: str) -> None:
        """Delete a user (never root while auth is on).

        Raises:
            AuthError: 403 root while enabled, 404 no such user.
        """
        if name == ROOT_USER and await self.enabled():
            raise auth_error(403, "Cannot delete root user while auth is enabled.")
        try:
            await self._delete(f"/users/{name}")
        except V2Error as error:
            if error.code == ErrorCode.KEY_NOT_FOUND:
                raise auth_error(404, f"User {name} does not exist") from None
            raise
        logger.info("v2 auth: deleted user %s", name)

    async def check_password(self, user: User, password: str) -> bool:
        """Whether ``password`` is the user's."""
        return await self.passwords.check(user.password, password)

    # ---------------------------------------------------------------- roles

    async def all_roles(self) -> list[str]:
        """Every role name, the built-in root role included, sorted."""
        return sorted([ROOT_ROLE, *await self._names("/roles/")])

    async def get_role(self, name: str, *, quorum: bool = False) -> Role:
        """A role (root is built in).

        Raises:
            AuthError: 404 no such role.
        """
        if name == ROOT_ROLE:
            return ROOT_ROLE_DOCUMENT
        try:
            event = await self._get(f"/roles/{name}", quorum=quorum)
        except V2Error as error:
            if error.code == ErrorCode.KEY_NOT_FOUND:
                raise auth_error(404, f"Role {name} does not exist.") from None
            raise
        return _stored(load_role, event)

    async def create_role(self, role: Role) -> None:
        """Create a role as given.

        Raises:
            AuthError: 403 the root role, 409 exists.
        """
        if role.role == ROOT_ROLE:
            raise auth_error(403, f"Cannot modify role {role.role}: is root role.")
        try:
            await self._set(f"/roles/{role.role}", _dump(role.to_json()), exist=False)
        except V2Error as error:
            if error.code == ErrorCode.NODE_EXIST:
                raise auth_error(409, f"Role {role.role} already exists.") from None
            raise
        logger.info("v2 auth: created role %s", role.role)

    async def update_role(self, role: Role) -> Role:
        """Grant and revoke a role's permissions.

        Raises:
            AuthError: 403 root, 404 no such role, 409 a duplicate grant, 400 no change.
        """
        if role.role == ROOT_ROLE:
            raise auth_error(403, f"Cannot modify role {role.role}: is root role.")
        old = await self.get_role(role.role, quorum=True)
        new = merge_role(old, role)
        if new == old:
            raise auth_error(400, "Role not updated. Use grant/revoke to update the role.")
        await self._set(f"/roles/{role.role}", _dump(new.to_json()), exist=True)
        logger.info("v2 auth: updated role %s", role.role)
        return new

    async def delete_role(self, name: str) -> None:
        """Delete a role.

        Raises:
            AuthError: 403 root, 404 no such role.
        """
        if name == ROOT_ROLE:
            raise auth_error(403, f"Cannot modify role {name}: is root role.")
        try:
            await self._delete(f"/roles/{name}")
        except V2Error as error:
            if error.code == ErrorCode.KEY_NOT_FOUND:
                raise auth_error(404, f"Role {name} doesn't exist.") from None
            raise
        logger.info("v2 auth: deleted role %s", name)

    # ---------------------------------------------------------------- records

    async def _names(self, directory: str) -> list[str]:
        try:
            event = await self._get(directory)
        except V2Error as error:
            if error.code == ErrorCode.KEY_NOT_FOUND:
                return []
            raise
        return sorted(node.key.rpartition("/")[2] for node in event.node.nodes or ())

    async def _get(self, resource: str, *, quorum: bool = False) -> Event:
        path = system_path(PERMS_PREFIX + resource)
        request = V2Request("QGET" if quorum else "GET", path, time_ns=self._backend.now_ns())
        return await self._backend.read(request)

    async def _set(self, resource: str, value: str, *, exist: bool) -> Event:
        await self._ensure_directories()
        path = system_path(PERMS_PREFIX + resource)
        request = V2Request("PUT", path, value, prev_exist=exist, time_ns=self._backend.now_ns())
        return await self._backend.propose(request)

    async def _delete(self, resource: str) -> Event:
        await self._ensure_directories()
        path = system_path(PERMS_PREFIX + resource)
        request = V2Request("DELETE", path, prev_exist=True, time_ns=self._backend.now_ns())
        return await self._backend.propose(request)

    async def _ensure_directories(self) -> None:
        """Create ``/2``, ``/2/users``, ``/2/roles`` and ``/2/enabled`` (false) where missing:
        once per member run, as etcd does (each create fails harmlessly once done)."""
        if self._ensured:
            return
        now_ns = self._backend.now_ns()
        for resource in ("", "/users/", "/roles/"):
            path = system_path(PERMS_PREFIX + resource)
            request = V2Request("PUT", path, dir=True, prev_exist=False, time_ns=now_ns)
            await self._create_if_missing(request)
        path = system_path(PERMS_PREFIX + "/enabled")
        request = V2Request("PUT", path, "false", prev_exist=False, time_ns=now_ns)
        await self._create_if_missing(request)
        self._ensured = True

    async def _create_if_missing(self, request: V2Request) -> None:
        try:
            await self._backend.propose(request)
        except V2Error as error:
            if error.code != ErrorCode.NODE_EXIST:
                raise


def _stored(load: Callable[[str], T], event: Event) -> T:
    """A stored document; a record that does not parse is a server error."""
    try:
        return load(event.node.value or "")
    except InvalidJson as error:
        raise BackendError(f"v2 auth: bad record {event.node.key}: {error}") from None


def _dump(document: dict[str, Any]) -> str:
    return encode_json(document).decode()


# -------------------------------------------------------------------- HTTP


Handler = Callable[[Request, tuple[str, str]], Awaitable[Response]]


class V2AuthApi:
    """The ``/v2/auth`` endpoints and the access checks of the other v2 endpoints.

    Args:
        store: the auth store.
        cluster_header: ``X-Etcd-Cluster-Id`` of this member.
        client_cert_auth: whether ``--client-cert-auth`` is on (asked at each request).
    """

    def __init__(
        self,
        store: V2AuthStore,
        cluster_header: Callable[[], tuple[str, str]],
        client_cert_auth: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self._cluster_header = cluster_header
        self._client_cert_auth = client_cert_auth

    async def route(self, request: Request, path: str) -> Response | None:
        """Answer a ``/v2/auth`` path (unescaped and clean); None when it is not one."""
        match path:
            case "/v2/auth/enable":
                methods = ("GET", "PUT", "DELETE")
                return await self._guarded(request, methods, self._enable, free_reads=True)
            case "/v2/auth/users":
                return await self._guarded(request, ("GET",), self._all_users)
            case "/v2/auth/roles":
                return await self._guarded(request, ("GET",), self._all_roles)
        for kind, base, one in (
            ("users", self._all_users, self._one_user),
            ("roles", self._all_roles, self._one_role),
        ):
            if path.startswith(f"{AUTH_PREFIX}/{kind}/"):
                pieces = mux_clean_path(path[len(AUTH_PREFIX) :]).rstrip("/").split("/")
                if len(pieces) == 2:
                    return await self._guarded(request, ("GET",), base)
                if len(pieces) != 3:
                    return _message(400, "Invalid path")
                handler = functools.partial(one, name=pieces[2])
                return await self._guarded(request, ("GET", "PUT", "DELETE"), handler)
        return None

    # ---------------------------------------------------------------- access checks

    async def root_allowed(self, request: Request) -> bool:
        """etcd's ``hasRootAccess``: auth off, or a basic-auth user with the root role."""
        if not await self.store.enabled():
            return True
        if not request.headers.get("authorization") and self._client_cert_auth():
            user = await self._certificate_user(request)
        else:
            user = await self._user_of(request)
        return user is not None and ROOT_ROLE in (user.roles or ())

    async def write_root_allowed(self, request: Request) -> bool:
        """etcd's ``hasWriteRootAccess``: reads always; writes as ``root_allowed``."""
        return request.method in READ_METHODS or await self.root_allowed(request)

    async def key_allowed(self, request: Request, key: str, recursive: bool) -> bool:
        """etcd's ``hasKeyPrefixAccess`` for ``/v2/keys<key>`` (``key`` as in the URL)."""
        store = self.store
        if not await store.enabled():
            return True
        write = request.method not in READ_METHODS
        if not request.headers.get("authorization"):  # Go: an empty header is none
            user = None
            if self._client_cert_auth():
                user = await self._certificate_user(request)
            if user is None:
                try:
                    guest = await store.get_role(GUEST_ROLE)
                except AuthError:
                    return False
                return guest.has_key_access(key, write)
        else:
            user = await self._user_of(request)
            if user is None:
                return False
        for name in user.roles or ():
            try:
                role = await store.get_role(name)
            except AuthError:
                continue
            if recursive:
                if role.has_recursive_access(key, write):
                    return True
            elif role.has_key_access(key, write):
                return True
        logger.info("v2 auth: %s may not %s %s", user.user, request.method, key)
        return False

    async def _certificate_user(self, request: Request) -> User | None:
        """The user named by the verified client certificate's CommonName, if any."""
        if request.peer_common_name is None:
            return None
        try:
            return await self.store.get_user(request.peer_common_name)
        except AuthError:
            return None

    async def _user_of(self, request: Request) -> User | None:
        """The user named by HTTP basic auth, if its password matches."""
        credentials = basic_auth(request.headers.get("authorization"))
        if credentials is None:
            return None
        name, password = credentials
        try:
            user = await self.store.get_user(name)
        except AuthError:
            return None
        if not await self.store.check_password(user, password):
            logger.info("v2 auth: wrong password for %s", name)
            return None
        return user

    # ---------------------------------------------------------------- endpoints

    async def _guarded(
        self,
        request: Request,
        methods: tuple[str, ...],
        handler: Handler,
        *,
        free_reads: bool = False,
    ) -> Response:
        """Method check, then root access (for writes only with ``free_reads``), then the
        handler, with etcd's answer for any store error."""
        if request.method not in methods:
            return plain_text(405, "Method Not Allowed", (("Allow", ",".join(methods)),))
        if free_reads:
            allowed = await self.write_root_allowed(request)
        else:
            allowed = await self.root_allowed(request)
        if not allowed:
            return _message(401, NO_AUTH_MESSAGE)
        cluster = self._cluster_header()
        try:
            return await handler(request, cluster)
        except AuthError as error:
            return _message(error.status, error.message, cluster)
        except V2Error as error:
            headers = (cluster, JSON, ("X-Etcd-Index", str(error.index)))
            body = encode_json(error_json(error), newline=True)
            return Response(error_status(error), headers, body)
        except BackendError as error:
            logger.warning("v2 auth %s %s failed: %s", request.method, request.path, error)
            return _message(500, "Internal Server Error", cluster)

    async def _enable(self, request: Request, cluster: tuple[str, str]) -> Response:
        enabled = await self.store.enabled()
        match request.method:
            case "GET":
                return _json(200, {"enabled": enabled}, cluster)
            case "PUT":
                await self.store.enable()
            case _:
                await self.store.disable()
        return Response(200, (cluster, JSON))

    async def _all_users(self, request: Request, cluster: tuple[str, str]) -> Response:
        store = self.store
        names = await store.all_users()
        _parse_form(request)
        users: list[dict[str, Any]] = []
        for name in names:
            user = await store.get_user(name)
            roles = []
            for role_name in user.roles or ():
                try:
                    roles.append(await store.get_role(role_name))
                except AuthError:  # the listing skips a missing role; GET of the user fails
                    continue
            users.append(_user_with_roles(user, roles))
        return _json(200, {"users": users or None}, cluster)

    async def _all_roles(self, request: Request, cluster: tuple[str, str]) -> Response:
        store = self.store
        names = await store.all_roles()
        _parse_form(request)
        roles = [(await store.get_role(name)).to_json() for name in names]
        return _json(200, {"roles": roles or None}, cluster)

    async def _one_user(self, request: Request, cluster: tuple[str, str], name: str) -> Response:
        store = self.store
        match request.method:
            case "GET":
                user = await store.get_user(name)
                _parse_form(request)
                roles = [await store.get_role(role) for role in user.roles or ()]
                return _json(200, _user_with_roles(user, roles), cluster)
            case "PUT":
                return await self._put_user(request, cluster, name)
            case _:
                await store.delete_user(name)
                return Response(200, (cluster, JSON))

    async def _put_user(self, request: Request, cluster: tuple[str, str], name: str) -> Response:
        store = self.store
        try:
            user = decode_user(request.body)
        except InvalidJson:
            return _message(400, "Invalid JSON in request body.", cluster)
        if user.user != name:
            return _message(400, "User JSON name does not match the name in the URL", cluster)
        created = False
        if not user.grant and not user.revoke:
            if user.roles:
                out = await store.create_user(user)
            else:  # a password alone: create or update, whichever applies
                out, created = await store.create_or_update_user(user)
        else:
            if user.roles:
                message = "User JSON contains both roles and grant/revoke"
                return _message(400, message, cluster)
            out = await store.update_user(user)
        shown = User(out.user, "", out.roles, out.grant, out.revoke)
        return _json(201 if created else 200, shown.to_json(), cluster)

    async def _one_role(self, request: Request, cluster: tuple[str, str], name: str) -> Response:
        store = self.store
        match request.method:
            case "GET":
                return _json(200, (await store.get_role(name)).to_json(), cluster)
            case "PUT":
                return await self._put_role(request, cluster, name)
            case _:
                await store.delete_role(name)
                return Response(200, (cluster, JSON))

    async def _put_role(self, request: Request, cluster: tuple[str, str], name: str) -> Response:
        try:
            role = decode_role(request.body)
        except InvalidJson:
            return _message(400, "Invalid JSON in request body.", cluster)
        if role.role != name:
            return _message(400, "Role JSON name does not match the name in the URL", cluster)
        grant_empty = role.grant is None or role.grant.is_empty()
        revoke_empty = role.revoke is None or role.revoke.is_empty()
        if grant_empty and revoke_empty:
            await self.store.create_role(role)
            return _json(201, role.to_json(), cluster)
        if not role.permissions.is_empty():
            message = "Role JSON contains both permissions and grant/revoke"
            return _message(400, message, cluster)
        return _json(200, (await self.store.update_role(role)).to_json(), cluster)


def _user_with_roles(user: User, roles: list[Role]) -> dict[str, Any]:
    """etcd's ``userWithRoles``: the name and the roles' documents (left out when none)."""
    out: dict[str, Any] = {"user": user.user}
    if roles:
        out["roles"] = [role.to_json() for role in roles]
    return out


def _parse_form(request: Request) -> None:
    """etcd parses the query of these GETs (and answers 500 when it is malformed).

    Raises:
        BackendError: a malformed query.
    """
    try:
        parse_query(request.query)
    except FormError as error:
        raise BackendError(str(error)) from None


def _json(status: int, document: dict[str, Any], cluster: tuple[str, str]) -> Response:
    """A body as Go's ``json.Encoder`` writes it (newline at the end)."""
    return Response(status, (cluster, JSON), encode_json(document, newline=True))


def _message(status: int, message: str, *headers: tuple[str, str]) -> Response:
    """etcd's ``httptypes.HTTPError``: ``{"message": ...}`` without a trailing newline."""
    return Response(status, (*headers, JSON), encode_json({"message": message}))


def key_refusal(cluster: tuple[str, str]) -> Response:
    """etcd's ``writeKeyNoAuth``: error 110 with index 0."""
    error = V2Error(ErrorCode.UNAUTHORIZED, NO_AUTH_MESSAGE, 0)
    headers = (cluster, JSON, ("X-Etcd-Index", "0"))
    return Response(401, headers, encode_json(error_json(error), newline=True))
