"""The liveness phase that ends every run, as TigerBeetle's VOPR has.

Safety checkers cannot see a cluster that does nothing: no history, no violation. So once
the faulty phase is over, the run heals every fault (network cuts, clogs, latency) and
restarts every crashed member (and any member that stops later on a fault from before the
healing: a damaged value read just before it, its stop done just after), and then the
cluster must make progress within bounds set from its own timing, one step after another:

1. a leader, within ``LEADER_ELECTION_TIMEOUTS_MAX`` election timeouts;
2. a write through that leader commits and every member applies it, within
   ``COMMIT_S_MAX`` (a member far behind catches up by snapshot within it);
3. every member answers a client: a linearizable (``quorum=true``) read sent to it returns
   that write's value (or a later one), within ``ANSWER_S_MAX``, all members at once.

A run that stays stuck fails with a violation that starts ``liveness:`` (its report kind,
``sim.report.failure_kind``), naming the step and what each member was doing. Each step
retries through transient refusals (a leader that just stepped down, a request timeout)
until its deadline: liveness asks for eventual progress, not for every request to succeed.
"""

from __future__ import annotations

import trio

from net.http.errors import HttpError
from net.v2client import EtcdError, V2Client
from sim.cluster import MONITOR_INTERVAL_S, SimCluster
from sim.faults_disk import disarm_all

LEADER_ELECTION_TIMEOUTS_MAX = 10
"""After healing, a leader must be up within this many election timeouts (10 s by default:
randomized timeouts, pre-vote and a restarted member's log replay all fit)."""
COMMIT_S_MAX = 10.0
"""Then one write must commit and be applied on every member within this."""
ANSWER_S_MAX = 5.0
"""Then every member must answer a linearizable read within this."""
REQUEST_TIMEOUT_S = 3.0
"""One request of the phase; a stuck one is retried until the step's deadline."""
RETRY_S = 0.2
KEY = "/liveness"


async def heal_and_restart(cluster: SimCluster) -> None:
    """End every fault: heal the network, disarm every disk, restart every crashed member."""
    cluster.network.heal()
    disarm_all(cluster)
    cluster.healed = True
    for name in cluster.names:
        await cluster.restart(name)
    cluster.note("heal everything, restart every member")


async def liveness_phase(cluster: SimCluster) -> str:
    """Heal, then require a leader, a commit applied everywhere, and an answer from every
    member, each within its bound. Returns a ``liveness:`` violation, or ""."""
    await heal_and_restart(cluster)
    if cluster.open_failures:
        return f"durability: {cluster.open_failures[0]}"
    election_s = cluster.config(cluster.names[0]).election_timeout_s()
    leader_s_max = LEADER_ELECTION_TIMEOUTS_MAX * election_s
    healed_s = trio.current_time()
    if await cluster.wait_for_leader(leader_s_max) is None:
        return f"liveness: no leader within {leader_s_max:g}s of healing ({_roles(cluster)})"
    cluster.note(f"liveness: a leader {trio.current_time() - healed_s:.3f}s after healing")
    value = f"at {trio.current_time():.3f}"
    index = await _commit(cluster, value, trio.current_time() + COMMIT_S_MAX)
    if index is None:
        return f"liveness: no write committed within {COMMIT_S_MAX:g}s ({_roles(cluster)})"
    if not await _applied_everywhere(cluster, index, trio.current_time() + COMMIT_S_MAX):
        return (
            f"liveness: the write at index {index} was not applied on every member within "
            f"{COMMIT_S_MAX:g}s ({_roles(cluster)})"
        )
    silent = await _answers(cluster, value)
    if silent:
        return (
            f"liveness: {len(silent)} member(s) did not answer a linearizable read within "
            f"{ANSWER_S_MAX:g}s: {'; '.join(silent)} ({_roles(cluster)})"
        )
    cluster.note(f"liveness: every member answered, {trio.current_time() - healed_s:.3f}s")
    return ""


async def _commit(cluster: SimCluster, value: str, deadline_s: float) -> int | None:
    """Write ``value`` through the leader (whichever it is by then); its raft index."""
    host = cluster.network.host("liveness")
    with trio.move_on_at(deadline_s):
        while True:
            leader = cluster.leader()
            if leader is None:
                await trio.sleep(MONITOR_INTERVAL_S)
                continue
            client = V2Client(host, cluster.client_url(leader), timeout_s=REQUEST_TIMEOUT_S)
            try:
                return (await client.set(KEY, value)).raft_index
            except (EtcdError, HttpError):
                await trio.sleep(RETRY_S)
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
    return None


async def _applied_everywhere(cluster: SimCluster, index: int, deadline_s: float) -> bool:
    while trio.current_time() < deadline_s:
        up = cluster.up()  # one restarting after a late stop is not there yet
        if len(up) == len(cluster.names) and all(
            cluster.member(name).applied_index() >= index for name in up
        ):
            return True
        await trio.sleep(MONITOR_INTERVAL_S)
    return False


async def _answers(cluster: SimCluster, value: str) -> list[str]:
    """Every member at once: a quorum read of the liveness key, retried until the bound.
    Returns one line per member that never answered with the written value (or a later
    one: nothing else writes the key, so any other answer is wrong data)."""
    silent: list[str] = []
    deadline_s = trio.current_time() + ANSWER_S_MAX

    async def ask(name: str) -> None:
        host = cluster.network.host(f"liveness-{name}")
        client = V2Client(host, cluster.client_url(name), timeout_s=REQUEST_TIMEOUT_S)
        last = "no answer"
        try:
            with trio.move_on_at(deadline_s):
                while True:
                    try:
                        reply = await client.get(KEY, quorum=True)
                    except (EtcdError, HttpError) as error:
                        last = f"{type(error).__name__}: {error}"
                        await trio.sleep(RETRY_S)
                        continue
                    answered = reply.node.get("value")
                    if answered == value:
                        return
                    last = f"read {answered!r}, not {value!r}"
                    await trio.sleep(RETRY_S)
            silent.append(f"{name}: {last}")
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()

    async with trio.open_nursery() as nursery:
        for name in cluster.names:
            nursery.start_soon(ask, name)
    return sorted(silent)


def _roles(cluster: SimCluster) -> str:
    """Each member's role, term and applied index, for the report."""
    parts = []
    for name in cluster.names:
        if name not in cluster.up():
            parts.append(f"{name} down")
            continue
        member = cluster.member(name)
        status = member.status
        parts.append(
            f"{name} {status.role.name.lower()} term {status.term} applied {member.applied_index()}"
        )
    return ", ".join(parts)
