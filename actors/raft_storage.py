"""The core's Storage protocol over the durable RaftStore.

The core reads persisted entries through this adapter; the storage actor
writes them (``RaftStore.save``) from each Ready. The configuration comes
from the applied state rather than the log: the core starts at the applied
index the state machine persisted, so it must start with the configuration
as of that index.
"""

from __future__ import annotations

from actors.codec import entry_from_record, hard_state_from_record, snapshot_from_record
from actors.raft import (
    CompactedError,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    UnavailableError,
)
from storage.errors import LogCompacted, LogUnavailable
from storage.raft_store import RaftStore


class DurableRaftStorage:
    """Implements ``actors.raft.Storage`` by reading a RaftStore."""

    def __init__(self, store: RaftStore, conf_state: ConfState) -> None:
        self.store = store
        self.conf_state = conf_state

    def initial_state(self) -> tuple[HardState, ConfState]:
        record = self.store.hard_state()
        hard_state = HardState() if record is None else hard_state_from_record(record)
        return hard_state, self.conf_state

    def entries(self, low: int, high: int, bytes_max: int) -> list[Entry]:
        try:
            records = self.store.entries(low, high, bytes_max)
        except LogCompacted as error:
            raise CompactedError(str(error)) from None
        except LogUnavailable as error:
            raise UnavailableError(str(error)) from None
        return [entry_from_record(record) for record in records]

    def term(self, index: int) -> int:
        try:
            return self.store.term(index)
        except LogCompacted as error:
            raise CompactedError(str(error)) from None
        except LogUnavailable as error:
            raise UnavailableError(str(error)) from None

    def first_index(self) -> int:
        return self.store.first_index()

    def last_index(self) -> int:
        return self.store.last_index()

    def snapshot(self) -> Snapshot:
        record = self.store.snapshot()
        if record is None:
            return Snapshot()
        return snapshot_from_record(record)
