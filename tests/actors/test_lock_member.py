"""The lock and election services through real members in one process: the KV calls through
Raft, leases granted, revoked and expired by the leader's lessor, waits on each member's watch
hub (``actors.client_api.concurrency_backend``, as the client port builds it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio
from google.protobuf.message import Message

from actors.client_api import concurrency_backend
from actors.member import Member
from actors.v3_backend import MemberV3Backend
from net.etcdpb import rpc_pb2, v3election_pb2, v3lock_pb2
from net.v3.election_service import ElectionService
from net.v3.lease_service import LeaseService
from net.v3.lock_service import LockService
from net.v3.methods import CallContext
from net.v3.service import V3Service
from tests.actors.cluster_helpers import InProcessCluster, start_cluster

CONTEXT = CallContext()


def services(member: Member) -> tuple[LockService, ElectionService, LeaseService]:
    backend = MemberV3Backend(member)
    service = V3Service(backend)
    concurrency = concurrency_backend(member, service)
    return LockService(concurrency), ElectionService(concurrency), LeaseService(backend, service)


async def grant(member: Member, ttl_s: int) -> int:
    request = rpc_pb2.LeaseGrantRequest(TTL=ttl_s)
    return (await services(member)[2].grant(request, CONTEXT)).ID


async def revoke(member: Member, lease: int) -> None:
    await services(member)[2].revoke(rpc_pb2.LeaseRevokeRequest(ID=lease), CONTEXT)


async def lock(member: Member, name: bytes, lease: int, held: list[bytes]) -> None:
    request = v3lock_pb2.LockRequest(name=name, lease=lease)
    held.append((await services(member)[0].lock(request, CONTEXT)).key)


async def settled(cluster: InProcessCluster) -> None:
    """Every member has applied what the leader has (so each hub has seen every write)."""
    leader = await cluster.leader()
    with trio.fail_after(10):
        while any(
            member.applied_index() < leader.applied_index() for member in cluster.members.values()
        ):
            await trio.sleep(0.01)
    await trio.sleep(0.1)


def members(cluster: InProcessCluster) -> list[Member]:
    return [cluster.members[name] for name in sorted(cluster.members)]


async def test_waiters_on_other_members_take_the_lock_in_turn(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        await cluster.leader()
        one, two, three = members(cluster)
        leases = [await grant(one, 60) for _ in range(3)]
        held: list[bytes] = []
        for member, lease in zip((one, two, three), leases, strict=True):
            nursery.start_soon(lock, member, b"q", lease, held)
            await settled(cluster)
        assert held == [b"q/%x" % leases[0]]
        await services(three)[0].unlock(v3lock_pb2.UnlockRequest(key=held[0]), CONTEXT)
        await settled(cluster)
        assert held[1:] == [b"q/%x" % leases[1]]
        await revoke(one, leases[1])  # the holder's lease goes: it loses the lock
        await settled(cluster)
        assert held[2:] == [b"q/%x" % leases[2]]
        nursery.cancel_scope.cancel()


async def test_a_holder_whose_lease_expires_loses_the_lock(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        await cluster.leader()
        one, two, _ = members(cluster)
        short, long = await grant(one, 2), await grant(one, 60)
        held: list[bytes] = []
        await lock(one, b"q", short, held)
        nursery.start_soon(lock, two, b"q", long, held)
        await settled(cluster)
        assert held == [b"q/%x" % short]
        with trio.fail_after(30):  # no keep-alive: the leader's lessor expires the lease
            while len(held) < 2:
                await trio.sleep(0.1)
        assert held == [b"q/%x" % short, b"q/%x" % long]
        nursery.cancel_scope.cancel()


async def test_an_election_observed_on_another_member(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        await cluster.leader()
        one, two, three = members(cluster)
        first, second = await grant(one, 60), await grant(one, 60)
        seen: list[bytes] = []

        async def requests() -> AsyncIterator[Message]:
            yield v3election_pb2.LeaderRequest(name=b"e")

        async def send(message: Message) -> None:
            assert isinstance(message, v3election_pb2.LeaderResponse)
            seen.append(message.kv.value)

        nursery.start_soon(services(three)[1].observe, requests(), send, CONTEXT)
        campaign = v3election_pb2.CampaignRequest(name=b"e", lease=first, value=b"A")
        leader = (await services(one)[1].campaign(campaign, CONTEXT)).leader
        elected: list[bytes] = []

        async def campaign_b() -> None:
            request = v3election_pb2.CampaignRequest(name=b"e", lease=second, value=b"B")
            elected.append((await services(two)[1].campaign(request, CONTEXT)).leader.key)

        nursery.start_soon(campaign_b)
        proclaim = v3election_pb2.ProclaimRequest(leader=leader, value=b"A2")
        await services(two)[1].proclaim(proclaim, CONTEXT)
        await settled(cluster)
        assert (seen, elected) == ([b"A", b"A2"], [])
        await revoke(two, first)
        await settled(cluster)
        assert (seen, elected) == ([b"A", b"A2", b"B"], [b"e/%x" % second])
        answer = await services(three)[1].leader(v3election_pb2.LeaderRequest(name=b"e"), CONTEXT)
        assert answer.kv.value == b"B"
        nursery.cancel_scope.cancel()
