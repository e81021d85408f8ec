"""The storage actor: makes each append durable, then says so.

The raft actor hands it one ``StorageAppend`` at a time (a hard state, a
snapshot, entries, and the messages that vouch for them). Each is one
RaftStore batch with one fsync (when the append needs one: entries, a
snapshot, a new term or vote). Only after it returns do the messages that
vouch for it leave (votes, append acknowledgements), and then the raft actor
hears "persisted up to (index, term)": a leader counts its own log toward a
commit only from then on.

It persists and does nothing else: committed entries go from the raft actor
straight to the apply actor, once this actor has said they are durable.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from actors.codec import entry_to_record, hard_state_to_record, snapshot_to_record
from actors.raft import Message, StorageAppend
from actors.raft_actor import Persisted, RaftInput
from storage.errors import StorageFailed
from storage.raft_store import RaftStore


class StorageActor:
    """Persists appends in the order the raft actor hands them out."""

    def __init__(
        self,
        store: RaftStore,
        inbox: trio.MemoryReceiveChannel[StorageAppend],
        to_raft: trio.MemorySendChannel[RaftInput],
        send: Callable[[Message], None],
    ) -> None:
        self.store = store
        self.inbox = inbox
        self.to_raft = to_raft
        self.send = send
        self.planted_retry_failed_fsync = False
        """A planted bug (``actors.bootstrap.RETRY_FAILED_FSYNC``), test only: a failed fsync is
        retried, and what it covered acknowledged once a retry succeeds."""

    async def run(self) -> None:
        """Persist every append until cancelled."""
        async with self.inbox, self.to_raft:
            async for append in self.inbox:
                await self.persist(append)
                await self.to_raft.send(Persisted(append.persisted_up_to))

    async def persist(self, append: StorageAppend) -> None:
        """Write ``append`` durably, then release the messages that depended on it."""
        if append.has_write():
            try:
                await self.store.save(
                    None if append.hard_state is None else hard_state_to_record(append.hard_state),
                    [entry_to_record(entry) for entry in append.entries],
                    None if append.snapshot is None else snapshot_to_record(append.snapshot),
                    sync=append.must_sync,
                )
            except StorageFailed:
                if not self.planted_retry_failed_fsync:
                    raise
                await self.store.save(None, [], None, sync=True)  # the planted bug: "fsyncgate"
        for message in append.messages_after_persist:
            self.send(message)
