"""Unit tests of the QoS cores: token bucket, tenant table, quota accounting."""

from __future__ import annotations

import pytest

from storage.mvcc import MvccStore
from storage.qos import QosError, QosTable, QuotaUsage, TenantLimits, TokenBucket
from storage.qos.limits import TENANTS_MAX, encode_delete, encode_set
from storage.qos.quota import PlannedPut


def test_bucket_refuses_past_its_burst_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=8, burst=5, updated_s=100.0)
    assert [bucket.take(1, 100.0) for _ in range(6)] == [True] * 5 + [False]
    assert not bucket.take(1, 100.0625)  # half a token
    assert bucket.take(1, 100.125)
    assert not bucket.take(1, 100.125)
    assert bucket.take(1, 1000.0) and bucket.tokens == 4  # refilled to the burst only


def test_bucket_charge_goes_into_bounded_debt() -> None:
    bucket = TokenBucket(rate_per_s=100, burst=100, updated_s=0.0)
    bucket.charge(10_000, 0.0)
    assert bucket.tokens == -400  # at most four bursts owed
    assert not bucket.take(1, 4.0)  # 400 tokens back: zero, still nothing to spend
    assert bucket.take(1, 4.02)


def test_bucket_reservations_wait_in_turn_and_refuse_past_the_bound() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=2, updated_s=0.0)
    waits = [bucket.reserve(1, 0.0, wait_max_s=0.25) for _ in range(6)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] == pytest.approx(0.1) and waits[3] == pytest.approx(0.2)
    assert waits[4:] == [None, None]  # 0.3 s away: refused, nothing spent
    assert bucket.tokens == pytest.approx(-2)
    bucket.charge(8, 0.0)  # a read's response: debt capped at four bursts (8 tokens)
    assert bucket.reserve(0, 0.0, wait_max_s=0.5) is None
    assert bucket.reserve(0, 0.0, wait_max_s=1.0) == pytest.approx(0.8)


def test_bucket_never_goes_back_in_time() -> None:
    bucket = TokenBucket(rate_per_s=1, burst=1, updated_s=10.0)
    assert bucket.take(1, 10.0)
    assert not bucket.take(1, 5.0)  # an earlier time adds nothing
    assert not bucket.take(1, 10.5)


def test_table_applies_set_and_delete_and_round_trips() -> None:
    table = QosTable()
    limits = TenantLimits(write_requests_per_s=5, keys_max=3)
    assert table.apply(encode_set(b"/a/", limits)) == (b"/a/", limits)
    table.apply(encode_set(b"/a/b/", TenantLimits(read_requests_per_s=1)))
    assert table.version == 2 and table.changed
    assert table.tenant_of(b"/a/b/c") == b"/a/b/"
    assert table.tenant_of(b"/a/x") == b"/a/"
    assert table.tenant_of(b"/z") is None
    assert QosTable.decode(table.encode()).tenants == table.tenants
    assert table.apply(encode_delete(b"/a/b/")) == (b"/a/b/", None)
    assert list(table.quota_tenants()) == [b"/a/"]
    assert table.to_json() == [{"prefix": "/a/", "write_requests_per_s": 5, "keys_max": 3}]


@pytest.mark.parametrize(
    "body",
    [
        b"\xff",
        encode_set(b"", TenantLimits()),
        encode_delete(b"/missing/"),
        b"\x83cset" + b"C/a/" + b"\xa1cbad\x01",  # ["set", b"/a/", {"bad": 1}]
    ],
)
def test_table_refuses_bad_entries_and_changes_nothing(body: bytes) -> None:
    table = QosTable({b"/a/": TenantLimits(keys_max=1)})
    before = table.encode()
    with pytest.raises(QosError):
        table.apply(body)
    assert table.encode() == before and table.version == 0


def test_table_is_bounded() -> None:
    table = QosTable({f"/t{n}/".encode(): TenantLimits() for n in range(TENANTS_MAX)})
    with pytest.raises(QosError, match="too many tenants"):
        table.apply(encode_set(b"/one-more/", TenantLimits()))
    table.apply(encode_set(b"/t0/", TenantLimits(keys_max=1)))  # replacing one is fine


def test_limits_refuse_negative_and_non_integer_values() -> None:
    with pytest.raises(QosError):
        TenantLimits(keys_max=-1)
    with pytest.raises(QosError):
        TenantLimits.from_plain({"keys_max": "3"})


def _put(store: MvccStore, usage: QuotaUsage, key: bytes, value: bytes) -> None:
    with store.write() as txn:
        txn.put(key, value)
    usage.observe(store.take_events())


def _delete(store: MvccStore, usage: QuotaUsage, key: bytes) -> None:
    with store.write() as txn:
        txn.delete_range(key)
    usage.observe(store.take_events())


def test_quota_usage_follows_events_and_matches_a_rebuild() -> None:
    store = MvccStore()
    _put(store, QuotaUsage(), b"/a/old", b"12345")
    usage = QuotaUsage()
    quotas = {b"/a/": TenantLimits(keys_max=3), b"/a/b/": TenantLimits(stored_bytes_max=100)}
    usage.rebuild(quotas, store)
    assert usage.usage[b"/a/"].to_json() == {"keys": 1, "stored_bytes": 11, "leases": 0}
    _put(store, usage, b"/a/b/1", b"xx")
    _put(store, usage, b"/a/b/1", b"xxxx")  # an overwrite: bytes change, keys do not
    _put(store, usage, b"/c", b"elsewhere")
    _delete(store, usage, b"/a/old")
    _delete(store, usage, b"/a/nothing")
    assert usage.usage[b"/a/"].to_json() == {"keys": 1, "stored_bytes": 10, "leases": 0}
    assert usage.usage[b"/a/b/"].to_json() == {"keys": 1, "stored_bytes": 10, "leases": 0}
    rebuilt = QuotaUsage()
    rebuilt.rebuild(quotas, store)
    assert rebuilt.usage == usage.usage


def test_quota_refuses_a_new_key_past_keys_max_but_not_an_overwrite() -> None:
    store = MvccStore()
    usage = QuotaUsage()
    usage.rebuild({b"/a/": TenantLimits(keys_max=2)}, store)
    _put(store, usage, b"/a/1", b"v")
    _put(store, usage, b"/a/2", b"v")
    assert usage.refusal([PlannedPut(b"/a/3", 5)], store) == b"/a/"
    assert usage.refusal([PlannedPut(b"/a/1", 500)], store) is None
    assert usage.refusal([PlannedPut(b"/b/3", 5)], store) is None
    assert usage.refusal([PlannedPut(b"/a/1", 4), PlannedPut(b"/a/9", 4)], store) == b"/a/"


def test_quota_refuses_bytes_past_the_limit_and_lets_shrinking_writes_through() -> None:
    store = MvccStore()
    usage = QuotaUsage()
    usage.rebuild({b"/a/": TenantLimits(stored_bytes_max=20)}, store)
    _put(store, usage, b"/a/1", b"x" * 12)  # 16 bytes
    assert usage.refusal([PlannedPut(b"/a/2", 5)], store) == b"/a/"
    assert usage.refusal([PlannedPut(b"/a/1", 20)], store) is None  # 16 -> 20: at the limit
    assert usage.refusal([PlannedPut(b"/a/1", 21)], store) == b"/a/"
    usage.rebuild({b"/a/": TenantLimits(stored_bytes_max=10)}, store)  # lowered under use
    assert usage.refusal([PlannedPut(b"/a/1", 8)], store) is None  # shrinking makes room


def _put_leased(store: MvccStore, usage: QuotaUsage, key: bytes, lease: int) -> None:
    with store.write() as txn:
        txn.put(key, b"v", lease)
    usage.observe(store.take_events())


def test_lease_count_follows_live_keys_and_matches_a_rebuild() -> None:
    store = MvccStore()
    _put_leased(store, QuotaUsage(), b"/a/old", 7)
    usage = QuotaUsage()
    quotas = {b"/a/": TenantLimits(leases_max=5), b"/a/b/": TenantLimits(leases_max=1)}
    usage.rebuild(quotas, store)
    assert usage.usage[b"/a/"].leases == {7: 1}
    _put_leased(store, usage, b"/a/b/1", 7)  # a lease the tenant holds: still one
    _put_leased(store, usage, b"/a/b/2", 8)
    _put_leased(store, usage, b"/c", 9)  # not under a tenant
    assert usage.usage[b"/a/"].leases == {7: 2, 8: 1}
    assert usage.usage[b"/a/b/"].to_json() == {"keys": 2, "stored_bytes": 14, "leases": 2}
    _put_leased(store, usage, b"/a/b/2", 0)  # overwritten without its lease: 8 is gone
    _delete(store, usage, b"/a/old")
    assert usage.usage[b"/a/"].leases == {7: 1}
    rebuilt = QuotaUsage()
    rebuilt.rebuild(quotas, store)
    assert rebuilt.usage == usage.usage


def test_lease_quota_refuses_only_a_lease_new_to_the_tenant() -> None:
    store = MvccStore()
    usage = QuotaUsage()
    usage.rebuild({b"/a/": TenantLimits(leases_max=2)}, store)
    _put_leased(store, usage, b"/a/1", 1)
    assert usage.refusal([PlannedPut(b"/a/2", 5, 2)], store) is None  # the second lease
    _put_leased(store, usage, b"/a/2", 2)
    assert usage.refusal([PlannedPut(b"/a/3", 5, 3)], store) == b"/a/"
    assert usage.refusal([PlannedPut(b"/a/3", 5, 1)], store) is None  # a lease it holds
    assert usage.refusal([PlannedPut(b"/a/3", 5, 0)], store) is None  # no lease
    assert usage.refusal([PlannedPut(b"/a/1", None, None)], store) is None  # ignore_lease
    assert usage.refusal([PlannedPut(b"/b/3", 5, 3)], store) is None  # not the tenant's
    # a move off lease 2 is not credited in advance (conservative, as deletes)
    assert usage.refusal([PlannedPut(b"/a/2", 5, 3)], store) == b"/a/"
    usage.rebuild({b"/a/": TenantLimits(leases_max=3)}, store)
    assert usage.refusal([PlannedPut(b"/a/3", 5, 3), PlannedPut(b"/a/4", 5, 3)], store) is None
    assert usage.refusal([PlannedPut(b"/a/3", 5, 3), PlannedPut(b"/a/4", 5, 4)], store) == b"/a/"
