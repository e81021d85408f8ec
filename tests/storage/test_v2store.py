"""The v2 key tree against etcd 3.4.23: every store-level row of ETCD_API.md 1.4 and 1.6, and
the behaviour checked live on 3.4.23 while building it (marked [live]).

Replies are compared as exact JSON. etcd's store index starts higher than ours (its cluster
bootstrap writes into the same store), so the tests that reproduce a recorded sequence start
the store at etcd's index with ``store_at``, and add a hidden write where etcd's recorded
index jumps for such a reason.
"""

from __future__ import annotations

import calendar
import json
import time

import cbor2
import pytest

from net.v2json import error_json, error_status, event_json
from storage.v2store.model import Action, Event, V2Error, V2Request
from storage.v2store.store import PATH_DEPTH_MAX, V2Store, clean_path

SECOND = 1_000_000_000
T0 = calendar.timegm(time.strptime("2026-11-20T22:54:56", "%Y-%m-%dT%H:%M:%S")) * SECOND


def utc_ns(text: str, fraction_ns: int) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")) * SECOND + fraction_ns


def js(event: Event | None, now_ns: int | None = None) -> str:
    assert event is not None
    return json.dumps(event_json(event, now_ns), separators=(",", ":"))


def err(error: pytest.ExceptionInfo[V2Error]) -> str:
    return json.dumps(error_json(error.value), separators=(",", ":"))


def store_at(index: int) -> V2Store:
    """An empty store whose index is ``index`` (as etcd's after its own bootstrap writes)."""
    store = V2Store()
    store.restore(cbor2.dumps([1, index, [], []]))
    return store


def put(store: V2Store, path: str, value: str = "", **fields: object) -> Event | None:
    fields.setdefault("time_ns", T0)
    return store.apply(V2Request("PUT", path, value=value, **fields))  # type: ignore[arg-type]


def delete(store: V2Store, path: str, **fields: object) -> Event | None:
    fields.setdefault("time_ns", T0)
    return store.apply(V2Request("DELETE", path, **fields))  # type: ignore[arg-type]


def get(store: V2Store, path: str, **fields: object) -> Event | None:
    fields.setdefault("time_ns", T0)
    return store.apply(V2Request("GET", path, **fields))  # type: ignore[arg-type]


def post(store: V2Store, path: str, value: str = "", **fields: object) -> Event | None:
    fields.setdefault("time_ns", T0)
    return store.apply(V2Request("POST", path, value=value, **fields))  # type: ignore[arg-type]


# -- ETCD_API.md 1.4, in order -----------------------------------------------------------------


def test_recorded_session_keys_ttl_and_compare() -> None:
    store = store_at(3)
    event = put(store, "/message", "Hello world")
    assert js(event) == (
        '{"action":"set","node":{"key":"/message","value":"Hello world","modifiedIndex":4,'
        '"createdIndex":4}}'
    )
    assert event is not None and event.created() and event.etcd_index == 4

    event = put(store, "/message", "Hello etcd")
    assert js(event) == (
        '{"action":"set","node":{"key":"/message","value":"Hello etcd","modifiedIndex":5,'
        '"createdIndex":5},"prevNode":{"key":"/message","value":"Hello world",'
        '"modifiedIndex":4,"createdIndex":4}}'
    )
    assert event is not None and not event.created()

    with pytest.raises(V2Error) as error:
        get(store, "/missing")
    assert err(error) == '{"errorCode":100,"message":"Key not found","cause":"/missing","index":5}'
    assert error_status(error.value) == 404

    # PUT ?ttl=20 value=bar: the HTTP layer turns the ttl into proposer time + 20 s
    expiration = utc_ns("2026-11-20T22:55:16", 459540957)
    t_set = expiration - 20 * SECOND
    event = put(store, "/foo", "bar", expiration_ns=expiration, time_ns=t_set)
    assert js(event) == (
        '{"action":"set","node":{"key":"/foo","value":"bar",'
        '"expiration":"2026-11-20T22:55:16.459540957Z","ttl":20,"modifiedIndex":6,'
        '"createdIndex":6}}'
    )
    assert event is not None and event.created()

    # ttl=30 refresh=true prevExist=true: an update that keeps value and createdIndex
    refreshed = utc_ns("2026-11-20T22:55:26", 466037431)
    t_refresh = refreshed - 30 * SECOND
    event = put(
        store, "/foo", expiration_ns=refreshed, refresh=True, prev_exist=True, time_ns=t_refresh
    )
    assert js(event) == (
        '{"action":"update","node":{"key":"/foo","value":"bar",'
        '"expiration":"2026-11-20T22:55:26.466037431Z","ttl":30,"modifiedIndex":7,'
        '"createdIndex":6},"prevNode":{"key":"/foo","value":"bar",'
        '"expiration":"2026-11-20T22:55:16.459540957Z","ttl":20,"modifiedIndex":6,'
        '"createdIndex":6}}'
    )
    assert event is not None and not event.created()

    # ttl= (empty) value=bar: no expiration, and set re-creates
    event = put(store, "/foo", "bar", time_ns=t_refresh + SECOND // 10)
    assert js(event) == (
        '{"action":"set","node":{"key":"/foo","value":"bar","modifiedIndex":8,'
        '"createdIndex":8},"prevNode":{"key":"/foo","value":"bar",'
        '"expiration":"2026-11-20T22:55:26.466037431Z","ttl":30,"modifiedIndex":7,'
        '"createdIndex":6}}'
    )
    assert event is not None and not event.created()

    put(store, "/_cluster_write", "x")  # etcd's recorded index moves by one here

    with pytest.raises(V2Error) as error:
        put(store, "/foo", "three", prev_exist=False)
    assert err(error) == '{"errorCode":105,"message":"Key already exists","cause":"/foo","index":9}'
    assert error_status(error.value) == 412

    with pytest.raises(V2Error) as error:
        put(store, "/foo", "three", prev_value="two")
    assert err(error) == (
        '{"errorCode":101,"message":"Compare failed","cause":"[two != bar]","index":9}'
    )
    assert error_status(error.value) == 412

    event = put(store, "/foo", "three", prev_value="bar")
    assert js(event) == (
        '{"action":"compareAndSwap","node":{"key":"/foo","value":"three","modifiedIndex":10,'
        '"createdIndex":8},"prevNode":{"key":"/foo","value":"bar","modifiedIndex":8,'
        '"createdIndex":8}}'
    )

    with pytest.raises(V2Error) as error:
        put(store, "/foo", "x", prev_index=1)
    assert err(error) == (
        '{"errorCode":101,"message":"Compare failed","cause":"[1 != 10]","index":10}'
    )

    with pytest.raises(V2Error) as error:
        put(store, "/newkey", "x", prev_exist=True)
    assert error.value.code == 100 and error_status(error.value) == 404

    event = delete(store, "/foo", prev_index=10)
    assert js(event) == (
        '{"action":"compareAndDelete","node":{"key":"/foo","modifiedIndex":11,'
        '"createdIndex":8},"prevNode":{"key":"/foo","value":"three","modifiedIndex":10,'
        '"createdIndex":8}}'
    )
    assert store.index == 11


def test_recorded_session_directories() -> None:
    store = store_at(11)
    event = put(store, "/dir", dir=True)
    assert js(event) == (
        '{"action":"set","node":{"key":"/dir","dir":true,"modifiedIndex":12,"createdIndex":12}}'
    )
    assert event is not None and event.created()

    expiration = T0 + 30 * SECOND
    with pytest.raises(V2Error) as error:
        put(store, "/dir", dir=True, expiration_ns=expiration)
    assert err(error) == '{"errorCode":102,"message":"Not a file","cause":"/dir","index":12}'
    assert error_status(error.value) == 403

    event = put(store, "/dir", dir=True, expiration_ns=expiration, prev_exist=True)
    assert js(event) == (
        '{"action":"update","node":{"key":"/dir","dir":true,'
        '"expiration":"2026-11-20T22:55:26Z","ttl":30,"modifiedIndex":13,"createdIndex":12},'
        '"prevNode":{"key":"/dir","dir":true,"modifiedIndex":12,"createdIndex":12}}'
    )
    put(store, "/dir/child", "c")

    with pytest.raises(V2Error) as error:
        delete(store, "/dir")
    assert err(error) == '{"errorCode":102,"message":"Not a file","cause":"/dir","index":14}'
    with pytest.raises(V2Error) as error:
        delete(store, "/dir", dir=True)
    assert err(error) == (
        '{"errorCode":108,"message":"Directory not empty","cause":"/dir","index":14}'
    )
    assert error_status(error.value) == 403

    event = delete(store, "/dir", recursive=True)
    assert js(event) == (
        '{"action":"delete","node":{"key":"/dir","dir":true,"modifiedIndex":15,'
        '"createdIndex":12},"prevNode":{"key":"/dir","dir":true,'
        '"expiration":"2026-11-20T22:55:26Z","ttl":30,"modifiedIndex":12,"createdIndex":12}}'
    )

    put(store, "/newkey", "x")
    with pytest.raises(V2Error) as error:
        put(store, "/newkey/sub", "1")
    assert err(error) == (
        '{"errorCode":104,"message":"Not a directory","cause":"/newkey","index":16}'
    )
    assert error_status(error.value) == 400

    with pytest.raises(V2Error) as error:
        put(store, "/", "1")
    assert err(error) == ('{"errorCode":107,"message":"Root is read only","cause":"/","index":16}')
    assert error_status(error.value) == 400


def test_recorded_session_in_order_keys() -> None:
    store = store_at(12)
    event = post(store, "/queue", "Job1")
    assert js(event) == (
        '{"action":"create","node":{"key":"/queue/00000000000000000013","value":"Job1",'
        '"modifiedIndex":13,"createdIndex":13}}'
    )
    assert event is not None and event.created()
    post(store, "/queue", "Job2")
    event = get(store, "/queue", recursive=True, sorted=True)
    assert js(event) == (
        '{"action":"get","node":{"key":"/queue","dir":true,"nodes":['
        '{"key":"/queue/00000000000000000013","value":"Job1","modifiedIndex":13,'
        '"createdIndex":13},{"key":"/queue/00000000000000000014","value":"Job2",'
        '"modifiedIndex":14,"createdIndex":14}],"modifiedIndex":13,"createdIndex":13}}'
    )
    assert event is not None and not event.created() and event.etcd_index == 14


def test_recorded_expire_events() -> None:
    """1.5: an expire event has a node without a value and a prevNode without ttl."""
    store = store_at(25)
    expiration = utc_ns("2026-11-20T22:55:16", 331805620)
    put(store, "/exp2", "e", expiration_ns=expiration, time_ns=expiration - SECOND)
    events = store.delete_expired(expiration + SECOND // 2)
    assert [js(event) for event in events] == [
        '{"action":"expire","node":{"key":"/exp2","modifiedIndex":27,"createdIndex":26},'
        '"prevNode":{"key":"/exp2","value":"e","expiration":"2026-11-20T22:55:16.33180562Z",'
        '"modifiedIndex":26,"createdIndex":26}}'
    ]
    assert store.stats_json()["expireCount"] == 1


# -- more behaviour checked live on etcd 3.4.23 ------------------------------------------------


def test_missing_path_cause_is_the_first_missing_segment() -> None:
    store = V2Store()
    with pytest.raises(V2Error) as error:
        get(store, "/a/b/c")
    assert (error.value.code, error.value.cause) == (100, "/a")
    put(store, "/d/sub/k", "1")
    with pytest.raises(V2Error) as error:
        get(store, "/d/sub/k/deeper")
    assert (error.value.code, error.value.cause) == (104, "/d/sub/k")


def test_intermediate_directories_take_the_new_index() -> None:
    store = V2Store()
    put(store, "/d/sub/k", "1")
    event = get(store, "/", recursive=True)
    assert js(event) == (
        '{"action":"get","node":{"dir":true,"nodes":[{"key":"/d","dir":true,"nodes":['
        '{"key":"/d/sub","dir":true,"nodes":[{"key":"/d/sub/k","value":"1","modifiedIndex":1,'
        '"createdIndex":1}],"modifiedIndex":1,"createdIndex":1}],"modifiedIndex":1,'
        '"createdIndex":1}]}}'
    )


def test_directory_ttl_update_leaves_its_modified_index() -> None:
    """[live] the update event shows the new index; the directory keeps the old one."""
    store = V2Store()
    put(store, "/d/sub/k", "1")
    expiration = T0 + 100 * SECOND
    event = put(store, "/d", dir=True, expiration_ns=expiration, prev_exist=True)
    assert event is not None and event.node.modified_index == 2
    listed = get(store, "/d")
    assert js(listed) == (
        '{"action":"get","node":{"key":"/d","dir":true,"expiration":"2026-11-20T22:56:36Z",'
        '"ttl":100,"nodes":[{"key":"/d/sub","dir":true,"modifiedIndex":1,"createdIndex":1}],'
        '"modifiedIndex":1,"createdIndex":1}}'
    )
    for fields in ({"dir": True}, {}):
        with pytest.raises(V2Error) as error:
            put(store, "/d", "x", prev_exist=True, **fields)
        assert (error.value.code, error.value.cause, error.value.index) == (102, "/d", 2)


def test_delete_a_key_with_dir_true() -> None:
    store = V2Store()
    put(store, "/f", "1")
    event = delete(store, "/f", dir=True)
    assert js(event) == (
        '{"action":"delete","node":{"key":"/f","modifiedIndex":2,"createdIndex":1},'
        '"prevNode":{"key":"/f","value":"1","modifiedIndex":1,"createdIndex":1}}'
    )


def test_set_with_refresh_recreates_the_key() -> None:
    """[live] PUT ttl=200 refresh=true without prevExist: action set, new createdIndex."""
    store = V2Store()
    put(store, "/r", "1", expiration_ns=T0 + 100 * SECOND)
    event = put(store, "/r", expiration_ns=T0 + 200 * SECOND, refresh=True)
    assert js(event) == (
        '{"action":"set","node":{"key":"/r","value":"1","expiration":"2026-11-20T22:58:16Z",'
        '"ttl":200,"modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/r","value":"1",'
        '"expiration":"2026-11-20T22:56:36Z","ttl":100,"modifiedIndex":1,"createdIndex":1}}'
    )
    assert event is not None and not event.created() and event.refresh
    with pytest.raises(V2Error) as error:
        put(store, "/missing", expiration_ns=T0 + SECOND, refresh=True)
    assert error.value.code == 100


def test_post_creates_missing_directories_and_refuses_a_key() -> None:
    store = V2Store()
    event = post(store, "/q/w/e", "1")
    assert event is not None and event.node.key == "/q/w/e/00000000000000000001"
    put(store, "/f2", "1")
    with pytest.raises(V2Error) as error:
        post(store, "/f2", "1")
    assert (error.value.code, error.value.cause, error.value.index) == (104, "/f2", 2)
    # [live] etcd counts that failure as a failed create and a failed set
    stats = store.stats_json()
    assert (stats["createFail"], stats["setsFail"]) == (1, 1)


def test_post_into_an_existing_directory() -> None:
    store = V2Store()
    put(store, "/f", "1")
    delete(store, "/f")
    event = post(store, "/f", "1")  # /f is gone: the POST makes it a directory
    assert event is not None and event.node.key == "/f/00000000000000000003"


def test_root_rules() -> None:
    store = V2Store()
    for call in (
        lambda: delete(store, "/"),
        lambda: put(store, "/", "1", prev_value="x"),
        lambda: put(store, "/", "1", prev_exist=True),
        lambda: put(store, "/", "1", prev_exist=False),
        lambda: put(store, "/", dir=True),
    ):
        with pytest.raises(V2Error) as error:
            call()
        assert (error.value.code, error.value.cause) == (107, "/")
    # [live] a compare-and-delete of the root: 102 with no cause
    with pytest.raises(V2Error) as error:
        delete(store, "/", prev_value="x")
    assert err(error) == '{"errorCode":102,"message":"Not a file","index":0}'
    assert js(get(store, "/")) == '{"action":"get","node":{"dir":true}}'


def test_compare_on_directories_and_both_conditions() -> None:
    store = V2Store()
    put(store, "/dd", dir=True)
    with pytest.raises(V2Error) as error:
        delete(store, "/dd", prev_index=1)
    assert (error.value.code, error.value.cause) == (102, "/dd")
    with pytest.raises(V2Error) as error:
        put(store, "/dd", "1", prev_index=1)
    assert (error.value.code, error.value.cause) == (102, "/dd")
    put(store, "/ff", "a")
    with pytest.raises(V2Error) as error:
        put(store, "/ff", "1", prev_index=1, prev_value="b")
    assert (error.value.code, error.value.cause, error.value.index) == (
        101,
        "[b != a] [1 != 2]",
        2,
    )
    with pytest.raises(V2Error) as error:
        delete(store, "/ff", prev_value="b")
    assert error.value.cause == "[b != a]"
    event = delete(store, "/ff", prev_value="a", prev_index=2)
    assert event is not None and event.action is Action.COMPARE_AND_DELETE


def test_compare_and_swap_with_ttl_zero_expires_at_once() -> None:
    """[live] ttl=0: expiration = now, no ttl shown; gone at the next SYNC."""
    store = V2Store()
    put(store, "/ff", "a")
    event = put(store, "/ff", "1", prev_value="a", expiration_ns=T0)
    assert js(event) == (
        '{"action":"compareAndSwap","node":{"key":"/ff","value":"1",'
        '"expiration":"2026-11-20T22:54:56Z","modifiedIndex":2,"createdIndex":1},'
        '"prevNode":{"key":"/ff","value":"a","modifiedIndex":1,"createdIndex":1}}'
    )
    store.apply(V2Request("SYNC", "", time_ns=T0 + 1))
    with pytest.raises(V2Error) as error:
        get(store, "/ff")
    assert (error.value.code, error.value.index) == (100, 3)


def test_expire_a_directory_with_children() -> None:
    """[live] the expire event of a directory has dir:true; children go with it."""
    store = V2Store()
    put(store, "/ed", dir=True, expiration_ns=T0 + SECOND)
    put(store, "/ed/c", "v", expiration_ns=T0 + 5 * SECOND)
    put(store, "/ed/p", "v")
    events = store.delete_expired(T0 + SECOND)
    assert [js(event) for event in events] == [
        '{"action":"expire","node":{"key":"/ed","dir":true,"modifiedIndex":4,"createdIndex":1},'
        '"prevNode":{"key":"/ed","dir":true,"expiration":"2026-11-20T22:54:57Z",'
        '"modifiedIndex":1,"createdIndex":1}}'
    ]
    assert not store.has_ttl_keys()
    assert store.delete_expired(T0 + 10 * SECOND) == []
    assert store.index == 4


# -- paths, hidden keys, listings --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("", "/"),
        ("/", "/"),
        ("a", "/a"),
        ("/a/", "/a"),
        ("//a//b/", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/../..", "/"),
        ("..", "/"),
        ("/a/b/..", "/a"),
        ("/_x/.", "/_x"),
    ],
)
def test_clean_path_is_gos(raw: str, clean: str) -> None:
    assert clean_path(raw) == clean


def test_paths_are_cleaned_everywhere() -> None:
    store = V2Store()
    event = put(store, "a//b/../c/", "1")
    assert event is not None and event.node.key == "/a/c"
    assert js(get(store, "/a/./c")).startswith('{"action":"get","node":{"key":"/a/c"')


def test_hidden_keys_are_left_out_of_listings() -> None:
    store = V2Store()
    put(store, "/hd/_h", "1")
    put(store, "/hd/v", "2")
    put(store, "/_top/x", "3")
    assert js(get(store, "/hd")) == (
        '{"action":"get","node":{"key":"/hd","dir":true,"nodes":[{"key":"/hd/v","value":"2",'
        '"modifiedIndex":2,"createdIndex":2}],"modifiedIndex":1,"createdIndex":1}}'
    )
    assert js(get(store, "/hd/_h")) == (
        '{"action":"get","node":{"key":"/hd/_h","value":"1","modifiedIndex":1,"createdIndex":1}}'
    )
    root = get(store, "/", recursive=True)
    assert root is not None and [n.key for n in root.node.nodes or ()] == ["/hd"]
    # a hidden directory lists its own children
    listed = get(store, "/_top")
    assert listed is not None and [n.key for n in listed.node.nodes or ()] == ["/_top/x"]


def test_listings_are_sorted_and_empty_directories_have_no_nodes() -> None:
    store = V2Store()
    for name in ("b", "a", "c/x", "a0", "B", "_z"):
        put(store, "/s/" + name, name)
    put(store, "/empty", dir=True)
    listed = get(store, "/s", sorted=True)
    assert listed is not None
    assert [n.key for n in listed.node.nodes or ()] == ["/s/B", "/s/a", "/s/a0", "/s/b", "/s/c"]
    unsorted = get(store, "/s")
    assert unsorted is not None and unsorted.node == listed.node
    # not recursive: a child directory has no nodes
    assert listed.node.nodes is not None and listed.node.nodes[-1].nodes is None
    assert js(get(store, "/empty")) == (
        '{"action":"get","node":{"key":"/empty","dir":true,"modifiedIndex":7,"createdIndex":7}}'
    )


def test_empty_values_are_kept() -> None:
    store = V2Store()
    assert js(put(store, "/e")) == (
        '{"action":"set","node":{"key":"/e","value":"","modifiedIndex":1,"createdIndex":1}}'
    )


def test_paths_too_deep_are_refused() -> None:
    store = V2Store()
    deep = "/a" * PATH_DEPTH_MAX
    put(store, deep, "ok")
    with pytest.raises(V2Error) as error:
        put(store, "/b" * (PATH_DEPTH_MAX + 1), "no")
    assert error.value.code == 209
    assert store.index == 1
    with pytest.raises(V2Error):
        post(store, deep, "no")
    tree = get(store, "/", recursive=True)
    assert tree is not None
    json.dumps(event_json(tree))


# -- set, create, update, delete details -------------------------------------------------------


def test_create_and_update_preconditions() -> None:
    store = V2Store()
    event = put(store, "/k", "v", prev_exist=False)
    assert event is not None and event.action is Action.CREATE and event.created()
    event = put(store, "/k", "w", prev_exist=True)
    assert js(event) == (
        '{"action":"update","node":{"key":"/k","value":"w","modifiedIndex":2,"createdIndex":1},'
        '"prevNode":{"key":"/k","value":"v","modifiedIndex":1,"createdIndex":1}}'
    )
    # prevExist=true with a compare: compare-and-swap
    event = put(store, "/k", "x", prev_exist=True, prev_value="w")
    assert event is not None and event.action is Action.COMPARE_AND_SWAP
    # a directory with prevExist=false
    event = put(store, "/newdir", dir=True, prev_exist=False)
    assert js(event) == (
        '{"action":"create","node":{"key":"/newdir","dir":true,"modifiedIndex":4,"createdIndex":4}}'
    )
    with pytest.raises(V2Error) as error:
        put(store, "/newdir", dir=True, prev_exist=False)
    assert (error.value.code, error.value.cause, error.value.index) == (105, "/newdir", 4)


def test_update_without_ttl_makes_the_key_permanent() -> None:
    store = V2Store()
    put(store, "/k", "v", expiration_ns=T0 + 10 * SECOND)
    event = put(store, "/k", "w", prev_exist=True)
    assert event is not None and event.node.expiration_ns is None
    assert not store.has_ttl_keys()
    assert store.delete_expired(T0 + 20 * SECOND) == []


def test_expirations_before_2000_mean_none_on_set_and_create() -> None:
    store = V2Store()
    event = put(store, "/k", "v", expiration_ns=1)
    assert event is not None and event.node.expiration_ns is None
    event = post(store, "/q", "v", expiration_ns=5)
    assert event is not None and event.node.expiration_ns is None
    # an update takes it as it is, and the key expires at the next SYNC
    event = put(store, "/k", "w", prev_exist=True, expiration_ns=1)
    assert event is not None and event.node.expiration_ns == 1
    assert [e.node.key for e in store.delete_expired(T0)] == ["/k"]


def test_set_on_a_directory_and_through_a_key() -> None:
    store = V2Store()
    put(store, "/d/k", "1")
    with pytest.raises(V2Error) as error:
        put(store, "/d", "v")
    assert (error.value.code, error.value.cause) == (102, "/d")
    with pytest.raises(V2Error) as error:
        put(store, "/d/k/x/y", "v", prev_exist=False)
    assert (error.value.code, error.value.cause) == (104, "/d/k")
    with pytest.raises(V2Error) as error:
        put(store, "/d/k/x", "v", prev_exist=True)
    assert (error.value.code, error.value.cause) == (104, "/d/k")
    assert store.index == 1


def test_delete_missing_and_recursive_implies_dir() -> None:
    store = V2Store()
    with pytest.raises(V2Error) as error:
        delete(store, "/nope")
    assert (error.value.code, error.value.cause, error.value.index) == (100, "/nope", 0)
    put(store, "/d", dir=True)
    event = delete(store, "/d", recursive=True)
    assert event is not None and event.node.dir
    put(store, "/e", dir=True)
    event = delete(store, "/e", dir=True)
    assert event is not None and event.action is Action.DELETE and event.node.dir


def test_failed_writes_do_not_move_the_index_and_reads_never_do() -> None:
    store = V2Store()
    put(store, "/a", "1")
    for call in (
        lambda: put(store, "/a", "2", prev_exist=False),
        lambda: put(store, "/a", "2", prev_value="x"),
        lambda: delete(store, "/b"),
        lambda: get(store, "/b"),
    ):
        with pytest.raises(V2Error):
            call()
    get(store, "/a")
    store.apply(V2Request("QGET", "/a", time_ns=T0))
    store.apply(V2Request("SYNC", "", time_ns=T0))
    assert store.index == 1


# -- TTLs --------------------------------------------------------------------------------------


def test_ttl_counts_down_with_the_read_time() -> None:
    store = V2Store()
    put(store, "/t", "v", expiration_ns=T0 + 10 * SECOND)
    assert get(store, "/t", time_ns=T0 + SECOND // 2) is not None
    event = get(store, "/t", time_ns=T0 + 3 * SECOND + 1)
    assert event is not None and event_json(event)["node"]["ttl"] == 7
    # past its expiration but before a SYNC: still there, no ttl, then a negative one
    event = get(store, "/t", time_ns=T0 + 10 * SECOND + SECOND // 2)
    assert event is not None and "ttl" not in event_json(event)["node"]
    event = get(store, "/t", time_ns=T0 + 12 * SECOND)
    assert event is not None and event_json(event)["node"]["ttl"] == -2


def test_delete_expired_order_and_cutoff() -> None:
    store = V2Store()
    put(store, "/b", "1", expiration_ns=T0 + 5 * SECOND)
    put(store, "/a", "1", expiration_ns=T0 + 5 * SECOND)
    put(store, "/c", "1", expiration_ns=T0 + 2 * SECOND)
    put(store, "/p", "1")
    assert store.next_expiration_ns() == T0 + 2 * SECOND
    assert store.delete_expired(T0 + 2 * SECOND - 1) == []
    events = store.delete_expired(T0 + 5 * SECOND)  # at the expiration: expired
    assert [(e.node.key, e.index) for e in events] == [("/c", 5), ("/a", 6), ("/b", 7)]
    assert store.next_expiration_ns() is None and not store.has_ttl_keys()


def test_refresh_and_replace_move_the_expiration() -> None:
    store = V2Store()
    put(store, "/k", "1", expiration_ns=T0 + 5 * SECOND)
    put(store, "/k", expiration_ns=T0 + 50 * SECOND, prev_exist=True, refresh=True)
    assert store.delete_expired(T0 + 10 * SECOND) == []
    put(store, "/k", "2", expiration_ns=T0 + 60 * SECOND, prev_value="1", refresh=True)
    event = get(store, "/k")
    assert event is not None and event.node.value == "1"  # refresh keeps the value
    put(store, "/k", "3")  # set without a ttl
    assert store.delete_expired(T0 + 100 * SECOND) == []


def test_many_refreshes_keep_the_ttl_heap_bounded() -> None:
    store = V2Store()
    put(store, "/k", "1", expiration_ns=T0 + SECOND)
    for step in range(1000):
        put(store, "/k", expiration_ns=T0 + (2 + step) * SECOND, prev_exist=True, refresh=True)
    assert len(store._ttl_heap) <= 2 * len(store._ttl) + 65
    assert store.next_expiration_ns() == T0 + 1001 * SECOND


def test_sync_through_apply_returns_none_and_notifies() -> None:
    store = V2Store()
    put(store, "/k", "1", expiration_ns=T0 + SECOND)
    watcher = store.watch("/k")
    assert store.apply(V2Request("SYNC", "", time_ns=T0 + SECOND)) is None
    event = watcher.events.receive_nowait()
    assert event.action is Action.EXPIRE


# -- stats -------------------------------------------------------------------------------------


def test_stats_fields_in_etcds_order() -> None:
    store = V2Store()
    put(store, "/a", "1")
    with pytest.raises(V2Error):
        put(store, "/a/b", "1")
    get(store, "/a")
    with pytest.raises(V2Error):
        get(store, "/zz")
    put(store, "/a", "2", prev_exist=True)
    with pytest.raises(V2Error):
        put(store, "/zz", "2", prev_exist=True)
    put(store, "/c", "1", prev_exist=False)
    put(store, "/c", "2", prev_value="1")
    with pytest.raises(V2Error):
        put(store, "/c", "2", prev_value="1")
    delete(store, "/c", prev_value="2")
    delete(store, "/a")
    with pytest.raises(V2Error):
        delete(store, "/a")
    put(store, "/e", "1", expiration_ns=T0)
    store.delete_expired(T0)
    watcher = store.watch("/w")
    assert list(store.stats_json().items()) == [
        ("getsSuccess", 1),
        ("getsFail", 1),
        ("setsSuccess", 2),
        ("setsFail", 1),
        ("deleteSuccess", 1),
        ("deleteFail", 1),
        ("updateSuccess", 1),
        ("updateFail", 1),
        ("createSuccess", 1),
        ("createFail", 0),
        ("compareAndSwapSuccess", 1),
        ("compareAndSwapFail", 1),
        ("compareAndDeleteSuccess", 1),
        ("compareAndDeleteFail", 0),
        ("expireCount", 1),
        ("watchers", 1),
    ]
    watcher.remove()
    assert store.stats_json()["watchers"] == 0


# -- determinism -------------------------------------------------------------------------------


def test_same_requests_same_state() -> None:
    requests = [
        V2Request("PUT", "/a/b", value="1", time_ns=T0),
        V2Request("POST", "/q", value="x", expiration_ns=T0 + SECOND, time_ns=T0),
        V2Request("PUT", "/a/c", value="2", expiration_ns=T0 + SECOND, time_ns=T0),
        V2Request("SYNC", "", time_ns=T0 + 2 * SECOND),
        V2Request("DELETE", "/a", recursive=True, time_ns=T0 + 3 * SECOND),
    ]
    one, two = V2Store(), V2Store()
    for request in requests:
        decoded = V2Request.decode(request.encode())
        assert one.apply(request) == two.apply(decoded)
    assert one.snapshot() == two.snapshot()
