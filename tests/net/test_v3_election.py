"""The v3election service over a fake member (``tests.net.concurrency_fake``): campaigns
queued by create revision, Proclaim and Resign bound to the leader's key, Leader and Observe
as etcd answers them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from google.protobuf.message import Message

from net.etcdpb import v3election_pb2
from net.etcdpb.routes import grpc_path
from net.v3 import errors
from net.v3.concurrency import SESSION_TTL_S, waiter_key
from net.v3.election_service import ElectionService, election_methods
from net.v3.errors import RpcError, StatusCode
from net.v3.methods import CallContext, StreamMethod
from tests.net.concurrency_fake import FakeMember

CONTEXT = CallContext()


def as_client_error(error: RpcError) -> RpcError:
    """What etcd's lock and election servers answer for a member's error: its message with
    code Unknown (they call the member through etcd's client)."""
    return RpcError(StatusCode.UNKNOWN, error.message)


NOT_LEADER = RpcError(StatusCode.UNKNOWN, "election: not leader")
NO_LEADER = RpcError(StatusCode.UNKNOWN, "election: no leader")
LeaderKey = v3election_pb2.LeaderKey


@pytest.fixture
def member() -> FakeMember:
    return FakeMember()


def service(member: FakeMember) -> ElectionService:
    return ElectionService(member)


async def campaign(
    member: FakeMember, lease: int, value: bytes, name: bytes = b"e"
) -> v3election_pb2.CampaignResponse:
    request = v3election_pb2.CampaignRequest(name=name, lease=lease, value=value)
    return await service(member).campaign(request, CONTEXT)


async def leader_value(member: FakeMember, name: bytes = b"e") -> bytes:
    request = v3election_pb2.LeaderRequest(name=name)
    return (await service(member).leader(request, CONTEXT)).kv.value


async def proclaim(member: FakeMember, leader: LeaderKey, value: bytes) -> None:
    request = v3election_pb2.ProclaimRequest(leader=leader, value=value)
    await service(member).proclaim(request, CONTEXT)


async def resign(member: FakeMember, leader: LeaderKey) -> None:
    await service(member).resign(v3election_pb2.ResignRequest(leader=leader), CONTEXT)


class Candidates:
    """Campaigns started in order; ``elected`` lists their LeaderKeys in the order won."""

    def __init__(self, member: FakeMember, nursery: trio.Nursery) -> None:
        self.member = member
        self.nursery = nursery
        self.elected: list[LeaderKey] = []
        self.failed: list[RpcError] = []

    async def start(self, lease: int, value: bytes) -> None:
        async def run() -> None:
            try:
                self.elected.append((await campaign(self.member, lease, value)).leader)
            except RpcError as error:
                self.failed.append(error)

        self.nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()


async def test_an_uncontended_campaign_wins_at_once(member: FakeMember) -> None:
    lease = member.grant(60)
    response = await campaign(member, lease, b"node-A")
    key = waiter_key(b"e/", lease)
    assert response.leader == LeaderKey(
        name=b"e", key=key, rev=response.header.revision, lease=lease
    )
    kv = member.value(key)
    assert kv is not None
    assert (kv.value, kv.lease, kv.create_revision) == (b"node-A", lease, response.leader.rev)
    leader = await service(member).leader(v3election_pb2.LeaderRequest(name=b"e"), CONTEXT)
    assert leader.kv == kv
    assert leader.header.revision == member.store.current_revision


async def test_candidates_win_in_order_as_leaders_resign(member: FakeMember) -> None:
    leases = [member.grant(60) for _ in range(3)]
    async with trio.open_nursery() as nursery:
        candidates = Candidates(member, nursery)
        for index, lease in enumerate(leases):
            await candidates.start(lease, b"v%d" % index)
        assert [key.lease for key in candidates.elected] == leases[:1]
        assert await leader_value(member) == b"v0"
        for index in range(2):
            await resign(member, candidates.elected[index])
            await trio.testing.wait_all_tasks_blocked()
            assert [key.lease for key in candidates.elected] == leases[: index + 2]
            assert await leader_value(member) == b"v%d" % (index + 1)
    assert candidates.failed == []


async def test_a_leader_whose_lease_is_revoked_is_replaced(member: FakeMember) -> None:
    first, second = member.grant(60), member.grant(60)
    async with trio.open_nursery() as nursery:
        candidates = Candidates(member, nursery)
        await candidates.start(first, b"A")
        await candidates.start(second, b"B")
        member.revoke(first)
    assert [key.lease for key in candidates.elected] == [first, second]
    assert await leader_value(member) == b"B"
    with pytest.raises(RpcError) as raised:
        await proclaim(member, candidates.elected[0], b"A again")
    assert raised.value == NOT_LEADER
    assert await leader_value(member) == b"B"


async def test_proclaim_updates_the_leaders_value_only_while_it_leads(
    member: FakeMember,
) -> None:
    lease = member.grant(60)
    leader = (await campaign(member, lease, b"v1")).leader
    await proclaim(member, leader, b"v2")
    assert await leader_value(member) == b"v2"
    stale = LeaderKey(name=leader.name, key=leader.key, rev=leader.rev - 1, lease=lease)
    with pytest.raises(RpcError) as raised:
        await proclaim(member, stale, b"v3")
    assert raised.value == NOT_LEADER
    await resign(member, leader)
    with pytest.raises(RpcError) as raised:
        await proclaim(member, leader, b"v4")
    assert raised.value == NOT_LEADER
    assert member.value(leader.key) is None


async def test_proclaim_and_resign_need_a_leader_key(member: FakeMember) -> None:
    missing = RpcError(StatusCode.UNKNOWN, '"leader" field must be provided')
    with pytest.raises(RpcError) as raised:
        await service(member).proclaim(v3election_pb2.ProclaimRequest(value=b"x"), CONTEXT)
    assert raised.value == missing
    with pytest.raises(RpcError) as raised:
        await service(member).resign(v3election_pb2.ResignRequest(), CONTEXT)
    assert raised.value == missing


async def test_resign_of_a_stale_key_deletes_nothing(member: FakeMember) -> None:
    first, second = member.grant(60), member.grant(60)
    old = (await campaign(member, first, b"A")).leader
    await resign(member, old)
    new = (await campaign(member, second, b"B")).leader
    revision = member.store.current_revision
    await resign(member, LeaderKey(name=b"e", key=new.key, rev=old.rev, lease=second))
    assert member.store.current_revision == revision
    assert await leader_value(member) == b"B"


async def test_leader_of_an_empty_election(member: FakeMember) -> None:
    with pytest.raises(RpcError) as raised:
        await leader_value(member)
    assert raised.value == NO_LEADER


async def test_campaigning_again_with_the_same_lease_proclaims(member: FakeMember) -> None:
    lease = member.grant(60)
    first = await campaign(member, lease, b"v1")
    again = await campaign(member, lease, b"v2")
    assert again.leader == first.leader
    assert await leader_value(member) == b"v2"


async def test_campaign_without_a_lease_grants_a_session_lease(member: FakeMember) -> None:
    response = await campaign(member, 0, b"v")
    (lease,) = member.leases
    assert member.leases[lease] == SESSION_TTL_S
    assert response.leader.lease == lease


async def test_campaign_with_an_unknown_lease_fails(member: FakeMember) -> None:
    with pytest.raises(RpcError) as raised:
        await campaign(member, 777, b"v")
    assert raised.value == as_client_error(errors.lease_not_found())


async def test_a_cancelled_or_expired_candidate_leaves_the_queue(
    member: FakeMember, autojump_clock: object
) -> None:
    first, second, third = (member.grant(60) for _ in range(3))
    await campaign(member, first, b"A")
    with trio.move_on_after(1):
        await campaign(member, second, b"B")
    assert member.keys(b"e/") == [waiter_key(b"e/", first)]
    async with trio.open_nursery() as nursery:
        candidates = Candidates(member, nursery)
        await candidates.start(third, b"C")
        member.revoke(third)  # its key is gone: it must not be told it leads
        await trio.testing.wait_all_tasks_blocked()
        member.revoke(first)
    assert (candidates.elected, candidates.failed) == ([], [NOT_LEADER])


# -- Observe ------------------------------------------------------------------------------------


async def observe(
    member: FakeMember, name: bytes, received: list[v3election_pb2.LeaderResponse]
) -> None:
    async def requests() -> AsyncIterator[Message]:
        yield v3election_pb2.LeaderRequest(name=name)

    async def send(message: Message) -> None:
        assert isinstance(message, v3election_pb2.LeaderResponse)
        received.append(message)

    await service(member).observe(requests(), send, CONTEXT)


async def test_observe_streams_each_leader_and_proclamation(member: FakeMember) -> None:
    a, b = member.grant(60), member.grant(60)
    received: list[v3election_pb2.LeaderResponse] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(observe, member, b"e", received)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []  # no leader yet: it waits
        candidates = Candidates(member, nursery)
        await candidates.start(a, b"A1")
        await candidates.start(b, b"B1")
        await proclaim(member, candidates.elected[0], b"A2")
        await trio.testing.wait_all_tasks_blocked()
        member.revoke(a)
        await trio.testing.wait_all_tasks_blocked()
        await proclaim(member, candidates.elected[1], b"B2")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    seen = [(r.kv.value, r.kv.lease, r.header.revision) for r in received]
    assert seen == [(b"A1", a, 2), (b"A2", a, 4), (b"B1", b, 5), (b"B2", b, 6)]
    assert [r.kv.create_revision for r in received] == [2, 2, 3, 3]


async def test_observe_of_a_present_leader_starts_with_it(member: FakeMember) -> None:
    lease = member.grant(60)
    leader = (await campaign(member, lease, b"A")).leader
    received: list[v3election_pb2.LeaderResponse] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(observe, member, b"e", received)
        await trio.testing.wait_all_tasks_blocked()
        await resign(member, leader)
        await trio.testing.wait_all_tasks_blocked()
        await campaign(member, lease, b"A again")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [(r.kv.value, r.header.revision) for r in received] == [(b"A", 2), (b"A again", 4)]


async def test_observe_ends_quietly_when_its_watch_is_lost(member: FakeMember) -> None:
    await campaign(member, member.grant(60), b"A")
    received: list[v3election_pb2.LeaderResponse] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(observe, member, b"e", received)
        await trio.testing.wait_all_tasks_blocked()
        member.end_watches()  # as etcd's: the stream ends with OK
    assert [r.kv.value for r in received] == [b"A"]


async def test_methods_table(member: FakeMember) -> None:
    methods = election_methods(member)
    names = ("Campaign", "Proclaim", "Leader", "Observe", "Resign")
    assert set(methods) == {grpc_path("Election", name) for name in names}
    assert isinstance(methods[grpc_path("Election", "Observe")], StreamMethod)


async def test_refusals_before_the_handler_keep_their_code(member: FakeMember) -> None:
    member.refusal = errors.no_leader()
    with pytest.raises(RpcError) as raised:
        await campaign(member, member.grant(60), b"v")
    assert raised.value == errors.no_leader()
    with pytest.raises(RpcError) as raised:
        await observe(member, b"e", [])
    assert raised.value == errors.no_leader()
    assert member.calls == []


async def test_proclaim_without_a_lease_attaches_a_session_lease(member: FakeMember) -> None:
    """As etcd (checked on 3.4.23): the server's session grants a lease and the put uses it."""
    lease = member.grant(60)
    leader = (await campaign(member, lease, b"A")).leader
    await proclaim(member, LeaderKey(name=leader.name, key=leader.key, rev=leader.rev), b"B")
    session = max(member.leases)
    assert session != lease and member.leases[session] == SESSION_TTL_S
    kv = member.value(leader.key)
    assert kv is not None and (kv.value, kv.lease) == (b"B", session)
    await resign(member, LeaderKey(name=leader.name, key=leader.key, rev=leader.rev))
    assert len(member.leases) == 2  # etcd's Resign would grant one more, never used
