"""bench.watch_floor: every member answers each long poll with the first event at or after its
``waitIndex``, and only once that event is applied there."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing

from bench.watch_floor import HISTORY_EVENTS, WatchHub, measure
from bench.write_floor import (
    Log,
    Shape,
    follow_direct,
    follow_staged,
    lead_direct,
    lead_staged,
    serve_requests,
)
from tests.bench.test_write_floor import Leader, put

Follower = Callable[[trio.abc.Stream, Log, WatchHub], Awaitable[None]]
SHAPES: list[tuple[str, Leader, Follower]] = [
    ("direct", lead_direct, follow_direct),
    ("staged", lead_staged, follow_staged),
]

PUTS = 5


def event_of(answer: bytes) -> dict[str, object]:
    node = json.loads(answer.partition(b"\r\n\r\n")[2])["node"]
    assert isinstance(node, dict)
    return node


async def poll(port: int, wait_index: int) -> bytes:
    """One long poll of the prefix ``w``, answered whole."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        f"GET /v2/keys/w?wait=true&recursive=true&waitIndex={wait_index} HTTP/1.1\r\n"
        "Host: x\r\n\r\n".encode()
    )
    answer = b""
    while b"}}" not in answer:
        answer += await stream.receive_some(4096)
    await stream.aclose()
    return answer


def test_a_poll_waits_for_its_index_and_takes_the_first_event_at_or_after_it() -> None:
    async def main() -> None:
        hub = WatchHub()
        answers: dict[int, bytes] = {}

        async def watch(wait_index: int) -> None:
            answers[wait_index] = await hub.watch(b"/v2/keys/w?wait=true&waitIndex=%d" % wait_index)

        async with trio.open_nursery() as nursery:
            for wait_index in (1, 3):
                nursery.start_soon(watch, wait_index)
            await trio.testing.wait_all_tasks_blocked()
            hub.publish(1, b"/v2/keys/w/a", b"1")
            await trio.testing.wait_all_tasks_blocked()
            assert list(answers) == [1]
            hub.publish(2, b"/v2/keys/w/b", b"2")
            await trio.testing.wait_all_tasks_blocked()
            assert list(answers) == [1], "a poll from index 3 was answered by event 2"
            hub.publish(3, b"/v2/keys/w/c", b"3")
        assert event_of(answers[1]) == {
            "key": "/w/a", "value": "1", "modifiedIndex": 1, "createdIndex": 1,
        }  # fmt: skip
        assert event_of(answers[3])["key"] == "/w/c"
        assert await hub.watch(b"/v2/keys/w?wait=true&waitIndex=2") == hub._answers[2]

    trio.run(main)


def test_the_history_keeps_the_last_thousand_events() -> None:
    async def main() -> None:
        hub = WatchHub()
        for index in range(1, HISTORY_EVENTS + 6):
            hub.publish(index, b"/v2/keys/w/k", b"v")
        assert len(hub._answers) == HISTORY_EVENTS
        outdated = await hub.watch(b"/v2/keys/w?wait=true&waitIndex=5")
        assert outdated.startswith(b"HTTP/1.1 400") and b'"errorCode":401' in outdated
        assert event_of(await hub.watch(b"/v2/keys/w?wait=true&waitIndex=6"))["modifiedIndex"] == 6

    trio.run(main)


@pytest.mark.parametrize(("shape", "leader", "follower"), SHAPES, ids=[s[0] for s in SHAPES])
def test_every_member_delivers_every_put_in_order(
    tmp_path: Path, shape: str, leader: Leader, follower: Follower
) -> None:
    async def main() -> list[list[int]]:
        hubs = [WatchHub() for _ in range(3)]
        async with trio.open_nursery() as nursery:
            watch_ports = []
            peer_ports = []
            for name, hub in zip(("f1", "f2"), hubs[1:], strict=True):
                log = Log(tmp_path / name, "inline")

                async def follow(stream: trio.SocketStream, log: Log = log, hub: WatchHub = hub):
                    await follower(stream, log, hub)

                async def clients(stream: trio.SocketStream, hub: WatchHub = hub) -> None:
                    await serve_requests(stream, hub.answering(put_refused))

                peer_ports.append((await nursery.start(trio.serve_tcp, follow, 0))[0])
                watch_ports.append((await nursery.start(trio.serve_tcp, clients, 0))[0])
            leader_port = await nursery.start(
                leader, Log(tmp_path / "leader", "inline"),
                [listener.socket.getsockname()[1] for listener in peer_ports], hubs[0],
            )  # fmt: skip
            ports = [leader_port] + [listener.socket.getsockname()[1] for listener in watch_ports]
            seen: list[list[int]] = [[] for _ in ports]

            async def watcher(number: int, port: int) -> None:
                next_index = 1
                while next_index <= PUTS:
                    node = event_of(await poll(port, next_index))
                    index = cast(int, node["modifiedIndex"])
                    assert node["key"] == f"/w/k{index - 1}"
                    seen[number].append(index)
                    next_index = index + 1

            with trio.fail_after(10):
                async with trio.open_nursery() as watchers:
                    for number, port in enumerate(ports):
                        watchers.start_soon(watcher, number, port)
                    await trio.sleep(0.05)
                    client = await trio.open_tcp_stream("127.0.0.1", leader_port)
                    for i in range(PUTS):
                        await put(client, f"w/k{i}", f"v{i}")
            nursery.cancel_scope.cancel()
        return seen

    assert trio.run(main) == [list(range(1, PUTS + 1))] * 3


async def put_refused(_method: bytes, _target: bytes, _body: bytes) -> bytes:
    raise AssertionError("a follower was sent a put")


@pytest.mark.process
@pytest.mark.parametrize("shape", ["direct", "staged"])
def test_measure_runs_the_fan_out_on_three_processes(shape: str) -> None:
    measured = measure(cast(Shape, shape), "inline", 4, 100)
    assert measured.load.requests == 4 * 100 and measured.load.errors == 0
    assert all(cpu_us > 0 for cpu_us in measured.cpu_us_per_delivery)
