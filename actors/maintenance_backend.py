"""The member as the v3 Maintenance service sees it: ``net.v3.maintenance_service``'s backend.

- Alarms are entries of the log (``actors.alarms``); NOSPACE is raised here, by the member that
  finds its store over ``--quota-backend-bytes`` (the guard of ``storage.space``) when a client
  write arrives (``raise_no_space``).
- A snapshot is read from the persisted records in one synchronous pass (no other task runs
  meanwhile, and the apply actor writes each batch with its applied index atomically), at a
  moment when the state machine in memory matches what is persisted, so header and records
  are of one applied index. The whole snapshot is held in memory while it is streamed; its
  size is bounded by the quota. Every record is checked against its seal as it is read: a
  value damaged on the disk fails the snapshot with etcd's "corrupt cluster" (DataLoss)
  instead of reaching a backup that ``snapshot restore`` would accept.
- Defragment is the store's ``defragment`` (RocksDB's full compaction); a store without one
  (the simulator's) has nothing to give back.
"""

from __future__ import annotations

import logging
import zlib

import trio

from actors.api_backend import MemberErrors, MemberView, translate
from actors.member import Member
from net.etcdpb import raft_internal_pb2, rpc_pb2
from net.v3 import errors
from net.v3.maintenance_service import bad_leader_transferee, leader_transfer_timed_out
from storage.errors import StorageCorrupted
from storage.kv import KeyValueStore, prefix_end
from storage.sealed import checked_records
from storage.snapshot_file import RECORD_PREFIXES, SnapshotHeader, snapshot_body
from storage.space import SpaceGuard

log = logging.getLogger(__name__)

SNAPSHOT_ATTEMPTS_MAX = 100
"""Checkpoints a snapshot waits for the apply actor to finish persisting a batch."""
LEADER_POLL_S = 0.05
"""How often MoveLeader looks whether the target leads yet."""


def over_quota(kv: KeyValueStore) -> bool:
    """Whether the store is past its ``--quota-backend-bytes`` (not merely short of disk)."""
    space = getattr(kv, "space", None)
    if not isinstance(space, SpaceGuard):
        return False
    return kv.size_bytes()[0] > space.quota_bytes


async def raise_no_space(member: Member) -> None:
    """Propose the NOSPACE alarm for ``member`` (etcd's quota check does the same before it
    refuses the write); a failure is logged, the write is refused anyway."""
    if member.machine.alarms.no_space():
        return
    alarm = rpc_pb2.AlarmRequest(
        action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=member.member_id, alarm=rpc_pb2.NOSPACE
    )
    log.warning("%x: the store is over its quota; raising the NOSPACE alarm", member.member_id)
    try:
        await member.propose_v3(raft_internal_pb2.InternalRaftRequest(alarm=alarm))
    except MemberErrors as error:
        log.warning("%x: the NOSPACE alarm was not raised: %s", member.member_id, error)


def records_crc(kv: KeyValueStore) -> int:
    """CRC-32 of the MVCC and lease records, keys and values, in key order."""
    crc = 0
    for prefix in RECORD_PREFIXES:
        for key, value in kv.scan(prefix, prefix_end(prefix), bulk=True):
            crc = zlib.crc32(value, zlib.crc32(key, crc))
    return crc


class MemberMaintenanceBackend(MemberView):
    """Implements ``net.v3.maintenance_service.MaintenanceBackend`` for one member."""

    def hash(self) -> tuple[int, int]:
        return records_crc(self.member.kv), self.member.machine.mvcc.current_revision

    def alarms(self) -> list[tuple[int, int]]:
        return self.member.machine.alarms.active()

    async def defragment(self) -> None:
        defragment = getattr(self.member.kv, "defragment", None)
        if defragment is not None:
            log.info("%x: defragmenting the store", self.member_id)
            defragment()
        await trio.lowlevel.checkpoint()

    async def alarm(self, request: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        try:
            outcome = await self.member.propose_v3(
                raft_internal_pb2.InternalRaftRequest(alarm=request)
            )
        except MemberErrors as error:
            raise translate(error) from None
        assert isinstance(outcome, rpc_pb2.AlarmResponse), outcome
        return outcome

    async def move_leader(self, target_id: int) -> None:
        member = self.member
        if not member.is_leader():
            raise errors.not_leader()
        target = member.membership.members.get(target_id)
        if target is None or target.is_learner:
            raise bad_leader_transferee()
        with trio.move_on_after(member.config.request_timeout_s):
            while member.leader_id() != target_id:
                await member.transfer_leadership(target_id)
                await trio.sleep(LEADER_POLL_S)
            return
        raise leader_transfer_timed_out()

    async def snapshot(self) -> bytes:
        member = self.member
        for _ in range(SNAPSHOT_ATTEMPTS_MAX):
            if member.machine.applied_index == member.state.applied.applied_index():
                return self._snapshot_now()
            await trio.sleep(0)
        raise errors.request_timed_out()

    def _snapshot_now(self) -> bytes:
        """The snapshot, read without yielding (so of one applied index).

        Raises:
            RpcError: "corrupt cluster", a record fails its seal.
        """
        member = self.member
        try:
            records = [
                record
                for prefix in RECORD_PREFIXES
                for record in checked_records(member.kv.scan(prefix, prefix_end(prefix), bulk=True))
            ]
        except StorageCorrupted as error:
            log.error("%x: refused a snapshot: %s", member.member_id, error)
            raise errors.corrupt() from None
        mvcc = member.machine.mvcc
        header = SnapshotHeader(
            cluster_id=member.cluster_id,
            member_id=member.member_id,
            applied_index=member.machine.applied_index,
            revision=mvcc.current_revision,
            compact_revision=max(mvcc.compact_revision, 0),
            records=len(records),
        )
        return snapshot_body(header, records)
