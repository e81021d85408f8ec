"""Network partitions, pauses and crashes of real ``troika serve`` processes, checked for
linearizability.

Three member processes, each in its own network namespace (``tests.process.netns``): the
partitions drop packets between members for real (blackhole routes in the namespaces), while
this process, as the clients, still reaches every member. ``CLIENTS`` sequential clients
(``sim.workload.Client``: quorum reads, sets, creates, updates, compare-and-swaps, deletes,
compare-and-deletes on ``KEYS`` shared keys) send v2 requests to the members over TCP and
record every one in a ``sim.history.History``: ok, failed with etcd's error code, or
indeterminate (a timeout, a reset: it may have committed). A client whose member does not
answer moves on to another. The faults, one after another, each followed by a heal:

1. the leader isolated from both followers (the majority elects another; the old leader
   cannot commit or serve a quorum read);
2. a follower isolated;
3. the leader cut from one follower only (that follower still hears the other one);
4. the link between the two followers cut while the leader sees both (no election needed);
5. the leader paused with SIGSTOP, then resumed with SIGCONT (it wakes up still believing it
   leads, with clients' requests queued in its sockets);
6. the leader killed with SIGKILL, then restarted on its data.

After every heal the cluster must recover within ``RECOVERY_TIMEOUT_S``: the members agree on
one leader, and a write through each member is acknowledged (the time is recorded). At the end
the history must be linearizable (``sim.linearizability.check_history``: a read that misses an
acknowledged write, a lost write, a stale read from the isolated old leader, two members
acknowledging one index all fail it), every fault must have seen acknowledged writes (the
majority side went on), and every member must answer a quorum read of every key alike.
A failing run writes the history and an HTML timeline next to the member logs.

The checker is shown to see through this setup in the same run: ``PLANTED_READERS`` more
clients read the keys locally (``quorum=false``) from each member in turn and record those
reads as quorum reads, as a member that answered quorum reads from its own state would; the
real history plus those reads must be a violation (the isolated old leader and a lagging
follower give stale values).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import cast

import pytest
import trio

from bench.clusters import http_get_json
from net.http.errors import HttpError
from net.network import Network
from net.tcp import TcpNetwork
from net.v2client import EtcdError, V2Client
from sim.cluster import SimCluster
from sim.history import MODEL_ERROR_CODES, History, OpKind, Outcome
from sim.linearizability import Verdict, check_history
from sim.timeline import FaultEvent, render_timeline
from sim.workload import Client, WorkloadOptions
from tests.process import netns
from tests.process.netns import NetnsTroikaCluster

pytestmark = pytest.mark.process

CLIENTS = 6
KEYS = 4
REQUEST_TIMEOUT_S = 1.0
"""Short: a request to a member cut off from the leader only ends by timing out."""
STEADY_S = 2.0
FAULT_S = 5.0
RECOVERY_TIMEOUT_S = 15.0
RECOVERY_WRITE_TIMEOUT_S = 3.0
SEED = 15
PLANTED_READERS = 2
PLANTED_READ_INTERVAL_S = 0.02


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsTroikaCluster]:
    why_not = netns.available()
    if why_not is not None:
        pytest.skip(why_not)
    with NetnsTroikaCluster(3, tmp_path_factory.mktemp("partition")) as started:
        yield started


@dataclass
class Phase:
    name: str
    started_s: float
    ended_s: float = 0.0
    recovery_s: float | None = None


@dataclass
class Run:
    cluster: NetnsTroikaCluster
    history: History
    planted: History
    phases: list[Phase] = field(default_factory=list)
    stop_at_s: float = float("inf")


async def run_client(client: Client, run: Run, network: Network) -> None:
    """``client`` against the members until the run stops, moving on when one fails it."""
    urls = run.cluster.client_urls
    target = client.rng.randrange(len(urls))
    connections: dict[int, V2Client] = {}
    try:
        while trio.current_time() < run.stop_at_s:
            if target not in connections:
                connections[target] = V2Client(network, urls[target], timeout_s=REQUEST_TIMEOUT_S)
            if not await client.one(connections[target]):
                target = client.rng.randrange(len(urls))
            await trio.sleep(client.rng.random() * client.options.think_s_max)
    finally:
        with trio.CancelScope(shield=True):
            for connection in connections.values():
                await connection.aclose()


async def local_reader(client_id: int, run: Run, network: Network) -> None:
    """The planted bug: local (serializable) reads recorded as quorum reads, as if a member
    answered a quorum read from its own state. Goes round the members, one read each."""
    urls = run.cluster.client_urls
    connections = [V2Client(network, url, timeout_s=REQUEST_TIMEOUT_S) for url in urls]
    rng = Random(client_id)
    try:
        for number in itertools.count():
            if trio.current_time() >= run.stop_at_s:
                return
            key = f"/k{rng.randrange(KEYS)}"
            op_id = run.planted.invoke(client_id, OpKind.READ, key)
            try:
                reply = await connections[number % len(urls)].get(key, quorum=False)
            except EtcdError as error:
                if error.code in MODEL_ERROR_CODES:
                    run.planted.fail(op_id, error_code=error.code)
                else:
                    run.planted.indeterminate(op_id, note=str(error))
                continue
            except HttpError as error:
                run.planted.indeterminate(op_id, note=type(error).__name__)
                continue
            index = reply.node.get("modifiedIndex")
            run.planted.ok(
                op_id,
                output_value=reply.node.get("value"),
                index=index if isinstance(index, int) else None,
            )
            await trio.sleep(PLANTED_READ_INTERVAL_S)
    finally:
        with trio.CancelScope(shield=True):
            for connection in connections:
                await connection.aclose()


def with_planted_reads(real: History, planted: History) -> History:
    """The real history plus the planted reads, renumbered after the real operations."""
    first = max((op.op_id for op in real.operations), default=0) + 1
    moved = [
        dataclasses.replace(op, op_id=first + number)
        for number, op in enumerate(planted.operations)
    ]
    return History.of([*real.operations, *moved])


async def recover(cluster: NetnsTroikaCluster, network: Network) -> float:
    """Seconds until the members agree on a leader and each acknowledges a write."""
    began = trio.current_time()
    with trio.fail_after(RECOVERY_TIMEOUT_S):
        await trio.to_thread.run_sync(cluster.wait_for_leader, RECOVERY_TIMEOUT_S)
        for index, url in enumerate(cluster.client_urls):
            client = V2Client(network, url, timeout_s=RECOVERY_WRITE_TIMEOUT_S)
            try:
                while True:
                    try:
                        await client.set(f"/recovered/{index}", str(began))
                        break
                    except Exception:
                        await trio.sleep(0.1)
            finally:
                await client.aclose()
    return trio.current_time() - began


@dataclass(frozen=True)
class Fault:
    """One fault: ``inject(leader)`` starts it, ``heal()`` ends it."""

    name: str
    inject: Callable[[int], None]
    heal: Callable[[], None]


def faults_of(cluster: NetnsTroikaCluster) -> list[Fault]:
    def followers_of(leader: int) -> list[int]:
        return [index for index in range(cluster.size) if index != leader]

    paused: list[int] = []

    def pause(leader: int) -> None:
        pid = cluster.pid(leader)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        paused.append(pid)

    def resume() -> None:
        os.kill(paused.pop(), signal.SIGCONT)

    killed: list[int] = []

    def kill(leader: int) -> None:
        cluster.kill(leader)  # SIGKILL, waited for
        killed.append(leader)

    def restart() -> None:
        cluster.restart(killed.pop())

    return [
        Fault("leader isolated", cluster.isolate, cluster.heal),
        Fault(
            "follower isolated", lambda lead: cluster.isolate(followers_of(lead)[0]), cluster.heal
        ),
        Fault(
            "leader cut from one follower",
            lambda lead: cluster.cut(lead, followers_of(lead)[0]),
            cluster.heal,
        ),
        Fault(
            "followers cut from each other",
            lambda lead: cluster.cut(*followers_of(lead)),
            cluster.heal,
        ),
        Fault("leader paused (SIGSTOP, then SIGCONT)", pause, resume),
        Fault("leader killed (kill -9, then restarted)", kill, restart),
    ]


async def fault_schedule(run: Run, network: Network) -> None:
    cluster = run.cluster
    leader = await trio.to_thread.run_sync(cluster.wait_for_leader)
    await trio.sleep(STEADY_S)
    for fault in faults_of(cluster):
        phase = Phase(fault.name, trio.current_time())
        run.phases.append(phase)
        await trio.to_thread.run_sync(fault.inject, leader)
        await trio.sleep(FAULT_S)
        await trio.to_thread.run_sync(fault.heal)
        phase.ended_s = trio.current_time()
        phase.recovery_s = await recover(cluster, network)
        leader = await trio.to_thread.run_sync(cluster.wait_for_leader)
        await trio.sleep(STEADY_S)
    run.stop_at_s = trio.current_time()


async def drive(run: Run) -> None:
    network = TcpNetwork()
    rng = Random(SEED)
    options = WorkloadOptions(clients=CLIENTS, keys=KEYS, request_timeout_s=REQUEST_TIMEOUT_S)
    # Client only reaches for its cluster in Client.run, which this test does not use.
    no_sim_cluster = cast("SimCluster", None)
    clients = [
        Client(number, no_sim_cluster, run.history, options, Random(rng.getrandbits(64)))
        for number in range(1, CLIENTS + 1)
    ]
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(run_client, client, run, network)
        for number in range(PLANTED_READERS):
            nursery.start_soon(local_reader, 100 + number, run, network)
        await fault_schedule(run, network)


def write_evidence(run: Run, folder: Path) -> Path:
    faults = [FaultEvent(p.started_s, p.name, end_s=p.ended_s) for p in run.phases]
    result = check_history(run.history)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "history.json").write_text(run.history.to_json())
    page = folder / "timeline.html"
    page.write_text(render_timeline(run.history, faults=faults, result=result))
    return page


def test_partitions_keep_the_history_linearizable_and_the_cluster_recovers(
    cluster: NetnsTroikaCluster,
) -> None:
    run = Run(cluster, History(clock=trio.current_time), History(clock=trio.current_time))
    trio.run(drive, run)
    run.history.finish()
    run.planted.finish()
    operations = run.history.operations
    result = check_history(run.history)
    if result.verdict is not Verdict.OK:
        page = write_evidence(run, cluster.data_root)
        pytest.fail(f"{result.summary()}; timeline: {page}")

    acknowledged_writes = [op for op in operations if op.ok and op.is_write]
    for phase in run.phases:
        during = [
            op
            for op in acknowledged_writes
            if phase.started_s < op.effective_complete_s <= phase.ended_s
        ]
        assert during, f"no write was acknowledged while: {phase.name}"
        assert phase.recovery_s is not None and phase.recovery_s < RECOVERY_TIMEOUT_S
    # Every member answers a quorum read of every key alike.
    seen = []
    for url in cluster.client_urls:
        answers = {}
        for number in range(KEYS):
            reply = http_get_json(f"{url}/v2/keys/k{number}?quorum=true") or {}  # None: 404
            node = reply.get("node", {})
            answers[number] = (node.get("value"), node.get("modifiedIndex"))
        seen.append(answers)
    assert all(answers == seen[0] for answers in seen)
    # The checker is not blind here: the same run with the planted local reads fails it.
    planted = check_history(with_planted_reads(run.history, run.planted))
    assert planted.verdict is Verdict.VIOLATION, planted.summary()
    outcomes = {kind.value: sum(op.outcome is kind for op in operations) for kind in Outcome}
    recoveries = ", ".join(f"{p.name}: {p.recovery_s:.1f} s" for p in run.phases)
    print(
        f"partitions: {len(operations)} operations {outcomes}, {len(acknowledged_writes)} "
        f"acknowledged writes, verdict {result.verdict}; recovery after heal: {recoveries}; "
        f"with {len(run.planted)} planted local reads: {planted.verdict}"
    )
