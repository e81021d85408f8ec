"""The Cluster and Maintenance backends on real members in one process: a learner is added,
refused promotion until its log has caught up, then promoted; alarms go through the log."""

from __future__ import annotations

from random import Random

import pytest
import trio

from actors.bootstrap import Identity, MemberConfig, open_state
from actors.clock import TrioClock
from actors.cluster_backend import MemberClusterBackend
from actors.maintenance_backend import MemberMaintenanceBackend
from actors.member import BoundAddresses, Member
from net.etcdpb import rpc_pb2
from net.v3.cluster_service import learner_not_ready, member_not_learner
from net.v3.errors import RpcError
from storage.kv import MemoryKeyValueStore
from tests.actors.cluster_helpers import EPOCH_NS, InProcessCluster, put, start_cluster

LEARNER_URL = "http://127.0.0.1:2389"


async def start_joiner(cluster: InProcessCluster, identity: Identity) -> Member:
    """Start a member added at ``LEARNER_URL``, as ``--initial-cluster-state existing``."""
    initial = {**cluster.initial, "m9": [LEARNER_URL]}
    config = MemberConfig(
        name="m9",
        initial_cluster=initial,
        initial_cluster_state="existing",
        advertise_peer_urls=(LEARNER_URL,),
        advertise_client_urls=("http://127.0.0.1:2489",),
        listen_peer_addresses=(LEARNER_URL.removeprefix("http://"),),
        request_timeout_s=5.0,
    )
    kv = MemoryKeyValueStore()
    opened = await open_state(config, kv, identity)
    member = Member(
        config, opened, network=cluster.network, kv=kv, clock=TrioClock(EPOCH_NS), rng=Random(9)
    )

    async def run(
        task_status: trio.TaskStatus[BoundAddresses] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await member.run(task_status=task_status)

    await cluster.nursery.start(run)
    return member


async def test_a_learner_is_promoted_once_it_has_caught_up(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        for number in range(30):
            await leader.propose_v2(put(f"/k{number}", "v"))
        backend = MemberClusterBackend(leader)
        added = await backend.add_member((LEARNER_URL,), is_learner=True)
        assert added.is_learner
        with pytest.raises(RpcError) as refused:
            await backend.promote_member(added.id)
        assert refused.value == learner_not_ready()
        joiner = await start_joiner(cluster, Identity(added.id, leader.cluster_id))
        with trio.fail_after(30):
            await joiner.published.wait()
        assert joiner.is_learner()
        await backend.promote_member(added.id)
        await joiner.confirm_read()
        assert not joiner.is_learner()
        with pytest.raises(RpcError) as again:
            await backend.promote_member(added.id)
        assert again.value == member_not_learner()
        nursery.cancel_scope.cancel()


async def test_alarms_are_replicated_and_nospace_refuses_puts(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        maintenance = MemberMaintenanceBackend(leader)
        activate = rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=leader.member_id, alarm=rpc_pb2.NOSPACE
        )
        answered = await maintenance.alarm(activate)
        assert [(a.memberID, a.alarm) for a in answered.alarms] == [
            (leader.member_id, rpc_pb2.NOSPACE)
        ]
        for member in cluster.members.values():
            await member.confirm_read()
            assert member.machine.alarms.no_space()
        nursery.cancel_scope.cancel()
