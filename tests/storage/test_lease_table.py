"""The replicated lease table: grants and revokes, attachment by the MVCC store's events,
persistence and reload, and refusal of corrupt records."""

from __future__ import annotations

import pytest

from storage.errors import StorageCorrupted
from storage.kv import MemoryKeyValueStore, WriteBatch
from storage.lease import LeaseError, LeaseTable
from storage.lease.table import LEASE_EXISTS, LEASE_NOT_FOUND, LEASE_TTL_TOO_LARGE, record_key
from storage.mvcc import MvccStore


def write(kv: MemoryKeyValueStore, changes: list[tuple[bytes, bytes | None]]) -> None:
    batch = WriteBatch()
    for key, value in changes:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    kv.apply(batch)


def test_puts_attach_and_overwrites_and_deletes_detach() -> None:
    store, table = MvccStore(), LeaseTable(min_ttl_s=2)
    assert table.grant(5, 1).ttl_s == 2
    table.grant(6, 10)
    with store.write() as txn:
        txn.put(b"a", b"1", 5)
        txn.put(b"b", b"1", 5)
        txn.put(b"c", b"1", 6)
    with store.write() as txn:
        txn.put(b"b", b"2", 6)  # moves to lease 6
        txn.delete_range(b"c")
    table.observe(store.take_events())
    assert table.get(5) is not None and table.get(5).keys == {b"a"}  # type: ignore[union-attr]
    assert table.get(6) is not None and table.get(6).keys == {b"b"}  # type: ignore[union-attr]
    assert table.lease_of(b"c") == 0
    assert table.revoke(6) == [b"b"]
    assert table.ids() == [5]


@pytest.mark.parametrize(
    ("lease_id", "ttl_s", "kind"),
    [(0, 10, LEASE_NOT_FOUND), (5, 9_000_000_001, LEASE_TTL_TOO_LARGE), (5, 10, LEASE_EXISTS)],
)
def test_grants_etcd_refuses(lease_id: int, ttl_s: int, kind: str) -> None:
    table = LeaseTable()
    table.grant(5, 10)
    table.take_changes()
    with pytest.raises(LeaseError) as raised:
        table.grant(lease_id, ttl_s)
    assert raised.value.kind == kind
    assert table.ttls() == [(5, 10)] and table.take_changes() == []


def test_a_reload_rebuilds_leases_and_attachments_from_the_records() -> None:
    kv, store, table = MemoryKeyValueStore(), MvccStore(), LeaseTable()
    table.grant(7, 30)
    table.grant(8, 40)
    with store.write() as txn:
        txn.put(b"x", b"1", 7)
        txn.put(b"y", b"1", 0)
    table.observe(store.take_events())
    table.revoke(8)
    write(kv, table.take_changes())
    loaded = LeaseTable.load(kv, store)
    assert loaded.ttls() == [(7, 30)] and loaded.lease_of(b"x") == 7 and loaded.lease_of(b"y") == 0
    table.grant(9, 50)  # not persisted: a reload drops it
    table.reload(kv, store)
    assert table.ttls() == [(7, 30)] and table.take_changes() == []


def test_a_corrupt_lease_record_names_its_key() -> None:
    kv, table = MemoryKeyValueStore(), LeaseTable()
    table.grant(7, 30)
    changes = table.take_changes()
    key, value = changes[0]
    assert key == record_key(7) and value is not None
    flipped = value[:-1] + bytes([value[-1] ^ 1])
    write(kv, [(key, flipped)])
    with pytest.raises(StorageCorrupted, match="lease"):
        LeaseTable.load(kv, MvccStore())
