"""The apply actor: committed entries into the state machine, answers out.

For each batch from the raft actor (committed entries that are durable in the
local log, and perhaps a snapshot from the leader that is too) it installs the
snapshot if there is one, applies the entries in order, writes what changed
together with the applied index in one batch, tells the raft actor "applied up
to" that index, then wakes the requests that waited for these entries and the
reads that waited for this index. Every so often it snapshots the state
machine and compacts the Raft log behind it.

The v3 watchers are fed here too: after each batch is persisted, the MVCC
events it made go to the watch hub (``storage.mvcc.watch``), which queues them
for its synced watchers without ever waiting (a watcher that cannot take them
is caught up later from the store, by the hub's own task); after a snapshot
install the hub resynchronises every watcher from the new state.

Snapshots are chunked (``actors.state_machine``): one made here is the
persisted records scanned into chunks, each stored in the RaftStore as it is
made, then named by the snapshot metadata (one fsync); one from the leader is
installed from the chunks the storage actor's save named, read from the
RaftStore one at a time. Chunk sets older than the snapshot made or installed
are then dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from actors.codec import SnapshotManifest
from actors.membership import Membership
from actors.raft import Snapshot
from actors.raft_actor import Applied, ApplyWork, RaftInput
from actors.state_machine import Applied as Outcome
from actors.state_machine import StateMachine
from actors.waiters import Waiters
from storage.applied_state import AppliedState
from storage.kv import KeyValueStore
from storage.mvcc.watch import WatchHub
from storage.raft_store import RaftStore, SnapshotRecord, encode_snapshot_chunk

log = logging.getLogger(__name__)

SNAPSHOT_EVERY_ENTRIES = 10_000
"""Applied entries between two snapshots of the state machine."""
CATCH_UP_ENTRIES = 5_000
"""Entries kept behind a snapshot, so a slightly lagging follower needs no snapshot."""


class ApplyActor:
    """Applies what the raft actor hands out, in order, and says how far it got."""

    def __init__(
        self,
        machine: StateMachine,
        *,
        kv: KeyValueStore,
        applied: AppliedState,
        raft_store: RaftStore,
        inbox: trio.MemoryReceiveChannel[ApplyWork],
        to_raft: trio.MemorySendChannel[RaftInput],
        waiters: Waiters,
        on_membership: Callable[[Membership], None],
        snapshot_every_entries: int = SNAPSHOT_EVERY_ENTRIES,
        catch_up_entries: int = CATCH_UP_ENTRIES,
    ) -> None:
        self.machine = machine
        self.kv = kv
        self.applied = applied
        self.raft_store = raft_store
        self.inbox = inbox
        self.to_raft = to_raft
        self.waiters = waiters
        self.on_membership = on_membership
        self.snapshot_every_entries = snapshot_every_entries
        self.catch_up_entries = catch_up_entries
        self.last_snapshot_index = raft_store.first_index() - 1
        self.watch_hub = WatchHub(machine.mvcc)
        """The v3 watchers (the member runs its catch-up task: ``actors.watch_hub``)."""
        self._compaction_lot = trio.lowlevel.ParkingLot()

    async def run(self) -> None:
        """Apply every batch until cancelled; between batches, finish any MVCC compaction
        a bounded step at a time (so a large compaction never holds up the next batch)."""
        async with self.inbox, self.to_raft:
            while True:
                try:
                    work = await self._next_work()
                except trio.EndOfChannel:
                    return
                if work is None:
                    await self.compaction_step()
                else:
                    await self.apply(work)

    async def _next_work(self) -> ApplyWork | None:
        """The next batch; None when there is none yet and a compaction step is due."""
        if not self.machine.mvcc.compaction_pending:
            return await self.inbox.receive()
        try:
            return self.inbox.receive_nowait()
        except trio.WouldBlock:
            return None

    async def compaction_step(self) -> None:
        """Remove one bounded batch of compacted revisions and persist it."""
        finished = self.machine.mvcc.compaction_step()
        await self.machine.persist(self.applied)
        if finished:
            self._compaction_lot.unpark_all()

    async def wait_compaction_finished(self) -> None:
        """Return once no compaction is pending (a physical Compact waits for this)."""
        while self.machine.mvcc.compaction_pending:
            await self._compaction_lot.park()

    async def apply(self, work: ApplyWork) -> None:
        """Apply one batch, persist it, and answer who waited for it."""
        machine = self.machine
        if work.snapshot is not None and work.snapshot.metadata.index > machine.applied_index:
            await self.install(work.snapshot)
        outcomes: list[Outcome] = []
        for entry in work.committed_entries:
            if entry.index <= machine.applied_index:
                continue
            outcome = machine.apply(entry)
            if outcome is not None:
                outcomes.append(outcome)
        membership_changed = machine.membership_changed
        await machine.persist(self.applied)
        self.watch_hub.publish(machine.take_kv_events())
        if work.last_index:
            assert machine.applied_index >= work.last_index, (machine.applied_index, work)
            # Before anyone hears of the outcome: a client that proposes again
            # (a second conf change, say) finds the core already knowing.
            await self.to_raft.send(Applied(machine.applied_index))
        for outcome in outcomes:
            self.waiters.resolve(outcome.request_id, outcome.result)
        for read_state in work.read_states:
            self.waiters.read_confirmed(
                read_state.request_context, read_state.index, machine.applied_index
            )
        self.waiters.applied(machine.applied_index)
        if membership_changed:
            self.on_membership(machine.membership)
        await self.maybe_snapshot()

    async def install(self, snapshot: Snapshot) -> None:
        """Install a snapshot the storage actor saved, from its chunks in the RaftStore."""
        index = snapshot.metadata.index
        await self.machine.install_stored_snapshot(
            self.kv,
            self.applied,
            self.raft_store,
            snapshot.metadata,
            SnapshotManifest.decode(snapshot.data),
        )
        self.watch_hub.resync()
        self.last_snapshot_index = index
        self.raft_store.drop_snapshot_chunks_below(index)
        log.info("installed a snapshot at index %d", index)

    async def maybe_snapshot(self) -> None:
        """Snapshot the state machine and compact the log, every so many entries."""
        index = self.machine.applied_index
        if index - self.last_snapshot_index < self.snapshot_every_entries:
            return
        if self._leader_snapshot_pending(index):
            return
        chunks, size_bytes = await self._store_chunks(index)
        if self._leader_snapshot_pending(index):
            # The storage actor saved the leader's snapshot meanwhile (and perhaps
            # replaced the log): ours is out of date.
            self.raft_store.clear_snapshot_chunks(index, received=False)
            return
        conf = self.machine.conf_state
        record = SnapshotRecord(
            index,
            self.raft_store.term(index),
            conf.voters,
            conf.learners,
            b"",
            chunks,
            size_bytes,
            received=False,
        )
        await self.raft_store.create_snapshot(record)
        self.raft_store.drop_snapshot_chunks_below(index)
        self.last_snapshot_index = index
        compact_index = index - self.catch_up_entries
        if compact_index >= self.raft_store.first_index():
            await self.raft_store.compact(compact_index)
        log.info("snapshot at index %d; log compacted up to %d", index, max(compact_index, 0))

    async def _store_chunks(self, index: int) -> tuple[int, int]:
        """Scan the persisted state (persisted up to ``index`` by ``apply``) into chunks in
        the RaftStore, one at a time; returns how many, and their bytes (sealed)."""
        self.raft_store.clear_snapshot_chunks(index, received=False)
        chunks = size_bytes = 0
        for seq, body in enumerate(self.machine.snapshot_chunks(self.kv, self.applied)):
            value = encode_snapshot_chunk(index, seq, body)
            self.raft_store.put_snapshot_chunk(index, False, seq, value)
            chunks += 1
            size_bytes += len(value)
            await trio.lowlevel.checkpoint()
        return chunks, size_bytes

    def _leader_snapshot_pending(self, index: int) -> bool:
        """Whether the log already holds a snapshot at or past ``index``.

        The storage actor saves a snapshot from the leader (compacting the log
        behind it) before this actor, still applying older batches, gets to
        restore it; a snapshot of the older state would be out of date and its
        index may be compacted already.
        """
        stored = self.raft_store.snapshot_metadata()
        return stored is not None and stored.index >= index
