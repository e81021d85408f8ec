"""PeerTransport between members over real TCP on 127.0.0.1, port 0."""

from __future__ import annotations

import itertools
import logging
import socket
from dataclasses import dataclass, field
from random import Random
from typing import Any

import pytest
import trio
import trio.testing

from net.errors import EndOfFrames
from net.frames import FrameReader, Payload, encode_frame
from net.network import ConnectionRefused, Network, StreamHandler
from net.peers import (
    BACKOFF_INITIAL_SECONDS,
    BACKOFF_MAX_SECONDS,
    PROTOCOL_VERSION,
    ExponentialBackoff,
    PeerLimits,
    PeerTransport,
    SnapshotRefused,
)
from net.tcp import TcpNetwork

CLUSTER = 0xC1
LOOPBACK = "127.0.0.1:0"
FAST = PeerLimits(
    backoff_initial_seconds=0.01,
    backoff_max_seconds=0.1,
    dial_timeout_seconds=1.0,
    handshake_timeout_seconds=0.5,
    write_timeout_seconds=1.0,
    pipeline_idle_timeout_seconds=2.0,
    snapshot_answer_timeout_seconds=2.0,
)
DELIVERY_TIMEOUT_SECONDS = 10.0


class ListSink:
    """A ``SnapshotSink`` that keeps each snapshot's chunks in a list (refuses a payload with
    ``"refuse"``, and a chunk ``b"bad"``)."""

    def __init__(self) -> None:
        self.finished: list[tuple[Payload, list[bytes]]] = []
        self.aborted = 0
        self.chunk_bytes_max = 0

    def begin(self, sender: int, payload: Payload, chunks: int, size_bytes: int) -> ListWriter:
        if "refuse" in payload:
            raise SnapshotRefused("not wanted")
        return ListWriter(self, payload)


class ListWriter:
    def __init__(self, sink: ListSink, payload: Payload) -> None:
        self.sink = sink
        self.payload = payload
        self.chunks: list[bytes] = []

    async def chunk(self, seq: int, data: bytes) -> None:
        assert seq == len(self.chunks)
        if data == b"bad":
            raise SnapshotRefused("a bad chunk")
        self.sink.chunk_bytes_max = max(self.sink.chunk_bytes_max, len(data))
        self.chunks.append(data)
        await trio.lowlevel.checkpoint()

    async def finish(self) -> None:
        self.sink.finished.append((self.payload, self.chunks))
        await trio.lowlevel.checkpoint()

    def abort(self) -> None:
        self.sink.aborted += 1


def send_chunks(
    member: Member, to: int, payload: Payload, chunks: list[bytes], on_done: Any
) -> None:
    member.transport.send_snapshot(
        to,
        payload,
        iter(chunks),
        on_done,
        chunk_count=len(chunks),
        size_bytes=sum(len(chunk) for chunk in chunks),
    )


@dataclass
class Member:
    """A PeerTransport served on its own loopback port, with what it reported."""

    member_id: int
    transport: PeerTransport
    inbound: trio.MemoryReceiveChannel[tuple[int, Payload]]
    address: str = ""
    unreachable: list[int] = field(default_factory=list)
    stop: trio.CancelScope = field(default_factory=trio.CancelScope)
    sink: ListSink = field(default_factory=ListSink)

    async def receive(self) -> tuple[int, Payload]:
        with trio.fail_after(DELIVERY_TIMEOUT_SECONDS):
            return await self.inbound.receive()


def make_member(
    member_id: int,
    *,
    cluster_id: int = CLUSTER,
    limits: PeerLimits = FAST,
    network: Network | None = None,
) -> Member:
    inbound_send, inbound_receive = trio.open_memory_channel[tuple[int, Payload]](10_000)
    unreachable: list[int] = []
    transport = PeerTransport(
        network or TcpNetwork(),
        member_id,
        cluster_id,
        inbound_send,
        Random(member_id),
        limits=limits,
        on_unreachable=unreachable.append,
    )
    member = Member(member_id, transport, inbound_receive, unreachable=unreachable)
    transport.set_snapshot_sink(member.sink)
    return member


async def start(nursery: trio.Nursery, member: Member, address: str = LOOPBACK) -> Member:
    """Serve the member's peer port and run its transport, until ``member.stop`` is cancelled."""

    async def run(task_status: trio.TaskStatus[str]) -> None:
        member.stop = trio.CancelScope()
        with member.stop:
            async with trio.open_nursery() as inner:
                bound = await inner.start(
                    TcpNetwork().serve, address, member.transport.serve_connection
                )
                await inner.start(member.transport.run)
                task_status.started(bound)

    member.address = await nursery.start(run)
    return member


async def cluster(nursery: trio.Nursery, *member_ids: int) -> list[Member]:
    members = [await start(nursery, make_member(member_id)) for member_id in member_ids]
    addresses = {member.member_id: member.address for member in members}
    for member in members:
        member.transport.set_peers(addresses)
    return members


def closed_port_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


async def raw_connection(address: str) -> tuple[trio.abc.Stream, FrameReader]:
    stream = await TcpNetwork().connect(address)
    return stream, FrameReader(stream)


def hello(**fields: Any) -> Payload:
    handshake: Payload = {
        "troika": PROTOCOL_VERSION,
        "cluster": CLUSTER,
        "from": 1,
        "to": 2,
        "channel": "stream",
    }
    handshake.update(fields)
    return handshake


async def read_refusal(reader: FrameReader) -> str:
    """The error frame the member sends, and then the close."""
    with trio.fail_after(DELIVERY_TIMEOUT_SECONDS):
        answer = await reader.receive()
        assert sorted(answer) == ["error"]
        with pytest.raises(EndOfFrames):
            await reader.receive()
    reason = answer["error"]
    assert isinstance(reason, str)
    return reason


def logged(caplog: pytest.LogCaptureFixture, *words: str) -> bool:
    return any(
        all(word in record.getMessage() for word in words)
        for record in caplog.records
        if record.name == "net.peers"
    )


# -- the stream channel ---------------------------------------------------------------------


async def test_payloads_arrive_in_order_both_ways(nursery: trio.Nursery) -> None:
    one, two = await cluster(nursery, 1, 2)
    for index in range(500):
        assert one.transport.send(2, {"n": index, "data": b"x" * (index % 7)})
        assert two.transport.send(1, {"n": -index})
    assert [await two.receive() for _ in range(500)] == [
        (1, {"n": index, "data": b"x" * (index % 7)}) for index in range(500)
    ]
    assert [await one.receive() for _ in range(500)] == [(2, {"n": -index}) for index in range(500)]


async def test_three_members_talk_to_each_other(nursery: trio.Nursery) -> None:
    members = await cluster(nursery, 1, 2, 3)
    for sender in members:
        for recipient in members:
            if recipient is not sender:
                assert sender.transport.send(recipient.member_id, {"from": sender.member_id})
    for recipient in members:
        received = sorted([await recipient.receive() for _ in range(2)])
        others = [member.member_id for member in members if member is not recipient]
        assert received == [(other, {"from": other}) for other in others]


class RecordingNetwork:
    """TcpNetwork whose dialed streams remember the size of every write."""

    def __init__(self) -> None:
        self.writes: list[int] = []

    async def connect(self, address: str) -> trio.abc.Stream:
        stream = await TcpNetwork().connect(address)
        writes = self.writes

        class Recording(trio.abc.Stream):
            async def send_all(self, data: bytes | bytearray | memoryview) -> None:
                writes.append(len(data))
                await stream.send_all(data)

            async def wait_send_all_might_not_block(self) -> None:
                await stream.wait_send_all_might_not_block()

            async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
                return await stream.receive_some(max_bytes)

            async def aclose(self) -> None:
                await stream.aclose()

        return Recording()

    async def serve(
        self,
        address: str,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await TcpNetwork().serve(address, handler, task_status=task_status)


async def test_queued_payloads_go_out_in_one_write(nursery: trio.Nursery) -> None:
    network = RecordingNetwork()
    two = await start(nursery, make_member(2))
    one = make_member(1, network=network)
    one.transport.set_peers({2: two.address})
    for index in range(100):
        assert one.transport.send(2, {"n": index})
    await start(nursery, one)
    assert [await two.receive() for _ in range(100)] == [(1, {"n": index}) for index in range(100)]
    assert len(network.writes) == 2  # the handshake, then all hundred frames together
    assert network.writes[1] == sum(len(encode_frame({"n": index})) for index in range(100))


async def test_the_receiver_restarting_is_reported_and_redialed(nursery: trio.Nursery) -> None:
    one, two = await cluster(nursery, 1, 2)
    assert one.transport.send(2, {"n": 0})
    assert await two.receive() == (1, {"n": 0})
    two.stop.cancel()
    with trio.fail_after(DELIVERY_TIMEOUT_SECONDS):
        while 2 not in one.unreachable:
            await trio.sleep(0.01)
    stats = one.transport.stats(2)
    assert stats is not None
    assert stats.reachable is False

    restarted = make_member(2)
    restarted.transport.set_peers({1: one.address})
    await start(nursery, restarted, two.address)  # the same port
    with trio.fail_after(DELIVERY_TIMEOUT_SECONDS):
        while True:  # as Raft does: send again until something arrives
            one.transport.send(2, {"n": 1})
            with trio.move_on_after(0.05):
                assert await restarted.inbound.receive() == (1, {"n": 1})
                break
    stats = one.transport.stats(2)
    assert stats is not None
    assert stats.reachable is True


async def test_a_dead_peer_does_not_delay_a_live_one(nursery: trio.Nursery) -> None:
    # Peer 3 accepts connections and never answers; peer 4 refuses them.
    async def black_hole(stream: trio.abc.Stream) -> None:
        await trio.sleep_forever()

    hole = await nursery.start(TcpNetwork().serve, LOOPBACK, black_hole)
    limits = PeerLimits(
        outbox_payloads_max=16,
        backoff_initial_seconds=0.01,
        backoff_max_seconds=0.1,
        dial_timeout_seconds=30.0,
    )
    two = await start(nursery, make_member(2))
    one = await start(nursery, make_member(1, limits=limits))
    one.transport.set_peers({2: two.address, 3: hole, 4: closed_port_address()})

    started = trio.current_time()
    accepted = {3: 0, 4: 0}
    for index in range(200):
        for dead in (3, 4):
            accepted[dead] += one.transport.send(dead, {"n": index})
        assert one.transport.send(2, {"n": index})
        assert await two.receive() == (1, {"n": index})
    elapsed_seconds = trio.current_time() - started
    assert elapsed_seconds < 2.0, elapsed_seconds
    assert accepted[3] == 16  # the outbox filled, then sends were refused, never waited on
    assert accepted[4] >= 16
    stats = one.transport.stats(3)
    assert stats is not None
    assert stats.dropped_payloads == 200 - 16
    assert 4 in one.unreachable


async def test_set_peers_removes_and_moves_peers(nursery: trio.Nursery) -> None:
    one, two = await cluster(nursery, 1, 2)
    one.transport.set_peers({1: one.address})
    assert not one.transport.send(2, {"n": 0})
    assert one.transport.stats(2) is None

    moved = await start(nursery, make_member(2))
    one.transport.set_peers({2: two.address})
    assert one.transport.send(2, {"n": 1})
    assert await two.receive() == (1, {"n": 1})
    one.transport.set_peers({2: moved.address})
    with trio.fail_after(DELIVERY_TIMEOUT_SECONDS):
        while True:
            one.transport.send(2, {"n": 2})
            with trio.move_on_after(0.05):
                assert await moved.inbound.receive() == (1, {"n": 2})
                break


async def test_set_peers_refuses_a_bad_address() -> None:
    member = make_member(1)
    with pytest.raises(ValueError):
        member.transport.set_peers({2: "no port"})


def test_sending_to_an_unknown_peer_is_a_drop() -> None:
    member = make_member(1)
    assert not member.transport.send(5, {"n": 1})
    assert not member.transport.send(1, {"n": 1})  # not to ourselves either


def test_sending_a_payload_peers_would_refuse_raises() -> None:
    member = make_member(1)
    member.transport.set_peers({2: "127.0.0.1:1"})
    with pytest.raises(ValueError):
        member.transport.send(2, {"n": {1, 2}})


# -- refusals -------------------------------------------------------------------------------


async def test_another_cluster_is_refused_and_logged(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="net.peers")
    two = await start(nursery, make_member(2))
    stranger = await start(nursery, make_member(1, cluster_id=CLUSTER + 1))
    stranger.transport.set_peers({2: two.address})
    stranger.transport.send(2, {"n": 1})
    with trio.fail_after(DELIVERY_TIMEOUT_SECONDS):
        while 2 not in stranger.unreachable:
            await trio.sleep(0.01)
    assert logged(caplog, "refused", "cluster c2 is not ours (c1)")
    assert logged(caplog, "peer 2 unreachable", "handshake refused", "cluster")
    assert two.inbound.statistics().current_buffer_used == 0


@pytest.mark.parametrize(
    ("handshake", "reason"),
    [
        (hello(cluster=7), "cluster 7 is not ours"),
        (hello(to=3), "addressed to member 3"),
        (hello(troika=PROTOCOL_VERSION + 1), "protocol version"),
        (hello(channel="carrier pigeon"), "unknown channel"),
        (hello(**{"from": 2}), "cannot be a peer"),
        (hello(**{"from": "one"}), "not integers"),
        (hello(extra=1), "missing or unknown"),
        ({"hello": "world"}, "not a troika handshake"),
    ],
)
async def test_bad_handshakes_are_refused(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, handshake: Payload, reason: str
) -> None:
    two = await start(nursery, make_member(2))
    stream, reader = await raw_connection(two.address)
    await stream.send_all(encode_frame(handshake))
    assert reason in await read_refusal(reader)
    assert logged(caplog, "refused a connection", reason)
    await stream.aclose()


async def test_garbage_is_refused_and_the_member_serves_on(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    one, two = await cluster(nursery, 1, 2)
    for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x00\x00\x05hello", b"\x00" * 8):
        stream, reader = await raw_connection(two.address)
        await stream.send_all(garbage)
        await read_refusal(reader)
        await stream.aclose()
    assert logged(caplog, "refused a connection", "over the limit")
    assert logged(caplog, "refused a connection", "not a CBOR map")
    assert one.transport.send(2, {"still": "served"})
    assert await two.receive() == (1, {"still": "served"})


async def test_silence_is_refused(nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    two = await start(nursery, make_member(2))
    stream, reader = await raw_connection(two.address)
    await stream.send_all(b"\x00\x00")  # half a length prefix, then nothing
    assert "no handshake in time" in await read_refusal(reader)
    await stream.aclose()


async def test_an_oversized_frame_after_the_handshake_is_refused(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    two = await start(nursery, make_member(2))
    stream, reader = await raw_connection(two.address)
    await stream.send_all(encode_frame(hello()))
    assert await reader.receive() == {"ok": True}
    await stream.send_all(encode_frame({"n": 1}))
    assert await two.receive() == (1, {"n": 1})
    await stream.send_all((FAST.frame_bytes_max + 1).to_bytes(4, "big"))
    assert "over the limit" in await read_refusal(reader)
    assert logged(caplog, "refused a connection from 1", "over the limit")
    await stream.aclose()


async def test_a_malformed_frame_after_the_handshake_is_refused(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    two = await start(nursery, make_member(2))
    stream, reader = await raw_connection(two.address)
    await stream.send_all(encode_frame(hello()))
    assert await reader.receive() == {"ok": True}
    await stream.send_all(b"\x00\x00\x00\x04\xa1\x61\x61\xf7")  # {"a": undefined}
    assert "simple value 23" in await read_refusal(reader)
    await stream.aclose()


async def test_a_peer_that_redials_replaces_its_old_connection(nursery: trio.Nursery) -> None:
    two = await start(nursery, make_member(2))
    old, old_reader = await raw_connection(two.address)
    await old.send_all(encode_frame(hello()))
    assert await old_reader.receive() == {"ok": True}
    new, new_reader = await raw_connection(two.address)
    await new.send_all(encode_frame(hello()))
    assert await new_reader.receive() == {"ok": True}
    with trio.fail_after(DELIVERY_TIMEOUT_SECONDS), pytest.raises(EndOfFrames):
        await old_reader.receive()  # closed by member 2
    await new.send_all(encode_frame({"n": 1}))
    assert await two.receive() == (1, {"n": 1})
    await old.aclose()
    await new.aclose()


# -- the pipeline channel -------------------------------------------------------------------


class Outcomes:
    """What on_done reported, and when."""

    def __init__(self) -> None:
        self.results: list[bool] = []
        self.event = trio.Event()

    def __call__(self, delivered: bool) -> None:
        self.results.append(delivered)
        self.event.set()

    async def wait(self) -> list[bool]:
        with trio.fail_after(DELIVERY_TIMEOUT_SECONDS):
            await self.event.wait()
        await trio.sleep(0.05)  # time for a second call, which must not come
        return self.results


async def test_a_snapshot_of_several_mib_is_delivered_chunk_by_chunk(
    nursery: trio.Nursery,
) -> None:
    one, two = await cluster(nursery, 1, 2)
    generator = Random(5)
    chunks = [generator.randbytes(1024 * 1024) for _ in range(6)] + [b"tail"]
    snapshot = {"index": 10, "term": 2, "voters": [1, 2]}
    outcomes = Outcomes()
    send_chunks(one, 2, snapshot, chunks, outcomes)
    assert outcomes.results == []  # never called from inside send_snapshot
    assert one.transport.send(2, {"n": 1})  # the stream channel is not held up
    received = sorted([await two.receive() for _ in range(2)], key=lambda item: len(item[1]))
    assert received == [(1, {"n": 1}), (1, snapshot)]
    assert await outcomes.wait() == [True]
    assert two.sink.finished == [(snapshot, chunks)]
    assert two.sink.chunk_bytes_max == 1024 * 1024  # one chunk at a time, never reassembled


async def test_a_refused_chunk_aborts_the_transfer(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    one, two = await cluster(nursery, 1, 2)
    outcomes = Outcomes()
    send_chunks(one, 2, {"index": 3}, [b"good", b"bad", b"never"], outcomes)
    assert await outcomes.wait() == [False]
    assert two.sink.finished == []
    assert two.sink.aborted == 1
    assert logged(caplog, "refused a connection from 1", "a bad chunk")
    refused = Outcomes()
    send_chunks(one, 2, {"refuse": True}, [b"x"], refused)
    assert await refused.wait() == [False]
    assert two.sink.aborted == 1  # refused before any writer existed


async def test_a_snapshot_to_a_down_peer_fails(nursery: trio.Nursery) -> None:
    one = await start(nursery, make_member(1))
    one.transport.set_peers({2: closed_port_address()})
    outcomes = Outcomes()
    send_chunks(one, 2, {"index": 1}, [b"x" * 1000], outcomes)
    assert await outcomes.wait() == [False]
    assert 2 in one.unreachable


async def test_a_snapshot_to_an_unknown_peer_fails(nursery: trio.Nursery) -> None:
    one = await start(nursery, make_member(1))
    outcomes = Outcomes()
    send_chunks(one, 2, {"index": 1}, [b"x"], outcomes)
    assert outcomes.results == []
    assert await outcomes.wait() == [False]


async def test_a_snapshot_over_the_receivers_limit_is_refused(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    small = PeerLimits(snapshot_bytes_max=1024 * 1024, backoff_initial_seconds=0.01)
    two = await start(nursery, make_member(2, limits=small))
    one = await start(nursery, make_member(1))
    one.transport.set_peers({2: two.address})
    outcomes = Outcomes()
    send_chunks(one, 2, {"index": 1}, [b"x" * (1024 * 1024), b"y"], outcomes)
    assert await outcomes.wait() == [False]
    assert logged(caplog, "refused a connection from 1", "over the limit of 1048576")
    assert logged(caplog, "snapshot to 2 failed", "over the limit")
    assert two.sink.finished == []


async def test_snapshots_in_flight_are_bounded(nursery: trio.Nursery) -> None:
    one = await start(nursery, make_member(1, limits=PeerLimits(snapshots_outbound_max=1)))
    # A peer that accepts and never answers holds the first snapshot in its dial.
    hole = await nursery.start(TcpNetwork().serve, LOOPBACK, lambda stream: trio.sleep_forever())
    one.transport.set_peers({2: hole})
    first, second = Outcomes(), Outcomes()
    send_chunks(one, 2, {"index": 1}, [b"1"], first)
    send_chunks(one, 2, {"index": 2}, [b"2"], second)
    assert await second.wait() == [False]
    assert first.results == []


async def test_send_snapshot_needs_run() -> None:
    member = make_member(1)
    with pytest.raises(RuntimeError):
        send_chunks(member, 2, {"index": 1}, [b"x"], lambda delivered: None)


# -- parts ----------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap_with_jitter_from_the_generator() -> None:
    backoff = ExponentialBackoff(Random(1), 0.1, 1.0)
    delays = [backoff.next_delay_seconds() for _ in range(8)]
    steps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for delay, step in zip(delays, steps, strict=True):
        assert step / 2 <= delay <= step
    again = ExponentialBackoff(Random(1), 0.1, 1.0)
    assert [again.next_delay_seconds() for _ in range(8)] == delays
    backoff.reset()
    assert backoff.next_delay_seconds() <= 0.1


@pytest.mark.parametrize(
    "fields",
    [
        {"outbox_payloads_max": 0},
        {"backoff_initial_seconds": -1.0},
        {"frame_bytes_max": 1 << 32},
        {"outbox_bytes_max": 1024, "frame_bytes_max": 2048},
        {"backoff_initial_seconds": 2.0, "backoff_max_seconds": 1.0},
    ],
)
def test_limits_that_cannot_work_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PeerLimits(**fields)


class RefusingNetwork:
    """Nothing listens anywhere; remembers when each dial came."""

    def __init__(self) -> None:
        self.dial_times: list[float] = []

    async def connect(self, address: str) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        self.dial_times.append(trio.current_time())
        raise ConnectionRefused(f"nothing listens on {address}")

    async def serve(
        self,
        address: str,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        raise NotImplementedError


async def dial_times_in_virtual_time(seed: int) -> list[float]:
    network = RefusingNetwork()
    inbound_send, _ = trio.open_memory_channel[tuple[int, Payload]](1)
    transport = PeerTransport(network, 1, CLUSTER, inbound_send, Random(seed))
    transport.set_peers({2: "member-2:2380"})
    started = trio.current_time()
    with trio.move_on_after(60):
        await transport.run()
    return [round(time - started, 9) for time in network.dial_times]


async def test_redials_back_off_deterministically_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times = await dial_times_in_virtual_time(seed=3)
    delays = [later - earlier for earlier, later in itertools.pairwise(times)]
    step_seconds = BACKOFF_INITIAL_SECONDS
    for delay in delays:
        assert step_seconds / 2 <= delay <= step_seconds
        step_seconds = min(step_seconds * 2, BACKOFF_MAX_SECONDS)
    assert max(delays) > BACKOFF_MAX_SECONDS / 2
    assert len(times) < 60 / (BACKOFF_MAX_SECONDS / 2) + 10
    assert await dial_times_in_virtual_time(seed=3) == times  # the same seed, the same trace
    assert await dial_times_in_virtual_time(seed=4) != times
