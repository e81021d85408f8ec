"""v2 watches (ETCD_API.md 1.5): history and 401, what a watcher on a key, a directory or a
subtree sees, hidden keys, refresh and expiry, streams, overflow, removal."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from net.v2json import error_json, error_status, event_json
from storage.v2store.model import Action, Event, V2Error
from storage.v2store.store import V2Store
from storage.v2store.watch import HISTORY_EVENTS_MAX, WATCHER_BUFFER_EVENTS, Watcher

SECOND = 1_000_000_000
T0 = 1_795_215_296 * SECOND


def drain(watcher: Watcher) -> list[Event | None]:
    """Everything buffered; the list ends with None when the watcher is finished."""
    events: list[Event | None] = []
    while True:
        try:
            events.append(watcher.events.receive_nowait())
        except trio.WouldBlock:
            return events
        except trio.EndOfChannel:
            return [*events, None]


def keys(events: list[Event | None]) -> list[tuple[str, str, int] | None]:
    return [None if e is None else (e.action.value, e.node.key, e.index) for e in events]


def test_watch_waits_for_the_next_event_then_ends() -> None:
    store = V2Store()
    store.set("/a", value="1", now_ns=T0)
    watcher = store.watch("/a")
    assert watcher.start_index == 1 and store.stats_json()["watchers"] == 1
    assert drain(watcher) == []
    store.set("/b", value="x", now_ns=T0)
    assert drain(watcher) == []
    store.set("/a", value="2", now_ns=T0)
    assert keys(drain(watcher)) == [("set", "/a", 3), None]
    assert store.stats_json()["watchers"] == 0
    store.set("/a", value="3", now_ns=T0)  # nobody is told any more


def test_wait_index_in_the_history_returns_at_once() -> None:
    store = V2Store()
    for value in "123":
        store.set("/k", value=value, now_ns=T0)
    store.set("/other", value="x", now_ns=T0)
    watcher = store.watch("/k", since_index=2)
    events = drain(watcher)
    assert keys(events) == [("set", "/k", 2), None]
    first = events[0]
    # the event carries the store index at the watch, like the X-Etcd-Index header
    assert first is not None and first.etcd_index == 4 and watcher.start_index == 4
    assert first.node.value == "2"
    assert store.stats_json()["watchers"] == 0
    # an index after the last event of the key but not in the future: waits
    watcher = store.watch("/k", since_index=4)
    assert drain(watcher) == []


def test_future_wait_index_skips_earlier_events() -> None:
    store = V2Store()
    watcher = store.watch("/k", since_index=3)
    store.set("/k", value="1", now_ns=T0)
    store.set("/k", value="2", now_ns=T0)
    assert drain(watcher) == []
    store.set("/k", value="3", now_ns=T0)
    assert keys(drain(watcher)) == [("set", "/k", 3), None]


def test_history_is_1000_events_then_401() -> None:
    assert HISTORY_EVENTS_MAX == 1000
    store = V2Store()
    for step in range(1127):
        store.set("/k", value=str(step), now_ns=T0)
    oldest = 1127 - 1000 + 1
    with pytest.raises(V2Error) as error:
        store.watch("/k", since_index=5)
    assert json.dumps(error_json(error.value), separators=(",", ":")) == (
        '{"errorCode":401,"message":"The event in requested index is outdated and cleared",'
        f'"cause":"the requested history has been cleared [{oldest}/5]","index":1127}}'
    )
    assert error_status(error.value) == 400
    assert keys(drain(store.watch("/k", since_index=oldest))) == [("set", "/k", oldest), None]


def test_recursive_sees_the_subtree_but_not_hidden_keys() -> None:
    store = V2Store()
    store.set("/dir/x", value="0", now_ns=T0)
    flat = store.watch("/dir", stream=True)
    deep = store.watch("/dir", recursive=True, stream=True)
    root = store.watch("/", recursive=True, stream=True)
    store.set("/dir/a/b", value="1", now_ns=T0)
    store.set("/dir/_hidden", value="2", now_ns=T0)
    store.set("/dir/_h/c", value="3", now_ns=T0)
    store.set("/dirt", value="4", now_ns=T0)
    assert drain(flat) == []
    assert keys(drain(deep)) == [("set", "/dir/a/b", 2)]
    assert keys(drain(root)) == [("set", "/dir/a/b", 2), ("set", "/dirt", 5)]
    # a watch on the hidden key itself, or inside a hidden directory, sees it
    hidden = store.watch("/dir/_hidden")
    inside = store.watch("/dir/_h", recursive=True)
    store.set("/dir/_hidden", value="5", now_ns=T0)
    store.set("/dir/_h/c", value="6", now_ns=T0)
    assert keys(drain(hidden)) == [("set", "/dir/_hidden", 6), None]
    assert keys(drain(inside)) == [("set", "/dir/_h/c", 7), None]


def test_history_follows_the_same_rules() -> None:
    store = V2Store()
    store.set("/hd/_h", value="1", now_ns=T0)  # 1
    store.set("/hd/v", value="1", now_ns=T0)  # 2
    store.set("/hdx", value="1", now_ns=T0)  # 3
    assert keys(drain(store.watch("/", recursive=True, since_index=1))) == [
        ("set", "/hd/v", 2),
        None,
    ]
    assert keys(drain(store.watch("/hd", since_index=1))) == []  # waits: no event on /hd itself
    assert keys(drain(store.watch("/hd/_h", since_index=1))) == [("set", "/hd/_h", 1), None]
    store.delete("/hd", recursive=True, now_ns=T0)  # 4
    # the delete of the directory is an event for every key that was under it...
    assert keys(drain(store.watch("/hd/v/deeper", since_index=3))) == [("delete", "/hd", 4), None]
    # ...but not for a sibling whose name merely starts the same
    assert drain(store.watch("/hdx", since_index=4)) == []


def test_directory_watch_sees_its_own_changes() -> None:
    store = V2Store()
    store.set("/d", dir=True, now_ns=T0)
    watcher = store.watch("/d", stream=True)
    store.set("/d/child", value="1", now_ns=T0)
    store.update("/d", expiration_ns=T0 + 100 * SECOND, now_ns=T0)
    store.delete("/d", recursive=True, now_ns=T0)
    assert keys(drain(watcher)) == [("update", "/d", 3), ("delete", "/d", 4)]


def test_deleting_a_directory_notifies_the_watchers_of_its_nodes() -> None:
    """[live] a (non-recursive) watch on /hd/child receives the delete of /hd."""
    store = V2Store()
    store.set("/hd/child", value="1", now_ns=T0)
    store.set("/hd/sub/_h", value="1", now_ns=T0)
    child = store.watch("/hd/child")
    hidden = store.watch("/hd/sub/_h")
    missing = store.watch("/hd/nothing")
    event = store.delete("/hd", recursive=True, now_ns=T0)
    assert drain(child) == [event, None]
    assert drain(hidden) == [event, None]
    assert drain(missing) == []  # nothing was there to remove
    assert store.stats_json()["watchers"] == 1


def test_expiry_notifies_and_refresh_does_not() -> None:
    store = V2Store()
    store.set("/k", value="v", expiration_ns=T0 + SECOND, now_ns=T0)
    watcher = store.watch("/k", stream=True)
    store.update("/k", expiration_ns=T0 + 5 * SECOND, refresh=True, now_ns=T0)
    store.set("/k", expiration_ns=T0 + 6 * SECOND, refresh=True, now_ns=T0)
    store.compare_and_swap(
        "/k", prev_value="v", expiration_ns=T0 + 7 * SECOND, refresh=True, now_ns=T0
    )
    assert drain(watcher) == []
    assert store.index == 4
    (expired,) = store.delete_expired(T0 + 7 * SECOND)
    assert drain(watcher) == [expired]
    assert json.dumps(event_json(expired), separators=(",", ":")) == (
        '{"action":"expire","node":{"key":"/k","modifiedIndex":5,"createdIndex":3},'
        '"prevNode":{"key":"/k","value":"v","expiration":"2026-11-20T22:55:03Z",'
        '"modifiedIndex":4,"createdIndex":3}}'
    )
    # refreshes are in the history (they hold indexes 2..4) but a watch skips them
    assert keys(drain(store.watch("/k", since_index=2))) == [("expire", "/k", 5), None]


def test_a_stream_watcher_gets_each_event_once() -> None:
    """[live] etcd 3.4 sends the delete twice to a stream on the deleted key; we do not."""
    store = V2Store()
    store.set("/w1", value="1", now_ns=T0)
    watcher = store.watch("/w1", stream=True)
    store.delete("/w1", now_ns=T0)
    store.set("/w1", value="2", now_ns=T0)
    assert keys(drain(watcher)) == [("delete", "/w1", 2), ("set", "/w1", 3)]
    assert store.stats_json()["watchers"] == 1


def test_a_stream_from_the_past_replays_the_history_then_goes_on() -> None:
    """[live] etcd 3.4 sends one event and then nothing; we send every one."""
    store = V2Store()
    store.set("/a", value="1", now_ns=T0)
    store.set("/b", value="1", now_ns=T0)
    store.set("/a", value="2", now_ns=T0)
    watcher = store.watch("/a", stream=True, since_index=1)
    assert keys(drain(watcher)) == [("set", "/a", 1), ("set", "/a", 3)]
    store.set("/a", value="3", now_ns=T0)
    assert keys(drain(watcher)) == [("set", "/a", 4)]


def test_a_full_buffer_closes_the_watcher() -> None:
    store = V2Store()
    watcher = store.watch("/", recursive=True, stream=True)
    for step in range(WATCHER_BUFFER_EVENTS + 5):
        store.set(f"/k{step}", value="v", now_ns=T0)
    events = drain(watcher)
    assert len(events) == WATCHER_BUFFER_EVENTS + 1 and events[-1] is None
    assert watcher.overflowed and watcher.closed
    assert store.stats_json()["watchers"] == 0


def test_a_replay_longer_than_the_buffer_closes_the_watcher() -> None:
    store = V2Store()
    for step in range(WATCHER_BUFFER_EVENTS + 5):
        store.set("/k", value=str(step), now_ns=T0)
    watcher = store.watch("/k", stream=True, since_index=1)
    events = drain(watcher)
    assert len(events) == WATCHER_BUFFER_EVENTS + 1 and events[-1] is None
    assert watcher.overflowed and store.stats_json()["watchers"] == 0


def test_remove_is_idempotent_and_stops_delivery() -> None:
    store = V2Store()
    watcher = store.watch("/k", stream=True)
    other = store.watch("/k")
    assert store.stats_json()["watchers"] == 2
    watcher.remove()
    watcher.remove()
    assert store.stats_json()["watchers"] == 1
    store.set("/k", value="v", now_ns=T0)
    with pytest.raises(trio.ClosedResourceError):
        watcher.events.receive_nowait()
    assert keys(drain(other)) == [("set", "/k", 1), None]
    other.remove()
    assert store.stats_json()["watchers"] == 0


def test_a_reader_that_closed_its_end_is_dropped() -> None:
    store = V2Store()
    watcher = store.watch("/k", stream=True)
    watcher.events.close()
    store.set("/k", value="v", now_ns=T0)
    assert store.stats_json()["watchers"] == 0


async def test_a_waiting_task_is_woken() -> None:
    store = V2Store()
    watcher = store.watch("/q", recursive=True)
    received: list[Event] = []

    async def wait() -> None:
        async for event in watcher:
            received.append(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        event = store.create("/q", value="job", unique=True, now_ns=T0)
    assert received == [event]
    assert event.action is Action.CREATE


def test_restore_catches_waiting_watchers_up() -> None:
    ahead = V2Store()
    for step in range(3):
        ahead.set("/k", value=str(step), now_ns=T0)
    ahead.set("/other", value="x", now_ns=T0)
    store = V2Store()
    store.set("/k", value="0", now_ns=T0)
    waiting = store.watch("/k", since_index=2)
    stream = store.watch("/", recursive=True, stream=True)
    store.restore(ahead.snapshot())
    assert keys(drain(waiting)) == [("set", "/k", 2), None]
    assert keys(drain(stream)) == [("set", "/k", 2), ("set", "/k", 3), ("set", "/other", 4)]
    # a watcher that missed events the restored history no longer has is closed
    far = V2Store(history_events_max=2)
    for step in range(8):  # keeps events 7 and 8; the watcher still wants 5
        far.set("/k", value=str(step), now_ns=T0)
    late = store.watch("/k", stream=True)
    store.restore(far.snapshot())
    assert drain(late) == [None] and late.overflowed
