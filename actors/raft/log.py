"""The Raft log as the core sees it: persisted entries in storage, then an
unstable tail (and perhaps an incoming snapshot) not yet written to disk.

The unstable tail is what a Ready asks the application to persist; the part
already handed out (``offset_in_progress``, ``snapshot_in_progress``) is not
handed out again, and ``stable_to`` moves the durable boundary once the
application says it is on disk. Committed entries have two marks of their
own: ``applying`` (handed out to be applied) and ``applied`` (the
application said so). Without ``allow_unstable`` (asynchronous storage
writes) only entries below the durable boundary are handed out for applying.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.raft.errors import CompactedError, UnavailableError
from actors.raft.messages import Entry, Snapshot
from actors.raft.storage import Storage, limit_by_size


@dataclass(slots=True)
class Unstable:
    """Entries from ``offset`` on (and maybe a snapshot) not yet persisted.

    Entries below ``offset_in_progress`` (and the snapshot, when
    ``snapshot_in_progress``) were handed out to be persisted already.
    """

    offset: int
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    offset_in_progress: int = 0
    snapshot_in_progress: bool = False

    def __post_init__(self) -> None:
        self.offset_in_progress = max(self.offset_in_progress, self.offset)

    def first_index_hint(self) -> int | None:
        """The first log index, when a pending snapshot decides it."""
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def last_index_hint(self) -> int | None:
        """The last log index, when the unstable part decides it."""
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def term_hint(self, index: int) -> int | None:
        """The term at ``index`` when the unstable part knows it."""
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == index:
                return self.snapshot.metadata.term
            return None
        last = self.last_index_hint()
        if last is None or index > last:
            return None
        return self.entries[index - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        """Forget entries up to ``index`` once persisted, if still the same entries."""
        if self.term_hint(index) != term or index < self.offset:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1
        self.offset_in_progress = max(self.offset_in_progress, self.offset)

    def stable_snapshot_to(self, index: int) -> None:
        """Forget the pending snapshot once persisted."""
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None
            self.snapshot_in_progress = False

    def restore(self, snapshot: Snapshot) -> None:
        """Replace everything unstable with a snapshot to persist."""
        self.offset = snapshot.metadata.index + 1
        self.offset_in_progress = self.offset
        self.entries = []
        self.snapshot = snapshot
        self.snapshot_in_progress = False

    def next_entries(self) -> list[Entry]:
        """Unstable entries not handed out to be persisted yet."""
        return self.entries[self.offset_in_progress - self.offset :]

    def next_snapshot(self) -> Snapshot | None:
        """The unstable snapshot, unless it was handed out already."""
        return None if self.snapshot_in_progress else self.snapshot

    def accept_in_progress(self) -> None:
        """Everything unstable now was handed out to be persisted."""
        self.offset_in_progress = self.offset + len(self.entries)
        self.snapshot_in_progress = self.snapshot is not None

    def truncate_and_append(self, entries: list[Entry]) -> None:
        """Append, replacing any unstable entries from the first new index."""
        first_new = entries[0].index
        if first_new == self.offset + len(self.entries):
            self.entries.extend(entries)
        elif first_new <= self.offset:
            self.offset = first_new
            self.entries = list(entries)
        else:
            del self.entries[first_new - self.offset :]
            self.entries.extend(entries)
        # Replaced entries that were handed out are handed out again, new ones.
        self.offset_in_progress = max(self.offset, min(self.offset_in_progress, first_new))

    def slice(self, low: int, high: int) -> list[Entry]:
        """Unstable entries ``[low, high)``."""
        assert self.offset <= low <= high <= self.offset + len(self.entries), (
            low,
            high,
            self.offset,
            len(self.entries),
        )
        return self.entries[low - self.offset : high - self.offset]


class RaftLog:
    """The whole log: storage below, unstable above, with commit and applied marks."""

    def __init__(self, storage: Storage, committed_bytes_max: int) -> None:
        self.storage = storage
        first_index = storage.first_index()
        last_index = storage.last_index()
        self.unstable = Unstable(offset=last_index + 1)
        self.committed = first_index - 1
        self.applying = first_index - 1
        self.applied = first_index - 1
        self.snapshot_to_apply: Snapshot | None = None
        """A snapshot adopted from the leader, not yet handed out to be applied."""
        self.committed_bytes_max = committed_bytes_max

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applying={self.applying}, "
            f"applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, unstable={len(self.unstable.entries)})"
        )

    # -- positions -----------------------------------------------------------

    def first_index(self) -> int:
        """The first index still held (persisted or unstable)."""
        hint = self.unstable.first_index_hint()
        return hint if hint is not None else self.storage.first_index()

    def last_index(self) -> int:
        """The last index held."""
        hint = self.unstable.last_index_hint()
        return hint if hint is not None else self.storage.last_index()

    def last_term(self) -> int:
        """The term of the last entry."""
        return self.term(self.last_index())

    def last_stable_index(self) -> int:
        """The last index known to be on disk."""
        return self.unstable.offset - 1 if self.unstable.snapshot is None else 0

    def term(self, index: int) -> int:
        """The term at ``index``.

        Raises:
            CompactedError: ``index`` is before the first index - 1.
            UnavailableError: ``index`` is past the last index.
        """
        hint = self.unstable.term_hint(index)
        if hint is not None:
            return hint
        if index < self.first_index() - 1:
            raise CompactedError(f"index {index} is compacted")
        if index > self.last_index():
            raise UnavailableError(f"index {index} is past the last index")
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        """The term at ``index``, or 0 when it is compacted or not there."""
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def matches_term(self, index: int, term: int) -> bool:
        """True when the log holds an entry at ``index`` with ``term``."""
        try:
            return self.term(index) == term
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """The election restriction: is a log ending at (``last_index``, ``term``)
        at least as up to date as ours (§5.4.1)?"""
        our_term = self.last_term()
        return term > our_term or (term == our_term and last_index >= self.last_index())

    # -- reading entries -----------------------------------------------------

    def entries_from(self, low: int, bytes_max: int) -> list[Entry]:
        """Entries from ``low`` to the end, within ``bytes_max`` (at least one)."""
        if low > self.last_index():
            return []
        return self.slice(low, self.last_index() + 1, bytes_max)

    def slice(self, low: int, high: int, bytes_max: int) -> list[Entry]:
        """Entries ``[low, high)`` within ``bytes_max`` (at least one).

        Raises:
            CompactedError: ``low`` is compacted.
        """
        if low < self.first_index():
            raise CompactedError(f"index {low} is compacted")
        assert high <= self.last_index() + 1, (low, high, self.last_index())
        if low == high:
            return []
        stored: list[Entry] = []
        offset = self.unstable.offset
        if low < offset:
            stored = self.storage.entries(low, min(high, offset), bytes_max)
            if len(stored) < min(high, offset) - low or high <= offset:
                return stored
        unstable = self.unstable.slice(max(low, offset), high)
        return limit_by_size(stored + unstable, bytes_max)

    def next_snapshot_to_apply(self, allow_unstable: bool) -> Snapshot | None:
        """The snapshot to hand out for applying, if one waits (and is durable,
        unless ``allow_unstable``)."""
        snapshot = self.snapshot_to_apply
        if snapshot is None or (not allow_unstable and self.unstable.snapshot is snapshot):
            return None
        return snapshot

    def _appliable_high(self, allow_unstable: bool) -> int:
        """The last index that may be handed out for applying."""
        if self.snapshot_to_apply is not None:
            return 0  # the snapshot goes first, in a Ready of its own
        if allow_unstable:
            return self.committed
        return min(self.committed, self.last_stable_index())

    def has_next_committed_entries(self, allow_unstable: bool) -> bool:
        """Are there committed entries to hand out for applying?"""
        low = max(self.applying + 1, self.first_index())
        return self._appliable_high(allow_unstable) >= low

    def next_committed_entries(self, allow_unstable: bool) -> list[Entry]:
        """Committed entries to apply next, within the per-Ready byte limit.

        Args:
            allow_unstable: the caller persists before it applies (one Ready at
                a time), so entries not yet durable may be handed out too.
        """
        low = max(self.applying + 1, self.first_index())
        high = self._appliable_high(allow_unstable)
        if high < low:
            return []
        return self.slice(low, high + 1, self.committed_bytes_max)

    # -- changing the log -----------------------------------------------------

    def append(self, entries: list[Entry]) -> int:
        """Append entries (which may replace a conflicting uncommitted suffix).

        Returns:
            The new last index.
        """
        if entries:
            assert entries[0].index > self.committed, (entries[0].index, self.committed)
            self.unstable.truncate_and_append(entries)
        return self.last_index()

    def find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """The index of the first entry that is new or conflicts in term, or 0."""
        for entry in entries:
            if not self.matches_term(entry.index, entry.term):
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, with its term.

        This is the fast back-off: one round trip skips a whole term of
        conflicting entries instead of one entry at a time.
        """
        while index > 0:
            try:
                our_term = self.term(index)
            except (CompactedError, UnavailableError):
                break
            if our_term <= term:
                return index, our_term
            index -= 1
        return index, 0

    def maybe_append(
        self, index: int, log_term: int, commit: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """Append what a leader sent after (``index``, ``log_term``) if it matches.

        Returns:
            The last index the leader's message covers, or None on mismatch.
        """
        if not self.matches_term(index, log_term):
            return None
        last_new_index = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            assert conflict > self.committed, (
                f"conflict {conflict} at or below commit {self.committed}"
            )
            self.append(list(entries[conflict - index - 1 :]))
        self.commit_to(min(commit, last_new_index))
        return last_new_index

    def commit_to(self, commit: int) -> None:
        """Raise the commit index (never lowers it)."""
        if commit > self.committed:
            assert commit <= self.last_index(), (commit, self.last_index())
            self.committed = commit

    def applying_to(self, index: int) -> None:
        """Entries (or a snapshot) up to ``index`` were handed out to be applied."""
        assert index <= self.committed, (index, self.committed)
        assert index > self.applying, (index, self.applying)
        if self.snapshot_to_apply is not None:
            assert index == self.snapshot_to_apply.metadata.index, (index, self.snapshot_to_apply)
            self.snapshot_to_apply = None
        self.applying = index

    def applied_to(self, index: int) -> None:
        """The application applied everything up to ``index``."""
        assert index <= self.committed, (index, self.committed)
        self.applied = max(self.applied, index)
        self.applying = max(self.applying, index)

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (of ``term``) are on disk."""
        self.unstable.stable_to(index, term)

    def stable_snapshot_to(self, index: int) -> None:
        """The pending snapshot at ``index`` is on disk."""
        self.unstable.stable_snapshot_to(index)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the log with ``snapshot``; everything up to it is committed."""
        self.committed = snapshot.metadata.index
        self.unstable.restore(snapshot)
        self.snapshot_to_apply = snapshot
