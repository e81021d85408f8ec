"""The floor of a linearizable v2 get on Python and Trio: a ReadIndex round, no Raft, no store.

Issue 13 asks linearizable v2 gets at 64 connections to reach etcd's rate. In the full run
etcd served about 11,200 a second; troika's leader, its one thread saturated, served 0.57x of
that at about 150 us of its CPU a get. This module measures what the least a linearizable get
of that shape costs the leader here (the companion of ``bench.write_floor``, whose processes,
framing and request parsing it shares).

Three processes on loopback TCP: a leader and two followers. ``bench.loadgen``'s
``get-linearizable`` load (which first puts its read keys: the leader keeps them in a dict,
unreplicated) sends ``GET /v2/keys/...?quorum=true`` to the leader. A get waits for a
heartbeat round that began after it arrived and that one follower answered (with the leader,
a quorum of three), as etcd's ReadIndex does; gets that arrive while a round is in flight
share the next one. Then the leader reads the key from its dict and answers in v2's JSON.
``--workload get-serializable`` answers at once, with no round.

``direct``: the connection's task starts rounds and waits on them itself, the followers'
acknowledgements read by one task a follower. ``staged``: as DESIGN.md's member, a get goes to
a raft stage by a bounded channel, the raft stage sends heartbeats through peer-writer tasks
and hears acknowledgements from peer-reader tasks, and hands each confirmed get back to its
connection by another channel; a follower's reader, raft and writer stages answer heartbeats.

    python -m bench.read_floor -c 64 -d 4 --runs 2
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import cbor2
import trio

from bench.loadgen import LoadResult, LoadSpec
from bench.write_floor import (
    STAGE_CHANNEL_ITEMS,
    FrameReader,
    cpu_us_per_operation,
    dial,
    errors_note,
    floor_parser,
    frame,
    http_response,
    load_cluster,
    peer_writer,
    read_acks,
    serve_follower,
    serve_leader,
    serve_requests,
)

Shape = Literal["direct", "staged"]
Workload = Literal["get-linearizable", "get-serializable"]

NOT_FOUND_BODY = b'{"errorCode":100,"message":"Key not found","index":1}'
NOT_FOUND = http_response(b"404 Not Found", NOT_FOUND_BODY)
CREATED = http_response(b"201 Created", b"{}")


class Keys:
    """The leader's keys: what a get reads once its round is confirmed."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}

    def put(self, key: bytes, body: bytes) -> bytes:
        self.values[key] = body.partition(b"=")[2]
        return CREATED

    def get(self, target: bytes) -> bytes:
        key = target.partition(b"?")[0]
        value = self.values.get(key)
        if value is None:
            return NOT_FOUND
        body = b'{"action":"get","node":{"key":"%s","value":"%s","modifiedIndex":1}}' % (key, value)
        return http_response(b"200 OK", body)


def needs_round(target: bytes) -> bool:
    return target.endswith(b"quorum=true")


class Rounds:
    """Heartbeat rounds that confirm reads: a read waits for a round begun after it arrived.

    ``send_round(n)`` starts round ``n`` on the wire; ``acknowledged(n)`` is called with each
    follower's answer. The first answer to the round in flight confirms it (a quorum of three
    with the leader) and starts the next round if reads wait for one."""

    def __init__(self, send_round: Callable[[int], Awaitable[None]]) -> None:
        self._send_round = send_round
        self._started = 0
        self._in_flight = False
        self._current = trio.Event()
        self._next = trio.Event()
        self._waiting_next = 0

    async def confirm(self) -> None:
        """Return once a round begun after this call has been acknowledged."""
        event = self._next
        self._waiting_next += 1
        if not self._in_flight:
            await self._start()
        await event.wait()

    async def acknowledged(self, round_number: int) -> None:
        if not self._in_flight or round_number != self._started:
            return  # a late answer to a round already confirmed
        self._in_flight = False
        self._current.set()
        if self._waiting_next:
            await self._start()

    async def _start(self) -> None:
        self._in_flight = True
        self._started += 1
        self._current, self._next = self._next, trio.Event()
        self._waiting_next = 0
        await self._send_round(self._started)


async def lead_direct(
    followers: Sequence[int], task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    peers = await dial(followers)
    locks = [trio.StrictFIFOLock() for _ in peers]
    keys = Keys()

    async def send_round(number: int) -> None:
        heartbeat = frame(cbor2.dumps([number]))
        for peer, lock in zip(peers, locks, strict=True):
            async with lock:  # a connection's task or a reader's may start a round
                await peer.send_all(heartbeat)

    rounds = Rounds(send_round)

    async def answer(method: bytes, target: bytes, body: bytes) -> bytes:
        if method == b"PUT":
            return keys.put(target, body)
        if needs_round(target):
            await rounds.confirm()
        return keys.get(target)

    async with trio.open_nursery() as nursery:
        for peer in peers:
            nursery.start_soon(read_acks, peer, rounds.acknowledged)
        listeners = await nursery.start(trio.serve_tcp, lambda s: serve_requests(s, answer), 0)
        task_status.started(listeners[0].socket.getsockname()[1])


async def follow_direct(stream: trio.abc.Stream) -> None:
    reader = FrameReader(stream)
    while (payload := await reader.next()) is not None:
        await stream.send_all(frame(payload))


@dataclass(frozen=True)
class ReadRequest:
    confirmed: trio.MemorySendChannel[None]


async def lead_staged(
    followers: Sequence[int], task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """connection -> raft -> peer writers; peer readers -> raft -> connection."""
    peers = await dial(followers)
    keys = Keys()
    to_raft, raft_inbox = trio.open_memory_channel[object](STAGE_CHANNEL_ITEMS)
    to_peers = [trio.open_memory_channel[bytes](STAGE_CHANNEL_ITEMS) for _ in peers]

    async def send_round(number: int) -> None:
        heartbeat = frame(cbor2.dumps([number]))
        for send, _ in to_peers:
            await send.send(heartbeat)

    async def raft() -> None:
        """The round bookkeeping of ``Rounds``, kept in the stage: no task or event per get."""
        started, in_flight = 0, False
        confirming: list[ReadRequest] = []  # the reads the round in flight will confirm
        waiting: list[ReadRequest] = []  # the reads that came since it began
        async for message in raft_inbox:
            if isinstance(message, ReadRequest):
                waiting.append(message)
                if in_flight:
                    continue
            elif message != started or not in_flight:
                continue  # a late answer to a round already confirmed
            else:
                in_flight = False
                for request in confirming:
                    await request.confirmed.send(None)
                if not waiting:
                    continue
            started, in_flight = started + 1, True
            confirming, waiting = waiting, []
            await send_round(started)

    async def connection(stream: trio.SocketStream) -> None:
        confirmed_in, confirmed_out = trio.open_memory_channel[None](1)

        async def answer(method: bytes, target: bytes, body: bytes) -> bytes:
            if method == b"PUT":
                return keys.put(target, body)
            if needs_round(target):
                await to_raft.send(ReadRequest(confirmed_in))
                await confirmed_out.receive()
            return keys.get(target)

        await serve_requests(stream, answer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(raft)
        for peer, (_, outbox) in zip(peers, to_peers, strict=True):
            nursery.start_soon(peer_writer, peer, outbox)
            nursery.start_soon(read_acks, peer, to_raft.send)
        listeners = await nursery.start(trio.serve_tcp, connection, 0)
        task_status.started(listeners[0].socket.getsockname()[1])


async def follow_staged(stream: trio.abc.Stream) -> None:
    """reader -> raft -> writer."""
    to_raft, raft_inbox = trio.open_memory_channel[bytes](STAGE_CHANNEL_ITEMS)
    to_writer, writer_inbox = trio.open_memory_channel[bytes](STAGE_CHANNEL_ITEMS)

    async def reader() -> None:
        frames = FrameReader(stream)
        while (payload := await frames.next()) is not None:
            await to_raft.send(payload)
        nursery.cancel_scope.cancel()

    async def raft() -> None:
        async for heartbeat in raft_inbox:
            await to_writer.send(frame(heartbeat))

    async def writer() -> None:
        async for data in writer_inbox:
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        for stage in (reader, raft, writer):
            nursery.start_soon(stage)


async def serve_role(arguments: argparse.Namespace) -> None:
    if arguments.role == "follower":
        follow = follow_direct if arguments.shape == "direct" else follow_staged
        await serve_follower(follow)
    lead = lead_direct if arguments.shape == "direct" else lead_staged
    await serve_leader(lead, [int(port) for port in arguments.followers.split(",")])


@dataclass(frozen=True)
class Measured:
    shape: Shape
    load: LoadResult
    cpu_us_per_get: tuple[float, float, float]
    """The leader's, then each follower's."""


def measure(shape: Shape, workload: Workload, connections: int, duration_s: float) -> Measured:
    """A fresh three-process cluster of ``shape``, loaded with gets for ``duration_s``."""
    spec = LoadSpec("http://unset:1", workload, connections, duration_s)
    load, spent = load_cluster("bench.read_floor", ["--shape", shape], spec)
    return Measured(shape, load, cpu_us_per_operation(spent, load))


def describe(measured: Measured) -> str:
    load, (leader, f1, f2) = measured.load, measured.cpu_us_per_get
    return (
        f"{load.workload:<16} {measured.shape:<7} c={load.connections:<3} "
        f"{load.ops_per_s:7.0f} gets/s  p50 {load.latency.p50_ms:5.2f}  "
        f"p99 {load.latency.p99_ms:5.2f} ms  client CPU {load.client_cpu_percent:3.0f} %  "
        f"CPU us a get: leader {leader:4.0f}, followers {f1:3.0f} {f2:3.0f}{errors_note(load)}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.read_floor``."""
    parser = floor_parser("python -m bench.read_floor", __doc__)
    parser.add_argument(
        "--workload", "-w", action="append", choices=("get-linearizable", "get-serializable")
    )
    arguments = parser.parse_args(argv)
    if arguments.role:
        arguments.shape = arguments.shape[0]
        trio.run(serve_role, arguments)
        return
    for _ in range(arguments.runs):
        for connections in arguments.connections or [64]:
            for workload in arguments.workload or ["get-linearizable"]:
                for shape in arguments.shape or ["direct", "staged"]:
                    print(describe(measure(shape, workload, connections, arguments.duration)))


if __name__ == "__main__":
    main()
