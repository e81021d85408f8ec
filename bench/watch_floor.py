"""The floor of v2 watch fan-out on Python and Trio: the put's floor with watchers on it.

Issue 13 asks v2 watch deliveries to reach 0.8x etcd's. In ``troika bench -w watch`` one writer
puts keys one after another on the leader while N watchers, spread over the three members,
long-poll ``GET /v2/keys/<prefix>?wait=true&recursive=true&waitIndex=<next>`` (``bench.watch``);
every put reaches every watcher, so deliveries a second are N times the writer's puts a second,
and the writer's puts are as fast as a one-connection put is with the watchers' work beside
it. This module measures the least that costs here: ``bench.write_floor``'s three processes
(the leader answers a put once its own and one follower's append are synced), with every member
also keeping the last 1,000 events (etcd's history) and answering the long polls it holds as
each entry is applied (the leader at the quorum, a follower as soon as the entry is durable
there, which is sooner than a commit would allow). A watch answer is a v2 event in JSON with the
node's key, value and indexes; nothing else of troika's (no v2 tree, no Raft, no auth, no
accounting).

The load is ``bench.watch``'s own (the same watchers and writer as ``troika bench -w watch``), so
its figures stand beside the benchmark's: deliveries a second, the writer's puts a second, and
each process's CPU microseconds a delivery. ``--shape`` and ``--fsync`` as the put's floor.

    python -m bench.watch_floor -c 16 --writes 400 --runs 2
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from bench.loadgen import LoadResult, process_cpu_s
from bench.watch import WatchSpec, run_watch
from bench.write_floor import (
    HOST,
    Answer,
    Fsync,
    Log,
    Shape,
    cpu_us_per_operation,
    errors_note,
    floor_parser,
    follow_direct,
    follow_staged,
    http_response,
    lead_direct,
    lead_staged,
    run_fsync_floor,
    serve_leader,
    serve_requests,
    start_listening,
)

HISTORY_EVENTS: Final = 1000
"""Events a member keeps for watches that start in the past (etcd's ``newEventHistory``)."""
KEYS_PATH: Final = b"/v2/keys"
WAIT_INDEX: Final = re.compile(rb"[?&]waitIndex=(\d+)")
CLEARED_BODY: Final = b'{"errorCode":401,"message":"The event in requested index is outdated"}'


class WatchHub:
    """One member's watches: its recent events as ready answers, and the long polls waiting
    for the next. Every poll of this benchmark watches the whole prefix, so an event answers
    every poll waiting for its index or an earlier one."""

    def __init__(self) -> None:
        self._answers: dict[int, bytes] = {}
        self._first = 1
        self._last = 0
        self._published = trio.Event()

    def publish(self, index: int, key: bytes, value: bytes) -> None:
        node_key = key.split(b"?", 1)[0].removeprefix(KEYS_PATH)
        body = (
            b'{"action":"set","node":{"key":"%s","value":"%s","modifiedIndex":%d,'
            b'"createdIndex":%d}}' % (node_key, value, index, index)
        )
        if not self._answers:
            self._first = index  # a follower's first entry may come after index 1
        self._answers[index] = http_response(b"200 OK", body, index)
        self._last = index
        while len(self._answers) > HISTORY_EVENTS:
            del self._answers[self._first]
            self._first += 1
        self._published.set()
        self._published = trio.Event()

    async def watch(self, target: bytes) -> bytes:
        """The answer to one long poll: the first event at or after its ``waitIndex``."""
        found = WAIT_INDEX.search(target)
        wait_index = int(found.group(1)) if found else self._last + 1
        while wait_index > self._last:
            await self._published.wait()
        if wait_index < self._first:
            return http_response(b"400 Bad Request", CLEARED_BODY, self._last)
        return self._answers[wait_index]

    def answering(self, put: Answer) -> Answer:
        async def answer(method: bytes, target: bytes, body: bytes) -> bytes:
            if method == b"GET" and b"wait=true" in target:
                return await self.watch(target)
            return await put(method, target, body)

        return answer


async def serve_role(arguments: argparse.Namespace) -> None:
    log, watches = Log(Path(arguments.dir) / "log", arguments.fsync), WatchHub()
    if arguments.role == "leader":
        lead = lead_direct if arguments.shape == "direct" else lead_staged
        followers = [int(port) for port in arguments.followers.split(",")]
        await serve_leader(lead, log, followers, watches)
        return
    follow = follow_direct if arguments.shape == "direct" else follow_staged

    async def leader_connection(stream: trio.SocketStream) -> None:
        await follow(stream, log, watches)

    async def client_connection(stream: trio.SocketStream) -> None:
        await serve_requests(stream, watches.answering(refuse_put))

    peer_listeners = await trio.open_tcp_listeners(0, host=HOST)
    client_listeners = await trio.open_tcp_listeners(0, host=HOST)
    ports = (
        listeners[0].socket.getsockname()[1] for listeners in (peer_listeners, client_listeners)
    )
    print("listening on port {} {}".format(*ports), flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, leader_connection, peer_listeners)
        nursery.start_soon(trio.serve_listeners, client_connection, client_listeners)


async def refuse_put(_method: bytes, _target: bytes, _body: bytes) -> bytes:
    """A follower of this floor takes only watches (the writer writes to the leader)."""
    return http_response(b"405 Method Not Allowed", b"{}")


@dataclass(frozen=True)
class Measured:
    shape: Shape
    fsync: Fsync
    load: LoadResult
    cpu_us_per_delivery: tuple[float, float, float]
    """The leader's, then each follower's."""


def measure(shape: Shape, fsync: Fsync, watchers: int, writes: int) -> Measured:
    """A fresh three-process cluster of ``shape`` under ``bench.watch``'s fan-out."""
    role_arguments = ["--shape", shape, "--fsync", fsync]
    with tempfile.TemporaryDirectory(prefix="watch-floor-") as root:
        processes: list[subprocess.Popen[bytes]] = []
        try:
            peer_ports, client_ports = [], []
            for name in ("f1", "f2"):
                Path(root, name).mkdir()
                process, (peer, client) = start_listening(
                    ["follower", "--dir", str(Path(root, name)), *role_arguments],
                    "bench.watch_floor",
                )
                processes.append(process)
                peer_ports.append(peer)
                client_ports.append(client)
            Path(root, "leader").mkdir()
            leader, (port,) = start_listening(
                ["leader", "--dir", str(Path(root, "leader")), "--followers",
                 ",".join(map(str, peer_ports)), *role_arguments],
                "bench.watch_floor",
            )  # fmt: skip
            processes.insert(0, leader)
            endpoints = [f"http://{HOST}:{p}" for p in (port, *client_ports)]
            spec = WatchSpec(
                leader=endpoints[0], endpoints=endpoints, watchers=watchers, writes=writes
            )
            before = [process_cpu_s(process.pid) for process in processes]
            load = trio.run(run_watch, spec)
            spent = [process_cpu_s(p.pid) - was for p, was in zip(processes, before, strict=True)]
        finally:
            for process in processes:
                process.kill()
                process.wait()
    return Measured(shape, fsync, load, cpu_us_per_operation(spent, load))


def describe(measured: Measured, writes: int) -> str:
    load, (leader, f1, f2) = measured.load, measured.cpu_us_per_delivery
    watchers = load.connections
    puts_per_s = load.ops_per_s / watchers if watchers else 0.0
    return (
        f"{measured.shape:<7} fsync {measured.fsync:<6} watchers={watchers:<3} writes={writes} "
        f"{load.ops_per_s:7.0f} deliveries/s ({puts_per_s:5.0f} puts/s)  "
        f"p50 {load.latency.p50_ms:5.2f} ms  client CPU {load.client_cpu_percent:3.0f} %  "
        f"CPU us a delivery: leader {leader:4.0f}, followers {f1:3.0f} {f2:3.0f}{errors_note(load)}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.watch_floor`` (``-c``: watchers)."""

    def line(arguments: argparse.Namespace, shape: Shape, fsync: Fsync, watchers: int) -> str:
        return describe(measure(shape, fsync, watchers, arguments.writes), arguments.writes)

    parser = floor_parser("python -m bench.watch_floor", __doc__)
    parser.add_argument("--writes", type=int, default=400, help="puts the writer makes")
    run_fsync_floor(parser, argv, serve_role, line, connections_default=16)


if __name__ == "__main__":
    main()
