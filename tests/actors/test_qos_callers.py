"""User and role tenants through real members with auth on (virtual time): a caller's user
tenant binds before its roles', its roles' (the tightest) before its keys' prefix tenant, and
a caller with none of them gets the prefix tenant's limits, as without auth; the same rule
counts watch creates against ``watches_max``. Limits set
through ``/troika/v1/qos/set`` are replicated; a change under auth needs root's token."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

import trio

from actors.auth_gate import MemberAuthRpcBackend
from actors.qos import QOS_SET_PATH, TOO_MANY_REQUESTS
from net.etcdpb import auth_pb2, raft_internal_pb2, rpc_pb2
from net.http.client import HttpClient
from net.v3.client import WATCH_GRPC_PATH, Credentials, V3Client
from net.v3.errors import RpcError, StatusCode
from tests.actors.cluster_helpers import InProcessCluster, start_cluster
from tests.actors.test_auth_member import _fast_hashes
from tests.actors.test_qos_member import put, set_limits
from tests.actors.test_usage_member import get_json, serve_clients

Entry = raft_internal_pb2.InternalRaftRequest
PUTS = 20
USERS_ROLES = {
    "alice": ["team"],  # her own tenant (2/s) binds, not team's 50/s
    "bob": ["team", "slow"],  # no user tenant: both role tenants, slow's 2/s binds
    "carol": ["team"],  # team's 50/s replaces the prefix tenant's 2/s
    "dave": ["plain"],  # no caller tenant: the prefix tenant's 2/s
}


async def _enable_auth(backend: MemberAuthRpcBackend) -> None:
    """root; roles team, slow, plain (team and plain write ``/t/``); the users above."""
    hashed = await backend.hash_password("pw")
    entries = [
        Entry(auth_user_add=rpc_pb2.AuthUserAddRequest(name="root", hashedPassword=hashed)),
        Entry(auth_user_grant_role=rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root")),
    ]
    for role in ("team", "slow", "plain"):
        entries.append(Entry(auth_role_add=rpc_pb2.AuthRoleAddRequest(name=role)))
        permission = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"/t/")
        permission.range_end = b"/t0"
        grant = rpc_pb2.AuthRoleGrantPermissionRequest(name=role, perm=permission)
        entries.append(Entry(auth_role_grant_permission=grant))
    for user, roles in USERS_ROLES.items():
        entries.append(
            Entry(auth_user_add=rpc_pb2.AuthUserAddRequest(name=user, hashedPassword=hashed))
        )
        entries.extend(
            Entry(auth_user_grant_role=rpc_pb2.AuthUserGrantRoleRequest(user=user, role=role))
            for role in roles
        )
    entries.append(Entry(auth_enable=rpc_pb2.AuthEnableRequest()))
    for entry in entries:
        await backend.propose_auth(entry)


async def _refused_of(cluster: InProcessCluster, address: str, user: str) -> int:
    """How many of ``PUTS`` quick puts ``user`` gets refused (each refusal is etcd's)."""
    client = V3Client(cluster.network, [address], credentials=Credentials(user, "pw"))
    refused = 0
    try:
        for number in range(PUTS):
            try:
                await client.put(put(b"/t/%s/%d" % (user.encode(), number)))
            except RpcError as error:
                assert error.code is StatusCode.RESOURCE_EXHAUSTED
                assert str(error) == TOO_MANY_REQUESTS
                refused += 1
    finally:
        await client.aclose()
    return refused


async def test_user_then_roles_then_prefix_tenants_bind(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        _fast_hashes(cluster)
        leader = await cluster.leader()
        addresses = await serve_clients(nursery, cluster)
        for limits in (
            {"prefix": "/t/", "write_requests_per_s": 2},
            {"user": "alice", "write_requests_per_s": 2},
            {"role": "team", "write_requests_per_s": 50},
            {"role": "slow", "write_requests_per_s": 2},
        ):
            await set_limits(cluster, addresses[0], limits)
        await _enable_auth(MemberAuthRpcBackend(leader))
        await trio.sleep(1)  # applied everywhere
        answer = await get_json(cluster, addresses[2], "/troika/v1/qos")
        assert {"user": "alice", "write_requests_per_s": 2} in answer["tenants"]
        assert {"role": "slow", "write_requests_per_s": 2} in answer["tenants"]
        refused = {}
        for user in USERS_ROLES:
            refused[user] = await _refused_of(cluster, addresses[2], user)
            await trio.sleep(2)  # every bucket full again
        assert refused["carol"] == 0  # team's 50/s, not the prefix's 2/s
        for user in ("alice", "bob", "dave"):
            assert PUTS // 4 <= refused[user] < PUTS, refused  # the burst, then 2/s
        nursery.cancel_scope.cancel()


async def test_a_change_under_auth_needs_root(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        _fast_hashes(cluster)
        leader = await cluster.leader()
        addresses = await serve_clients(nursery, cluster)
        await _enable_auth(MemberAuthRpcBackend(leader))
        body = json.dumps({"role": "team", "read_requests_per_s": 5}).encode()
        url = f"http://{addresses[1]}{QOS_SET_PATH}"
        http = HttpClient(cluster.network)
        try:
            denied = await http.request("POST", url, body=body)
            root = (await leader.auth.authenticate("root", "pw")).token
            await trio.sleep(1)  # the token's entry applied on every member
            done = await http.request("POST", url, body=body, headers=(("Authorization", root),))
            bad = json.dumps({"role": "team", "keys_max": 5}).encode()
            refused = await http.request("POST", url, body=bad, headers=(("Authorization", root),))
        finally:
            await http.aclose()
        assert denied.status == 403
        assert done.status == 200
        assert {"role": "team", "read_requests_per_s": 5} in json.loads(done.body)["tenants"]
        assert refused.status == 400 and b"keys, bytes, leases: prefixes" in refused.body
        nursery.cancel_scope.cancel()


async def _watch(
    stack: AsyncExitStack, cluster: InProcessCluster, address: str, user: str, count: int
) -> list[rpc_pb2.WatchResponse]:
    """``count`` watch creates on ``/t/`` keys by ``user`` on one stream, left open with the
    stack; the answer to each."""
    client = V3Client(cluster.network, [address], credentials=Credentials(user, "pw"))
    stack.push_async_callback(client.aclose)
    call = await stack.enter_async_context(client.stream(WATCH_GRPC_PATH, rpc_pb2.WatchResponse))
    answers = []
    for number in range(count):
        create = rpc_pb2.WatchCreateRequest(key=b"/t/%s/%d" % (user.encode(), number))
        await call.send(rpc_pb2.WatchRequest(create_request=create))
        answers.append(await anext(aiter(call)))
    return answers


def _opened(answers: list[rpc_pb2.WatchResponse]) -> list[bool]:
    """Which creates opened a watch; each refused one is etcd-shaped."""
    for answer in answers:
        assert answer.created
        if answer.canceled:
            assert (answer.watch_id, answer.cancel_reason) == (-1, TOO_MANY_REQUESTS)
    return [not answer.canceled for answer in answers]


async def test_watch_creates_are_counted_against_the_callers_tenant(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        _fast_hashes(cluster)
        leader = await cluster.leader()
        addresses = await serve_clients(nursery, cluster)
        for limits in (
            {"prefix": "/t/", "watches_max": 1},
            {"user": "alice", "watches_max": 1},
            {"role": "team", "watches_max": 2},
        ):
            await set_limits(cluster, addresses[0], limits)
        await _enable_auth(MemberAuthRpcBackend(leader))
        await trio.sleep(1)  # applied everywhere
        address = addresses[2]
        async with AsyncExitStack() as carols:
            # team's 2 replaces the prefix's 1; alice's own 1 binds, not team's
            assert _opened(await _watch(carols, cluster, address, "carol", 3)) == [1, 1, 0]
            async with AsyncExitStack() as others:
                assert _opened(await _watch(others, cluster, address, "alice", 2)) == [1, 0]
                # bob (team, and slow with no tenant) shares team's count: carol holds it
                assert _opened(await _watch(others, cluster, address, "bob", 1)) == [0]
                # dave has no caller tenant: the prefix's 1
                assert _opened(await _watch(others, cluster, address, "dave", 2)) == [1, 0]
                answer = await get_json(cluster, address, "/troika/v1/qos")
                assert answer["watches"] == {"/t/": 1, "role:team": 2, "user:alice": 1}
        await trio.sleep(0.5)  # the streams' ends seen by the member
        async with AsyncExitStack() as again:  # carol's streams closed: team has room
            assert _opened(await _watch(again, cluster, address, "bob", 2)) == [1, 1]
        await trio.sleep(0.5)
        assert (await get_json(cluster, address, "/troika/v1/qos"))["watches"] == {}
        nursery.cancel_scope.cancel()
