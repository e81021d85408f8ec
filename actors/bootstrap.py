"""How a member comes to life: its configuration, identity and first state.

A member starts in one of three ways:

- it has state on disk: it resumes (same id, same cluster, applied index);
- ``initial_cluster_state == "new"``: it is one of the founders; every
  founder derives the same member ids and cluster id from the initial
  cluster and the token, and starts from the same snapshot at index 1 that
  holds the configuration and the member table;
- ``"existing"``: it was added with a membership change; it starts empty and
  learns everything (first of all a snapshot) from the leader.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass
from random import Random

import cbor2

from actors.codec import SnapshotManifest
from actors.leases import LESSOR_WALL_CLOCK
from actors.membership import (
    Member as MemberRecord,
)
from actors.membership import (
    Membership,
    cluster_id_for,
    member_id_for,
)
from actors.raft import (
    Config,
    ConfState,
    PlantedBug,
    RawNode,
    SnapshotMetadata,
)
from actors.raft_storage import DurableRaftStorage
from actors.state_machine import StateMachine
from net.network import address_from_url
from storage.applied_state import AppliedState
from storage.errors import StorageCorrupted
from storage.kv import KeyValueStore, WriteBatch
from storage.raft_store import (
    HardStateRecord,
    RaftStore,
    SnapshotRecord,
    encode_snapshot_chunk,
)
from storage.sealed import PLANTED, SKIP_SEAL_CHECK, seal, unpack_exact, unseal

log = logging.getLogger(__name__)

IDENTITY_KEY = b"member/identity"
INCARNATION_KEY = b"member/incarnation"
BOOTSTRAP_INDEX = 1
"""Founders start from a snapshot at this index (term 1) holding the configuration."""


QUORUM_READ_WITHOUT_READ_INDEX = "quorum-read-without-read-index"
"""A member-level planted bug: serve v2 ``quorum=true`` reads and linearizable v3 ranges
locally, without ReadIndex (the simulator's checkers must catch it)."""
WATCH_SKIP_EVENT_WHEN_FULL = "watch-skip-event-when-full"
"""A planted bug: the watch hub skips the revision a synced watcher's full queue did not take,
instead of catching the watcher up from it (the simulator's watch checker must catch it). It
comes with queues of ``PLANTED_FULL_QUEUE_RESPONSES`` responses, so that runs reach the path it
breaks: with the default the simulated watchers' queues seldom fill (on 7081ad1 the first seed
to catch it was 160 of the 200 its test allows, and a change of timing put it past 200)."""
PLANTED_FULL_QUEUE_RESPONSES = 2
LESSOR_EXPIRES_ON_FOLLOWERS = "lessor-expires-on-followers"
"""A planted bug: followers' lessors decide expiry too, on their own clocks, which never see a
renewal (the simulator's lease checker must catch it)."""
LESSOR_NO_PROMOTION_EXTENSION = "lessor-no-promotion-extension"
"""A planted bug: a new leader gives every lease its TTL again but forgets the election timeout
etcd adds (the simulator's lease checker must catch it)."""
PEER_NO_REDIAL = "peer-no-redial"
"""A planted bug: a peer sender whose connection broke never dials again (the simulator's
liveness phase must catch it)."""
RETRY_FAILED_FSYNC = "retry-failed-fsync"
"""A planted bug: the storage actor retries a failed fsync and acknowledges the append once the
retry succeeds, though the kernel dropped the pages it failed on (the simulator must catch it)."""
PEER_KEEP_STALE_STREAMS = "peer-keep-stale-streams"
"""A planted bug: a peer's new stream does not replace its older one, so late messages of the
older one reach Raft after newer ones (the simulator's stale-reconnect scenario)."""
TXN_FIRST_COMPARE_ONLY = "txn-first-compare-only"
"""A planted bug: a v3 txn decides its branch on its first compare alone (the simulator's check
of txns on several keys must catch it)."""
MEMBER_PLANTED_BUGS = frozenset(
    {
        TXN_FIRST_COMPARE_ONLY,
        SKIP_SEAL_CHECK,
        PEER_KEEP_STALE_STREAMS,
        PEER_NO_REDIAL,
        RETRY_FAILED_FSYNC,
        QUORUM_READ_WITHOUT_READ_INDEX,
        WATCH_SKIP_EVENT_WHEN_FULL,
        LESSOR_EXPIRES_ON_FOLLOWERS,
        LESSOR_NO_PROMOTION_EXTENSION,
        LESSOR_WALL_CLOCK,
    }
)
KNOWN_PLANTED_BUGS = MEMBER_PLANTED_BUGS | frozenset(bug.value for bug in PlantedBug)
"""Every planted bug a member accepts: its own and the Raft core's (``troika sim --bug``)."""


class BootstrapError(Exception):
    """The member cannot start with this configuration and this data directory."""


@dataclass(frozen=True)
class MemberConfig:
    """What ``troika serve`` flags (named as etcd's) configure.

    Attributes:
        name: this member's name in ``initial_cluster``.
        initial_cluster: every founding member's name and peer URLs.
        initial_cluster_state: "new" to found a cluster, "existing" to join one.
        initial_cluster_token: mixed into the ids, so two clusters never share ids.
        advertise_peer_urls / advertise_client_urls: how others reach us.
        listen_peer_addresses / listen_client_addresses: "host:port" to serve on.
        tick_interval_s: one Raft tick (etcd's --heartbeat-interval, 100 ms).
        election_ticks: etcd's --election-timeout (1000 ms) in ticks.
        request_timeout_s: how long a client request may wait for its entry.
        snapshot_every_entries: applied entries between state-machine snapshots.
        snapshot_catch_up_entries: entries kept behind a snapshot for slow followers.
        watch_progress_notify_interval_s: how often a v3 watcher that asked for progress
            notifications hears of the revision when idle (etcd's
            --experimental-watch-progress-notify-interval, 10 minutes).
        planted_bugs: test-only switches that break a rule on purpose, so the simulator
            can prove it notices (the Raft core's names, plus the member's own).
    """

    name: str
    initial_cluster: dict[str, list[str]]
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    advertise_peer_urls: tuple[str, ...] = ()
    advertise_client_urls: tuple[str, ...] = ()
    listen_peer_addresses: tuple[str, ...] = ()
    listen_client_addresses: tuple[str, ...] = ()
    tick_interval_s: float = 0.1
    election_ticks: int = 10
    request_timeout_s: float = 7.0
    snapshot_every_entries: int = 10_000
    snapshot_catch_up_entries: int = 5_000
    watch_progress_notify_interval_s: float = 600.0
    planted_bugs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.initial_cluster_state not in ("new", "existing"):
            state = self.initial_cluster_state
            raise BootstrapError(f"--initial-cluster-state must be new or existing, not {state!r}")
        if self.name not in self.initial_cluster:
            raise BootstrapError(f"--initial-cluster has no member named {self.name!r}")
        if not self.planted_bugs <= KNOWN_PLANTED_BUGS:
            unknown = sorted(self.planted_bugs - KNOWN_PLANTED_BUGS)
            raise BootstrapError(f"unknown planted bugs: {unknown}")
        if self.tick_interval_s <= 0 or self.election_ticks < 2:
            raise BootstrapError("the tick interval must be positive and elections >= 2 ticks")

    def election_timeout_s(self) -> float:
        """etcd's --election-timeout, in seconds."""
        return self.election_ticks * self.tick_interval_s

    def min_lease_ttl_s(self) -> int:
        """etcd's minimum lease TTL: one and a half election timeouts, rounded up to whole
        seconds (2 s with etcd's defaults), so a lease outlives a leader change."""
        return math.ceil((3 * self.election_ticks // 2) * self.tick_interval_s)

    def founding_members(self) -> list[MemberRecord]:
        """The founders, with the ids etcd's formula gives them."""
        token = self.initial_cluster_token
        return [
            MemberRecord(member_id_for(urls, token), name, tuple(urls))
            for name, urls in sorted(self.initial_cluster.items())
        ]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this member is, persisted at its first start."""

    member_id: int
    cluster_id: int

    def encode(self) -> bytes:
        """For the key-value store (sealed, as every value: ``storage.sealed``)."""
        return seal(cbor2.dumps([self.member_id, self.cluster_id]))

    @classmethod
    def decode(cls, data: bytes) -> Identity:
        """Parse what ``encode`` made.

        Raises:
            StorageCorrupted: the value fails its seal or does not hold two ids.
        """
        body = bytes(unseal(IDENTITY_KEY, data))
        try:
            member_id, cluster_id = cbor2.loads(body)
            return cls(int(member_id), int(cluster_id))
        except (cbor2.CBORError, ValueError, TypeError) as error:
            raise StorageCorrupted(f"value of {IDENTITY_KEY!r} is malformed: {error}") from None


_INCARNATION = struct.Struct(">Q")


def _stored_incarnation(kv: KeyValueStore) -> int:
    """How many times the member has started (0 before its first start).

    Raises:
        StorageCorrupted: the value fails its seal or has the wrong size.
    """
    value = kv.get(INCARNATION_KEY)
    if value is None:
        return 0
    (incarnation,) = unpack_exact(INCARNATION_KEY, _INCARNATION, unseal(INCARNATION_KEY, value))
    return incarnation


@dataclass
class OpenedState:
    """Everything a member reads from disk before its actors start."""

    identity: Identity
    raft_store: RaftStore
    applied: AppliedState
    machine: StateMachine
    incarnation: int


async def open_state(
    config: MemberConfig, kv: KeyValueStore, join_identity: Identity | None = None
) -> OpenedState:
    """Read (or create, for a founder) the member's durable state.

    Raises:
        BootstrapError: the data directory belongs to another member, or a
            joining member does not know its cluster id.
    """
    PLANTED.skip_checksum = SKIP_SEAL_CHECK in config.planted_bugs  # the simulator's only
    raft_store = RaftStore.open(kv)
    applied = AppliedState(kv)
    identity_data = kv.get(IDENTITY_KEY)
    if identity_data is None:
        identity = await _first_start(config, kv, raft_store, join_identity)
    else:
        identity = Identity.decode(identity_data)
    snapshot = raft_store.snapshot()
    if snapshot is not None and snapshot.index > applied.applied_index():
        # A founder's first start, or a crash between saving a received snapshot and
        # installing it (perhaps in the middle of installing it): install it now, before
        # anything reads the state machines' records.
        machine = StateMachine.empty(min_lease_ttl_s=config.min_lease_ttl_s())
        await _install(machine, kv, applied, raft_store, snapshot)
    else:
        machine = StateMachine.load(kv, applied, min_lease_ttl_s=config.min_lease_ttl_s())
    await commit_what_was_applied(raft_store, machine.applied_index)
    incarnation = _stored_incarnation(kv) + 1
    batch = WriteBatch()
    batch.put(INCARNATION_KEY, seal(_INCARNATION.pack(incarnation)))
    await kv.write(batch, sync=True)
    return OpenedState(identity, raft_store, applied, machine, incarnation)


async def commit_what_was_applied(raft_store: RaftStore, applied_index: int) -> None:
    """Raise the persisted commit index to the applied index, if a crash left it behind.

    The raft actor hands committed entries to the apply actor as soon as they
    are committed and durable in the local log, without waiting for the
    append that carries the new commit index to be saved, so a crash can
    leave applied > commit on disk. Those entries were committed by the
    cluster and are in the durable log (nothing is applied before the storage
    actor has said so), so the commit index may say so.

    Raises:
        BootstrapError: the applied index is past the durable log: not a
            state troika writes; the data directory is damaged.
    """
    hard_state = raft_store.hard_state()
    if hard_state is None or applied_index <= hard_state.commit:
        return
    if applied_index > raft_store.last_index():
        raise BootstrapError(
            f"applied index {applied_index} is past the last log index {raft_store.last_index()}"
        )
    log.info("commit index %d raised to the applied index %d", hard_state.commit, applied_index)
    raised = HardStateRecord(term=hard_state.term, vote=hard_state.vote, commit=applied_index)
    await raft_store.save(raised, [], None, sync=True)


async def _first_start(
    config: MemberConfig,
    kv: KeyValueStore,
    raft_store: RaftStore,
    join_identity: Identity | None,
) -> Identity:
    if config.initial_cluster_state == "new":
        founders = config.founding_members()
        member_id = {member.name: member for member in founders}[config.name].member_id
        identity = Identity(member_id, cluster_id_for([member.member_id for member in founders]))
        await _bootstrap_founder(founders, raft_store)
    elif join_identity is None:
        raise BootstrapError("a joining member must learn its identity from its peers first")
    else:
        identity = join_identity
    batch = WriteBatch()
    batch.put(IDENTITY_KEY, identity.encode())
    await kv.write(batch, sync=True)
    log.info(
        "%x: first start as %s in cluster %x", identity.member_id, config.name, identity.cluster_id
    )
    return identity


async def _bootstrap_founder(founders: list[MemberRecord], raft_store: RaftStore) -> None:
    """Every founder writes the same snapshot at index 1: the configuration and the members
    (``open_state`` installs it)."""
    voters = tuple(sorted(member.member_id for member in founders))
    bodies = StateMachine.bootstrap_snapshot_chunks(founders)
    size_bytes = 0
    for seq, body in enumerate(bodies):
        value = encode_snapshot_chunk(BOOTSTRAP_INDEX, seq, body)
        raft_store.put_snapshot_chunk(BOOTSTRAP_INDEX, True, seq, value)
        size_bytes += len(value)
    record = SnapshotRecord(BOOTSTRAP_INDEX, 1, voters, (), b"", len(bodies), size_bytes, True)
    hard_state = HardStateRecord(term=1, vote=0, commit=BOOTSTRAP_INDEX)
    await raft_store.save(hard_state, [], record, sync=True)


async def _install(
    machine: StateMachine,
    kv: KeyValueStore,
    applied: AppliedState,
    raft_store: RaftStore,
    record: SnapshotRecord,
) -> None:
    conf = ConfState(tuple(record.voters), tuple(record.learners))
    metadata = SnapshotMetadata(record.index, record.term, conf)
    manifest = SnapshotManifest(record.chunks, record.size_bytes, record.received)
    await machine.install_stored_snapshot(kv, applied, raft_store, metadata, manifest, sync=True)
    raft_store.drop_snapshot_chunks_below(record.index)


def build_node(config: MemberConfig, state: OpenedState, rng: Random) -> RawNode:
    """The Raft core for this member, resuming at the persisted applied index."""
    raft_config = Config(
        state.identity.member_id,
        election_timeout_ticks=config.election_ticks,
        heartbeat_interval_ticks=1,
        applied_index=state.machine.applied_index,
        async_storage_writes=True,
        check_quorum=True,
        pre_vote=True,
        planted_bugs=frozenset(bug for bug in PlantedBug if bug.value in config.planted_bugs),
    )
    storage = DurableRaftStorage(state.raft_store, state.machine.conf_state)
    return RawNode(raft_config, storage, Random(rng.getrandbits(64)))


def peer_addresses(membership: Membership, self_id: int) -> dict[int, str]:
    """Every other member's peer address (from its first peer URL)."""
    addresses: dict[int, str] = {}
    for member in membership.sorted_members():
        if member.member_id == self_id or not member.peer_urls:
            continue
        try:
            addresses[member.member_id] = address_from_url(member.peer_urls[0])
        except ValueError:
            log.warning(
                "member %x has an unusable peer URL %r", member.member_id, member.peer_urls[0]
            )
    return addresses


__all__ = [
    "BootstrapError",
    "Identity",
    "MemberConfig",
    "OpenedState",
    "build_node",
    "open_state",
    "peer_addresses",
]
