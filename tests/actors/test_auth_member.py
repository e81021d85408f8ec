"""Auth on real members in one process: the state survives a crash and reaches a member that
was down through a Raft snapshot; tokens work on every member; a refused write changes
nothing."""

from __future__ import annotations

from random import Random

import pytest
import trio

from actors.auth_backend import REQUEST_AUTH, inline
from actors.auth_gate import MemberAuthRpcBackend
from actors.auth_tokens import AuthConfig
from actors.member import Member
from net.etcdpb import auth_pb2, raft_internal_pb2, rpc_pb2
from net.v3 import errors
from net.v3.errors import RpcError
from net.v3.methods import CallContext
from storage.auth.store import AuthInfo
from tests.actors.cluster_helpers import InProcessCluster, start_cluster

Entry = raft_internal_pb2.InternalRaftRequest


def _fast_hashes(cluster: InProcessCluster) -> None:
    for member in cluster.members.values():
        _fast_hash(member)


def _fast_hash(member: Member) -> None:
    config = AuthConfig(bcrypt_cost=4)  # the least bcrypt allows: tests stay fast
    member.auth.configure(config, rng=Random(7), hasher=inline, client_cert_auth=False)


async def _setup(backend: MemberAuthRpcBackend) -> None:
    """root (root role), role r reading ``r/``, user alice with r; then auth enabled."""
    hashed = await backend.hash_password("rootpw")
    for entry in (
        Entry(auth_user_add=rpc_pb2.AuthUserAddRequest(name="root", hashedPassword=hashed)),
        Entry(auth_user_grant_role=rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root")),
        Entry(auth_role_add=rpc_pb2.AuthRoleAddRequest(name="r")),
        Entry(
            auth_role_grant_permission=rpc_pb2.AuthRoleGrantPermissionRequest(
                name="r", perm=auth_pb2.Permission(key=b"r/", range_end=b"r0")
            )
        ),
        Entry(
            auth_user_add=rpc_pb2.AuthUserAddRequest(
                name="alice", hashedPassword=await backend.hash_password("apw")
            )
        ),
        Entry(auth_user_grant_role=rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="r")),
        Entry(auth_enable=rpc_pb2.AuthEnableRequest()),
    ):
        await backend.propose_auth(entry)


async def _settle(cluster: InProcessCluster) -> None:
    for member in cluster.members.values():
        await member.confirm_read()


async def test_auth_reaches_a_lagging_member_through_a_snapshot_and_survives_a_crash(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(
            nursery, snapshot_every_entries=20, snapshot_catch_up_entries=5
        )
        _fast_hashes(cluster)
        leader = await cluster.leader()
        backend = MemberAuthRpcBackend(leader)
        await _settle(cluster)
        name = next(n for n, m in cluster.members.items() if m is not leader)
        stopped_at = cluster.members[name].applied_index()
        cluster.stop(name)
        for number in range(40):
            await backend.put(rpc_pb2.PutRequest(key=b"r/%02d" % number, value=b"v"))
        await _setup(backend)
        assert leader.state.raft_store.first_index() > stopped_at + 1  # only a snapshot helps
        rejoined = await cluster.start(name)
        _fast_hash(rejoined)
        await _settle(cluster)
        store = rejoined.machine.auth.store
        assert store.enabled and store.user_list() == ["alice", "root"]
        assert store.revision == leader.machine.auth.store.revision
        token = (await rejoined.auth.authenticate("alice", "apw")).token
        for member in cluster.members.values():  # a simple token is known on every member
            caller = await member.auth.caller(CallContext(metadata=(("token", token),)))
            assert caller == AuthInfo("alice", store.revision)
        cluster.stop(name)  # a crash: the state is what was persisted
        restarted = await cluster.start(name)
        assert restarted.machine.auth.store.enabled
        assert restarted.machine.auth.store.user_get("alice") == ["r"]
        with pytest.raises(RpcError) as forgotten:  # tokens live in memory only
            await restarted.auth.caller(CallContext(metadata=(("token", token),)))
        assert forgotten.value == errors.invalid_auth_token()
        nursery.cancel_scope.cancel()


async def test_a_refused_write_changes_nothing(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        _fast_hashes(cluster)
        leader = await cluster.leader()
        backend = MemberAuthRpcBackend(leader)
        await _setup(backend)
        revision = leader.machine.mvcc.current_revision
        alice = AuthInfo("alice", leader.machine.auth.store.revision)
        bound = REQUEST_AUTH.set(alice)
        try:
            with pytest.raises(RpcError) as denied:
                await backend.put(rpc_pb2.PutRequest(key=b"r/x", value=b"v"))
            assert denied.value == errors.permission_denied()
            stale = AuthInfo("alice", alice.revision - 1)
            REQUEST_AUTH.set(stale)
            with pytest.raises(RpcError) as old:
                await backend.delete_range(rpc_pb2.DeleteRangeRequest(key=b"r/x"))
            assert old.value == errors.auth_old_revision()
            REQUEST_AUTH.set(AuthInfo())
            with pytest.raises(RpcError) as nobody:
                await backend.propose_auth(Entry(auth_disable=rpc_pb2.AuthDisableRequest()))
            assert nobody.value == errors.user_empty()
        finally:
            REQUEST_AUTH.reset(bound)
        assert leader.machine.mvcc.current_revision == revision
        assert leader.machine.auth.store.enabled
        nursery.cancel_scope.cancel()
