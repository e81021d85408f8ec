"""Auth at apply time: the auth entries, and the permission checks of KV entries, as etcd's
``authApplierV3`` (``etcdserver/apply_auth.go``) does them on every member.

A client's entry carries its user and the auth revision of its token in the request header
(``actors.v3_backend`` sets it for every client write); an entry without a header comes from
the member itself (a lease expiry: etcd revokes those as root) and is not checked. The checks,
while auth is enabled:

- Put: write on the key; with a lease, write on every key attached to it; with ``prev_kv``,
  read on the key. DeleteRange: write on the range, and read with ``prev_kv``.
- Txn: read on every compare's range, then each op of both branches (read for a range, write
  for a put, write and with ``prev_kv`` read for a delete). etcd 3.4 does not look into a
  nested txn; troika checks nested txns the same way (a nested write is not let through).
- LeaseRevoke: write on every key attached to the lease.
- Auth management (everything but Authenticate, UserGet, RoleGet): the root role. UserGet is
  also allowed for oneself, RoleGet for a role one holds.

A refused entry changes nothing and answers the proposer with etcd's error; a key check is
refused with "revision of auth store is old" when the token predates the last auth change.
Authenticate entries make the token on every member (``actors.auth_tokens``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from google.protobuf.message import Message

from actors.auth_tokens import SimpleTokens, TokenProvider
from net.etcdpb import raft_internal_pb2, rpc_pb2
from net.v3 import errors
from net.v3.errors import RpcError
from storage import auth
from storage.auth.store import AuthError, AuthInfo, AuthStore

AUTH_ERRORS: Final[dict[str, Callable[[], RpcError]]] = {
    auth.store.ROOT_USER_NOT_EXIST: errors.root_user_not_exist,
    auth.store.ROOT_ROLE_NOT_EXIST: errors.root_role_not_exist,
    auth.store.USER_ALREADY_EXIST: errors.user_already_exist,
    auth.store.USER_EMPTY: errors.user_empty,
    auth.store.USER_NOT_FOUND: errors.user_not_found,
    auth.store.ROLE_ALREADY_EXIST: errors.role_already_exist,
    auth.store.ROLE_NOT_FOUND: errors.role_not_found,
    auth.store.ROLE_EMPTY: errors.role_empty,
    auth.store.AUTH_FAILED: errors.auth_failed,
    auth.store.PERMISSION_DENIED: errors.permission_denied,
    auth.store.ROLE_NOT_GRANTED: errors.role_not_granted,
    auth.store.PERMISSION_NOT_GRANTED: errors.permission_not_granted,
    auth.store.AUTH_NOT_ENABLED: errors.auth_not_enabled,
    auth.store.INVALID_AUTH_TOKEN: errors.invalid_auth_token,
    auth.store.INVALID_AUTH_MGMT: errors.invalid_auth_mgmt,
    auth.store.AUTH_OLD_REVISION: errors.auth_old_revision,
}


def rpc_error(error: AuthError) -> RpcError:
    """etcd's gRPC error for an auth store refusal."""
    return AUTH_ERRORS[error.kind]()


_ADMIN_FIELDS: Final = frozenset(
    {
        "auth_enable",
        "auth_disable",
        "auth_user_add",
        "auth_user_delete",
        "auth_user_change_password",
        "auth_user_grant_role",
        "auth_user_revoke_role",
        "auth_user_list",
        "auth_role_add",
        "auth_role_delete",
        "auth_role_grant_permission",
        "auth_role_revoke_permission",
        "auth_role_list",
    }
)
AUTH_FIELDS: Final = _ADMIN_FIELDS | {"auth_user_get", "auth_role_get", "authenticate"}
"""The ``InternalRaftRequest`` fields this module applies."""


def auth_field(request: raft_internal_pb2.InternalRaftRequest) -> str | None:
    """The auth request an entry holds, if any."""
    for name in AUTH_FIELDS:
        if request.HasField(name):  # type: ignore[arg-type]
            return name
    return None


def _no_time() -> float:
    return 0.0


AuthResponse = (
    rpc_pb2.AuthEnableResponse
    | rpc_pb2.AuthDisableResponse
    | rpc_pb2.AuthenticateResponse
    | rpc_pb2.AuthUserAddResponse
    | rpc_pb2.AuthUserDeleteResponse
    | rpc_pb2.AuthUserChangePasswordResponse
    | rpc_pb2.AuthUserGrantRoleResponse
    | rpc_pb2.AuthUserRevokeRoleResponse
    | rpc_pb2.AuthUserGetResponse
    | rpc_pb2.AuthUserListResponse
    | rpc_pb2.AuthRoleAddResponse
    | rpc_pb2.AuthRoleDeleteResponse
    | rpc_pb2.AuthRoleGetResponse
    | rpc_pb2.AuthRoleListResponse
    | rpc_pb2.AuthRoleGrantPermissionResponse
    | rpc_pb2.AuthRoleRevokePermissionResponse
)

LeaseKeys = Callable[[int], Iterable[bytes]]
"""The keys attached to a lease (none if it does not exist)."""


class AuthApplier:
    """The auth store and the token provider of one state machine.

    Attributes:
        store: the replicated users, roles and flag.
        tokens: this member's tokens (the member injects its own, with its clock).
    """

    def __init__(self, store: AuthStore | None = None) -> None:
        self.store = store if store is not None else AuthStore()
        self.tokens: TokenProvider = SimpleTokens(_no_time)

    # -- checks of KV entries -------------------------------------------------------------

    def check(
        self, request: raft_internal_pb2.InternalRaftRequest, lease_keys: LeaseKeys
    ) -> RpcError | None:
        """The error a client's KV or lease entry is refused with, or None (always None
        while auth is disabled, or for an entry without a header)."""
        if not self.store.enabled or not request.HasField("header"):
            return None
        info = AuthInfo(request.header.username, request.header.auth_revision)
        try:
            if request.HasField("put"):
                self._check_put(info, request.put, lease_keys)
            elif request.HasField("delete_range"):
                self._check_delete(info, request.delete_range)
            elif request.HasField("txn"):
                self.check_txn(info, request.txn)
            elif request.HasField("lease_revoke"):
                for key in lease_keys(request.lease_revoke.ID):
                    self.store.check_put(info, key)
            elif request.HasField("range"):
                self.store.check_range(info, request.range.key, request.range.range_end)
        except AuthError as error:
            return rpc_error(error)
        return None

    def _check_put(
        self, info: AuthInfo, put: rpc_pb2.PutRequest, lease_keys: LeaseKeys | None
    ) -> None:
        self.store.check_put(info, put.key)
        if lease_keys is not None and put.lease:
            for key in lease_keys(put.lease):
                self.store.check_put(info, key)
        if put.prev_kv:
            self.store.check_range(info, put.key, b"")

    def _check_delete(self, info: AuthInfo, delete: rpc_pb2.DeleteRangeRequest) -> None:
        if delete.prev_kv:
            self.store.check_range(info, delete.key, delete.range_end)
        self.store.check_delete(info, delete.key, delete.range_end)

    def check_txn(self, info: AuthInfo, txn: rpc_pb2.TxnRequest) -> None:
        """etcd's ``checkTxnAuth`` (nested txns included). Raises ``AuthError``."""
        for compare in txn.compare:
            self.store.check_range(info, compare.key, compare.range_end)
        for op in (*txn.success, *txn.failure):
            kind = op.WhichOneof("request")
            if kind == "request_range":
                self.store.check_range(info, op.request_range.key, op.request_range.range_end)
            elif kind == "request_put":
                self.store.check_put(info, op.request_put.key)
            elif kind == "request_delete_range":
                self._check_delete(info, op.request_delete_range)
            elif kind == "request_txn":
                self.check_txn(info, op.request_txn)

    # -- auth entries ---------------------------------------------------------------------

    def apply(
        self,
        request: raft_internal_pb2.InternalRaftRequest,
        name: str,
        index: int,
        kv_revision: int,
    ) -> Message | RpcError:
        """Apply the auth entry ``name`` (from ``auth_field``) at log ``index``: its response
        (its header's revision ``kv_revision``, the rest for the service), or the error."""
        info = (
            AuthInfo(request.header.username, request.header.auth_revision)
            if request.HasField("header")
            else None
        )
        try:
            if name in _ADMIN_FIELDS:
                self.store.check_admin(info)
            response = self._apply(request, name, info, index)
        except AuthError as error:
            return rpc_error(error)
        response.header.revision = kv_revision
        return response

    def _apply(
        self,
        request: raft_internal_pb2.InternalRaftRequest,
        name: str,
        info: AuthInfo | None,
        index: int,
    ) -> AuthResponse:
        store = self.store
        if name == "auth_enable":
            store.enable()
            return rpc_pb2.AuthEnableResponse()
        if name == "auth_disable":
            store.disable()
            self.tokens.disable()
            return rpc_pb2.AuthDisableResponse()
        if name == "authenticate":
            return self._authenticate(request.authenticate, index)
        if name == "auth_user_add":
            add = request.auth_user_add
            no_password = add.options.no_password
            store.user_add(add.name, add.hashedPassword.encode(), no_password=no_password)
            return rpc_pb2.AuthUserAddResponse()
        if name == "auth_user_delete":
            store.user_delete(request.auth_user_delete.name)
            self.tokens.invalidate_user(request.auth_user_delete.name)
            return rpc_pb2.AuthUserDeleteResponse()
        if name == "auth_user_change_password":
            change = request.auth_user_change_password
            store.user_change_password(change.name, change.hashedPassword.encode())
            self.tokens.invalidate_user(change.name)
            return rpc_pb2.AuthUserChangePasswordResponse()
        if name == "auth_user_grant_role":
            store.user_grant_role(
                request.auth_user_grant_role.user, request.auth_user_grant_role.role
            )
            return rpc_pb2.AuthUserGrantRoleResponse()
        if name == "auth_user_revoke_role":
            revoke = request.auth_user_revoke_role
            store.user_revoke_role(revoke.name, revoke.role)
            return rpc_pb2.AuthUserRevokeRoleResponse()
        if name == "auth_user_get":
            return self._user_get(request.auth_user_get.name, info)
        if name == "auth_user_list":
            return rpc_pb2.AuthUserListResponse(users=store.user_list())
        if name == "auth_role_add":
            store.role_add(request.auth_role_add.name)
            return rpc_pb2.AuthRoleAddResponse()
        if name == "auth_role_delete":
            store.role_delete(request.auth_role_delete.role)
            return rpc_pb2.AuthRoleDeleteResponse()
        if name == "auth_role_get":
            return self._role_get(request.auth_role_get.role, info)
        if name == "auth_role_list":
            return rpc_pb2.AuthRoleListResponse(roles=store.role_list())
        if name == "auth_role_grant_permission":
            grant = request.auth_role_grant_permission
            store.role_grant_permission(grant.name, grant.perm)
            return rpc_pb2.AuthRoleGrantPermissionResponse()
        if name == "auth_role_revoke_permission":
            revoke_perm = request.auth_role_revoke_permission
            store.role_revoke_permission(revoke_perm.role, revoke_perm.key, revoke_perm.range_end)
            return rpc_pb2.AuthRoleRevokePermissionResponse()
        raise AssertionError(name)

    def _authenticate(
        self, request: raft_internal_pb2.InternalAuthenticateRequest, index: int
    ) -> rpc_pb2.AuthenticateResponse:
        store = self.store
        if not store.enabled:
            raise AuthError(auth.store.AUTH_NOT_ENABLED)
        user = store.user(request.name)
        if user is None or user.options.no_password:
            raise AuthError(auth.store.AUTH_FAILED)
        token = self.tokens.assign(request.name, store.revision, request.simple_token, index)
        return rpc_pb2.AuthenticateResponse(token=token)

    def _user_get(self, name: str, info: AuthInfo | None) -> rpc_pb2.AuthUserGetResponse:
        try:
            self.store.check_admin(info)
        except AuthError:
            if info is None or name != info.username:
                raise
        return rpc_pb2.AuthUserGetResponse(roles=self.store.user_get(name))

    def _role_get(self, role: str, info: AuthInfo | None) -> rpc_pb2.AuthRoleGetResponse:
        try:
            self.store.check_admin(info)
        except AuthError:
            if info is None or not self.store.has_role(info.username, role):
                raise
        return rpc_pb2.AuthRoleGetResponse(perm=self.store.role_get(role))

    def reloaded(self) -> None:
        """The store was replaced by a snapshot's: tokens go if auth is now disabled."""
        if not self.store.enabled:
            self.tokens.disable()
