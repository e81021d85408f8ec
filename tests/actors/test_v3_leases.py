"""Leases through real members in one process (virtual clock): grants and revokes through the
log, keep-alives and time-to-live at the leader from any member, expiry decided by the leader
only, the failover extension, and leases surviving a restart."""

from __future__ import annotations

import itertools

import trio

from actors.leases import EXPIRY_CHECK_INTERVAL_S, REVOKES_PER_ROUND
from actors.member import Member
from actors.v3_backend import MemberV3Backend
from net.etcdpb import rpc_pb2
from net.v3 import errors
from net.v3.errors import RpcError
from tests.actors.cluster_helpers import InProcessCluster, start_cluster


def grant(ttl_s: int, lease_id: int = 0) -> rpc_pb2.LeaseGrantRequest:
    return rpc_pb2.LeaseGrantRequest(TTL=ttl_s, ID=lease_id)


def keys_of(member: Member, prefix: bytes = b"k") -> list[bytes]:
    request = rpc_pb2.RangeRequest(key=prefix, range_end=prefix[:-1] + bytes([prefix[-1] + 1]))
    return [kv.key for kv in member.machine.kv.range(request).kvs]


async def follower_of(cluster: InProcessCluster) -> Member:
    leader = await cluster.leader()
    return next(member for member in cluster.members.values() if member is not leader)


async def settle(cluster: InProcessCluster) -> None:
    with trio.fail_after(30):
        while len({member.applied_index() for member in cluster.members.values()}) != 1:
            await trio.sleep(0.05)


async def test_grant_put_revoke_deletes_every_key_in_one_revision(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        backend = MemberV3Backend(await follower_of(cluster))
        granted = await backend.lease_grant(grant(60))
        assert granted.ID > 0 and granted.TTL == 60
        for key in (b"k1", b"k2", b"k3"):
            await backend.put(rpc_pb2.PutRequest(key=key, value=b"v", lease=granted.ID))
        await backend.put(rpc_pb2.PutRequest(key=b"k4", value=b"v"))  # no lease
        ttl = await backend.lease_time_to_live(granted.ID, keys=True)
        assert ttl is not None and list(ttl.keys) == [b"k1", b"k2", b"k3"]
        assert ttl.grantedTTL == 60 and 0 < ttl.TTL <= 60
        before = backend.revision()
        revoked = await backend.lease_revoke(rpc_pb2.LeaseRevokeRequest(ID=granted.ID))
        assert revoked.header.revision == before + 1
        await settle(cluster)
        for member in cluster.members.values():
            assert keys_of(member) == [b"k4"]
            assert member.machine.leases.ids() == []
        assert await backend.lease_time_to_live(granted.ID, keys=False) is None
        assert await backend.lease_renew(granted.ID) == 0
        nursery.cancel_scope.cancel()


async def test_lease_errors_in_etcds_shape(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        backend = MemberV3Backend(await cluster.leader())
        await backend.lease_grant(grant(10, lease_id=7))
        for call, expected in [
            (backend.lease_grant(grant(10, lease_id=7)), errors.lease_exists()),
            (backend.lease_grant(grant(9_000_000_001)), errors.lease_ttl_too_large()),
            (backend.lease_revoke(rpc_pb2.LeaseRevokeRequest(ID=8)), errors.lease_not_found()),
            (
                backend.put(rpc_pb2.PutRequest(key=b"k", value=b"v", lease=8)),
                errors.lease_not_found(),
            ),
        ]:
            try:
                await call
            except RpcError as error:
                assert error == expected
            else:
                raise AssertionError(f"{expected} expected")
        short = await backend.lease_grant(grant(1))
        assert short.TTL == cluster.config("m1").min_lease_ttl_s() == 2
        assert backend.revision() == 1  # nothing written
        nursery.cancel_scope.cancel()


async def test_keep_alives_from_a_follower_keep_a_lease_past_its_ttl(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        follower = MemberV3Backend(await follower_of(cluster))
        kept = await follower.lease_grant(grant(3))
        dropped = await follower.lease_grant(grant(3))
        for lease in (kept, dropped):
            await follower.put(
                rpc_pb2.PutRequest(key=b"k%d" % lease.ID, value=b"v", lease=lease.ID)
            )
        for _ in range(10):  # 10 s, three TTLs
            assert await follower.lease_renew(kept.ID) == 3
            await trio.sleep(1)
        await settle(cluster)
        for member in cluster.members.values():
            assert member.machine.leases.ids() == [kept.ID]
            assert keys_of(member) == [b"k%d" % kept.ID]
        nursery.cancel_scope.cancel()


async def test_only_the_leader_expires_and_a_new_leader_extends_first(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        backend = MemberV3Backend(leader)
        lease = await backend.lease_grant(grant(5))
        await trio.sleep(3)
        cluster.stop(leader.config.name)
        new_leader = await cluster.leader()
        assert new_leader is not leader
        with trio.fail_after(10):
            while not new_leader.leases.lessor.primary:
                await trio.sleep(0.01)
        # The old leader's 2 s left are not what counts: the new leader gives the full TTL
        # plus an election timeout from its promotion.
        remaining_s = new_leader.leases.lessor.remaining_s(lease.ID, trio.current_time())
        extend_s = new_leader.config.election_timeout_s()
        assert 5 < remaining_s <= 5 + extend_s
        for member in cluster.members.values():
            assert member.leases.lessor.primary is (member is new_leader)
        await trio.sleep(remaining_s - 0.1)
        assert new_leader.machine.leases.ids() == [lease.ID]
        await trio.sleep(2)
        assert new_leader.machine.leases.ids() == []
        nursery.cancel_scope.cancel()


async def test_leases_and_their_keys_survive_a_restart(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        backend = MemberV3Backend(await cluster.leader())
        lease = await backend.lease_grant(grant(1000))
        await backend.put(rpc_pb2.PutRequest(key=b"k1", value=b"v", lease=lease.ID))
        await settle(cluster)
        name = next(iter(cluster.members))
        cluster.stop(name)
        restarted = await cluster.start(name)
        await settle(cluster)
        table = restarted.machine.leases
        assert table.ids() == [lease.ID] and table.lease_of(b"k1") == lease.ID
        revoked = await MemberV3Backend(restarted).lease_revoke(
            rpc_pb2.LeaseRevokeRequest(ID=lease.ID)
        )
        assert revoked.header.revision == 3
        await settle(cluster)
        assert keys_of(restarted) == []
        nursery.cancel_scope.cancel()


async def test_a_lagging_member_gets_the_leases_from_a_snapshot(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(
            nursery, snapshot_every_entries=20, snapshot_catch_up_entries=5
        )
        leader = await cluster.leader()
        backend = MemberV3Backend(leader)
        name = next(n for n, m in cluster.members.items() if m is not leader)
        await settle(cluster)
        stopped_at = cluster.members[name].applied_index()
        cluster.stop(name)
        leases = [await backend.lease_grant(grant(1000)) for _ in range(10)]
        for number, lease in enumerate(leases * 3):
            await backend.put(rpc_pb2.PutRequest(key=b"k%02d" % number, value=b"v", lease=lease.ID))
        await backend.lease_revoke(rpc_pb2.LeaseRevokeRequest(ID=leases[0].ID))
        assert leader.state.raft_store.first_index() > stopped_at + 1  # only a snapshot helps
        rejoined = await cluster.start(name)
        await settle(cluster)
        expected = sorted(lease.ID for lease in leases[1:])
        assert rejoined.machine.leases.ids() == expected == leader.machine.leases.ids()
        for lease in leases[1:]:
            attached = rejoined.machine.leases.get(lease.ID)
            assert attached is not None and len(attached.keys) == 3
        assert keys_of(rejoined) == keys_of(leader) and len(keys_of(leader)) == 27
        nursery.cancel_scope.cancel()


async def test_many_expiries_are_revoked_at_a_bounded_rate(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(nursery)
        leader = await cluster.leader()
        backend = MemberV3Backend(leader)
        count = 1200
        async with trio.open_nursery() as granting:
            for number in range(count):
                granting.start_soon(backend.lease_grant, grant(3, lease_id=number + 1))
        assert len(leader.machine.leases) == count
        left: list[int] = []
        with trio.fail_after(60):
            while len(leader.machine.leases):
                left.append(len(leader.machine.leases))
                await trio.sleep(EXPIRY_CHECK_INTERVAL_S)
        left.append(0)
        revoked_per_round = [before - after for before, after in itertools.pairwise(left)]
        assert max(revoked_per_round) <= REVOKES_PER_ROUND
        assert sum(1 for revoked in revoked_per_round if revoked) >= 3  # spread over rounds
        nursery.cancel_scope.cancel()
