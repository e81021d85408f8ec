"""Three real members in one process: election, writes, linearizable reads, restarts."""

from __future__ import annotations

import pytest
import trio

from actors.member import READ_INDEX_RETRY_S
from actors.raft_actor import RaftInput, ReadIndex
from storage.v2store.model import V2Error, V2Request
from tests.actors.cluster_helpers import put, start_cluster


async def test_a_cluster_elects_a_leader_and_replicates_a_write(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        follower = next(m for m in cluster.members.values() if m is not leader)
        event = await follower.propose_v2(put("/message", "hello"))
        assert event.node.value == "hello"
        for member in cluster.members.values():
            await member.confirm_read()
            got = member.machine.store.get("/message", recursive=False, sorted=False, now_ns=0)
            assert got.node.value == "hello"
        nursery.cancel_scope.cancel()


async def test_errors_come_back_to_the_proposer(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        await leader.propose_v2(put("/k", "one"))
        with pytest.raises(V2Error) as error:
            await leader.propose_v2(V2Request(method="PUT", path="/k", value="x", prev_exist=False))
        assert error.value.code == 105
        nursery.cancel_scope.cancel()


async def test_a_restarted_member_keeps_what_it_applied(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        for number in range(20):
            await leader.propose_v2(put(f"/k{number}", str(number)))
        name = next(n for n, m in cluster.members.items() if m is not leader)
        applied_before = cluster.members[name].applied_index()
        cluster.stop(name)
        await leader.propose_v2(put("/while-down", "x"))
        restarted = await cluster.start(name)
        assert restarted.applied_index() >= applied_before
        await restarted.confirm_read()
        got = restarted.machine.store.get("/while-down", recursive=False, sorted=False, now_ns=0)
        assert got.node.value == "x"
        nursery.cancel_scope.cancel()


async def test_the_cluster_survives_losing_its_leader(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        await leader.propose_v2(put("/before", "1"))
        old_name = next(n for n, m in cluster.members.items() if m is leader)
        cluster.stop(old_name)
        new_leader = await cluster.leader()
        assert new_leader is not leader
        await new_leader.propose_v2(put("/after", "2"))
        await cluster.start(old_name)
        rejoined = cluster.members[old_name]
        await rejoined.confirm_read()
        got = rejoined.machine.store.get("/after", recursive=False, sorted=False, now_ns=0)
        assert got.node.value == "2"
        nursery.cancel_scope.cancel()


async def test_the_leader_expires_ttl_keys_through_the_log(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        follower = next(m for m in cluster.members.values() if m is not leader)
        now_ns = follower.clock.now_ns()
        await follower.propose_v2(put("/short", "v", expiration_ns=now_ns + 2 * 10**9))
        watcher = follower.machine.store.watch("/short", recursive=False, stream=False)
        with trio.fail_after(10):
            event = await watcher.receive()
        assert event.action == "expire"
        for member in cluster.members.values():
            await member.confirm_read()
            with pytest.raises(V2Error) as error:
                member.machine.store.get("/short", recursive=False, sorted=False, now_ns=0)
            assert error.value.code == 100
        nursery.cancel_scope.cancel()


class _LosesFirstReadIndex:
    """The raft inbox of a member, except that its first ReadIndex never arrives."""

    def __init__(self, inner: trio.MemorySendChannel[RaftInput]) -> None:
        self.inner = inner
        self.lost = 0

    async def send(self, item: RaftInput) -> None:
        if isinstance(item, ReadIndex) and not self.lost:
            self.lost += 1
            return
        await self.inner.send(item)


async def test_a_lost_read_index_is_asked_again_not_waited_out(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        await leader.propose_v2(put("/k", "v"))
        follower = next(m for m in cluster.members.values() if m is not leader)
        lossy = _LosesFirstReadIndex(follower.raft_send)
        follower.raft_send = lossy  # type: ignore[assignment]
        started = trio.current_time()
        await follower.confirm_read()
        assert lossy.lost == 1
        assert trio.current_time() - started < 2 * READ_INDEX_RETRY_S
        nursery.cancel_scope.cancel()
