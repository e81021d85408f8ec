"""Per-prefix storage use from the MVCC index, read a page at a time: groups by depth, the
revisions kept, the bound on rows kept."""

from __future__ import annotations

from storage.mvcc.store import MvccStore
from storage.usage.prefixes import prefix_at_depth, prefix_depth, prefixes
from storage.usage.space import UsageScan


def store_with(keys: dict[bytes, list[bytes]]) -> MvccStore:
    store = MvccStore()
    for key, values in keys.items():
        for value in values:
            with store.write() as txn:
                txn.put(key, value)
    return store


def scan(store: MvccStore, prefix: bytes, depth: int, groups_max: int = 100) -> UsageScan:
    usage = UsageScan(prefix, depth, groups_max=groups_max)
    pages = 0
    while not usage.step(store, page_keys=2):
        pages += 1
    assert pages >= 1 or usage.keys_scanned <= 2
    return usage


def test_prefixes_by_depth() -> None:
    assert prefix_at_depth(b"/registry/pods/ns/name", 1) == b"/registry/"
    assert prefix_at_depth(b"/registry/pods/ns/name", 3) == b"/registry/pods/ns/"
    assert prefix_at_depth(b"/registry/pods", 3) == b"/registry/pods"
    assert prefix_at_depth(b"plain", 2) == b"plain" and prefix_at_depth(b"a/b", 1) == b"a/"
    assert prefixes(b"/a/b/c", 3) == [b"/a/b/c", b"/a/", b"/a/b/", b"/a/b/c"]
    samples = (b"", b"/", b"/a", b"/a/", b"/a/b", b"a/b/")
    assert [prefix_depth(p) for p in samples] == [0, 0, 1, 1, 2, 2]


def test_groups_at_a_depth_with_revisions_kept() -> None:
    store = store_with({
        b"/a/x/1": [b"v", b"vv"],
        b"/a/x/2": [b"v"],
        b"/a/y/1": [b"vvv"],
        b"/b/1": [b"v"],
    })  # fmt: skip
    with store.write() as txn:
        txn.delete_range(b"/a/x/2")
    usage = scan(store, b"/a/", 2)
    rows = {row.prefix: row for row in usage.rows()}
    assert set(rows) == {b"/a/x/", b"/a/y/"}
    x = rows[b"/a/x/"]
    assert (x.keys, x.bytes, x.revisions) == (1, 8, 4)  # /a/x/2 deleted: its tombstone kept
    assert (usage.total.keys, usage.total.revisions) == (2, 5)
    everything = scan(store, b"", 1)
    assert {row.prefix for row in everything.rows()} == {b"/a/", b"/b/"}
    assert everything.total.keys == 3


def test_rows_beyond_the_bound_are_summed_into_other() -> None:
    store = store_with({b"/p/%02d" % n: [b"v" * (n + 1)] for n in range(10)})
    usage = scan(store, b"/p/", 0 + 2, groups_max=3)
    kept = usage.rows()
    assert [row.prefix for row in kept] == [b"/p/07", b"/p/08", b"/p/09"]  # the largest
    assert usage.other.keys == 7
    assert usage.total.keys == 10 and sum(row.keys for row in kept) + usage.other.keys == 10
