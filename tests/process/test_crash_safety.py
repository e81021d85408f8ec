"""Crash safety: acknowledged writes survive kill -9, on every member.

A 3-process troika cluster (``bench.clusters.TroikaCluster``) takes a stream of writes from
``WRITERS`` concurrent clients, each write to a new key, spread over the members (a follower
forwards to the leader). A write counts as acknowledged only once a member answered it 200 or
201; a write that failed or timed out is simply not counted (it may or may not have happened).
Meanwhile, with writes going on throughout:

1. kill -9 a follower; keep writing with two members; restart it;
2. kill -9 the leader; keep writing through the election; restart it;
3. kill -9 every member at once (the whole cluster crashes); start them all again.

Then the writers stop and every member is read: the whole tree with a quorum read through the
member, the whole tree with a local read on the member after a ReadIndex there (so it has
applied everything committed), and a sample of single keys with quorum reads. Every
acknowledged key must be on every member with its value, members must never disagree on a
key, and each phase must have had acknowledged writes (with a member down, and after each
restart), or the test proves nothing.

What it can and cannot catch, checked by planting bugs in member code (then removed):

- skipping the fsync passed (4 runs of 4): kill -9 ends a process, not the machine, and what
  a member handed to the kernel survives it (the simulator's disk, which drops unsynced
  writes, is where that is caught);
- acknowledging an append before writing it passed when the write followed at once (3 of 3);
  with the write 20 ms later it failed 2 runs of 6: a restarted follower that had lost
  entries it had acknowledged never caught up (the leader takes its refusals for stale ones);
- writing without RocksDB's write-ahead log failed (2 of 2): the killed follower came back
  empty and never rejoined;
- resuming one entry past the applied index after a restart failed (2 of 2), with
  acknowledged keys missing from the restarted member's reads.

One member losing its log tail is masked by the other two (that is Raft's job); the
whole-cluster crash is there for bugs that a majority shares.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from bench.clusters import TroikaCluster
from net.http.errors import HttpError
from net.tcp import TcpNetwork
from net.v2client import EtcdError, V2Client

pytestmark = pytest.mark.process

WRITERS = 6
WRITE_TIMEOUT_S = 1.0
"""A write not answered within this is given up on (not acknowledged). Short, because a write
that a follower forwarded to a leader that just died is lost and only ends by timing out."""
RETRY_DELAY_S = 0.05
STEADY_S = 2.5
"""Writing with every member up, before each fault and at the end."""
DOWN_S = 2.0
"""How long a killed member stays down at least (an election takes one to two seconds)..."""
PROGRESS_WRITES_MIN = 50
PROGRESS_TIMEOUT_S = 10.0
"""... and until the others have acknowledged this many writes, waiting at most this long."""
READ_TIMEOUT_S = 20.0
SAMPLE_KEYS_PER_MEMBER = 40
RUN_TIMEOUT_S = 55.0
STARTUP_TIMEOUT_S = 15.0
"""A member (or the cluster) not ready this long after a (re)start fails the test."""
PREFIX = "crash"

T = TypeVar("T")


@dataclass
class Ledger:
    """What the writers saw: acknowledged writes with their time, and the failures."""

    acknowledged: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Key ("/crash/...") -> (value, when the acknowledgement arrived)."""
    failures: int = 0

    def acknowledged_between(self, start: float, end: float) -> int:
        return sum(1 for _, at in self.acknowledged.values() if start < at <= end)


@dataclass
class Timeline:
    """When each fault and recovery happened (trio's clock)."""

    events: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.events[name] = trio.current_time()


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking ``bench.clusters`` call without stopping the writers."""
    return await trio.to_thread.run_sync(function, *args)


async def writer(number: int, endpoints: list[str], ledger: Ledger, stop: trio.Event) -> None:
    """Write new keys until ``stop``; move to the next member after any failure."""
    network = TcpNetwork()
    clients = [V2Client(network, url, timeout_s=WRITE_TIMEOUT_S) for url in endpoints]
    target = number % len(clients)
    token = secrets.token_hex(4)
    try:
        for sequence in range(10**9):
            if stop.is_set():
                return
            key = f"{PREFIX}/w{number}-{sequence:07d}"
            value = f"{token}-{number}-{sequence}"
            try:
                reply = await clients[target].set(key, value)
            except (EtcdError, HttpError):
                ledger.failures += 1
                target = (target + 1) % len(clients)
                await trio.sleep(RETRY_DELAY_S)
                continue
            assert reply.status in (200, 201), reply
            assert reply.node["key"] == f"/{key}" and reply.node["value"] == value, reply.body
            ledger.acknowledged[f"/{key}"] = (value, trio.current_time())
    finally:
        with trio.CancelScope(shield=True):
            for client in clients:
                await client.aclose()


async def stay_down(ledger: Ledger, since: float) -> None:
    """Wait ``DOWN_S``, then until the live members acknowledged some writes since ``since``."""
    await trio.sleep(DOWN_S)
    with trio.move_on_after(PROGRESS_TIMEOUT_S):
        while ledger.acknowledged_between(since, trio.current_time()) < PROGRESS_WRITES_MIN:
            await trio.sleep(0.1)


async def crash_schedule(cluster: TroikaCluster, ledger: Ledger, timeline: Timeline) -> None:
    """Follower, then leader, then every member: kill -9 and restart, writes throughout."""
    await trio.sleep(STEADY_S)
    leader = await in_thread(cluster.wait_for_leader)
    follower = next(index for index in range(cluster.size) if index != leader)
    await in_thread(cluster.kill, follower)
    timeline.mark("follower killed")
    await stay_down(ledger, timeline.events["follower killed"])
    timeline.mark("follower restarting")
    await in_thread(cluster.restart, follower)
    timeline.mark("follower restarted")
    await trio.sleep(STEADY_S)

    leader = await in_thread(cluster.wait_for_leader)
    await in_thread(cluster.kill, leader)
    timeline.mark("leader killed")
    await stay_down(ledger, timeline.events["leader killed"])
    timeline.mark("leader restarting")
    await in_thread(cluster.restart, leader)
    timeline.mark("leader restarted")
    await trio.sleep(STEADY_S)

    def kill_everyone() -> None:
        """SIGKILL to every member first, then wait: no member outlives another by much."""
        pids = [pid for pid in map(cluster.pid, range(cluster.size)) if pid is not None]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while cluster.running_indexes():
            assert time.monotonic() < deadline, "a member outlived SIGKILL"
            time.sleep(0.01)

    await in_thread(kill_everyone)
    timeline.mark("all killed")
    await in_thread(cluster.start)
    timeline.mark("all restarted")
    await trio.sleep(STEADY_S)
    timeline.mark("end")


def flatten(node: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Key -> (value, modifiedIndex) of every file under a v2 node."""
    found: dict[str, tuple[str, int]] = {}
    for child in node.get("nodes", []):
        if child.get("dir"):
            found.update(flatten(child))
        else:
            found[child["key"]] = (child["value"], child["modifiedIndex"])
    return found


async def read_member(url: str, sample: list[str]) -> dict[str, dict[str, tuple[str, int]]]:
    """Member ``url``'s view: the quorum tree, the local tree after a ReadIndex, sampled keys."""
    client = V2Client(TcpNetwork(), url, timeout_s=READ_TIMEOUT_S)
    try:
        quorum = flatten((await client.get(PREFIX, recursive=True, quorum=True)).node)
        local = flatten((await client.get(PREFIX, recursive=True, quorum=False)).node)
        singles: dict[str, tuple[str, int]] = {}
        for key in sample:
            try:
                node = (await client.get(key, quorum=True)).node
            except EtcdError as error:
                if error.code != 100:
                    raise
                continue  # missing: reported by the caller
            singles[key] = (node["value"], node["modifiedIndex"])
    finally:
        await client.aclose()
    return {"quorum read": quorum, "local read": local, "single quorum reads": singles}


def missing_report(
    ledger: Ledger, view: dict[str, tuple[str, int]], keys: list[str], timeline: Timeline
) -> list[str]:
    """Acknowledged keys absent from ``view`` or with another value, with their times."""
    start = min(timeline.events.values(), default=0.0)
    problems: list[str] = []
    for key in keys:
        value, at = ledger.acknowledged[key]
        held = view.get(key)
        if held is None or held[0] != value:
            problems.append(f"{key} (acknowledged at +{at - start:.2f} s) holds {held}")
    return problems


async def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    cluster = TroikaCluster(3, tmp_path / "cluster", startup_timeout_s=STARTUP_TIMEOUT_S)
    ledger = Ledger()
    timeline = Timeline()
    try:
        with trio.fail_after(RUN_TIMEOUT_S):
            await in_thread(cluster.start)
            timeline.mark("start")
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for number in range(WRITERS):
                    nursery.start_soon(writer, number, cluster.client_urls, ledger, stop)
                await crash_schedule(cluster, ledger, timeline)
                stop.set()
            keys = sorted(ledger.acknowledged)
            sample = random.Random(7).sample(keys, min(SAMPLE_KEYS_PER_MEMBER, len(keys)))
            views = [await read_member(url, sample) for url in cluster.client_urls]
    finally:
        await in_thread(cluster.close)

    events = timeline.events
    when = ", ".join(f"{name} +{at - events['start']:.1f} s" for name, at in events.items())
    print(f"\n{len(keys)} writes acknowledged, {ledger.failures} failed or timed out; {when}")
    phases = {
        "before any fault": ("start", "follower killed"),
        "while a follower was down": ("follower killed", "follower restarting"),
        "after the follower came back": ("follower restarted", "leader killed"),
        "while the old leader was down": ("leader killed", "leader restarting"),
        "after the old leader came back": ("leader restarted", "all killed"),
        "after the whole cluster restarted": ("all restarted", "end"),
    }
    for phase, (begin, end) in phases.items():
        count = ledger.acknowledged_between(events[begin], events[end])
        print(f"  {count:6d} acknowledged {phase}")
        assert count > 0, f"no write was acknowledged {phase}: the test proved nothing"

    for index, view in enumerate(views):
        for kind, held in view.items():
            wanted = sample if kind == "single quorum reads" else keys
            problems = missing_report(ledger, held, wanted, timeline)
            assert not problems, (
                f"member {cluster.names[index]}: {len(problems)} acknowledged writes lost in "
                f"its {kind}, e.g. {problems[:10]}; events: {when}"
            )
    local_views = [view["local read"] for view in views]
    for index, other in enumerate(local_views[1:], start=1):
        for key in other.keys() & local_views[0].keys():
            assert other[key] == local_views[0][key], (
                f"{cluster.names[0]} and {cluster.names[index]} disagree on {key}: "
                f"{local_views[0][key]} != {other[key]}"
            )
