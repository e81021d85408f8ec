"""The Raft state machine.

Theory of operation
-------------------
A node is driven by two inputs only: ``tick()`` (time, counted in ticks) and
``step(message)`` (everything else: messages from peers, and local requests
such as proposals, which are messages too). Timer expiry turns into a local
message (``HUP`` to campaign, ``BEAT`` to heartbeat, ``CHECK_QUORUM``), so
every decision goes through ``step``.

The node never does I/O. What it wants done accumulates in ``messages``,
``read_states`` and the unstable log, and ``RawNode`` hands it out as a
Ready value. The application persists, sends and applies, then reports back
(``on_persisted``, ``on_applied``). Two rules make that safe:

- messages that vouch for durable state (votes, append acknowledgements)
  leave only after the Ready that holds that state is persisted;
- the leader counts its own log toward a commit only once its entries are
  persisted (``on_persisted``), never when they are merely appended.

Elections use PreVote (a two-phase campaign that never bumps the term unless
a quorum would vote) and CheckQuorum (a leader that has not heard from a
quorum for an election timeout steps down; a follower that hears a live
leader ignores vote requests). Membership changes one member at a time
(``tracker``). Everything here is deterministic given the injected random
generator, which decides only the election timeouts.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, replace
from random import Random
from typing import Any

from actors.raft.config import Config, PlantedBug, ReadOnlyOption
from actors.raft.errors import (
    CompactedError,
    ConfigError,
    DropReason,
    ProposalDropped,
    SnapshotTemporarilyUnavailable,
    StepRefused,
    StorageError,
)
from actors.raft.log import RaftLog
from actors.raft.messages import (
    NO_NODE,
    ConfChange,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Role,
    Snapshot,
    SoftState,
)
from actors.raft.progress import Progress, ProgressState
from actors.raft.quorum import VoteResult, has_quorum
from actors.raft.readonly import ReadOnly
from actors.raft.storage import Storage
from actors.raft.tracker import ProgressTracker, conf_state_after, validate_conf_change

CAMPAIGN_TRANSFER = b"transfer"
"""Vote context of a campaign ordered by a leader transfer: it skips PreVote
and the CheckQuorum lease, since the old leader asked for it."""

PENDING_READS_MAX = 4096
"""Read requests a leader queues, waiting for a heartbeat round or its first commit."""


@dataclass(frozen=True, slots=True)
class _ApplyingBatch:
    """Entries handed out to be applied and not yet reported applied."""

    last_index: int
    size_bytes: int
    conf_changes: tuple[Entry, ...]


class _Campaign(enum.Enum):
    PRE_ELECTION = "pre-election"
    ELECTION = "election"
    TRANSFER = "transfer"


class Raft:
    """One node's Raft state. See the module docstring."""

    def __init__(self, config: Config, storage: Storage, rng: Random) -> None:
        self.config = config
        self.id = config.node_id
        self.rng = rng
        self.log = RaftLog(storage, config.committed_bytes_max_per_ready)
        self.tracker = ProgressTracker(config.inflight_messages_max, config.inflight_bytes_max)
        self.term = 0
        self.vote = NO_NODE
        self.role = Role.FOLLOWER
        self.leader_id = NO_NODE
        self.messages: list[Message] = []
        self.read_states: list[ReadState] = []
        self.election_elapsed_ticks = 0
        self.heartbeat_elapsed_ticks = 0
        self.randomized_election_timeout_ticks = config.election_timeout_ticks
        self.lead_transferee = NO_NODE
        self.pending_conf_index = 0
        self.uncommitted_bytes = 0
        self.read_only = ReadOnly(PENDING_READS_MAX)
        self.pending_read_requests: list[Message] = []
        self.append_pending = False
        self.transfer_campaign_pending = False
        self.applying_batches: deque[_ApplyingBatch] = deque()
        self._bugs = config.planted_bugs

        hard_state, conf_state = storage.initial_state()
        self.tracker.reconfigure(conf_state, self.log.last_index() + 1)
        self.conf_index = storage.first_index() - 1
        if hard_state != HardState():
            self._load_hard_state(hard_state)
        if config.applied_index:
            if config.applied_index > self.log.committed:
                raise ConfigError(
                    f"applied index {config.applied_index} is past commit {self.log.committed}"
                )
            self.log.applied_to(config.applied_index)
            self.conf_index = max(self.conf_index, config.applied_index)
        self._become_follower(self.term, NO_NODE)

    def __repr__(self) -> str:
        return f"Raft(id={self.id}, term={self.term}, role={self.role.value}, {self.log!r})"

    def _load_hard_state(self, hard_state: HardState) -> None:
        if not self.log.committed <= hard_state.commit <= self.log.last_index():
            raise StorageError(
                f"hard state commit {hard_state.commit} is outside "
                f"[{self.log.committed}, {self.log.last_index()}]"
            )
        self.log.committed = hard_state.commit
        self.term = hard_state.term
        self.vote = hard_state.vote

    # -- views -----------------------------------------------------------------

    def hard_state(self) -> HardState:
        """What must be persisted about terms, votes and commits."""
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        """Who leads and what this node is."""
        return SoftState(self.leader_id, self.role)

    def status(self) -> dict[str, Any]:
        """A snapshot of the node's state for humans and tests."""
        progress = {}
        if self.role is Role.LEADER:
            progress = {node: repr(pr) for node, pr in sorted(self.tracker.progress.items())}
        return {
            "id": self.id,
            "term": self.term,
            "vote": self.vote,
            "commit": self.log.committed,
            "applied": self.log.applied,
            "role": self.role,
            "leader": self.leader_id,
            "lead_transferee": self.lead_transferee,
            "voters": self.tracker.conf_state.voters,
            "learners": self.tracker.conf_state.learners,
            "progress": progress,
        }

    def promotable(self) -> bool:
        """May this node campaign? Only voters may."""
        return self.tracker.is_voter(self.id)

    # -- sending ---------------------------------------------------------------

    def _send(self, kind: MessageType, recipient: int, term: int = 0, **fields: Any) -> None:
        """Queue a message from this node, stamped with our term unless ``term`` is given.

        Votes and their responses name their term explicitly (a pre-vote asks
        about a term we are not in yet).
        """
        assert recipient != NO_NODE, (kind, fields)
        self.messages.append(Message(kind, recipient, self.id, term or self.term, **fields))

    # -- time ------------------------------------------------------------------

    def tick(self) -> None:
        """Advance time by one tick."""
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed_ticks += 1
        if self.promotable() and self._past_election_timeout():
            self.election_elapsed_ticks = 0
            self.step(Message(MessageType.HUP, sender=self.id))

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed_ticks += 1
        self.election_elapsed_ticks += 1
        if self.election_elapsed_ticks >= self.config.election_timeout_ticks:
            self.election_elapsed_ticks = 0
            if self.config.check_quorum:
                self.step(Message(MessageType.CHECK_QUORUM, sender=self.id))
            if self.role is Role.LEADER and self.lead_transferee != NO_NODE:
                self._abort_leader_transfer()
            if self.role is Role.LEADER and not self.tracker.is_voter(self.id):
                self._hand_off_leadership()  # the last attempt timed out: try again
        if self.role is not Role.LEADER:
            return
        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks:
            self.heartbeat_elapsed_ticks = 0
            self.step(Message(MessageType.BEAT, sender=self.id))

    def _past_election_timeout(self) -> bool:
        return self.election_elapsed_ticks >= self.randomized_election_timeout_ticks

    def _reset_randomized_election_timeout(self) -> None:
        timeout = self.config.election_timeout_ticks
        self.randomized_election_timeout_ticks = timeout + self.rng.randrange(timeout)

    # -- role changes ------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NO_NODE
        self.leader_id = NO_NODE
        self.election_elapsed_ticks = 0
        self.heartbeat_elapsed_ticks = 0
        self._reset_randomized_election_timeout()
        self._abort_leader_transfer()
        self.tracker.reset_votes()
        self.tracker.reset_progress(self.id, self.log.last_index(), self.log.last_stable_index())
        self.pending_conf_index = 0
        self.uncommitted_bytes = 0
        self.read_only.clear()
        self.pending_read_requests.clear()
        self.append_pending = False
        self.transfer_campaign_pending = False

    def _become_follower(self, term: int, leader_id: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader_id

    def _become_pre_candidate(self) -> None:
        assert self.role is not Role.LEADER, "a leader cannot become a pre-candidate"
        # PreVote changes neither the term nor the vote: that is its point.
        self.tracker.reset_votes()
        self.role = Role.PRE_CANDIDATE
        self.leader_id = NO_NODE

    def _become_candidate(self) -> None:
        assert self.role is not Role.LEADER, "a leader cannot become a candidate"
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        assert self.role is not Role.FOLLOWER, "a follower cannot become leader directly"
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader_id = self.id
        own = self.tracker.progress[self.id]
        own.become_replicate()
        own.recent_active = True
        self._append_entries([Entry(self.term, 0)])
        # No conf change may be proposed until this term's first entry is
        # applied: that closes the single-server-change hole (Ongaro, 2015).
        self.pending_conf_index = self.log.last_index()

    # -- stepping ----------------------------------------------------------------

    def step(self, message: Message) -> None:
        """Take one message (from a peer, or a local request).

        Raises:
            ProposalDropped: a local proposal or read was refused.
            StepRefused: the message makes no sense here (nothing changed).
        """
        if message.term > self.term:
            if not self._step_higher_term(message):
                return
        elif 0 < message.term < self.term:
            self._step_lower_term(message)
            return
        match message.type:
            case MessageType.HUP:
                self._hup(_Campaign.PRE_ELECTION if self.config.pre_vote else _Campaign.ELECTION)
            case MessageType.VOTE | MessageType.PRE_VOTE:
                self._handle_vote_request(message)
            case _:
                if self.role is Role.LEADER:
                    self._step_leader(message)
                elif self.role is Role.FOLLOWER:
                    self._step_follower(message)
                else:
                    self._step_candidate(message)

    def _step_higher_term(self, message: Message) -> bool:
        """React to a message from a later term; False means ignore it."""
        kind = message.type
        if kind in (MessageType.VOTE, MessageType.PRE_VOTE):
            forced = message.context == CAMPAIGN_TRANSFER
            in_lease = (
                self.config.check_quorum
                and self.leader_id != NO_NODE
                and self.election_elapsed_ticks < self.config.election_timeout_ticks
            )
            if in_lease and not forced:
                # A live leader was heard within the election timeout: a
                # disruptive candidate is ignored (CheckQuorum's other half).
                return False
        if kind is MessageType.PRE_VOTE:
            return True  # answering a pre-vote never changes our term
        if kind is MessageType.PRE_VOTE_RESPONSE and not message.reject:
            return True  # the term was only proposed; it is bumped when a quorum agrees
        if kind in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
            self._become_follower(message.term, message.sender)
        else:
            self._become_follower(message.term, NO_NODE)
        return True

    def _step_lower_term(self, message: Message) -> None:
        """Answer a stale message only where the answer helps the sender catch up."""
        if message.type in (MessageType.HEARTBEAT, MessageType.APPEND) and (
            self.config.check_quorum or self.config.pre_vote
        ):
            # A stale leader (isolated, then healed) learns our term and steps down.
            self._send(MessageType.APPEND_RESPONSE, message.sender)
        elif message.type is MessageType.PRE_VOTE:
            self._send(MessageType.PRE_VOTE_RESPONSE, message.sender, term=self.term, reject=True)

    def _handle_vote_request(self, message: Message) -> None:
        response_type = (
            MessageType.VOTE_RESPONSE
            if message.type is MessageType.VOTE
            else MessageType.PRE_VOTE_RESPONSE
        )
        can_vote = (
            self.vote == message.sender
            or (self.vote == NO_NODE and self.leader_id == NO_NODE)
            or (message.type is MessageType.PRE_VOTE and message.term > self.term)
        )
        up_to_date = self.log.is_up_to_date(message.index, message.log_term)
        if PlantedBug.SKIP_ELECTION_RESTRICTION in self._bugs:
            up_to_date = True
        if can_vote and up_to_date:
            # The response carries the candidate's term: for a pre-vote that
            # term is not ours yet, and it must not look stale to the candidate.
            self._send(response_type, message.sender, term=message.term)
            if message.type is MessageType.VOTE:
                self.election_elapsed_ticks = 0
                self.vote = message.sender
        else:
            self._send(response_type, message.sender, term=self.term, reject=True)

    # -- elections -----------------------------------------------------------------

    def _has_unapplied_conf_change(self) -> bool:
        low = max(self.log.applied + 1, self.log.first_index())
        if low > self.log.committed:
            return False
        for entry in self.log.slice(low, self.log.committed + 1, 1 << 62):
            if entry.type is EntryType.CONF_CHANGE:
                return True
        return False

    def _hup(self, campaign: _Campaign) -> None:
        if self.role is Role.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_change():
            # Campaigning with a configuration about to change could count
            # the wrong voters; wait until the change is applied. A leader's
            # order to take over is kept and carried out then.
            self.transfer_campaign_pending = campaign is _Campaign.TRANSFER
            return
        self._campaign(campaign)

    def _campaign(self, campaign: _Campaign) -> None:
        if campaign is _Campaign.PRE_ELECTION:
            self._become_pre_candidate()
            vote_type, term = MessageType.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MessageType.VOTE, self.term
        self.tracker.record_vote(self.id, True)
        if self.tracker.tally() is VoteResult.WON:
            self._won(campaign)
            return
        context = CAMPAIGN_TRANSFER if campaign is _Campaign.TRANSFER else b""
        for voter in self.tracker.voters():
            if voter == self.id:
                continue
            self._send(
                vote_type,
                voter,
                term=term,
                index=self.log.last_index(),
                log_term=self.log.last_term(),
                context=context,
            )

    def _won(self, campaign: _Campaign) -> None:
        if campaign is _Campaign.PRE_ELECTION:
            self._campaign(_Campaign.ELECTION)
        else:
            self._become_leader()

    def _step_candidate(self, message: Message) -> None:
        expected = (
            MessageType.PRE_VOTE_RESPONSE
            if self.role is Role.PRE_CANDIDATE
            else MessageType.VOTE_RESPONSE
        )
        match message.type:
            case MessageType.PROPOSE | MessageType.READ_INDEX:
                raise ProposalDropped(DropReason.NO_LEADER)
            case MessageType.APPEND:
                self._become_follower(message.term, message.sender)
                self._handle_append(message)
            case MessageType.HEARTBEAT:
                self._become_follower(message.term, message.sender)
                self._handle_heartbeat(message)
            case MessageType.SNAPSHOT:
                self._become_follower(message.term, message.sender)
                self._handle_snapshot(message)
            case _ if message.type is expected:
                self.tracker.record_vote(message.sender, not message.reject)
                result = self.tracker.tally()
                if result is VoteResult.WON:
                    was_pre = self.role is Role.PRE_CANDIDATE
                    self._won(_Campaign.PRE_ELECTION if was_pre else _Campaign.ELECTION)
                elif result is VoteResult.LOST:
                    self._become_follower(self.term, NO_NODE)
            case _:
                pass  # TIMEOUT_NOW, TRANSFER_LEADER, stray responses: nothing to do

    # -- followers -------------------------------------------------------------------

    def _step_follower(self, message: Message) -> None:
        match message.type:
            case MessageType.PROPOSE:
                self._forward_to_leader(message, forwarding_check=True)
            case MessageType.APPEND:
                self.election_elapsed_ticks = 0
                self.leader_id = message.sender
                self._handle_append(message)
            case MessageType.HEARTBEAT:
                self.election_elapsed_ticks = 0
                self.leader_id = message.sender
                self._handle_heartbeat(message)
            case MessageType.SNAPSHOT:
                self.election_elapsed_ticks = 0
                self.leader_id = message.sender
                self._handle_snapshot(message)
            case MessageType.TRANSFER_LEADER:
                if self.leader_id != NO_NODE:
                    self.messages.append(replace(message, recipient=self.leader_id, term=self.term))
            case MessageType.TIMEOUT_NOW:
                # The leader asked us to take over: campaign at once, no PreVote.
                self._hup(_Campaign.TRANSFER)
            case MessageType.READ_INDEX:
                self._forward_to_leader(message, forwarding_check=False)
            case MessageType.READ_INDEX_RESPONSE:
                self.read_states.append(ReadState(message.index, message.context))
            case _:
                pass

    def _forward_to_leader(self, message: Message, forwarding_check: bool) -> None:
        """Hand a request on to the leader as this member's own. One that another member
        forwarded here while this one led is forwarded again with this member as its sender
        (etcd keeps the first sender, but the transport drops a message whose sender is not
        the peer it came from). A proposal needs no way back: its entry carries the request
        id. A read index does, so one from another member is dropped instead (its answer
        would come here, not to the member waiting for it, which asks again)."""
        if self.leader_id == NO_NODE:
            raise ProposalDropped(DropReason.NO_LEADER)
        if forwarding_check and self.config.disable_proposal_forwarding:
            raise ProposalDropped(DropReason.FORWARDING_DISABLED)
        if message.type is MessageType.READ_INDEX and message.sender not in (NO_NODE, self.id):
            raise ProposalDropped(DropReason.READ_FORWARDED_TWICE)
        self.messages.append(replace(message, recipient=self.leader_id, sender=self.id))

    def _handle_append(self, message: Message) -> None:
        for offset, entry in enumerate(message.entries, start=1):
            if entry.index != message.index + offset or entry.term > message.term:
                raise StepRefused(f"malformed append from {message.sender}: entry {entry}")
        if message.index < self.log.committed:
            self._send(MessageType.APPEND_RESPONSE, message.sender, index=self.log.committed)
            return
        if (
            PlantedBug.TRUNCATE_ON_STALE_APPEND in self._bugs
            and message.entries
            and self.log.matches_term(message.index, message.log_term)
        ):
            self.log.append(list(message.entries))
        last_new_index = self.log.maybe_append(
            message.index, message.log_term, message.commit, message.entries
        )
        if last_new_index is not None:
            self._send(MessageType.APPEND_RESPONSE, message.sender, index=last_new_index)
            return
        hint_index = min(message.index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint_index, message.log_term)
        self._send(
            MessageType.APPEND_RESPONSE,
            message.sender,
            index=message.index,
            reject=True,
            reject_hint=hint_index,
            log_term=hint_term,
        )

    def _handle_heartbeat(self, message: Message) -> None:
        self.log.commit_to(min(message.commit, self.log.last_index()))
        self._send(MessageType.HEARTBEAT_RESPONSE, message.sender, context=message.context)

    def _handle_snapshot(self, message: Message) -> None:
        if message.snapshot is None:
            raise StepRefused(f"snapshot message from {message.sender} without a snapshot")
        if self._restore(message.snapshot):
            index = self.log.last_index()
        else:
            index = self.log.committed
        self._send(MessageType.APPEND_RESPONSE, message.sender, index=index)

    def _restore(self, snapshot: Snapshot) -> bool:
        """Adopt ``snapshot`` unless the log already has it; True when adopted."""
        metadata = snapshot.metadata
        if metadata.index <= self.log.committed:
            return False
        if self.log.matches_term(metadata.index, metadata.term):
            # We have the entries already: just learn that they are committed.
            self.log.commit_to(metadata.index)
            return False
        self.log.restore(snapshot)
        self.tracker.reconfigure(metadata.conf_state, self.log.last_index() + 1)
        self.tracker.reset_progress(self.id, self.log.last_index(), 0)
        self.conf_index = metadata.index
        return True

    # -- leaders -----------------------------------------------------------------------

    def _step_leader(self, message: Message) -> None:
        match message.type:
            case MessageType.BEAT:
                self._broadcast_heartbeat()
                return
            case MessageType.CHECK_QUORUM:
                if not self.tracker.quorum_active(self.id):
                    self._become_follower(self.term, NO_NODE)
                    return
                self.tracker.clear_recent_active(self.id)
                return
            case MessageType.PROPOSE:
                self._handle_proposal(message)
                return
            case MessageType.READ_INDEX:
                self._handle_read_index(message)
                return
            case _:
                pass
        progress = self.tracker.progress.get(message.sender)
        if progress is None:
            return
        match message.type:
            case MessageType.APPEND_RESPONSE:
                self._handle_append_response(message, progress)
            case MessageType.HEARTBEAT_RESPONSE:
                self._handle_heartbeat_response(message, progress)
            case MessageType.SNAPSHOT_STATUS:
                self._handle_snapshot_status(message, progress)
            case MessageType.UNREACHABLE:
                if progress.state is ProgressState.REPLICATE:
                    progress.become_probe()
            case MessageType.TRANSFER_LEADER:
                self._handle_transfer_leader(message.sender, progress)
            case _:
                pass

    def _handle_proposal(self, message: Message) -> None:
        if not message.entries:
            raise ProposalDropped(DropReason.EMPTY_PROPOSAL)
        if not self.tracker.is_member(self.id):
            raise ProposalDropped(DropReason.NOT_A_MEMBER)
        if self.lead_transferee != NO_NODE:
            raise ProposalDropped(DropReason.TRANSFER_IN_PROGRESS)
        conf_change_offset = self._check_conf_changes(message.entries)
        first_index = self.log.last_index() + 1
        self._append_entries(list(message.entries))
        if conf_change_offset is not None:
            self.pending_conf_index = first_index + conf_change_offset

    def _check_conf_changes(self, entries: tuple[Entry, ...]) -> int | None:
        """Refuse invalid or overlapping conf changes; the offset of the one allowed."""
        offsets = [i for i, e in enumerate(entries) if e.type is EntryType.CONF_CHANGE]
        if not offsets:
            return None
        if len(offsets) > 1 or self.pending_conf_index > self.log.applied:
            raise ProposalDropped(DropReason.CONF_CHANGE_PENDING)
        try:
            change = ConfChange.decode(entries[offsets[0]].data)
        except ValueError as error:
            raise ProposalDropped(DropReason.INVALID_CONF_CHANGE, str(error)) from None
        problem = validate_conf_change(self.tracker.conf_state, change)
        if problem:
            raise ProposalDropped(DropReason.INVALID_CONF_CHANGE, problem)
        return offsets[0]

    def _append_entries(self, entries: list[Entry]) -> None:
        """Append entries from a proposal (or the leader's first entry) to our log."""
        last_index = self.log.last_index()
        size_bytes = sum(entry.payload_size_bytes() for entry in entries)
        if (
            self.uncommitted_bytes > 0
            and self.uncommitted_bytes + size_bytes > self.config.uncommitted_bytes_max
        ):
            raise ProposalDropped(DropReason.UNCOMMITTED_LIMIT)
        self.uncommitted_bytes += size_bytes
        stamped = [
            Entry(self.term, last_index + offset, entry.type, entry.data)
            for offset, entry in enumerate(entries, start=1)
        ]
        self.log.append(stamped)
        # Appends go out in one batch per follower when the Ready is built.
        self.append_pending = True

    def flush_appends(self) -> None:
        """Send the appends held back since the last flush, one batch per follower."""
        if self.append_pending and self.role is Role.LEADER:
            self._broadcast_append()
        self.append_pending = False

    def _broadcast_append(self) -> None:
        """Send each follower what it lacks, as far as flow control allows, or at
        least the new commit index when it has not been sent yet."""
        for node, progress in self.tracker.peers(self.id):
            sent = False
            while self._send_append(node, send_if_empty=False):
                sent = True
            if not sent and progress.sent_commit < self.log.committed:
                self._send_append(node)

    def _send_append(self, node: int, send_if_empty: bool = True) -> bool:
        """Send ``node`` what it lacks, if flow control allows; True if sent."""
        progress = self.tracker.progress[node]
        if progress.is_paused():
            return False
        previous_index = progress.next - 1
        try:
            previous_term = self.log.term(previous_index)
            entries = self.log.entries_from(progress.next, self.config.append_bytes_max)
        except CompactedError:
            return self._send_snapshot(node, progress)
        if not entries and not send_if_empty:
            return False
        self._send(
            MessageType.APPEND,
            node,
            index=previous_index,
            log_term=previous_term,
            entries=tuple(entries),
            commit=self.log.committed,
        )
        last_index = entries[-1].index if entries else 0
        progress.sent_append(last_index, sum(e.payload_size_bytes() for e in entries))
        progress.sent_commit = self.log.committed
        return True

    def _send_snapshot(self, node: int, progress: Progress) -> bool:
        if not progress.recent_active:
            return False
        try:
            snapshot = self._current_snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        assert not snapshot.is_empty(), "compacted log without a snapshot"
        self._send(MessageType.SNAPSHOT, node, snapshot=snapshot)
        progress.become_snapshot(snapshot.metadata.index)
        return True

    def _current_snapshot(self) -> Snapshot:
        if self.log.unstable.snapshot is not None:
            return self.log.unstable.snapshot
        return self.log.storage.snapshot()

    def _broadcast_heartbeat(self) -> None:
        context = self.read_only.last_pending_context()
        for node, progress in self.tracker.peers(self.id):
            self._send(
                MessageType.HEARTBEAT,
                node,
                commit=min(progress.match, self.log.committed),
                context=context,
            )

    def _handle_append_response(self, message: Message, progress: Progress) -> None:
        progress.recent_active = True
        if message.reject:
            match_hint = message.reject_hint
            if message.log_term > 0:
                match_hint, _ = self.log.find_conflict_by_term(
                    message.reject_hint, message.log_term
                )
            if progress.maybe_decrease_to(message.index, match_hint):
                if progress.state is ProgressState.REPLICATE:
                    progress.become_probe()
                self._send_append(message.sender)
            return
        if message.index > self.log.last_index():
            raise StepRefused(f"{message.sender} acknowledged {message.index}, past our log")
        was_paused = progress.is_paused()
        if not progress.maybe_update(message.index):
            return
        if progress.state is ProgressState.PROBE:
            progress.become_replicate()
        elif (
            progress.state is ProgressState.SNAPSHOT and progress.match >= progress.pending_snapshot
        ):
            progress.become_probe()
            if progress.match + 1 >= self.log.first_index():
                progress.become_replicate()
        elif progress.state is ProgressState.REPLICATE:
            progress.inflights.free_to(message.index)
        if self._maybe_commit():
            self._on_commit_advanced()
        elif was_paused and not self.append_pending:
            self._send_append(message.sender)
        while self._send_append(message.sender, send_if_empty=False):
            pass
        if message.sender == self.lead_transferee and progress.match == self.log.last_index():
            self._send_timeout_now(message.sender)

    def _handle_heartbeat_response(self, message: Message, progress: Progress) -> None:
        progress.recent_active = True
        progress.probe_sent = False
        if progress.state is ProgressState.REPLICATE and progress.inflights.full():
            # An append may have been lost with the window full: let one more go,
            # so the follower can reject it and put us back into probing.
            progress.inflights.free_first()
        if progress.match < self.log.last_index():
            self._send_append(message.sender)
        if not message.context or self.config.read_only_option is not ReadOnlyOption.SAFE:
            return
        acks = self.read_only.receive_ack(message.sender, message.context)
        if acks is None or not has_quorum(self.tracker.voters(), acks | {self.id}):
            return
        for request in self.read_only.release_through(message.context):
            self._answer_read(request.message, request.index)

    def _handle_snapshot_status(self, message: Message, progress: Progress) -> None:
        if progress.state is not ProgressState.SNAPSHOT:
            return
        if message.reject:
            progress.pending_snapshot = 0
        progress.become_probe()
        # Wait for the follower's answer (or the next heartbeat) before probing.
        progress.probe_sent = True

    def _maybe_commit(self) -> bool:
        """Commit what a quorum holds, if it is from our term (Figure 8)."""
        index = self.tracker.committed_index()
        if index <= self.log.committed:
            return False
        if (
            self.log.term_or_zero(index) != self.term
            and PlantedBug.COMMIT_BY_COUNTING_OLD_TERM not in self._bugs
        ):
            return False
        self.log.commit_to(index)
        return True

    def _on_commit_advanced(self) -> None:
        if self.pending_read_requests and self._committed_in_current_term():
            pending, self.pending_read_requests = self.pending_read_requests, []
            for request in pending:
                self._serve_read_index(request)
        self.append_pending = True

    def _committed_in_current_term(self) -> bool:
        return self.log.term_or_zero(self.log.committed) == self.term

    # -- reads -----------------------------------------------------------------------

    def _handle_read_index(self, message: Message) -> None:
        if not message.context:
            raise ProposalDropped(DropReason.EMPTY_PROPOSAL, "a read needs a request context")
        if not self._committed_in_current_term():
            # Our commit index may lag the last leader's until we commit in our term.
            if len(self.pending_read_requests) >= PENDING_READS_MAX:
                raise ProposalDropped(DropReason.UNCOMMITTED_LIMIT, "too many pending reads")
            self.pending_read_requests.append(message)
            return
        self._serve_read_index(message)

    def _serve_read_index(self, message: Message) -> None:
        alone = self.tracker.voters() == (self.id,)
        if alone or self.config.read_only_option is ReadOnlyOption.LEASE_BASED:
            # Alone, we are the quorum; with leases, CheckQuorum vouches for us.
            self._answer_read(message, self.log.committed)
        elif self.read_only.add_request(self.log.committed, message):
            self._broadcast_heartbeat()

    def _answer_read(self, message: Message, index: int) -> None:
        if message.sender in (NO_NODE, self.id):
            self.read_states.append(ReadState(index, message.context))
        else:
            self._send(
                MessageType.READ_INDEX_RESPONSE,
                message.sender,
                index=index,
                context=message.context,
            )

    # -- leader transfer --------------------------------------------------------------

    def _handle_transfer_leader(self, target: int, progress: Progress) -> None:
        if progress.is_learner or target == self.id:
            return
        if self.lead_transferee != NO_NODE:
            if self.lead_transferee == target:
                return
            self._abort_leader_transfer()
        # The transfer must finish within an election timeout or it is abandoned.
        self.election_elapsed_ticks = 0
        self.lead_transferee = target
        if progress.match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target)

    def _send_timeout_now(self, target: int) -> None:
        """``target`` holds our whole log: tell it to campaign now."""
        self._send(MessageType.TIMEOUT_NOW, target)
        if not self.tracker.is_voter(self.id):
            # A removed leader's hand-off is done: the target can win without us.
            self._become_follower(self.term, NO_NODE)

    def _abort_leader_transfer(self) -> None:
        self.lead_transferee = NO_NODE

    # -- feedback from the application --------------------------------------------------

    def on_persisted(self, last_index: int, last_term: int, snapshot_index: int) -> None:
        """Entries up to (``last_index``, ``last_term``) and a snapshot are on disk."""
        if snapshot_index:
            self.log.stable_snapshot_to(snapshot_index)
        if last_index:
            self.log.stable_to(last_index, last_term)
        if self.role is Role.LEADER:
            own = self.tracker.progress.get(self.id)
            advanced = own is not None and own.maybe_update(self.log.last_stable_index())
            if advanced and self._maybe_commit():
                self._on_commit_advanced()

    def accept_applying(self, snapshot: Snapshot | None, entries: tuple[Entry, ...]) -> None:
        """A snapshot, then entries, were handed out to be applied (``on_applied`` follows)."""
        if snapshot is not None:
            self.log.applying_to(snapshot.metadata.index)
            self.applying_batches.append(_ApplyingBatch(snapshot.metadata.index, 0, ()))
        if entries:
            assert entries[0].index == self.log.applying + 1, (entries[0], self.log.applying)
            self.log.applying_to(entries[-1].index)
            changes = tuple(entry for entry in entries if entry.type is EntryType.CONF_CHANGE)
            size_bytes = sum(entry.payload_size_bytes() for entry in entries)
            self.applying_batches.append(_ApplyingBatch(entries[-1].index, size_bytes, changes))

    def on_applied(self, index: int) -> None:
        """The application applied everything handed out up to ``index``.

        Conf changes take effect here, in log order, once they are applied.
        """
        assert index <= self.log.applying, (index, self.log.applying)
        while self.applying_batches and self.applying_batches[0].last_index <= index:
            batch = self.applying_batches.popleft()
            for entry in batch.conf_changes:
                if entry.index > self.conf_index:
                    self.conf_index = entry.index
                    self.apply_conf_change(ConfChange.decode(entry.data))
            if self.role is Role.LEADER:
                self.uncommitted_bytes = max(0, self.uncommitted_bytes - batch.size_bytes)
        self.log.applied_to(index)
        if self.transfer_campaign_pending and not self._has_unapplied_conf_change():
            self.transfer_campaign_pending = False
            self._hup(_Campaign.TRANSFER)

    def apply_conf_change(self, change: ConfChange) -> None:
        """Adopt a committed membership change."""
        conf_state = conf_state_after(self.tracker.conf_state, change)
        added = self.tracker.reconfigure(conf_state, self.log.last_index() + 1)
        for node in added:
            # A new member gets one CheckQuorum period to answer before it counts as silent.
            self.tracker.progress[node].recent_active = True
        if self.role is not Role.LEADER:
            return
        if not self.tracker.is_voter(self.id):
            self._hand_off_leadership()
            return
        if self.lead_transferee != NO_NODE and not self.tracker.is_voter(self.lead_transferee):
            self._abort_leader_transfer()
        if self._maybe_commit():
            self._on_commit_advanced()
        for node in added:
            self._send_append(node)

    def _hand_off_leadership(self) -> None:
        """We were removed: hand leadership to the most caught-up voter, then step down.

        Stepping down at once can leave the others unable to elect anyone:
        they may not know yet that the removal is committed, so their
        configuration still counts us, and our log may be longer than theirs.
        So a removed leader keeps replicating (counting only the voters) until
        the best voter holds its whole log, then tells it to campaign at once
        (TimeoutNow) and steps down when the new leader's term arrives.
        """
        voters = self.tracker.voters()
        target = max(voters, key=lambda node: (self.tracker.progress[node].match, -node))
        self._abort_leader_transfer()
        self._handle_transfer_leader(target, self.tracker.progress[target])
