"""Members' metrics and the auto-compactor on an in-process cluster, in virtual time."""

from __future__ import annotations

from functools import partial

import trio
from prometheus_client import CollectorRegistry

from actors.compactor import REVISION_INTERVAL_S, run_compactor
from actors.member import Member
from actors.metrics import MemberMetrics
from actors.v3_backend import MemberV3Backend
from net.etcdpb import rpc_pb2
from tests.actors.cluster_helpers import start_cluster
from troika.serve import compact_to


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    assert found is not None, name
    return found


def metrics_of(member: Member) -> CollectorRegistry:
    return MemberMetrics(
        member, quota_bytes=1 << 31, versions=("3.4.23", "3.4.0"), process=False
    ).registry


def current_revision(member: Member) -> int:
    return member.machine.mvcc.current_revision


async def test_leadership_proposals_and_keys_are_exported(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        registries = {name: metrics_of(member) for name, member in cluster.members.items()}
        for index in range(3):
            await MemberV3Backend(leader).put(rpc_pb2.PutRequest(key=b"k%d" % index, value=b"v"))
        for member in cluster.members.values():
            await member.confirm_read()
        leaders = 0.0
        for name, registry in registries.items():
            member = cluster.members[name]
            assert value(registry, "etcd_server_has_leader") == 1
            leaders += value(registry, "etcd_server_is_leader")
            assert value(registry, "etcd_server_leader_changes_seen_total") >= 1
            applied = value(registry, "etcd_server_proposals_applied_total")
            assert applied == member.applied_index()
            assert value(registry, "etcd_server_proposals_committed_total") >= applied
            assert value(registry, "etcd_debugging_mvcc_keys_total") == 3
            assert value(registry, "etcd_debugging_mvcc_current_revision") == 4
            assert value(registry, "etcd_server_id", server_id=f"{member.member_id:x}") == 1
        assert leaders == 1
        old = next(name for name, m in cluster.members.items() if m is leader)
        cluster.stop(old)
        await cluster.leader()
        survivor = next(iter(cluster.members))
        assert value(registries[survivor], "etcd_server_leader_changes_seen_total") >= 2
        nursery.cancel_scope.cancel()


async def test_the_revision_compactor_compacts_every_member_through_the_leader(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        for index in range(10):
            await MemberV3Backend(leader).put(rpc_pb2.PutRequest(key=b"k", value=b"%d" % index))
        for member in cluster.members.values():
            nursery.start_soon(
                partial(
                    run_compactor,
                    "revision",
                    4,
                    is_leader=member.is_leader,
                    revision=partial(current_revision, member),
                    compact=partial(compact_to, member),
                )
            )
        await trio.sleep(REVISION_INTERVAL_S + 1)
        for member in cluster.members.values():
            await member.confirm_read()
            assert member.machine.mvcc.compact_revision == 11 - 4
        nursery.cancel_scope.cancel()
