"""The v2 key tree (etcd 3.4's ``v2store``) as a pure, deterministic state machine.

Theory of operation
-------------------
The tree holds directories and keys under the root ``/``. Every successful write adds one to
the store index and produces one ``Event`` whose index is the new store index; reads and
failed writes leave the index alone, and every error carries the index at the time. The
operations follow etcd's ``store.go`` (``Get``, ``Set``, ``Create``, ``Update``,
``CompareAndSwap``, ``Delete``, ``CompareAndDelete``, ``DeleteExpiredKeys``) and ``apply``
dispatches a ``V2Request`` the way etcd's ``applyV2Request`` does.

No clock is read. A write carries ``now_ns``, the time of its Raft entry (the proposer's
clock), used only to render the remaining ``ttl`` of the nodes in its event; expiration
times are absolute; ``delete_expired(now_ns)`` (a SYNC entry) removes what expired at or
before ``now_ns``. So every member gives the same result for the same entries.

Choices where etcd is arbitrary or unsafe:

- listings are always sorted by key (etcd's unsorted order is Go's random map order);
- nested paths deeper than ``PATH_DEPTH_MAX`` segments are refused on write (209), so that
  rendering a subtree never exhausts Python's recursion limit;
- the stats count every failure as a failure. etcd 3.4 returns some errors without setting the
  error its deferred counter looks at, so it counts as successes: update, compare-and-swap and
  delete of the root, an update giving a directory a value, and compare-and-delete failures
  other than a missing key (checked live: a random differential run matched etcd's replies
  exactly but not these counters).

Quirks of etcd kept on purpose (checked live on 3.4.23): an update of a directory's TTL
reports the new index in its event but leaves the directory's ``modifiedIndex`` as it was; a
``set`` with ``refresh`` re-creates the key (new ``createdIndex``); a failed create whose path
runs into a key counts as a failed set too; a compare-and-delete of the root fails with 102
and no cause.

The system namespace: etcd keeps its own bookkeeping in the same store as the keys, beside
them (``/1`` holds the keys; v2 auth keeps users, roles and its enabled flag under ``/2``),
so those writes go through Raft and move the one store index. Here the keys tree is the
root, and a second tree, the system namespace, holds the rest of etcd's root: a request
whose path starts with ``SYSTEM_PREFIX`` (``system_path("/2/users/alice")``) works on that
tree with the same operations and the same index. A path from ``/v2/keys`` is always
cleaned to start with ``/``, so no client request reaches it. A system write's event goes
into the watch history (which stays contiguous) as a refresh, so it is never delivered; its
nodes never expire; system operations are left out of ``/v2/stats/store`` (etcd counts its
auth lookups there, so a member with auth checks enabled shows more gets in etcd).

Persistence: ``snapshot()``/``restore()`` carry the whole state (tree, index and watch
history; not the per-member stats nor the watchers) for Raft snapshots; ``take_changes()``
lists the key-value records changed since its last call, for a write batch under
``KV_PREFIX``, and ``V2Store.load(kv)`` rebuilds the store from those records.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Final, Protocol

import cbor2

from storage.kv import prefix_end
from storage.sealed import seal, unseal
from storage.v2store.model import (
    INT64_MAX,
    UINT64_MAX,
    Action,
    ErrorCode,
    Event,
    NodeView,
    V2Error,
    V2Request,
    _loads,
)
from storage.v2store.watch import (
    HISTORY_EVENTS_MAX,
    WATCHER_BUFFER_EVENTS,
    Watcher,
    WatcherHub,
)

MIN_EXPIRATION_NS: Final = 946_684_800 * 1_000_000_000
"""2000-01-01T00:00:00Z: create and set treat an earlier expiration as none (etcd's
``minExpireTime``)."""

PATH_DEPTH_MAX: Final = 256
"""Segments a written path may have."""

SNAPSHOT_FORMAT: Final = 1
KV_PREFIX: Final = b"v2/"
KV_META_KEY: Final = KV_PREFIX + b"meta"
KV_NODE_PREFIX: Final = KV_PREFIX + b"n"
KV_HISTORY_PREFIX: Final = KV_PREFIX + b"h"
KV_SYSTEM_PREFIX: Final = KV_PREFIX + b"s"
"""The system namespace's nodes: ``KV_SYSTEM_PREFIX`` + path."""

SYSTEM_PREFIX: Final = "system:"
"""Marks a path of the system namespace (see the module docstring)."""


def system_path(path: str) -> str:
    """The store path of ``path`` (etcd's full path, e.g. ``/2/enabled``) in the system
    namespace."""
    return SYSTEM_PREFIX + clean_path(path)


class ReadableKV(Protocol):
    """What ``V2Store.load`` reads: a prefix scan in key order."""

    def scan(
        self, start: bytes, end: bytes, *, bulk: bool = False
    ) -> Iterable[tuple[bytes, bytes]]: ...


def clean_path(path: str) -> str:
    """Go's ``path.Clean(path.Join("/", path))``: rooted, no ``.``/``..``/empty segments."""
    parts: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        parts.append(segment)
    return "/" + "/".join(parts)


def split_path(path: str) -> tuple[str, str]:
    """A clean path's parent directory and last segment: ``/a/b`` -> (``/a``, ``b``)."""
    parent, _, name = path.rpartition("/")
    return (parent or "/"), name


def _join(parent: str, name: str) -> str:
    return parent + name if parent == "/" else parent + "/" + name


def _cause(path: str) -> str:
    """A path as an error cause; etcd's root is ``/1`` there, which it trims to nothing."""
    return "" if path == "/" else path


@dataclass(slots=True)
class StoreStats:
    """The counters of ``/v2/stats/store``, in etcd's field order (``watchers`` comes from
    the hub)."""

    gets_success: int = 0
    gets_fail: int = 0
    sets_success: int = 0
    sets_fail: int = 0
    delete_success: int = 0
    delete_fail: int = 0
    update_success: int = 0
    update_fail: int = 0
    create_success: int = 0
    create_fail: int = 0
    compare_and_swap_success: int = 0
    compare_and_swap_fail: int = 0
    compare_and_delete_success: int = 0
    compare_and_delete_fail: int = 0
    expire_count: int = 0

    def to_json(self, watchers: int) -> dict[str, int]:
        """The JSON object of ``/v2/stats/store``."""
        out: dict[str, int] = {}
        for field in fields(self):
            out[_camel(field.name)] = getattr(self, field.name)
        out["watchers"] = watchers
        return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


class _Node:
    """A node of the tree: a key (``children is None``) or a directory."""

    __slots__ = ("children", "created_index", "expiration_ns", "modified_index", "path", "value")

    def __init__(
        self, path: str, index: int, *, dir: bool, value: str = "", expiration_ns: int = 0
    ) -> None:
        self.path = path
        self.created_index = index
        self.modified_index = index
        self.expiration_ns = expiration_ns  # 0: permanent
        self.value = value
        self.children: dict[str, _Node] | None = {} if dir else None

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    @property
    def name(self) -> str:
        return split_path(self.path)[1]

    def view(self, *, list_children: bool = False, recursive: bool = False) -> NodeView:
        """The node as clients see it; ``list_children`` lists a directory one level deep,
        ``recursive`` all the way down. Hidden children are left out; children are sorted."""
        nodes: tuple[NodeView, ...] | None = None
        if self.children is not None and list_children:
            nodes = tuple(
                self.children[name].view(list_children=recursive, recursive=recursive)
                for name in sorted(self.children)
                if not name.startswith("_")
            )
        return NodeView(
            key=self.path,
            value=None if self.is_dir else self.value,
            dir=self.is_dir,
            expiration_ns=self.expiration_ns or None,
            modified_index=self.modified_index,
            created_index=self.created_index,
            nodes=nodes,
        )

    def walk(self) -> Iterable[_Node]:
        """This node and everything under it, parents first, children sorted."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            if node.children:
                stack.extend(node.children[name] for name in sorted(node.children, reverse=True))


class V2Store:
    """etcd's v2 store: the key tree, its index, TTLs, stats and the watcher hub.

    Args:
        history_events_max: events kept for watches that start in the past.
        watcher_buffer_events: events buffered per watcher.
        track_changes: record what changes for ``take_changes``. A store that persists must
            call ``take_changes`` after each applied batch (the record grows until then); a
            store that never persists (tests, a simulation without disks) passes False.
    """

    def __init__(
        self,
        *,
        history_events_max: int = HISTORY_EVENTS_MAX,
        watcher_buffer_events: int = WATCHER_BUFFER_EVENTS,
        track_changes: bool = True,
    ) -> None:
        self._track_changes = track_changes
        self._root = _Node("/", 0, dir=True)
        self._system_root = _Node("/", 0, dir=True)
        self._in_system = False  # True while an operation works on the system namespace
        self._index = 0
        self.stats = StoreStats()
        self.hub = WatcherHub(history_events_max, watcher_buffer_events)
        # path -> expiration of every node with a TTL; the heap may hold stale entries
        self._ttl: dict[str, int] = {}
        self._ttl_heap: list[tuple[int, str]] = []
        # write-through: what changed since the last take_changes()
        self._dirty_paths: dict[str, None] = {}
        self._dirty_system_paths: dict[str, None] = {}
        self._dirty_records: dict[bytes, bytes | None] = {}
        self._index_persisted = 0

    # ---------------------------------------------------------------- reads

    @property
    def index(self) -> int:
        """The store index: the index of the last successful write (``X-Etcd-Index``)."""
        return self._index

    def get(
        self, path: str, *, recursive: bool = False, sorted: bool = False, now_ns: int
    ) -> Event:
        """Read a node; a directory lists its children (its whole subtree if ``recursive``).

        Children always come sorted by key; ``sorted`` is accepted for etcd's API.

        Raises:
            V2Error: 100 (a missing node; the cause is the first missing path), 104 (a path
                through a key).
        """
        del sorted
        if path.startswith(SYSTEM_PREFIX):
            with self._system():
                return self.get(path[len(SYSTEM_PREFIX) :], recursive=recursive, now_ns=now_ns)
        path = clean_path(path)
        try:
            node = self._get_node(path)
        except V2Error:
            self.stats.gets_fail += 1
            raise
        self.stats.gets_success += 1
        view = node.view(list_children=True, recursive=recursive)
        return Event(Action.GET, view, None, etcd_index=self._index, time_ns=now_ns)

    def watch(
        self, path: str, *, recursive: bool = False, stream: bool = False, since_index: int = 0
    ) -> Watcher:
        """Watch a key (or a subtree) for the first event at or after ``since_index``
        (0: the next write). See ``watch.py`` for what a watcher receives.

        Raises:
            V2Error: 401 when ``since_index`` is older than the history kept.
        """
        since_index = since_index or self._index + 1
        return self.hub.watch(clean_path(path), recursive, stream, since_index, self._index)

    def stats_json(self) -> dict[str, int]:
        """The JSON object of ``/v2/stats/store``."""
        return self.stats.to_json(self.hub.count)

    def has_ttl_keys(self) -> bool:
        """True when some node has a TTL (the leader then proposes SYNC now and then)."""
        return bool(self._ttl)

    def next_expiration_ns(self) -> int | None:
        """The earliest expiration time of a node, if any node has a TTL."""
        self._drop_stale_ttl_entries()
        return self._ttl_heap[0][0] if self._ttl_heap else None

    # ---------------------------------------------------------------- writes

    def apply(self, request: V2Request) -> Event | None:
        """Apply a committed request as etcd's ``applyV2Request`` does.

        Returns:
            The event of the operation; None for SYNC (its expire events go to watchers).

        Raises:
            V2Error: the operation failed; the store is unchanged.
        """
        r = request
        if r.path.startswith(SYSTEM_PREFIX) and r.method != "SYNC":
            path = r.path[len(SYSTEM_PREFIX) :]
            with self._system():  # nothing there expires
                return self.apply(dataclasses.replace(r, path=path, expiration_ns=0))
        now_ns = r.time_ns
        match r.method:
            case "POST":
                return self.create(
                    r.path,
                    dir=r.dir,
                    value=r.value,
                    unique=True,
                    expiration_ns=r.expiration_ns,
                    now_ns=now_ns,
                )
            case "PUT":
                return self._apply_put(r)
            case "DELETE":
                if r.prev_index > 0 or r.prev_value != "":
                    return self.compare_and_delete(
                        r.path, prev_value=r.prev_value, prev_index=r.prev_index, now_ns=now_ns
                    )
                return self.delete(r.path, dir=r.dir, recursive=r.recursive, now_ns=now_ns)
            case "QGET" | "GET":
                return self.get(r.path, recursive=r.recursive, sorted=r.sorted, now_ns=now_ns)
            case "SYNC":
                self.delete_expired(now_ns)
                return None
            case _:
                raise AssertionError(f"unknown v2 method {r.method!r}")

    def _apply_put(self, r: V2Request) -> Event:
        now_ns = r.time_ns
        compare = r.prev_index > 0 or r.prev_value != ""
        if r.prev_exist is False:
            return self.create(
                r.path, dir=r.dir, value=r.value, expiration_ns=r.expiration_ns, now_ns=now_ns
            )
        if compare:
            return self.compare_and_swap(
                r.path,
                prev_value=r.prev_value,
                prev_index=r.prev_index,
                value=r.value,
                expiration_ns=r.expiration_ns,
                refresh=r.refresh,
                now_ns=now_ns,
            )
        if r.prev_exist is True:
            return self.update(
                r.path,
                value=r.value,
                expiration_ns=r.expiration_ns,
                refresh=r.refresh,
                now_ns=now_ns,
            )
        return self.set(
            r.path,
            dir=r.dir,
            value=r.value,
            expiration_ns=r.expiration_ns,
            refresh=r.refresh,
            now_ns=now_ns,
        )

    def set(
        self,
        path: str,
        *,
        dir: bool = False,
        value: str = "",
        expiration_ns: int = 0,
        refresh: bool = False,
        now_ns: int,
    ) -> Event:
        """Create or replace a key (action ``set``); a replaced key is re-created: both its
        indexes become the new index and ``prev_node`` holds the old one.

        ``refresh`` keeps the old value, sets the new expiration and notifies no watcher.

        Raises:
            V2Error: 102 (the node is a directory), 104, 107 (root), 100 (refresh of a
                missing key), 209 (path too deep).
        """
        path = clean_path(path)
        try:
            previous: _Node | None = self._get_node(path)
        except V2Error as error:
            if error.code != ErrorCode.KEY_NOT_FOUND or refresh:
                self.stats.sets_fail += 1
                raise
            previous = None
        prev_view = None if previous is None else previous.view()
        if refresh:
            assert previous is not None
            value = previous.value
        try:
            event = self._create(
                path,
                dir=dir,
                value=value,
                replace=True,
                expiration_ns=expiration_ns,
                action=Action.SET,
                now_ns=now_ns,
            )
        except V2Error:
            self.stats.sets_fail += 1
            raise
        event = Event(
            Action.SET,
            event.node,
            prev_view,
            etcd_index=self._index,
            time_ns=now_ns,
            refresh=refresh,
        )
        self._publish(event)
        self.stats.sets_success += 1
        return event

    def create(
        self,
        path: str,
        *,
        dir: bool = False,
        value: str = "",
        unique: bool = False,
        expiration_ns: int = 0,
        now_ns: int,
    ) -> Event:
        """Create a node that must not exist (action ``create``); missing directories on the
        way are created. ``unique`` creates ``<path>/%020d`` of the new index (POST).

        Raises:
            V2Error: 105 (exists), 104, 107 (root), 209 (path too deep).
        """
        try:
            event = self._create(
                path,
                dir=dir,
                value=value,
                unique=unique,
                replace=False,
                expiration_ns=expiration_ns,
                action=Action.CREATE,
                now_ns=now_ns,
            )
        except V2Error:
            self.stats.create_fail += 1
            raise
        self._publish(event)
        self.stats.create_success += 1
        return event

    def update(
        self,
        path: str,
        *,
        value: str = "",
        expiration_ns: int = 0,
        refresh: bool = False,
        now_ns: int,
    ) -> Event:
        """Change an existing node (action ``update``): a key's value and TTL, a directory's
        TTL. The created index stays. Without an expiration the node becomes permanent.

        Raises:
            V2Error: 100 (missing), 102 (a value for a directory), 104, 107 (root).
        """
        path = clean_path(path)
        try:
            event = self._update(path, value, expiration_ns, refresh, now_ns)
        except V2Error:
            self.stats.update_fail += 1
            raise
        self.stats.update_success += 1
        return event

    def _update(
        self, path: str, value: str, expiration_ns: int, refresh: bool, now_ns: int
    ) -> Event:
        if path == "/":
            raise V2Error(ErrorCode.ROOT_READ_ONLY, "/", self._index)
        node = self._get_node(path)
        if node.is_dir and value:
            raise V2Error(ErrorCode.NOT_FILE, path, self._index)
        if refresh:
            value = node.value
        prev_view = node.view()
        next_index = self._index + 1
        if not node.is_dir:  # etcd leaves a directory's modifiedIndex alone
            node.value = value
            node.modified_index = next_index
        self._set_expiration(node, expiration_ns)
        self._index = next_index
        view = node.view()
        if node.is_dir:
            view = NodeView(
                key=view.key,
                value=None,
                dir=True,
                expiration_ns=view.expiration_ns,
                modified_index=next_index,
                created_index=view.created_index,
            )
        event = Event(
            Action.UPDATE, view, prev_view, etcd_index=next_index, time_ns=now_ns, refresh=refresh
        )
        self._publish(event)
        return event

    def compare_and_swap(
        self,
        path: str,
        *,
        prev_value: str = "",
        prev_index: int = 0,
        value: str = "",
        expiration_ns: int = 0,
        refresh: bool = False,
        now_ns: int,
    ) -> Event:
        """Change a key if its value is ``prev_value`` and its modified index ``prev_index``
        (each only when given: "" and 0 mean not given). Action ``compareAndSwap``.

        Raises:
            V2Error: 101 (cause ``[prev != current]``), 100, 102 (a directory), 104, 107.
        """
        path = clean_path(path)
        try:
            event = self._compare_and_swap(
                path,
                prev_value=prev_value,
                prev_index=prev_index,
                value=value,
                expiration_ns=expiration_ns,
                refresh=refresh,
                now_ns=now_ns,
            )
        except V2Error:
            self.stats.compare_and_swap_fail += 1
            raise
        self.stats.compare_and_swap_success += 1
        return event

    def _compare_and_swap(
        self,
        path: str,
        *,
        prev_value: str,
        prev_index: int,
        value: str,
        expiration_ns: int,
        refresh: bool,
        now_ns: int,
    ) -> Event:
        if path == "/":
            raise V2Error(ErrorCode.ROOT_READ_ONLY, "/", self._index)
        node = self._get_node(path)
        if node.is_dir:
            raise V2Error(ErrorCode.NOT_FILE, path, self._index)
        self._compare(node, prev_value, prev_index)
        if refresh:
            value = node.value
        prev_view = node.view()
        self._index += 1
        node.value = value
        node.modified_index = self._index
        self._set_expiration(node, expiration_ns)
        event = Event(
            Action.COMPARE_AND_SWAP,
            node.view(),
            prev_view,
            etcd_index=self._index,
            time_ns=now_ns,
            refresh=refresh,
        )
        self._publish(event)
        return event

    def delete(
        self, path: str, *, dir: bool = False, recursive: bool = False, now_ns: int
    ) -> Event:
        """Delete a key, an empty directory (``dir``) or a subtree (``recursive``).

        Raises:
            V2Error: 100, 102 (a directory without ``dir``), 108 (not empty), 104, 107.
        """
        path = clean_path(path)
        try:
            event = self._delete(path, dir or recursive, recursive, now_ns)
        except V2Error:
            self.stats.delete_fail += 1
            raise
        self.stats.delete_success += 1
        return event

    def _delete(self, path: str, dir: bool, recursive: bool, now_ns: int) -> Event:
        if path == "/":
            raise V2Error(ErrorCode.ROOT_READ_ONLY, "/", self._index)
        node = self._get_node(path)
        if node.children is not None:
            if not dir:
                raise V2Error(ErrorCode.NOT_FILE, path, self._index)
            if node.children and not recursive:
                raise V2Error(ErrorCode.DIR_NOT_EMPTY, path, self._index)
        return self._remove_with_event(node, Action.DELETE, now_ns)

    def compare_and_delete(
        self, path: str, *, prev_value: str = "", prev_index: int = 0, now_ns: int
    ) -> Event:
        """Delete a key if it matches (see ``compare_and_swap``). Action
        ``compareAndDelete``.

        Raises:
            V2Error: 101, 100, 102 (a directory), 104.
        """
        path = clean_path(path)
        try:
            node = self._get_node(path)
            if node.is_dir:
                raise V2Error(ErrorCode.NOT_FILE, _cause(path), self._index)
            self._compare(node, prev_value, prev_index)
        except V2Error:
            self.stats.compare_and_delete_fail += 1
            raise
        event = self._remove_with_event(node, Action.COMPARE_AND_DELETE, now_ns)
        self.stats.compare_and_delete_success += 1
        return event

    def delete_expired(self, now_ns: int) -> list[Event]:
        """Remove every node whose expiration is at or before ``now_ns`` (a SYNC entry), in
        order of expiration then path, one ``expire`` event each.

        Returns:
            The expire events, oldest first.
        """
        events: list[Event] = []
        while True:
            self._drop_stale_ttl_entries()
            if not self._ttl_heap or self._ttl_heap[0][0] > now_ns:
                return events
            _, path = heapq.heappop(self._ttl_heap)
            node = self._find(path)
            assert node is not None, path
            events.append(self._remove_with_event(node, Action.EXPIRE, now_ns))
            self.stats.expire_count += 1

    # ---------------------------------------------------------------- internals

    @contextmanager
    def _system(self) -> Iterator[None]:
        """Work on the system namespace: its tree, no stats, no TTLs, hidden events."""
        assert not self._in_system
        stats = self.stats
        self._in_system, self.stats = True, StoreStats()
        try:
            yield
        finally:
            self._in_system, self.stats = False, stats

    def _tree(self) -> _Node:
        return self._system_root if self._in_system else self._root

    def _get_node(self, path: str) -> _Node:
        """The node at a clean path (etcd's ``internalGet``)."""
        node = self._tree()
        if path == "/":
            return node
        for name in path[1:].split("/"):
            if node.children is None:
                raise V2Error(ErrorCode.NOT_DIR, node.path, self._index)
            child = node.children.get(name)
            if child is None:
                raise V2Error(ErrorCode.KEY_NOT_FOUND, _join(node.path, name), self._index)
            node = child
        return node

    def _find(self, path: str) -> _Node | None:
        try:
            return self._get_node(path)
        except V2Error:
            return None

    def _create(
        self,
        path: str,
        *,
        dir: bool,
        value: str,
        unique: bool = False,
        replace: bool,
        expiration_ns: int,
        action: Action,
        now_ns: int,
    ) -> Event:
        """etcd's ``internalCreate``: the node is added, the index moves; the caller
        publishes the event."""
        next_index = self._index + 1
        if unique:
            path = f"{path}/{next_index:020d}"
        path = clean_path(path)
        if path == "/":
            raise V2Error(ErrorCode.ROOT_READ_ONLY, "/", self._index)
        if path.count("/") > PATH_DEPTH_MAX:
            cause = f"the key has more than {PATH_DEPTH_MAX} segments"
            raise V2Error(ErrorCode.INVALID_FIELD, cause, self._index)
        if expiration_ns < MIN_EXPIRATION_NS:
            expiration_ns = 0
        dir_path, name = split_path(path)
        try:
            parent = self._make_dirs(dir_path, next_index)
        except V2Error:
            self.stats.sets_fail += 1  # etcd counts this as a failed set, whatever the op
            raise
        assert parent.children is not None
        prev_view = None
        existing = parent.children.get(name)
        if existing is not None:
            if not replace:
                raise V2Error(ErrorCode.NODE_EXIST, path, self._index)
            if existing.is_dir:
                raise V2Error(ErrorCode.NOT_FILE, path, self._index)
            prev_view = existing.view()
            self._forget(existing)
        node = _Node(path, next_index, dir=dir, value="" if dir else value)
        parent.children[name] = node
        self._set_expiration(node, expiration_ns)
        self._mark_path(path)
        self._index = next_index
        return Event(action, node.view(), prev_view, etcd_index=next_index, time_ns=now_ns)

    def _make_dirs(self, dir_path: str, index: int) -> _Node:
        """The directory at ``dir_path``, creating the missing ones (etcd's ``checkDir``)."""
        node = self._tree()
        if dir_path == "/":
            return node
        names = dir_path[1:].split("/")
        depth = 0
        while depth < len(names):
            assert node.children is not None
            child = node.children.get(names[depth])
            if child is None:
                break
            if not child.is_dir:
                raise V2Error(ErrorCode.NOT_DIR, child.path, self._index)
            node = child
            depth += 1
        for name in names[depth:]:
            assert node.children is not None
            child = _Node(_join(node.path, name), index, dir=True)
            node.children[name] = child
            self._mark_path(child.path)
            node = child
        return node

    def _compare(self, node: _Node, prev_value: str, prev_index: int) -> None:
        index_ok = prev_index in (0, node.modified_index)  # 0: not given
        value_ok = prev_value in ("", node.value)  # "": not given
        if index_ok and value_ok:
            return
        value_cause = f"[{prev_value} != {node.value}]"
        index_cause = f"[{prev_index} != {node.modified_index}]"
        if index_ok:
            cause = value_cause
        elif value_ok:
            cause = index_cause
        else:
            cause = f"{value_cause} {index_cause}"
        raise V2Error(ErrorCode.TEST_FAILED, cause, self._index)

    def _remove_with_event(self, node: _Node, action: Action, now_ns: int) -> Event:
        """Remove ``node`` and its subtree as one write; notify with the removed paths."""
        prev_view = node.view()
        self._index += 1
        view = NodeView(
            key=node.path,
            value=None,
            dir=node.is_dir,
            expiration_ns=None,
            modified_index=self._index,
            created_index=node.created_index,
        )
        event = Event(action, view, prev_view, etcd_index=self._index, time_ns=now_ns)
        removed = self._forget(node)
        self._publish(event, removed)
        return event

    def _forget(self, node: _Node) -> list[str]:
        """Detach ``node`` from its parent and drop its subtree's TTLs; the removed paths."""
        parent = self._get_node(split_path(node.path)[0])
        assert parent.children is not None
        assert parent.children.get(node.name) is node
        del parent.children[node.name]
        removed = [each.path for each in node.walk()]
        for path in removed:
            if not self._in_system:
                self._ttl.pop(path, None)
            self._mark_path(path)
        return removed

    def _set_expiration(self, node: _Node, expiration_ns: int) -> None:
        node.expiration_ns = expiration_ns
        self._mark_path(node.path)
        if self._in_system:
            assert expiration_ns == 0, "system nodes never expire"
            return
        if expiration_ns == 0:
            self._ttl.pop(node.path, None)
            return
        self._ttl[node.path] = expiration_ns
        heapq.heappush(self._ttl_heap, (expiration_ns, node.path))
        if len(self._ttl_heap) > 2 * len(self._ttl) + 64:
            self._rebuild_ttl_heap()

    def _rebuild_ttl_heap(self) -> None:
        self._ttl_heap = [(expiration, path) for path, expiration in self._ttl.items()]
        heapq.heapify(self._ttl_heap)

    def _drop_stale_ttl_entries(self) -> None:
        heap = self._ttl_heap
        while heap and self._ttl.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)

    def _mark_path(self, path: str) -> None:
        if self._track_changes:
            if self._in_system:
                self._dirty_system_paths[path] = None
            else:
                self._dirty_paths[path] = None

    def _mark_event(self, index: int, event: Event | None) -> None:
        if self._track_changes:
            record = None if event is None else _encode_event(event)
            self._dirty_records[_history_key(index)] = record

    def _publish(self, event: Event, removed: list[str] | None = None) -> None:
        """Record the event (watchers unless it is a refresh) and its history record."""
        if self._in_system:  # in the history for its index, never delivered
            event = dataclasses.replace(event, refresh=True)
        if event.refresh:
            evicted = self.hub.add(event)
        else:
            evicted = self.hub.notify(event, removed or ())
        self._mark_event(event.index, event)
        if evicted is not None:
            self._mark_event(evicted.index, None)

    # ---------------------------------------------------------------- persistence

    def snapshot(self) -> bytes:
        """The whole state as deterministic CBOR: index, nodes (parents first, sorted), the
        watch history and, when there are any, the system namespace's nodes. Stats and
        watchers are per member and not included."""
        nodes = [_node_record(node, with_path=True) for node in self._root.walk()][1:]
        history = [_event_record(event) for event in self.hub.history]
        state = [SNAPSHOT_FORMAT, self._index, nodes, history]
        system = [_node_record(node, with_path=True) for node in self._system_root.walk()][1:]
        if system:
            state.append(system)
        return cbor2.dumps(state, canonical=True)

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a ``snapshot()``, keeping the stats and the watchers
        (which catch up on the restored history, or are closed if they missed events).

        The next ``take_changes()`` rewrites every record, removing those of the old state.

        Raises:
            ValueError: the snapshot is malformed; the store is unchanged.
        """
        fields_ = _loads(data)
        ok = type(fields_) is list and len(fields_) in (4, 5) and fields_[0] == SNAPSHOT_FORMAT
        if not ok:
            raise ValueError("v2 snapshot: expected [format, index, nodes, history, system?]")
        _, index, node_records, history_records, *system_records = fields_
        _require(_is_uint(index), "v2 snapshot: bad index")
        _require(type(history_records) is list, "v2 snapshot: bad history")
        root = _snapshot_tree(node_records)
        system_root = _snapshot_tree(system_records[0] if system_records else [])
        events = [_decode_event(record) for record in history_records]
        _check_history(events, index)
        old_paths = [node.path for node in self._root.walk()]
        old_system_paths = [node.path for node in self._system_root.walk()]
        old_history = [event.index for event in self.hub.history]
        self._install(root, index, system_root)
        for path in old_paths:
            self._mark_path(path)
        for node in root.walk():
            self._mark_path(node.path)
        if self._track_changes:
            for path in old_system_paths:
                self._dirty_system_paths[path] = None
            for node in system_root.walk():
                self._dirty_system_paths[node.path] = None
        for old_index in old_history:
            self._mark_event(old_index, None)
        for event in events:
            self._mark_event(event.index, event)
        self._index_persisted = -1
        self.hub.replace_history(events)

    def reload(self, kv: ReadableKV) -> None:
        """Replace the whole state with the records in ``kv`` (written there by a snapshot
        install), keeping the stats and the watchers (which catch up on the loaded history,
        or are closed if they missed events). Nothing is left to ``take_changes``.

        Raises:
            ValueError: the records are malformed; the store is unchanged.
        """
        loaded = V2Store.load(
            kv,
            history_events_max=self.hub.history.capacity,
            watcher_buffer_events=self.hub.watcher_buffer_events,
        )
        self._install(loaded._root, loaded._index, loaded._system_root)
        self._dirty_paths.clear()
        self._dirty_system_paths.clear()
        self._dirty_records.clear()
        self._index_persisted = loaded._index_persisted
        self.hub.replace_history(list(loaded.hub.history))

    def _install(self, root: _Node, index: int, system_root: _Node) -> None:
        self._root = root
        self._system_root = system_root
        self._index = index
        self._ttl = {node.path: node.expiration_ns for node in root.walk() if node.expiration_ns}
        self._rebuild_ttl_heap()

    def take_changes(self) -> list[tuple[bytes, bytes | None]]:
        """The records changed since the last call, sorted by key: ``(key, value)`` to put,
        ``(key, None)`` to delete, all under ``KV_PREFIX``. Writing them (in one batch with
        the applied index) keeps the records equal to the store for ``load``."""
        assert self._track_changes, "this store does not track changes"
        changes = dict(self._dirty_records)
        for path in self._dirty_paths:
            if path == "/":
                continue
            node = self._find(path)
            key = _node_key(path)
            changes[key] = None if node is None else _encode(_node_record(node))
        for path in self._dirty_system_paths:
            if path == "/":
                continue
            with self._system():
                node = self._find(path)
            key = KV_SYSTEM_PREFIX + path.encode()
            changes[key] = None if node is None else _encode(_node_record(node))
        if self._index != self._index_persisted:
            changes[KV_META_KEY] = _encode([SNAPSHOT_FORMAT, self._index])
            self._index_persisted = self._index
        self._dirty_paths.clear()
        self._dirty_system_paths.clear()
        self._dirty_records.clear()
        # Sealed (CRC-32, version) like every other record, so a value damaged on disk or on
        # its way back is refused at ``load`` instead of served.
        return sorted(
            (key, None if value is None else seal(value)) for key, value in changes.items()
        )

    @classmethod
    def load(
        cls,
        kv: ReadableKV,
        *,
        history_events_max: int = HISTORY_EVENTS_MAX,
        watcher_buffer_events: int = WATCHER_BUFFER_EVENTS,
    ) -> V2Store:
        """Rebuild a store from the records ``take_changes`` produced.

        Raises:
            StorageCorrupted: a record fails its seal (checksum, version).
            ValueError: the records are malformed or inconsistent.
        """
        store = cls(
            history_events_max=history_events_max, watcher_buffer_events=watcher_buffer_events
        )
        index = 0
        nodes: list[tuple[str, _Node]] = []
        system_nodes: list[tuple[str, _Node]] = []
        events: list[Event] = []
        for key, sealed in kv.scan(KV_PREFIX, prefix_end(KV_PREFIX), bulk=True):
            value = bytes(unseal(key, sealed))
            if key == KV_META_KEY:
                meta = _loads(value)
                ok = type(meta) is list and len(meta) == 2 and meta[0] == SNAPSHOT_FORMAT
                _require(ok and _is_uint(meta[1]), "v2 records: bad meta")
                index = meta[1]
            elif key.startswith(KV_NODE_PREFIX):
                path = _decode_utf8(key[len(KV_NODE_PREFIX) :])
                nodes.append((path, _decode_node(_loads(value), path)))
            elif key.startswith(KV_HISTORY_PREFIX):
                events.append(_decode_event(_loads(value)))
            elif key.startswith(KV_SYSTEM_PREFIX):
                path = _decode_utf8(key[len(KV_SYSTEM_PREFIX) :])
                system_nodes.append((path, _decode_node(_loads(value), path)))
            else:
                raise ValueError(f"v2 records: unknown key {key!r}")
        root = _tree_of(nodes)
        system_root = _tree_of(system_nodes)
        events.sort(key=lambda event: event.index)
        _check_history(events, index)
        store._install(root, index, system_root)
        store.hub.history.replace(events)
        store._index_persisted = index
        for event in events[: max(0, len(events) - store.hub.history.capacity)]:
            store._mark_event(event.index, None)  # a smaller history now
        return store


# -------------------------------------------------------------------- encodings


def _encode(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def _node_key(path: str) -> bytes:
    return KV_NODE_PREFIX + path.encode()


def _history_key(index: int) -> bytes:
    return KV_HISTORY_PREFIX + struct.pack(">Q", index)


def _node_record(node: _Node, *, with_path: bool = False) -> list[Any]:
    record: list[Any] = [
        node.is_dir,
        node.value,
        node.created_index,
        node.modified_index,
        node.expiration_ns,
    ]
    return [node.path, *record] if with_path else record


def _view_record(view: NodeView) -> list[Any]:
    assert view.nodes is None
    return [
        view.key,
        view.value,
        view.dir,
        view.expiration_ns,
        view.modified_index,
        view.created_index,
    ]


def _event_record(event: Event) -> list[Any]:
    prev = None if event.prev_node is None else _view_record(event.prev_node)
    return [
        event.action.value,
        _view_record(event.node),
        prev,
        event.etcd_index,
        event.time_ns,
        event.refresh,
    ]


def _encode_event(event: Event) -> bytes:
    return _encode(_event_record(event))


def _is_uint(value: object, maximum: int = UINT64_MAX) -> bool:
    return type(value) is int and 0 <= value <= maximum


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _decode_utf8(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as error:
        raise ValueError(f"v2 records: bad path {data!r}") from error


def _decode_node(record: Any, path: Any) -> _Node:
    ok = type(record) is list and len(record) == 5 and type(path) is str
    _require(ok and path.startswith("/") and clean_path(path) == path and path != "/", "bad node")
    is_dir, value, created, modified, expiration = record
    _require(type(is_dir) is bool and type(value) is str, f"v2 node {path!r}: bad value")
    _require(_is_uint(created) and _is_uint(modified), f"v2 node {path!r}: bad index")
    _require(_is_uint(expiration, INT64_MAX), f"v2 node {path!r}: bad expiration")
    _require(not (is_dir and value), f"v2 node {path!r}: a directory with a value")
    node = _Node(path, created, dir=is_dir, value=value, expiration_ns=expiration)
    node.modified_index = modified
    return node


def _attach(root: _Node, path: str, node: _Node) -> None:
    """Put a decoded node under its parent, which must already be there."""
    names = path[1:].split("/")
    parent = root
    for segment in names[:-1]:
        child = None if parent.children is None else parent.children.get(segment)
        _require(child is not None, f"v2 node {path!r}: no parent directory")
        assert child is not None
        parent = child
    ok = parent.children is not None and names[-1] not in parent.children
    _require(ok, f"v2 node {path!r}: under a key, or a duplicate")
    assert parent.children is not None
    parent.children[names[-1]] = node


def _tree_of(nodes: list[tuple[str, _Node]]) -> _Node:
    """A root holding the decoded ``(path, node)`` pairs (in any order)."""
    root = _Node("/", 0, dir=True)
    for path, node in sorted(nodes, key=lambda item: item[0].count("/")):
        _attach(root, path, node)
    return root


def _snapshot_tree(records: Any) -> _Node:
    """A root holding a snapshot's node records (parents first)."""
    _require(type(records) is list, "v2 snapshot: bad nodes")
    root = _Node("/", 0, dir=True)
    for record in records:
        _require(type(record) is list and len(record) == 6, "v2 snapshot: bad node")
        _attach(root, record[0], _decode_node(record[1:], record[0]))
    return root


def _decode_view(record: Any) -> NodeView:
    _require(type(record) is list and len(record) == 6, "v2 event: bad node")
    key, value, is_dir, expiration, modified, created = record
    _require(type(key) is str and (value is None or type(value) is str), "v2 event: bad node")
    _require(type(is_dir) is bool, "v2 event: bad dir")
    _require(expiration is None or _is_uint(expiration, INT64_MAX), "v2 event: bad expiration")
    _require(_is_uint(modified) and _is_uint(created), "v2 event: bad index")
    return NodeView(key, value, is_dir, expiration, modified, created)


def _decode_event(record: Any) -> Event:
    _require(type(record) is list and len(record) == 6, "v2 event: bad record")
    action, node, prev, etcd_index, time_ns, refresh = record
    _require(action in _ACTIONS, f"v2 event: bad action {action!r}")
    _require(_is_uint(etcd_index) and _is_uint(time_ns, INT64_MAX), "v2 event: bad index")
    _require(type(refresh) is bool, "v2 event: bad refresh")
    prev_view = None if prev is None else _decode_view(prev)
    return Event(Action(action), _decode_view(node), prev_view, etcd_index, time_ns, refresh)


_ACTIONS: Final = frozenset(action.value for action in Action)


def _check_history(events: list[Event], index: int) -> None:
    for before, after in itertools.pairwise(events):
        _require(after.index == before.index + 1, "v2 history: not contiguous")
    _require(not events or events[-1].index <= index, "v2 history: ahead of the index")
