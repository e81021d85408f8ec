"""The apply actor's own snapshots while a snapshot from the leader waits to be restored."""

from __future__ import annotations

import pytest
import trio

from actors.apply_actor import ApplyActor
from actors.raft import ConfState, Entry, Snapshot, SnapshotMetadata
from actors.state_machine import StateMachine
from actors.storage_actor import ApplyWork
from actors.waiters import Waiters
from storage.applied_state import AppliedState
from storage.kv import MemoryKeyValueStore
from storage.raft_store import HardStateRecord, LogRecord, RaftStore, SnapshotRecord

VOTERS = (1, 2, 3)


def snapshot_record(index: int, term: int) -> SnapshotRecord:
    return SnapshotRecord(index, term, VOTERS, (), StateMachine.bootstrap_snapshot_data([]))


def as_snapshot(record: SnapshotRecord) -> Snapshot:
    metadata = SnapshotMetadata(record.index, record.term, ConfState(VOTERS, ()))
    return Snapshot(metadata, record.data)


async def founded(kv: MemoryKeyValueStore) -> tuple[RaftStore, AppliedState, StateMachine]:
    """A store at the founders' snapshot (index 1) with entries 2..10 in the log."""
    raft_store = RaftStore.open(kv)
    founding = snapshot_record(1, 1)
    await raft_store.save(HardStateRecord(term=1, vote=0, commit=1), [], founding)
    records = [LogRecord(index, 1, 0, b"") for index in range(2, 11)]
    await raft_store.save(HardStateRecord(term=1, vote=0, commit=10), records, None)
    applied = AppliedState(kv)
    machine = StateMachine.empty()
    machine.restore(as_snapshot(founding))
    await machine.persist(applied, sync=True)
    return raft_store, applied, machine


def snapshotting_every_5(
    raft_store: RaftStore, applied: AppliedState, machine: StateMachine
) -> ApplyActor:
    """An apply actor that snapshots every 5 entries and keeps 2 behind; batches come by
    direct ``apply`` calls, so its inbox is never read."""
    _, inbox = trio.open_memory_channel[ApplyWork](1)
    return ApplyActor(
        machine, applied=applied, raft_store=raft_store, inbox=inbox, waiters=Waiters(),
        on_membership=lambda membership: None, snapshot_every_entries=5, catch_up_entries=2,
    )  # fmt: skip


def entries(low: int, high: int) -> tuple[Entry, ...]:
    """Empty entries of term 1 from ``low`` to ``high`` inclusive."""
    return tuple(Entry(index=index, term=1, data=b"") for index in range(low, high + 1))


def snapshot_index(raft_store: RaftStore) -> int | None:
    stored = raft_store.snapshot_metadata()
    return None if stored is None else stored.index


@pytest.mark.parametrize("leader_snapshot_index", [10, 20])
async def test_no_snapshot_of_older_state_once_the_leader_snapshot_is_saved(
    leader_snapshot_index: int,
) -> None:
    """10: the stored snapshot is at the applied index (not newer); 20: past it, and the
    applied index is compacted away (simulator sweep, snapshot-catch-up seed 7754)."""
    raft_store, applied, machine = await founded(MemoryKeyValueStore())
    actor = snapshotting_every_5(raft_store, applied, machine)
    leader_snapshot = snapshot_record(leader_snapshot_index, 2)
    await raft_store.save(
        HardStateRecord(term=2, vote=0, commit=leader_snapshot_index), [], leader_snapshot
    )
    await actor.apply(ApplyWork(None, entries(2, 10), ()))
    assert machine.applied_index == 10
    await actor.apply(ApplyWork(as_snapshot(leader_snapshot), (), ()))
    assert machine.applied_index == leader_snapshot_index
    assert snapshot_index(raft_store) == leader_snapshot_index


async def test_a_snapshot_is_taken_every_so_many_entries() -> None:
    raft_store, applied, machine = await founded(MemoryKeyValueStore())
    actor = snapshotting_every_5(raft_store, applied, machine)
    await actor.apply(ApplyWork(None, entries(2, 3), ()))
    assert snapshot_index(raft_store) == 1
    await actor.apply(ApplyWork(None, entries(4, 10), ()))
    assert snapshot_index(raft_store) == 10
    assert raft_store.first_index() == 9  # 2 entries kept behind the snapshot
