"""The Watch RPC through real members in one process: the service over each member's hub, fed
by its apply actor, with writes going through Raft from any member."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from google.protobuf.message import Message

from actors.client_api import gate_methods
from actors.codec import snapshot_from_record
from actors.member import Member
from actors.raft_actor import ApplyWork
from actors.state_machine import StateMachine
from actors.v3_backend import MemberV3Backend
from actors.watch_backend import MemberWatchBackend
from net.etcdpb import rpc_pb2
from net.v3 import errors
from net.v3.errors import RpcError
from net.v3.methods import CallContext, StreamMethod
from net.v3.watch_service import WatchService, watch_methods
from storage.applied_state import AppliedState
from storage.kv import MemoryKeyValueStore
from storage.mvcc.watch import WatchCreate, WatchHub
from storage.raft_store import HardStateRecord, RaftStore, SnapshotRecord, encode_snapshot_chunk
from tests.actors.cluster_helpers import start_cluster
from tests.actors.test_apply_actor import founded, snapshotting_every_5


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
        created, replay = [r for r in client.responses if r.watch_id == 0]
        other_created, cancel = [r for r in client.responses if r.watch_id == 1]
        assert created.created and other_created.created and created.header.revision == 7
        assert [e.kv.mod_revision for e in replay.events] == [5, 6, 7]
        assert replay.header.revision == 7
        assert cancel.canceled and cancel.compact_revision == 4
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


async def _leader_snapshot(
    raft_store: RaftStore, index: int, writes: list[bytes]
) -> SnapshotRecord:
    """A leader's state machine after puts of ``writes`` at revisions 2, 3, ..., as a received
    snapshot at ``index`` in ``raft_store`` (its chunks written)."""
    kv = MemoryKeyValueStore()
    applied = AppliedState(kv)
    leader = StateMachine.empty()
    for key in writes:
        with leader.mvcc.write() as txn:
            txn.put(key, b"from the leader")
    leader.applied_index = index
    await leader.persist(applied)
    size_bytes = 0
    bodies = list(leader.snapshot_chunks(kv, applied))
    for seq, body in enumerate(bodies):
        value = encode_snapshot_chunk(index, seq, body)
        raft_store.put_snapshot_chunk(index, True, seq, value)
        size_bytes += len(value)
    return SnapshotRecord(index, 2, (1, 2, 3), (), b"", len(bodies), size_bytes, True)


async def test_the_apply_actor_resyncs_watchers_after_installing_a_snapshot() -> None:
    """A watcher that had seen revision 2 on this member; the member installs a leader's
    snapshot at revision 6: the watcher gets revisions 3..6 of the new state, once."""
    kv = MemoryKeyValueStore()
    raft_store, applied, machine = await founded(kv)
    actor, _ = snapshotting_every_5(raft_store, applied, machine, kv)
    with machine.mvcc.write() as txn:
        txn.put(b"w/a", b"here")
    actor.watch_hub.publish(machine.mvcc.take_events())
    stream = actor.watch_hub.open_stream()
    stream.create(WatchCreate(b"w/", b"w0", prev_kv=True))
    assert stream.take(10)[0].created
    record = await _leader_snapshot(raft_store, 20, [b"w/a", b"x", b"w/b", b"w/a", b"w/c"])
    await raft_store.save(HardStateRecord(term=2, vote=0, commit=20), [], record)
    await actor.apply(ApplyWork(snapshot_from_record(record), (), ()))
    assert machine.mvcc.current_revision == 6
    assert actor.watch_hub.revision == 6 and len(actor.watch_hub.unsynced) == 1
    while actor.watch_hub.catch_up():
        pass
    [response] = stream.take(10)
    # the leader's w/a at 2 replaced ours (no event: this member had seen revision 2)
    assert [(e.kv.mod_revision, e.kv.key) for e in response.events] == [
        (4, b"w/b"),
        (5, b"w/a"),
        (6, b"w/c"),
    ]
    prev = response.events[1].prev_kv
    assert prev is not None and prev.mod_revision == 2 and prev.value == b"from the leader"
    assert response.revision == 6


async def test_a_stream_that_requires_a_leader_ends_when_its_member_has_none(
    autojump_clock: object,
) -> None:
    """etcd's ``hasleader`` rule: a member cut off from the others ends the stream with "no
    leader" after three election timeouts without one, and refuses a new one at once."""
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        name, follower = next((n, m) for n, m in cluster.members.items() if m is not leader)
        method = gate_methods(follower, watch_methods(MemberWatchBackend(follower)))[
            "/etcdserverpb.Watch/Watch"
        ]
        assert isinstance(method, StreamMethod)
        context = CallContext(metadata=(("hasleader", "true"),))
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        async def requests() -> AsyncIterator[Message]:
            yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k"))
            await trio.sleep_forever()

        ended: list[RpcError] = []

        async def call() -> None:
            try:
                await method.handler(requests(), send, context)
            except RpcError as error:
                ended.append(error)

        nursery.start_soon(call)
        await wait_for(lambda: len(sent) == 1)
        await trio.sleep(5)
        assert not ended  # a leader: the stream lives
        for other in [n for n in cluster.members if n != name]:
            cluster.stop(other)
        lost_at = trio.current_time()
        await wait_for(lambda: bool(ended), timeout_s=30)
        assert ended == [errors.no_leader()]
        election_s = follower.config.election_timeout_s()
        assert trio.current_time() - lost_at >= 3 * election_s
        with pytest.raises(RpcError) as refused:
            await method.handler(requests(), send, context)
        assert refused.value == errors.no_leader()
        nursery.cancel_scope.cancel()


async def test_a_learner_serves_no_stream() -> None:
    """etcd's stream interceptor: "etcdserver: rpc not supported for learner" (Unavailable)."""

    class Learner:
        published = trio.Event()
        config = type("Config", (), {"request_timeout_s": 1.0})()

        def is_learner(self) -> bool:
            return True

    Learner.published.set()
    called: list[bool] = []

    async def handler(requests: object, send: object, context: CallContext) -> None:
        called.append(True)

    methods = {"/etcdserverpb.Watch/Watch": StreamMethod(rpc_pb2.WatchRequest, handler)}
    method = gate_methods(Learner(), methods)["/etcdserverpb.Watch/Watch"]  # type: ignore[arg-type]
    assert isinstance(method, StreamMethod)

    async def nothing() -> AsyncIterator[Message]:
        return
        yield

    with pytest.raises(RpcError) as refused:
        await method.handler(nothing(), lambda message: trio.sleep(0), CallContext())
    assert refused.value == errors.not_supported_for_learner() and not called
