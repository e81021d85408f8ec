"""The floor of a replicated, synced put on Python and Trio: no Raft, no store, no v2 tree.

Issue 13 asks a put at one connection to take at most 1.5x etcd's p50 (0.58 ms p50 for etcd on
this machine, so 0.87 ms). troika's takes 2.15 ms and 3.1 ms of the cluster's CPU. This module
measures what the least a write of that shape costs here, so that the gap can be split into
what any Python and Trio member pays and what troika's own code adds.

Three processes on loopback TCP, as a three-member cluster: a leader and two followers. The
load generator (``bench.loadgen``, the same client as ``troika bench``) sends v2-shaped puts to
the leader. For each put the leader parses the request (httptools, as troika does), encodes an
entry (cbor2, as troika's peer frames), appends it to its log file and ``fdatasync``s it,
sends it to both followers, and answers once two of the three copies are durable (a quorum of
three: ``direct`` waits for its own and one follower's, ``staged`` counts any two, as Raft's
commit does). A follower appends and syncs each entry it receives, then acknowledges it.
There is no batching: at one connection troika's puts do not batch either.

Two shapes of the same work:

``direct``
    one task per connection on the leader does everything in sequence; a follower's
    connection task does its own. The floor of any design on one Trio thread.
``staged``
    the work passes between tasks joined by bounded memory channels, as DESIGN.md's member
    does (api, raft, storage, transport and apply stages; on a follower reader, raft, storage
    and writer): the same hand-offs troika's put makes, none of troika's work inside them.

``--fsync thread`` (troika's way: the sync runs in a worker thread, so a slow disk does not
stall the member) or ``inline``. Prints, per shape and connection count: puts a second, p50
and p99, and each process's CPU microseconds a put.

    python -m bench.write_floor -c 1 -d 4 --runs 2
    python -m bench.write_floor --shape direct --fsync inline -c 1 -c 16
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cbor2
import httptools
import trio

from bench.loadgen import LoadResult, LoadSpec, process_cpu_s, run_load

Shape = Literal["direct", "staged"]
Fsync = Literal["thread", "inline"]

HOST = "127.0.0.1"
FRAME_HEADER = struct.Struct(">I")
FRAME_BYTES_MAX = 1 << 20
RECEIVE_BYTES = 65_536
STAGE_CHANNEL_ITEMS = 256
"""Each stage's inbound channel bound (troika's actors use bounded channels too)."""
START_TIMEOUT_S = 15.0
WARMUP_S = 1.0


# -- pieces both shapes share ------------------------------------------------------------------


class FrameReader:
    """Length-prefixed frames off a stream (the peers' framing, reduced to its bones)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> bytes | None:
        """The next whole frame, or None when the stream ends."""
        while True:
            if len(self._buffer) >= FRAME_HEADER.size:
                (length,) = FRAME_HEADER.unpack_from(self._buffer)
                if length > FRAME_BYTES_MAX:
                    raise ValueError(f"frame of {length} bytes")
                end = FRAME_HEADER.size + length
                if len(self._buffer) >= end:
                    frame = bytes(self._buffer[FRAME_HEADER.size : end])
                    del self._buffer[:end]
                    return frame
            data = await self._stream.receive_some(RECEIVE_BYTES)
            if not data:
                return None
            self._buffer += data


def frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload)) + payload


class Log:
    """An append-only file synced after each entry: the least a durable write can cost."""

    def __init__(self, path: Path, fsync: Fsync) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._fsync = fsync

    async def append(self, entry: bytes) -> None:
        if self._fsync == "inline":
            self._write(entry)
        else:
            await trio.to_thread.run_sync(self._write, entry)

    def _write(self, entry: bytes) -> None:
        os.write(self._fd, entry)
        os.fdatasync(self._fd)


class Requests:
    """httptools' callbacks, gathering each complete request as (method, target, body)."""

    def __init__(self) -> None:
        self.done: list[tuple[bytes, bytes, bytes]] = []
        self._url = b""
        self._body = b""
        self.parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_method(), self._url, self._body))
        self._url, self._body = b"", b""


Answer = Callable[[bytes, bytes, bytes], Awaitable[bytes]]
"""What a server makes of (method, target, body): the whole response."""


class Watches(Protocol):
    """A member's v2 watches (``bench.watch_floor``): fed every entry it applies, and the
    first to see every client request."""

    def publish(self, index: int, key: bytes, value: bytes) -> None:
        """Entry ``index`` (a put of ``value`` to the URL path ``key``) is applied here."""
        ...

    def answering(self, put: Answer) -> Answer:
        """``put``, with watch requests answered from the watches instead."""
        ...


def http_response(status: bytes, body: bytes, index: int = 1) -> bytes:
    """A whole v2-shaped JSON response (``status`` as ``b"201 Created"``)."""
    return (
        b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nX-Etcd-Index: %d\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (status, index, len(body), body)
    )


def response(index: int, key: bytes, value: bytes) -> bytes:
    """A put's answer, as etcd's v2 API gives it (reduced to the node's key, value, index)."""
    body = b'{"action":"set","node":{"key":"%s","value":"%s","modifiedIndex":%d}}' % (
        key,
        value,
        index,
    )
    return http_response(b"201 Created", body, index)


async def serve_requests(stream: trio.SocketStream, answer: Answer) -> None:
    """One client connection: parse, ``answer`` each request in order, send each answer."""
    requests = Requests()
    while True:
        data = await stream.receive_some(RECEIVE_BYTES)
        if not data:
            return
        requests.parser.feed_data(data)
        for method, target, body in requests.done:
            await stream.send_all(await answer(method, target, body))
        requests.done.clear()


async def dial(ports: Sequence[int]) -> list[trio.SocketStream]:
    streams = []
    for port in ports:
        stream = await trio.open_tcp_stream(HOST, port)
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as troika's peers
        streams.append(stream)
    return streams


# -- direct: one task does it all ----------------------------------------------------------------


class Quorum:
    """Which proposed indexes no follower has acknowledged yet, and who waits for one: only
    what is in flight is held (the second follower's late acknowledgements are dropped)."""

    def __init__(self) -> None:
        self._unacknowledged: set[int] = set()
        self._waiting: dict[int, trio.Event] = {}

    def propose(self, index: int) -> None:
        self._unacknowledged.add(index)

    async def acknowledge(self, index: int) -> None:
        if index in self._unacknowledged:  # the first follower's
            self._unacknowledged.discard(index)
            event = self._waiting.pop(index, None)
            if event is not None:
                event.set()

    async def one_follower(self, index: int) -> None:
        """Return once a follower has acknowledged ``index`` (at once if one already has)."""
        if index in self._unacknowledged:
            event = self._waiting[index] = trio.Event()
            await event.wait()


async def peer_writer(peer: trio.SocketStream, outbox: trio.MemoryReceiveChannel[bytes]) -> None:
    """A staged member's writer to one peer: sends what the raft stage framed, in order."""
    async for data in outbox:
        await peer.send_all(data)


async def read_acks(stream: trio.SocketStream, on_ack: Callable[[int], Awaitable[None]]) -> None:
    reader = FrameReader(stream)
    while (payload := await reader.next()) is not None:
        await on_ack(cbor2.loads(payload)[0])


async def lead_direct(
    log: Log,
    followers: Sequence[int],
    watches: Watches | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    peers = await dial(followers)
    locks = [trio.StrictFIFOLock() for _ in peers]
    quorum = Quorum()
    index = 0

    async def put(_method: bytes, key: bytes, body: bytes) -> bytes:
        nonlocal index
        index += 1
        this = index
        value = body.partition(b"=")[2]
        entry = cbor2.dumps([1, this, key, value])
        quorum.propose(this)
        for peer, lock in zip(peers, locks, strict=True):
            async with lock:  # several connections' tasks may send at once
                await peer.send_all(frame(entry))
        await log.append(entry)
        await quorum.one_follower(this)
        if watches is not None:
            watches.publish(this, key, value)
        return response(this, key, value)

    answer = put if watches is None else watches.answering(put)
    async with trio.open_nursery() as nursery:
        for peer in peers:
            nursery.start_soon(read_acks, peer, quorum.acknowledge)
        listeners = await nursery.start(
            trio.serve_tcp, lambda s: serve_requests(s, answer), 0
        )  # fmt: skip
        task_status.started(listeners[0].socket.getsockname()[1])


async def follow_direct(stream: trio.abc.Stream, log: Log, watches: Watches | None = None) -> None:
    reader = FrameReader(stream)
    while (payload := await reader.next()) is not None:
        await log.append(payload)
        _, index, key, value = cbor2.loads(payload)
        await stream.send_all(frame(cbor2.dumps([index])))
        if watches is not None:  # applied once durable here: sooner than a commit allows
            watches.publish(index, key, value)


# -- staged: the same work through DESIGN.md's stages ---------------------------------------------


@dataclass(frozen=True)
class Proposal:
    key: bytes
    value: bytes
    answer: trio.MemorySendChannel[bytes]


async def lead_staged(
    log: Log,
    followers: Sequence[int],
    watches: Watches | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """api -> raft -> (storage, transport) -> raft <- peer readers; raft -> apply -> api."""
    peers = await dial(followers)
    to_raft, raft_inbox = trio.open_memory_channel[object](STAGE_CHANNEL_ITEMS)
    to_storage, storage_inbox = trio.open_memory_channel[tuple[int, bytes]](STAGE_CHANNEL_ITEMS)
    to_apply, apply_inbox = trio.open_memory_channel[tuple[int, Proposal]](STAGE_CHANNEL_ITEMS)
    to_peers = [trio.open_memory_channel[bytes](STAGE_CHANNEL_ITEMS) for _ in peers]

    async def raft() -> None:
        index = 0
        pending: dict[int, Proposal] = {}
        votes: dict[int, int] = {}
        async for message in raft_inbox:
            if isinstance(message, Proposal):
                index += 1
                pending[index] = message
                entry = cbor2.dumps([1, index, message.key, message.value])
                await to_storage.send((index, entry))
                for send, _ in to_peers:
                    await send.send(frame(entry))
                continue
            assert isinstance(message, int)  # an index made durable: ours or a follower's
            votes[message] = votes.get(message, 0) + 1
            if votes[message] == 2:  # a quorum of three: any two, the followers' included
                await to_apply.send((message, pending.pop(message)))
            elif votes[message] == 3:
                del votes[message]

    async def storage() -> None:
        async for index, entry in storage_inbox:
            await log.append(entry)
            await to_raft.send(index)

    async def apply() -> None:
        applied: dict[bytes, bytes] = {}
        async for index, proposal in apply_inbox:
            applied[proposal.key] = proposal.value
            if watches is not None:
                watches.publish(index, proposal.key, proposal.value)
            await proposal.answer.send(response(index, proposal.key, proposal.value))

    async def connection(stream: trio.SocketStream) -> None:
        answers_in, answers_out = trio.open_memory_channel[bytes](1)

        async def put(_method: bytes, key: bytes, body: bytes) -> bytes:
            await to_raft.send(Proposal(key, body.partition(b"=")[2], answers_in))
            return await answers_out.receive()

        await serve_requests(stream, put if watches is None else watches.answering(put))

    async with trio.open_nursery() as nursery:
        for stage in (raft, storage, apply):
            nursery.start_soon(stage)
        for peer, (_, outbox) in zip(peers, to_peers, strict=True):
            nursery.start_soon(peer_writer, peer, outbox)
            nursery.start_soon(read_acks, peer, to_raft.send)
        listeners = await nursery.start(trio.serve_tcp, connection, 0)
        task_status.started(listeners[0].socket.getsockname()[1])


async def follow_staged(stream: trio.abc.Stream, log: Log, watches: Watches | None = None) -> None:
    """reader -> raft -> storage -> raft -> writer (and the watches, once durable here)."""
    to_raft, raft_inbox = trio.open_memory_channel[tuple[str, bytes]](STAGE_CHANNEL_ITEMS)
    to_storage, storage_inbox = trio.open_memory_channel[bytes](STAGE_CHANNEL_ITEMS)
    to_writer, writer_inbox = trio.open_memory_channel[bytes](STAGE_CHANNEL_ITEMS)

    async def reader() -> None:
        frames = FrameReader(stream)
        while (payload := await frames.next()) is not None:
            await to_raft.send(("append", payload))
        nursery.cancel_scope.cancel()

    async def raft() -> None:
        async for kind, payload in raft_inbox:
            if kind == "append":
                await to_storage.send(payload)
                continue
            _, index, key, value = cbor2.loads(payload)
            await to_writer.send(frame(cbor2.dumps([index])))
            if watches is not None:
                watches.publish(index, key, value)

    async def storage() -> None:
        async for entry in storage_inbox:
            await log.append(entry)
            await to_raft.send(("persisted", entry))

    async def writer() -> None:
        async for data in writer_inbox:
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        for stage in (reader, raft, storage, writer):
            nursery.start_soon(stage)


# -- processes and the measurement -------------------------------------------------------------


async def serve_follower(follow: Callable[[trio.SocketStream], Awaitable[None]]) -> None:
    """A follower's process: announce a port, then ``follow`` the leader's connection."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    print(f"listening on port {listeners[0].socket.getsockname()[1]}", flush=True)
    await trio.serve_listeners(follow, listeners)


async def serve_leader(lead: Callable[..., Awaitable[None]], *args: object) -> None:
    """A leader's process: start ``lead(*args)``, announce the client port it serves."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lead, *args)
        print(f"listening on port {port}", flush=True)


async def serve_role(arguments: argparse.Namespace) -> None:
    log = Log(Path(arguments.dir) / "log", arguments.fsync)
    if arguments.role == "follower":
        follow = follow_direct if arguments.shape == "direct" else follow_staged

        async def leader_connection(stream: trio.SocketStream) -> None:
            await follow(stream, log)

        await serve_follower(leader_connection)
    lead = lead_direct if arguments.shape == "direct" else lead_staged
    await serve_leader(lead, log, [int(port) for port in arguments.followers.split(",")])


def floor_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The options both floors share: the hidden role a process plays, and what to measure."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n")[0])
    parser.add_argument("role", nargs="?", choices=("leader", "follower"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--followers", help=argparse.SUPPRESS)
    parser.add_argument("--shape", action="append", choices=("direct", "staged"))
    parser.add_argument("--connections", "-c", type=int, action="append")
    parser.add_argument("--duration", "-d", type=float, default=4.0, help="seconds measured")
    parser.add_argument("--runs", type=int, default=1, help="runs of each, alternately")
    return parser


def start(
    arguments: list[str], module: str = "bench.write_floor"
) -> tuple[subprocess.Popen[bytes], int]:
    """A role's process (``python -m module role ...``), and the port it announced."""
    process, ports = start_listening(arguments, module)
    return process, ports[-1]


def start_listening(arguments: list[str], module: str) -> tuple[subprocess.Popen[bytes], list[int]]:
    """A role's process, and every port it announced (``listening on port N [M ...]``)."""
    command = [sys.executable, "-m", module, *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
    line = process.stdout.readline() if ready else b""
    if not line.startswith(b"listening on port "):
        process.kill()
        process.wait()
        raise RuntimeError(f"{' '.join(arguments)} did not start: {line!r}")
    return process, [int(port) for port in line.split()[3:]]


def load_cluster(
    module: str, role_arguments: list[str], spec: LoadSpec
) -> tuple[LoadResult, list[float]]:
    """Start ``module``'s two followers and its leader (each given ``role_arguments`` and a data
    directory of its own), warm it with ``spec``'s load, then measure it: the load's result and
    the CPU seconds each process spent during it (the leader's first)."""
    with tempfile.TemporaryDirectory(prefix="floor-") as root:
        processes: list[subprocess.Popen[bytes]] = []
        try:
            ports = []
            for name in ("f1", "f2"):
                Path(root, name).mkdir()
                arguments = ["follower", "--dir", str(Path(root, name)), *role_arguments]
                process, port = start(arguments, module)
                processes.append(process)
                ports.append(port)
            Path(root, "leader").mkdir()
            leader, port = start(
                ["leader", "--dir", str(Path(root, "leader")), "--followers",
                 ",".join(map(str, ports)), *role_arguments],
                module,
            )  # fmt: skip
            processes.insert(0, leader)
            spec = dataclasses.replace(spec, endpoint=f"http://{HOST}:{port}", warmup_s=0.0)
            trio.run(run_load, dataclasses.replace(spec, duration_s=WARMUP_S))
            before = [process_cpu_s(process.pid) for process in processes]
            load = trio.run(run_load, spec)
            spent = [process_cpu_s(p.pid) - was for p, was in zip(processes, before, strict=True)]
        finally:
            for process in processes:
                process.kill()
                process.wait()
    return load, spent


def cpu_us_per_operation(spent_s: Sequence[float], load: LoadResult) -> tuple[float, float, float]:
    """The leader's and each follower's CPU microseconds an operation of ``load``."""
    leader_us, f1_us, f2_us = (1e6 * seconds / max(load.requests, 1) for seconds in spent_s)
    return leader_us, f1_us, f2_us


def errors_note(load: LoadResult) -> str:
    """The load's errors, for the end of a result line ("" when none)."""
    return f"  errors {load.errors} {load.error_kinds}" if load.errors else ""


@dataclass(frozen=True)
class Measured:
    shape: Shape
    fsync: Fsync
    load: LoadResult
    cpu_us_per_put: tuple[float, float, float]
    """The leader's, then each follower's."""


def measure(shape: Shape, fsync: Fsync, connections: int, duration_s: float) -> Measured:
    """A fresh three-process cluster of ``shape``, loaded with puts for ``duration_s``."""
    spec = LoadSpec("http://unset:1", "put", connections, duration_s)
    load, spent = load_cluster("bench.write_floor", ["--shape", shape, "--fsync", fsync], spec)
    # The CPU readings also span the client's connecting and closing: a little over the window.
    return Measured(shape, fsync, load, cpu_us_per_operation(spent, load))


def describe(measured: Measured) -> str:
    load, (leader, f1, f2) = measured.load, measured.cpu_us_per_put
    return (
        f"{measured.shape:<7} fsync {measured.fsync:<6} c={load.connections:<3} "
        f"{load.ops_per_s:7.0f} puts/s  p50 {load.latency.p50_ms:5.2f}  "
        f"p99 {load.latency.p99_ms:5.2f} ms  CPU us a put: leader {leader:4.0f}, followers "
        f"{f1:4.0f} {f2:4.0f}, cluster {leader + f1 + f2:5.0f}{errors_note(load)}"
    )


def run_fsync_floor(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    serve: Callable[[argparse.Namespace], Awaitable[None]],
    line: Callable[[argparse.Namespace, Shape, Fsync, int], str],
    connections_default: int,
) -> None:
    """A floor with ``--fsync`` (this one, ``bench.watch_floor``): play the hidden role a
    process was started with, or measure every combination asked, ``line`` printing each."""
    parser.add_argument("--fsync", action="append", choices=("thread", "inline"))
    arguments = parser.parse_args(argv)
    if arguments.role:
        arguments.shape, arguments.fsync = arguments.shape[0], arguments.fsync[0]
        trio.run(serve, arguments)
        return
    for _ in range(arguments.runs):
        for connections in arguments.connections or [connections_default]:
            for fsync in arguments.fsync or ["thread"]:
                for shape in arguments.shape or ["direct", "staged"]:
                    print(line(arguments, shape, fsync, connections))


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.write_floor``."""

    def line(arguments: argparse.Namespace, shape: Shape, fsync: Fsync, connections: int) -> str:
        return describe(measure(shape, fsync, connections, arguments.duration))

    parser = floor_parser("python -m bench.write_floor", __doc__)
    run_fsync_floor(parser, argv, serve_role, line, connections_default=1)


if __name__ == "__main__":
    main()
