"""Raft's safety properties, checked while a cluster runs.

The checks follow Figure 3 of the Raft paper:

- Election Safety: at most one leader per term.
- Log Matching: entries with the same index and term hold the same payload
  and follow an entry of the same term. Checked whenever entries are
  persisted; by induction it gives identical prefixes.
- Leader Completeness: a leader's log holds every entry committed before
  its term began. Checked when a node is first seen leading a term.
- State Machine Safety: no two members apply different entries at an index.
  Each application folds entries into a hash chain, so equal hashes at an
  index mean equal histories up to it.
- Commit Agreement: no two members ever hold different terms at an index
  they consider committed.
- Applied indexes never go back while a member runs.

Every violation raises :class:`InvariantViolation` with what was seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from actors.raft import CompactedError, Entry, MemoryStorage, Role, UnavailableError

if TYPE_CHECKING:
    from sim.raft_cluster import RaftCluster


class InvariantViolation(AssertionError):
    """A Raft safety property was broken."""


def _payload_digest(entry: Entry) -> bytes:
    return hashlib.blake2b(bytes([entry.type]) + entry.data, digest_size=8).digest()


class InvariantChecker:
    """Watches a cluster and raises on the first broken safety property."""

    def __init__(self) -> None:
        self.leader_by_term: dict[int, int] = {}
        self.entry_by_position: dict[tuple[int, int], tuple[bytes, int]] = {}
        self.committed_term_by_index: dict[int, int] = {}
        self.state_by_index: dict[int, bytes] = {}
        self.commit_seen: dict[int, int] = {}
        self.applied_seen: dict[int, int] = {}
        self.leaders_checked: set[tuple[int, int]] = set()

    def on_persist(self, node_id: int, storage: MemoryStorage, entries: Sequence[Entry]) -> None:
        """Entries are about to be persisted by ``node_id`` (Log Matching)."""
        try:
            previous_term = storage.term(entries[0].index - 1)
        except (CompactedError, UnavailableError):
            previous_term = -1  # compacted: the predecessor is covered by a snapshot
        for entry in entries:
            key = (entry.index, entry.term)
            digest = _payload_digest(entry)
            known = self.entry_by_position.get(key)
            if known is None or known[1] == -1:
                self.entry_by_position[key] = (digest, previous_term)
            if known is not None:
                known_digest, known_previous_term = known
                previous_differs = -1 not in (known_previous_term, previous_term) and (
                    known_previous_term != previous_term
                )
                if known_digest != digest or previous_differs:
                    raise InvariantViolation(
                        f"log matching: node {node_id} persists index {entry.index} term "
                        f"{entry.term} with a different payload or predecessor than another log"
                    )
            previous_term = entry.term

    def on_apply(self, node_id: int, index: int, state_hash: bytes) -> None:
        """``node_id`` applied the entry at ``index`` (State Machine Safety)."""
        known = self.state_by_index.setdefault(index, state_hash)
        if known != state_hash:
            raise InvariantViolation(
                f"state machine safety: node {node_id} applied a different history at index {index}"
            )
        if index <= self.applied_seen.get(node_id, 0):
            raise InvariantViolation(f"node {node_id} applied index {index} twice")
        self.applied_seen[node_id] = index

    def on_snapshot_applied(self, node_id: int, index: int, state_hash: bytes) -> None:
        """``node_id`` replaced its state with a snapshot at ``index``."""
        known = self.state_by_index.setdefault(index, state_hash)
        if known != state_hash:
            raise InvariantViolation(
                f"state machine safety: node {node_id} installed a snapshot at {index} "
                "whose state differs from what others applied"
            )
        self.applied_seen[node_id] = index

    def on_restart(self, node_id: int) -> None:
        """A member restarted: its volatile marks start over."""
        self.commit_seen.pop(node_id, None)
        self.applied_seen.pop(node_id, None)

    def observe(self, cluster: RaftCluster) -> None:
        """Check every running member after a step."""
        for node_id in cluster.up_ids():
            raft = cluster.node(node_id).raft
            if raft.role is Role.LEADER:
                self._check_leader(node_id, raft.term, cluster)
            committed = raft.log.committed
            seen = self.commit_seen.get(node_id, 0)
            if committed > seen:
                self._check_commits(node_id, cluster, seen + 1, committed)
                self.commit_seen[node_id] = committed

    def _check_leader(self, node_id: int, term: int, cluster: RaftCluster) -> None:
        leader = self.leader_by_term.setdefault(term, node_id)
        if leader != node_id:
            raise InvariantViolation(
                f"election safety: {leader} and {node_id} both lead term {term}"
            )
        if (term, node_id) in self.leaders_checked:
            return
        self.leaders_checked.add((term, node_id))
        log = cluster.node(node_id).raft.log
        first = log.first_index()
        last = log.last_index()
        for index, committed_term in self.committed_term_by_index.items():
            if index < first:
                continue
            if index > last or log.term(index) != committed_term:
                raise InvariantViolation(
                    f"leader completeness: {node_id} leads term {term} without the entry "
                    f"committed at index {index} (term {committed_term})"
                )

    def _check_commits(self, node_id: int, cluster: RaftCluster, low: int, high: int) -> None:
        log = cluster.node(node_id).raft.log
        for index in range(max(low, log.first_index()), high + 1):
            term = log.term(index)
            known = self.committed_term_by_index.setdefault(index, term)
            if known != term:
                raise InvariantViolation(
                    f"commit agreement: node {node_id} committed term {term} at index {index}, "
                    f"another node committed term {known}"
                )
