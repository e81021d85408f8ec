"""The configuration a node runs with, and the progress of every member in it.

Membership changes one member at a time: add a voter, add a learner,
promote a learner, remove a member. Any two majorities of configurations
that differ by one voter overlap, so no joint consensus is needed, as long
as a leader never has two changes in flight (the core enforces that with
``pending_conf_index``) and has committed an entry of its own term before it
proposes a change (the core's ``pending_conf_index`` starts at the leader's
last index on election, which gives this). A change takes effect when it is
applied.
"""

from __future__ import annotations

from collections.abc import Iterator

from actors.raft import quorum
from actors.raft.messages import ConfChange, ConfChangeType, ConfState
from actors.raft.progress import Inflights, Progress


def conf_state_after(conf_state: ConfState, change: ConfChange) -> ConfState:
    """The configuration that results from applying ``change``.

    Invalid changes (demoting a voter, removing a stranger, removing the last
    voter) leave the configuration as it was, so every node reaches the same
    result from the same log. :func:`validate_conf_change` refuses them at
    proposal time.
    """
    if validate_conf_change(conf_state, change):
        return conf_state
    voters = set(conf_state.voters)
    learners = set(conf_state.learners)
    node = change.node_id
    if change.type is ConfChangeType.ADD_VOTER:
        learners.discard(node)
        voters.add(node)
    elif change.type is ConfChangeType.ADD_LEARNER:
        learners.add(node)
    else:
        voters.discard(node)
        learners.discard(node)
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))


def validate_conf_change(conf_state: ConfState, change: ConfChange) -> str:
    """Why ``change`` cannot be applied to ``conf_state``, or "" when it can."""
    node = change.node_id
    if node <= 0:
        return f"node id {node} is not a positive integer"
    if change.type is ConfChangeType.ADD_VOTER and node in conf_state.voters:
        return f"{node} is already a voter"
    if change.type is ConfChangeType.ADD_LEARNER:
        if node in conf_state.voters:
            return f"{node} is a voter; demotion is not supported"
        if node in conf_state.learners:
            return f"{node} is already a learner"
    if change.type is ConfChangeType.REMOVE:
        if node not in conf_state.voters and node not in conf_state.learners:
            return f"{node} is not a member"
        if conf_state.voters == (node,):
            return f"{node} is the last voter"
    return ""


class ProgressTracker:
    """The current configuration, each member's progress, and the votes of an election."""

    def __init__(self, inflight_messages_max: int, inflight_bytes_max: int) -> None:
        self.inflight_messages_max = inflight_messages_max
        self.inflight_bytes_max = inflight_bytes_max
        self.conf_state = ConfState()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    # -- configuration -------------------------------------------------------

    def is_voter(self, node: int) -> bool:
        """Does ``node`` vote in the current configuration?"""
        return node in self.conf_state.voters

    def is_member(self, node: int) -> bool:
        """Is ``node`` a voter or a learner?"""
        return node in self.progress

    def voters(self) -> tuple[int, ...]:
        """The voters, in id order."""
        return self.conf_state.voters

    def ids(self) -> list[int]:
        """Every member, in id order (a deterministic iteration order)."""
        return sorted(self.progress)

    def peers(self, self_id: int) -> Iterator[tuple[int, Progress]]:
        """Every other member and its progress, in id order."""
        for node in self.ids():
            if node != self_id:
                yield node, self.progress[node]

    def reconfigure(self, conf_state: ConfState, next_index: int) -> list[int]:
        """Adopt ``conf_state``; new members start probing at ``next_index``.

        Returns:
            The members that were added, in id order.
        """
        added: list[int] = []
        members = set(conf_state.members())
        for node in list(self.progress):
            if node not in members:
                del self.progress[node]
        for node in conf_state.members():
            progress = self.progress.get(node)
            if progress is None:
                progress = Progress(
                    match=0,
                    next=next_index,
                    inflights=Inflights(self.inflight_messages_max, self.inflight_bytes_max),
                )
                self.progress[node] = progress
                added.append(node)
            progress.is_learner = node in conf_state.learners
        self.conf_state = conf_state
        return added

    def reset_progress(self, self_id: int, last_index: int, self_match: int) -> None:
        """Fresh progress for a new term: probe every follower from ``last_index + 1``."""
        for node, progress in self.progress.items():
            progress.become_probe()
            progress.match = self_match if node == self_id else 0
            progress.next = last_index + 1
            progress.recent_active = node == self_id

    # -- counting ------------------------------------------------------------

    def committed_index(self) -> int:
        """The largest index acknowledged by a quorum of voters."""
        if not self.conf_state.voters:
            return 0
        match_by_id = {node: progress.match for node, progress in self.progress.items()}
        return quorum.committed_index(self.conf_state.voters, match_by_id)

    def record_vote(self, node: int, granted: bool) -> None:
        """Remember ``node``'s answer (only its first answer counts)."""
        self.votes.setdefault(node, granted)

    def tally(self) -> quorum.VoteResult:
        """Where the election stands."""
        return quorum.vote_result(self.conf_state.voters, self.votes)

    def reset_votes(self) -> None:
        """Forget the votes of the last election."""
        self.votes = {}

    def quorum_active(self, self_id: int) -> bool:
        """Has a quorum been heard from since the flags were last cleared?"""
        active = {node for node, progress in self.progress.items() if progress.recent_active}
        active.add(self_id)
        return quorum.has_quorum(self.conf_state.voters, active)

    def clear_recent_active(self, self_id: int) -> None:
        """Start a new CheckQuorum period: only self counts as heard from."""
        for node, progress in self.progress.items():
            progress.recent_active = node == self_id
