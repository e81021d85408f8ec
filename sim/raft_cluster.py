"""A cluster of Raft cores wired together in memory, one message at a time.

This is the smallest simulator: no Trio, no bytes on a wire, just RawNodes,
their MemoryStorages, a bag of messages in flight, and an application per
member that folds applied entries into a hash chain. Whoever drives it (the
randomized test, the scenario harness, the core benchmark) decides what
happens next: which node ticks, which message is delivered, dropped or
duplicated, who crashes. Every action is a method, so a schedule is just a
sequence of calls.

Each member processes a Ready in two halves, so that other events (and
crashes) can fall between them:

- ``take_ready``: take the Ready and put its ``messages`` on the network;
- ``finish_ready``: persist it, put ``messages_after_persist`` on the
  network, apply the committed entries, and advance.

A crash loses the member's RawNode and any Ready taken but not finished;
its MemoryStorage (what was persisted) and its last snapshot survive.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from random import Random

from actors.raft import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    RaftError,
    RawNode,
    Ready,
    Role,
    Snapshot,
    conf_state_after,
)
from sim.raft_invariants import InvariantChecker, InvariantViolation

ConfigFactory = Callable[[int, int], Config]
"""Makes a member's Config from its id and its applied index at start."""


def chain_hash(previous: bytes, entry: Entry) -> bytes:
    """The application state after applying ``entry``: a hash of the whole history."""
    header = struct.pack(">QQB", entry.index, entry.term, entry.type)
    return hashlib.blake2b(previous + header + entry.data, digest_size=8).digest()


@dataclass
class AppState:
    """What a member's application holds: where it is, and what it has seen."""

    applied_index: int = 0
    state_hash: bytes = b""
    conf_state: ConfState = field(default_factory=ConfState)
    applied_payloads: list[bytes] = field(default_factory=list)

    def apply(self, entry: Entry) -> None:
        """Fold one committed entry into the state."""
        assert entry.index == self.applied_index + 1, (entry.index, self.applied_index)
        self.applied_index = entry.index
        self.state_hash = chain_hash(self.state_hash, entry)
        if entry.type is EntryType.CONF_CHANGE:
            self.conf_state = conf_state_after(self.conf_state, ConfChange.decode(entry.data))
        elif entry.data:
            self.applied_payloads.append(entry.data)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the state with a snapshot's."""
        self.applied_index = snapshot.metadata.index
        self.state_hash = snapshot.data
        self.conf_state = snapshot.metadata.conf_state
        self.applied_payloads = []


@dataclass
class Member:
    """One member: durable storage, and the volatile node and application."""

    node_id: int
    storage: MemoryStorage
    node: RawNode | None
    app: AppState
    outstanding: Ready | None = None

    def is_up(self) -> bool:
        """False between a crash and a restart."""
        return self.node is not None


class RaftCluster:
    """Members, the network between them, and the checker watching them.

    Args:
        node_ids: the members.
        rng: the only source of randomness (election timeouts of every member).
        config_factory: a member's Config from its id and applied index.
        voters / learners: the initial configuration (default: every node votes).
        checker: invariant checks run on every persist, apply and step.
        snapshot_index: every member starts from a snapshot of the initial
            configuration at this index (term 1). Members added later learn
            the configuration only from a snapshot, so adding members needs
            an index of at least 1; at 0 the configuration is only implied.
    """

    def __init__(
        self,
        node_ids: Iterable[int],
        rng: Random,
        *,
        config_factory: ConfigFactory | None = None,
        voters: Iterable[int] | None = None,
        learners: Iterable[int] = (),
        checker: InvariantChecker | None = None,
        snapshot_index: int = 0,
    ) -> None:
        ids = sorted(node_ids)
        self.rng = rng
        self.config_factory = config_factory or (
            lambda node, applied: Config(node, applied_index=applied)
        )
        self.checker = checker or InvariantChecker()
        conf_state = ConfState(tuple(sorted(voters or ids)), tuple(sorted(learners)))
        self.members: dict[int, Member] = {}
        self.in_flight: list[Message] = []
        self.blocked_links: set[tuple[int, int]] = set()
        self.snapshot_index = snapshot_index
        snapshot_term = 1 if snapshot_index else 0
        for node_id in ids:
            storage = MemoryStorage(conf_state, snapshot_index, snapshot_term)
            app = AppState(applied_index=snapshot_index, conf_state=conf_state)
            self.members[node_id] = Member(node_id, storage, None, app)
            self._start(self.members[node_id])

    # -- lifecycle ---------------------------------------------------------------

    def _start(self, member: Member) -> None:
        snapshot = member.storage.snapshot()
        member.app = AppState(conf_state=member.storage.initial_state()[1])
        if not snapshot.is_empty():
            member.app.restore(snapshot)
        config = self.config_factory(member.node_id, member.app.applied_index)
        member.node = RawNode(config, member.storage, Random(self.rng.getrandbits(64)))
        member.outstanding = None

    def add_member(self, node_id: int) -> None:
        """Create a new, empty member (to be added by a conf change).

        Raises:
            ValueError: the cluster started without a snapshot, so the new
                member could never learn the initial configuration.
        """
        assert node_id not in self.members, node_id
        if self.snapshot_index == 0:
            raise ValueError(
                "new members learn the configuration from a snapshot: "
                "start the cluster with a snapshot index of at least 1 (add-nodes ... index=1)"
            )
        member = Member(node_id, MemoryStorage(), None, AppState())
        self.members[node_id] = member
        self._start(member)

    def crash(self, node_id: int) -> None:
        """Stop a member: its volatile state and unfinished Ready are gone."""
        member = self.members[node_id]
        member.node = None
        member.outstanding = None

    def restart(self, node_id: int) -> None:
        """Start a member again from what it persisted."""
        member = self.members[node_id]
        assert member.node is None, f"{node_id} is running"
        self.checker.on_restart(node_id)
        self._start(member)

    def node(self, node_id: int) -> RawNode:
        """A running member's node."""
        node = self.members[node_id].node
        assert node is not None, f"{node_id} is down"
        return node

    def up_ids(self) -> list[int]:
        """Running members, in id order."""
        return [node_id for node_id, member in self.members.items() if member.is_up()]

    # -- readiness -----------------------------------------------------------------

    def take_ready(self, node_id: int) -> Ready | None:
        """Take a member's Ready and send what may go before the persist."""
        member = self.members[node_id]
        node = member.node
        if node is None or member.outstanding is not None or not node.has_ready():
            return None
        ready = node.ready()
        member.outstanding = ready
        self.in_flight.extend(ready.messages)
        return ready

    def finish_ready(self, node_id: int) -> Ready | None:
        """Persist, send the rest, apply and advance a member's taken Ready."""
        member = self.members[node_id]
        ready = member.outstanding
        node = member.node
        if ready is None or node is None:
            return None
        self._persist(member, ready)
        self.in_flight.extend(ready.messages_after_persist)
        self._apply(member, ready)
        member.outstanding = None
        node.advance(ready)
        self.checker.observe(self)
        return ready

    def process_ready(self, node_id: int) -> Ready | None:
        """Both halves at once."""
        ready = self.take_ready(node_id)
        if ready is not None:
            self.finish_ready(node_id)
        return ready

    def _persist(self, member: Member, ready: Ready) -> None:
        storage = member.storage
        if ready.snapshot is not None:
            storage.apply_snapshot(ready.snapshot)
        if ready.entries:
            self.checker.on_persist(member.node_id, storage, ready.entries)
            storage.append(ready.entries)
        if ready.hard_state is not None:
            storage.set_hard_state(ready.hard_state)

    def _apply(self, member: Member, ready: Ready) -> None:
        if ready.snapshot is not None and ready.snapshot.metadata.index > member.app.applied_index:
            member.app.restore(ready.snapshot)
            self.checker.on_snapshot_applied(
                member.node_id, member.app.applied_index, member.app.state_hash
            )
        for entry in ready.committed_entries:
            if entry.index <= member.app.applied_index:
                continue
            member.app.apply(entry)
            self.checker.on_apply(member.node_id, entry.index, member.app.state_hash)

    def compact(self, node_id: int, keep_entries: int = 0) -> bool:
        """Snapshot a member's application state and compact its log; True if done."""
        member = self.members[node_id]
        index = member.app.applied_index - keep_entries
        storage = member.storage
        if index <= storage.snapshot().metadata.index or index > storage.last_index():
            return False
        if index != member.app.applied_index:
            return False  # the state hash is only known at the applied index
        storage.create_snapshot(index, member.app.conf_state, member.app.state_hash)
        storage.compact(index)
        return True

    # -- the network -------------------------------------------------------------------

    def link_open(self, sender: int, recipient: int) -> bool:
        """Can a message go from ``sender`` to ``recipient`` now?"""
        return (sender, recipient) not in self.blocked_links

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every link between different groups (members in no group are cut off)."""
        group_of: dict[int, int] = {}
        for number, group in enumerate(groups):
            for node_id in group:
                group_of[node_id] = number
        self.blocked_links = {
            (a, b)
            for a in self.members
            for b in self.members
            if a != b and group_of.get(a, -1 - a) != group_of.get(b, -1 - b)
        }

    def isolate(self, node_id: int) -> None:
        """Cut one member off from everyone (both ways)."""
        for other in self.members:
            if other != node_id:
                self.blocked_links.add((node_id, other))
                self.blocked_links.add((other, node_id))

    def heal(self) -> None:
        """Open every link."""
        self.blocked_links = set()

    def deliver(self, position: int) -> Message:
        """Deliver the message at ``position`` in flight (dropped if its link is cut
        or its recipient is down)."""
        message = self.in_flight.pop(position)
        recipient = self.members.get(message.recipient)
        arrives = (
            recipient is not None
            and recipient.node is not None
            and self.link_open(message.sender, message.recipient)
        )
        if arrives:
            self.step(message.recipient, message)
        self._report_snapshot(message, arrives)
        return message

    def _report_snapshot(self, message: Message, succeeded: bool) -> None:
        """Tell a snapshot's sender how it went, as a real transport must."""
        if message.type is not MessageType.SNAPSHOT:
            return
        sender = self.members.get(message.sender)
        if sender is not None and sender.node is not None:
            sender.node.report_snapshot(message.recipient, succeeded)

    def step(self, node_id: int, message: Message) -> None:
        """Step a message into a member, as its transport would (errors are logged, not raised)."""
        with contextlib.suppress(RaftError):
            self.node(node_id).step(message)
        self.checker.observe(self)

    def drop(self, position: int) -> Message:
        """Lose the message at ``position``."""
        message = self.in_flight.pop(position)
        self._report_snapshot(message, succeeded=False)
        return message

    def duplicate(self, position: int) -> None:
        """Put a second copy of the message at ``position`` in flight."""
        self.in_flight.append(self.in_flight[position])

    def deliver_all(self, types: Iterable[MessageType] | None = None) -> int:
        """Deliver every message in flight, oldest first, until none is left."""
        delivered = 0
        wanted = set(types) if types is not None else None
        while self.in_flight:
            index = 0
            if wanted is not None:
                matches = [i for i, m in enumerate(self.in_flight) if m.type in wanted]
                if not matches:
                    break
                index = matches[0]
            self.deliver(index)
            delivered += 1
        return delivered

    # -- whole-cluster helpers -------------------------------------------------------------

    def tick_all(self) -> None:
        """One tick for every running member."""
        for node_id in self.up_ids():
            self.node(node_id).tick()
        self.checker.observe(self)

    def stabilize(self, rounds_max: int = 10_000) -> None:
        """Process every Ready and deliver every message until nothing moves."""
        for _ in range(rounds_max):
            moved = False
            for node_id in self.up_ids():
                if self.process_ready(node_id) is not None:
                    moved = True
            if self.in_flight:
                self.deliver_all()
                moved = True
            if not moved:
                return
        raise InvariantViolation(f"liveness: the cluster did not stabilize in {rounds_max} rounds")

    def leader(self) -> int | None:
        """The running leader of the highest term, if any."""
        best: tuple[int, int] | None = None
        for node_id in self.up_ids():
            raft = self.node(node_id).raft
            if raft.role is Role.LEADER and (best is None or raft.term > best[0]):
                best = (raft.term, node_id)
        return best[1] if best else None
