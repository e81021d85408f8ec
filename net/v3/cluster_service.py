"""etcd 3.4's v3 Cluster service: MemberAdd (also as a learner), MemberRemove, MemberUpdate,
MemberList and MemberPromote, over a ``ClusterBackend`` (the member).

The rules are etcd's (``etcdserver/api/v3rpc/member.go`` and ``etcdserver/server.go``):

- MemberAdd checks the peer URLs before anything is proposed ("given member URLs are invalid"
  for one that is not ``scheme://host:port``); the new member has no name and no client URLs
  until it starts and publishes them. Its answer names the added member (id, peer URLs,
  learner flag) and the whole member table after the change.
- A cluster holds at most ``LEARNERS_MAX`` learners (etcd 3.4's ``maxLearners``), unless the
  member was started with more (``--troika-max-learners``, for read scaling with learners).
- MemberPromote is decided by the leader, which refuses a learner whose log is not within
  ``LEARNER_READY_FRACTION`` of its own ("can only promote a learner member which is in
  sync with leader"); a voter is refused with "can only promote a learner member". A member
  that does not lead hands the request to the leader (etcd forwards it over the peer port).
- Membership errors become etcd's gRPC errors (``toGRPCErrorMap``): an unknown or removed id
  is "member not found", a peer URL in use "Peer URLs already exists".

Answers carry a header without a revision (etcd's ``ClusterServer.header``). The methods are a
:data:`~net.v3.methods.Methods` table: gRPC and the JSON gateway serve the same code.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from net.backend import (
    BackendError,
    MemberIdExists,
    MemberInfo,
    MemberNotFound,
    MemberRemoved,
    MembershipError,
    PeerUrlExists,
)
from net.etcdpb import rpc_pb2
from net.etcdpb.routes import grpc_path
from net.v3.errors import RpcError, StatusCode
from net.v3.methods import CallContext, Methods, unary_method
from net.v3.service import V3Service, backend_error, member_message

LEARNERS_MAX = 1
"""etcd 3.4's ``maxLearners``: a cluster holds at most one learner."""
LEARNER_READY_FRACTION = 0.9
"""etcd's ``readyPercent``: a learner may be promoted once its match index is at least this
fraction of the leader's."""
PEER_URL_SCHEMES = frozenset({"http", "https", "unix", "unixs"})
"""The schemes etcd's ``types.NewURLs`` takes."""


# -- etcd's errors (rpctypes), as values ------------------------------------------------------


def member_not_found() -> RpcError:
    return RpcError(StatusCode.NOT_FOUND, "etcdserver: member not found")


def member_exists() -> RpcError:
    return RpcError(StatusCode.FAILED_PRECONDITION, "etcdserver: member ID already exist")


def peer_url_exists() -> RpcError:
    return RpcError(StatusCode.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")


def bad_member_urls() -> RpcError:
    return RpcError(StatusCode.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")


def member_not_learner() -> RpcError:
    return RpcError(StatusCode.FAILED_PRECONDITION, "etcdserver: can only promote a learner member")


def learner_not_ready() -> RpcError:
    return RpcError(
        StatusCode.FAILED_PRECONDITION,
        "etcdserver: can only promote a learner member which is in sync with leader",
    )


def too_many_learners() -> RpcError:
    return RpcError(
        StatusCode.FAILED_PRECONDITION, "etcdserver: too many learner members in cluster"
    )


def membership_error(error: MembershipError) -> RpcError:
    """etcd's ``toGRPCErrorMap`` for the membership errors."""
    if isinstance(error, (MemberNotFound, MemberRemoved)):
        return member_not_found()
    if isinstance(error, MemberIdExists):
        return member_exists()
    if isinstance(error, PeerUrlExists):
        return peer_url_exists()
    return RpcError(StatusCode.UNKNOWN, str(error))


# -- pure checks --------------------------------------------------------------------------------


def check_peer_urls(peer_urls: list[str]) -> None:
    """etcd's ``types.NewURLs``: at least one, each ``scheme://host:port`` with no path.

    Raises:
        RpcError: "given member URLs are invalid".
    """
    if not peer_urls:
        raise bad_member_urls()
    for url in peer_urls:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise bad_member_urls() from None
        if parts.scheme not in PEER_URL_SCHEMES or not parts.hostname or port is None:
            raise bad_member_urls()
        if parts.path not in ("", "/"):
            raise bad_member_urls()


def check_add(
    members: list[MemberInfo],
    member_id: int,
    peer_urls: list[str],
    is_learner: bool,
    learners_max: int = LEARNERS_MAX,
) -> None:
    """What etcd refuses of a MemberAdd of ``member_id`` before proposing it, in the order of
    its ``ValidateConfigurationChange``: the id in use (two adds of the same URLs within one
    second get the same id), a peer URL in use, a second learner.

    Raises:
        RpcError: the first of those that applies.
    """
    if any(member.id == member_id for member in members):
        raise member_exists()
    if any(set(peer_urls) & set(member.peer_urls) for member in members):
        raise peer_url_exists()
    if is_learner and sum(member.is_learner for member in members) >= learners_max:
        raise too_many_learners()


def learner_ready(learner_match: int, leader_match: int) -> bool:
    """etcd's ``isLearnerReady``: the learner's log within ``LEARNER_READY_FRACTION`` of the
    leader's."""
    return learner_match >= leader_match * LEARNER_READY_FRACTION


_T = TypeVar("_T")
_R = TypeVar(
    "_R",
    rpc_pb2.MemberAddResponse,
    rpc_pb2.MemberRemoveResponse,
    rpc_pb2.MemberUpdateResponse,
    rpc_pb2.MemberListResponse,
    rpc_pb2.MemberPromoteResponse,
)


class ClusterBackend(Protocol):
    """The member as the Cluster service sees it. Changes return once applied here; they
    raise ``MembershipError``, ``BackendError`` or ``RpcError``."""

    def members(self) -> list[MemberInfo]:
        """Every member, learners included, sorted by id."""
        ...

    async def add_member(self, peer_urls: tuple[str, ...], is_learner: bool) -> MemberInfo:
        """Add a member (it starts later, with ``--initial-cluster-state existing``)."""
        ...

    async def remove_member(self, member_id: int) -> None:
        """Remove a member."""
        ...

    async def update_member(self, member_id: int, peer_urls: tuple[str, ...]) -> None:
        """Change a member's peer URLs."""
        ...

    async def promote_member(self, member_id: int) -> None:
        """Promote a learner that has caught up (decided by the leader)."""
        ...


class ClusterService:
    """The Cluster RPCs over one backend; headers and admission as the v3 service's."""

    def __init__(self, backend: ClusterBackend, service: V3Service) -> None:
        self._backend = backend
        self._service = service

    async def member_add(
        self, request: rpc_pb2.MemberAddRequest, context: CallContext
    ) -> rpc_pb2.MemberAddResponse:
        self._service.admit(context)
        peer_urls = list(request.peerURLs)
        check_peer_urls(peer_urls)
        added = await self._change(self._backend.add_member(tuple(peer_urls), request.isLearner))
        response = rpc_pb2.MemberAddResponse(
            member=rpc_pb2.Member(ID=added.id, peerURLs=peer_urls, isLearner=request.isLearner)
        )
        return self._answer(response)

    async def member_remove(
        self, request: rpc_pb2.MemberRemoveRequest, context: CallContext
    ) -> rpc_pb2.MemberRemoveResponse:
        self._service.admit(context)
        await self._change(self._backend.remove_member(request.ID))
        return self._answer(rpc_pb2.MemberRemoveResponse())

    async def member_update(
        self, request: rpc_pb2.MemberUpdateRequest, context: CallContext
    ) -> rpc_pb2.MemberUpdateResponse:
        self._service.admit(context)
        check_peer_urls(list(request.peerURLs))
        await self._change(self._backend.update_member(request.ID, tuple(request.peerURLs)))
        return self._answer(rpc_pb2.MemberUpdateResponse())

    async def member_list(
        self, request: rpc_pb2.MemberListRequest, context: CallContext
    ) -> rpc_pb2.MemberListResponse:
        self._service.admit(context)
        return self._answer(rpc_pb2.MemberListResponse())

    async def member_promote(
        self, request: rpc_pb2.MemberPromoteRequest, context: CallContext
    ) -> rpc_pb2.MemberPromoteResponse:
        self._service.admit(context)
        await self._change(self._backend.promote_member(request.ID))
        return self._answer(rpc_pb2.MemberPromoteResponse())

    @staticmethod
    async def _change(change: Awaitable[_T]) -> _T:
        try:
            return await change
        except MembershipError as error:
            raise membership_error(error) from error
        except BackendError as error:
            raise backend_error(error) from error

    def _answer(self, response: _R) -> _R:
        """The member table after the change, and a header without a revision."""
        response.members.extend(member_message(m) for m in self._backend.members())
        self._service.fill_cluster_header(response.header)
        return response


def cluster_methods(backend: ClusterBackend, service: V3Service) -> Methods:
    """Cluster: MemberAdd, MemberRemove, MemberUpdate, MemberList, MemberPromote."""
    cluster = ClusterService(backend, service)
    return {
        grpc_path("Cluster", "MemberAdd"): unary_method(
            rpc_pb2.MemberAddRequest, cluster.member_add
        ),
        grpc_path("Cluster", "MemberRemove"): unary_method(
            rpc_pb2.MemberRemoveRequest, cluster.member_remove
        ),
        grpc_path("Cluster", "MemberUpdate"): unary_method(
            rpc_pb2.MemberUpdateRequest, cluster.member_update
        ),
        grpc_path("Cluster", "MemberList"): unary_method(
            rpc_pb2.MemberListRequest, cluster.member_list
        ),
        grpc_path("Cluster", "MemberPromote"): unary_method(
            rpc_pb2.MemberPromoteRequest, cluster.member_promote
        ),
    }


__all__ = [
    "LEARNERS_MAX",
    "LEARNER_READY_FRACTION",
    "ClusterBackend",
    "ClusterService",
    "check_add",
    "check_peer_urls",
    "cluster_methods",
    "learner_not_ready",
    "learner_ready",
    "member_not_found",
    "member_not_learner",
    "too_many_learners",
]
