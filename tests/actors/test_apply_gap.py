"""A member whose apply lags its commit by more than ``APPLY_GAP_ENTRIES_MAX`` entries refuses
new writes with etcd's "etcdserver: too many requests" (gRPC RESOURCE_EXHAUSTED; error 300 on
v2) before proposing them, so nothing changes; once the apply catches up, writes pass again."""

from __future__ import annotations

import json

import pytest
import trio

from actors.member import Member
from actors.waiters import APPLY_GAP_ENTRIES_MAX, TooManyRequests, check_apply_gap
from net.etcdpb import rpc_pb2
from net.http.client import HttpClient
from net.v3.client import V3Client
from net.v3.errors import RpcError, StatusCode
from tests.actors.cluster_helpers import start_cluster
from tests.actors.test_usage_member import serve_clients

TOO_MANY_REQUESTS = "etcdserver: too many requests"


def test_the_gap_is_refused_only_past_the_bound() -> None:
    check_apply_gap(commit_index=APPLY_GAP_ENTRIES_MAX + 7, applied_index=7)  # at the bound
    check_apply_gap(commit_index=3, applied_index=10)  # applied ahead (a snapshot)
    with pytest.raises(TooManyRequests):
        check_apply_gap(commit_index=APPLY_GAP_ENTRIES_MAX + 8, applied_index=7)


def lag_apply(member: Member, monkeypatch: pytest.MonkeyPatch, lagging: bool) -> None:
    """Make ``member`` look ``APPLY_GAP_ENTRIES_MAX + 1`` entries behind its commit."""
    if lagging:
        applied = member.status.commit_index - APPLY_GAP_ENTRIES_MAX - 1
        monkeypatch.setattr(member, "applied_index", lambda: applied)
    else:
        monkeypatch.undo()


async def test_a_lagging_member_refuses_writes_unchanged(
    autojump_clock: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        addresses = await serve_clients(nursery, cluster)
        by_member = dict(zip(cluster.members.values(), addresses, strict=True))
        client = V3Client(cluster.network, [by_member[leader]])
        await client.put(rpc_pb2.PutRequest(key=b"k", value=b"before"))
        lag_apply(leader, monkeypatch, lagging=True)
        with pytest.raises(RpcError) as refused:
            await client.put(rpc_pb2.PutRequest(key=b"k", value=b"during"))
        assert refused.value.code is StatusCode.RESOURCE_EXHAUSTED
        assert str(refused.value) == TOO_MANY_REQUESTS
        http = HttpClient(cluster.network)
        reply = await http.request(
            "PUT",
            f"http://{by_member[leader]}/v2/keys/v2key",
            body=b"value=during",
            headers=[("Content-Type", "application/x-www-form-urlencoded")],
        )
        await http.aclose()
        error = json.loads(reply.body)
        assert (error["errorCode"], error["cause"]) == (300, TOO_MANY_REQUESTS), reply.body
        lag_apply(leader, monkeypatch, lagging=False)
        answer = await client.range(rpc_pb2.RangeRequest(key=b"k"))
        assert [kv.value for kv in answer.kvs] == [b"before"]
        await client.put(rpc_pb2.PutRequest(key=b"k", value=b"after"))
        answer = await client.range(rpc_pb2.RangeRequest(key=b"k"))
        assert [kv.value for kv in answer.kvs] == [b"after"]
        await client.aclose()
        nursery.cancel_scope.cancel()
