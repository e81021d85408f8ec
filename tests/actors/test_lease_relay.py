"""Renewals forwarded to the leader over the peer transport (``actors.leases``): a round trip
between two members' lease shells, the leader's "retry", and malformed payloads dropped."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.leases import RELAY_KIND, MemberLeases
from actors.raft import Role
from actors.raft_actor import RaftStatus
from net.etcdpb.raft_internal_pb2 import InternalRaftRequest
from storage.lease import LeaseTable

LEADER, FOLLOWER = 1, 2


async def no_revoke(_request: InternalRaftRequest) -> object:
    return None


async def leads(_timeout_s: float) -> None:
    """A ReadIndex round that confirms at once: the member leads."""


def pair() -> tuple[MemberLeases, MemberLeases, LeaseTable]:
    """A leader's and a follower's shells over one table, sending to each other directly."""
    table = LeaseTable()
    shells: dict[int, MemberLeases] = {}

    def sender(source: int) -> Any:
        def send(recipient: int, payload: dict[str, object]) -> bool:
            shells[recipient].on_peer_payload(source, payload)
            return True

        return send

    for member_id in (LEADER, FOLLOWER):
        status = RaftStatus(member_id, term=3, leader_id=LEADER)
        if member_id == LEADER:
            status.role = Role.LEADER
        shells[member_id] = MemberLeases(
            table,
            status,
            member_id=member_id,
            send=sender(member_id),
            propose_revoke=no_revoke,
            confirm_read=leads,
            extend_s=1.0,
            tick_s=0.1,
            request_timeout_s=5.0,
        )
    return shells[LEADER], shells[FOLLOWER], table


async def test_a_follower_renews_at_the_leader(autojump_clock: object) -> None:
    leader, follower, table = pair()
    table.grant(7, 10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(leader.run)
        # Not promoted yet: the leader answers "retry" and the follower asks again.
        answers: list[int] = []

        async def renew() -> None:
            answers.append(await follower.renew(7))

        nursery.start_soon(renew)
        await trio.sleep(1.0)
        assert answers == []
        leader.leader_entry_applied()
        await trio.sleep(1.0)
        assert answers == [10]
        assert await follower.renew(8) == 0  # no such lease
        ttl = await follower.time_to_live(7)
        assert ttl is not None and ttl.granted_s == 10 and 9 <= ttl.remaining_s <= 11
        assert await follower.time_to_live(8) is None
        assert not follower.lessor.primary and leader.lessor.primary
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "payload",
    [
        {RELAY_KIND: "renew"},
        {RELAY_KIND: "renew", "seq": "1", "id": 7},
        {RELAY_KIND: "renew", "seq": 0, "id": 7},
        {RELAY_KIND: "renew", "seq": 1, "id": 1 << 70},
        {RELAY_KIND: "renew", "seq": 1, "id": b"7"},
        {RELAY_KIND: "bogus", "seq": 1, "id": 7},
        {RELAY_KIND: "answer", "seq": 1, "found": "yes", "ttl": 1, "granted": 1},
        {RELAY_KIND: "answer", "seq": 99, "found": True, "ttl": 1, "granted": 1},
        {RELAY_KIND: 5, "seq": 1},
    ],
)
def test_malformed_payloads_are_dropped(payload: dict[str, object]) -> None:
    leader, _, _ = pair()
    leader.on_peer_payload(FOLLOWER, payload)
    assert leader._inbox_receive.statistics().current_buffer_used == 0


async def test_the_leader_says_no_such_lease_only_once_it_applied_what_was_committed(
    autojump_clock: object,
) -> None:
    """A grant committed but not yet applied at the leader (the client heard of it from the
    member that proposed it) must not be answered "not found"."""
    leader, follower, table = pair()
    applied = [5]
    leader._applied_index = lambda: applied[0]
    leader.status.commit_index = 6
    answers: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(leader.run)
        leader.leader_entry_applied()

        async def renew() -> None:
            answers.append(await follower.renew(7))

        nursery.start_soon(renew)
        await trio.sleep(1.0)
        assert answers == []  # entry 6 (the grant) is not applied at the leader yet
        table.grant(7, 10)
        leader.granted(7, 10)
        applied[0] = 6
        await trio.sleep(1.0)
        assert answers == [10]
        leader.status.commit_index = 8  # more entries committed, not yet applied here

        async def renew_unknown() -> None:
            answers.append(await follower.renew(8))

        nursery.start_soon(renew_unknown)
        await trio.sleep(1.0)
        assert answers == [10]  # "not found" waits until entry 8 is applied
        applied[0] = 8
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert answers == [10, 0]


async def test_an_expired_lease_whose_revoke_is_not_committed_answers_ttl_0_not_gone(
    autojump_clock: object,
) -> None:
    """A leader deposed in a minority cannot commit the revoke of a lease that expired there;
    the lease lives on under the next leader. Its time to live stays 0 meanwhile: -1 (what
    etcd's negative remainder becomes a second after expiry) tells clients it is gone."""
    leader, follower, table = pair()
    revokes_sent: list[InternalRaftRequest] = []

    async def revoke_never_commits(request: InternalRaftRequest) -> object:
        revokes_sent.append(request)
        await trio.sleep_forever()

    leader._propose_revoke = revoke_never_commits
    table.grant(7, 2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(leader.run)
        leader.leader_entry_applied()
        leader.granted(7, 2)
        await trio.sleep(5.0)  # three seconds past expiry, the revoke still pending
        assert [request.lease_revoke.ID for request in revokes_sent][:1] == [7]
        for shell in (leader, follower):
            ttl = await shell.time_to_live(7)
            assert ttl is not None and (ttl.remaining_s, ttl.granted_s) == (0, 2)
        nursery.cancel_scope.cancel()


async def test_a_leader_that_cannot_confirm_it_leads_never_says_no_such_lease(
    autojump_clock: object,
) -> None:
    """A leader deposed without knowing it never saw its successor's grants: until a ReadIndex
    round confirms that it leads, its "not in my table" is "retry", not "no such lease"."""
    leader, follower, table = pair()
    confirmations: list[bool] = []

    async def deposed(_timeout_s: float) -> None:
        confirmations.append(False)
        raise TimeoutError("no quorum")

    leader._confirm_read = deposed
    answers: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(leader.run)
        leader.leader_entry_applied()

        async def renew() -> None:
            answers.append(await follower.renew(7))

        nursery.start_soon(renew)
        await trio.sleep(2.0)
        assert answers == [] and len(confirmations) >= 2  # asked, refused, asked again
        table.grant(7, 10)  # the successor's grant reaches it: the lease was there all along
        leader.granted(7, 10)
        await trio.sleep(1.0)
        assert answers == [10]
        leader._confirm_read = leads
        assert await follower.renew(8) == 0  # confirmed: now it may say so
        nursery.cancel_scope.cancel()
