"""The member as the v3 service sees it: ``net.v3.service.V3Backend`` over ``actors.member``.

Writes become ``InternalRaftRequest`` entries (etcd's own log format for v3)
and are answered with what applying them gave on this member. Ranges are
linearizable by default: they join a shared ReadIndex round and then read
the local MVCC store once it has applied up to that index; a serializable
range reads the local store at once. A txn without writes is a read and
takes the same path as a range (as etcd serves read-only txns), so it costs
no log entry and no revision. Reads go through ``KvReader``, the read-only
side of the state machine, never the apply actor's write paths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeVar

from google.protobuf.message import Message

from actors.api_backend import (
    MemberErrors,
    MemberView,
    translate,
)
from actors.auth_backend import REQUEST_AUTH
from actors.bootstrap import QUORUM_READ_WITHOUT_READ_INDEX
from actors.leases import LeaseNoLeader, LeaseTimeout
from actors.maintenance_backend import over_quota, raise_no_space
from actors.state_machine import KvReader
from net.backend import BackendTimeout, NoLeader
from net.etcdpb import raft_internal_pb2, rpc_pb2
from net.v3 import errors
from net.v3.errors import RpcError
from storage.mvcc.errors import Compacted, FutureRevision
from storage.space import write_refusal

_Response = TypeVar("_Response", bound=Message)


@contextlib.contextmanager
def _lease_errors() -> Iterator[None]:
    """The lease shell's failures as the backend's (request timed out, no leader)."""
    try:
        yield
    except LeaseTimeout:
        raise BackendTimeout() from None
    except LeaseNoLeader:
        raise NoLeader() from None


LEASE_ID_ATTEMPTS = 3
"""Server-chosen lease ids tried before a grant gives up with "lease already exists"."""
_LEASE_ID_COUNTER_BITS = 47


def chosen_lease_id(member_id: int, sequence: int) -> int:
    """A positive lease id from this member's request sequence (unique per incarnation),
    with the low 16 bits of the member id on top, so members rarely pick the same one."""
    counter = sequence & ((1 << _LEASE_ID_COUNTER_BITS) - 1)
    return ((member_id & 0xFFFF) << _LEASE_ID_COUNTER_BITS | counter) or 1


def txn_has_writes(request: rpc_pb2.TxnRequest) -> bool:
    """Whether any branch of the txn (nested ones too) puts or deletes."""
    for operation in (*request.success, *request.failure):
        kind = operation.WhichOneof("request")
        if kind in ("request_put", "request_delete_range"):
            return True
        if kind == "request_txn" and txn_has_writes(operation.request_txn):
            return True
    return False


class MemberV3Backend(MemberView):
    """Implements ``net.v3.service.V3Backend`` for one member."""

    # -- state -------------------------------------------------------------------------------

    def raft_applied_index(self) -> int:
        return self.member.applied_index()

    def revision(self) -> int:
        return self.reader.revision()

    def is_learner(self) -> bool:
        return self.member.is_learner()

    def db_size_bytes(self) -> tuple[int, int]:
        return self.member.kv.size_bytes()

    def hash_kv(self, revision: int) -> tuple[int, int, int]:
        try:
            result = self.reader.hash_kv(revision)
        except Compacted:
            raise errors.compacted() from None
        except FutureRevision:
            raise errors.future_revision() from None
        return result.hash, result.compact_revision, result.revision

    # -- reads -------------------------------------------------------------------------------

    @property
    def reader(self) -> KvReader:
        """The state machine's MVCC store, read-only."""
        return self.member.machine.kv_reader()

    async def _confirm_read(self) -> None:
        try:
            await self.member.confirm_read()
        except MemberErrors as error:
            raise translate(error) from None

    async def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        bugs = self.member.config.planted_bugs
        if not request.serializable and QUORUM_READ_WITHOUT_READ_INDEX not in bugs:
            await self._confirm_read()
        return self.reader.range(request)

    # -- writes ------------------------------------------------------------------------------

    async def _propose(self, request: raft_internal_pb2.InternalRaftRequest) -> object:
        if _adds_data(request):
            refusal = write_refusal(self.member.kv)
            if refusal is not None and over_quota(self.member.kv):
                await raise_no_space(self.member)  # etcd's quota check raises the alarm
            if refusal is not None or self.member.machine.alarms.no_space():
                raise errors.no_space()  # etcd's NOSPACE answer; see storage.space
        caller = REQUEST_AUTH.get()
        request.header.SetInParent()  # a client's entry: checked at apply while auth is on
        if caller is not None:
            request.header.username = caller.username
            request.header.auth_revision = caller.revision
        try:
            return await self.member.propose_v3(request)
        except MemberErrors as error:
            raise translate(error) from None

    async def _proposed(
        self, entry: raft_internal_pb2.InternalRaftRequest, response_type: type[_Response]
    ) -> _Response:
        """Propose ``entry``; the response its apply gave (of ``response_type``)."""
        response = await self._propose(entry)
        assert isinstance(response, response_type), response
        return response

    async def put(self, request: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        entry = raft_internal_pb2.InternalRaftRequest(put=request)
        return await self._proposed(entry, rpc_pb2.PutResponse)

    async def delete_range(
        self, request: rpc_pb2.DeleteRangeRequest
    ) -> rpc_pb2.DeleteRangeResponse:
        entry = raft_internal_pb2.InternalRaftRequest(delete_range=request)
        return await self._proposed(entry, rpc_pb2.DeleteRangeResponse)

    async def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        if not txn_has_writes(request):
            await self._confirm_read()
            return self.reader.txn(request)
        entry = raft_internal_pb2.InternalRaftRequest(txn=request)
        return await self._proposed(entry, rpc_pb2.TxnResponse)

    async def compact(self, request: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        entry = raft_internal_pb2.InternalRaftRequest(compaction=request)
        response = await self._proposed(entry, rpc_pb2.CompactionResponse)
        if request.physical:
            await self.member.apply_actor.wait_compaction_finished()
        return response

    # -- leases ------------------------------------------------------------------------------

    async def lease_grant(self, request: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        if request.ID != 0:
            return await self._grant(request)
        for attempt in range(LEASE_ID_ATTEMPTS):
            lease_id = chosen_lease_id(self.member.member_id, self.member.ids.next().sequence)
            chosen = rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=request.TTL)
            try:
                return await self._grant(chosen)
            except RpcError as error:
                if attempt + 1 == LEASE_ID_ATTEMPTS or error != errors.lease_exists():
                    raise
        raise AssertionError("unreachable")

    async def _grant(self, request: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        entry = raft_internal_pb2.InternalRaftRequest(lease_grant=request)
        return await self._proposed(entry, rpc_pb2.LeaseGrantResponse)

    async def lease_revoke(
        self, request: rpc_pb2.LeaseRevokeRequest
    ) -> rpc_pb2.LeaseRevokeResponse:
        entry = raft_internal_pb2.InternalRaftRequest(lease_revoke=request)
        return await self._proposed(entry, rpc_pb2.LeaseRevokeResponse)

    async def lease_renew(self, lease_id: int) -> int:
        with _lease_errors():
            return await self.member.leases.renew(lease_id)

    async def lease_time_to_live(
        self, lease_id: int, keys: bool
    ) -> rpc_pb2.LeaseTimeToLiveResponse | None:
        with _lease_errors():
            ttl = await self.member.leases.time_to_live(lease_id)
        if ttl is None:
            return None
        response = rpc_pb2.LeaseTimeToLiveResponse(
            ID=lease_id, TTL=ttl.remaining_s, grantedTTL=ttl.granted_s
        )
        lease = self.member.machine.leases.get(lease_id)
        if keys and lease is not None:
            response.keys.extend(sorted(lease.keys))
        return response

    def lease_ids(self) -> list[int]:
        return self.member.machine.leases.ids()


def _adds_data(request: raft_internal_pb2.InternalRaftRequest) -> bool:
    """Whether etcd refuses ``request`` under the NOSPACE alarm: a put, a txn that puts, a
    lease grant (deletes, compactions and revokes make room and go on)."""
    if request.HasField("put") or request.HasField("lease_grant"):
        return True
    return request.HasField("txn") and _txn_puts(request.txn)


def _txn_puts(txn: rpc_pb2.TxnRequest) -> bool:
    for op in (*txn.success, *txn.failure):
        if op.HasField("request_put"):
            return True
        if op.HasField("request_txn") and _txn_puts(op.request_txn):
            return True
    return False
