"""A running troika member: the stage actors of one Trio nursery, wired together.

::

    client ─HTTP─▶ api ─Propose/ReadIndex─▶ raft ──StorageAppend──▶ storage ──votes, acks──▶
                    ▲                        │▲ ◀─────Persisted─────────┘           transport
                    │                        │└──────Applied───────────┐
                    │                        └──ApplyWork──────────▶ apply
                    └────────────── waiters ◀──────────────────────────┘

The raft actor sends the messages that need no persist to the transport
itself, the storage actor only persists (and then releases what vouches for
it), and committed entries go from the raft actor straight to the apply
actor; each stage acknowledges what it did (docs/member.md).

Every channel is bounded (the constants in each actor module). The network,
the key-value store, the wall clock and the random generator are passed in:
the composition root (``troika``) gives real ones, the simulator virtual ones.
The request paths here (propose and wait, read at a confirmed index) are
what the HTTP API calls.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from random import Random

import cbor2
import trio
from google.protobuf.message import Message as ProtoMessage

from actors.apply_actor import ApplyActor
from actors.auth_backend import MemberAuth
from actors.bootstrap import (
    LESSOR_EXPIRES_ON_FOLLOWERS,
    LESSOR_NO_PROMOTION_EXTENSION,
    PEER_KEEP_STALE_STREAMS,
    PEER_NO_REDIAL,
    PLANTED_FULL_QUEUE_RESPONSES,
    RETRY_FAILED_FSYNC,
    TXN_FIRST_COMPARE_ONLY,
    WATCH_SKIP_EVENT_WHEN_FULL,
    MemberConfig,
    OpenedState,
    build_node,
    peer_addresses,
)
from actors.clock import MemberClock
from actors.envelope import Envelope, EnvelopeKind, RequestId, RequestIds
from actors.join import cluster_info, fetch_peer_addresses
from actors.leases import LESSOR_WALL_CLOCK, MemberLeases
from actors.membership import Member as MemberRecord
from actors.membership import Membership, member_id_for
from actors.qos_leader import LEADER_REFUSAL_DELAY_S, LeaderAdmission, LeaderRefused
from actors.raft import ConfChange, ConfChangeType, DropReason, Role, StorageAppend
from actors.raft_actor import (
    APPLY_QUEUE_LENGTH_MAX,
    INBOX_LENGTH_MAX,
    ApplyWork,
    NotLeader,
    Propose,
    ProposeConfChange,
    RaftActor,
    RaftInput,
    RaftStatus,
    ReadIndex,
    Tick,
    TransferLeadership,
    Unreachable,
)
from actors.read_batcher import ReadBatcher
from actors.state_machine import StateMachine, conf_change_context
from actors.storage_actor import StorageActor
from actors.transport_actor import TransportActor
from actors.waiters import PENDING_REQUESTS_MAX, Timeouts, Waiter, Waiters, check_apply_gap
from actors.watch_hub import WatchHubShell
from net.etcdpb.raft_internal_pb2 import InternalRaftRequest
from net.network import Network
from net.peers import PeerTransport
from net.v3.errors import RpcError
from storage.kv import KeyValueStore
from storage.v2store.model import Event, V2Error, V2Request

log = logging.getLogger(__name__)

INBOUND_QUEUE_LENGTH_MAX = 4096
"""Peer payloads received but not yet decoded."""
SYNC_INTERVAL_S = 0.5
"""How often the leader proposes expiring the TTL keys that are due (etcd: 500 ms)."""
PUBLISH_ATTEMPT_TIMEOUT_S = 1.0
"""How long one attempt to announce the client URLs may take before it is retried."""
READ_INDEX_RETRY_S = 0.5
"""A ReadIndex not answered in this long is asked again (etcd's readIndexRetryTime)."""
JOIN_PEERS_ATTEMPTS_MAX = 30
"""Election timeouts a joining member keeps asking founders for its peers' addresses."""
RETRYABLE_DROPS = frozenset({DropReason.NO_LEADER, DropReason.TRANSFER_IN_PROGRESS})


class RequestTimeout(Exception):
    """The request's entry was not applied (or its read not confirmed) in time."""


class NoLeader(Exception):
    """No leader could be found within the request timeout."""


@dataclass(frozen=True, slots=True)
class BoundAddresses:
    """Where a started member listens (real ports when port 0 was asked for)."""

    peer: tuple[str, ...]
    client: tuple[str, ...]


ClientServer = Callable[["Member", str], Awaitable[None]]
"""Serves the client API of a member on an address (given by the composition root)."""


class Member:
    """One member: its actors, its request paths, and its published status."""

    def __init__(
        self,
        config: MemberConfig,
        state: OpenedState,
        *,
        network: Network,
        kv: KeyValueStore,
        clock: MemberClock,
        rng: Random,
    ) -> None:
        self.config = config
        self.state = state
        self.network = network
        self.kv = kv
        self.clock = clock
        self.member_id = state.identity.member_id
        self.cluster_id = state.identity.cluster_id
        self.waiters = Waiters()
        self.timeouts = Timeouts(lambda: RequestTimeout("etcdserver: request timed out"))
        self.read_batcher = ReadBatcher(
            self._read_index_round,
            round_timeout_s=config.request_timeout_s,
            readers_max=PENDING_REQUESTS_MAX,
        )
        self.status = RaftStatus(self.member_id)
        self.ids = RequestIds(self.member_id, state.incarnation)
        self.started_at_ns = 0
        self.proposals_failed = 0
        """Proposals that timed out or found no leader (etcd_server_proposals_failed_total)."""
        self.published = trio.Event()
        """Set once this member's name and client URLs are in the applied member table;
        the client API waits for it, as etcd serves clients only once it has published."""
        self.raft_send, raft_receive = trio.open_memory_channel[RaftInput](INBOX_LENGTH_MAX)
        storage_send, storage_receive = trio.open_memory_channel[StorageAppend](1)
        apply_send, apply_receive = trio.open_memory_channel[ApplyWork](APPLY_QUEUE_LENGTH_MAX)
        inbound_send, inbound_receive = trio.open_memory_channel[tuple[int, dict[str, object]]](
            INBOUND_QUEUE_LENGTH_MAX
        )
        self.transport = PeerTransport(
            network,
            self.member_id,
            self.cluster_id,
            inbound_send,
            Random(rng.getrandbits(64)),
            on_unreachable=self._on_unreachable,
            cluster_info=lambda: cluster_info(self.membership),
        )
        self.transport.planted_no_redial = PEER_NO_REDIAL in config.planted_bugs
        self.transport.planted_keep_stale_streams = PEER_KEEP_STALE_STREAMS in config.planted_bugs
        self.transport_actor = TransportActor(
            self.member_id,
            self.transport,
            inbound_receive,
            self.raft_send.clone(),
            raft_store=state.raft_store,
        )
        self.raft_actor = RaftActor(
            build_node(config, state, rng),
            inbox=raft_receive,
            to_storage=storage_send,
            to_apply=apply_send,
            send=self.transport_actor.send,
            waiters=self.waiters,
            status=self.status,
        )
        self.raft_actor.admission = LeaderAdmission(  # issue 16: tenants' writes at the leader
            lambda: self.machine.qos.table, self._roles_of, now=clock.monotonic_s
        )
        self.storage_actor = StorageActor(
            state.raft_store, storage_receive, self.raft_send.clone(), self.transport_actor.send
        )
        self.storage_actor.planted_retry_failed_fsync = RETRY_FAILED_FSYNC in config.planted_bugs
        self.apply_actor = ApplyActor(
            state.machine,
            kv=kv,
            applied=state.applied,
            raft_store=state.raft_store,
            inbox=apply_receive,
            to_raft=self.raft_send.clone(),
            waiters=self.waiters,
            on_membership=self._on_membership,
            snapshot_every_entries=config.snapshot_every_entries,
            catch_up_entries=config.snapshot_catch_up_entries,
        )
        hub = self.apply_actor.watch_hub
        if WATCH_SKIP_EVENT_WHEN_FULL in config.planted_bugs:
            hub.planted_skip_when_full = True
            hub.responses_buffered_max = PLANTED_FULL_QUEUE_RESPONSES
        first_only = TXN_FIRST_COMPARE_ONLY in config.planted_bugs
        state.machine.kv.planted_first_compare_only = first_only
        self.leases = MemberLeases(
            state.machine.leases,
            self.status,
            member_id=self.member_id,
            send=self.transport.send,
            propose_revoke=self.propose_v3,
            confirm_read=self.confirm_read_within,
            extend_s=0.0
            if LESSOR_NO_PROMOTION_EXTENSION in config.planted_bugs
            else config.election_timeout_s(),
            tick_s=config.tick_interval_s,
            request_timeout_s=config.request_timeout_s,
            applied_index=self.applied_index,
            planted_expire_on_followers=LESSOR_EXPIRES_ON_FOLLOWERS in config.planted_bugs,
            clock=clock,
            planted_wall_clock=LESSOR_WALL_CLOCK in config.planted_bugs,
        )
        state.machine.lease_listener = self.leases
        self.transport_actor.on_lease_payload = self.leases.on_peer_payload
        self.watch_hub = WatchHubShell(
            self.apply_actor.watch_hub,
            progress_interval_s=config.watch_progress_notify_interval_s,
            rng=Random(self.member_id),  # the progress jitter; the member's generator untouched
        )
        self._on_membership(state.machine.membership)
        self.auth = MemberAuth(self)
        """Callers, passwords and tokens (``actors.auth_backend``)."""

    # -- views -------------------------------------------------------------------------

    @property
    def machine(self) -> StateMachine:
        """The state machine (the apply actor's; read it, never write it)."""
        return self.apply_actor.machine

    @property
    def membership(self) -> Membership:
        """The member table as applied here."""
        return self.apply_actor.machine.membership

    def _roles_of(self, username: str) -> tuple[str, ...]:
        """A user's roles as applied here (none for an unknown user)."""
        user = self.machine.auth.store.user(username)
        return tuple(user.roles) if user is not None else ()

    def applied_index(self) -> int:
        """The last applied index (X-Raft-Index)."""
        return int(self.apply_actor.machine.applied_index)

    def is_learner(self) -> bool:
        """Is this member a learner in the applied configuration?"""
        return self.member_id in self.apply_actor.machine.conf_state.learners

    # -- running -----------------------------------------------------------------------

    async def run(
        self,
        serve_client: ClientServer | None = None,
        *,
        task_status: trio.TaskStatus[BoundAddresses] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run every actor until cancelled; report the bound addresses once serving."""
        self.started_at_ns = self.clock.now_ns()
        try:
            async with trio.open_nursery() as nursery:
                peer = []
                for address in self.config.listen_peer_addresses:
                    peer.append(
                        await nursery.start(
                            self.network.serve, address, self.transport.serve_connection
                        )
                    )
                await nursery.start(self.transport.run)
                nursery.start_soon(self.transport_actor.run)
                nursery.start_soon(self.raft_actor.run)
                nursery.start_soon(self.storage_actor.run)
                nursery.start_soon(self.apply_actor.run)
                nursery.start_soon(self.watch_hub.run)
                nursery.start_soon(self.read_batcher.run)
                nursery.start_soon(self.timeouts.run)
                nursery.start_soon(self.leases.run)
                nursery.start_soon(self._tick)
                nursery.start_soon(self._expire_ttl_keys)
                nursery.start_soon(self._publish_client_urls)
                if self.config.initial_cluster_state == "existing" and not self.membership.members:
                    nursery.start_soon(self._learn_peers_while_joining)
                client = []
                if serve_client is not None:
                    for address in self.config.listen_client_addresses:
                        client.append(await nursery.start(serve_client, self, address))
                log.info("%x: serving peers on %s, clients on %s", self.member_id, peer, client)
                task_status.started(BoundAddresses(tuple(peer), tuple(client)))
        finally:
            self.waiters.fail_all(RequestTimeout("the member is stopping"))
            self.read_batcher.fail_all(RequestTimeout("the member is stopping"))

    async def _tick(self) -> None:
        """The Raft tick driver, on the member's monotonic clock (a drifting one in the
        simulator: elections, heartbeats and CheckQuorum all run at its rate)."""
        while True:
            await self.clock.sleep(self.config.tick_interval_s)
            await self.raft_send.send(Tick())

    async def _expire_ttl_keys(self) -> None:
        """The leader decides expiry: it proposes a SYNC when a TTL is due (as etcd)."""
        while True:
            await trio.sleep(SYNC_INTERVAL_S)
            if not self.status.is_leader():
                continue
            now_ns = self.clock.now_ns()
            due = self.machine.store.next_expiration_ns()
            if due is None or due > now_ns:
                continue
            request = V2Request(method="SYNC", path="/", time_ns=now_ns)
            try:
                await self.propose(EnvelopeKind.V2_REQUEST, request.encode())
            except (RequestTimeout, NoLeader, NotLeader) as error:
                log.debug("%x: expiry proposal failed: %s", self.member_id, error)

    async def _publish_client_urls(self) -> None:
        """Announce our name and client URLs through the log until they are applied.

        Each attempt gets a short timeout: an attempt lost around the first election
        must not leave the member listed without client URLs for a whole request timeout.
        """
        wanted = (self.config.name, tuple(self.config.advertise_client_urls))
        body = cbor2.dumps([wanted[0], list(wanted[1])])
        while True:
            mine = self.membership.members.get(self.member_id)
            if mine is not None and (mine.name, mine.client_urls) == wanted:
                self.published.set()
                log.info("%x: published name %s and client URLs %s", self.member_id, *wanted)
                return
            try:
                await self.propose(EnvelopeKind.PUBLISH, body, timeout_s=PUBLISH_ATTEMPT_TIMEOUT_S)
            except (RequestTimeout, NoLeader, NotLeader) as error:
                log.debug("%x: publishing client URLs failed: %s", self.member_id, error)

    async def _learn_peers_while_joining(self) -> None:
        """A member that joins knows no peer until the leader's snapshot brings the member
        table; until then, take the peers' addresses from a founder (``actors.join``)."""
        for _ in range(JOIN_PEERS_ATTEMPTS_MAX):
            if self.membership.members or self.config.initial_cluster_state != "existing":
                return
            addresses = await fetch_peer_addresses(self.network, self.config, self.member_id)
            if addresses and not self.membership.members:
                self.transport.set_peers(addresses)
                log.info("%x: joining; peers from the cluster: %s", self.member_id, addresses)
                return
            await trio.sleep(self.config.election_timeout_s())

    def _on_membership(self, membership: Membership) -> None:
        self.transport.set_peers(peer_addresses(membership, self.member_id))

    def _on_unreachable(self, member_id: int) -> None:
        # A lost report only delays the switch to probing; never block the transport for it,
        # and never fail it when the member is stopping (the raft actor's inbox is closed).
        with contextlib.suppress(
            trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            self.raft_send.send_nowait(Unreachable(member_id))

    # -- request paths -------------------------------------------------------------------

    async def _await_outcome(self, waiter: Waiter, deadline: float) -> object:
        self.timeouts.watch(waiter, deadline)  # no cancel scope per request: see Timeouts
        try:
            await waiter.done.wait()
        finally:
            waiter.abandon()  # a cancelled wait: the timeouts may drop it at once
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    async def _with_leader_retry(
        self, attempt: Callable[[float], Awaitable[object]], timeout_s: float | None = None
    ) -> object:
        """Run ``attempt`` until it is not refused for want of a leader, or time is up."""
        deadline = trio.current_time() + (timeout_s or self.config.request_timeout_s)
        while True:
            try:
                return await attempt(deadline)
            except NotLeader as refused:
                if refused.reason not in RETRYABLE_DROPS:
                    raise
                if trio.current_time() + self.config.tick_interval_s >= deadline:
                    raise NoLeader("etcdserver: no leader") from None
                await trio.sleep(self.config.tick_interval_s)

    async def propose(
        self, kind: EnvelopeKind, body: bytes, *, timeout_s: float | None = None
    ) -> object:
        """Append an entry and wait until it is applied here (at most ``timeout_s``, the
        request timeout by default); its outcome."""

        async def attempt(deadline: float) -> object:
            check_apply_gap(self.status.commit_index, self.applied_index())
            request_id = self.ids.next()
            waiter = self.waiters.register(request_id)
            try:
                data = Envelope(kind, request_id, body).encode()
                await self.raft_send.send(Propose(request_id, data))
                return await self._await_outcome(waiter, deadline)
            finally:
                self.waiters.forget(request_id)

        try:
            return await self._with_leader_retry(attempt, timeout_s)
        except (RequestTimeout, NoLeader):
            self.proposals_failed += 1
            raise

    async def propose_v2(self, request: V2Request) -> Event:
        """A v2 write: its event, or the V2Error the store answered."""
        outcome = await self.propose(EnvelopeKind.V2_REQUEST, request.encode())
        if isinstance(outcome, V2Error):
            raise outcome
        assert isinstance(outcome, Event), outcome
        return outcome

    async def propose_v3(self, request: InternalRaftRequest) -> ProtoMessage:
        """A v3 write: its response (header revision only), or the RpcError it applied to."""
        outcome = await self.propose(EnvelopeKind.V3_REQUEST, request.SerializeToString())
        if isinstance(outcome, LeaderRefused):
            await self.clock.sleep(LEADER_REFUSAL_DELAY_S)  # the tarpit a local refusal waits
        if isinstance(outcome, RpcError):
            raise outcome
        assert isinstance(outcome, ProtoMessage), outcome
        return outcome

    async def confirm_read(self) -> None:
        """Wait until a local read is linearizable (ReadIndex, then apply up to it).

        The read joins the next shared ReadIndex round (``ReadBatcher``).
        """

        async def attempt(deadline: float) -> object:
            return await self._await_outcome(self.read_batcher.enqueue(), deadline)

        await self._with_leader_retry(attempt)

    async def confirm_read_within(self, timeout_s: float) -> None:
        """One ReadIndex round (shared with the reads queued beside it) and the apply up to
        its index, within ``timeout_s``, without waiting for a leader.

        Raises:
            RequestTimeout: not confirmed in time.
            NotLeader, TooManyRequests: as a linearizable read.
        """
        await self._await_outcome(self.read_batcher.enqueue(), trio.current_time() + timeout_s)

    async def _read_index_round(self, deadline: float) -> object:
        """One ReadIndex for a batch of reads: the confirmed index once applied here.

        A ReadIndex can be lost (a follower's request forwarded to a leader
        over a link that breaks), and every read queued behind the round
        would wait for the request timeout; so it is asked again with the
        same context every ``READ_INDEX_RETRY_S``, as etcd's read loop does
        (the leader ignores a context it already has).
        """
        request_id = self.ids.next()
        context = f"{request_id.member_id:x}/{request_id.sequence:x}".encode()
        waiter = self.waiters.register_read(context)
        try:
            while not waiter.done.is_set() and trio.current_time() < deadline:
                await self.raft_send.send(ReadIndex(context))
                with trio.move_on_at(min(deadline, trio.current_time() + READ_INDEX_RETRY_S)):
                    await waiter.done.wait()
            return await self._await_outcome(waiter, deadline)
        finally:
            self.waiters.forget_read(context)

    async def change_membership(self, change_type: ConfChangeType, member: MemberRecord) -> None:
        """Propose a conf change and wait until it is applied here."""

        async def attempt(deadline: float) -> object:
            request_id = self.ids.next()
            waiter = self.waiters.register(request_id)
            try:
                context = conf_change_context(member, request_id)
                change = ConfChange(change_type, member.member_id, context)
                await self.raft_send.send(ProposeConfChange(request_id, change))
                return await self._await_outcome(waiter, deadline)
            finally:
                self.waiters.forget(request_id)

        await self._with_leader_retry(attempt)

    async def add_member(self, peer_urls: list[str], is_learner: bool = False) -> MemberRecord:
        """Add a member with these peer URLs (it must then be started as "existing")."""
        added_at_s = self.clock.now_ns() // 1_000_000_000
        member_id = member_id_for(peer_urls, self.config.initial_cluster_token, added_at_s)
        record = MemberRecord(member_id, "", tuple(peer_urls), (), is_learner)
        kind = ConfChangeType.ADD_LEARNER if is_learner else ConfChangeType.ADD_VOTER
        await self.change_membership(kind, record)
        return record

    async def remove_member(self, member_id: int) -> None:
        """Remove a member."""
        await self.change_membership(ConfChangeType.REMOVE, MemberRecord(member_id, "", ()))

    async def promote_member(self, member_id: int) -> None:
        """Promote a learner to a voter."""
        await self.change_membership(ConfChangeType.ADD_VOTER, MemberRecord(member_id, "", ()))

    async def update_member(self, member_id: int, peer_urls: list[str]) -> None:
        """Change a member's peer URLs."""
        await self.propose(EnvelopeKind.UPDATE_MEMBER, cbor2.dumps([member_id, peer_urls]))

    async def transfer_leadership(self, target: int) -> None:
        """Ask the leader to hand over to ``target`` (returns at once)."""
        await self.raft_send.send(TransferLeadership(target))

    def match_indexes(self) -> dict[int, int] | None:
        """The leader's view of how far each member's log matches its own (its own included),
        by member id; None on a member that does not lead (only the leader knows; etcd's
        ``isLearnerReady`` reads the same)."""
        core = self.raft_actor.node.raft
        if not self.is_leader():
            return None
        return {node: progress.match for node, progress in core.tracker.progress.items()}

    def leader_id(self) -> int:
        """The leader this member knows of, or 0."""
        return self.status.leader_id

    def is_leader(self) -> bool:
        """Is this member the leader?"""
        return self.status.role is Role.LEADER


__all__ = ["BoundAddresses", "Member", "NoLeader", "RequestId", "RequestTimeout"]
