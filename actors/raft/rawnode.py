"""The core's public face: inputs in, Ready values out, ``advance`` to acknowledge.

The loop an application runs around a RawNode::

    node.tick() / node.step(message) / node.propose(data) ...   # any number
    if node.has_ready():
        ready = node.ready()
        send(ready.messages)                  # may go at once, even before the persist
        persist(ready.snapshot, ready.entries, ready.hard_state)   # one fsync
        send(ready.messages_after_persist)    # only now: they vouch for that persist
        apply(ready.snapshot, ready.committed_entries)
        serve(ready.read_states)
        node.advance(ready)

Inputs may keep arriving between ``ready()`` and ``advance()`` (an actor
persists while it steps), but a second ``ready()`` must wait for the first
``advance()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random
from typing import Any

from actors.raft.config import Config, PlantedBug
from actors.raft.core import Raft
from actors.raft.errors import StepRefused
from actors.raft.messages import (
    LOCAL_MESSAGE_TYPES,
    NO_NODE,
    PERSIST_DEPENDENT_MESSAGE_TYPES,
    RESPONSE_MESSAGE_TYPES,
    ConfChange,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SoftState,
)
from actors.raft.storage import Storage


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the node wants done, in the order the fields are listed.

    Attributes:
        soft_state: the new leader and role, or None when unchanged.
        hard_state: the hard state to persist, or None when unchanged.
        snapshot: a snapshot to persist and apply before anything else, or None.
        entries: entries to persist after the snapshot; they replace any
            persisted entries from ``entries[0].index`` on.
        must_sync: the persist must be fsynced (entries, term or vote changed).
        messages: messages that may be sent before the persist completes.
        messages_after_persist: messages to send only once the persist is
            durable (votes, append acknowledgements).
        committed_entries: entries to apply, in order.
        read_states: ReadIndex answers; serve each once applied >= its index.
    """

    soft_state: SoftState | None
    hard_state: HardState | None
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]
    must_sync: bool
    messages: tuple[Message, ...]
    messages_after_persist: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]

    def is_empty(self) -> bool:
        """True when there is nothing to do."""
        return not (
            self.soft_state
            or self.hard_state
            or self.snapshot
            or self.entries
            or self.messages
            or self.messages_after_persist
            or self.committed_entries
            or self.read_states
        )


class RawNode:
    """A Raft node without I/O: see the module docstring for the loop around it."""

    def __init__(self, config: Config, storage: Storage, rng: Random) -> None:
        self.raft = Raft(config, storage, rng)
        self._last_soft_state = self.raft.soft_state()
        self._last_hard_state = storage.initial_state()[0]
        self._outstanding: Ready | None = None

    @property
    def id(self) -> int:
        """This node's id."""
        return self.raft.id

    # -- inputs ------------------------------------------------------------------

    def tick(self) -> None:
        """Advance time by one tick."""
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (with PreVote first, if configured)."""
        self.raft.step(Message(MessageType.HUP, sender=self.id))

    def propose(self, data: bytes) -> None:
        """Propose one entry.

        Raises:
            ProposalDropped: no leader, a transfer under way, or a limit reached.
        """
        self.propose_batch([data])

    def propose_batch(self, payloads: list[bytes]) -> None:
        """Propose several entries at once; they share one append per follower."""
        entries = tuple(Entry(0, 0, EntryType.NORMAL, data) for data in payloads)
        self.raft.step(Message(MessageType.PROPOSE, sender=self.id, entries=entries))

    def propose_conf_change(self, change: ConfChange) -> None:
        """Propose a membership change; it takes effect once applied.

        Raises:
            ProposalDropped: also when another change is still being applied,
                or the change makes no sense for the current configuration.
        """
        entry = Entry(0, 0, EntryType.CONF_CHANGE, change.encode())
        self.raft.step(Message(MessageType.PROPOSE, sender=self.id, entries=(entry,)))

    def read_index(self, request_context: bytes) -> None:
        """Ask for a linearizable read point; a ReadState with this context answers.

        Raises:
            ProposalDropped: no leader known, or an empty context.
        """
        self.raft.step(Message(MessageType.READ_INDEX, sender=self.id, context=request_context))

    def transfer_leader(self, target: int) -> None:
        """Ask the leader to hand leadership to ``target``."""
        self.raft.step(Message(MessageType.TRANSFER_LEADER, sender=target))

    def report_unreachable(self, node: int) -> None:
        """The transport could not reach ``node``; stop streaming to it optimistically."""
        self.raft.step(Message(MessageType.UNREACHABLE, sender=node))

    def report_snapshot(self, node: int, succeeded: bool) -> None:
        """The transport finished sending a snapshot to ``node``.

        The transport must report every snapshot message it was handed,
        delivered or not: until it does, the leader sends that follower
        nothing else.
        """
        self.raft.step(Message(MessageType.SNAPSHOT_STATUS, sender=node, reject=not succeeded))

    def step(self, message: Message) -> None:
        """Step a message that came from a peer.

        Raises:
            StepRefused: a local message type, or a response from a non-member.
            ProposalDropped: a forwarded proposal this node cannot take.
        """
        if message.type in LOCAL_MESSAGE_TYPES:
            raise StepRefused(f"{message.type.name} is local and cannot come from a peer")
        if message.sender == NO_NODE:
            raise StepRefused("a peer message must name its sender")
        if message.type in RESPONSE_MESSAGE_TYPES and not self.raft.tracker.is_member(
            message.sender
        ):
            raise StepRefused(f"response from {message.sender}, which is not a member")
        numbers = (message.term, message.log_term, message.index, message.commit)
        if min(numbers) < 0 or message.reject_hint < 0 or message.recipient != self.id:
            raise StepRefused(f"malformed {message.type.name} from {message.sender}")
        self.raft.step(message)

    # -- outputs -----------------------------------------------------------------

    def has_ready(self) -> bool:
        """Is there anything to persist, send, apply or report?"""
        raft = self.raft
        raft.flush_appends()
        return bool(
            raft.soft_state() != self._last_soft_state
            or self._hard_state_changed()
            or raft.log.unstable.entries
            or raft.log.unstable.snapshot is not None
            or raft.messages
            or raft.log.has_next_committed_entries()
            or raft.read_states
        )

    def _hard_state_changed(self) -> bool:
        return self.raft.hard_state() != self._last_hard_state

    def ready(self) -> Ready:
        """Take what the node wants done. Call ``advance`` before the next ``ready``."""
        if self._outstanding is not None:
            raise RuntimeError("ready() called again before advance()")
        raft = self.raft
        raft.flush_appends()
        soft_state = raft.soft_state()
        hard_state = raft.hard_state()
        entries = tuple(raft.log.unstable_entries())
        hard_changed = hard_state != self._last_hard_state
        now, after = self._split_messages(raft.messages)
        ready = Ready(
            soft_state=soft_state if soft_state != self._last_soft_state else None,
            hard_state=hard_state if hard_changed else None,
            snapshot=raft.log.unstable.snapshot,
            entries=entries,
            must_sync=bool(entries)
            or (
                hard_changed
                and (hard_state.term, hard_state.vote)
                != (self._last_hard_state.term, self._last_hard_state.vote)
            ),
            messages=now,
            messages_after_persist=after,
            committed_entries=tuple(raft.log.next_committed_entries()),
            read_states=tuple(raft.read_states),
        )
        raft.messages = []
        raft.read_states = []
        self._last_soft_state = soft_state
        if hard_changed:
            self._last_hard_state = hard_state
        self._outstanding = ready
        return ready

    def _split_messages(
        self, messages: list[Message]
    ) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
        dependent = PERSIST_DEPENDENT_MESSAGE_TYPES
        if PlantedBug.ACK_BEFORE_SYNC in self.raft.config.planted_bugs:
            dependent = dependent - {MessageType.APPEND_RESPONSE}
        now = tuple(m for m in messages if m.type not in dependent)
        after = tuple(m for m in messages if m.type in dependent)
        return now, after

    def advance(self, ready: Ready) -> None:
        """Acknowledge that ``ready`` was persisted, sent and applied."""
        if ready is not self._outstanding:
            raise RuntimeError("advance() must be given the Ready from the last ready()")
        self._outstanding = None
        last_index = ready.entries[-1].index if ready.entries else 0
        last_term = ready.entries[-1].term if ready.entries else 0
        snapshot_index = ready.snapshot.metadata.index if ready.snapshot else 0
        self.raft.on_persisted(last_index, last_term, snapshot_index)
        self.raft.on_applied(ready.committed_entries, snapshot_index)

    def status(self) -> dict[str, Any]:
        """A summary of the node's state for humans and tests."""
        return self.raft.status()
