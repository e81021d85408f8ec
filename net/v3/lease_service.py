"""etcd 3.4's Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive,
LeaseLeases, one implementation behind gRPC and the JSON gateway.

As etcd's ``v3rpc/lease.go`` and ``etcdserver/v3_server.go``:

- LeaseGrant with ID 0 gets an id chosen by the server (positive); grant and revoke go
  through the log, so their errors ("requested lease not found", "lease already exists", "too
  large lease TTL") come from applying them.
- LeaseKeepAlive is a bidirectional stream: each request renews at the leader and is answered
  with the lease's TTL, or TTL 0 for a lease that does not exist (or expired); the header is
  filled before the renewal, so its revision is never past the one at which the lease may
  have been revoked. A renewal that cannot reach a leader ends the stream with etcd's error.
- LeaseTimeToLive answers TTL -1 for a lease that does not exist (not an error); the remaining
  time comes from the leader, the keys from the applied lease table.
- LeaseLeases lists the leases of the applied table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from google.protobuf.message import Message

from net.backend import BackendError
from net.etcdpb import rpc_pb2
from net.etcdpb.routes import grpc_path
from net.v3.methods import CallContext, Methods, SendMessage, StreamMethod, unary_method
from net.v3.service import V3Service, backend_error


class LeaseBackend(Protocol):
    """The member as the lease service sees it. Calls raise ``RpcError`` for what applying
    a request refused, ``BackendError`` when the member cannot serve now."""

    async def lease_grant(self, request: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        """Grant through the log (an id chosen here when ``request.ID`` is 0)."""
        ...

    async def lease_revoke(
        self, request: rpc_pb2.LeaseRevokeRequest
    ) -> rpc_pb2.LeaseRevokeResponse:
        """Revoke through the log: every attached key deleted in one revision."""
        ...

    async def lease_renew(self, lease_id: int) -> int:
        """Renew at the leader: the TTL, or 0 if the lease does not exist."""
        ...

    async def lease_time_to_live(
        self, lease_id: int, keys: bool
    ) -> rpc_pb2.LeaseTimeToLiveResponse | None:
        """The leader's remaining time and the TTL (and the keys); None if no such lease."""
        ...

    def lease_ids(self) -> list[int]:
        """The granted leases, as applied here."""
        ...


class LeaseService:
    """The Lease RPCs over a backend; ``service`` gives the checks and headers every v3
    service shares."""

    def __init__(self, backend: LeaseBackend, service: V3Service) -> None:
        self._backend = backend
        self._service = service

    async def grant(
        self, request: rpc_pb2.LeaseGrantRequest, context: CallContext
    ) -> rpc_pb2.LeaseGrantResponse:
        self._service.admit(context)
        response = await self._service.call_backend(self._backend.lease_grant, request)
        self._service.fill_header(response.header)
        return response

    async def revoke(
        self, request: rpc_pb2.LeaseRevokeRequest, context: CallContext
    ) -> rpc_pb2.LeaseRevokeResponse:
        self._service.admit(context)
        response = await self._service.call_backend(self._backend.lease_revoke, request)
        self._service.fill_header(response.header)
        return response

    async def time_to_live(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: CallContext
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        self._service.admit(context)
        try:
            response = await self._backend.lease_time_to_live(request.ID, request.keys)
        except BackendError as error:
            raise backend_error(error) from error
        if response is None:
            response = rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)
        self._service.fill_header(response.header)
        return response

    async def leases(
        self, request: rpc_pb2.LeaseLeasesRequest, context: CallContext
    ) -> rpc_pb2.LeaseLeasesResponse:
        self._service.admit(context)
        response = rpc_pb2.LeaseLeasesResponse(
            leases=[rpc_pb2.LeaseStatus(ID=lease_id) for lease_id in self._backend.lease_ids()]
        )
        self._service.fill_header(response.header)
        return response

    async def keep_alive(
        self, requests: AsyncIterator[Message], send: SendMessage, context: CallContext
    ) -> None:
        """Answer each keep-alive in order until the client stops sending."""
        self._service.admit(context)
        async for request in requests:
            assert isinstance(request, rpc_pb2.LeaseKeepAliveRequest), type(request)
            response = rpc_pb2.LeaseKeepAliveResponse(ID=request.ID)
            self._service.fill_header(response.header)
            try:
                response.TTL = await self._backend.lease_renew(request.ID)
            except BackendError as error:
                raise backend_error(error) from error
            await send(response)


def lease_methods(backend: LeaseBackend, service: V3Service) -> Methods:
    """Lease: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases."""
    lease = LeaseService(backend, service)
    return {
        grpc_path("Lease", "LeaseGrant"): unary_method(rpc_pb2.LeaseGrantRequest, lease.grant),
        grpc_path("Lease", "LeaseRevoke"): unary_method(rpc_pb2.LeaseRevokeRequest, lease.revoke),
        grpc_path("Lease", "LeaseKeepAlive"): StreamMethod(
            rpc_pb2.LeaseKeepAliveRequest, lease.keep_alive
        ),
        grpc_path("Lease", "LeaseTimeToLive"): unary_method(
            rpc_pb2.LeaseTimeToLiveRequest, lease.time_to_live
        ),
        grpc_path("Lease", "LeaseLeases"): unary_method(rpc_pb2.LeaseLeasesRequest, lease.leases),
    }
