"""The pure auth store (``storage.auth.store``) and the apply-time checks over it
(``actors.auth_apply``): etcd 3.4's rules for permissions, the root user and the revision."""

from __future__ import annotations

import pytest

from actors.auth_apply import AuthApplier
from actors.auth_tokens import SimpleTokens
from net.etcdpb import auth_pb2, raft_internal_pb2, rpc_pb2
from net.v3 import errors
from storage.auth import store as auth
from storage.auth.store import AuthError, AuthInfo, AuthStore, covers, merge, request_interval
from storage.kv import MemoryKeyValueStore, WriteBatch


def _perm(kind: int, key: bytes, range_end: bytes = b"") -> auth_pb2.Permission:
    return auth_pb2.Permission(permType=kind, key=key, range_end=range_end)  # type: ignore[arg-type]


def _store_with_user(*perms: auth_pb2.Permission) -> AuthStore:
    """Auth enabled, root, and user ``u`` holding role ``r`` with ``perms``."""
    store = AuthStore()
    store.user_add("root", b"hash", no_password=False)
    store.user_grant_role("root", "root")
    store.role_add("r")
    for perm in perms:
        store.role_grant_permission("r", perm)
    store.user_add("u", b"hash", no_password=False)
    store.user_grant_role("u", "r")
    store.enable()
    return store


def _kind(call: object) -> str:
    assert callable(call)
    with pytest.raises(AuthError) as raised:
        call()
    return raised.value.kind


def test_intervals_union_covers_only_whole_ranges() -> None:
    merged = merge([(b"a", b"c"), (b"c", b"e"), (b"g", b"h")])
    assert merged == [(b"a", b"e"), (b"g", b"h")]  # touching intervals join
    assert covers(merged, (b"a", b"e"))
    assert covers(merged, (b"b", b"d"))
    assert not covers(merged, (b"d", b"g"))  # the gap [e, g)
    assert not covers(merged, (b"a", None))
    assert covers(merge([(b"a", None)]), (b"z", None))
    assert not covers(merged, (b"b", b"b"))  # an empty range is never covered
    assert request_interval(b"k", b"") == (b"k", b"k\0")
    assert request_interval(b"k", b"\0") == (b"k", None)


def test_read_only_user_reads_its_prefix_and_writes_nothing() -> None:
    store = _store_with_user(_perm(auth.READ, b"foo/", b"foo0"))
    user = AuthInfo("u", store.revision)
    store.check_range(user, b"foo/a", b"")
    store.check_range(user, b"foo/", b"foo0")
    assert _kind(lambda: store.check_range(user, b"foo/", b"\0")) == auth.PERMISSION_DENIED
    assert _kind(lambda: store.check_range(user, b"fo", b"foo0")) == auth.PERMISSION_DENIED
    assert _kind(lambda: store.check_put(user, b"foo/a")) == auth.PERMISSION_DENIED
    store.check_put(AuthInfo("root", store.revision), b"anything")


def test_union_of_roles_and_from_key_permissions() -> None:
    store = _store_with_user(_perm(auth.READWRITE, b"a", b"m"))
    store.role_add("r2")
    store.role_grant_permission("r2", _perm(auth.READ, b"m", b"\0"))
    store.user_grant_role("u", "r2")
    user = AuthInfo("u", store.revision)
    store.check_range(user, b"a", b"\0")  # [a, m) and [m, +inf) together
    store.check_put(user, b"b")
    assert _kind(lambda: store.check_put(user, b"x")) == auth.PERMISSION_DENIED


def test_no_token_old_token_and_unknown_user() -> None:
    store = _store_with_user(_perm(auth.READ, b"k"))
    assert _kind(lambda: store.check_range(AuthInfo(), b"k", b"")) == auth.USER_EMPTY
    old = AuthInfo("u", store.revision - 1)
    assert _kind(lambda: store.check_range(old, b"k", b"")) == auth.AUTH_OLD_REVISION
    ghost = AuthInfo("ghost", store.revision)
    assert _kind(lambda: store.check_range(ghost, b"k", b"")) == auth.PERMISSION_DENIED
    assert _kind(lambda: store.check_admin(AuthInfo("u", 9))) == auth.PERMISSION_DENIED
    assert _kind(lambda: store.check_admin(AuthInfo("ghost", 9))) == auth.USER_NOT_FOUND


def test_root_rules() -> None:
    store = AuthStore()
    assert _kind(store.enable) == auth.ROOT_USER_NOT_EXIST
    store.user_add("root", b"h", no_password=False)
    assert _kind(store.enable) == auth.ROOT_ROLE_NOT_EXIST
    store.user_grant_role("root", "root")  # no role record needed
    store.enable()
    assert _kind(lambda: store.user_delete("root")) == auth.INVALID_AUTH_MGMT
    assert _kind(lambda: store.user_revoke_role("root", "root")) == auth.INVALID_AUTH_MGMT
    assert _kind(lambda: store.role_delete("root")) == auth.INVALID_AUTH_MGMT
    store.disable()
    store.user_revoke_role("root", "root")


def test_revision_bumps_on_every_change_but_enable_and_no_ops() -> None:
    store = AuthStore()
    assert store.revision == 1
    store.user_add("root", b"h", no_password=False)
    store.user_grant_role("root", "root")
    assert store.revision == 3
    store.user_grant_role("root", "root")  # already held: nothing written
    store.enable()
    assert store.revision == 3
    store.disable()
    assert store.revision == 4
    assert _kind(lambda: store.role_revoke_permission("x", b"k", b"")) == auth.ROLE_NOT_FOUND
    assert store.revision == 4


def test_errors_of_management_requests() -> None:
    store = AuthStore()
    assert _kind(lambda: store.user_add("", b"", no_password=True)) == auth.USER_EMPTY
    store.user_add("a", b"h", no_password=False)
    assert _kind(lambda: store.user_add("a", b"h", no_password=False)) == auth.USER_ALREADY_EXIST
    assert _kind(lambda: store.user_grant_role("a", "nope")) == auth.ROLE_NOT_FOUND
    assert _kind(lambda: store.user_revoke_role("a", "nope")) == auth.ROLE_NOT_GRANTED
    assert _kind(lambda: store.role_add("")) == auth.ROLE_EMPTY
    store.role_add("r")
    assert _kind(lambda: store.role_add("r")) == auth.ROLE_ALREADY_EXIST
    assert _kind(lambda: store.role_revoke_permission("r", b"k", b"")) == (
        auth.PERMISSION_NOT_GRANTED
    )
    store.user_grant_role("a", "r")
    store.role_delete("r")
    assert store.user_get("a") == []  # the role went from its users too


def test_records_survive_load_and_reload() -> None:
    store = _store_with_user(_perm(auth.READ, b"foo/", b"foo0"))
    kv = MemoryKeyValueStore()
    batch = WriteBatch()
    for key, value in store.take_changes():
        assert value is not None
        batch.put(key, value)
    kv.apply(batch)
    loaded = AuthStore.load(kv)
    assert loaded.enabled and loaded.revision == store.revision
    assert loaded.user_list() == ["root", "u"] and loaded.role_list() == ["r"]
    loaded.check_range(AuthInfo("u", loaded.revision), b"foo/x", b"")
    fresh = AuthStore()
    fresh.reload(kv)
    assert fresh.role_get("r") == store.role_get("r")


def test_applier_checks_every_txn_op_and_refuses_without_change() -> None:
    store = _store_with_user(_perm(auth.READ, b"foo/", b"foo0"))
    applier = AuthApplier(store)
    header = raft_internal_pb2.RequestHeader(username="u", auth_revision=store.revision)
    reading = rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(key=b"foo/a")],
        success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"foo/b"))],
    )
    entry = raft_internal_pb2.InternalRaftRequest(header=header, txn=reading)
    assert applier.check(entry, lambda _lease: []) is None
    writing = rpc_pb2.TxnRequest()
    writing.CopyFrom(reading)
    writing.failure.add().request_put.key = b"foo/c"  # the branch that does not run counts
    entry = raft_internal_pb2.InternalRaftRequest(header=header, txn=writing)
    assert applier.check(entry, lambda _lease: []) == errors.permission_denied()
    revoke = raft_internal_pb2.InternalRaftRequest(
        header=header, lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=7)
    )
    assert applier.check(revoke, lambda _lease: [b"foo/a"]) == errors.permission_denied()
    system = raft_internal_pb2.InternalRaftRequest(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=7))
    assert applier.check(system, lambda _lease: [b"foo/a"]) is None  # a member's own revoke


def test_simple_tokens_expire_without_use_and_go_with_their_user() -> None:
    now = [0.0]
    tokens = SimpleTokens(lambda: now[0], ttl_s=300)
    token = tokens.assign("u", 5, "abcdefghijklmnop", 42)
    assert token == "abcdefghijklmnop.42"
    now[0] = 299
    assert tokens.info(token, 6) == AuthInfo("u", 6)  # a use restarts the count
    now[0] = 598
    assert tokens.info(token, 6) is not None
    now[0] = 899
    assert tokens.info(token, 6) is None
    other = tokens.assign("v", 5, "x", 43)
    tokens.invalidate_user("v")
    assert tokens.info(other, 6) is None
