"""bench.write_floor: its skeleton cluster replicates each put and answers only at a quorum."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import cbor2
import pytest
import trio
import trio.testing

from bench.write_floor import (
    FrameReader,
    Fsync,
    Log,
    Shape,
    follow_direct,
    follow_staged,
    frame,
    lead_direct,
    lead_staged,
    measure,
)

Leader = Callable[..., Awaitable[None]]
Follower = Callable[[trio.abc.Stream, Log], Awaitable[None]]
SHAPES: list[tuple[str, Leader, Follower]] = [
    ("direct", lead_direct, follow_direct),
    ("staged", lead_staged, follow_staged),
]
PUTS = 5
LOGS = ("leader", "f1", "f2")
"""The cluster's log files, each of which must end with every put."""


def entries(path: Path) -> list[object]:
    """The cbor2 entries a log file holds, in order."""
    data = io.BytesIO(path.read_bytes())
    decoder, found = cbor2.CBORDecoder(data), []
    while data.tell() < len(data.getbuffer()):
        found.append(decoder.decode())
    return found


async def put(stream: trio.SocketStream, key: str, value: str) -> bytes:
    body = f"value={value}".encode()
    await stream.send_all(
        f"PUT /v2/keys/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
        + body
    )
    answer = b""
    while b"}" not in answer:
        answer += await stream.receive_some(4096)
    return answer


async def start_cluster(
    nursery: trio.Nursery, root: Path, leader: Leader, follower: Follower, fsync: Fsync
) -> int:
    ports = []
    for name in ("f1", "f2"):
        log = Log(root / name, fsync)

        async def follow(stream: trio.SocketStream, log: Log = log) -> None:
            await follower(stream, log)

        listeners = await nursery.start(trio.serve_tcp, follow, 0)
        ports.append(listeners[0].socket.getsockname()[1])
    port: int = await nursery.start(leader, Log(root / "leader", fsync), ports)
    return port


@pytest.mark.parametrize(("shape", "leader", "follower"), SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("fsync", ["thread", "inline"])
def test_every_put_is_in_every_log_in_order(
    tmp_path: Path, shape: str, leader: Leader, follower: Follower, fsync: Fsync
) -> None:
    async def main() -> list[bytes]:
        async with trio.open_nursery() as nursery:
            port = await start_cluster(nursery, tmp_path, leader, follower, fsync)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            answers = [await put(client, f"k{i}", f"v{i}") for i in range(PUTS)]
            # A put is answered at a quorum, which may be the two followers: the leader's
            # own sync (in a thread) and the other follower's may still be going on.
            with trio.fail_after(5):
                while any(len(entries(tmp_path / n)) < PUTS for n in LOGS):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        return answers

    answers = trio.run(main)
    for i, answer in enumerate(answers):
        assert answer.startswith(b"HTTP/1.1 201 Created")
        assert f'"key":"/v2/keys/k{i}","value":"v{i}","modifiedIndex":{i + 1}}}'.encode() in answer
    expected = [[1, i + 1, f"/v2/keys/k{i}".encode(), f"v{i}".encode()] for i in range(PUTS)]
    for name in LOGS:
        assert entries(tmp_path / name) == expected


async def silent_follower(stream: trio.abc.Stream, log: Log) -> None:
    """Takes entries and never acknowledges them: the planted fault of a lost quorum."""
    reader = FrameReader(stream)
    while await reader.next() is not None:
        pass


@pytest.mark.parametrize(("shape", "leader", "follower"), SHAPES, ids=[s[0] for s in SHAPES])
def test_no_answer_before_a_follower_acknowledges(
    tmp_path: Path, shape: str, leader: Leader, follower: Follower
) -> None:
    async def main() -> bool:
        async with trio.open_nursery() as nursery:
            port = await start_cluster(nursery, tmp_path, leader, silent_follower, "inline")
            client = await trio.open_tcp_stream("127.0.0.1", port)
            with trio.move_on_after(0.5) as waited:
                await put(client, "k", "v")
            nursery.cancel_scope.cancel()
        return waited.cancelled_caught

    assert trio.run(main), "the leader answered with no follower's acknowledgement"


def test_frames_split_anywhere_are_read_whole() -> None:
    payloads = [b"a", b"", b"x" * 70_000]
    data = b"".join(frame(p) for p in payloads)

    async def main() -> list[bytes]:
        send, receive = trio.testing.memory_stream_one_way_pair()
        reader = FrameReader(receive)
        for offset in range(0, len(data), 7):
            await send.send_all(data[offset : offset + 7])
        await send.aclose()
        found = []
        while (payload := await reader.next()) is not None:
            found.append(payload)
        return found

    assert trio.run(main) == payloads


@pytest.mark.process
@pytest.mark.parametrize("shape", ["direct", "staged"])
def test_measure_loads_three_processes(shape: str) -> None:
    measured = measure(cast(Shape, shape), "inline", 1, 0.3)
    assert measured.load.requests > 0 and measured.load.errors == 0
    assert all(cpu_us > 0 for cpu_us in measured.cpu_us_per_put)
