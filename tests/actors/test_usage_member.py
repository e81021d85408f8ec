"""Usage counting and prefix deletion through real members in one process: the client port's
KV calls, watch events and v2 requests are counted by prefix, ``/troika/v1/hot`` and
``/troika/v1/usage`` answer them, and ``del-prefix``'s batches delete a prefix one revision a
batch, seen by a watcher as ordinary deletes, resumed after a crash (virtual time)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from actors.client_api import serve_client_api
from actors.usage import recorder_of
from net.etcdpb import rpc_pb2
from net.http.client import HttpClient
from net.v3.client import WATCH_GRPC_PATH, V3Client
from tests.actors.cluster_helpers import InProcessCluster, start_cluster
from troika.del_prefix import Batch, delete_prefix

CLIENT = "10.0.0.{}:2379"


async def serve_clients(nursery: trio.Nursery, cluster: InProcessCluster) -> list[str]:
    """Each member's client API on the memory network; their addresses."""
    addresses = []
    for number, member in enumerate(cluster.members.values(), start=1):
        addresses.append(await nursery.start(serve_client_api, member, CLIENT.format(number)))
    return addresses


async def get_json(cluster: InProcessCluster, address: str, path: str) -> Any:
    http = HttpClient(cluster.network)
    try:
        reply = await http.request("GET", f"http://{address}{path}")
    finally:
        await http.aclose()
    assert reply.status == 200, reply.body
    return json.loads(reply.body)


async def test_requests_are_counted_by_prefix_and_served_as_json(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        await cluster.leader()
        addresses = await serve_clients(nursery, cluster)
        client = V3Client(cluster.network, [addresses[0]])
        for number in range(30):
            await client.put(rpc_pb2.PutRequest(key=b"/hot/k%d" % (number % 3), value=b"v" * 10))
        for number in range(5):
            await client.put(rpc_pb2.PutRequest(key=b"/cold/k%d" % number, value=b"v"))
        for _ in range(10):
            await client.range(rpc_pb2.RangeRequest(key=b"/hot/k0"))
        await client.aclose()

        hot = await get_json(cluster, addresses[0], "/troika/v1/hot?depth=1")
        by_key = {item["key"]: item for item in hot["items"]}
        assert by_key["/hot/"]["count"] == 40 and by_key["/hot/"]["writes"] == 30
        assert by_key["/hot/"]["reads"] == 10 and by_key["/cold/"]["count"] == 5
        keys = await get_json(cluster, addresses[0], "/troika/v1/hot?depth=0&prefix=%2Fhot%2F")
        assert keys["items"][0]["key"] == "/hot/k0" and keys["items"][0]["count"] == 20
        other = await get_json(cluster, addresses[1], "/troika/v1/hot?depth=1")
        assert other["items"] == []  # each member counts what it served

        usage = await get_json(cluster, addresses[1], "/troika/v1/usage?depth=1")
        rows = {row["prefix"]: row for row in usage["rows"]}
        assert rows["/hot/"]["keys"] == 3 and rows["/hot/"]["revisions"] == 30
        assert rows["/cold/"] == {"prefix": "/cold/", "keys": 5, "bytes": 45, "revisions": 5,
                                  "history_bytes": 45}  # fmt: skip
        assert usage["total"]["keys"] == 8
        nursery.cancel_scope.cancel()


async def test_del_prefix_in_batches_seen_by_a_watcher_and_resumed(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        await cluster.leader()
        addresses = await serve_clients(nursery, cluster)
        client = V3Client(cluster.network, addresses)
        for number in range(25):
            await client.put(rpc_pb2.PutRequest(key=b"/gone/%02d" % number, value=b"x"))
        await client.put(rpc_pb2.PutRequest(key=b"/kept", value=b"y"))
        deletes: list[bytes] = []
        revisions: set[int] = set()
        watching = trio.Event()

        async def watch() -> None:
            async with client.stream(WATCH_GRPC_PATH, rpc_pb2.WatchResponse) as call:
                create = rpc_pb2.WatchCreateRequest(key=b"/", range_end=b"0")
                await call.send(rpc_pb2.WatchRequest(create_request=create))
                async for response in call:
                    watching.set()
                    for event in response.events:
                        assert event.type == event.DELETE
                        deletes.append(event.kv.key)
                        revisions.add(event.kv.mod_revision)

        nursery.start_soon(watch)
        await watching.wait()

        class Crash(Exception):
            pass

        done: list[Batch] = []

        def crash_after_two(batch: Batch) -> None:
            done.append(batch)
            if len(done) == 2:
                raise Crash

        with pytest.raises(Crash):
            await delete_prefix(client, b"/gone/", batch_keys=4, rate_keys_s=100.0,
                                on_batch=crash_after_two)  # fmt: skip
        left = await client.range(rpc_pb2.RangeRequest(key=b"/gone/", range_end=b"/gone0"))
        assert left.count == 25 - 8 and left.kvs[0].key == b"/gone/08"
        started_s = trio.current_time()
        summary = await delete_prefix(client, b"/gone/", batch_keys=4, rate_keys_s=100.0)
        assert trio.current_time() - started_s >= 0.159  # paced: 16 keys before the last batch
        assert (summary.batches, summary.deleted) == (5, 17)
        assert summary.last_revision - summary.first_revision == 4  # one revision a batch
        with trio.fail_after(5):
            while len(deletes) < 25:
                await trio.sleep(0.01)
        assert deletes == [b"/gone/%02d" % number for number in range(25)]
        assert len(revisions) == 7
        kept = await client.range(rpc_pb2.RangeRequest(key=b"/", range_end=b"0"))
        assert [kv.key for kv in kept.kvs] == [b"/kept"]
        writes = recorder_of(cluster.members["m1"]).recorded
        assert writes > 0
        await client.aclose()
        nursery.cancel_scope.cancel()
