"""Per-tenant QoS through real members in one process (virtual time): limits set through
``/troika/v1/qos/set`` on one member are replicated to all; a tenant over its write rate gets
"etcdserver: too many requests" and nothing changes, another tenant is untouched; a space quota
is enforced alike on every member; a tenant's watches are counted per member."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from actors.qos import QOS_SET_PATH, TOO_MANY_REQUESTS
from actors.qos_apply import QUOTA_EXCEEDED_MESSAGE
from net.etcdpb import rpc_pb2
from net.http.client import HttpClient
from net.v3.client import WATCH_GRPC_PATH, V3Client
from net.v3.errors import RpcError, StatusCode
from tests.actors.cluster_helpers import InProcessCluster, start_cluster
from tests.actors.test_usage_member import get_json, serve_clients


async def set_limits(cluster: InProcessCluster, address: str, limits: dict[str, Any]) -> Any:
    http = HttpClient(cluster.network)
    try:
        reply = await http.request(
            "POST", f"http://{address}{QOS_SET_PATH}", body=json.dumps(limits).encode()
        )
    finally:
        await http.aclose()
    assert reply.status == 200, reply.body
    return json.loads(reply.body)


def put(key: bytes) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=key, value=b"v")


async def test_rates_are_replicated_and_a_flood_is_refused_unchanged(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        await cluster.leader()
        addresses = await serve_clients(nursery, cluster)
        await set_limits(cluster, addresses[0], {"prefix": "/a/", "write_requests_per_s": 2})
        await trio.sleep(1)  # applied everywhere
        for address in addresses:
            answer = await get_json(cluster, address, "/troika/v1/qos")
            assert answer["tenants"] == [{"prefix": "/a/", "write_requests_per_s": 2}]
        client = V3Client(cluster.network, [addresses[2]])  # a member that did not propose it
        started = trio.current_time()
        refused = 0
        for number in range(20):
            try:
                await client.put(put(b"/a/%d" % number))
            except RpcError as error:
                assert error.code is StatusCode.RESOURCE_EXHAUSTED
                assert str(error) == TOO_MANY_REQUESTS
                refused += 1
        elapsed_s = trio.current_time() - started
        stored = await client.range(rpc_pb2.RangeRequest(key=b"/a/", range_end=b"/a0"))
        assert refused > 0 and stored.count == 20 - refused  # refused puts changed nothing
        assert stored.count <= 2 + 2 * elapsed_s + 1  # the burst, then the rate
        for number in range(20):
            await client.put(put(b"/b/%d" % number))  # another tenant: never refused
        await trio.sleep(1)
        await client.put(put(b"/a/after"))  # the bucket refilled
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_a_space_quota_is_enforced_alike_on_every_member(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        await cluster.leader()
        addresses = await serve_clients(nursery, cluster)
        await set_limits(cluster, addresses[1], {"prefix": "/q/", "keys_max": 3})
        clients = [V3Client(cluster.network, [address]) for address in addresses]
        for number, client in enumerate(clients):
            await client.put(put(b"/q/%d" % number))
        for client in clients:
            with pytest.raises(RpcError) as refused:
                await client.put(put(b"/q/more"))
            assert refused.value.code is StatusCode.RESOURCE_EXHAUSTED
            assert str(refused.value) == QUOTA_EXCEEDED_MESSAGE
            await client.put(put(b"/q/0"))  # an overwrite fits
        await trio.sleep(1)
        for address in addresses:
            answer = await get_json(cluster, address, "/troika/v1/qos")
            assert answer["usage"] == {"/q/": {"keys": 3, "stored_bytes": 15, "leases": 0}}
        for client in clients:
            await client.aclose()
        nursery.cancel_scope.cancel()


async def test_watches_over_a_tenants_limit_are_refused(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        await cluster.leader()
        addresses = await serve_clients(nursery, cluster)
        await set_limits(cluster, addresses[0], {"prefix": "/w/", "watches_max": 1})
        client = V3Client(cluster.network, [addresses[0]])
        answers: list[rpc_pb2.WatchResponse] = []
        async with client.stream(WATCH_GRPC_PATH, rpc_pb2.WatchResponse) as call:
            for key in (b"/w/1", b"/w/2", b"/other"):
                create = rpc_pb2.WatchCreateRequest(key=key)
                await call.send(rpc_pb2.WatchRequest(create_request=create))
                answers.append(await anext(aiter(call)))
            cancel = rpc_pb2.WatchCancelRequest(watch_id=answers[0].watch_id)
            await call.send(rpc_pb2.WatchRequest(cancel_request=cancel))
            assert (await anext(aiter(call))).canceled
            create = rpc_pb2.WatchCreateRequest(key=b"/w/3")
            await call.send(rpc_pb2.WatchRequest(create_request=create))
            answers.append(await anext(aiter(call)))
        assert [(a.created, a.canceled) for a in answers] == [
            (True, False),
            (True, True),
            (True, False),
            (True, False),
        ]
        assert answers[1].watch_id == -1 and answers[1].cancel_reason == TOO_MANY_REQUESTS
        await client.aclose()
        nursery.cancel_scope.cancel()
