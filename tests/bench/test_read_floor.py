"""bench.read_floor: a linearizable get waits for a heartbeat round begun after it arrived."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

import pytest
import trio

from bench.read_floor import (
    Rounds,
    Shape,
    follow_direct,
    follow_staged,
    lead_direct,
    lead_staged,
    measure,
)
from bench.write_floor import FrameReader

Leader = Callable[..., Awaitable[None]]
Follower = Callable[[trio.abc.Stream], Awaitable[None]]
SHAPES: list[tuple[str, Leader, Follower]] = [
    ("direct", lead_direct, follow_direct),
    ("staged", lead_staged, follow_staged),
]


def test_a_read_during_a_round_waits_for_the_next_one() -> None:
    async def main() -> list[str]:
        sent: list[int] = []
        happened: list[str] = []

        async def send_round(number: int) -> None:
            sent.append(number)

        rounds = Rounds(send_round)

        async def read(name: str) -> None:
            await rounds.confirm()
            happened.append(f"{name} confirmed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, "a")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(read, "b")  # round 1 is in flight: b needs round 2
            nursery.start_soon(read, "c")
            await trio.testing.wait_all_tasks_blocked()
            happened.append(f"rounds sent {sent}")
            await rounds.acknowledged(1)
            await trio.testing.wait_all_tasks_blocked()
            await rounds.acknowledged(1)  # the other follower, late: changes nothing
            happened.append(f"rounds sent {sent}")
            await rounds.acknowledged(2)
        return happened

    happened = trio.run(main)
    assert happened[:3] == ["rounds sent [1]", "a confirmed", "rounds sent [1, 2]"]
    assert sorted(happened[3:]) == ["b confirmed", "c confirmed"]  # in either order


async def request(stream: trio.SocketStream, method: str, target: str, body: str = "") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    await stream.send_all((head + body).encode())
    answer = b""
    while b"}" not in answer:
        answer += await stream.receive_some(4096)
    return answer


async def start_cluster(nursery: trio.Nursery, leader: Leader, follower: Follower) -> int:
    ports = []
    for _ in range(2):
        listeners = await nursery.start(trio.serve_tcp, follower, 0)
        ports.append(listeners[0].socket.getsockname()[1])
    port: int = await nursery.start(leader, ports)
    return port


@pytest.mark.parametrize(("shape", "leader", "follower"), SHAPES, ids=[s[0] for s in SHAPES])
def test_gets_read_what_was_put(shape: str, leader: Leader, follower: Follower) -> None:
    async def main() -> list[bytes]:
        async with trio.open_nursery() as nursery:
            client = await trio.open_tcp_stream(
                "127.0.0.1", await start_cluster(nursery, leader, follower)
            )
            answers = [
                await request(client, "PUT", "/v2/keys/k", "value=v1"),
                await request(client, "GET", "/v2/keys/k?quorum=true"),
                await request(client, "GET", "/v2/keys/k"),
                await request(client, "GET", "/v2/keys/other?quorum=true"),
            ]
            nursery.cancel_scope.cancel()
        return answers

    created, linearizable, serializable, missing = trio.run(main)
    assert created.startswith(b"HTTP/1.1 201 Created")
    for found in (linearizable, serializable):
        assert found.startswith(b"HTTP/1.1 200 OK")
        assert found.endswith(
            b'{"action":"get","node":{"key":"/v2/keys/k","value":"v1","modifiedIndex":1}}'
        )
    assert missing.startswith(b"HTTP/1.1 404 Not Found")


async def silent_follower(stream: trio.abc.Stream) -> None:
    """Hears heartbeats and never answers: the planted fault of a lost quorum."""
    reader = FrameReader(stream)
    while await reader.next() is not None:
        pass


@pytest.mark.parametrize(("shape", "leader", "follower"), SHAPES, ids=[s[0] for s in SHAPES])
def test_no_linearizable_answer_without_a_follower(
    shape: str, leader: Leader, follower: Follower
) -> None:
    async def main() -> tuple[bool, bytes]:
        async with trio.open_nursery() as nursery:
            port = await start_cluster(nursery, leader, silent_follower)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await request(client, "PUT", "/v2/keys/k", "value=v1")
            serializable = await request(client, "GET", "/v2/keys/k")
            with trio.move_on_after(0.5) as waited:
                await request(client, "GET", "/v2/keys/k?quorum=true")
            nursery.cancel_scope.cancel()
        return waited.cancelled_caught, serializable

    unanswered, serializable = trio.run(main)
    assert unanswered, "a linearizable get was answered with no follower's heartbeat answer"
    assert serializable.startswith(b"HTTP/1.1 200 OK")


@pytest.mark.process
@pytest.mark.parametrize("shape", ["direct", "staged"])
def test_measure_loads_three_processes(shape: str) -> None:
    measured = measure(cast(Shape, shape), "get-linearizable", 4, 0.3)
    assert measured.load.requests > 0 and measured.load.errors == 0
    assert all(cpu_us > 0 for cpu_us in measured.cpu_us_per_get)
