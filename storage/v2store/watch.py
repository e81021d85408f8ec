"""The v2 watcher hub: the event history and the watchers waiting on keys (etcd's watcherHub).

Theory of operation
-------------------
Every write of the store ends in exactly one event, whose index is the new store index, so the
history is a contiguous run of the last ``HISTORY_EVENTS_MAX`` events. ``watch`` first looks in
the history for an event at or after ``since_index``; when there is none it registers a
``Watcher`` under its key, and ``notify`` hands it the next matching event.

A watcher on ``key`` sees an event when:

- the event is on ``key`` itself; or
- the watcher is recursive and the event is on a node under ``key`` that is not hidden below
  it (no path segment after ``key`` starts with ``_``); or
- the event deleted (or expired) ``key`` itself as part of a directory: a delete or an expiry
  notifies the watchers of every node it removed, recursive or not.

A watch on a directory without ``recursive`` therefore sees only changes of the directory node
itself (its TTL, its deletion or expiry), not changes of its children, as in etcd. A refresh
(``refresh=true``) is kept in the history but never delivered, even from the history.

Delivery is by a bounded trio memory channel per watcher (``WATCHER_BUFFER_EVENTS``, etcd's 100).
A non-stream watcher receives one event, then its channel ends (``trio.EndOfChannel``) and it
leaves the hub. A stream watcher receives every matching event. A watcher whose buffer is full
when an event arrives is closed (as etcd does): its reader drains what is buffered, then gets
``trio.EndOfChannel`` and should end the response; the client resumes with
``waitIndex = last index + 1``. ``Watcher.remove()`` is for disconnects.

Deliberate differences from etcd 3.4, each a bug there (checked live on 3.4.23):

- etcd delivers a delete twice to a stream watcher on the deleted key (once as a removed node,
  once as the event's key); here a watcher never receives the same event twice.
- etcd answers a stream watch whose ``waitIndex`` is in the history with that one event and then
  nothing, ever; here it receives every matching event of the history from ``waitIndex`` on,
  then the live ones.
- etcd's history scan returns events on hidden keys to recursive watchers, and matches a deleted
  directory by string prefix (a delete of ``/foo`` matches a watch on ``/foobar``); here the
  history follows the same rules as live delivery (hidden keys left out; path prefixes).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Final

import trio

from storage.v2store.model import Action, ErrorCode, Event, V2Error

HISTORY_EVENTS_MAX: Final = 1000
"""Events kept for watches that start in the past (etcd's ``newEventHistory(1000)``)."""

WATCHER_BUFFER_EVENTS: Final = 100
"""Events buffered per watcher before it is closed as too slow (etcd's channel of 100)."""


def is_under(path: str, parent: str) -> bool:
    """True when ``path`` is strictly below the directory ``parent`` (both clean)."""
    if parent == "/":
        return path != "/"
    return path.startswith(parent + "/")


def hidden_below(watch_key: str, event_key: str) -> bool:
    """True when ``event_key`` (under ``watch_key``) has a hidden segment after ``watch_key``."""
    rest = event_key if watch_key == "/" else event_key[len(watch_key) :]
    return "/_" in rest


def _history_match(event: Event, key: str, recursive: bool) -> bool:
    """Whether a watch on ``key`` wants ``event`` when it is read from the history."""
    if event.refresh:
        return False
    event_key = event.node.key
    if event_key == key:
        return True
    if recursive and is_under(event_key, key) and not hidden_below(key, event_key):
        return True
    removed_dir = event.action in (Action.DELETE, Action.EXPIRE) and event.node.dir
    return removed_dir and is_under(key, event_key)


class EventHistory:
    """The last ``capacity`` events, oldest first (etcd's ``EventHistory``).

    Args:
        capacity: how many events to keep.
    """

    def __init__(self, capacity: int = HISTORY_EVENTS_MAX) -> None:
        assert capacity > 0
        self.capacity = capacity
        self._events: deque[Event] = deque()

    @property
    def start_index(self) -> int:
        """The index of the oldest event kept (0 while empty, as in etcd)."""
        return self._events[0].index if self._events else 0

    @property
    def last_index(self) -> int:
        """The index of the newest event (0 while empty)."""
        return self._events[-1].index if self._events else 0

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def add(self, event: Event) -> Event | None:
        """Append ``event``; return the event it pushed out, if the history was full."""
        if self._events:
            assert event.index == self.last_index + 1, (event.index, self.last_index)
        self._events.append(event)
        if len(self._events) > self.capacity:
            return self._events.popleft()
        return None

    def replace(self, events: Iterable[Event]) -> None:
        """Replace the whole history (a snapshot restore); keeps the newest ``capacity``."""
        self._events.clear()
        for event in events:
            self.add(event)

    def check(self, since_index: int) -> None:
        """Raise 401 when ``since_index`` is older than the oldest event kept.

        Raises:
            V2Error: 401 with cause ``the requested history has been cleared [oldest/since]``;
                its index is 0, the caller sets the store index.
        """
        if since_index < self.start_index:
            cause = f"the requested history has been cleared [{self.start_index}/{since_index}]"
            raise V2Error(ErrorCode.EVENT_INDEX_CLEARED, cause)

    def scan(self, key: str, recursive: bool, since_index: int) -> Iterator[Event]:
        """The events at or after ``since_index`` that a watch on ``key`` wants, oldest first.

        The caller checks ``since_index`` with ``check`` first.
        """
        if not self._events or since_index > self.last_index:
            return
        offset = max(0, since_index - self.start_index)
        for position in range(offset, len(self._events)):
            event = self._events[position]
            if _history_match(event, key, recursive):
                yield event


class Watcher:
    """One watch: a bounded channel of events for one ``GET ?wait=true`` request.

    Read it with ``await watcher.receive()`` or ``async for event in watcher``; both end with
    ``trio.EndOfChannel`` / the end of the loop when the watcher is done (one event delivered
    to a non-stream watcher, an overflow, or ``remove()``).

    Attributes:
        key: the watched path (clean).
        recursive: the watch covers the subtree.
        stream: the watch delivers every event, not just the first.
        since_index: the first event index wanted.
        start_index: the store index when the watch started (the ``X-Etcd-Index`` header).
        overflowed: the watcher was closed because its buffer was full.
    """

    def __init__(
        self,
        hub: WatcherHub,
        *,
        key: str,
        recursive: bool,
        stream: bool,
        since_index: int,
        start_index: int,
        buffer_events: int,
    ) -> None:
        self._hub = hub
        self.key = key
        self.recursive = recursive
        self.stream = stream
        self.since_index = since_index
        self.start_index = start_index
        self.overflowed = False
        self.next_index = since_index
        self.registered = False
        self._closed = False
        self._send, self.events = trio.open_memory_channel[Event](buffer_events)

    @property
    def closed(self) -> bool:
        """True once no further event will be added (the buffer may still hold some)."""
        return self._closed

    async def receive(self) -> Event:
        """The next event.

        Raises:
            trio.EndOfChannel: the watcher is done and its buffer is empty.
        """
        return await self.events.receive()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events.__aiter__()

    def remove(self) -> None:
        """Stop watching (client gone): leave the hub and close both ends. Idempotent."""
        self._close_send()
        self.events.close()

    def deliver(self, event: Event) -> bool:
        """Offer ``event``; True when the watcher took it (or overflowed on it).

        Called by the hub only. A watcher takes an event once, at or after ``next_index``.
        """
        if self.closed or event.index < self.next_index:
            return False
        self.next_index = event.index + 1
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.overflowed = True
            self._close_send()
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._close_send()
            return True
        if not self.stream:
            self._close_send()
        return True

    def _close_send(self) -> None:
        self._closed = True
        self._send.close()
        self._hub._detach(self)


class WatcherHub:
    """The watchers, by key, and the event history.

    Args:
        history_events_max: events kept in the history.
        watcher_buffer_events: events buffered per watcher before it is closed.
    """

    def __init__(
        self,
        history_events_max: int = HISTORY_EVENTS_MAX,
        watcher_buffer_events: int = WATCHER_BUFFER_EVENTS,
    ) -> None:
        assert watcher_buffer_events > 0
        self.history = EventHistory(history_events_max)
        self.watcher_buffer_events = watcher_buffer_events
        self._watchers: dict[str, list[Watcher]] = {}
        self._count = 0

    @property
    def count(self) -> int:
        """The watchers waiting in the hub (``watchers`` of ``/v2/stats/store``)."""
        return self._count

    def watch(
        self, key: str, recursive: bool, stream: bool, since_index: int, store_index: int
    ) -> Watcher:
        """Start a watch on the clean path ``key`` for events at or after ``since_index``.

        Raises:
            V2Error: 401 when ``since_index`` is older than the history.
        """
        assert since_index > 0
        try:
            self.history.check(since_index)
        except V2Error as error:
            error.index = store_index
            raise
        watcher = Watcher(
            self,
            key=key,
            recursive=recursive,
            stream=stream,
            since_index=since_index,
            start_index=store_index,
            buffer_events=self.watcher_buffer_events,
        )
        for event in self.history.scan(key, recursive, since_index):
            watcher.deliver(dataclasses.replace(event, etcd_index=store_index))
            if watcher.closed:
                return watcher
        watcher.next_index = max(since_index, self.history.last_index + 1)
        self._watchers.setdefault(key, []).append(watcher)
        watcher.registered = True
        self._count += 1
        return watcher

    def add(self, event: Event) -> Event | None:
        """Record ``event`` in the history without notifying anyone (a refresh).

        Returns:
            The event pushed out of the history, if any.
        """
        return self.history.add(event)

    def notify(self, event: Event, removed_paths: Sequence[str] = ()) -> Event | None:
        """Record ``event`` and deliver it to the watchers that want it.

        Args:
            event: the event of a write.
            removed_paths: the nodes the event removed (a delete or an expiry): their
                watchers are notified whether or not they are recursive.

        Returns:
            The event pushed out of the history, if any.
        """
        evicted = self.history.add(event)
        for path in removed_paths:
            self._notify_at(event, path, removed=True)
        key = event.node.key
        self._notify_at(event, "/", removed=False)
        if key != "/":
            end = 0
            while end != len(key):
                end = key.find("/", end + 1)
                end = len(key) if end < 0 else end
                self._notify_at(event, key[:end], removed=False)
        return evicted

    def _notify_at(self, event: Event, path: str, removed: bool) -> None:
        watchers = self._watchers.get(path)
        if not watchers:
            return
        original = event.node.key == path
        if not (removed or original) and hidden_below(path, event.node.key):
            return
        for watcher in list(watchers):
            if watcher.recursive or original or removed:
                watcher.deliver(event)

    def _detach(self, watcher: Watcher) -> None:
        if not watcher.registered:
            return
        watcher.registered = False
        watchers = self._watchers[watcher.key]
        watchers.remove(watcher)
        if not watchers:
            del self._watchers[watcher.key]
        self._count -= 1

    def replace_history(self, events: Iterable[Event]) -> None:
        """Install a restored history and catch the waiting watchers up on it.

        A watcher that has missed events older than the new history is closed.
        """
        self.history.replace(events)
        for watchers in list(self._watchers.values()):
            for watcher in list(watchers):
                self._catch_up(watcher)

    def _catch_up(self, watcher: Watcher) -> None:
        try:
            self.history.check(watcher.next_index)
        except V2Error:
            watcher.overflowed = True
            watcher._close_send()
            return
        for event in self.history.scan(watcher.key, watcher.recursive, watcher.next_index):
            watcher.deliver(event)
            if watcher.closed:
                return
        watcher.next_index = max(watcher.next_index, self.history.last_index + 1)
