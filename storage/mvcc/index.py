"""The in-memory index of the MVCC store: every key's retained versions, keys in order.

Each key has a ``History``: its versions in revision order (``(main, sub)`` ascending),
including tombstones, which end a generation. A read at revision ``r`` takes the last version
whose main revision is ``<= r``; a tombstone there means the key does not exist at ``r``.
The versions themselves (values included) are kept here, in memory, so reads never touch the
disk and see every applied write before it is persisted; compaction bounds the memory. (The
store keeps a second, smaller index beside this one: the keys each revision wrote, for
``MvccStore.events``; see ``storage.mvcc.store``.)

The keys are a sorted Python list (``bisect``) beside a dict, chosen by measurement
(``python -m bench.mvcc_index``; development VM, 2 vCPUs shared with other work, random
22-byte keys, 100-byte values; medians)::

                                          10k keys     100k keys
    store: puts/s, new keys                211,000        97,000
    store: puts/s, existing keys           190,000       205,000
    store: point read                       1.6 us        2.5 us
    store: 100-key range                     45 us        102 us
    store: count_only over every key        3.5 ms        100 ms
    insert one key: list + insort           0.6 us        3.9 us
                    SortedList              0.5 us        0.6 us
                    RocksDB put (no sync)   2.4 us        2.9 us
    find 100 keys:  list + bisect + slice   0.6 us        1.9 us
                    SortedList              4.4 us        7.3 us
                    RocksDB iterator         29 us         45 us

Finding keys is cheapest in the plain list (a slice is one C call) and RocksDB iteration is
15-25 times dearer than the list before a single value is decoded, so the index and the
values stay in memory. ``insort`` moves the tail of the list, so a new key costs O(n): 3.9 us
at 100k keys, about 40 us at a million; updates of existing keys do not pay it. Past a
million keys a B-tree-like list (``sortedcontainers.SortedList``, not a dependency today)
would be the change to make, behind the same ``KeyIndex`` methods.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from storage.mvcc.model import KeyValue


class History:
    """The retained versions of one key, oldest first."""

    __slots__ = ("kvs", "mains", "subs")

    def __init__(self) -> None:
        self.mains: list[int] = []
        self.subs: list[int] = []
        self.kvs: list[KeyValue] = []

    def __len__(self) -> int:
        return len(self.kvs)

    def append(self, main: int, sub: int, kv: KeyValue) -> None:
        """Add the newest version; revisions only grow."""
        assert not self.mains or (main, sub) > (self.mains[-1], self.subs[-1]), (main, sub)
        assert kv.mod_revision == main, (kv.mod_revision, main)
        if not self.kvs:
            # Most keys have one version: a list made with its item holds one slot, where
            # appending to an empty list reserves four (72 bytes a key in all; issue 13).
            self.mains, self.subs, self.kvs = [main], [sub], [kv]
            return
        self.mains.append(main)
        self.subs.append(sub)
        self.kvs.append(kv)

    def at(self, revision: int) -> KeyValue | None:
        """The live version at ``revision``, or None (no version yet, or a tombstone)."""
        position = bisect.bisect_right(self.mains, revision)
        if position == 0:
            return None
        kv = self.kvs[position - 1]
        return None if kv.is_tombstone else kv

    def retained_from(self, compact_revision: int) -> int:
        """The position of the first version a compaction at ``compact_revision`` keeps.

        It keeps the last version at or below that revision (unless it is a tombstone) and
        everything above it.
        """
        position = bisect.bisect_right(self.mains, compact_revision)
        if position == 0:
            return 0
        if self.kvs[position - 1].is_tombstone:
            return position
        return position - 1

    def drop_before(self, position: int) -> list[tuple[int, int]]:
        """Forget the versions before ``position``; their revisions ``(main, sub)``."""
        dropped = list(zip(self.mains[:position], self.subs[:position], strict=True))
        del self.mains[:position]
        del self.subs[:position]
        del self.kvs[:position]
        return dropped

    def versions(self) -> Iterator[tuple[int, int, KeyValue]]:
        """``(main, sub, kv)`` for every retained version, oldest first."""
        return zip(self.mains, self.subs, self.kvs, strict=True)


class KeyIndex:
    """Every key with a retained version, in bytewise order, and its history."""

    __slots__ = ("_histories", "_keys")

    def __init__(self) -> None:
        self._keys: list[bytes] = []
        self._histories: dict[bytes, History] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key: bytes) -> History | None:
        """The history of ``key``, or None."""
        return self._histories.get(key)

    def history_for_write(self, key: bytes) -> History:
        """The history of ``key``, made (and the key indexed) if it has none."""
        history = self._histories.get(key)
        if history is None:
            history = History()
            self._histories[key] = history
            bisect.insort(self._keys, key)
        return history

    def keys(self, start: bytes, end: bytes | None) -> list[bytes]:
        """The keys in ``[start, end)`` in order; ``end`` None is unbounded."""
        low = bisect.bisect_left(self._keys, start)
        if end is None:
            return self._keys[low:]
        if end <= start:
            return []
        high = bisect.bisect_left(self._keys, end, lo=low)
        return self._keys[low:high]

    def histories(self, start: bytes, end: bytes | None) -> list[History]:
        """The histories of the keys in ``[start, end)``, in key order."""
        histories = self._histories
        return [histories[key] for key in self.keys(start, end)]

    def keys_after(self, after: bytes | None, count: int) -> list[bytes]:
        """Up to ``count`` keys that sort after ``after`` (from the first key if None)."""
        low = 0 if after is None else bisect.bisect_right(self._keys, after)
        return self._keys[low : low + count]

    def remove(self, keys: list[bytes]) -> None:
        """Forget these keys (each must have an empty history); ``keys`` sorted."""
        if not keys:
            return
        for key in keys:
            history = self._histories.pop(key)
            assert not len(history), key
        low = bisect.bisect_left(self._keys, keys[0])
        high = bisect.bisect_right(self._keys, keys[-1], lo=low)
        gone = set(keys)
        self._keys[low:high] = [key for key in self._keys[low:high] if key not in gone]

    def items(self) -> Iterator[tuple[bytes, History]]:
        """``(key, history)`` in key order (do not change the index while iterating)."""
        histories = self._histories
        return ((key, histories[key]) for key in self._keys)

    @classmethod
    def from_histories(cls, histories: dict[bytes, History]) -> KeyIndex:
        """An index over these histories (each non-empty), sorting the keys once."""
        index = cls()
        index._histories = histories
        index._keys = sorted(histories)
        return index
