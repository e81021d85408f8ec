"""Unit tests of user and role tenants in the table: their entries, the rule that picks a
caller's tenants, and the codec (tables and entries written before them read unchanged)."""

from __future__ import annotations

import cbor2
import pytest

from storage.qos import QosError, QosTable, TenantLimits
from storage.qos.limits import (
    ROLE,
    TENANTS_MAX,
    USER,
    encode_delete,
    encode_delete_caller,
    encode_set,
    encode_set_caller,
)

RATE = TenantLimits(write_requests_per_s=5)


def test_user_and_role_tenants_are_set_deleted_and_kept_apart_from_prefixes() -> None:
    assert not QosTable().limited
    table = QosTable()
    assert table.apply(encode_set_caller(USER, "alice", RATE)) == ((USER, "alice"), RATE)
    assert table.limited and table.tenants == {}
    table.apply(encode_set_caller(ROLE, "alice", TenantLimits(read_requests_per_s=1)))
    table.apply(encode_set(b"alice", RATE))  # a prefix of the same bytes: a third tenant
    assert len(table) == 3
    assert table.apply(encode_delete_caller(USER, "alice")) == ((USER, "alice"), None)
    assert list(table.callers) == [(ROLE, "alice")] and list(table.tenants) == [b"alice"]
    table.apply(encode_delete_caller(ROLE, "alice"))
    table.apply(encode_delete(b"alice"))
    assert (table.limited, table.version) == (False, 6)


def test_a_callers_user_tenant_binds_else_its_role_tenants() -> None:
    table = QosTable(callers={(USER, "alice"): RATE, (ROLE, "a"): RATE, (ROLE, "b"): RATE})
    assert table.caller_tenants("alice", ["a", "b"]) == [(USER, "alice")]
    assert table.caller_tenants("bob", ["a", "b", "c"]) == [(ROLE, "a"), (ROLE, "b")]
    assert table.caller_tenants("carol", ["c"]) == []  # her keys' prefix tenant then
    assert table.caller_tenants("", ["a"]) == []  # no caller
    assert QosTable().caller_tenants("alice", ["a"]) == []


@pytest.mark.parametrize(
    "body",
    [
        encode_set_caller(USER, "alice", TenantLimits(keys_max=1)),  # quotas: prefixes only
        encode_set_caller(ROLE, "r", TenantLimits(leases_max=1)),  # lease counts: prefixes
        encode_set_caller(USER, "", RATE),
        encode_delete_caller(ROLE, "missing"),
        cbor2.dumps(["set", "alice", {}, "group"]),  # no such kind
        cbor2.dumps(["set", b"alice", {}, "user"]),  # a name is text
    ],
)
def test_bad_caller_entries_change_nothing(body: bytes) -> None:
    table = QosTable(callers={(ROLE, "r"): RATE})
    before = table.encode()
    with pytest.raises(QosError):
        table.apply(body)
    assert table.encode() == before and table.version == 0


def test_callers_count_against_the_tenant_bound() -> None:
    table = QosTable({f"/t{n}/".encode(): RATE for n in range(TENANTS_MAX)})
    with pytest.raises(QosError, match="too many tenants"):
        table.apply(encode_set_caller(USER, "alice", RATE))


def test_codec_round_trips_and_reads_old_tables() -> None:
    table = QosTable({b"/a/": TenantLimits(keys_max=3)}, {(USER, "alice"): RATE})
    again = QosTable.decode(table.encode())
    assert again.tenants == table.tenants and again.callers == table.callers and again.limited
    old = cbor2.dumps([[b"/a/", {"keys_max": 3}]])  # written before users and roles
    assert QosTable.decode(old).tenants == {b"/a/": TenantLimits(keys_max=3)}
    assert table.to_json() == [
        {"prefix": "/a/", "keys_max": 3},
        {"user": "alice", "write_requests_per_s": 5},
    ]
    with pytest.raises(ValueError, match="malformed"):
        QosTable.decode(cbor2.dumps([["alice", {}, "group"]]))


def test_caller_tenants_take_watches_max_but_no_lease_count() -> None:
    table = QosTable()
    watches = TenantLimits(watches_max=2, read_requests_per_s=1)
    assert table.apply(encode_set_caller(ROLE, "r", watches)) == ((ROLE, "r"), watches)
    with pytest.raises(QosError, match="prefixes"):
        table.apply(encode_set_caller(USER, "alice", TenantLimits(leases_max=1)))
    assert table.quota_tenants() == {}


def test_lease_limit_round_trips_and_older_records_read_without_it() -> None:
    table = QosTable()
    table.apply(encode_set(b"/a/", TenantLimits(leases_max=4)))
    assert QosTable.decode(table.encode()).tenants == {b"/a/": TenantLimits(leases_max=4)}
    assert table.to_json() == [{"prefix": "/a/", "leases_max": 4}]
    assert list(table.quota_tenants()) == [b"/a/"]
    old_entry = cbor2.dumps(["set", b"/b/", {"keys_max": 2, "watches_max": 1}])
    assert table.apply(old_entry)[1] == TenantLimits(keys_max=2, watches_max=1)
