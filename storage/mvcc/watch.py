"""The v3 watch hub: etcd's synced and unsynced watcher groups over the MVCC store (a pure core).

Theory of operation
-------------------
A client stream (``WatchStream``, one per gRPC Watch call or gateway ``/v3/watch`` request)
multiplexes watchers. Each ``Watcher`` watches a key, a range ``[key, end)`` or every key from
``key`` on, and wants the events from ``min_revision`` on. The hub knows the last revision it
was handed (``revision``) and keeps every watcher in one of two groups, as etcd's
``watchableStore`` does:

- synced: it has been given every matching event up to ``revision`` (or starts later).
  ``publish`` hands each new revision's events to the synced watchers at once, one response
  per watcher per revision; the apply stage calls it after each applied batch, and it never
  waits.
- unsynced: it still has events to read below ``revision``. ``catch_up`` takes a bounded set
  of them (``catch_up_watchers_max``), reads the events from the lowest ``min_revision`` from
  the store (``MvccStore.events``, bounded by ``catch_up_revisions_max`` and
  ``catch_up_events_max``, whole revisions), sends each watcher one response with the events
  it wants, and moves it to the synced group once it has reached ``revision``. The shell calls
  it in a loop of its own, a bounded round at a time.

A watch that starts in the past, or at 0 ("from the next revision") or in the future, is
therefore one mechanism: the first kind starts unsynced, the other two synced (a future start
is kept in ``min_revision`` and earlier events are skipped).

Responses wait in the stream's queue until its sender takes them. The queue holds at most
``STREAM_RESPONSES_BUFFERED_MAX`` event responses: a synced watcher whose response does not fit
leaves the synced group for the unsynced one at the revision it missed, and is caught up from
the store when the queue has room again (``take`` wakes the hub). No event is dropped and none
is sent twice: a watcher is in one group at a time and its ``min_revision`` only grows. If the
revisions it still needs are compacted meanwhile, it is cancelled with ``compact_revision``,
exactly as a watch created below the compact revision is (etcd: ``minRev < compactRev``).
Control responses (created, canceled, progress requested) always queue; the service reads no
more requests while ``control_backlog`` is at ``CONTROL_RESPONSES_BUFFERED_MAX``.

``prev_kv`` is the key as it was at ``mod_revision - 1``, none when that revision is compacted
(etcd's watch reads it so) and none for a creation. Filters drop PUT or DELETE events; a
response whose events are all filtered is not sent.

After a snapshot install the store holds a new state that no events describe: ``resync``
moves every synced watcher to the unsynced group at the revision it had reached, and catch-up
reads what it missed from the new state (or cancels it, if the snapshot compacted that away).

Progress: ``request_progress`` answers at once with the stream-wide ``watch_id`` -1 and the
hub's revision (etcd 3.4). ``progress_tick`` (the service calls it every progress interval)
sends each ``progress_notify`` watcher that is synced and received no events since the
previous tick an empty response at the hub's revision; one that does not fit is skipped.

Watch ids: a client may choose one (a duplicate is refused with etcd's reason); id 0 asks the
stream for the next free one, counting from 0. A watcher cancelled for compaction keeps its id
until the client cancels it, as in etcd.

Iteration is over dicts keyed by integers in insertion order, so the same inputs give the same
responses in the same order (the simulator's determinism).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Protocol

from storage.mvcc.model import Event, EventType, TxnEvents

STREAM_WATCHERS_MAX: Final = 10_000
"""Watchers one stream may hold (etcd has no bound); a create past it is refused."""

HUB_WATCHERS_MAX: Final = 100_000
"""Watchers of all streams of a member; a create past it is refused."""

STREAM_RESPONSES_BUFFERED_MAX: Final = 128
"""Event and progress responses queued on one stream for its sender (etcd's watch channel
holds 128); a synced watcher whose response does not fit is caught up later from the store."""

CONTROL_RESPONSES_BUFFERED_MAX: Final = 16
"""Control responses (created, canceled, progress requested) queued on one stream before the
service stops reading that stream's requests (etcd's ``ctrlStreamBufLen``)."""

CATCH_UP_WATCHERS_MAX: Final = 512
"""Unsynced watchers one catch-up round serves (etcd's ``maxWatchersPerSync``)."""

CATCH_UP_REVISIONS_MAX: Final = 1000
"""Revisions one catch-up round reads from the store (etcd's ``watchBatchMaxRevs``)."""

CATCH_UP_EVENTS_MAX: Final = 1000
"""Events one catch-up round reads from the store, in whole revisions (so one revision that
writes more keys is still read whole)."""

AUTO_WATCH_ID: Final = 0
"""The watch id that asks the stream to choose one (etcd's ``clientv3.AutoWatchID``)."""

INVALID_WATCH_ID: Final = -1
"""The id of a refused create and of a progress response for the whole stream."""

DUPLICATE_WATCH_ID: Final = "mvcc: duplicate watch ID provided on the WatchStream"
EMPTY_WATCHER_RANGE: Final = "mvcc: watcher range is empty"
TOO_MANY_WATCHERS: Final = "troika: too many watchers"


class EventSource(Protocol):
    """What the hub reads from the MVCC store (``storage.mvcc.store.MvccStore``)."""

    @property
    def current_revision(self) -> int: ...

    @property
    def compact_revision(self) -> int: ...

    def events(
        self,
        start_revision: int,
        end_revision: int = 0,
        *,
        revisions_max: int = 0,
        events_max: int = 0,
    ) -> tuple[list[TxnEvents], int]: ...


@dataclass(frozen=True, slots=True)
class WatchCreate:
    """A create request, as etcd's ``WatchCreateRequest`` (``range_end`` ``b"\\0"``: every key
    from ``key`` on; an empty ``key`` is ``b"\\0"``)."""

    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    watch_id: int = AUTO_WATCH_ID
    no_put: bool = False
    no_delete: bool = False
    prev_kv: bool = False
    progress_notify: bool = False
    fragment: bool = False


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """One response of a stream, as etcd's ``WatchResponse`` without the header's ids.

    Attributes:
        watch_id: the watcher's id (``INVALID_WATCH_ID`` for a refused create or a
            stream-wide progress response).
        revision: the header revision; 0 for none (a compaction cancel has none in etcd).
        events: the watcher's events, in revision order.
        fragment: the watcher asked for large responses to be split (the service splits).
    """

    watch_id: int
    revision: int
    events: tuple[Event, ...] = ()
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    fragment: bool = False


class Watcher:
    """One watcher of a stream: what it watches and how far it has got."""

    __slots__ = (
        "end",
        "fragment",
        "key",
        "min_revision",
        "no_delete",
        "no_put",
        "prev_kv",
        "progress_notify",
        "quiet",
        "serial",
        "single",
        "stream",
        "watch_id",
    )

    def __init__(
        self, stream: WatchStream, serial: int, watch_id: int, request: WatchCreate
    ) -> None:
        key = request.key or b"\0"
        self.stream = stream
        self.serial = serial
        self.watch_id = watch_id
        self.key = key
        self.single = not request.range_end
        self.end: bytes | None = None if request.range_end in (b"", b"\0") else request.range_end
        self.min_revision = request.start_revision
        self.no_put = request.no_put
        self.no_delete = request.no_delete
        self.prev_kv = request.prev_kv
        self.progress_notify = request.progress_notify
        self.fragment = request.fragment
        self.quiet = True
        """No events were sent since the last progress tick."""

    @property
    def group_key(self) -> GroupKey:
        """Where a ``WatcherGroup`` files it: its key (single) or its bounds (range)."""
        return (self.key, self.end, self.single)

    @property
    def flavor(self) -> Flavor:
        """What it keeps of a matching event: ``(prev_kv, no_put, no_delete)``."""
        return (self.prev_kv, self.no_put, self.no_delete)


GroupKey = tuple[bytes, bytes | None, bool]
"""A watched key ``(key, None, True)`` or range ``(key, end or None, False)``."""

Flavor = tuple[bool, bool, bool]
"""``(prev_kv, no_put, no_delete)``."""


def select(
    flavor: Flavor,
    events: tuple[Event, ...],
    forms: tuple[list[Event], list[Event]],
    hits: list[int],
) -> list[Event]:
    """The events at positions ``hits`` that watchers of ``flavor`` want, with or without
    ``prev_kv`` (``forms``: ``events`` as watchers with ``prev_kv`` see them, and without)."""
    prev_kv, no_put, no_delete = flavor
    chosen_form = forms[0] if prev_kv else forms[1]
    chosen: list[Event] = []
    for position in hits:
        kind = events[position].type
        if (kind is EventType.PUT and no_put) or (kind is EventType.DELETE and no_delete):
            continue
        chosen.append(chosen_form[position])
    return chosen


class WatcherGroup:
    """Watchers found by key: single keys in a dict, ranges grouped by their bounds."""

    __slots__ = ("_keys", "_ranges", "_watchers")

    def __init__(self, watchers: Iterable[Watcher] = ()) -> None:
        self._watchers: dict[int, Watcher] = {}
        self._keys: dict[bytes, dict[int, Watcher]] = {}
        self._ranges: dict[GroupKey, dict[int, Watcher]] = {}
        for watcher in watchers:
            self.add(watcher)

    def __len__(self) -> int:
        return len(self._watchers)

    def __contains__(self, watcher: Watcher) -> bool:
        return self._watchers.get(watcher.serial) is watcher

    def __iter__(self) -> Iterator[Watcher]:
        return iter(list(self._watchers.values()))

    def add(self, watcher: Watcher) -> None:
        assert watcher.serial not in self._watchers, watcher.serial
        self._watchers[watcher.serial] = watcher
        if watcher.single:
            self._keys.setdefault(watcher.key, {})[watcher.serial] = watcher
        else:
            self._ranges.setdefault(watcher.group_key, {})[watcher.serial] = watcher

    def remove(self, watcher: Watcher) -> None:
        del self._watchers[watcher.serial]
        if watcher.single:
            table, slot = self._keys, watcher.key
            members = table[slot]
            del members[watcher.serial]
            if not members:
                del table[slot]
        else:
            bounds = watcher.group_key
            ranged = self._ranges[bounds]
            del ranged[watcher.serial]
            if not ranged:
                del self._ranges[bounds]

    def matching(
        self, events: tuple[Event, ...]
    ) -> list[tuple[GroupKey, list[Watcher], list[int]]]:
        """The watchers of each key or range that ``events`` touch (every watcher of one
        watches the same keys), with the positions of those events, in order; groups in the
        order they are first matched, watchers in the order they were added."""
        found: dict[GroupKey, tuple[dict[int, Watcher], list[int]]] = {}
        for position, event in enumerate(events):
            key = event.kv.key
            single = self._keys.get(key)
            if single:
                found.setdefault((key, None, True), (single, []))[1].append(position)
            for bounds, ranged in self._ranges.items():
                start, end, _ = bounds
                if start <= key and (end is None or key < end):
                    found.setdefault(bounds, (ranged, []))[1].append(position)
        return [(bounds, list(group.values()), hits) for bounds, (group, hits) in found.items()]


def _forms(events: tuple[Event, ...], prev_visible: bool) -> tuple[list[Event], list[Event]]:
    """``events`` as watchers with ``prev_kv`` see them, and as the others do."""
    bare = [e if e.prev_kv is None else Event(e.type, e.kv, None) for e in events]
    return (list(events) if prev_visible else bare), bare


def _nothing() -> None:
    pass


class WatchHub:
    """Every watcher of a member, in the synced or the unsynced group; see the module
    docstring.

    Args:
        store: where catch-up reads events, and the compact revision.
        wake: called when catch-up has work (a watcher became unsynced, a stream with
            room again); the shell runs ``catch_up`` then.
    """

    def __init__(
        self,
        store: EventSource,
        *,
        wake: Callable[[], None] = _nothing,
        stream_watchers_max: int = STREAM_WATCHERS_MAX,
        hub_watchers_max: int = HUB_WATCHERS_MAX,
        responses_buffered_max: int = STREAM_RESPONSES_BUFFERED_MAX,
        catch_up_watchers_max: int = CATCH_UP_WATCHERS_MAX,
        catch_up_revisions_max: int = CATCH_UP_REVISIONS_MAX,
        catch_up_events_max: int = CATCH_UP_EVENTS_MAX,
    ) -> None:
        bounds = (stream_watchers_max, hub_watchers_max, responses_buffered_max)
        assert min(bounds) > 0, bounds
        catch_up = (catch_up_watchers_max, catch_up_revisions_max, catch_up_events_max)
        assert min(catch_up) > 0, catch_up
        self.store = store
        self.wake = wake
        self.revision = store.current_revision
        """The last revision published (or, after ``resync``, installed)."""
        self.stream_watchers_max = stream_watchers_max
        self.hub_watchers_max = hub_watchers_max
        self.responses_buffered_max = responses_buffered_max
        self.catch_up_watchers_max = catch_up_watchers_max
        self.catch_up_revisions_max = catch_up_revisions_max
        self.catch_up_events_max = catch_up_events_max
        self.synced = WatcherGroup()
        self.unsynced: dict[int, Watcher] = {}
        self._serial = 0
        self.planted_skip_when_full = False
        """A planted bug (``actors.bootstrap.WATCH_SKIP_EVENT_WHEN_FULL``), test only."""

    # -- views ---------------------------------------------------------------------------

    def watcher_count(self) -> int:
        """Watchers in either group."""
        return len(self.synced) + len(self.unsynced)

    @property
    def catch_up_pending(self) -> bool:
        """Whether some watcher is unsynced."""
        return bool(self.unsynced)

    # -- streams -------------------------------------------------------------------------

    def open_stream(self, wake: Callable[[], None] = _nothing) -> WatchStream:
        """A new client stream; ``wake`` is called when it has responses to take."""
        return WatchStream(self, wake)

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _add(self, watcher: Watcher) -> None:
        start = watcher.min_revision
        if start == 0 or start > self.revision:
            watcher.min_revision = max(start, self.revision + 1)
            self.synced.add(watcher)
        else:
            self.unsynced[watcher.serial] = watcher
            self.wake()

    def _remove(self, watcher: Watcher) -> None:
        if watcher in self.synced:
            self.synced.remove(watcher)
        else:
            self.unsynced.pop(watcher.serial, None)

    def _unsync(self, watcher: Watcher, min_revision: int) -> None:
        assert watcher.serial not in self.unsynced, watcher.serial
        assert min_revision <= self.revision, (min_revision, self.revision)
        self.synced.remove(watcher)
        watcher.min_revision = min_revision
        self.unsynced[watcher.serial] = watcher
        self.wake()

    # -- the apply stage's side ------------------------------------------------------------

    def publish(self, txns: Iterable[TxnEvents]) -> None:
        """Hand the events of newly applied revisions to the synced watchers (never waits).

        Revisions at or below ``revision`` are skipped (a resync covered them); the others
        must follow it without a gap.
        """
        for txn in txns:
            if txn.revision <= self.revision:
                continue
            assert txn.revision == self.revision + 1, (txn.revision, self.revision)
            self.revision = txn.revision
            if len(self.synced):
                self._notify(txn)

    def _notify(self, txn: TxnEvents) -> None:
        revision = txn.revision
        forms = _forms(txn.events, revision - 1 >= self.store.compact_revision)
        for _, watchers, hits in self.synced.matching(txn.events):
            chosen: dict[Flavor, tuple[Event, ...]] = {}  # one selection per flavor, shared
            for watcher in watchers:
                if revision < watcher.min_revision:
                    continue
                flavor = watcher.flavor
                events = chosen.get(flavor)
                if events is None:
                    events = chosen[flavor] = tuple(select(flavor, txn.events, forms, hits))
                if not events:
                    continue
                response = WatchResponse(
                    watcher.watch_id, revision, events, fragment=watcher.fragment
                )
                offered = watcher.stream._offer(response, watcher)
                if not offered and not self.planted_skip_when_full:
                    self._unsync(watcher, revision)

    def resync(self) -> None:
        """The store was replaced (a snapshot install): every synced watcher that has not
        reached the store's revision reads what it missed from the new state."""
        revision = self.store.current_revision
        assert revision >= self.revision, (revision, self.revision)
        reached = self.revision
        self.revision = revision
        for watcher in self.synced:
            start = max(watcher.min_revision, reached + 1)
            if start <= revision:
                self._unsync(watcher, start)

    # -- the shell's side -----------------------------------------------------------------------

    def catch_up(self) -> bool:
        """One bounded catch-up round; whether it did anything (False: wait for ``wake``)."""
        chosen: list[Watcher] = []
        room: dict[int, int] = {}  # by stream: what is left after the watchers chosen so far
        for watcher in self.unsynced.values():
            if len(chosen) >= self.catch_up_watchers_max:
                break
            stream = watcher.stream
            left = room.get(id(stream), stream.room())
            if left > 0:
                chosen.append(watcher)
                room[id(stream)] = left - 1
        if not chosen:
            return False
        compacted = self.store.compact_revision
        live: list[Watcher] = []
        for watcher in chosen:
            if watcher.min_revision >= compacted:
                live.append(watcher)
            elif watcher.stream.has_room():
                self._cancel_compacted(watcher, compacted)
        if live:
            self._catch_up(live)
        return True

    def _cancel_compacted(self, watcher: Watcher, compacted: int) -> None:
        del self.unsynced[watcher.serial]
        response = WatchResponse(watcher.watch_id, 0, canceled=True, compact_revision=compacted)
        offered = watcher.stream._offer(response, watcher)
        assert offered
        watcher.stream._watchers[watcher.watch_id] = None

    def _catch_up(self, live: list[Watcher]) -> None:
        end = self.revision
        start = min(watcher.min_revision for watcher in live)
        assert start <= end, (start, end)
        txns, through = self.store.events(
            start,
            end,
            revisions_max=self.catch_up_revisions_max,
            events_max=self.catch_up_events_max,
        )
        # Watchers of one key or range, one flavor and one next revision want the same events:
        # they are selected once per such class, not once per watcher.
        classes: dict[GroupKey, dict[tuple[Flavor, int], list[Event]]] = {}
        for watcher in live:
            classes.setdefault(watcher.group_key, {})[(watcher.flavor, watcher.min_revision)] = []
        group = WatcherGroup(live)
        for txn in txns:
            forms = _forms(txn.events, True)  # the store applied etcd's prev_kv rule
            for bounds, _, hits in group.matching(txn.events):
                for (flavor, min_revision), wanted in classes[bounds].items():
                    if txn.revision >= min_revision:
                        wanted.extend(select(flavor, txn.events, forms, hits))
        shared: dict[int, tuple[Event, ...]] = {}
        for watcher in live:
            found = classes[watcher.group_key][(watcher.flavor, watcher.min_revision)]
            events = shared.get(id(found))
            if events is None:
                events = shared[id(found)] = tuple(found)
            if events:
                response = WatchResponse(
                    watcher.watch_id, through, events, fragment=watcher.fragment
                )
                if not watcher.stream._offer(response, watcher):
                    self._to_back(watcher)
                    continue
            watcher.min_revision = max(watcher.min_revision, through + 1)
            del self.unsynced[watcher.serial]
            if through == end:
                assert watcher.min_revision == end + 1, (watcher.min_revision, end)
                self.synced.add(watcher)
            else:
                self.unsynced[watcher.serial] = watcher  # to the back: fair rounds

    def _to_back(self, watcher: Watcher) -> None:
        del self.unsynced[watcher.serial]
        self.unsynced[watcher.serial] = watcher


class WatchStream:
    """One client stream's watchers and its queue of responses; see the module docstring."""

    def __init__(self, hub: WatchHub, wake: Callable[[], None]) -> None:
        self._hub = hub
        self._wake = wake
        self._watchers: dict[int, Watcher | None] = {}
        """By watch id; None for one cancelled by compaction (its id stays taken)."""
        self._next_id = 0
        self._queue: deque[tuple[WatchResponse, bool]] = deque()
        self._buffered = 0
        self._control = 0
        self._closed = False

    # -- views ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """Responses waiting to be taken."""
        return len(self._queue)

    @property
    def control_backlog(self) -> int:
        """Control responses waiting to be taken."""
        return self._control

    def has_room(self) -> bool:
        """Whether an event or progress response would fit now."""
        return self._buffered < self._hub.responses_buffered_max

    def room(self) -> int:
        """How many more event or progress responses would fit now."""
        return self._hub.responses_buffered_max - self._buffered

    def watch_ids(self) -> list[int]:
        """The ids taken on this stream, in creation order."""
        return list(self._watchers)

    # -- requests --------------------------------------------------------------------------

    def create(self, request: WatchCreate) -> None:
        """Add a watcher; queues the created response (or a refusal, created and canceled)."""
        assert not self._closed
        hub = self._hub
        key = request.key or b"\0"
        end = request.range_end
        if end not in (b"", b"\0") and key >= end:
            self._refuse(EMPTY_WATCHER_RANGE)
            return
        watch_id = request.watch_id
        if watch_id != AUTO_WATCH_ID and watch_id in self._watchers:
            self._refuse(DUPLICATE_WATCH_ID)
            return
        if len(self._watchers) >= hub.stream_watchers_max or (
            hub.watcher_count() >= hub.hub_watchers_max
        ):
            self._refuse(TOO_MANY_WATCHERS)
            return
        if watch_id == AUTO_WATCH_ID:
            while self._next_id in self._watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        watcher = Watcher(self, hub._next_serial(), watch_id, request)
        self._watchers[watch_id] = watcher
        self._push_control(WatchResponse(watch_id, hub.revision, created=True))
        hub._add(watcher)

    def _refuse(self, reason: str) -> None:
        refusal = WatchResponse(
            INVALID_WATCH_ID, self._hub.revision, created=True, canceled=True, cancel_reason=reason
        )
        self._push_control(refusal)

    def cancel(self, watch_id: int) -> None:
        """Remove a watcher; queues the canceled response (nothing for an unknown id)."""
        assert not self._closed
        if watch_id not in self._watchers:
            return
        watcher = self._watchers.pop(watch_id)
        if watcher is not None:
            self._hub._remove(watcher)
        self._push_control(WatchResponse(watch_id, self._hub.revision, canceled=True))

    def request_progress(self) -> None:
        """Queue a progress response for the whole stream (etcd 3.4: at once, in any state)."""
        assert not self._closed
        self._push_control(WatchResponse(INVALID_WATCH_ID, self._hub.revision))

    def progress_tick(self) -> None:
        """A progress interval passed: an empty response to each ``progress_notify`` watcher
        that is synced and was sent no events since the last tick (if it fits)."""
        hub = self._hub
        for watcher in self._watchers.values():
            if watcher is None or not watcher.progress_notify:
                continue
            if watcher.quiet and watcher in hub.synced and self.has_room():
                self._offer(WatchResponse(watcher.watch_id, hub.revision), watcher)
            watcher.quiet = True

    # -- the sender's side -----------------------------------------------------------------

    def take(self, count_max: int) -> list[WatchResponse]:
        """Up to ``count_max`` queued responses, oldest first."""
        taken: list[WatchResponse] = []
        queue = self._queue
        while queue and len(taken) < count_max:
            response, control = queue.popleft()
            if control:
                self._control -= 1
            else:
                self._buffered -= 1
            taken.append(response)
        if taken and self._hub.unsynced:
            self._hub.wake()
        return taken

    def close(self) -> None:
        """The client left: remove every watcher, drop the queue."""
        if self._closed:
            return
        self._closed = True
        for watcher in self._watchers.values():
            if watcher is not None:
                self._hub._remove(watcher)
        self._watchers.clear()
        self._queue.clear()
        self._buffered = self._control = 0

    # -- the hub's side --------------------------------------------------------------------

    def _offer(self, response: WatchResponse, watcher: Watcher) -> bool:
        """Queue an event, progress or compaction response if it fits."""
        if not self.has_room():
            return False
        assert not self._closed and response.watch_id == watcher.watch_id
        self._queue.append((response, False))
        self._buffered += 1
        if response.events:
            watcher.quiet = False
        self._wake()
        return True

    def _push_control(self, response: WatchResponse) -> None:
        self._queue.append((response, True))
        self._control += 1
        self._wake()
