"""The storage actor: makes each Ready durable, then lets it go on.

One Ready is one RaftStore batch with one fsync (when the Ready needs one).
Only after it returns do the messages that vouch for it leave (votes,
append acknowledgements), the committed entries go to the apply actor, and
the raft actor hears "persisted" so it can advance.
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
        if ready.snapshot is not None or ready.entries or ready.hard_state is not None:
            await self.store.save(
                None if ready.hard_state is None else hard_state_to_record(ready.hard_state),
                [entry_to_record(entry) for entry in ready.entries],
                None if ready.snapshot is None else snapshot_to_record(ready.snapshot),
                sync=ready.must_sync or ready.snapshot is not None,
            )
        for message in ready.messages_after_persist:
            self.send(message)
        if ready.snapshot is not None or ready.committed_entries or ready.read_states:
            await self.to_apply.send(
                ApplyWork(ready.snapshot, ready.committed_entries, ready.read_states)
            )
        await self.to_raft.send(Persisted(ready))
