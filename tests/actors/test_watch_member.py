"""The Watch RPC through real members in one process: the service over each member's hub, fed
by its apply actor, with writes going through Raft from any member."""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio
from google.protobuf.message import Message

from actors.member import Member
from actors.v3_backend import MemberV3Backend
from actors.watch_backend import MemberWatchBackend
from net.etcdpb import rpc_pb2
from net.v3.methods import CallContext
from net.v3.watch_service import WatchService
from storage.mvcc.watch import WatchHub
from tests.actors.cluster_helpers import start_cluster


class Client:
    """One Watch call on a member: requests in through a channel, responses collected."""

    def __init__(self, member: Member, nursery: trio.Nursery) -> None:
        self.requests, self._incoming = trio.open_memory_channel[Message](16)
        self.responses: list[rpc_pb2.WatchResponse] = []
        self.gate = trio.Event()
        self.gate.set()
        self.service = WatchService(MemberWatchBackend(member))
        nursery.start_soon(self.service.watch, self._requests(), self._send, CallContext())

    async def _requests(self) -> AsyncIterator[Message]:
        async for request in self._incoming:
            yield request

    async def _send(self, message: Message) -> None:
        await self.gate.wait()
        assert isinstance(message, rpc_pb2.WatchResponse)
        self.responses.append(message)

    async def create(self, key: bytes, range_end: bytes = b"", **fields: object) -> None:
        create = rpc_pb2.WatchCreateRequest(key=key, range_end=range_end, **fields)  # type: ignore[arg-type]
        await self.requests.send(rpc_pb2.WatchRequest(create_request=create))

    def events(self, watch_id: int = 0) -> list[tuple[int, bytes, bytes]]:
        return [
            (event.kv.mod_revision, event.kv.key, event.prev_kv.value)
            for response in self.responses
            if response.watch_id == watch_id
            for event in response.events
        ]


async def wait_for(condition: object, timeout_s: float = 10.0) -> None:
    with trio.fail_after(timeout_s):
        while not condition():  # type: ignore[operator]
            await trio.sleep(0.01)


def put(key: bytes, value: bytes) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=key, value=value)


async def test_watchers_on_every_member_see_the_writes_of_any_member(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        clients = [Client(member, nursery) for member in cluster.members.values()]
        for client in clients:
            await client.create(b"w/", b"w0", prev_kv=True)
        await wait_for(lambda: all(len(c.responses) == 1 for c in clients))
        assert all(c.responses[0].created and c.responses[0].watch_id == 0 for c in clients)
        follower = next(m for m in cluster.members.values() if m is not leader)
        for number in range(5):
            await MemberV3Backend(follower).put(put(b"w/k", b"%d" % number))
        await MemberV3Backend(leader).put(put(b"other", b"x"))
        want = [(2 + n, b"w/k", b"%d" % (n - 1) if n else b"") for n in range(5)]
        await wait_for(lambda: all(len(c.events()) == 5 for c in clients))
        for client in clients:
            assert client.events() == want
            assert client.responses[-1].header.member_id != 0
            assert client.responses[-1].header.cluster_id == leader.cluster_id
        nursery.cancel_scope.cancel()


async def test_a_past_start_replays_and_a_compacted_one_is_cancelled(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery, size=1)
        member = await cluster.leader()
        backend = MemberV3Backend(member)
        for number in range(6):
            await backend.put(put(b"k", b"%d" % number))
        await backend.compact(rpc_pb2.CompactionRequest(revision=4, physical=True))
        client = Client(member, nursery)
        await client.create(b"k", start_revision=5)
        await client.create(b"k", start_revision=3)
        await wait_for(lambda: len(client.responses) == 4)
        created, other_created, *rest = client.responses
        replay, cancel = sorted(rest, key=lambda response: response.watch_id)
        assert created.created and other_created.created and created.header.revision == 7
        assert replay.watch_id == 0 and [e.kv.mod_revision for e in replay.events] == [5, 6, 7]
        assert replay.header.revision == 7
        assert cancel.watch_id == 1 and cancel.canceled and cancel.compact_revision == 4
        assert cancel.header.revision == 0 and cancel.header.member_id == member.member_id
        nursery.cancel_scope.cancel()


async def test_a_stream_that_does_not_read_is_caught_up_without_a_gap(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery, size=1)
        member = await cluster.leader()
        backend = MemberV3Backend(member)
        client = Client(member, nursery)
        await client.create(b"s/", b"s0")
        await wait_for(lambda: len(client.responses) == 1)
        client.gate = trio.Event()  # the client stops reading
        for number in range(300):
            await backend.put(put(b"s/%d" % (number % 7), b"v"))
        hub: WatchHub = member.apply_actor.watch_hub
        assert len(hub.unsynced) == 1  # its queue filled: it left the synced group
        client.gate.set()
        await wait_for(lambda: len(client.events()) == 300)
        assert [revision for revision, _, _ in client.events()] == list(range(2, 302))
        await wait_for(lambda: len(hub.synced) == 1 and not hub.unsynced)
        nursery.cancel_scope.cancel()


async def test_a_member_that_rejoins_through_a_snapshot_serves_watches_from_its_history(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(
            nursery, snapshot_every_entries=20, snapshot_catch_up_entries=5
        )
        leader = await cluster.leader()
        backend = MemberV3Backend(leader)
        name = next(n for n, m in cluster.members.items() if m is not leader)
        cluster.stop(name)
        for number in range(60):
            await backend.put(put(b"r/%02d" % number, b"v"))
        rejoined = await cluster.start(name)
        client = Client(rejoined, nursery)
        await client.create(b"r/", b"r0", start_revision=30)
        await wait_for(lambda: len(client.events()) == 32, timeout_s=30)
        assert [revision for revision, _, _ in client.events()] == list(range(30, 62))
        nursery.cancel_scope.cancel()
