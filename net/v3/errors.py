"""gRPC status codes and etcd 3.4's v3 errors, as both transports report them.

Every v3 failure is a :class:`RpcError`: a gRPC status code and etcd's message
(``etcdserver/api/v3rpc/rpctypes``). gRPC sends them as the ``grpc-status`` and
``grpc-message`` trailers; the JSON gateway as ``{"error", "message", "code"}``
with the HTTP status grpc-gateway v1 gives that code (:func:`http_status`).
The constructors below are the catalog; code that fails a request raises one
of them, so each message is written once.
"""

from __future__ import annotations

import enum


class StatusCode(enum.IntEnum):
    """gRPC's status codes."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


_HTTP_STATUS = {
    StatusCode.OK: 200,
    StatusCode.CANCELLED: 408,
    StatusCode.UNKNOWN: 500,
    StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.DEADLINE_EXCEEDED: 504,
    StatusCode.NOT_FOUND: 404,
    StatusCode.ALREADY_EXISTS: 409,
    StatusCode.PERMISSION_DENIED: 403,
    StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.FAILED_PRECONDITION: 412,
    StatusCode.ABORTED: 409,
    StatusCode.OUT_OF_RANGE: 400,
    StatusCode.UNIMPLEMENTED: 501,
    StatusCode.INTERNAL: 500,
    StatusCode.UNAVAILABLE: 503,
    StatusCode.DATA_LOSS: 500,
    StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: StatusCode) -> int:
    """The HTTP status the gateway answers a gRPC code with (grpc-gateway v1's table)."""
    return _HTTP_STATUS[code]


class RpcError(Exception):
    """A v3 request failed: a gRPC status code and etcd's message (``str()`` is the message)."""

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"RpcError({self.code.name}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RpcError):
            return NotImplemented
        return (self.code, self.message) == (other.code, other.message)

    def __hash__(self) -> int:
        return hash((self.code, self.message))


def _invalid(message: str) -> RpcError:
    return RpcError(StatusCode.INVALID_ARGUMENT, message)


# -- request validation (etcd answers these before anything reaches Raft) --------------------


def key_not_provided() -> RpcError:
    return _invalid("etcdserver: key is not provided")


def key_not_found() -> RpcError:
    """``ignore_value`` or ``ignore_lease`` on a key that does not exist."""
    return _invalid("etcdserver: key not found")


def value_provided() -> RpcError:
    return _invalid("etcdserver: value is provided")


def lease_provided() -> RpcError:
    return _invalid("etcdserver: lease is provided")


def duplicate_key() -> RpcError:
    return _invalid("etcdserver: duplicate key given in txn request")


def too_many_txn_operations() -> RpcError:
    return _invalid("etcdserver: too many operations in txn request")


def request_too_large() -> RpcError:
    return _invalid("etcdserver: request is too large")


# -- the store ---------------------------------------------------------------------------------


def compacted() -> RpcError:
    return RpcError(
        StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"
    )


def future_revision() -> RpcError:
    return RpcError(
        StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"
    )


def no_space() -> RpcError:
    return RpcError(StatusCode.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")


def lease_not_found() -> RpcError:
    return RpcError(StatusCode.NOT_FOUND, "etcdserver: requested lease not found")


def lease_exists() -> RpcError:
    return RpcError(StatusCode.FAILED_PRECONDITION, "etcdserver: lease already exists")


def lease_ttl_too_large() -> RpcError:
    return RpcError(StatusCode.OUT_OF_RANGE, "etcdserver: too large lease TTL")


def too_many_leases() -> RpcError:
    """troika's bound on leases (``storage.lease.LEASES_MAX``); etcd has none."""
    return RpcError(StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many leases")


# -- the member --------------------------------------------------------------------------------


def too_many_requests() -> RpcError:
    return RpcError(StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests")


def no_leader() -> RpcError:
    return RpcError(StatusCode.UNAVAILABLE, "etcdserver: no leader")


def request_timed_out() -> RpcError:
    return RpcError(StatusCode.UNAVAILABLE, "etcdserver: request timed out")


def corrupt() -> RpcError:
    """etcd's ``ErrGRPCCorrupt``: the member found its own data damaged."""
    return RpcError(StatusCode.DATA_LOSS, "etcdserver: corrupt cluster")


def leader_changed() -> RpcError:
    return RpcError(StatusCode.UNAVAILABLE, "etcdserver: leader changed")


def not_leader() -> RpcError:
    return RpcError(StatusCode.FAILED_PRECONDITION, "etcdserver: not leader")


def not_supported_for_learner() -> RpcError:
    return RpcError(StatusCode.UNAVAILABLE, "etcdserver: rpc not supported for learner")


def not_capable() -> RpcError:
    return RpcError(StatusCode.UNAVAILABLE, "etcdserver: not capable")


# -- auth (etcd's rpctypes, with their codes) -------------------------------------------------


def _failed(message: str) -> RpcError:
    return RpcError(StatusCode.FAILED_PRECONDITION, message)


def root_user_not_exist() -> RpcError:
    return _failed("etcdserver: root user does not exist")


def root_role_not_exist() -> RpcError:
    return _failed("etcdserver: root user does not have root role")


def user_already_exist() -> RpcError:
    return _failed("etcdserver: user name already exists")


def user_empty() -> RpcError:
    return _invalid("etcdserver: user name is empty")


def user_not_found() -> RpcError:
    return _failed("etcdserver: user name not found")


def role_already_exist() -> RpcError:
    return _failed("etcdserver: role name already exists")


def role_not_found() -> RpcError:
    return _failed("etcdserver: role name not found")


def role_empty() -> RpcError:
    return _invalid("etcdserver: role name is empty")


def auth_failed() -> RpcError:
    return _invalid("etcdserver: authentication failed, invalid user ID or password")


def permission_denied() -> RpcError:
    return RpcError(StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")


def role_not_granted() -> RpcError:
    return _failed("etcdserver: role is not granted to the user")


def permission_not_granted() -> RpcError:
    return _failed("etcdserver: permission is not granted to the role")


def auth_not_enabled() -> RpcError:
    return _failed("etcdserver: authentication is not enabled")


def invalid_auth_token() -> RpcError:
    return RpcError(StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")


def invalid_auth_mgmt() -> RpcError:
    return _invalid("etcdserver: invalid auth management")


def auth_old_revision() -> RpcError:
    return _invalid("etcdserver: revision of auth store is old")


# -- transports --------------------------------------------------------------------------------


def unimplemented(method: str) -> RpcError:
    """A method this server does not serve (gRPC's own wording)."""
    return RpcError(StatusCode.UNIMPLEMENTED, f"unknown method {method}")
