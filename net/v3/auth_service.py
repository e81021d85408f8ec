"""etcd 3.4's Auth service: AuthEnable, AuthDisable, Authenticate, and the User* and Role*
RPCs, one implementation behind gRPC and the JSON gateway (``/v3/auth/...``).

As etcd's ``v3rpc/auth.go`` and ``etcdserver/v3_server.go``, every Auth RPC but Authenticate
is one log entry (the reads UserGet, UserList, RoleGet, RoleList too, so their answers are
linearizable and the caller's rights are checked where every member checks them); the
errors come from applying it (``actors.auth_apply``). Two steps happen before proposing, on
the member that received the request:

- UserAdd and UserChangePassword hash the password with bcrypt (``--bcrypt-cost``) and
  propose only the hash (etcd 3.5's ``hashedPassword``; etcd 3.4 hashes at apply, on every
  member, with a different salt on each);
- Authenticate checks the password, then proposes the token's entry.

A user name is checked for emptiness before hashing (etcd answers the same error from the
store). The caller is resolved, and key requests checked, by ``actors.auth_gate``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from google.protobuf.message import Message

from net.etcdpb import raft_internal_pb2, rpc_pb2
from net.etcdpb.routes import grpc_path
from net.v3 import errors
from net.v3.methods import CallContext, Methods, unary_method
from net.v3.service import V3Service

_Response = TypeVar("_Response", bound=Message)


class AuthBackend(Protocol):
    """The member as the Auth service sees it. Calls raise ``RpcError`` for what applying a
    request refused, ``BackendError`` when the member cannot serve now."""

    async def propose_auth(self, entry: raft_internal_pb2.InternalRaftRequest) -> Message:
        """Propose an auth entry (the caller in its header); the response its apply gave."""
        ...

    async def hash_password(self, password: str) -> str:
        """The bcrypt hash of a password, at this member's cost."""
        ...

    async def authenticate(self, name: str, password: str) -> rpc_pb2.AuthenticateResponse:
        """Check the password here, then propose the token's entry."""
        ...


class AuthService:
    """The Auth RPCs over a backend; ``service`` gives the checks and headers every v3
    service shares."""

    def __init__(self, backend: AuthBackend, service: V3Service) -> None:
        self._backend = backend
        self._service = service

    async def _propose(
        self,
        context: CallContext,
        entry: raft_internal_pb2.InternalRaftRequest,
        response_type: type[_Response],
    ) -> _Response:
        self._service.admit(context)
        response = await self._service.call_backend(self._backend.propose_auth, entry)
        assert isinstance(response, response_type), response
        self._service.fill_header(getattr(response, "header"))  # noqa: B009 (every Auth response)
        return response

    async def enable(
        self, request: rpc_pb2.AuthEnableRequest, context: CallContext
    ) -> rpc_pb2.AuthEnableResponse:
        entry = raft_internal_pb2.InternalRaftRequest(auth_enable=request)
        return await self._propose(context, entry, rpc_pb2.AuthEnableResponse)

    async def disable(
        self, request: rpc_pb2.AuthDisableRequest, context: CallContext
    ) -> rpc_pb2.AuthDisableResponse:
        entry = raft_internal_pb2.InternalRaftRequest(auth_disable=request)
        return await self._propose(context, entry, rpc_pb2.AuthDisableResponse)

    async def authenticate(
        self, request: rpc_pb2.AuthenticateRequest, context: CallContext
    ) -> rpc_pb2.AuthenticateResponse:
        self._service.admit(context)
        response = await self._service.call_backend(_authenticate(self._backend), request)
        self._service.fill_header(response.header)
        return response

    async def user_add(
        self, request: rpc_pb2.AuthUserAddRequest, context: CallContext
    ) -> rpc_pb2.AuthUserAddResponse:
        self._service.admit(context)
        if not request.name:
            raise errors.user_empty()
        proposed = rpc_pb2.AuthUserAddRequest(name=request.name, options=request.options)
        if not request.options.no_password:
            proposed.hashedPassword = await self._backend.hash_password(request.password)
        entry = raft_internal_pb2.InternalRaftRequest(auth_user_add=proposed)
        return await self._propose(context, entry, rpc_pb2.AuthUserAddResponse)

    async def user_change_password(
        self, request: rpc_pb2.AuthUserChangePasswordRequest, context: CallContext
    ) -> rpc_pb2.AuthUserChangePasswordResponse:
        self._service.admit(context)
        hashed = await self._backend.hash_password(request.password)
        proposed = rpc_pb2.AuthUserChangePasswordRequest(name=request.name, hashedPassword=hashed)
        entry = raft_internal_pb2.InternalRaftRequest(auth_user_change_password=proposed)
        return await self._propose(context, entry, rpc_pb2.AuthUserChangePasswordResponse)

    async def user_get(
        self, request: rpc_pb2.AuthUserGetRequest, context: CallContext
    ) -> rpc_pb2.AuthUserGetResponse:
        entry = raft_internal_pb2.InternalRaftRequest(auth_user_get=request)
        return await self._propose(context, entry, rpc_pb2.AuthUserGetResponse)

    async def user_list(
        self, request: rpc_pb2.AuthUserListRequest, context: CallContext
    ) -> rpc_pb2.AuthUserListResponse:
        entry = raft_internal_pb2.InternalRaftRequest(auth_user_list=request)
        return await self._propose(context, entry, rpc_pb2.AuthUserListResponse)

    async def user_delete(
        self, request: rpc_pb2.AuthUserDeleteRequest, context: CallContext
    ) -> rpc_pb2.AuthUserDeleteResponse:
        entry = raft_internal_pb2.InternalRaftRequest(auth_user_delete=request)
        return await self._propose(context, entry, rpc_pb2.AuthUserDeleteResponse)

    async def user_grant_role(
        self, request: rpc_pb2.AuthUserGrantRoleRequest, context: CallContext
    ) -> rpc_pb2.AuthUserGrantRoleResponse:
        entry = raft_internal_pb2.InternalRaftRequest(auth_user_grant_role=request)
        return await self._propose(context, entry, rpc_pb2.AuthUserGrantRoleResponse)

    async def user_revoke_role(
        self, request: rpc_pb2.AuthUserRevokeRoleRequest, context: CallContext
    ) -> rpc_pb2.AuthUserRevokeRoleResponse:
        entry = raft_internal_pb2.InternalRaftRequest(auth_user_revoke_role=request)
        return await self._propose(context, entry, rpc_pb2.AuthUserRevokeRoleResponse)

    async def role_add(
        self, request: rpc_pb2.AuthRoleAddRequest, context: CallContext
    ) -> rpc_pb2.AuthRoleAddResponse:
        entry = raft_internal_pb2.InternalRaftRequest(auth_role_add=request)
        return await self._propose(context, entry, rpc_pb2.AuthRoleAddResponse)

    async def role_get(
        self, request: rpc_pb2.AuthRoleGetRequest, context: CallContext
    ) -> rpc_pb2.AuthRoleGetResponse:
        entry = raft_internal_pb2.InternalRaftRequest(auth_role_get=request)
        return await self._propose(context, entry, rpc_pb2.AuthRoleGetResponse)

    async def role_list(
        self, request: rpc_pb2.AuthRoleListRequest, context: CallContext
    ) -> rpc_pb2.AuthRoleListResponse:
        entry = raft_internal_pb2.InternalRaftRequest(auth_role_list=request)
        return await self._propose(context, entry, rpc_pb2.AuthRoleListResponse)

    async def role_delete(
        self, request: rpc_pb2.AuthRoleDeleteRequest, context: CallContext
    ) -> rpc_pb2.AuthRoleDeleteResponse:
        entry = raft_internal_pb2.InternalRaftRequest(auth_role_delete=request)
        return await self._propose(context, entry, rpc_pb2.AuthRoleDeleteResponse)

    async def role_grant_permission(
        self, request: rpc_pb2.AuthRoleGrantPermissionRequest, context: CallContext
    ) -> rpc_pb2.AuthRoleGrantPermissionResponse:
        entry = raft_internal_pb2.InternalRaftRequest(auth_role_grant_permission=request)
        return await self._propose(context, entry, rpc_pb2.AuthRoleGrantPermissionResponse)

    async def role_revoke_permission(
        self, request: rpc_pb2.AuthRoleRevokePermissionRequest, context: CallContext
    ) -> rpc_pb2.AuthRoleRevokePermissionResponse:
        entry = raft_internal_pb2.InternalRaftRequest(auth_role_revoke_permission=request)
        return await self._propose(context, entry, rpc_pb2.AuthRoleRevokePermissionResponse)


def _authenticate(
    backend: AuthBackend,
) -> Callable[[rpc_pb2.AuthenticateRequest], Awaitable[rpc_pb2.AuthenticateResponse]]:
    async def call(request: rpc_pb2.AuthenticateRequest) -> rpc_pb2.AuthenticateResponse:
        return await backend.authenticate(request.name, request.password)

    return call


def auth_methods(backend: AuthBackend, service: V3Service) -> Methods:
    """Auth: every RPC of etcd 3.4's Auth service."""
    auth = AuthService(backend, service)
    rpcs: list[tuple[str, type[Message], Callable[..., Awaitable[Message]]]] = [
        ("AuthEnable", rpc_pb2.AuthEnableRequest, auth.enable),
        ("AuthDisable", rpc_pb2.AuthDisableRequest, auth.disable),
        ("Authenticate", rpc_pb2.AuthenticateRequest, auth.authenticate),
        ("UserAdd", rpc_pb2.AuthUserAddRequest, auth.user_add),
        ("UserGet", rpc_pb2.AuthUserGetRequest, auth.user_get),
        ("UserList", rpc_pb2.AuthUserListRequest, auth.user_list),
        ("UserDelete", rpc_pb2.AuthUserDeleteRequest, auth.user_delete),
        ("UserChangePassword", rpc_pb2.AuthUserChangePasswordRequest, auth.user_change_password),
        ("UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest, auth.user_grant_role),
        ("UserRevokeRole", rpc_pb2.AuthUserRevokeRoleRequest, auth.user_revoke_role),
        ("RoleAdd", rpc_pb2.AuthRoleAddRequest, auth.role_add),
        ("RoleGet", rpc_pb2.AuthRoleGetRequest, auth.role_get),
        ("RoleList", rpc_pb2.AuthRoleListRequest, auth.role_list),
        ("RoleDelete", rpc_pb2.AuthRoleDeleteRequest, auth.role_delete),
        ("RoleGrantPermission", rpc_pb2.AuthRoleGrantPermissionRequest, auth.role_grant_permission),
        (
            "RoleRevokePermission",
            rpc_pb2.AuthRoleRevokePermissionRequest,
            auth.role_revoke_permission,
        ),
    ]
    return {
        grpc_path("Auth", name): unary_method(request_type, handler)
        for name, request_type, handler in rpcs
    }
