"""etcd 3.4's v3 Maintenance service beyond Status and HashKV (which ``net.v3.service`` serves):
Hash, Defragment, Alarm, MoveLeader and Snapshot, over a ``MaintenanceBackend`` (the member).

The rules are etcd's (``etcdserver/api/v3rpc/maintenance.go``, ``etcdserver/server.go``):

- Alarm goes through the log, GET included, so every member answers alike; its answer has no
  header (the gateway shows ``{}`` when there is no alarm).
- Defragment runs on this member only and answers ``{}``.
- Hash is a CRC-32 of this member's MVCC and lease records, with a full header.
- MoveLeader is served only by the leader ("etcdserver: not leader"); the target must be a
  voting member ("etcdserver: bad leader transferee"); it returns once the target leads, or
  fails after the request timeout ("etcdserver: request timed out, leader transfer took too
  long"). Its answer has no header.
- Snapshot streams the member's v3 state (``storage.snapshot_file``) in ``SNAPSHOT_BLOB_BYTES``
  pieces, each with the bytes still to come, then one more message whose blob is the SHA-256
  of everything sent, as etcd's server does: ``etcdctl snapshot save`` checks it is there.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Protocol

from google.protobuf.message import Message

from net.backend import BackendError
from net.etcdpb import rpc_pb2
from net.etcdpb.routes import grpc_path
from net.v3.errors import RpcError, StatusCode
from net.v3.methods import CallContext, Methods, SendMessage, StreamMethod, unary_method
from net.v3.service import V3Service, backend_error

SNAPSHOT_BLOB_BYTES = 32 * 1024
"""etcd's ``snapshotSendBufferSize``: the bytes of the snapshot in one message."""


def bad_leader_transferee() -> RpcError:
    return RpcError(StatusCode.FAILED_PRECONDITION, "etcdserver: bad leader transferee")


def leader_transfer_timed_out() -> RpcError:
    """etcd's ``ErrTimeoutLeaderTransfer`` (not in its gRPC error map: code Unknown)."""
    return RpcError(
        StatusCode.UNKNOWN, "etcdserver: request timed out, leader transfer took too long"
    )


class MaintenanceBackend(Protocol):
    """The member as the Maintenance service sees it."""

    def hash(self) -> tuple[int, int]:
        """(CRC-32 of this member's MVCC and lease records, the current revision)."""
        ...

    def alarms(self) -> list[tuple[int, int]]:
        """The active alarms as applied here: (member id, ``rpc_pb2.AlarmType`` value)."""
        ...

    async def defragment(self) -> None:
        """Give back the space of deleted and compacted records (this member only)."""
        ...

    async def alarm(self, request: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        """Apply an AlarmRequest through the log; what applying it answered.
        Raises ``BackendError``."""
        ...

    async def move_leader(self, target_id: int) -> None:
        """Hand leadership to ``target_id`` and wait until it leads.
        Raises ``RpcError`` (not leader, bad transferee, timed out)."""
        ...

    async def snapshot(self) -> bytes:
        """This member's v3 state as a snapshot body (``storage.snapshot_file``, no digest),
        as of one applied index."""
        ...


class MaintenanceService:
    """Hash, Defragment, Alarm, MoveLeader and Snapshot over one backend."""

    def __init__(self, backend: MaintenanceBackend, service: V3Service) -> None:
        self._backend = backend
        self._service = service

    async def hash(
        self, request: rpc_pb2.HashRequest, context: CallContext
    ) -> rpc_pb2.HashResponse:
        self._service.admit(context)
        crc, revision = self._backend.hash()
        response = rpc_pb2.HashResponse(hash=crc)
        response.header.revision = revision
        self._service.fill_header(response.header)
        return response

    async def status(
        self, request: rpc_pb2.StatusRequest, context: CallContext
    ) -> rpc_pb2.StatusResponse:
        """The v3 service's Status, with each active alarm in ``errors`` as etcd lists them
        (the alarm's text form, ``memberID:<id> alarm:NOSPACE ``)."""
        response = await self._service.status(request, context)
        response.errors.extend(alarm_text(*alarm) for alarm in self._backend.alarms())
        return response

    async def defragment(
        self, request: rpc_pb2.DefragmentRequest, context: CallContext
    ) -> rpc_pb2.DefragmentResponse:
        self._service.admit(context)
        await self._backend.defragment()
        return rpc_pb2.DefragmentResponse()

    async def alarm(
        self, request: rpc_pb2.AlarmRequest, context: CallContext
    ) -> rpc_pb2.AlarmResponse:
        self._service.admit(context)
        try:
            return await self._backend.alarm(request)
        except BackendError as error:
            raise backend_error(error) from error

    async def move_leader(
        self, request: rpc_pb2.MoveLeaderRequest, context: CallContext
    ) -> rpc_pb2.MoveLeaderResponse:
        self._service.admit(context)
        await self._backend.move_leader(request.targetID)
        return rpc_pb2.MoveLeaderResponse()

    async def snapshot(
        self, requests: AsyncIterator[Message], send: SendMessage, context: CallContext
    ) -> None:
        async for _ in requests:
            break  # a server-streaming call: one request, nothing in it
        for message in snapshot_messages(await self._backend.snapshot()):
            await send(message)


def alarm_text(member_id: int, alarm_type: int) -> str:
    """An alarm as etcd's Status lists it (gogoproto's compact text, trailing space kept)."""
    return f"memberID:{member_id} alarm:{rpc_pb2.AlarmType.Name(alarm_type)} "  # type: ignore[arg-type]


def snapshot_messages(body: bytes) -> list[rpc_pb2.SnapshotResponse]:
    """``body`` as etcd's server sends a database: pieces of ``SNAPSHOT_BLOB_BYTES`` with the
    bytes still to come, then the SHA-256 of ``body`` (``remaining_bytes`` 0)."""
    messages = []
    for offset in range(0, len(body), SNAPSHOT_BLOB_BYTES):
        piece = body[offset : offset + SNAPSHOT_BLOB_BYTES]
        remaining = len(body) - offset - len(piece)
        messages.append(rpc_pb2.SnapshotResponse(remaining_bytes=remaining, blob=piece))
    messages.append(rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=hashlib.sha256(body).digest()))
    return messages


def maintenance_methods(backend: MaintenanceBackend, service: V3Service) -> Methods:
    """Maintenance: Hash, Defragment, Alarm, MoveLeader, Snapshot, and Status with the alarms
    (HashKV is ``net.v3.service``'s)."""
    maintenance = MaintenanceService(backend, service)
    return {
        grpc_path("Maintenance", "Hash"): unary_method(rpc_pb2.HashRequest, maintenance.hash),
        grpc_path("Maintenance", "Status"): unary_method(rpc_pb2.StatusRequest, maintenance.status),
        grpc_path("Maintenance", "Defragment"): unary_method(
            rpc_pb2.DefragmentRequest, maintenance.defragment
        ),
        grpc_path("Maintenance", "Alarm"): unary_method(rpc_pb2.AlarmRequest, maintenance.alarm),
        grpc_path("Maintenance", "MoveLeader"): unary_method(
            rpc_pb2.MoveLeaderRequest, maintenance.move_leader
        ),
        grpc_path("Maintenance", "Snapshot"): StreamMethod(
            rpc_pb2.SnapshotRequest, maintenance.snapshot
        ),
    }
