"""etcd 3.4's v2 auth, the pure part: users, roles, permissions and their JSON.

etcd 3.4 keeps v2 auth apart from v3 auth (``etcdserver/api/v2auth``): users and roles are
JSON documents in the v2 store's system namespace (``/2/users/<name>``, ``/2/roles/<name>``)
and ``/2/enabled`` says whether checks are on. This module holds what needs no store:

- ``User`` and ``Role`` as etcd's structs, with Go's difference between a missing list
  (``None``, written ``null``) and an empty one (``()``, written ``[]``): etcd compares old
  and new documents with ``reflect.DeepEqual`` to decide whether an update changed anything,
  so the difference is visible ("not updated" or not);
- ``decode_user``/``decode_role``: a request body as Go's ``json.Decoder`` reads it (the first
  JSON value only, ``null`` as an empty document, field names matched without regard to
  case, unknown fields ignored, a wrong type an error);
- ``merge_user``/``merge_role``: grant and revoke, with etcd's errors;
- ``has_key_access``/``has_recursive_access``: a role's key patterns (``/foo`` exactly, or
  ``/foo*`` as a prefix), as ``/v2/keys`` checks them.

Errors are ``AuthError`` (an HTTP status and etcd's message, ``auth: ...``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

ROOT_ROLE: Final = "root"
"""The built-in role of the root user: every key, and the auth endpoints."""
GUEST_ROLE: Final = "guest"
"""The role of a request without credentials once auth is on (created by enabling auth)."""
ROOT_USER: Final = "root"

Names = tuple[str, ...] | None
"""A Go ``[]string``: None is nil (``null``), ``()`` is empty (``[]``)."""


class AuthError(Exception):
    """A refused auth operation: the HTTP status and etcd's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def auth_error(status: int, message: str) -> AuthError:
    """etcd's ``authErr``: the message with its ``auth: `` prefix."""
    return AuthError(status, f"auth: {message}")


class InvalidJson(ValueError):
    """A request body Go's decoder would refuse."""


class Passwords(Protocol):
    """bcrypt for the v2 auth handlers (injected: the salt comes from the member's seeded
    random source, and the hashing runs off the Trio loop in production)."""

    async def hash(self, password: str) -> str:
        """The bcrypt hash of ``password`` (etcd 3.4's v2 auth uses cost 10)."""
        ...

    async def check(self, hashed: str, password: str) -> bool:
        """Whether ``password`` has the hash ``hashed`` (False for a malformed hash)."""
        ...


@dataclass(frozen=True, slots=True)
class RWPermission:
    """The key patterns a role may read and write."""

    read: Names = None
    write: Names = None

    def to_json(self) -> dict[str, Any]:
        return {"read": _names_json(self.read), "write": _names_json(self.write)}

    def grant(self, other: RWPermission) -> RWPermission:
        """Add ``other``'s patterns (sorted); a pattern already there is refused (409)."""
        return RWPermission(
            _added(self.read, other.read, "Granting duplicate read permission {}"),
            _added(self.write, other.write, "Granting duplicate write permission {}"),
        )

    def revoke(self, other: RWPermission) -> RWPermission:
        """Drop ``other``'s patterns (sorted); a pattern not there is ignored, as in etcd."""
        return RWPermission(_removed(self.read, other.read), _removed(self.write, other.write))


@dataclass(frozen=True, slots=True)
class Permissions:
    """A role's permissions (only key-value ones exist in v2)."""

    kv: RWPermission = field(default_factory=RWPermission)

    def is_empty(self) -> bool:
        return not self.kv.read and not self.kv.write

    def to_json(self) -> dict[str, Any]:
        return {"kv": self.kv.to_json()}


@dataclass(frozen=True, slots=True)
class Role:
    """A role document (``grant``/``revoke`` only in requests, but stored as received)."""

    role: str = ""
    permissions: Permissions = field(default_factory=Permissions)
    grant: Permissions | None = None
    revoke: Permissions | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "permissions": self.permissions.to_json()}
        if self.grant is not None:
            out["grant"] = self.grant.to_json()
        if self.revoke is not None:
            out["revoke"] = self.revoke.to_json()
        return out

    def has_key_access(self, key: str, write: bool) -> bool:
        """Whether the role may read (write) ``key``: a pattern equal to it, or ending in
        ``*`` and a prefix of it. The root role may do anything."""
        if self.role == ROOT_ROLE:
            return True
        return any(_simple_match(pattern, key) for pattern in self._patterns(write))

    def has_recursive_access(self, key: str, write: bool) -> bool:
        """Whether the role may read (write) everything under ``key``: only a ``*`` pattern
        that is a prefix of it counts."""
        if self.role == ROOT_ROLE:
            return True
        return any(_prefix_match(pattern, key) for pattern in self._patterns(write))

    def _patterns(self, write: bool) -> tuple[str, ...]:
        return (self.permissions.kv.write if write else self.permissions.kv.read) or ()


@dataclass(frozen=True, slots=True)
class User:
    """A user document; ``password`` is the bcrypt hash once stored."""

    user: str = ""
    password: str = ""
    roles: Names = None
    grant: Names = None
    revoke: Names = None

    def to_json(self) -> dict[str, Any]:
        """Go's encoding: ``password``, ``grant`` and ``revoke`` left out when empty."""
        out: dict[str, Any] = {"user": self.user}
        if self.password:
            out["password"] = self.password
        out["roles"] = _names_json(self.roles)
        if self.grant:
            out["grant"] = list(self.grant)
        if self.revoke:
            out["revoke"] = list(self.revoke)
        return out


ROOT_ROLE_DOCUMENT: Final = Role(ROOT_ROLE, Permissions(RWPermission(("/*",), ("/*",))))
"""The root role as etcd shows it (never stored)."""
GUEST_ROLE_DOCUMENT: Final = Role(GUEST_ROLE, Permissions(RWPermission(("/*",), ("/*",))))
"""The guest role that enabling auth creates when there is none: everything allowed."""


def with_root_role(user: User) -> User:
    """The root user always has the root role (etcd adds it on create and on read)."""
    if user.roles is not None and ROOT_ROLE in user.roles:
        return user
    return User(user.user, user.password, (*(user.roles or ()), ROOT_ROLE), user.grant, user.revoke)


async def merge_user(old: User, new: User, passwords: Passwords) -> User:
    """The stored ``old`` with ``new``'s password (hashed, if given), grants and revokes.

    Raises:
        AuthError: 409 for a role granted twice or revoked without being granted.
    """
    password = await passwords.hash(new.password) if new.password else old.password
    roles = dict.fromkeys(old.roles or ())
    for name in new.grant or ():
        if name in roles:
            raise auth_error(409, f"Granting duplicate role {name} for user {new.user}")
        roles[name] = None
    for name in new.revoke or ():
        if name not in roles:
            raise auth_error(409, f"Revoking ungranted role {name} for user {new.user}")
        del roles[name]
    return User(old.user, password, tuple(sorted(roles)))


def merge_role(old: Role, new: Role) -> Role:
    """The stored ``old`` with ``new``'s grants, then its revokes.

    Raises:
        AuthError: 409 for a pattern granted twice.
    """
    permissions = old.permissions
    if new.grant is not None:
        permissions = Permissions(permissions.kv.grant(new.grant.kv))
    if new.revoke is not None:
        permissions = Permissions(permissions.kv.revoke(new.revoke.kv))
    return Role(old.role, permissions)


# -------------------------------------------------------------------- JSON in


def decode_user(body: bytes) -> User:
    """A user request body as etcd's handler decodes it.

    Raises:
        InvalidJson: not JSON, or a field of the wrong type.
    """
    document = _first_value(body)
    return _user_of(document)


def decode_role(body: bytes) -> Role:
    """A role request body as etcd's handler decodes it.

    Raises:
        InvalidJson: not JSON, or a field of the wrong type.
    """
    return _role_of(_first_value(body))


def load_user(text: str) -> User:
    """A stored user document.

    Raises:
        InvalidJson: the record is not a user.
    """
    return _user_of(_first_value(text.encode()))


def load_role(text: str) -> Role:
    """A stored role document.

    Raises:
        InvalidJson: the record is not a role.
    """
    return _role_of(_first_value(text.encode()))


def _first_value(body: bytes) -> Any:
    """The first JSON value of ``body`` (Go's ``Decoder.Decode`` ignores what follows)."""
    try:
        text = body.decode()
        start = len(text) - len(text.lstrip(" \t\r\n"))
        value, _ = json.JSONDecoder(parse_constant=_refuse).raw_decode(text, start)
    except (ValueError, RecursionError) as error:
        raise InvalidJson(str(error)) from None
    return value


def _refuse(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def _fields(document: Any, names: Iterable[str]) -> dict[str, Any]:
    """The fields of a Go struct from a JSON object: names matched case-insensitively, the
    last of two keys for one field winning, unknown ones ignored; ``null`` is an empty
    struct."""
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise InvalidJson("json: cannot unmarshal into a struct")
    wanted = {name.lower(): name for name in names}
    out: dict[str, Any] = {}
    for key, value in document.items():
        name = wanted.get(key.lower())
        if name is not None:
            out[name] = value
    return out


def _string(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidJson("json: cannot unmarshal into a string")
    return value


def _names(value: Any) -> Names:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidJson("json: cannot unmarshal into []string")
    return tuple(_string(item) for item in value)


def _user_of(document: Any) -> User:
    got = _fields(document, ("user", "password", "roles", "grant", "revoke"))
    return User(
        _string(got.get("user")),
        _string(got.get("password")),
        _names(got.get("roles")),
        _names(got.get("grant")),
        _names(got.get("revoke")),
    )


def _permissions_of(document: Any) -> Permissions:
    kv = _fields(_fields(document, ("kv",)).get("kv"), ("read", "write"))
    return Permissions(RWPermission(_names(kv.get("read")), _names(kv.get("write"))))


def _role_of(document: Any) -> Role:
    got = _fields(document, ("role", "permissions", "grant", "revoke"))
    grant = got.get("grant")
    revoke = got.get("revoke")
    return Role(
        _string(got.get("role")),
        _permissions_of(got.get("permissions")),
        None if grant is None else _permissions_of(grant),
        None if revoke is None else _permissions_of(revoke),
    )


# -------------------------------------------------------------------- helpers


def basic_auth(header: str | None) -> tuple[str, str] | None:
    """Go's ``Request.BasicAuth``: (user, password) from ``Basic base64(user:password)``."""
    prefix = "basic "
    if header is None or header[: len(prefix)].lower() != prefix:
        return None
    try:
        decoded = base64.b64decode(header[len(prefix) :], validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def _names_json(names: Names) -> list[str] | None:
    return None if names is None else list(names)


def _added(current: Names, more: Names, message: str) -> tuple[str, ...]:
    names = dict.fromkeys(current or ())
    for name in more or ():
        if name in names:
            raise auth_error(409, message.format(name))
        names[name] = None
    return tuple(sorted(names))


def _removed(current: Names, gone: Names) -> tuple[str, ...]:
    names = dict.fromkeys(current or ())
    for name in gone or ():
        names.pop(name, None)
    return tuple(sorted(names))


def _simple_match(pattern: str, key: str) -> bool:
    if pattern.endswith("*"):
        return key.startswith(pattern[:-1])
    return key == pattern


def _prefix_match(pattern: str, key: str) -> bool:
    return pattern.endswith("*") and key.startswith(pattern[:-1])
