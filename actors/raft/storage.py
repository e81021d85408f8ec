"""What the core reads from durable storage, and an in-memory implementation.

The core only reads storage. The application writes it, from each Ready,
before it calls ``advance``: so everything the core reads here is persisted,
and everything not yet persisted lives in the core's unstable log.

The log is addressed by index. ``first_index()`` is one past the last
compacted entry (the snapshot index); ``term(first_index() - 1)`` is still
answered, from the snapshot metadata, so that the entry before the first one
can be matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from actors.raft.errors import (
    CompactedError,
    SnapshotOutOfDate,
    UnavailableError,
)
from actors.raft.messages import (
    EMPTY_HARD_STATE,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
)


class Storage(Protocol):
    """The read side of a node's durable Raft state."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the configuration as of the last snapshot."""
        ...

    def entries(self, low: int, high: int, bytes_max: int) -> list[Entry]:
        """Entries ``[low, high)``, stopping once ``bytes_max`` payload bytes are
        reached (always at least one entry).

        Raises:
            CompactedError: ``low`` is before ``first_index()``.
            UnavailableError: ``high`` is past ``last_index() + 1``.
        """
        ...

    def term(self, index: int) -> int:
        """The term of the entry at ``index``; ``first_index() - 1`` is allowed.

        Raises:
            CompactedError: ``index`` is before ``first_index() - 1``.
            UnavailableError: ``index`` is past ``last_index()``.
        """
        ...

    def first_index(self) -> int:
        """The index of the first entry still in the log (may be last + 1 if empty)."""
        ...

    def last_index(self) -> int:
        """The index of the last entry in the log."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot.

        Raises:
            SnapshotTemporarilyUnavailable: one is being made; the core retries later.
        """
        ...


def limit_by_size(entries: Sequence[Entry], bytes_max: int) -> list[Entry]:
    """The longest prefix of ``entries`` within ``bytes_max`` payload bytes (at least one)."""
    total_bytes = 0
    for count, entry in enumerate(entries):
        total_bytes += entry.payload_size_bytes()
        if count > 0 and total_bytes > bytes_max:
            return list(entries[:count])
    return list(entries)


class MemoryStorage:
    """Storage held in memory, for tests and the simulator's base layer.

    ``_entries[0]`` is a placeholder whose index and term are the snapshot's,
    so that the term of the entry just before the first one is always known.
    """

    def __init__(
        self, conf_state: ConfState | None = None, snapshot_index: int = 0, snapshot_term: int = 0
    ) -> None:
        metadata = SnapshotMetadata(snapshot_index, snapshot_term, conf_state or ConfState())
        self._hard_state = EMPTY_HARD_STATE
        if snapshot_index:
            self._hard_state = HardState(term=snapshot_term, commit=snapshot_index)
        self._snapshot = Snapshot(metadata)
        self._entries: list[Entry] = [Entry(snapshot_term, snapshot_index)]

    # -- the read side (Storage) -------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    def entries(self, low: int, high: int, bytes_max: int) -> list[Entry]:
        offset = self._entries[0].index
        if low <= offset:
            raise CompactedError(f"index {low} is compacted (first index {offset + 1})")
        if high > self.last_index() + 1:
            raise UnavailableError(f"index {high - 1} is past the last index {self.last_index()}")
        assert low <= high, (low, high)
        return limit_by_size(self._entries[low - offset : high - offset], bytes_max)

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise CompactedError(f"index {index} is compacted (first index {offset + 1})")
        if index - offset >= len(self._entries):
            raise UnavailableError(f"index {index} is past the last index {self.last_index()}")
        return self._entries[index - offset].term

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- the write side, used by whoever persists Ready values -------------------

    def hard_state(self) -> HardState:
        """The persisted hard state."""
        return self._hard_state

    def set_hard_state(self, hard_state: HardState) -> None:
        """Persist a new hard state."""
        self._hard_state = hard_state

    def append(self, entries: Sequence[Entry]) -> None:
        """Persist entries, replacing any existing suffix from the first new index.

        Entries older than the first index are ignored (already compacted).
        """
        if not entries:
            return
        first_new = entries[0].index
        assert first_new <= self.last_index() + 1, (first_new, self.last_index())
        offset = self._entries[0].index
        if entries[-1].index <= offset:
            return
        if first_new <= offset:
            entries = entries[offset + 1 - first_new :]
            first_new = offset + 1
        del self._entries[first_new - offset :]
        self._entries.extend(entries)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a received snapshot.

        Raises:
            SnapshotOutOfDate: ``snapshot`` is older than the one held.
        """
        if snapshot.metadata.index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(
                f"snapshot at {snapshot.metadata.index} is not newer than "
                f"{self._snapshot.metadata.index}"
            )
        self._snapshot = snapshot
        self._entries = [Entry(snapshot.metadata.term, snapshot.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the application state at ``index`` (an applied index).

        Raises:
            SnapshotOutOfDate: ``index`` is not newer than the current snapshot.
        """
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(
                f"snapshot at {index} is not newer than {self._snapshot.metadata.index}"
            )
        assert index <= self.last_index(), (index, self.last_index())
        metadata = SnapshotMetadata(index, self.term(index), conf_state)
        self._snapshot = Snapshot(metadata, data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Drop entries up to ``compact_index``; it must be covered by a snapshot.

        Raises:
            CompactedError: ``compact_index`` is already compacted.
        """
        offset = self._entries[0].index
        if compact_index <= offset:
            raise CompactedError(f"index {compact_index} is already compacted")
        assert compact_index <= self.last_index(), (compact_index, self.last_index())
        assert compact_index <= self._snapshot.metadata.index, "compact only what a snapshot covers"
        self._entries = self._entries[compact_index - offset :]
        self._entries[0] = Entry(self._entries[0].term, self._entries[0].index)
