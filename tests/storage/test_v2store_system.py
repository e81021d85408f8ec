"""The v2 store's system namespace (etcd's ``/2``, where v2 auth keeps its records): shares
the index with the keys, is out of reach of key paths, hidden from watchers, and persists."""

from __future__ import annotations

import pytest
import trio

from storage.v2store.model import ErrorCode, V2Error, V2Request
from storage.v2store.store import V2Store, system_path
from tests.storage.test_v2store_persist import DictKV

T0 = 1_795_215_296 * 1_000_000_000


def put(path: str, value: str = "", *, dir: bool = False, exist: bool | None = None) -> V2Request:
    return V2Request("PUT", path, value, dir=dir, prev_exist=exist, time_ns=T0)


def test_system_writes_move_the_index_but_stay_out_of_the_key_tree() -> None:
    store = V2Store()
    store.apply(put("/a", "1"))
    event = store.apply(put(system_path("/2/users/alice"), '{"user":"alice"}', exist=False))
    assert event is not None
    assert (event.node.key, event.node.created_index, store.index) == ("/2/users/alice", 2, 2)
    # /2 itself was created on the way, at the same index (as etcd's checkDir does)
    assert store.get(system_path("/2"), now_ns=T0).node.created_index == 2
    root = store.get("/", recursive=True, now_ns=T0)
    assert [node.key for node in root.node.nodes or ()] == ["/a"]
    with pytest.raises(V2Error) as raised:
        store.get("/2/users/alice", now_ns=T0)
    assert raised.value.code == ErrorCode.KEY_NOT_FOUND
    assert store.get(system_path("/2/users/alice"), now_ns=T0).node.value == '{"user":"alice"}'


def test_system_operations_are_left_out_of_the_stats() -> None:
    store = V2Store()
    store.apply(put(system_path("/2/enabled"), "false"))
    with pytest.raises(V2Error):
        store.get(system_path("/2/missing"), now_ns=T0)
    assert store.stats_json()["setsSuccess"] == 0
    assert store.stats_json()["getsFail"] == 0


def test_system_nodes_never_expire_and_keep_key_ttls() -> None:
    store = V2Store()
    store.apply(V2Request("PUT", "/x", "1", expiration_ns=T0 + 5, time_ns=T0))
    request = V2Request("PUT", system_path("/x"), "s", expiration_ns=T0 + 5, time_ns=T0)
    store.apply(request)
    store.apply(V2Request("DELETE", system_path("/x"), time_ns=T0))
    events = store.delete_expired(T0 + 10)
    assert [event.node.key for event in events] == ["/x"]  # the key's TTL survived


async def test_system_events_are_never_delivered_and_history_stays_contiguous() -> None:
    store = V2Store()
    watcher = store.watch("/", recursive=True)
    store.apply(put(system_path("/2/enabled"), "true"))
    store.apply(put("/k", "v"))
    with trio.fail_after(1):
        event = await watcher.receive()
    assert (event.node.key, event.index) == ("/k", 2)
    history = store.watch("/", recursive=True, since_index=1)
    with trio.fail_after(1):
        event = await history.receive()
    assert event.node.key == "/k"


def test_system_nodes_persist_in_records_and_snapshots() -> None:
    store = V2Store()
    kv = DictKV()
    store.apply(put(system_path("/2/roles"), dir=True, exist=False))
    store.apply(put(system_path("/2/roles/guest"), "{}", exist=False))
    store.apply(put("/k", "v"))
    kv.write(store.take_changes())
    loaded = V2Store.load(kv)
    assert loaded.index == store.index == 3
    assert loaded.get(system_path("/2/roles/guest"), now_ns=T0).node.value == "{}"
    assert loaded.snapshot() == store.snapshot()
    copy = V2Store()
    copy.restore(store.snapshot())
    assert copy.get(system_path("/2/roles/guest"), now_ns=T0).node.value == "{}"
    store.apply(V2Request("DELETE", system_path("/2/roles/guest"), time_ns=T0))
    kv.write(store.take_changes())
    assert V2Store.load(kv).snapshot() == store.snapshot()
    assert [key for key in kv.data if b"guest" in key] == []
