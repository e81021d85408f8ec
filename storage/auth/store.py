"""etcd 3.4's auth store: users, roles, key-range permissions, the enabled flag and the auth
revision, as a pure state machine beside the MVCC store.

Every change comes from a log entry, so every member holds the same store (``actors.
state_machine`` applies them); what the store decides follows etcd's ``auth/store.go``:

- the root user and role: AuthEnable is refused until a user ``root`` exists and holds the
  role ``root`` (the role need not exist as a role: granting ``root`` is always allowed, and
  it permits everything); while enabled, ``root`` cannot be deleted, nor the ``root`` role
  deleted or revoked from ``root`` ("invalid auth management");
- the auth revision starts at 1 and is bumped by every change that writes something (AuthEnable
  does not bump it, AuthDisable does; a grant of a role the user holds already is a no-op). A
  token carries the revision it was issued at: a key request whose revision is older than the
  store's is refused with "revision of auth store is old", and the client authenticates again;
- permissions are ``[key, range_end)`` intervals: an empty ``range_end`` is the single key,
  ``"\\0"`` is every key from ``key`` on. A user's rights are the union over its roles; a
  request on a range is permitted only when that union covers the whole range (adjacent
  intervals join), a request on one key when some interval holds the key. etcd compares
  interval bounds with an empty key meaning "+infinity", so a permission whose key is empty
  grants nothing; so here.

Passwords are bcrypt hashes made before the request was proposed (``actors.auth_backend``);
the store only keeps and hands them out. Records, under ``PREFIX``: ``auth/enabled`` and
``auth/revision`` (sealed 8-byte integers), ``auth/role/<name>`` and ``auth/user/<name>``
(sealed ``authpb.Role`` / ``authpb.User`` messages); ``take_changes`` / ``load`` / ``reload``
keep them like ``storage.lease.table`` keeps leases, so they go into Raft snapshots.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

from google.protobuf.message import DecodeError

from net.etcdpb import auth_pb2
from storage.errors import StorageCorrupted
from storage.kv import prefix_end
from storage.sealed import seal, unpack_exact, unseal

PREFIX: Final = b"auth/"
ENABLED_KEY: Final = b"auth/enabled"
REVISION_KEY: Final = b"auth/revision"
ROLE_PREFIX: Final = b"auth/role/"
USER_PREFIX: Final = b"auth/user/"

ROOT: Final = "root"
"""The root user's and the root role's name."""

READ: Final = auth_pb2.Permission.READ
WRITE: Final = auth_pb2.Permission.WRITE
READWRITE: Final = auth_pb2.Permission.READWRITE

FROM_KEY: Final = b"\0"
"""A ``range_end`` meaning every key from ``key`` on."""

USERS_MAX: Final = 100_000
ROLES_MAX: Final = 100_000
PERMISSIONS_PER_ROLE_MAX: Final = 10_000
"""Bounds etcd does not have: every user, role and permission costs memory on every member
(a request past them is refused with "invalid auth management")."""

_U64 = struct.Struct(">Q")
_M = TypeVar("_M", auth_pb2.User, auth_pb2.Role)


class AuthError(Exception):
    """A request the auth store refuses; ``kind`` names etcd's error (``net.v3.errors``)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


ROOT_USER_NOT_EXIST: Final = "root-user-not-exist"
ROOT_ROLE_NOT_EXIST: Final = "root-role-not-exist"
USER_ALREADY_EXIST: Final = "user-already-exist"
USER_EMPTY: Final = "user-empty"
USER_NOT_FOUND: Final = "user-not-found"
ROLE_ALREADY_EXIST: Final = "role-already-exist"
ROLE_NOT_FOUND: Final = "role-not-found"
ROLE_EMPTY: Final = "role-empty"
AUTH_FAILED: Final = "auth-failed"
PERMISSION_DENIED: Final = "permission-denied"
ROLE_NOT_GRANTED: Final = "role-not-granted"
PERMISSION_NOT_GRANTED: Final = "permission-not-granted"
AUTH_NOT_ENABLED: Final = "auth-not-enabled"
INVALID_AUTH_TOKEN: Final = "invalid-auth-token"
INVALID_AUTH_MGMT: Final = "invalid-auth-mgmt"
AUTH_OLD_REVISION: Final = "auth-old-revision"


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """Who makes a request: the user and the auth revision its token was issued at (0: no
    token, which a key request is refused for while auth is enabled)."""

    username: str = ""
    revision: int = 0


Interval = tuple[bytes, bytes | None]
"""``[begin, end)``; ``end`` None is +infinity."""


def request_interval(key: bytes, range_end: bytes) -> Interval:
    """The keys a request names: one key, a range, or every key from ``key`` on."""
    if not range_end:
        return key, key + b"\0"
    if range_end == FROM_KEY:
        return key, None
    return key, range_end


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """The union of intervals as disjoint ones, sorted (touching intervals are joined)."""
    merged: list[Interval] = []
    for begin, end in sorted(intervals, key=lambda ivl: ivl[0]):
        if merged:
            last_begin, last_end = merged[-1]
            if last_end is None or begin <= last_end:
                if last_end is not None and (end is None or end > last_end):
                    merged[-1] = (last_begin, end)
                continue
        merged.append((begin, end))
    return merged


def covers(merged: list[Interval], wanted: Interval) -> bool:
    """Whether the union ``merged`` (from ``merge``) holds every key of ``wanted``; an empty
    interval (end not after begin) is never covered, as in etcd."""
    begin, end = wanted
    if end is not None and end <= begin:
        return False
    index = bisect.bisect_right([ivl[0] for ivl in merged], begin) - 1
    if index < 0:
        return False
    _, have_end = merged[index]
    if have_end is None:
        return True
    return end is not None and end <= have_end


@dataclass(slots=True)
class _Rights:
    """A user's merged permissions."""

    read: list[Interval] = field(default_factory=list)
    write: list[Interval] = field(default_factory=list)


class ReadableKV(Protocol):
    """What ``load`` reads: an ordered scan."""

    def scan(
        self, start: bytes, end: bytes, *, bulk: bool = False
    ) -> Iterable[tuple[bytes, bytes]]: ...


def has_root_role(user: auth_pb2.User) -> bool:
    """Whether the user holds the root role."""
    return ROOT in user.roles


class AuthStore:
    """The users, roles, flag and revision every member agrees on; see the module docstring."""

    def __init__(self) -> None:
        self.enabled = False
        self.revision = 1
        self._users: dict[str, auth_pb2.User] = {}
        self._roles: dict[str, auth_pb2.Role] = {}
        self._rights: dict[str, _Rights] = {}
        self._changes: dict[bytes, bytes | None] = {}

    # -- reads ----------------------------------------------------------------------------

    def user(self, name: str) -> auth_pb2.User | None:
        """The user record (its hash included), if any."""
        return self._users.get(name)

    def user_list(self) -> list[str]:
        """Every user name, in byte order (etcd's bucket order)."""
        return sorted(self._users, key=str.encode)

    def role_list(self) -> list[str]:
        """Every role name, in byte order."""
        return sorted(self._roles, key=str.encode)

    def user_get(self, name: str) -> list[str]:
        """The user's roles, sorted.

        Raises:
            AuthError: no such user.
        """
        user = self._users.get(name)
        if user is None:
            raise AuthError(USER_NOT_FOUND)
        return list(user.roles)

    def role_get(self, name: str) -> list[auth_pb2.Permission]:
        """The role's permissions, by key.

        Raises:
            AuthError: no such role.
        """
        role = self._roles.get(name)
        if role is None:
            raise AuthError(ROLE_NOT_FOUND)
        return list(role.keyPermission)

    def has_role(self, username: str, role: str) -> bool:
        """Whether the user exists and holds the role."""
        user = self._users.get(username)
        return user is not None and role in user.roles

    def password_of(self, name: str) -> bytes:
        """The bcrypt hash to check a password against (before Authenticate is proposed).

        Raises:
            AuthError: auth is not enabled; no such user, or a user without a password
                (both "authentication failed").
        """
        if not self.enabled:
            raise AuthError(AUTH_NOT_ENABLED)
        user = self._users.get(name)
        if user is None or user.options.no_password:
            raise AuthError(AUTH_FAILED)
        return user.password

    # -- permission checks ----------------------------------------------------------------

    def check_range(self, info: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        """etcd's ``IsRangePermitted``. Raises ``AuthError`` when refused."""
        self._check(info, key, range_end, READ)

    def check_put(self, info: AuthInfo | None, key: bytes) -> None:
        """etcd's ``IsPutPermitted``."""
        self._check(info, key, b"", WRITE)

    def check_delete(self, info: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        """etcd's ``IsDeleteRangePermitted``."""
        self._check(info, key, range_end, WRITE)

    def check_admin(self, info: AuthInfo | None) -> None:
        """etcd's ``IsAdminPermitted``: the root role (no revision check).

        Raises:
            AuthError: no user ("user name is empty"), an unknown one, or not root.
        """
        if not self.enabled:
            return
        if info is None or not info.username:
            raise AuthError(USER_EMPTY)
        user = self._users.get(info.username)
        if user is None:
            raise AuthError(USER_NOT_FOUND)
        if not has_root_role(user):
            raise AuthError(PERMISSION_DENIED)

    def _check(self, info: AuthInfo | None, key: bytes, range_end: bytes, kind: int) -> None:
        if not self.enabled:
            return
        if info is None or info.revision == 0:
            raise AuthError(USER_EMPTY)
        if info.revision < self.revision:
            raise AuthError(AUTH_OLD_REVISION)
        user = self._users.get(info.username)
        if user is None:
            raise AuthError(PERMISSION_DENIED)
        if has_root_role(user):
            return
        rights = self._rights.get(info.username)
        if rights is None:
            raise AuthError(PERMISSION_DENIED)
        merged = rights.read if kind == READ else rights.write
        if not covers(merged, request_interval(key, range_end)):
            raise AuthError(PERMISSION_DENIED)

    # -- the log's entries ----------------------------------------------------------------

    def enable(self) -> None:
        """AuthEnable (no-op when enabled; the revision is not bumped).

        Raises:
            AuthError: no root user, or root without the root role.
        """
        if self.enabled:
            return
        root = self._users.get(ROOT)
        if root is None:
            raise AuthError(ROOT_USER_NOT_EXIST)
        if not has_root_role(root):
            raise AuthError(ROOT_ROLE_NOT_EXIST)
        self.enabled = True
        self._changes[ENABLED_KEY] = seal(_U64.pack(1))

    def disable(self) -> None:
        """AuthDisable (no-op when disabled)."""
        if not self.enabled:
            return
        self.enabled = False
        self._changes[ENABLED_KEY] = seal(_U64.pack(0))
        self._bump()

    def user_add(self, name: str, password_hash: bytes, *, no_password: bool) -> None:
        """UserAdd with its bcrypt hash (empty for a user without a password).

        Raises:
            AuthError: an empty name, a user of that name, or too many users.
        """
        if not name:
            raise AuthError(USER_EMPTY)
        if name in self._users:
            raise AuthError(USER_ALREADY_EXIST)
        if len(self._users) >= USERS_MAX:
            raise AuthError(INVALID_AUTH_MGMT)
        user = auth_pb2.User(name=name.encode(), password=b"" if no_password else password_hash)
        user.options.no_password = no_password
        self._put_user(name, user)

    def user_delete(self, name: str) -> None:
        """UserDelete.

        Raises:
            AuthError: root while enabled; no such user.
        """
        if self.enabled and name == ROOT:
            raise AuthError(INVALID_AUTH_MGMT)
        if name not in self._users:
            raise AuthError(USER_NOT_FOUND)
        del self._users[name]
        self._changes[USER_PREFIX + name.encode()] = None
        self._refresh()

    def user_change_password(self, name: str, password_hash: bytes) -> None:
        """UserChangePassword with the new hash.

        Raises:
            AuthError: no such user.
        """
        user = self._users.get(name)
        if user is None:
            raise AuthError(USER_NOT_FOUND)
        updated = auth_pb2.User()
        updated.CopyFrom(user)
        updated.password = password_hash
        self._put_user(name, updated)

    def user_grant_role(self, name: str, role: str) -> None:
        """UserGrantRole (``root`` needs no role record; granting a held role is a no-op).

        Raises:
            AuthError: no such user; no such role.
        """
        user = self._users.get(name)
        if user is None:
            raise AuthError(USER_NOT_FOUND)
        if role != ROOT and role not in self._roles:
            raise AuthError(ROLE_NOT_FOUND)
        if role in user.roles:
            return
        updated = auth_pb2.User()
        updated.CopyFrom(user)
        roles = sorted([*user.roles, role])
        del updated.roles[:]
        updated.roles.extend(roles)
        self._put_user(name, updated)

    def user_revoke_role(self, name: str, role: str) -> None:
        """UserRevokeRole.

        Raises:
            AuthError: root from root while enabled; no such user; role not granted.
        """
        if self.enabled and name == ROOT and role == ROOT:
            raise AuthError(INVALID_AUTH_MGMT)
        user = self._users.get(name)
        if user is None:
            raise AuthError(USER_NOT_FOUND)
        if role not in user.roles:
            raise AuthError(ROLE_NOT_GRANTED)
        updated = auth_pb2.User()
        updated.CopyFrom(user)
        del updated.roles[:]
        updated.roles.extend(r for r in user.roles if r != role)
        self._put_user(name, updated)

    def role_add(self, name: str) -> None:
        """RoleAdd.

        Raises:
            AuthError: an empty name; a role of that name; too many roles.
        """
        if not name:
            raise AuthError(ROLE_EMPTY)
        if name in self._roles:
            raise AuthError(ROLE_ALREADY_EXIST)
        if len(self._roles) >= ROLES_MAX:
            raise AuthError(INVALID_AUTH_MGMT)
        self._put_role(name, auth_pb2.Role(name=name.encode()))

    def role_delete(self, name: str) -> None:
        """RoleDelete: the role goes, and from every user holding it.

        Raises:
            AuthError: root while enabled; no such role.
        """
        if self.enabled and name == ROOT:
            raise AuthError(INVALID_AUTH_MGMT)
        if name not in self._roles:
            raise AuthError(ROLE_NOT_FOUND)
        del self._roles[name]
        self._changes[ROLE_PREFIX + name.encode()] = None
        for user_name, user in list(self._users.items()):
            if name in user.roles:
                updated = auth_pb2.User()
                updated.CopyFrom(user)
                del updated.roles[:]
                updated.roles.extend(r for r in user.roles if r != name)
                self._users[user_name] = updated
                self._changes[USER_PREFIX + user_name.encode()] = _seal_message(updated)
        self._refresh()

    def role_grant_permission(self, name: str, permission: auth_pb2.Permission) -> None:
        """RoleGrantPermission: a new interval, or a new type for the same one.

        As etcd, only the first permission whose key is not before the new one's is looked
        at for "the same interval"; permissions stay sorted by key.

        Raises:
            AuthError: no such role; too many permissions.
        """
        role = self._roles.get(name)
        if role is None:
            raise AuthError(ROLE_NOT_FOUND)
        updated = auth_pb2.Role()
        updated.CopyFrom(role)
        perms = updated.keyPermission
        index = bisect.bisect_left([p.key for p in perms], permission.key)
        if (
            index < len(perms)
            and perms[index].key == permission.key
            and perms[index].range_end == permission.range_end
        ):
            perms[index].permType = permission.permType
        else:
            if len(perms) >= PERMISSIONS_PER_ROLE_MAX:
                raise AuthError(INVALID_AUTH_MGMT)
            fresh = auth_pb2.Permission(
                key=permission.key, range_end=permission.range_end, permType=permission.permType
            )
            ordered = sorted([*perms, fresh], key=lambda p: p.key)
            del perms[:]
            perms.extend(ordered)
        self._put_role(name, updated)

    def role_revoke_permission(self, name: str, key: bytes, range_end: bytes) -> None:
        """RoleRevokePermission of the interval ``[key, range_end)`` exactly.

        Raises:
            AuthError: no such role; no such permission.
        """
        role = self._roles.get(name)
        if role is None:
            raise AuthError(ROLE_NOT_FOUND)
        kept = [p for p in role.keyPermission if (p.key, p.range_end) != (key, range_end)]
        if len(kept) == len(role.keyPermission):
            raise AuthError(PERMISSION_NOT_GRANTED)
        updated = auth_pb2.Role(name=role.name, keyPermission=kept)
        self._put_role(name, updated)

    # -- internals ------------------------------------------------------------------------

    def _put_user(self, name: str, user: auth_pb2.User) -> None:
        self._users[name] = user
        self._changes[USER_PREFIX + name.encode()] = _seal_message(user)
        self._refresh()

    def _put_role(self, name: str, role: auth_pb2.Role) -> None:
        self._roles[name] = role
        self._changes[ROLE_PREFIX + name.encode()] = _seal_message(role)
        self._refresh()

    def _bump(self) -> None:
        self.revision += 1
        self._changes[REVISION_KEY] = seal(_U64.pack(self.revision))

    def _refresh(self) -> None:
        """A change was written: bump the revision and rebuild every user's merged rights
        (as etcd's ``refreshRangePermCache``; auth changes are rare)."""
        self._bump()
        self._rights = {name: self._merged(user) for name, user in self._users.items()}

    def _merged(self, user: auth_pb2.User) -> _Rights:
        read: list[Interval] = []
        write: list[Interval] = []
        for role_name in user.roles:
            role = self._roles.get(role_name)
            if role is None:
                continue
            for perm in role.keyPermission:
                if not perm.key:
                    continue  # etcd's interval bounds read an empty key as +infinity
                interval = request_interval(perm.key, perm.range_end)
                if perm.permType in (READ, READWRITE):
                    read.append(interval)
                if perm.permType in (WRITE, READWRITE):
                    write.append(interval)
        return _Rights(merge(read), merge(write))

    # -- persistence ----------------------------------------------------------------------

    def take_changes(self) -> list[tuple[bytes, bytes | None]]:
        """The records changed since the last call (``None``: delete)."""
        changes = sorted(self._changes.items())
        self._changes.clear()
        return changes

    @classmethod
    def load(cls, kv: ReadableKV) -> AuthStore:
        """The store persisted in ``kv``.

        Raises:
            StorageCorrupted: a record fails validation.
        """
        store = cls()
        for key, value in kv.scan(PREFIX, prefix_end(PREFIX), bulk=True):
            store._load_record(key, value)
        store._rights = {name: store._merged(user) for name, user in store._users.items()}
        return store

    def reload(self, kv: ReadableKV) -> None:
        """Replace everything with what ``kv`` holds (a snapshot was installed).

        Raises:
            StorageCorrupted: a record fails validation; the store is unchanged.
        """
        fresh = AuthStore.load(kv)
        self.enabled, self.revision = fresh.enabled, fresh.revision
        self._users, self._roles, self._rights = fresh._users, fresh._roles, fresh._rights
        self._changes.clear()

    def _load_record(self, key: bytes, value: bytes) -> None:
        body = unseal(key, value)
        if key == ENABLED_KEY:
            (flag,) = unpack_exact(key, _U64, body)
            self.enabled = flag == 1
        elif key == REVISION_KEY:
            (self.revision,) = unpack_exact(key, _U64, body)
        elif key.startswith(USER_PREFIX):
            user = _parse(key, auth_pb2.User, bytes(body))
            self._users[_name(key, USER_PREFIX, user.name)] = user
        elif key.startswith(ROLE_PREFIX):
            role = _parse(key, auth_pb2.Role, bytes(body))
            self._roles[_name(key, ROLE_PREFIX, role.name)] = role
        else:
            raise StorageCorrupted(f"not an auth record key: {key!r}")


def _seal_message(message: auth_pb2.User | auth_pb2.Role) -> bytes:
    return seal(message.SerializeToString(deterministic=True))


def _parse(key: bytes, kind: type[_M], body: bytes) -> _M:
    message = kind()
    try:
        message.ParseFromString(body)
    except DecodeError as error:
        raise StorageCorrupted(f"auth record {key!r} is malformed: {error}") from None
    return message


def _name(key: bytes, prefix: bytes, stored: bytes) -> str:
    if key[len(prefix) :] != stored:
        raise StorageCorrupted(f"auth record {key!r} holds the name {stored!r}")
    try:
        return stored.decode()
    except UnicodeDecodeError:
        raise StorageCorrupted(f"auth record {key!r} has a name that is not UTF-8") from None
