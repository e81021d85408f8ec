"""v2 store persistence: snapshot/restore for Raft snapshots, and write-through records
(take_changes / load) so that a restarted member does not replay what it applied."""

from __future__ import annotations

import bisect
import contextlib
import random
from collections.abc import Iterator

import cbor2
import pytest

from net.v2json import event_json
from storage.errors import StorageCorrupted
from storage.sealed import seal
from storage.v2store.model import V2Error, V2Request
from storage.v2store.store import KV_PREFIX, V2Store

SECOND = 1_000_000_000
T0 = 1_795_215_296 * SECOND

PATHS = ["/a", "/a/b", "/a/b/c", "/a/_h", "/d", "/d/e", "/_top", "/q", "/q/x"]


class DictKV:
    """The ``scan`` of storage/kv.py over a dict, fed by ``take_changes``."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def write(self, changes: list[tuple[bytes, bytes | None]]) -> None:
        assert changes == sorted(changes, key=lambda change: change[0])
        for key, value in changes:
            assert key.startswith(KV_PREFIX)
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def scan(
        self, start: bytes, end: bytes, *, bulk: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        keys = sorted(self.data)
        low, high = bisect.bisect_left(keys, start), bisect.bisect_left(keys, end)
        return iter([(key, self.data[key]) for key in keys[low:high]])


def random_request(rng: random.Random, now_ns: int) -> V2Request:
    path = rng.choice(PATHS)
    value = rng.choice(["", "v", "w", "long value " * 3])
    expiration_ns = rng.choice([0, 0, now_ns + rng.randrange(1, 5) * SECOND])
    method = rng.choice(["PUT"] * 6 + ["DELETE"] * 3 + ["POST", "SYNC", "QGET"])
    fields: dict[str, object] = {"time_ns": now_ns}
    if method == "PUT":
        fields.update(value=value, expiration_ns=expiration_ns, dir=rng.random() < 0.15)
        choice = rng.randrange(5)
        if choice == 1:
            fields["prev_exist"] = rng.random() < 0.5
        elif choice == 2:
            fields["prev_value"] = rng.choice(["v", "w"])
        elif choice == 3:
            fields["prev_index"] = rng.randrange(1, 30)
        elif choice == 4 and expiration_ns:
            fields.update(refresh=True, value="", prev_exist=rng.random() < 0.5)
    elif method == "DELETE":
        if rng.random() < 0.3:
            fields["prev_value"] = rng.choice(["v", "w"])
        else:
            fields.update(dir=rng.random() < 0.5, recursive=rng.random() < 0.5)
    elif method == "POST":
        fields.update(value=value, expiration_ns=expiration_ns)
    elif method == "QGET":
        fields["recursive"] = True
    return V2Request(method, path if method != "SYNC" else "", **fields)  # type: ignore[arg-type]


def run(store: V2Store, rng: random.Random, steps: int, start_ns: int) -> int:
    now_ns = start_ns
    for _ in range(steps):
        now_ns += rng.randrange(0, SECOND)
        with contextlib.suppress(V2Error):
            store.apply(random_request(rng, now_ns))
    return now_ns


def tree_json(store: V2Store, now_ns: int) -> object:
    event = store.get("/", recursive=True, now_ns=now_ns)
    return event_json(event)


# -- snapshot / restore ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_snapshot_restore_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    store = V2Store()
    now_ns = run(store, rng, 300, T0)
    data = store.snapshot()
    copy = V2Store()
    copy.restore(data)
    assert copy.snapshot() == data
    assert copy.index == store.index
    assert tree_json(copy, now_ns) == tree_json(store, now_ns)
    assert list(copy.hub.history) == list(store.hub.history)
    # the TTLs came along: both expire the same keys
    later = now_ns + 10 * SECOND
    assert copy.delete_expired(later) == store.delete_expired(later)
    # and both go on identically
    run(store, random.Random(seed + 100), 100, later)
    run(copy, random.Random(seed + 100), 100, later)
    assert copy.snapshot() == store.snapshot()


def test_snapshot_is_deterministic_whatever_the_insertion_order() -> None:
    one, two = V2Store(), V2Store()
    for name in ("b", "a", "c"):
        one.set("/" + name, value=name, now_ns=T0)
    for name in ("c", "a", "b"):
        two.set("/" + name, value=name, now_ns=T0)
    for store in (one, two):
        for name in ("a", "b", "c"):
            store.set("/" + name, value=name, now_ns=T0)
    # same tree and index; the histories differ (other values set first), so leave them out
    assert cbor2.loads(one.snapshot())[:3] == cbor2.loads(two.snapshot())[:3]


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\xff",
        cbor2.dumps([2, 0, [], []]),
        cbor2.dumps([1, -1, [], []]),
        cbor2.dumps([1, 0, {}, []]),
        cbor2.dumps([1, 0, [["/a", False, "v", 1, 1]], []]),  # a field missing
        cbor2.dumps([1, 1, [["/a/b", False, "v", 1, 1, 0]], []]),  # no parent
        cbor2.dumps([1, 1, [["/a", False, "v", 1, 1, 0], ["/a/b", False, "v", 1, 1, 0]], []]),
        cbor2.dumps([1, 1, [["/a", False, "v", 1, 1, 0], ["/a", False, "v", 1, 1, 0]], []]),
        cbor2.dumps([1, 1, [["a", False, "v", 1, 1, 0]], []]),  # not clean
        cbor2.dumps([1, 1, [["/a/../b", False, "v", 1, 1, 0]], []]),
        cbor2.dumps([1, 1, [["/", True, "", 1, 1, 0]], []]),
        cbor2.dumps([1, 1, [["/a", True, "v", 1, 1, 0]], []]),  # a directory with a value
        cbor2.dumps([1, 1, [["/a", 0, "v", 1, 1, 0]], []]),
        cbor2.dumps([1, 1, [["/a", False, "v", 1, 1, -1]], []]),
        cbor2.dumps([1, 1, [], [["set", ["/a", "v", False, None, 1, 1], None, 1, 0, False]] * 2]),
        cbor2.dumps([1, 1, [], [["nope", ["/a", "v", False, None, 1, 1], None, 1, 0, False]]]),
        cbor2.dumps([1, 1, [], [["set", ["/a", 5, False, None, 1, 1], None, 1, 0, False]]]),
        cbor2.dumps([1, 0, [], [["set", ["/a", "v", False, None, 1, 1], None, 1, 0, False]]]),
    ],
)
def test_restore_refuses_malformed_snapshots_and_changes_nothing(bad: bytes) -> None:
    store = V2Store()
    store.set("/keep", value="me", now_ns=T0)
    before = store.snapshot()
    with pytest.raises(ValueError):
        store.restore(bad)
    assert store.snapshot() == before


# -- write-through records ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_load_of_the_changes_equals_the_store(seed: int) -> None:
    rng = random.Random(seed)
    store = V2Store(history_events_max=50)
    kv = DictKV()
    now_ns = T0
    for _ in range(40):
        now_ns = run(store, rng, rng.randrange(1, 12), now_ns)
        kv.write(store.take_changes())
        loaded = V2Store.load(kv, history_events_max=50)
        assert loaded.snapshot() == store.snapshot()
    assert tree_json(loaded, now_ns) == tree_json(store, now_ns)
    # no stale records: at most the history capacity, one per node, and the meta record
    nodes = sum(1 for key in kv.data if key.startswith(KV_PREFIX + b"n"))
    history = sum(1 for key in kv.data if key.startswith(KV_PREFIX + b"h"))
    assert history == len(store.hub.history) <= 50
    assert nodes == len(list(store._root.walk())) - 1


def test_a_loaded_store_goes_on_like_the_original() -> None:
    rng = random.Random(7)
    store = V2Store()
    kv = DictKV()
    now_ns = run(store, rng, 200, T0)
    kv.write(store.take_changes())
    loaded = V2Store.load(kv)
    assert loaded.take_changes() == []
    later = now_ns + 5 * SECOND
    assert loaded.delete_expired(later) == store.delete_expired(later)
    run(store, random.Random(8), 200, later)
    run(loaded, random.Random(8), 200, later)
    assert loaded.snapshot() == store.snapshot()
    # the watch history survived the restart
    first = store.hub.history.start_index
    assert next(iter(loaded.hub.history)).index == first


def test_nothing_changed_means_no_records() -> None:
    store = V2Store()
    assert store.take_changes() == []
    store.set("/a", value="1", now_ns=T0)
    assert len(store.take_changes()) == 3  # the node, its event, the index
    store.get("/a", now_ns=T0)
    store.delete_expired(T0)
    with pytest.raises(V2Error):
        store.create("/a", now_ns=T0)
    assert store.take_changes() == []


def test_restore_rewrites_every_record() -> None:
    old = V2Store()
    run(old, random.Random(1), 300, T0)
    new = V2Store()
    run(new, random.Random(2), 150, T0)
    kv = DictKV()
    kv.write(old.take_changes())
    old.restore(new.snapshot())
    kv.write(old.take_changes())
    assert V2Store.load(kv).snapshot() == new.snapshot()
    fresh = DictKV()
    fresh.write(V2Store.load(kv).take_changes())  # a loaded store owes nothing
    assert fresh.data == {}


def test_load_refuses_malformed_records() -> None:
    store = V2Store()
    store.set("/a/b", value="1", now_ns=T0)
    kv = DictKV()
    kv.write(store.take_changes())
    for key, value in [
        (KV_PREFIX + b"n/a/b/c", cbor2.dumps([False, "x", 2, 2, 0])),  # under a key
        (KV_PREFIX + b"n/z/y", cbor2.dumps([False, "x", 2, 2, 0])),  # no parent
        (KV_PREFIX + b"n/\xff", cbor2.dumps([False, "x", 2, 2, 0])),
        (KV_PREFIX + b"n/c", b"\xff"),
        (KV_PREFIX + b"meta", cbor2.dumps([1, "7"])),
        (KV_PREFIX + b"zzz", b""),
        (KV_PREFIX + b"h" + (9).to_bytes(8, "big"), cbor2.dumps(["set"])),
    ]:
        broken = DictKV()
        broken.data = dict(kv.data)
        broken.data[key] = seal(value)  # sealed: the record's own checks must refuse it
        with pytest.raises(ValueError):
            V2Store.load(broken)


def test_load_refuses_a_record_that_fails_its_seal() -> None:
    store = V2Store()
    store.set("/a/b", value="1", now_ns=T0)
    kv = DictKV()
    kv.write(store.take_changes())
    for key, value in sorted(kv.data.items()):
        damaged = bytearray(value)
        damaged[len(damaged) // 2] ^= 0x10  # one bit flipped in the body
        broken = DictKV()
        broken.data = {**kv.data, key: bytes(damaged)}
        with pytest.raises(StorageCorrupted, match="fails its checksum"):
            V2Store.load(broken)


def test_with_the_memory_key_value_store() -> None:
    kv_module = pytest.importorskip("storage.kv")
    kv = kv_module.MemoryKeyValueStore()
    store = V2Store()
    run(store, random.Random(3), 200, T0)
    batch = kv_module.WriteBatch()
    for key, value in store.take_changes():
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    kv.apply(batch)
    assert V2Store.load(kv).snapshot() == store.snapshot()


def test_a_store_that_does_not_persist_records_nothing() -> None:
    store = V2Store(track_changes=False)
    run(store, random.Random(4), 300, T0)
    store.restore(store.snapshot())
    assert store._dirty_paths == {} and store._dirty_records == {}
    with pytest.raises(AssertionError):
        store.take_changes()
