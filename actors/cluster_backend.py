"""The member as the v3 Cluster service sees it: ``net.v3.cluster_service.ClusterBackend``.

Adding, removing and updating members are the v2 members API's paths (``MemberV2Backend``:
the same checks, the same conf changes). Promotion is decided where etcd decides it, on the
leader, which alone knows how far each log matches its own (``Member.match_indexes``): a
member that does not lead sends the request to the leader's client URL through the gateway
(etcd forwards it over the peer port) and returns the leader's answer, error included.
"""

from __future__ import annotations

import logging

from actors.api_backend import MemberErrors, MemberV2Backend, MemberView, translate
from actors.member import Member
from actors.membership import member_id_for
from net.backend import MemberInfo, MemberNotFound, MemberRemoved, NoLeader
from net.etcdpb import rpc_pb2
from net.http.client import HttpClient
from net.http.errors import HttpError
from net.v3.client import decode_response, encode_request, rpc_error_from_body
from net.v3.cluster_service import (
    LEARNERS_MAX,
    check_add,
    learner_not_ready,
    learner_ready,
    member_not_learner,
)
from net.v3.errors import RpcError, StatusCode

log = logging.getLogger(__name__)

PROMOTE_PATH = "/v3/cluster/member/promote"
"""Where a follower hands a MemberPromote to the leader (its gateway route)."""


class MemberClusterBackend(MemberView):
    """Implements ``net.v3.cluster_service.ClusterBackend`` for one member.

    Args:
        learners_max: the learners a MemberAdd here lets the cluster hold (etcd's 1 unless
            ``--troika-max-learners`` says more).
    """

    def __init__(self, member: Member, learners_max: int = LEARNERS_MAX) -> None:
        super().__init__(member)
        self.learners_max = learners_max

    def _v2(self) -> MemberV2Backend:
        return MemberV2Backend(self.member)

    async def add_member(self, peer_urls: tuple[str, ...], is_learner: bool) -> MemberInfo:
        added_at_s = self.member.clock.now_ns() // 1_000_000_000
        token = self.member.config.initial_cluster_token
        member_id = member_id_for(list(peer_urls), token, added_at_s)
        check_add(self.members(), member_id, list(peer_urls), is_learner, self.learners_max)
        return await self._v2().add_member(peer_urls, is_learner)

    async def remove_member(self, member_id: int) -> None:
        await self._v2().remove_member(member_id)

    async def update_member(self, member_id: int, peer_urls: tuple[str, ...]) -> None:
        await self._v2().update_member(member_id, peer_urls)

    async def promote_member(self, member_id: int) -> None:
        membership = self.member.membership
        if member_id in membership.removed:
            raise MemberRemoved()
        record = membership.members.get(member_id)
        if record is None:
            raise MemberNotFound()
        if not record.is_learner:
            raise member_not_learner()
        matches = self.member.match_indexes()
        if matches is None:
            await self._forward_promote(member_id)
            return
        if not learner_ready(matches.get(member_id, 0), matches[self.member.member_id]):
            raise learner_not_ready()
        try:
            await self.member.promote_member(member_id)
        except MemberErrors as error:
            raise translate(error) from None

    async def _forward_promote(self, member_id: int) -> None:
        """Ask the leader to promote ``member_id``; its error is ours.

        Raises:
            NoLeader: no leader is known, or it has no client URL.
            RpcError: the leader refused, or could not be reached ("no leader").
        """
        leader = self.leader()
        if leader is None or not leader.client_urls:
            raise NoLeader()
        body = encode_request(rpc_pb2.MemberPromoteRequest(ID=member_id))
        client = HttpClient(self.member.network)
        try:
            with_timeout = self.member.config.request_timeout_s
            reply = await client.request(
                "POST",
                leader.client_urls[0] + PROMOTE_PATH,
                headers=(("Content-Type", "application/json"),),
                body=body,
                timeout=with_timeout,
            )
        except HttpError as error:
            log.info("%x: promote not forwarded to the leader: %s", self.member_id, error)
            raise RpcError(StatusCode.UNAVAILABLE, "etcdserver: no leader") from None
        finally:
            await client.aclose()
        if reply.status != 200:
            raise rpc_error_from_body(reply.status, reply.body)
        decode_response(reply.body, rpc_pb2.MemberPromoteResponse)
