"""A one-member :class:`~net.v3.concurrency.ConcurrencyBackend` for the lock and election tests.

The KV is the real MVCC store and KV applier (so ranges sort, limit and filter by create
revision, and txns compare and check leases, exactly as on a member); leases are a dict of
ids; the watch replays the store's events from any revision it still holds, then follows
live writes. What it does not model: Raft, time (leases never expire on their own:
:meth:`FakeMember.revoke` stands for an expiry) and the v3 service's request limits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import trio

from actors.kv_applier import KvApplier, to_pb
from net.etcdpb import kv_pb2, rpc_pb2
from net.v3.errors import RpcError
from net.v3.methods import CallContext
from net.v3.service import check_delete_range, check_range, check_txn
from storage.mvcc import MvccStore
from storage.mvcc.model import Event, TxnEvents

CLUSTER_ID = 15982699985640266139
MEMBER_ID = 7101852577860610209
RAFT_TERM = 3
FIRST_LEASE_ID = 0x694D7B3C1C4E4A00
WATCH_BUFFER_MESSAGES = 1_000


_Response = TypeVar(
    "_Response",
    rpc_pb2.RangeResponse,
    rpc_pb2.TxnResponse,
    rpc_pb2.DeleteRangeResponse,
    rpc_pb2.WatchResponse,
)


@dataclass
class _Watcher:
    key: bytes
    range_end: bytes
    send: trio.MemorySendChannel[rpc_pb2.WatchResponse]

    def matches(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        return self.key <= key and (self.range_end == b"\x00" or key < self.range_end)


class FakeMember:
    """The member's KV, leases and watches, in memory, answering at once."""

    def __init__(self) -> None:
        self.store = MvccStore()
        self.leases: dict[int, int] = {}
        self.applier = KvApplier(self.store, lease_exists=lambda lease: lease in self.leases)
        self.history: list[TxnEvents] = []
        self.compacted_revision = 0
        self.watchers: list[_Watcher] = []
        self.calls: list[str] = []
        self.refusal: RpcError | None = None
        self._next_lease = FIRST_LEASE_ID

    # -- the backend interface ------------------------------------------------------------

    def admit(self, context: CallContext) -> None:
        if self.refusal is not None:
            raise self.refusal

    async def range(
        self, request: rpc_pb2.RangeRequest, context: CallContext
    ) -> rpc_pb2.RangeResponse:
        await trio.lowlevel.checkpoint()
        self.calls.append("range")
        check_range(request)
        return self._filled(self.applier.range(request))

    async def txn(self, request: rpc_pb2.TxnRequest, context: CallContext) -> rpc_pb2.TxnResponse:
        await trio.lowlevel.checkpoint()
        self.calls.append("txn")
        check_txn(request, 128)
        response = self.applier.txn(request)
        self._publish()
        return self._filled(response)

    async def delete_range(
        self, request: rpc_pb2.DeleteRangeRequest, context: CallContext
    ) -> rpc_pb2.DeleteRangeResponse:
        await trio.lowlevel.checkpoint()
        self.calls.append("delete_range")
        check_delete_range(request)
        response = self.applier.delete_range(request)
        self._publish()
        return self._filled(response)

    async def grant_lease(self, ttl_s: int, context: CallContext) -> int:
        await trio.lowlevel.checkpoint()
        self.calls.append("grant_lease")
        return self.grant(ttl_s)

    @asynccontextmanager
    async def watch(
        self, key: bytes, range_end: bytes, start_revision: int
    ) -> AsyncIterator[AsyncIterator[rpc_pb2.WatchResponse]]:
        send, receive = trio.open_memory_channel[rpc_pb2.WatchResponse](WATCH_BUFFER_MESSAGES)
        watcher = _Watcher(key, range_end, send)
        if 0 < start_revision <= self.compacted_revision:
            cancel = rpc_pb2.WatchResponse(canceled=True, compact_revision=self.compacted_revision)
            send.send_nowait(self._filled(cancel))
            send.close()
        else:
            for txn in self.history:
                if txn.revision >= start_revision:
                    self._send(watcher, txn)
            self.watchers.append(watcher)
        try:
            async with receive:
                yield receive
        finally:
            if watcher in self.watchers:
                self.watchers.remove(watcher)

    # -- what tests do besides the interface ----------------------------------------------

    def grant(self, ttl_s: int) -> int:
        lease = self._next_lease
        self._next_lease += 1
        self.leases[lease] = ttl_s
        return lease

    def revoke(self, lease: int) -> None:
        """Revoke (or expire) a lease: its keys go in one revision, as etcd's revoke."""
        del self.leases[lease]
        attached = [kv.key for kv in self.store.range(b"\x00", b"\x00").kvs if kv.lease == lease]
        if attached:
            with self.store.write() as txn:
                for key in attached:
                    txn.delete_range(key)
            self._publish()

    def compact(self, revision: int) -> None:
        """Forget the history up to ``revision``: a watch from there is cancelled."""
        self.compacted_revision = revision

    def end_watches(self) -> None:
        """End every open watch without a cancel message (a lost watch stream)."""
        for watcher in self.watchers:
            watcher.send.close()
        self.watchers.clear()

    def value(self, key: bytes) -> kv_pb2.KeyValue | None:
        kvs = self.store.range(key).kvs
        return to_pb(kvs[0]) if kvs else None

    def keys(self, prefix: bytes) -> list[bytes]:
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        return [kv.key for kv in self.store.range(prefix, end).kvs]

    # -- helpers --------------------------------------------------------------------------

    def _publish(self) -> None:
        for txn in self.store.take_events():
            self.history.append(txn)
            for watcher in self.watchers:
                self._send(watcher, txn)

    def _send(self, watcher: _Watcher, txn: TxnEvents) -> None:
        events = [_event(event) for event in txn.events if watcher.matches(event.kv.key)]
        if events:
            response = rpc_pb2.WatchResponse(events=events)
            response.header.revision = txn.revision
            watcher.send.send_nowait(self._filled(response))

    def _filled(self, response: _Response) -> _Response:
        header = response.header
        header.cluster_id, header.member_id, header.raft_term = CLUSTER_ID, MEMBER_ID, RAFT_TERM
        if header.revision == 0:
            header.revision = self.store.current_revision
        return response


def _event(event: Event) -> kv_pb2.Event:
    return kv_pb2.Event(type=kv_pb2.Event.EventType.Value(event.type.name), kv=to_pb(event.kv))
