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
import itertools
import operator
from collections.abc import Iterator
from typing import Final

from storage.mvcc.model import KeyValue

_MOD_REVISION: Final = operator.attrgetter("mod_revision")


class History(list[KeyValue]):
    """The retained versions of one key, oldest first: the list holds the versions.

    Why a list subclass and no revision lists: a version's main revision is its
    ``mod_revision``, and almost every sub revision is 0 (a sub revision above 0 is the second
    or later write of a transaction), so the list of versions is all a key needs in the
    common case. Per key that is one object of 80 bytes where a history object holding three
    lists took about 310 (issue 13: 23 MiB at 100,000 keys). ``_subs`` lists every version's
    sub revision once one of them is not 0, and is None until then.

    Change it only through ``add`` and ``drop_before``, which keep ``_subs`` in step.
    """

    __slots__ = ("_subs",)

    def __init__(self) -> None:
        super().__init__()
        self._subs: list[int] | None = None

    def add(self, main: int, sub: int, kv: KeyValue) -> None:
        """Add the newest version; revisions only grow."""
        assert kv.mod_revision == main, (kv.mod_revision, main)
        assert not self or (main, sub) > self.last_revision(), (main, sub)
        subs = self._subs
        if subs is None and sub != 0:
            subs = self._subs = [0] * len(self)
        if subs is not None:
            subs.append(sub)
        self.append(kv)

    def last_revision(self) -> tuple[int, int]:
        """``(main, sub)`` of the newest version (the history must not be empty)."""
        return self[-1].mod_revision, 0 if self._subs is None else self._subs[-1]

    def first_at(self, main: int) -> int:
        """The position of the first version written at main revision ``main``, or where
        one would go."""
        return bisect.bisect_left(self, main, key=_MOD_REVISION)

    def at(self, revision: int) -> KeyValue | None:
        """The live version at ``revision``, or None (no version yet, or a tombstone)."""
        position = bisect.bisect_right(self, revision, key=_MOD_REVISION)
        if position == 0:
            return None
        kv = self[position - 1]
        return None if kv.is_tombstone else kv

    def retained_from(self, compact_revision: int) -> int:
        """The position of the first version a compaction at ``compact_revision`` keeps.

        It keeps the last version at or below that revision (unless it is a tombstone) and
        everything above it.
        """
        position = bisect.bisect_right(self, compact_revision, key=_MOD_REVISION)
        if position == 0:
            return 0
        if self[position - 1].is_tombstone:
            return position
        return position - 1

    def drop_before(self, position: int) -> list[tuple[int, int]]:
        """Forget the versions before ``position``; their revisions ``(main, sub)``."""
        dropped = [(main, sub) for main, sub, _ in itertools.islice(self.versions(), position)]
        del self[:position]
        if self._subs is not None:
            del self._subs[:position]
        return dropped

    def versions(self) -> Iterator[tuple[int, int, KeyValue]]:
        """``(main, sub, kv)`` for every retained version, oldest first."""
        if self._subs is None:
            return ((kv.mod_revision, 0, kv) for kv in self)
        return ((kv.mod_revision, sub, kv) for kv, sub in zip(self, self._subs, strict=True))


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


class RevisionKeys:
    """The keys each revision from ``floor`` on wrote, in write order: what a watch that
    starts in the past, or catches up, reads.

    Why a list and bare keys: revisions are consecutive, so a list indexed from ``floor``
    takes one 8-byte slot a revision where a dict took an entry and an int (about 60 bytes),
    and most revisions write one key, kept bare instead of in a 1-tuple (about 50 bytes more):
    some 10 MiB at 100,000 revisions (issue 13). A revision that wrote nothing has None.
    """

    __slots__ = ("_keys", "floor")

    def __init__(self, floor: int) -> None:
        self.floor = floor
        self._keys: list[bytes | tuple[bytes, ...] | None] = []

    def add(self, revision: int, keys: tuple[bytes, ...]) -> None:
        """What ``revision`` wrote; revisions only grow."""
        position = revision - self.floor
        assert position >= len(self._keys), (revision, self.floor, len(self._keys))
        self._keys.extend([None] * (position - len(self._keys)))
        self._keys.append(keys[0] if len(keys) == 1 else keys)

    def get(self, revision: int) -> tuple[bytes, ...] | None:
        """The keys ``revision`` wrote, or None (below ``floor``, or nothing known)."""
        position = revision - self.floor
        if not 0 <= position < len(self._keys):
            return None
        keys = self._keys[position]
        return (keys,) if isinstance(keys, bytes) else keys

    def drop_below(self, revision: int) -> None:
        """Forget the revisions below ``revision``: ``floor`` becomes at least that."""
        if revision > self.floor:
            del self._keys[: revision - self.floor]
            self.floor = revision
