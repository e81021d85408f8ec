"""Per-prefix storage use, read from the MVCC index a page at a time.

For every prefix at a depth (``storage.usage.prefixes``) under a given prefix: the live keys,
their bytes (key and value of the current version), the revisions kept (every retained
version, tombstones included: what compaction would reclaim) and the bytes those versions
hold. The index is read with ``MvccStore.histories_page`` a page at a time, so the caller
can let other work run between pages; keys that share a prefix are contiguous in key order,
so the groups close one after the other and only the ``groups_max`` largest (by bytes kept)
are held, the rest summed into one "other" row: memory is bounded whatever the depth.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Final, Protocol

from storage.mvcc.index import History
from storage.usage.prefixes import prefix_at_depth, prefix_end

PAGE_KEYS: Final = 1000
"""Keys read per page (between two pages the caller lets other work run)."""
GROUPS_MAX: Final = 1000
"""Prefix rows kept in one answer; the rest are summed into ``other``."""


class PagedIndex(Protocol):
    """What the scan reads: ``MvccStore.histories_page``."""

    def histories_page(self, start: bytes, end: bytes | None, count: int) -> list[History]:
        """Up to ``count`` histories of keys in ``[start, end)``, in key order."""
        ...


@dataclass(slots=True)
class PrefixUse:
    """The storage use of one prefix (or of the sum of several)."""

    prefix: bytes
    keys: int = 0
    bytes: int = 0
    revisions: int = 0
    history_bytes: int = 0

    def add_history(self, history: History) -> None:
        """Count one key's retained versions."""
        latest = history[-1]
        if not latest.is_tombstone:
            self.keys += 1
            self.bytes += len(latest.key) + len(latest.value)
        self.revisions += len(history)
        self.history_bytes += sum(len(kv.key) + len(kv.value) for kv in history)

    def add(self, other: PrefixUse) -> None:
        """Sum another row into this one."""
        self.keys += other.keys
        self.bytes += other.bytes
        self.revisions += other.revisions
        self.history_bytes += other.history_bytes

    def to_json(self) -> dict[str, object]:
        """A JSON object (the prefix as text, bytes that are not UTF-8 as surrogates)."""
        return {
            "prefix": self.prefix.decode("utf-8", "surrogateescape"),
            "keys": self.keys,
            "bytes": self.bytes,
            "revisions": self.revisions,
            "history_bytes": self.history_bytes,
        }


@dataclass(slots=True)
class UsageScan:
    """One scan of the keys under ``prefix``, grouped at ``depth``; call :meth:`step` until
    it returns True, then read :meth:`rows`, ``other`` and ``total``."""

    prefix: bytes
    depth: int
    groups_max: int = GROUPS_MAX
    total: PrefixUse = field(init=False)
    other: PrefixUse = field(init=False)
    keys_scanned: int = 0
    _cursor: bytes = b""
    _end: bytes | None = None
    _group: PrefixUse | None = None
    _kept: list[tuple[int, bytes, PrefixUse]] = field(default_factory=list)
    _done: bool = False

    def __post_init__(self) -> None:
        assert self.depth >= 0, self.depth
        assert self.groups_max > 0, self.groups_max
        self.total = PrefixUse(self.prefix)
        self.other = PrefixUse(b"(other)")
        self._cursor = self.prefix
        self._end = prefix_end(self.prefix) if self.prefix else None

    def step(self, index: PagedIndex, page_keys: int = PAGE_KEYS) -> bool:
        """Read one page; True once every key has been read."""
        if self._done:
            return True
        page = index.histories_page(self._cursor, self._end, page_keys)
        for history in page:
            if not history:  # emptied by a compaction since the page was taken
                continue
            self._count(history)
        self.keys_scanned += len(page)
        if len(page) < page_keys:
            self._close_group()
            self._done = True
        else:
            self._cursor = page[-1][-1].key + b"\0"
        return self._done

    def _count(self, history: History) -> None:
        key = history[-1].key
        group_prefix = prefix_at_depth(key, self.depth) if self.depth else self.prefix
        if self._group is None or self._group.prefix != group_prefix:
            self._close_group()
            self._group = PrefixUse(group_prefix)
        self._group.add_history(history)
        self.total.add_history(history)

    def _close_group(self) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        entry = (group.history_bytes, group.prefix, group)
        if len(self._kept) < self.groups_max:
            heapq.heappush(self._kept, entry)
            return
        smallest = heapq.heappushpop(self._kept, entry)
        self.other.add(smallest[2])

    def rows(self) -> list[PrefixUse]:
        """The groups kept, in prefix order."""
        assert self._done
        return sorted((group for _, _, group in self._kept), key=lambda group: group.prefix)
