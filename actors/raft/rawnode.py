"""The core's public face: inputs in, Ready values out, acknowledgements back.

A Ready has two parts that different stages of the application carry out,
each acknowledged where it happens (etcd-io/raft's asynchronous storage
writes, in our own shape):

- ``append`` (a :class:`StorageAppend`): a snapshot, entries and a hard state
  to persist, and ``messages_after_persist``, which may leave only once that
  is durable (votes, append acknowledgements). The persisting stage answers
  ``on_persisted(append.persisted_up_to)``.
- ``apply`` (a :class:`StorageApply`): a snapshot, then committed entries, to
  apply in order. The applying stage answers ``on_applied(index)``.

``messages`` may be sent at once (a leader's appends, heartbeats), and
``read_states`` are served once the applied index reaches them.

With ``Config.async_storage_writes`` the loop around a RawNode is::

    node.tick() / node.step(message) / node.propose(data) / ...  # any number
    node.on_persisted(up_to) / node.on_applied(index)            # as they come
    if node.has_ready(append=storage_idle, apply=apply_has_room):
        ready = node.ready(append=storage_idle, apply=apply_has_room)
        send(ready.messages)
        storage.hand(ready.append)   # persist, then send its messages_after_persist,
                                     # then node.on_persisted(append.persisted_up_to)
        applier.hand(ready.apply, ready.read_states)  # apply, then node.on_applied(i)

A Ready may be taken while earlier ones are still unacknowledged; nothing is
handed out twice, and the parts must be carried out in the order they were
handed out (appends in order, applies in order). Committed entries (and a
snapshot from the leader) are handed out for applying only once they are
durable here, so the applied index never passes the durable log. Messages
that wait for a persist are held in the core until the next ``append`` is
taken: they ride on it even when it has nothing to write.

Without it (the default, and what the in-memory simulator uses), one Ready
is handled at a time and acknowledged once::

    ready = node.ready()
    send(ready.messages)
    persist(ready.snapshot, ready.entries, ready.hard_state)   # one fsync
    send(ready.messages_after_persist)
    apply(ready.snapshot, ready.committed_entries)    # may include entries
    serve(ready.read_states)                          # persisted just now
    node.advance(ready)
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
class PersistedUpTo:
    """What a persisted :class:`StorageAppend` made durable.

    Attributes:
        index: the last entry written (0: none).
        term: that entry's term.
        snapshot_index: the snapshot written (0: none).
    """

    index: int
    term: int
    snapshot_index: int


@dataclass(frozen=True, slots=True)
class StorageAppend:
    """What to make durable, in this order, and what may leave only after.

    Attributes:
        hard_state: the hard state to persist, or None when unchanged.
        snapshot: a snapshot to persist first, or None.
        entries: entries to persist after the snapshot; they replace any
            persisted entries from ``entries[0].index`` on.
        must_sync: the write must be fsynced (entries, a snapshot, or the term
            or vote changed).
        messages_after_persist: messages to send only once the write (and every
            earlier one) is durable: votes, append acknowledgements.
    """

    hard_state: HardState | None
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]
    must_sync: bool
    messages_after_persist: tuple[Message, ...]

    @property
    def persisted_up_to(self) -> PersistedUpTo:
        """The acknowledgement to give ``RawNode.on_persisted`` once this is durable."""
        last = self.entries[-1] if self.entries else None
        return PersistedUpTo(
            last.index if last else 0,
            last.term if last else 0,
            self.snapshot.metadata.index if self.snapshot else 0,
        )

    def has_write(self) -> bool:
        """Is there anything to write (rather than only messages to release)?"""
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None


@dataclass(frozen=True, slots=True)
class StorageApply:
    """What to apply, in this order: a snapshot, then committed entries.

    Attributes:
        snapshot: a snapshot to install first (only one that is persisted, or
            persisted by the same Ready without asynchronous storage writes).
        committed_entries: committed entries to apply, in order, without gaps.
    """

    snapshot: Snapshot | None
    committed_entries: tuple[Entry, ...]

    @property
    def last_index(self) -> int:
        """The index ``RawNode.on_applied`` is given once all of this is applied."""
        if self.committed_entries:
            return self.committed_entries[-1].index
        return self.snapshot.metadata.index if self.snapshot else 0


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the node wants done: see the module docstring for the order.

    Attributes:
        soft_state: the new leader and role, or None when unchanged.
        messages: messages that may be sent before anything is persisted.
        append: what to persist (and the messages waiting for it), or None.
        apply: what to apply, or None.
        read_states: ReadIndex answers; serve each once applied >= its index.
    """

    soft_state: SoftState | None
    messages: tuple[Message, ...]
    append: StorageAppend | None
    apply: StorageApply | None
    read_states: tuple[ReadState, ...]

    # Views of the two parts for the one-Ready-at-a-time loop.

    @property
    def hard_state(self) -> HardState | None:
        """``append.hard_state``."""
        return self.append.hard_state if self.append else None

    @property
    def snapshot(self) -> Snapshot | None:
        """``append.snapshot``: the snapshot to persist (and, without
        asynchronous storage writes, to apply: ``apply.snapshot`` is the same)."""
        return self.append.snapshot if self.append else None

    @property
    def entries(self) -> tuple[Entry, ...]:
        """``append.entries``."""
        return self.append.entries if self.append else ()

    @property
    def must_sync(self) -> bool:
        """``append.must_sync``."""
        return self.append.must_sync if self.append else False

    @property
    def messages_after_persist(self) -> tuple[Message, ...]:
        """``append.messages_after_persist``."""
        return self.append.messages_after_persist if self.append else ()

    @property
    def committed_entries(self) -> tuple[Entry, ...]:
        """``apply.committed_entries``."""
        return self.apply.committed_entries if self.apply else ()

    def is_empty(self) -> bool:
        """True when there is nothing to do."""
        return not (
            self.soft_state or self.messages or self.append or self.apply or self.read_states
        )


class RawNode:
    """A Raft node without I/O: see the module docstring for the loop around it."""

    def __init__(self, config: Config, storage: Storage, rng: Random) -> None:
        self.raft = Raft(config, storage, rng)
        self._last_soft_state = self.raft.soft_state()
        self._last_hard_state = storage.initial_state()[0]
        self._outstanding: Ready | None = None
        self._messages_after_append: list[Message] = []

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

    @property
    def async_storage_writes(self) -> bool:
        """Are persisting and applying acknowledged separately?"""
        return self.raft.config.async_storage_writes

    def has_ready(self, *, append: bool = True, apply: bool = True) -> bool:
        """Is there anything to send or report, or (as allowed) to persist or apply?"""
        raft = self.raft
        if append:
            raft.flush_appends()
        if raft.soft_state() != self._last_soft_state:
            return True
        if append:
            if raft.messages or self._has_append():
                return True
        elif any(m.type not in self._dependent for m in raft.messages):
            return True
        return apply and bool(raft.read_states or self._has_apply())

    def _has_append(self) -> bool:
        unstable = self.raft.log.unstable
        return bool(
            self._messages_after_append
            or unstable.next_entries()
            or unstable.next_snapshot() is not None
            or self.raft.hard_state() != self._last_hard_state
        )

    def _has_apply(self) -> bool:
        log = self.raft.log
        allow_unstable = not self.async_storage_writes
        return log.next_snapshot_to_apply(allow_unstable) is not None or (
            log.has_next_committed_entries(allow_unstable)
        )

    def ready(self, *, append: bool = True, apply: bool = True) -> Ready:
        """Take what the node wants done.

        Args:
            append: take what to persist (and the messages waiting for it); with
                asynchronous storage writes, False leaves it for a later Ready
                (say, while the storage stage is busy: what accumulates meanwhile
                goes into one write), and proposals are not sent to the
                followers either: they go in one batch with that write.
            apply: take what to apply and the ReadIndex answers.

        Raises:
            RuntimeError: without asynchronous storage writes, a second Ready
                before ``advance``, or a partial one.
        """
        if not self.async_storage_writes:
            if self._outstanding is not None:
                raise RuntimeError("ready() called again before advance()")
            if not (append and apply):
                raise RuntimeError("partial Readies need asynchronous storage writes")
        raft = self.raft
        if append:
            # Proposals held back meanwhile go out to the followers with this
            # append: one batch per follower per persist (group commit).
            raft.flush_appends()
        now, after = self._split_messages(raft.messages)
        raft.messages = []
        self._messages_after_append.extend(after)
        soft_state = raft.soft_state()
        read_states: tuple[ReadState, ...] = ()
        if apply:
            read_states = tuple(raft.read_states)
            raft.read_states = []
        ready = Ready(
            soft_state=soft_state if soft_state != self._last_soft_state else None,
            messages=now,
            append=self._take_append() if append else None,
            apply=self._take_apply() if apply else None,
            read_states=read_states,
        )
        self._last_soft_state = soft_state
        if not self.async_storage_writes:
            self._outstanding = ready
        return ready

    def _take_append(self) -> StorageAppend | None:
        """What to persist that was not handed out yet, and the messages waiting for it."""
        raft = self.raft
        unstable = raft.log.unstable
        hard_state = raft.hard_state()
        hard_changed = hard_state != self._last_hard_state
        entries = tuple(unstable.next_entries())
        snapshot = unstable.next_snapshot()
        after = tuple(self._messages_after_append)
        if not (hard_changed or entries or snapshot is not None or after):
            return None
        vote_changed = (hard_state.term, hard_state.vote) != (
            self._last_hard_state.term,
            self._last_hard_state.vote,
        )
        unstable.accept_in_progress()
        self._messages_after_append = []
        self._last_hard_state = hard_state
        return StorageAppend(
            hard_state=hard_state if hard_changed else None,
            snapshot=snapshot,
            entries=entries,
            must_sync=bool(entries) or snapshot is not None or vote_changed,
            messages_after_persist=after,
        )

    def _take_apply(self) -> StorageApply | None:
        """What to apply next: a waiting snapshot alone, or committed entries.

        With asynchronous storage writes, only what is durable here: the
        applied index then never passes the durable log (the restart rule in
        ``actors.bootstrap`` relies on it), and a leader loses nothing by it,
        since it commits only what it has persisted.
        """
        log = self.raft.log
        allow_unstable = not self.async_storage_writes
        snapshot = log.next_snapshot_to_apply(allow_unstable)
        entries = tuple(log.next_committed_entries(allow_unstable))
        if snapshot is None and not entries:
            return None
        self.raft.accept_applying(snapshot, entries)
        return StorageApply(snapshot, entries)

    @property
    def _dependent(self) -> frozenset[MessageType]:
        """Message types that vouch for persisted state (and must wait for it)."""
        if PlantedBug.ACK_BEFORE_SYNC in self.raft.config.planted_bugs:
            return PERSIST_DEPENDENT_MESSAGE_TYPES - {MessageType.APPEND_RESPONSE}
        return PERSIST_DEPENDENT_MESSAGE_TYPES

    def _split_messages(
        self, messages: list[Message]
    ) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
        dependent = self._dependent
        now = tuple(m for m in messages if m.type not in dependent)
        after = tuple(m for m in messages if m.type in dependent)
        return now, after

    def advance(self, ready: Ready) -> None:
        """Acknowledge that ``ready`` was persisted, sent and applied (one Ready at a time).

        Raises:
            RuntimeError: with asynchronous storage writes, or not the last Ready.
        """
        if self.async_storage_writes:
            raise RuntimeError("with asynchronous storage writes, use on_persisted/on_applied")
        if ready is not self._outstanding:
            raise RuntimeError("advance() must be given the Ready from the last ready()")
        self._outstanding = None
        if ready.append is not None:
            up_to = ready.append.persisted_up_to
            self.raft.on_persisted(up_to.index, up_to.term, up_to.snapshot_index)
        self.raft.on_applied(ready.apply.last_index if ready.apply else 0)

    def on_persisted(self, up_to: PersistedUpTo) -> None:
        """An append handed out earlier (and every one before it) is durable.

        A leader counts its own log toward a commit only from here on.
        """
        if not self.async_storage_writes:
            raise RuntimeError("without asynchronous storage writes, use advance()")
        self.raft.on_persisted(up_to.index, up_to.term, up_to.snapshot_index)

    def on_applied(self, index: int) -> None:
        """Everything handed out for applying up to ``index`` is applied.

        Conf changes up to ``index`` take effect now.
        """
        if not self.async_storage_writes:
            raise RuntimeError("without asynchronous storage writes, use advance()")
        self.raft.on_applied(index)

    def status(self) -> dict[str, Any]:
        """A summary of the node's state for humans and tests."""
        return self.raft.status()
