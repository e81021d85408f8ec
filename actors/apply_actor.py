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

A snapshot made here does not hold up applying. The scans are opened between
two batches, so they see the state exactly at the snapshot's index; a task of
the actor's own (one at a time) then turns them into chunks, stores them and
writes the metadata, while the actor goes on applying. At 100,000 keys the
scan takes one to two seconds, which before this stalled every write and read
behind it (docs/benchmarks.md, "Levers"). A snapshot from the leader to
install first cancels a snapshot still being made (its chunks are below the
installed index, so the install drops them).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator

import trio

from actors.codec import SnapshotManifest
from actors.membership import Membership
from actors.raft import ConfState, Snapshot
from actors.raft_actor import Applied, ApplyWork, RaftInput
from actors.state_machine import Applied as Outcome
from actors.state_machine import ChunkBuilder, StateMachine
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
SNAPSHOT_RECORDS_PER_STEP = 256
"""Records scanned into a snapshot between two checkpoints: about 0.1 MB, a millisecond or
two of the event loop (a whole 1 MiB chunk at once held every other task 25 ms)."""


COMPACTION_STEP_PAUSE_S = 0.01
"""The apply actor waits this long (for a batch, which it applies at once) between two steps
of a compaction's reclaim. Why: without a pause the steps ran back to back whenever the
inbox was empty, each a few milliseconds of the event loop, and a put, which needs a dozen
scheduling rounds (client, Raft, storage, fsync, apply), met a step in each round: puts in
flight during a 100,000-key compaction waited 80 to 90 ms (p99) against etcd's 3 ms, which
pauses 10 ms between its batches of 1,000 keys too."""


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
        self._compaction_step_due_s = 0.0
        """When the next compaction step may run (``COMPACTION_STEP_PAUSE_S`` after the last)."""
        self._nursery: trio.Nursery | None = None
        """Where snapshots are made while ``run`` runs (None: inline, as direct calls do)."""
        self._snapshot_scope: trio.CancelScope | None = None
        self._snapshot_done = trio.Event()
        self._snapshot_done.set()

    async def run(self) -> None:
        """Apply every batch until cancelled; between batches, finish any MVCC compaction
        a bounded step at a time (so a large compaction never holds up the next batch)."""
        async with self.inbox, self.to_raft, trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                while True:
                    try:
                        work = await self._next_work()
                    except trio.EndOfChannel:
                        return
                    if work is None:
                        await self.compaction_step()
                    else:
                        await self.apply(work)
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()  # a snapshot being made is abandoned

    async def _next_work(self) -> ApplyWork | None:
        """The next batch; None when there is none yet and a compaction step is due."""
        if not self.machine.mvcc.compaction_pending:
            return await self.inbox.receive()
        try:
            return self.inbox.receive_nowait()
        except trio.WouldBlock:
            pass
        with trio.move_on_at(self._compaction_step_due_s):
            return await self.inbox.receive()
        return None

    async def compaction_step(self) -> None:
        """Remove one bounded batch of compacted revisions and persist it."""
        finished = self.machine.mvcc.compaction_step()
        await self.machine.persist(self.applied)
        self._compaction_step_due_s = trio.current_time() + COMPACTION_STEP_PAUSE_S
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
        await self.abandon_snapshot()
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
        """Snapshot the state machine and compact the log, every so many entries: the scans
        are opened now, the rest runs beside the applying when ``run`` runs."""
        index = self.machine.applied_index
        if index - self.last_snapshot_index < self.snapshot_every_entries:
            return
        if not self._snapshot_done.is_set() or self._leader_snapshot_pending(index):
            return
        # Everything the snapshot says is taken now, between two batches.
        records = self.machine.snapshot_records(self.kv, self.applied)
        term = self.raft_store.term(index)
        conf = self.machine.conf_state
        self._snapshot_done = trio.Event()
        self._snapshot_scope = trio.CancelScope()
        if self._nursery is None:
            await self._make_snapshot(index, term, conf, records)
        else:
            self._nursery.start_soon(self._make_snapshot, index, term, conf, records)

    async def abandon_snapshot(self) -> None:
        """Cancel a snapshot being made and return once it has stopped."""
        if self._snapshot_scope is not None:
            self._snapshot_scope.cancel()
        await self._snapshot_done.wait()

    async def _make_snapshot(
        self, index: int, term: int, conf: ConfState, records: Iterator[tuple[bytes, bytes]]
    ) -> None:
        started_s = trio.current_time()
        done, scope = self._snapshot_done, self._snapshot_scope
        assert scope is not None
        try:
            with scope:
                await self._write_snapshot(index, term, conf, records, started_s)
        finally:
            self._snapshot_scope = None
            done.set()

    async def _write_snapshot(
        self,
        index: int,
        term: int,
        conf: ConfState,
        records: Iterator[tuple[bytes, bytes]],
        started_s: float,
    ) -> None:
        chunks, size_bytes = await self._store_chunks(index, records)
        if self._leader_snapshot_pending(index):
            # The storage actor saved the leader's snapshot meanwhile (and perhaps
            # replaced the log): ours is out of date.
            self.raft_store.clear_snapshot_chunks(index, received=False)
            return
        record = SnapshotRecord(
            index, term, conf.voters, conf.learners, b"", chunks, size_bytes, received=False
        )
        await self.raft_store.create_snapshot(record)
        self.raft_store.drop_snapshot_chunks_below(index)
        self.last_snapshot_index = index
        compact_index = index - self.catch_up_entries
        if compact_index >= self.raft_store.first_index():
            await self.raft_store.compact(compact_index)
        log.info(
            "snapshot at index %d (%d chunks, %d bytes, %.2f s); log compacted up to %d",
            index,
            chunks,
            size_bytes,
            trio.current_time() - started_s,
            max(compact_index, 0),
        )

    async def _store_chunks(
        self, index: int, records: Iterator[tuple[bytes, bytes]]
    ) -> tuple[int, int]:
        """Cut the records (the state persisted up to ``index``) into chunks and write each
        to the RaftStore's chunk writer as it closes, a bounded step at a time, then commit
        them; returns how many chunks, and their bytes (sealed)."""
        self.raft_store.clear_snapshot_chunks(index, received=False)
        writer = self.raft_store.snapshot_chunk_writer(index, received=False)
        builder = ChunkBuilder()
        size_bytes = 0

        def store(body: bytes) -> None:
            nonlocal size_bytes
            value = encode_snapshot_chunk(index, writer.chunks, body)
            writer.put(writer.chunks, value)
            size_bytes += len(value)

        try:
            while step := list(itertools.islice(records, SNAPSHOT_RECORDS_PER_STEP)):
                for key, value in step:
                    body = builder.add(key, value)
                    if body is not None:
                        store(body)
                await trio.lowlevel.checkpoint()
            last = builder.finish()
            if last is not None:
                store(last)
            await writer.commit()
        except BaseException:
            writer.abort()
            raise
        return writer.chunks, size_bytes

    def _leader_snapshot_pending(self, index: int) -> bool:
        """Whether the log already holds a snapshot at or past ``index``.

        The storage actor saves a snapshot from the leader (compacting the log
        behind it) before this actor, still applying older batches, gets to
        restore it; a snapshot of the older state would be out of date and its
        index may be compacted already.
        """
        stored = self.raft_store.snapshot_metadata()
        return stored is not None and stored.index >= index
