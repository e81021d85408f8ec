"""What the state machine does for per-tenant QoS (issue 16 item 3): the ``QOS`` entries that
set and delete tenants' limits, and the space quota (keys, bytes, leases) a write must fit
before it is applied.

The table and the usage are pure (``storage.qos``); this module only reads a v3 request's puts
(a txn's: those of the branch it will take, decided before any write, as ``KvApplier`` decides
it) and shapes the outcomes as etcd-style errors. A refused write changes nothing: no revision,
no event, no lease attachment.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from actors.kv_applier import _evaluate, _path_ops
from net.etcdpb import rpc_pb2
from net.etcdpb.raft_internal_pb2 import InternalRaftRequest
from net.v3.errors import RpcError, StatusCode
from storage.mvcc import MvccStore
from storage.qos import QosError, QosTable, QuotaUsage
from storage.qos.quota import PlannedPut

QUOTA_EXCEEDED_MESSAGE: Final = "etcdserver: mvcc: tenant quota exceeded"
"""Shaped as etcd's space error ("etcdserver: mvcc: database space exceeded",
ResourceExhausted), naming the tenant's quota rather than the database's."""


def quota_exceeded() -> RpcError:
    """A write past a tenant's space quota."""
    return RpcError(StatusCode.RESOURCE_EXHAUSTED, QUOTA_EXCEEDED_MESSAGE)


def qos_refused(error: QosError) -> RpcError:
    """A ``QOS`` entry the table refused."""
    return RpcError(StatusCode.INVALID_ARGUMENT, f"troika: qos: {error}")


def request_puts(request: InternalRaftRequest, store: MvccStore) -> Iterator[PlannedPut]:
    """Each put the request will make: its key, bytes stored after, lease attached."""
    if request.HasField("put"):
        yield from _put_bytes(request.put)
    elif request.HasField("txn"):
        path = _evaluate(store, request.txn)
        for op in _path_ops(request.txn, path):
            if op.HasField("request_put"):
                yield from _put_bytes(op.request_put)


def _put_bytes(put: rpc_pb2.PutRequest) -> Iterator[PlannedPut]:
    # an ignore_value put keeps the stored size, an ignore_lease one the key's lease (or fails)
    new_bytes = None if put.ignore_value else len(put.key) + len(put.value)
    yield PlannedPut(put.key, new_bytes, None if put.ignore_lease else put.lease)


class QosState:
    """The tenant table and the quota usage it implies, for one state machine."""

    def __init__(self, table: QosTable | None = None) -> None:
        self.table = table if table is not None else QosTable()
        self.usage = QuotaUsage()

    def rebuild(self, store: MvccStore) -> None:
        """Count the quota tenants' usage from the store (at load, install and table change)."""
        self.usage.rebuild(self.table.quota_tenants(), store)

    def apply_entry(self, body: bytes, store: MvccStore) -> RpcError | None:
        """Apply a ``QOS`` entry (None: done)."""
        try:
            self.table.apply(body)
        except QosError as error:
            return qos_refused(error)
        self.rebuild(store)
        return None

    def refusal(self, request: InternalRaftRequest, store: MvccStore) -> RpcError | None:
        """The error a write past a quota gets (None: it fits, or no tenant has a quota)."""
        if not self.usage.usage:
            return None
        if self.usage.refusal(request_puts(request, store), store) is not None:
            return quota_exceeded()
        return None
