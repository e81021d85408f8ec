"""What a leader knows of each follower, and the flow control it applies.

A follower's progress is in one of three states:

- PROBE: the leader does not know where the follower's log ends. It sends
  one append at a time and waits for the answer (or the next heartbeat
  response) before sending another, backing off on rejections.
- REPLICATE: the follower is known to match up to ``match``; the leader
  streams appends optimistically, bounded by the inflight window.
- SNAPSHOT: the follower needs entries the leader compacted away; a
  snapshot is on its way and nothing else is sent until it lands or fails.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class ProgressState(enum.Enum):
    """How the leader replicates to one follower (see the module docstring)."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Inflights:
    """Appends sent but not yet acknowledged, bounded in count and in bytes.

    Each record is the last index an append carried and its payload bytes;
    acknowledgements free every record up to the acknowledged index.
    """

    messages_max: int
    bytes_max: int
    _records: deque[tuple[int, int]] = field(default_factory=deque)
    _bytes: int = 0

    def add(self, last_index: int, size_bytes: int) -> None:
        """Record an append that carried entries up to ``last_index``."""
        assert not self.full(), "sent past a full inflight window"
        assert not self._records or self._records[-1][0] < last_index, (self._records, last_index)
        self._records.append((last_index, size_bytes))
        self._bytes += size_bytes

    def free_to(self, index: int) -> None:
        """Free every record for appends ending at or before ``index``."""
        while self._records and self._records[0][0] <= index:
            _, size_bytes = self._records.popleft()
            self._bytes -= size_bytes

    def free_first(self) -> None:
        """Free the oldest record, whatever its index (an append presumed lost)."""
        if self._records:
            _, size_bytes = self._records.popleft()
            self._bytes -= size_bytes

    def full(self) -> bool:
        """No more appends may be sent until some are acknowledged."""
        return len(self._records) >= self.messages_max or self._bytes >= self.bytes_max

    def count(self) -> int:
        """The number of unacknowledged appends."""
        return len(self._records)

    def size_bytes(self) -> int:
        """The unacknowledged payload bytes."""
        return self._bytes

    def reset(self) -> None:
        """Forget every record (the follower's state changed)."""
        self._records.clear()
        self._bytes = 0


@dataclass(slots=True)
class Progress:
    """The leader's view of one follower (or of itself)."""

    match: int
    next: int
    inflights: Inflights
    is_learner: bool = False
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    pending_snapshot: int = 0
    recent_active: bool = False
    sent_commit: int = 0
    """The commit index last sent in an append (to skip repeating it)."""

    def __repr__(self) -> str:
        flags = []
        if self.is_learner:
            flags.append("learner")
        if self.probe_sent:
            flags.append("paused")
        if self.pending_snapshot:
            flags.append(f"pending_snapshot={self.pending_snapshot}")
        if self.inflights.count():
            flags.append(f"inflight={self.inflights.count()}")
        if self.recent_active:
            flags.append("active")
        return f"{self.state.value} match={self.match} next={self.next} " + " ".join(flags)

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        """Start probing from just after the last known match (or the snapshot)."""
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        """Stream optimistically from just after the match."""
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        """Wait for a snapshot at ``snapshot_index`` to be installed."""
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to ``index`` arrived.

        Returns:
            True when it moved ``match`` forward.
        """
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append after ``rejected`` arrived.

        Returns:
            False when the rejection is stale (ignore it), True when ``next`` moved.
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        """Should the leader hold back appends to this follower for now?"""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def sent_append(self, last_index: int, size_bytes: int) -> None:
        """An append was just sent; ``last_index`` is 0 when it carried no entries."""
        if self.state is ProgressState.REPLICATE:
            if last_index:
                self.next = last_index + 1
                self.inflights.add(last_index, size_bytes)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True
        else:
            raise AssertionError(f"sending an append in state {self.state}")
