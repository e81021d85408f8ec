"""The storage actor: makes each Ready durable, then lets it go on.

One Ready is one RaftStore batch with one fsync (when the Ready needs one).
Only after it returns do the messages that vouch for it leave (votes,
append acknowledgements) and the raft actor hears "persisted" so it can
advance.

Committed entries that an earlier Ready already made durable (every one
below the first entry this Ready appends, which on a leader is all of them:
a leader commits only what it has persisted) and the ReadIndex answers go
to the apply actor *before* the fsync, so a write does not wait for the
next batch's fsync after it commits; etcd overlaps apply and WAL write the
same way. The rest (entries this Ready itself appends, a snapshot) wait for
the save. Applying may then run ahead of the persisted commit index; a
restart raises the commit index to the applied one (see
``actors.bootstrap``), which is safe because those entries were committed
and are in the durable log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from actors.codec import entry_to_record, hard_state_to_record, snapshot_to_record
from actors.raft import Entry, Message, ReadState, Ready, Snapshot
from actors.raft_actor import Persisted, RaftInput
from storage.raft_store import RaftStore

APPLY_QUEUE_LENGTH_MAX = 64
"""Batches of committed entries waiting for the apply actor."""


@dataclass(frozen=True, slots=True)
class ApplyWork:
    """What a Ready asks the apply actor to do, in order."""

    snapshot: Snapshot | None
    committed_entries: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]


class StorageActor:
    """Persists Readies in the order the raft actor hands them out."""

    def __init__(
        self,
        store: RaftStore,
        inbox: trio.MemoryReceiveChannel[Ready],
        to_apply: trio.MemorySendChannel[ApplyWork],
        to_raft: trio.MemorySendChannel[RaftInput],
        send: Callable[[Message], None],
    ) -> None:
        self.store = store
        self.inbox = inbox
        self.to_apply = to_apply
        self.to_raft = to_raft
        self.send = send

    async def run(self) -> None:
        """Persist every Ready until cancelled."""
        async with self.inbox, self.to_apply:
            async for ready in self.inbox:
                await self.persist(ready)

    async def persist(self, ready: Ready) -> None:
        """Write ``ready`` durably, then release what depended on it."""
        durable, after_save = split_committed(ready)
        if durable or ready.read_states:
            await self.to_apply.send(ApplyWork(None, durable, ready.read_states))
        if ready.snapshot is not None or ready.entries or ready.hard_state is not None:
            await self.store.save(
                None if ready.hard_state is None else hard_state_to_record(ready.hard_state),
                [entry_to_record(entry) for entry in ready.entries],
                None if ready.snapshot is None else snapshot_to_record(ready.snapshot),
                sync=ready.must_sync or ready.snapshot is not None,
            )
        for message in ready.messages_after_persist:
            self.send(message)
        if ready.snapshot is not None or after_save:
            await self.to_apply.send(ApplyWork(ready.snapshot, after_save, ()))
        await self.to_raft.send(Persisted(ready))


def split_committed(ready: Ready) -> tuple[tuple[Entry, ...], tuple[Entry, ...]]:
    """``ready``'s committed entries: those already durable, and those its own save persists.

    With a snapshot, everything waits for it (the entries follow it).
    """
    committed = ready.committed_entries
    if ready.snapshot is not None:
        return (), committed
    if not ready.entries:
        return committed, ()
    first_new = ready.entries[0].index
    cut = next((i for i, entry in enumerate(committed) if entry.index >= first_new), len(committed))
    return committed[:cut], committed[cut:]
