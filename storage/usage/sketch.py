"""The space-saving top-k summary (Metwally, Agrawal, El Abbadi 2005), mergeable.

Why: a member cannot keep a counter per key (a million distinct keys would be a million
counters); it keeps at most ``capacity`` monitored items. An item not monitored replaces the
one with the smallest count and inherits that count as its ``error``. Guarantees, for a stream
of ``n`` operations:

- ``count - error <= true count <= count`` for every monitored item;
- any item whose true count exceeds ``n / capacity`` is monitored;
- the smallest monitored count is at most ``n / capacity``.

Each monitored item also counts, since it was monitored, its reads, writes, watch events and
bytes (lower bounds). The smallest count is found with a heap of possibly stale counts (a
count only grows, so a stale heap entry is a lower bound; the top is refreshed until it is
exact), so an update is O(1) for a monitored item and O(log capacity) amortized otherwise.

Merging (Agarwal et al., "Mergeable summaries", 2012): an item absent from a full summary
may have had up to that summary's smallest count there, so that amount is added to both its
count and its error; the merged summary keeps the ``capacity`` largest counts.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

READ: Final = 2
WRITE: Final = 3
EVENT: Final = 4
BYTES: Final = 5
KINDS: Final = {"read": READ, "write": WRITE, "event": EVENT}
"""Request kinds and their slot in an entry ``[count, error, reads, writes, events, bytes]``."""
ENTRY_SLOTS: Final = 6
CAPACITY_MAX: Final = 4096


@dataclass(frozen=True, slots=True)
class Item:
    """One monitored item as reported: ``count - error <= true count <= count``."""

    key: bytes
    count: int
    error: int
    reads: int
    writes: int
    events: int
    bytes: int

    def to_json(self) -> dict[str, object]:
        """A JSON object (the key as text; bytes that are not UTF-8 kept as surrogates)."""
        return {
            "key": self.key.decode("utf-8", "surrogateescape"),
            "count": self.count,
            "error": self.error,
            "reads": self.reads,
            "writes": self.writes,
            "events": self.events,
            "bytes": self.bytes,
        }

    @classmethod
    def from_json(cls, value: dict[str, object]) -> Item:
        """The inverse of :meth:`to_json`."""
        key = value["key"]
        assert isinstance(key, str), key
        numbers = [value[name] for name in ("count", "error", "reads", "writes", "events")]
        numbers.append(value["bytes"])
        assert all(isinstance(number, int) for number in numbers), numbers
        count, error, reads, writes, events, size = (int(str(n)) for n in numbers)
        return cls(key.encode("utf-8", "surrogateescape"), count, error, reads, writes, events,
                   size)  # fmt: skip


class SpaceSaving:
    """At most ``capacity`` monitored items with their counts; see the module docstring."""

    __slots__ = ("_entries", "_heap", "base_floor", "capacity", "total")

    def __init__(self, capacity: int, base_floor: int = 0) -> None:
        assert 0 < capacity <= CAPACITY_MAX, capacity
        assert base_floor >= 0, base_floor
        self.capacity = capacity
        self.base_floor = base_floor
        """What any item not monitored may have had before (a merge's result: 0 if fresh)."""
        self.total = 0
        """Operations added (the stream's length ``n``)."""
        self._entries: dict[bytes, list[int]] = {}
        self._heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: bytes, kind: int, size_bytes: int) -> None:
        """Count one operation of ``kind`` (READ, WRITE or EVENT) on ``key``."""
        entry = self._entries.get(key)
        if entry is None:
            self._monitor(key, kind, size_bytes)
        else:
            entry[0] += 1
            entry[kind] += 1
            entry[BYTES] += size_bytes
        self.total += 1

    def _monitor(self, key: bytes, kind: int, size_bytes: int) -> None:
        """Monitor ``key`` with its first operation counted. Its heap entry carries the count
        after that operation: pushed before it, the entry would be stale at once, and the
        next eviction would pay a heap step to refresh it."""
        heap = self._heap
        if len(self._entries) < self.capacity:
            floor = self.base_floor
            heapq.heappush(heap, (floor + 1, key))
        else:
            floor = self._refresh_top()
            del self._entries[heap[0][1]]
            heapq.heapreplace(heap, (floor + 1, key))
        entry = [floor + 1, floor, 0, 0, 0, size_bytes]
        entry[kind] = 1
        self._entries[key] = entry

    def _refresh_top(self) -> int:
        """Make the heap's top exact; the smallest monitored count."""
        heap = self._heap
        while True:
            count, key = heap[0]
            actual = self._entries[key][0]
            if actual == count:
                return count
            heapq.heapreplace(heap, (actual, key))

    def floor(self) -> int:
        """What an item not monitored may have had: the smallest count if full, else 0."""
        if len(self._entries) < self.capacity:
            return self.base_floor
        return max(self.base_floor, self._refresh_top())

    def items(self) -> Iterator[Item]:
        """Every monitored item, in no particular order."""
        for key, entry in self._entries.items():
            yield Item(key, *entry)

    def top(self, limit: int, prefix: bytes = b"") -> list[Item]:
        """The ``limit`` items with the largest counts that start with ``prefix``."""
        chosen = (item for item in self.items() if item.key.startswith(prefix))
        return heapq.nlargest(limit, chosen, key=lambda item: (item.count, item.key))

    def memory_entries(self) -> int:
        """Entries held (monitored items plus heap entries): at most twice the capacity."""
        return len(self._entries) + len(self._heap)


def merge(parts: Iterable[tuple[Iterable[Item], int]], capacity: int) -> tuple[list[Item], int]:
    """Merge summaries given as (items, floor) into at most ``capacity`` items, largest first,
    and the merged floor (what an item not kept may have had).

    An item absent from a part gets that part's floor added to its count and its error.
    """
    parts = [(list(items), floor) for items, floor in parts]
    sums: dict[bytes, list[int]] = {}
    seen_in: dict[bytes, int] = {}
    floor_total = sum(floor for _, floor in parts)
    for items, floor in parts:
        for item in items:
            entry = sums.setdefault(item.key, [0] * ENTRY_SLOTS)
            entry[0] += item.count
            entry[1] += item.error
            entry[READ] += item.reads
            entry[WRITE] += item.writes
            entry[EVENT] += item.events
            entry[BYTES] += item.bytes
            seen_in[item.key] = seen_in.get(item.key, 0) + floor
    merged = []
    for key, entry in sums.items():
        absent = floor_total - seen_in[key]
        entry[0] += absent
        entry[1] += absent
        merged.append(Item(key, *entry))
    kept = heapq.nlargest(capacity, merged, key=lambda item: (item.count, item.key))
    floor = floor_total
    if len(kept) < len(merged):
        floor = max(floor, kept[-1].count)
    return kept, floor


def rebuild(items: Iterable[Item], capacity: int, floor: int, total: int) -> SpaceSaving:
    """A summary holding ``items`` (at most ``capacity``) and a merge's floor, to go on."""
    sketch = SpaceSaving(capacity, floor)
    for item in items:
        sketch._entries[item.key] = [item.count, item.error, item.reads, item.writes,
                                     item.events, item.bytes]  # fmt: skip
        sketch._heap.append((item.count, item.key))
    assert len(sketch._entries) <= capacity
    heapq.heapify(sketch._heap)
    sketch.total = total
    return sketch


def merge_sketches(sketches: Iterable[SpaceSaving], capacity: int) -> SpaceSaving:
    """One summary of several (the union of their streams)."""
    sketches = list(sketches)
    items, floor = merge(((s.items(), s.floor()) for s in sketches), capacity)
    return rebuild(items, capacity, floor, sum(s.total for s in sketches))
