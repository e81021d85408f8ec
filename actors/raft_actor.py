"""The raft actor: the only owner of the Raft core.

Its inbox takes one union of inputs (ticks, peer messages, proposals, reads,
reports, and "persisted" from the storage actor). It steps every input it
can get without waiting, then, if no Ready is outstanding, takes one and
hands it to the storage actor. Inputs keep arriving while the Ready is being
persisted; they all go into the next one: that is group commit, many
proposals per fsync, without a timer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import assert_never

import trio

from actors.envelope import RequestId
from actors.raft import (
    ConfChange,
    Message,
    ProposalDropped,
    RaftError,
    RawNode,
    Ready,
    Role,
    StepRefused,
)
from actors.waiters import Waiters

log = logging.getLogger(__name__)

INBOX_LENGTH_MAX = 4096
"""Inputs queued for the raft actor; producers wait when it is full."""
INPUTS_PER_READY_MAX = 1024
"""Inputs stepped before a Ready is taken, so a flood cannot starve persistence."""


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
    """The storage actor persisted (and forwarded) ``ready``."""

    ready: Ready


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
)


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
    """Steps the core with every input and hands each Ready to storage."""

    def __init__(
        self,
        node: RawNode,
        *,
        inbox: trio.MemoryReceiveChannel[RaftInput],
        to_storage: trio.MemorySendChannel[Ready],
        send: Callable[[Message], None],
        waiters: Waiters,
        status: RaftStatus,
    ) -> None:
        self.node = node
        self.inbox = inbox
        self.to_storage = to_storage
        self.send = send
        self.waiters = waiters
        self.status = status
        self.outstanding: Ready | None = None

    async def run(self) -> None:
        """Step inputs and hand out Readies until cancelled."""
        async with self.inbox, self.to_storage:
            while True:
                self.handle(await self.inbox.receive())
                for _ in range(INPUTS_PER_READY_MAX):
                    try:
                        item = self.inbox.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self.handle(item)
                await self.hand_out_ready()

    async def hand_out_ready(self) -> None:
        """Take a Ready if none is outstanding, send what may go now, pass it on."""
        if self.outstanding is not None or not self.node.has_ready():
            return
        ready = self.node.ready()
        self.outstanding = ready
        self._publish(ready)
        for message in ready.messages:
            self.send(message)
        await self.to_storage.send(ready)

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
                self._step_peer(message)
            case Propose(request_id, data):
                self._propose(request_id, lambda: self.node.propose(data))
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
            case Persisted(ready):
                assert ready is self.outstanding, "persisted a Ready that was not handed out"
                self.outstanding = None
                self.node.advance(ready)
            case _:
                assert_never(item)

    def _step_peer(self, message: Message) -> None:
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

    def _propose(self, request_id: RequestId, propose: Callable[[], None]) -> None:
        try:
            propose()
        except ProposalDropped as dropped:
            self.waiters.fail(request_id, NotLeader(dropped))
