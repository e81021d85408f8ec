"""A simulated cluster: real members on the simulated network, disks and clocks.

Each member is the production ``actors.member.Member`` with the production
HTTP API, given a host of the ``SimNetwork``, a ``SimDisk`` and its own clocks
(``sim.clock.SimClock``: a wall clock with its own skew, which clock faults make
jump, and a monotonic clock they make drift). A crash cancels the member's
tasks, resets its connections and cuts power to its disk (unsynced writes are
lost); a restart opens what the disk kept, as a real restart opens its data
directory.

The :class:`Monitor` checks the cluster's invariants while it runs: at most
one leader per term, no two members that applied different entries at an
index, no member whose applied index goes back while it runs, and no leader
that believes a follower holds entries the follower does not have (an
acknowledged append must be durable: a follower that loses it in a crash
broke that promise).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import partial
from random import Random

import trio

from actors.bootstrap import MemberConfig, open_state
from actors.client_api import serve_client_api
from actors.member import BoundAddresses, Member
from actors.raft import Role
from sim.clock import SimClock
from sim.clock_faults import ClockExtremes
from sim.disk import SimDisk
from sim.network import SimNetwork
from storage.errors import LogCompacted, LogUnavailable, StorageCorrupted, StorageFailed

log = logging.getLogger(__name__)

EPOCH_NS = 1_800_000_000 * 10**9
"""Virtual wall-clock time zero of every simulation (2027-01-15)."""
PEER_PORT = 2380
CLIENT_PORT = 2379
MONITOR_INTERVAL_S = 0.05
BOOT_OFFSET_STEP_S = 1000.0
"""Member i's monotonic clock reads i times this at the start (clocks with different
origins, as on machines booted at different times; drawn from no generator, so adding it
changed no seed's faults)."""


class InvariantViolation(AssertionError):
    """A cluster-level safety property was broken."""


@dataclass(frozen=True)
class ClusterOptions:
    """The cluster's shape and its hardware, drawn per seed by the scenario.

    Attributes:
        size: members m1..mN.
        latency_s / jitter_s: the network's base one-way delay and its random part.
        fsync_latency_s / fsync_jitter_s: how long each disk's fsync takes.
        torn_writes: a crash keeps a seed-chosen prefix of the unsynced batches.
        clock_skew_s_max: each member's wall clock is off by up to this, either way.
        snapshot_every_entries: small, so that snapshots and compaction happen in runs.
        request_timeout_s: how long a member lets a client request wait.
        planted_bugs: rules broken on purpose (see MemberConfig.planted_bugs).
    """

    size: int = 5
    latency_s: float = 0.001
    jitter_s: float = 0.004
    fsync_latency_s: float = 0.0005
    fsync_jitter_s: float = 0.002
    torn_writes: bool = True
    clock_skew_s_max: float = 0.2
    snapshot_every_entries: int = 200
    snapshot_catch_up_entries: int = 50
    request_timeout_s: float = 2.0
    planted_bugs: frozenset[str] = frozenset()

    def names(self) -> list[str]:
        """m1, m2, ..."""
        return [f"m{number}" for number in range(1, self.size + 1)]


@dataclass
class SimMember:
    """One member's slot: its disk survives crashes; its Member does not."""

    name: str
    disk: SimDisk
    clock: SimClock
    """Its wall and monotonic clocks (``sim.clock``): they survive crashes, as a machine's do."""
    member: Member | None = None
    scope: trio.CancelScope | None = None
    incarnations: int = 0

    def is_up(self) -> bool:
        """Running (not crashed)."""
        return self.member is not None


class SimCluster:
    """Members on one SimNetwork, started and crashed by the scenario."""

    def __init__(self, options: ClusterOptions, rng: Random, nursery: trio.Nursery) -> None:
        self.options = options
        self.rng = rng
        self.nursery = nursery
        self.network = SimNetwork(
            Random(rng.getrandbits(64)), latency_s=options.latency_s, jitter_s=options.jitter_s
        )
        self.names = options.names()
        self.slots: dict[str, SimMember] = {}
        for name in self.names:
            disk = SimDisk(
                name,
                Random(rng.getrandbits(64)),
                fsync_latency_s=options.fsync_latency_s,
                fsync_jitter_s=options.fsync_jitter_s,
                torn_writes=options.torn_writes,
            )
            skew_ns = int(rng.uniform(-1, 1) * options.clock_skew_s_max * 1e9)
            started_s = trio.current_time()
            wall_origin_ns = EPOCH_NS + skew_ns - int(started_s * 1e9)
            boot_s = BOOT_OFFSET_STEP_S * (len(self.slots) + 1)
            self.slots[name] = SimMember(name, disk, SimClock(wall_origin_ns, boot_s, started_s))
        self.events: list[tuple[float, str]] = []
        self.open_failures: list[str] = []
        self.healed = False
        """The faults are over (``sim.liveness.heal_and_restart``): a member that stops on one
        from before is started again (``restart_if_healed``)."""
        self.clock_extremes = ClockExtremes()
        """The fastest and slowest rates clock faults ran a monotonic clock at."""

    # -- addresses ---------------------------------------------------------------------

    @staticmethod
    def client_url(name: str) -> str:
        """A member's client URL on the simulated network."""
        return f"http://{name}:{CLIENT_PORT}"

    def config(self, name: str) -> MemberConfig:
        """The member's configuration (a founder of the cluster)."""
        return MemberConfig(
            name=name,
            initial_cluster={other: [f"http://{other}:{PEER_PORT}"] for other in self.names},
            advertise_peer_urls=(f"http://{name}:{PEER_PORT}",),
            advertise_client_urls=(self.client_url(name),),
            listen_peer_addresses=(f"{name}:{PEER_PORT}",),
            listen_client_addresses=(f"{name}:{CLIENT_PORT}",),
            request_timeout_s=self.options.request_timeout_s,
            snapshot_every_entries=self.options.snapshot_every_entries,
            snapshot_catch_up_entries=self.options.snapshot_catch_up_entries,
            planted_bugs=self.options.planted_bugs,
        )

    def note(self, text: str) -> None:
        """Record a cluster event for the report."""
        self.events.append((trio.current_time(), text))

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, name: str) -> Member | None:
        """Start (or restart) a member from what its disk holds (None: its data is damaged,
        and it refuses to start; ``open_failures`` says why)."""
        slot = self.slots[name]
        assert slot.member is None, f"{name} is running"
        self.network.restart_host(name)
        config = self.config(name)
        store = slot.disk.store
        damaged_before = slot.disk.damaged_reads
        try:
            state = await open_state(config, store)
        except StorageCorrupted as error:  # what the disk kept is damaged: the member refuses
            self.note(f"{name} refuses to start: {error}")
            if slot.disk.damaged_reads == damaged_before:  # not a damaged read: a bug
                self.open_failures.append(f"{name} cannot open what its disk kept: {error}")
            return None
        except ValueError as error:  # malformed data that passed its seal: always a bug
            self.note(f"{name} cannot start: {error}")
            self.open_failures.append(f"{name} cannot open what its disk kept: {error}")
            return None
        damaged_before = slot.disk.damaged_reads
        member = Member(
            config,
            state,
            network=self.network.host(name),
            kv=store,
            clock=slot.clock,
            rng=Random(self.rng.getrandbits(64)),
        )
        scope = trio.CancelScope()

        async def run(
            task_status: trio.TaskStatus[BoundAddresses] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            with scope:
                try:
                    await member.run(partial(serve_client_api), task_status=task_status)
                except* StorageFailed as failure:  # the member stops, as it must: a crash
                    if self.slots[name].member is member:
                        self.note(f"{name} stopped: {failure.exceptions[0]}")
                        self.crash(name)
                        self.restart_if_healed(name)
                except* StorageCorrupted as found:  # a damaged read: it stops, never uses it
                    if self.slots[name].member is member:
                        self.note(f"{name} stopped on damaged data: {_leaf(found)}")
                        injected = slot.disk.damaged_reads != damaged_before
                        if not injected:  # a bug
                            self.open_failures.append(f"{name} read damaged data: {found}")
                        self.crash(name)
                        if injected:
                            self.restart_if_healed(name)
                except* ValueError as malformed:  # data that passed its seal but is malformed
                    if self.slots[name].member is member:  # (what decoders raise): a bug
                        self.note(f"{name} stopped on malformed data: {_leaf(malformed)}")
                        self.open_failures.append(f"{name} met malformed data: {_leaf(malformed)}")
                        self.crash(name)

        await self.nursery.start(run)
        slot.member, slot.scope = member, scope
        slot.incarnations += 1
        self.note(f"start {name}")
        return member

    async def start_all(self) -> None:
        """Start every member."""
        for name in self.names:
            await self.start(name)

    def crash(self, name: str) -> None:
        """Power loss: the member stops at once and its unsynced writes are gone."""
        slot = self.slots[name]
        if slot.member is None or slot.scope is None:
            return
        slot.scope.cancel()
        slot.member = slot.scope = None
        self.network.crash_host(name)
        slot.disk.crash()
        self.note(f"crash {name}")

    def restart_if_healed(self, name: str) -> None:
        """Start ``name`` again if the faults are over: it stopped on one that came before
        the healing (a damaged value read just before it, say, its stop done just after)."""
        if self.healed:
            self.note(f"restart {name}: it stopped after healing, on a fault from before")
            self.nursery.start_soon(self.restart, name)

    async def restart(self, name: str) -> None:
        """Start a crashed member again."""
        if self.slots[name].member is None:
            await self.start(name)

    def up(self) -> list[str]:
        """Running members, in name order."""
        return [name for name in self.names if self.slots[name].is_up()]

    def member(self, name: str) -> Member:
        """A running member."""
        member = self.slots[name].member
        assert member is not None, f"{name} is down"
        return member

    def leader(self) -> str | None:
        """The running leader of the highest term, if any."""
        best: tuple[int, str] | None = None
        for name in self.up():
            status = self.member(name).status
            if status.role is Role.LEADER and (best is None or status.term > best[0]):
                best = (status.term, name)
        return best[1] if best else None

    async def wait_for_leader(self, timeout_s: float) -> str | None:
        """A leader, or None if none shows up in time."""
        with trio.move_on_after(timeout_s):
            while True:
                leader = self.leader()
                if leader is not None:
                    return leader
                await trio.sleep(MONITOR_INTERVAL_S)
        return None

    def state_digest(self) -> str:
        """A hash of every member's applied index, term and role (for trace hashes)."""
        hasher = hashlib.blake2b(digest_size=16)
        for name in self.names:
            slot = self.slots[name]
            if slot.member is None:
                hasher.update(f"{name} down\n".encode())
                continue
            status = slot.member.status
            hasher.update(
                f"{name} {slot.member.applied_index()} {status.term} {status.role.name}\n".encode()
            )
        return hasher.hexdigest()


def _leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception in a (nested) group."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


@dataclass
class Monitor:
    """Checks the cluster's safety properties every few milliseconds of virtual time."""

    cluster: SimCluster
    leader_by_term: dict[int, str] = field(default_factory=dict)
    leader_seen_s: dict[int, float] = field(default_factory=dict)
    """When a leader of each term was first seen (at most ``MONITOR_INTERVAL_S`` late)."""
    entry_by_index: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    checked_through: dict[str, int] = field(default_factory=dict)
    applied_seen: dict[tuple[str, int], int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    async def run(self) -> None:
        """Check until cancelled; violations are collected, the run goes on."""
        while True:
            self.check()
            await trio.sleep(MONITOR_INTERVAL_S)

    def check(self) -> None:
        """One round over every running member."""
        for name in self.cluster.up():
            member = self.cluster.member(name)
            self._check_leader(name, member)
            self._check_applied(name, member)
        self._check_acknowledged_entries()

    def _fail(self, text: str) -> None:
        if text not in self.violations:
            self.violations.append(text)
            log.error("invariant violated: %s", text)

    def _check_leader(self, name: str, member: Member) -> None:
        status = member.status
        if status.role is Role.LEADER:
            known = self.leader_by_term.setdefault(status.term, name)
            self.leader_seen_s.setdefault(status.term, trio.current_time())
            if known != name:
                self._fail(f"election safety: {known} and {name} both led term {status.term}")

    def _check_acknowledged_entries(self) -> None:
        """Within its term, a leader's match index for a follower never passes the end of
        that follower's log: the follower acknowledged only entries it had persisted, and
        the same leader never makes it truncate them."""
        leader_name = self.cluster.leader()
        if leader_name is None:
            return
        leader = self.cluster.member(leader_name)
        raft = leader.raft_actor.node.raft
        by_id = {self.cluster.member(n).member_id: n for n in self.cluster.up()}
        for member_id, progress in raft.tracker.peers(raft.id):
            name = by_id.get(member_id)
            if name is None:
                continue
            follower = self.cluster.member(name)
            if follower.status.term != raft.term:
                continue
            last = follower.state.raft_store.last_index()
            if progress.match > last:
                self._fail(
                    f"durability: leader {leader_name} (term {raft.term}) holds that {name} "
                    f"acknowledged index {progress.match}, but {name}'s log ends at {last}"
                )

    def _check_applied(self, name: str, member: Member) -> None:
        slot = self.cluster.slots[name]
        applied = member.applied_index()
        key = (name, slot.incarnations)
        if applied < self.applied_seen.get(key, 0):
            self._fail(f"applied index of {name} went back to {applied}")
        self.applied_seen[key] = applied
        store = member.state.raft_store
        low = max(self.checked_through.get(name, 0) + 1, store.first_index())
        for index in range(low, applied + 1):
            try:
                with slot.disk.unobserved():  # the Monitor's reads are never damaged
                    record = store.entries(index, index + 1, 1 << 30)[0]
            except (LogCompacted, LogUnavailable):
                continue
            digest = hashlib.blake2b(record.data, digest_size=8).digest()
            known = self.entry_by_index.setdefault(index, (record.term, digest))
            if known != (record.term, digest):
                self._fail(
                    f"state machine safety: {name} applied a different entry at index {index}"
                )
        self.checked_through[name] = max(self.checked_through.get(name, 0), applied)
