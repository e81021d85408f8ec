"""The apply actor: its own snapshots while a snapshot from the leader waits to be restored,
and its "applied up to" answers to the raft actor."""

from __future__ import annotations

import itertools

import pytest
import trio

from actors.apply_actor import COMPACTION_STEP_PAUSE_S, ApplyActor
from actors.codec import SnapshotManifest, snapshot_from_record
from actors.raft import Entry, ReadState, Snapshot
from actors.raft_actor import Applied, ApplyWork, RaftInput
from actors.state_machine import StateMachine, decode_snapshot_chunk
from actors.waiters import Waiters
from storage.applied_state import AppliedState
from storage.kv import MemoryKeyValueStore, WriteBatch
from storage.mvcc import COMPACTION_KEYS_PER_STEP
from storage.raft_store import (
    HardStateRecord,
    LogRecord,
    RaftStore,
    SnapshotRecord,
    encode_snapshot_chunk,
)
from storage.sealed import seal

VOTERS = (1, 2, 3)


def snapshot_record(raft_store: RaftStore, index: int, term: int) -> SnapshotRecord:
    """A received snapshot of an empty state with no members, its chunks written."""
    size_bytes = 0
    bodies = StateMachine.bootstrap_snapshot_chunks([])
    for seq, body in enumerate(bodies):
        value = encode_snapshot_chunk(index, seq, body)
        raft_store.put_snapshot_chunk(index, True, seq, value)
        size_bytes += len(value)
    return SnapshotRecord(index, term, VOTERS, (), b"", len(bodies), size_bytes, True)


def as_snapshot(record: SnapshotRecord) -> Snapshot:
    return snapshot_from_record(record)


async def founded(kv: MemoryKeyValueStore) -> tuple[RaftStore, AppliedState, StateMachine]:
    """A store at the founders' snapshot (index 1) with entries 2..10 in the log."""
    raft_store = RaftStore.open(kv)
    founding = snapshot_record(raft_store, 1, 1)
    await raft_store.save(HardStateRecord(term=1, vote=0, commit=1), [], founding)
    records = [LogRecord(index, 1, 0, b"") for index in range(2, 11)]
    await raft_store.save(HardStateRecord(term=1, vote=0, commit=10), records, None)
    applied = AppliedState(kv)
    machine = StateMachine.empty()
    await machine.install_stored_snapshot(
        kv,
        applied,
        raft_store,
        as_snapshot(founding).metadata,
        SnapshotManifest(founding.chunks, founding.size_bytes, True),
        sync=True,
    )
    return raft_store, applied, machine


RAFT_INBOX_LENGTH = 16


def snapshotting_every_5(
    raft_store: RaftStore, applied: AppliedState, machine: StateMachine, kv: MemoryKeyValueStore
) -> tuple[ApplyActor, trio.MemoryReceiveChannel[RaftInput]]:
    """An apply actor that snapshots every 5 entries and keeps 2 behind, and the raft inbox
    its answers go to; batches come by direct ``apply`` calls, so its inbox is never read."""
    _, inbox = trio.open_memory_channel[ApplyWork](1)
    to_raft, raft_inbox = trio.open_memory_channel[RaftInput](RAFT_INBOX_LENGTH)
    actor = ApplyActor(
        machine, kv=kv, applied=applied, raft_store=raft_store, inbox=inbox, to_raft=to_raft,
        waiters=Waiters(), on_membership=lambda membership: None, snapshot_every_entries=5,
        catch_up_entries=2,
    )  # fmt: skip
    return actor, raft_inbox


def answers(inbox: trio.MemoryReceiveChannel[RaftInput]) -> list[RaftInput]:
    """What the actor told the raft actor since the last look."""
    taken: list[RaftInput] = []
    while True:
        try:
            taken.append(inbox.receive_nowait())
        except trio.WouldBlock:
            return taken


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
    kv = MemoryKeyValueStore()
    raft_store, applied, machine = await founded(kv)
    actor, _raft_inbox = snapshotting_every_5(raft_store, applied, machine, kv)
    leader_snapshot = snapshot_record(raft_store, leader_snapshot_index, 2)
    await raft_store.save(
        HardStateRecord(term=2, vote=0, commit=leader_snapshot_index), [], leader_snapshot
    )
    await actor.apply(ApplyWork(None, entries(2, 10), ()))
    assert machine.applied_index == 10
    await actor.apply(ApplyWork(as_snapshot(leader_snapshot), (), ()))
    assert machine.applied_index == leader_snapshot_index
    assert snapshot_index(raft_store) == leader_snapshot_index


async def test_a_snapshot_is_taken_every_so_many_entries() -> None:
    kv = MemoryKeyValueStore()
    raft_store, applied, machine = await founded(kv)
    actor, _raft_inbox = snapshotting_every_5(raft_store, applied, machine, kv)
    await actor.apply(ApplyWork(None, entries(2, 3), ()))
    assert snapshot_index(raft_store) == 1
    await actor.apply(ApplyWork(None, entries(4, 10), ()))
    assert snapshot_index(raft_store) == 10
    assert raft_store.first_index() == 9  # 2 entries kept behind the snapshot


async def test_each_batch_is_answered_with_the_index_it_reached() -> None:
    kv = MemoryKeyValueStore()
    raft_store, applied, machine = await founded(kv)
    actor, raft_inbox = snapshotting_every_5(raft_store, applied, machine, kv)
    await actor.apply(ApplyWork(None, entries(2, 3), ()))
    await actor.apply(ApplyWork(None, (), (ReadState(3, b"read"),)))  # nothing applied
    await actor.apply(ApplyWork(None, entries(4, 4), ()))
    assert answers(raft_inbox) == [Applied(3), Applied(4)]
    leader_snapshot = snapshot_record(raft_store, 20, 2)
    await raft_store.save(HardStateRecord(term=2, vote=0, commit=20), [], leader_snapshot)
    await actor.apply(ApplyWork(as_snapshot(leader_snapshot), (), ()))
    assert answers(raft_inbox) == [Applied(20)]


async def test_the_answer_goes_before_the_waiters_are_woken() -> None:
    """A client that hears its conf change was applied and proposes another must find the
    raft actor knowing it is applied: the answer is in the raft inbox first."""
    kv = MemoryKeyValueStore()
    raft_store, applied, machine = await founded(kv)
    actor, raft_inbox = snapshotting_every_5(raft_store, applied, machine, kv)
    seen: list[list[RaftInput]] = []
    actor.waiters.applied = lambda applied_index: seen.append(answers(raft_inbox))  # type: ignore[method-assign]
    await actor.apply(ApplyWork(None, entries(2, 3), ()))
    assert seen == [[Applied(3)]]


FILLER_RECORDS = 5_000
"""Records under ``mvcc/`` (not a real MVCC store's: only scanned into chunks), enough for a
snapshot to take many bounded steps."""


def running_actor(
    raft_store: RaftStore, applied: AppliedState, machine: StateMachine, kv: MemoryKeyValueStore
) -> tuple[ApplyActor, trio.MemorySendChannel[ApplyWork], trio.MemoryReceiveChannel[RaftInput]]:
    """An actor for ``run``, snapshotting every 5 entries: its inbox and the raft inbox."""
    work_in, inbox = trio.open_memory_channel[ApplyWork](4)
    to_raft, raft_inbox = trio.open_memory_channel[RaftInput](RAFT_INBOX_LENGTH)
    actor = ApplyActor(
        machine, kv=kv, applied=applied, raft_store=raft_store, inbox=inbox, to_raft=to_raft,
        waiters=Waiters(), on_membership=lambda membership: None, snapshot_every_entries=5,
        catch_up_entries=2,
    )  # fmt: skip
    return actor, work_in, raft_inbox


def fill(kv: MemoryKeyValueStore) -> None:
    batch = WriteBatch()
    for number in range(FILLER_RECORDS):
        batch.put(b"mvcc/filler/%06d" % number, seal(b"v" * 200))  # sealed, as real records
    kv.apply(batch)


async def test_batches_are_applied_while_a_snapshot_is_being_made() -> None:
    """The snapshot's scan runs beside the applying: the batch after the one that started it
    is applied and answered before the snapshot is stored, which then holds every record."""
    kv = MemoryKeyValueStore()
    raft_store, applied, machine = await founded(kv)
    fill(kv)
    actor, work_in, raft_inbox = running_actor(raft_store, applied, machine, kv)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.run)
        await work_in.send(ApplyWork(None, entries(2, 10), ()))  # starts a snapshot at 10
        await work_in.send(ApplyWork(None, entries(11, 11), ()))
        assert await raft_inbox.receive() == Applied(10)
        assert await raft_inbox.receive() == Applied(11)
        assert snapshot_index(raft_store) == 1  # still being made
        with trio.fail_after(5):
            while raft_store.first_index() != 9:  # stored, then the log compacted behind it
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert snapshot_index(raft_store) == 10
    stored = raft_store.snapshot()
    assert stored is not None
    bodies = [bytes(body) for _, body, _ in raft_store.snapshot_chunks(10, False, stored.chunks)]
    keys = [key for body in bodies for key, _ in decode_snapshot_chunk(body)]
    assert sum(key.startswith(b"mvcc/filler/") for key in keys) == FILLER_RECORDS
    assert raft_store.first_index() == 9


async def test_a_leader_snapshot_to_install_abandons_the_one_being_made() -> None:
    kv = MemoryKeyValueStore()
    raft_store, applied, machine = await founded(kv)
    fill(kv)
    actor, work_in, raft_inbox = running_actor(raft_store, applied, machine, kv)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.run)
        await work_in.send(ApplyWork(None, entries(2, 10), ()))  # starts a snapshot at 10
        assert await raft_inbox.receive() == Applied(10)
        leader_snapshot = snapshot_record(raft_store, 20, 2)
        await raft_store.save(HardStateRecord(term=2, vote=0, commit=20), [], leader_snapshot)
        await work_in.send(ApplyWork(as_snapshot(leader_snapshot), (), ()))
        assert await raft_inbox.receive() == Applied(20)
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert snapshot_index(raft_store) == 20
    assert machine.applied_index == 20
    assert actor.last_snapshot_index == 20


async def test_compaction_steps_are_paced_and_a_batch_does_not_wait_for_the_pause(
    autojump_clock: object,
) -> None:
    """A large compaction is reclaimed in steps at least ``COMPACTION_STEP_PAUSE_S`` apart
    (a put needs many scheduling rounds and met a step in each when they ran back to back),
    and a batch that arrives during a pause is applied at once."""
    kv = MemoryKeyValueStore()
    raft_store, applied, machine = await founded(kv)
    mvcc = machine.mvcc
    for _ in range(2):  # every key twice: the first versions are garbage
        txn = mvcc.write()
        for number in range(5 * COMPACTION_KEYS_PER_STEP):
            txn.put(b"k%05d" % number, b"v")
        txn.end()
    mvcc.compact(mvcc.current_revision)
    await machine.persist(applied)
    send, inbox = trio.open_memory_channel[ApplyWork](1)
    to_raft, _raft_inbox = trio.open_memory_channel[RaftInput](RAFT_INBOX_LENGTH)
    actor = ApplyActor(
        machine, kv=kv, applied=applied, raft_store=raft_store, inbox=inbox, to_raft=to_raft,
        waiters=Waiters(), on_membership=lambda membership: None,
    )  # fmt: skip
    steps_s: list[float] = []
    step = actor.compaction_step

    async def timed_step() -> None:
        steps_s.append(trio.current_time())
        await step()

    actor.compaction_step = timed_step  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.run)
        await trio.sleep(COMPACTION_STEP_PAUSE_S / 2)  # inside the first pause
        sent_s = trio.current_time()
        await send.send(ApplyWork(None, entries(2, 10), ()))
        while machine.applied_index < 10:
            await trio.sleep(0)  # no virtual time passes while it is applied
        assert trio.current_time() == sent_s  # applied without waiting for the pause
        await actor.wait_compaction_finished()
        nursery.cancel_scope.cancel()
    assert len(steps_s) >= 5
    gaps_s = [later - earlier for earlier, later in itertools.pairwise(steps_s)]
    assert COMPACTION_STEP_PAUSE_S >= 0.005  # a pause that matters (etcd: 10 ms)
    assert min(gaps_s) >= COMPACTION_STEP_PAUSE_S - 1e-9, gaps_s
