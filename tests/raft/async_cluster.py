"""``sim.raft_cluster.RaftCluster`` with asynchronous storage writes.

Each member takes Readies without waiting for earlier ones: what to persist
queues for its "storage stage", what to apply for its "apply stage", and the
two are carried out (and acknowledged, ``on_persisted`` / ``on_applied``) one
item at a time, in whatever interleaving the caller picks. A crash loses both
queues; a restart raises the persisted commit index to the snapshot, which
may have been taken of applied state past it (``actors.bootstrap`` does the
same for a member). Besides the cluster's own invariant checks, every entry applied must
already be durable in the member's storage.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import replace
from random import Random
from typing import Any

from actors.raft import Config, Ready, StorageAppend, StorageApply
from sim.raft_cluster import ConfigFactory, Member, RaftCluster
from sim.raft_invariants import InvariantViolation


class AsyncRaftCluster(RaftCluster):
    """Members whose persisting and applying run apart (see the module docstring)."""

    def __init__(
        self,
        node_ids: Iterable[int],
        rng: Random,
        *,
        config_factory: ConfigFactory | None = None,
        **options: Any,
    ) -> None:
        self.appends: dict[int, deque[StorageAppend]] = {}
        self.applies: dict[int, deque[StorageApply]] = {}
        base = config_factory or (lambda node, applied: Config(node, applied_index=applied))

        def make_config(node_id: int, applied_index: int) -> Config:
            return replace(base(node_id, applied_index), async_storage_writes=True)

        super().__init__(node_ids, rng, config_factory=make_config, **options)

    def _start(self, member: Member) -> None:
        # Applying may run ahead of the persisted commit index, and a snapshot of the
        # applied state with it; raise the commit index as actors.bootstrap does.
        storage = member.storage
        hard_state = storage.hard_state()
        snapshot_index = storage.snapshot().metadata.index
        if hard_state.commit < snapshot_index:
            storage.set_hard_state(replace(hard_state, commit=snapshot_index))
        super()._start(member)
        self.appends[member.node_id] = deque()
        self.applies[member.node_id] = deque()

    def crash(self, node_id: int) -> None:
        super().crash(node_id)
        self.appends[node_id].clear()
        self.applies[node_id].clear()

    def take_ready(self, node_id: int, *, append: bool = True, apply: bool = True) -> Ready | None:
        """Take a Ready (earlier ones may be unfinished) and queue its parts."""
        node = self.members[node_id].node
        if node is None or not node.has_ready(append=append, apply=apply):
            return None
        ready = node.ready(append=append, apply=apply)
        self.in_flight.extend(ready.messages)
        if ready.append is not None:
            self.appends[node_id].append(ready.append)
        if ready.apply is not None:
            self.applies[node_id].append(ready.apply)
        return ready

    def persist_next(self, node_id: int) -> StorageAppend | None:
        """Persist the oldest queued append, release its messages, acknowledge it."""
        member = self.members[node_id]
        queue = self.appends[node_id]
        if member.node is None or not queue:
            return None
        append = queue.popleft()
        self._persist(member, Ready(None, (), append, None, ()))
        self.in_flight.extend(append.messages_after_persist)
        member.node.on_persisted(append.persisted_up_to)
        self.checker.observe(self)
        return append

    def apply_next(self, node_id: int) -> StorageApply | None:
        """Apply the oldest queued batch and acknowledge it."""
        member = self.members[node_id]
        queue = self.applies[node_id]
        if member.node is None or not queue:
            return None
        work = queue.popleft()
        storage = member.storage
        if work.snapshot is not None:
            index = work.snapshot.metadata.index
            if storage.snapshot().metadata.index < index:
                raise InvariantViolation(f"node {node_id} applies snapshot {index} not persisted")
            if index > member.app.applied_index:
                member.app.restore(work.snapshot)
                self.checker.on_snapshot_applied(node_id, index, member.app.state_hash)
        for entry in work.committed_entries:
            compacted = entry.index <= storage.snapshot().metadata.index
            durable = compacted or (
                entry.index <= storage.last_index() and storage.term(entry.index) == entry.term
            )
            if not durable:
                raise InvariantViolation(f"node {node_id} applies {entry.index} not persisted")
            if entry.index <= member.app.applied_index:
                continue
            member.app.apply(entry)
            self.checker.on_apply(node_id, entry.index, member.app.state_hash)
        member.node.on_applied(work.last_index)
        self.checker.observe(self)
        return work

    def busy(self, node_id: int) -> bool:
        """Does the member have queued work?"""
        return bool(self.appends[node_id] or self.applies[node_id])

    def process_ready(self, node_id: int) -> Ready | None:
        """Take a Ready and carry out everything queued (the scenario harness's step)."""
        ready = self.take_ready(node_id)
        while self.persist_next(node_id) is not None:
            pass
        while self.apply_next(node_id) is not None:
            pass
        return ready
