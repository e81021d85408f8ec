"""The v3 watch hub (``storage.mvcc.watch``) over a real MVCC store, without Trio.

The central check is a model comparison: whatever the interleaving of writes, slow streams,
bounded catch-up rounds and cancels, each watcher's events, joined in the order they were
taken, are exactly the matching events of the store's history from its start revision: in
order, without a gap, without a duplicate, with the right ``prev_kv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from random import Random

import pytest

from storage.mvcc import EventType, MvccStore, TxnEvents
from storage.mvcc.model import Event
from storage.mvcc.watch import (
    DUPLICATE_WATCH_ID,
    EMPTY_WATCHER_RANGE,
    INVALID_WATCH_ID,
    TOO_MANY_WATCHERS,
    WatchCreate,
    WatchHub,
    WatchResponse,
    WatchStream,
)

KEYS = [b"a", b"b", b"b/1", b"b/2", b"c", b"d"]


@dataclass
class World:
    """A store, a hub over it, and every event the store made."""

    store: MvccStore = field(default_factory=MvccStore)
    history: list[TxnEvents] = field(default_factory=list)
    hub: WatchHub = field(init=False)

    def __post_init__(self) -> None:
        self.hub = WatchHub(self.store)

    def write(self, *ops: tuple[str, bytes], publish: bool = True) -> None:
        with self.store.write() as txn:
            for op, key in ops:
                if op == "put":
                    txn.put(key, b"v%d" % self.store.current_revision)
                else:
                    txn.delete_range(key)
        if publish:
            self.publish()

    def publish(self) -> None:
        events = self.store.take_events()
        self.history.extend(events)
        self.hub.publish(events)

    def catch_up_all(self) -> None:
        for _ in range(10_000):
            if not self.hub.catch_up():
                return
        raise AssertionError("catch-up never ends")


def take_all(stream: WatchStream) -> list[WatchResponse]:
    return stream.take(1_000_000)


def matches(request: WatchCreate, key: bytes) -> bool:
    start = request.key or b"\0"
    if not request.range_end:
        return key == start
    if request.range_end == b"\0":
        return key >= start
    return start <= key < request.range_end


def expected_events(
    history: list[TxnEvents], request: WatchCreate, start: int
) -> list[tuple[int, Event]]:
    """What a watcher from ``start`` must see (no compaction in the history)."""
    wanted = []
    for txn in history:
        if txn.revision < start:
            continue
        for event in txn.events:
            if not matches(request, event.kv.key):
                continue
            if event.type is EventType.PUT and request.no_put:
                continue
            if event.type is EventType.DELETE and request.no_delete:
                continue
            prev = event.prev_kv if request.prev_kv else None
            wanted.append((txn.revision, Event(event.type, event.kv, prev)))
    return wanted


def events_of(responses: list[WatchResponse], watch_id: int) -> list[tuple[int, Event]]:
    return [
        (event.kv.mod_revision, event)
        for response in responses
        if response.watch_id == watch_id
        for event in response.events
    ]


# -- creating, cancelling, ids -----------------------------------------------------------------


def test_create_answers_created_at_the_hub_revision_and_ids_count_from_zero() -> None:
    world = World()
    world.write(("put", b"a"))
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a"))
    stream.create(WatchCreate(b"b", watch_id=1))  # taken by the client: auto skips it
    stream.create(WatchCreate(b"c"))
    assert take_all(stream) == [
        WatchResponse(0, 2, created=True),
        WatchResponse(1, 2, created=True),
        WatchResponse(2, 2, created=True),
    ]


def test_refusals_follow_etcd() -> None:
    world = World()
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a", watch_id=7))
    stream.create(WatchCreate(b"a", watch_id=7))
    stream.create(WatchCreate(b"b", b"a"))
    stream.create(WatchCreate(b"b", b"b"))
    refused = [
        WatchResponse(INVALID_WATCH_ID, 1, created=True, canceled=True, cancel_reason=reason)
        for reason in (DUPLICATE_WATCH_ID, EMPTY_WATCHER_RANGE, EMPTY_WATCHER_RANGE)
    ]
    assert take_all(stream) == [WatchResponse(7, 1, created=True), *refused]
    assert world.hub.watcher_count() == 1


def test_an_empty_key_is_the_smallest_key_and_range_end_nul_is_unbounded() -> None:
    world = World()
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"", b"\0"))
    take_all(stream)
    world.write(("put", b"a"), ("put", b"\0"))
    assert [e.kv.key for r in take_all(stream) for e in r.events] == [b"a", b"\0"]


def test_cancel_answers_once_and_stops_events() -> None:
    world = World()
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a"))
    stream.cancel(0)
    stream.cancel(0)  # unknown now: no answer
    stream.cancel(99)
    world.write(("put", b"a"))
    assert take_all(stream) == [
        WatchResponse(0, 1, created=True),
        WatchResponse(0, 1, canceled=True),
    ]
    assert world.hub.watcher_count() == 0


def test_watchers_per_stream_are_bounded() -> None:
    store = MvccStore()
    hub = WatchHub(store, stream_watchers_max=2)
    stream = hub.open_stream()
    for _ in range(3):
        stream.create(WatchCreate(b"a"))
    last = take_all(stream)[-1]
    assert (last.canceled, last.cancel_reason) == (True, TOO_MANY_WATCHERS)
    other = hub.open_stream()
    other.create(WatchCreate(b"a"))
    assert not take_all(other)[0].canceled


def test_closing_a_stream_removes_its_watchers() -> None:
    world = World()
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a"))
    stream.create(WatchCreate(b"a", start_revision=1))
    stream.close()
    assert world.hub.watcher_count() == 0
    world.write(("put", b"a"))
    assert not world.hub.catch_up()


# -- delivery --------------------------------------------------------------------------------


def test_a_txn_is_one_response_and_prev_kv_only_when_asked() -> None:
    world = World()
    world.write(("put", b"b/1"))
    plain, with_prev = world.hub.open_stream(), world.hub.open_stream()
    plain.create(WatchCreate(b"b/", b"b0"))
    with_prev.create(WatchCreate(b"b/", b"b0", prev_kv=True))
    take_all(plain), take_all(with_prev)
    world.write(("put", b"b/1"), ("put", b"b/2"), ("put", b"c"))
    [response] = take_all(plain)
    assert response.revision == 3 and [e.kv.key for e in response.events] == [b"b/1", b"b/2"]
    assert all(e.prev_kv is None for e in response.events)
    [response] = take_all(with_prev)
    prev = response.events[0].prev_kv
    assert prev is not None and prev.mod_revision == 2
    assert response.events[1].prev_kv is None  # a creation


def test_filters_drop_events_and_an_all_filtered_response_is_not_sent() -> None:
    world = World()
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a", no_put=True))
    stream.create(WatchCreate(b"a", no_delete=True))
    take_all(stream)
    world.write(("put", b"a"))
    world.write(("delete", b"a"))
    assert [(r.watch_id, r.revision, [e.type for e in r.events]) for r in take_all(stream)] == [
        (1, 2, [EventType.PUT]),
        (0, 3, [EventType.DELETE]),
    ]


def test_a_past_start_replays_history_in_one_response_then_goes_live() -> None:
    world = World()
    for key in (b"a", b"b", b"a"):
        world.write(("put", key))
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a", start_revision=2, prev_kv=True))
    world.catch_up_all()
    created, replay = take_all(stream)
    assert created == WatchResponse(0, 4, created=True)
    assert replay.revision == 4 and [e.kv.mod_revision for e in replay.events] == [2, 4]
    assert replay.events[1].prev_kv == replay.events[0].kv
    world.write(("put", b"a"))
    assert [r.revision for r in take_all(stream)] == [5]
    assert world.hub.watcher_count() == len(world.hub.synced) == 1


def test_a_future_start_skips_the_revisions_before_it() -> None:
    world = World()
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a", start_revision=4))
    take_all(stream)
    for _ in range(4):
        world.write(("put", b"a"))
    assert [r.revision for r in take_all(stream)] == [4, 5]


def test_a_full_stream_sends_its_watcher_to_catch_up_and_nothing_is_lost() -> None:
    store = MvccStore()
    world = World(store)
    world.hub = WatchHub(store, responses_buffered_max=3, catch_up_revisions_max=2)
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a"))
    for _ in range(10):
        world.write(("put", b"a"))
    assert len(stream) == 4  # created + 3 responses; the rest waits in the store
    assert len(world.hub.unsynced) == 1
    taken = take_all(stream)
    while world.hub.catch_up():
        taken += take_all(stream)
    assert [e.kv.mod_revision for r in taken for e in r.events] == list(range(2, 12))
    assert all(len({e.kv.mod_revision for e in r.events}) <= 2 for r in taken)
    assert len(world.hub.synced) == 1


# -- progress ------------------------------------------------------------------------------


def test_progress_request_is_stream_wide_and_ticks_only_reach_quiet_synced_watchers() -> None:
    world = World()
    world.write(("put", b"a"))
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a", progress_notify=True))
    stream.create(WatchCreate(b"b", progress_notify=True))
    stream.create(WatchCreate(b"c"))
    stream.create(WatchCreate(b"a", start_revision=1, progress_notify=True))  # unsynced
    take_all(stream)
    stream.request_progress()
    assert take_all(stream) == [WatchResponse(INVALID_WATCH_ID, 2)]
    world.write(("put", b"a"))
    take_all(stream)
    stream.progress_tick()
    assert take_all(stream) == [WatchResponse(1, 3)]  # 0 had events, 3 is unsynced
    stream.progress_tick()
    assert take_all(stream) == [WatchResponse(0, 3), WatchResponse(1, 3)]


# -- compaction ------------------------------------------------------------------------------


def test_a_start_below_the_compact_revision_is_cancelled_with_it() -> None:
    world = World()
    for _ in range(5):
        world.write(("put", b"a"))
    world.store.compact(4)
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a", start_revision=3))
    stream.create(WatchCreate(b"a", start_revision=4))  # at the compact revision: allowed
    world.catch_up_all()
    responses = take_all(stream)
    assert responses[2] == WatchResponse(0, 0, canceled=True, compact_revision=4)
    assert [e.kv.mod_revision for e in responses[3].events] == [4, 5, 6]
    assert responses[3].events[0].prev_kv is None
    stream.cancel(0)  # the id stays taken until the client cancels it, as in etcd
    assert take_all(stream) == [WatchResponse(0, 6, canceled=True)]


def test_a_slow_watcher_whose_revisions_are_compacted_is_cancelled() -> None:
    store = MvccStore()
    world = World(store)
    world.hub = WatchHub(store, responses_buffered_max=1)
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a"))
    world.write(("put", b"a"))
    world.write(("put", b"a"))  # does not fit: unsynced from revision 3
    world.write(("put", b"a"))
    store.compact(4)
    take_all(stream)
    world.catch_up_all()
    assert take_all(stream)[-1] == WatchResponse(0, 0, canceled=True, compact_revision=4)


def test_prev_kv_is_none_when_the_revision_before_is_compacted() -> None:
    world = World()
    world.write(("put", b"a"))
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a", prev_kv=True))
    take_all(stream)
    world.write(("put", b"a"), publish=False)
    world.store.compact(3)  # applied in the same batch, before the hub hears of 3
    world.publish()
    [response] = take_all(stream)
    assert response.events[0].prev_kv is None


# -- snapshots ----------------------------------------------------------------------------------


def test_after_a_snapshot_install_watchers_read_what_they_missed_from_the_new_state() -> None:
    world = World()
    world.write(("put", b"a"))
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a"))
    stream.create(WatchCreate(b"b", start_revision=7))
    take_all(stream)
    leader = MvccStore()
    for key in (b"a", b"b", b"a", b"b", b"a", b"b", b"b"):
        with leader.write() as txn:
            txn.put(key, b"x")
    world.store.restore(leader.snapshot_items())
    world.hub.resync()
    world.catch_up_all()
    revisions = [(r.watch_id, e.kv.mod_revision) for r in take_all(stream) for e in r.events]
    assert revisions == [(0, 4), (0, 6), (1, 7), (1, 8)]
    assert world.hub.revision == 8 and len(world.hub.synced) == 2


def test_a_snapshot_that_compacted_a_watchers_revisions_cancels_it() -> None:
    world = World()
    world.write(("put", b"a"))
    stream = world.hub.open_stream()
    stream.create(WatchCreate(b"a"))
    take_all(stream)
    leader = MvccStore()
    for _ in range(6):
        with leader.write() as txn:
            txn.put(b"a", b"x")
    leader.compact(5)
    world.store.restore(leader.snapshot_items())
    world.hub.resync()
    world.catch_up_all()
    assert take_all(stream) == [WatchResponse(0, 0, canceled=True, compact_revision=5)]


# -- the model check ---------------------------------------------------------------------------


def _random_create(rng: Random, revision: int) -> WatchCreate:
    key = rng.choice(KEYS)
    range_end = rng.choice([b"", b"", b"\0", b"b0", b"d"])
    if range_end not in (b"", b"\0") and key >= range_end:
        range_end = b""
    return WatchCreate(
        key,
        range_end,
        start_revision=rng.choice([0, 0, max(1, revision - rng.randint(0, 8)), revision + 2]),
        no_put=rng.random() < 0.1,
        no_delete=rng.random() < 0.1,
        prev_kv=rng.random() < 0.5,
    )


@pytest.mark.parametrize("seed", range(40))
def test_every_watcher_sees_exactly_its_history_whatever_the_interleaving(seed: int) -> None:
    rng = Random(seed)
    store = MvccStore()
    world = World(store)
    world.hub = WatchHub(
        store,
        responses_buffered_max=rng.randint(1, 6),
        catch_up_watchers_max=rng.randint(1, 4),
        catch_up_revisions_max=rng.randint(1, 5),
        catch_up_events_max=rng.randint(1, 5),
    )
    streams = [world.hub.open_stream() for _ in range(3)]
    received: dict[int, list[WatchResponse]] = {id(s): [] for s in streams}
    watchers: list[tuple[WatchStream, int, WatchCreate, int]] = []
    canceled: set[tuple[int, int]] = set()
    for _ in range(120):
        roll = rng.random()
        if roll < 0.45:
            ops = [(rng.choice(["put", "put", "delete"]), k) for k in rng.sample(KEYS, 2)]
            world.write(*ops)
        elif roll < 0.6:
            stream = rng.choice(streams)
            request = _random_create(rng, store.current_revision)
            stream.create(request)
            start = request.start_revision or world.hub.revision + 1
            watchers.append((stream, stream.watch_ids()[-1], request, start))
        elif roll < 0.8:
            stream = rng.choice(streams)
            received[id(stream)] += stream.take(rng.randint(1, 4))
        elif roll < 0.95:
            world.hub.catch_up()
        elif watchers:
            stream, watch_id, _, _ = rng.choice(watchers)
            stream.cancel(watch_id)
            canceled.add((id(stream), watch_id))
    for _ in range(10_000):
        for stream in streams:
            received[id(stream)] += take_all(stream)
        if not world.hub.catch_up() and not any(len(s) for s in streams):
            break
    assert not world.hub.unsynced
    for stream, watch_id, request, start in watchers:
        got = events_of(received[id(stream)], watch_id)
        want = expected_events(world.history, request, start)
        if (id(stream), watch_id) in canceled:
            assert got == want[: len(got)]  # a prefix: nothing after the cancel
        else:
            assert got == want, (seed, watch_id, request)
    for responses in received.values():
        for response in responses:
            assert all(e.kv.mod_revision <= response.revision for e in response.events)
