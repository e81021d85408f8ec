"""The raft actor: the only owner of the Raft core.

Its inbox takes one union of inputs (ticks, peer messages, proposals, reads,
reports, "persisted" from the storage actor and "applied" from the apply
actor). It steps every input it can get without waiting, then takes a Ready
(the core runs with asynchronous storage writes, ``actors.raft.rawnode``)
and hands its parts to the stage that carries them out:

- messages that may go at once, to the transport;
- ``append`` (what to persist, and the messages that wait for it), to the
  storage actor, which answers ``Persisted``. One append is in flight at a
  time: whatever arrives during an fsync goes into the next one, which is
  group commit (many proposals per fsync) without a timer;
- ``apply`` (committed entries that are durable here, a snapshot) and the
  ReadIndex answers, to the apply actor directly, which answers ``Applied``.
  They do not wait for the append in flight: a write is applied as soon as
  it commits, while the next batch is being fsynced.

It never waits on another actor (it sends only into channels it knows have
room), so the answers the storage and apply actors send back into its inbox
cannot deadlock with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, assert_never

import trio

from actors.envelope import RequestId
from actors.raft import (
    ConfChange,
    Entry,
    Message,
    MessageType,
    PersistedUpTo,
    ProposalDropped,
    RaftError,
    RawNode,
    ReadState,
    Ready,
    Role,
    Snapshot,
    StepRefused,
    StorageAppend,
)
from actors.waiters import Waiters

log = logging.getLogger(__name__)

INBOX_LENGTH_MAX = 4096
"""Inputs queued for the raft actor; producers wait when it is full."""
INPUTS_PER_READY_MAX = 1024
"""Inputs stepped before a Ready is taken, so a flood cannot starve persistence."""
APPLY_QUEUE_LENGTH_MAX = 64
"""Batches of committed entries handed to the apply actor and not yet taken by it."""


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick of the Raft clock (heartbeat interval divided by heartbeat ticks)."""


@dataclass(frozen=True, slots=True)
class FromPeer:
    """A message another member sent."""

    message: Message


@dataclass(frozen=True, slots=True)
class Propose:
    """Append ``data`` to the log on behalf of ``request_id``."""

    request_id: RequestId
    data: bytes


@dataclass(frozen=True, slots=True)
class ProposeConfChange:
    """Propose a membership change on behalf of ``request_id``."""

    request_id: RequestId
    change: ConfChange


@dataclass(frozen=True, slots=True)
class ReadIndex:
    """Ask for a linearizable read point; the context comes back in a ReadState."""

    context: bytes


@dataclass(frozen=True, slots=True)
class TransferLeadership:
    """Ask the leader to hand over to ``target``."""

    target: int


@dataclass(frozen=True, slots=True)
class SnapshotReport:
    """The transport finished sending a snapshot."""

    member_id: int
    succeeded: bool


@dataclass(frozen=True, slots=True)
class Unreachable:
    """The transport could not reach a member."""

    member_id: int


@dataclass(frozen=True, slots=True)
class Persisted:
    """The storage actor made the append in flight durable and sent what waited for it."""

    up_to: PersistedUpTo


@dataclass(frozen=True, slots=True)
class Applied:
    """The apply actor applied (and persisted) everything up to ``index``."""

    index: int


@dataclass(frozen=True, slots=True)
class ApplyWork:
    """What the apply actor is to do, in order: install a snapshot, apply committed
    entries, then answer the reads confirmed at ``read_states``."""

    snapshot: Snapshot | None
    committed_entries: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]

    @property
    def last_index(self) -> int:
        """The index this work applies up to (0 when it only answers reads)."""
        if self.committed_entries:
            return self.committed_entries[-1].index
        return self.snapshot.metadata.index if self.snapshot is not None else 0


RaftInput = (
    Tick
    | FromPeer
    | Propose
    | ProposeConfChange
    | ReadIndex
    | TransferLeadership
    | SnapshotReport
    | Unreachable
    | Persisted
    | Applied
)


class ProposalAdmission(Protocol):
    """What the leader asks before it appends proposed entries (``actors.qos_leader``: per-tenant
    write rates charged cluster-wide; issue 16). It may replace an entry's data, never drop it."""

    def admit(self, data: bytes, term: int) -> bytes:
        """A normal entry's data as it is to be appended."""
        ...

    def admit_message(self, message: Message, term: int) -> Message:
        """A forwarded ``PROPOSE`` message with its normal entries admitted."""
        ...

    def refund(self) -> None:
        """The entries last admitted were dropped, not appended: undo what admitting took."""
        ...


class NotLeader(Exception):
    """A request the core refused; ``reason`` says why (no leader, transfer, limit)."""

    def __init__(self, dropped: ProposalDropped) -> None:
        super().__init__(str(dropped))
        self.reason = dropped.reason


@dataclass
class RaftStatus:
    """What the raft actor publishes for the API (read-only to everyone else)."""

    member_id: int
    term: int = 0
    leader_id: int = 0
    role: Role = Role.FOLLOWER
    commit_index: int = 0
    leader_changes: int = 0

    def is_leader(self) -> bool:
        """Is this member the leader?"""
        return self.role is Role.LEADER


class RaftActor:
    """Steps the core with every input and hands each part of a Ready to its stage."""

    def __init__(
        self,
        node: RawNode,
        *,
        inbox: trio.MemoryReceiveChannel[RaftInput],
        to_storage: trio.MemorySendChannel[StorageAppend],
        to_apply: trio.MemorySendChannel[ApplyWork],
        send: Callable[[Message], None],
        waiters: Waiters,
        status: RaftStatus,
    ) -> None:
        assert node.async_storage_writes, "the actors acknowledge persist and apply apart"
        self.node = node
        self.inbox = inbox
        self.to_storage = to_storage
        self.to_apply = to_apply
        self.send = send
        self.waiters = waiters
        self.status = status
        self.appending: StorageAppend | None = None
        """The append the storage actor is persisting, if any."""
        self.admission: ProposalAdmission | None = None
        """Consulted on the leader before proposals are appended (None: nothing is)."""

    async def run(self) -> None:
        """Step inputs and hand out Readies until cancelled."""
        async with self.inbox, self.to_storage, self.to_apply:
            while True:
                self.handle(await self.inbox.receive())
                for _ in range(INPUTS_PER_READY_MAX):
                    try:
                        item = self.inbox.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self.handle(item)
                self.hand_out_ready()

    def hand_out_ready(self) -> None:
        """Take a Ready, as far as the stages have room, and hand out its parts.

        Never waits: an append goes only to an idle storage actor (its channel
        holds one), apply work only into a channel with room.
        """
        append = self.appending is None
        statistics = self.to_apply.statistics()
        apply = statistics.current_buffer_used < statistics.max_buffer_size
        if not self.node.has_ready(append=append, apply=apply):
            return
        ready = self.node.ready(append=append, apply=apply)
        self._publish(ready)
        for message in ready.messages:
            self.send(message)
        if ready.append is not None:
            self.appending = ready.append
            self.to_storage.send_nowait(ready.append)
        if ready.apply is not None or ready.read_states:
            snapshot = ready.apply.snapshot if ready.apply else None
            entries = ready.apply.committed_entries if ready.apply else ()
            self.to_apply.send_nowait(ApplyWork(snapshot, entries, ready.read_states))

    def _publish(self, ready: Ready) -> None:
        if ready.soft_state is not None:
            soft = ready.soft_state
            if soft.leader_id != self.status.leader_id and soft.leader_id:
                self.status.leader_changes += 1
                log.info(
                    "%x: leader is %x at term %d",
                    self.status.member_id,
                    soft.leader_id,
                    self.node.raft.term,
                )
            self.status.leader_id = soft.leader_id
            self.status.role = soft.role
        if ready.hard_state is not None:
            self.status.term = ready.hard_state.term
            self.status.commit_index = ready.hard_state.commit

    def handle(self, item: RaftInput) -> None:
        """Step one input (never blocks)."""
        match item:
            case Tick():
                self.node.tick()
            case FromPeer(message):
                admission = self._admission() if message.type is MessageType.PROPOSE else None
                if admission is not None:
                    message = admission.admit_message(message, self.node.raft.term)
                if not self._step_peer(message) and admission is not None:
                    admission.refund()
            case Propose(request_id, data):
                admission = self._admission()
                if admission is not None:
                    data = admission.admit(data, self.node.raft.term)
                proposed = self._propose(request_id, lambda: self.node.propose(data))
                if not proposed and admission is not None:
                    admission.refund()
            case ProposeConfChange(request_id, change):
                self._propose(request_id, lambda: self.node.propose_conf_change(change))
            case ReadIndex(context):
                try:
                    self.node.read_index(context)
                except ProposalDropped as dropped:
                    self.waiters.fail_read(context, NotLeader(dropped))
            case TransferLeadership(target):
                self.node.transfer_leader(target)
            case SnapshotReport(member_id, succeeded):
                self.node.report_snapshot(member_id, succeeded)
            case Unreachable(member_id):
                self.node.report_unreachable(member_id)
            case Persisted(up_to):
                assert self.appending is not None, "persisted an append that was not handed out"
                assert up_to == self.appending.persisted_up_to, (up_to, self.appending)
                self.appending = None
                self.node.on_persisted(up_to)
            case Applied(index):
                self.node.on_applied(index)
            case _:
                assert_never(item)

    def _admission(self) -> ProposalAdmission | None:
        """The admission proposals go through now: only the leader appends them."""
        return self.admission if self.node.raft.role is Role.LEADER else None

    def _step_peer(self, message: Message) -> bool:
        """Step a peer's message; whether the core took it (a refusal is logged)."""
        try:
            self.node.step(message)
        except StepRefused as refused:
            log.warning(
                "%x: refused a message from %x: %s", self.status.member_id, message.sender, refused
            )
        except ProposalDropped as dropped:
            log.debug("%x: dropped a forwarded request: %s", self.status.member_id, dropped)
        except RaftError as error:
            log.warning(
                "%x: could not step a message from %x: %s",
                self.status.member_id,
                message.sender,
                error,
            )
        else:
            return True
        return False

    def _propose(self, request_id: RequestId, propose: Callable[[], None]) -> bool:
        """Propose; whether the core took it (else its waiter fails with ``NotLeader``)."""
        try:
            propose()
        except ProposalDropped as dropped:
            self.waiters.fail(request_id, NotLeader(dropped))
            return False
        return True
