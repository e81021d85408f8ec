"""Per-tenant write rates charged again at the leader (issue 16 item 3).

Why
---

The serving member's buckets (``actors.qos``) give a tenant its rate on each member: a client
that spreads its writes over N members gets up to N times its rate. Every write goes through
the leader's log, so the leader is where the cluster's total can be held to the rate. This
module is that second charge: the leader's Raft actor shell (``actors.raft_actor``, never the
pure core) passes it each normal entry proposed on the leader, its own member's and those
followers forward as Raft ``PROPOSE`` messages, before the entries are appended.

What it decides
---------------

A ``V3_REQUEST`` entry that writes (Put, DeleteRange, a Txn with writes; its bytes as the
serving member counts them) is charged to its tenants by the serving member's rule
(``QosTable``): the caller's user tenant, else each of its role tenants (the caller travels in
the request header's ``username``; its roles are read from the leader's auth store), else the
longest-prefix tenant of each key. A tenant with a write rate (requests or bytes) pays one
request token per charge and its bytes, from the leader's own buckets, on the leader's Trio
clock (virtual in the simulator). A bucket holds one second of its rate and may run into debt
paid back within ``LEADER_SLACK_S``: the serving member has already spaced the writes it
admitted, and they arrive at the leader with network jitter, so a bucket held to exactly zero
would refuse some writes of a client that keeps to its rate. All of a request's charges are
taken, or none (a refused entry spends nothing).

An entry over a rate is not dropped (its proposer would only see a timeout): its data is
replaced by a ``QOS_REFUSED`` envelope with the same request id. Applying it changes nothing
on any member (no revision, no event) and answers the proposer's waiter with
:class:`LeaderRefused` (ResourceExhausted "etcdserver: too many requests"), which the serving
member sends after ``LEADER_REFUSAL_DELAY_S``, the tarpit a local refusal waits too.

Not charged: V2 requests (QoS covers the v3 KV API), leases, compactions, auth and QoS
entries, read-only txns (served without the log).

Cost and bounds
---------------

With no tenant set, a proposal on the leader pays one call and one flag test
(``QosTable.limited``); with tenants but none with a write rate, one more test. Entries are
decoded only when some tenant has a write rate. One pair of buckets per tenant (at most
``storage.qos.limits.TENANTS_MAX``), rebuilt when the table changes (a tenant whose write
limits did not change keeps its buckets).

A new leader (or a new term) starts with full buckets: one second of burst, so a leader change
lets a tenant through at most one extra second's worth of writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Final

import trio
from google.protobuf.message import DecodeError

from actors.envelope import Envelope, EnvelopeKind
from actors.raft import EntryType, Message
from net.etcdpb import rpc_pb2
from net.etcdpb.raft_internal_pb2 import InternalRaftRequest
from net.v3.errors import RpcError, StatusCode
from storage.qos import QosTable, TenantLimits, TokenBucket
from storage.qos.limits import TenantId

log = logging.getLogger(__name__)

LEADER_SLACK_S: Final = 0.25
"""A leader bucket may owe at most this many seconds of its rate (arrival jitter)."""
LEADER_REFUSAL_DELAY_S: Final = 0.25
"""The serving member answers a leader refusal after this (``actors.qos.WAIT_MAX_S``'s tarpit:
a closed-loop flooder is not sped up by being refused at the leader rather than locally)."""
TOO_MANY_REQUESTS: Final = "etcdserver: too many requests"

Charge = tuple[TenantId, int]
"""What one write costs one tenant at the leader: (tenant, bytes); one request token each."""


class LeaderRefused(RpcError):
    """A write the leader refused for its tenant's rate (applied as ``QOS_REFUSED``)."""

    def __init__(self) -> None:
        super().__init__(StatusCode.RESOURCE_EXHAUSTED, TOO_MANY_REQUESTS)


def refused_entry(envelope: Envelope) -> bytes:
    """The data that replaces a refused entry's: same request id, nothing to apply."""
    return Envelope(EnvelopeKind.QOS_REFUSED, envelope.request_id, b"").encode()


# -- what a request writes ---------------------------------------------------------------------


def write_keys(request: InternalRaftRequest) -> list[tuple[bytes, int]]:
    """(key, bytes) of each key a v3 write names, as the serving member counts them (a txn:
    every operation of both branches, nested txns too); empty when it writes nothing."""
    if request.HasField("put"):
        return [(request.put.key, len(request.put.key) + len(request.put.value))]
    if request.HasField("delete_range"):
        return [(request.delete_range.key, len(request.delete_range.key))]
    if request.HasField("txn"):
        keys: list[tuple[bytes, int]] = []
        writes = False
        for kind, key, size_bytes in _txn_operations(request.txn):
            keys.append((key, size_bytes))
            writes = writes or kind != "request_range"
        return keys if writes else []
    return []


def _txn_operations(txn: rpc_pb2.TxnRequest) -> Iterator[tuple[str, bytes, int]]:
    for operation in (*txn.success, *txn.failure):
        kind = operation.WhichOneof("request")
        if kind == "request_txn":
            yield from _txn_operations(operation.request_txn)
        elif kind == "request_put":
            put = operation.request_put
            yield kind, put.key, len(put.key) + len(put.value)
        elif kind == "request_delete_range":
            yield kind, operation.request_delete_range.key, len(operation.request_delete_range.key)
        elif kind == "request_range":
            yield kind, operation.request_range.key, 0


def write_charges(
    table: QosTable, request: InternalRaftRequest, roles_of: Callable[[str], Sequence[str]]
) -> list[Charge]:
    """The tenants a v3 write is charged to at the leader (``actors.qos``'s rule): the
    caller's tenants once for the whole request, else each key's longest-prefix tenant."""
    keys = write_keys(request)
    if not keys:
        return []
    username = request.header.username
    if table.callers and username:
        callers = table.caller_tenants(username, roles_of(username))
        if callers:
            total_bytes = sum(size_bytes for _, size_bytes in keys)
            return [(tenant, total_bytes) for tenant in callers]
    return [
        (tenant, size_bytes)
        for key, size_bytes in keys
        if (tenant := table.tenant_of(key)) is not None
    ]


# -- the leader's buckets ----------------------------------------------------------------------


@dataclass(slots=True)
class WriteBuckets:
    """One tenant's write buckets at the leader (None: that rate is not limited)."""

    limits: TenantLimits
    requests: TokenBucket | None
    volume: TokenBucket | None

    @classmethod
    def of(cls, limits: TenantLimits, now_s: float) -> WriteBuckets:
        def bucket(rate: int) -> TokenBucket | None:
            return TokenBucket(rate, rate, updated_s=now_s) if rate else None

        return cls(limits, bucket(limits.write_requests_per_s), bucket(limits.write_bytes_per_s))

    def same_rates(self, limits: TenantLimits) -> bool:
        """Whether ``limits`` has this tenant's write rates (its buckets can stay)."""
        return (limits.write_requests_per_s, limits.write_bytes_per_s) == (
            self.limits.write_requests_per_s,
            self.limits.write_bytes_per_s,
        )


def _has_write_rate(limits: TenantLimits) -> bool:
    return limits.write_requests_per_s > 0 or limits.write_bytes_per_s > 0


Taken = list[tuple[TokenBucket, int]]
"""Tokens taken from buckets: what ``give_back`` returns."""


def take_all(
    buckets: dict[TenantId, WriteBuckets], charges: list[Charge], now_s: float
) -> Taken | None:
    """Take every charge's tokens (one request, its bytes), each bucket allowed a debt paid
    back within ``LEADER_SLACK_S``; or, if one cannot pay, none (what was taken is given
    back): what was taken, or None."""
    taken: Taken = []
    for tenant, size_bytes in charges:
        found = buckets.get(tenant)
        if found is None:
            continue
        for bucket, amount in ((found.requests, 1), (found.volume, size_bytes)):
            if bucket is None:
                continue
            if bucket.reserve(amount, now_s, LEADER_SLACK_S) is None:
                give_back(taken)
                return None
            taken.append((bucket, amount))
    return taken


def give_back(taken: Taken) -> None:
    """Return tokens taken in this same step: ``reserve`` refilled each bucket to the moment
    it took them and nothing refilled since, so adding them back is an exact undo."""
    for bucket, amount in taken:
        bucket.tokens += amount


class LeaderAdmission:
    """The leader's write buckets and the decision for each proposed entry.

    Pure apart from ``now`` (the leader's Trio clock by default; tests pass their own): the
    Raft actor shell calls :meth:`admit` and :meth:`admit_message` only while it leads.
    """

    def __init__(
        self,
        table: Callable[[], QosTable],
        roles_of: Callable[[str], Sequence[str]],
        *,
        now: Callable[[], float] = trio.current_time,
    ) -> None:
        self._table = table
        self._roles_of = roles_of
        self._now = now
        self._seen: QosTable | None = None
        self._version = -1
        self._term = -1
        self.buckets: dict[TenantId, WriteBuckets] = {}
        """Tenants with a write rate, and their buckets (at most ``TENANTS_MAX``)."""
        self.refused = 0
        """Entries refused here (for tests and logs)."""
        self._last_taken: Taken = []
        """The tokens the last ``admit`` or ``admit_message`` took, for ``refund``."""

    def admit(self, data: bytes, term: int) -> bytes:
        """A normal entry's data as it is to be appended at ``term``: unchanged, or a
        ``QOS_REFUSED`` envelope when its tenant is over a write rate."""
        if self._last_taken:  # no list made per proposal while nothing is taken
            self._last_taken = []
        return self._admit(data, term)

    def refund(self) -> None:
        """Give back what the last ``admit`` or ``admit_message`` took: the core dropped its
        entries instead of appending them (a leader transfer under way, the uncommitted
        limit), and the client will send them again."""
        give_back(self._last_taken)
        self._last_taken = []

    def _admit(self, data: bytes, term: int) -> bytes:
        table = self._table()
        if not table.limited:
            return data
        if table is not self._seen or table.version != self._version:
            self._rebuild(table)
        if not self.buckets:
            return data
        return self._decide(table, data, term)

    def admit_message(self, message: Message, term: int) -> Message:
        """A forwarded ``PROPOSE`` message with each normal entry admitted."""
        if self._last_taken:
            self._last_taken = []
        if not self._table().limited:
            return message
        entries = tuple(
            replace(entry, data=self._admit(entry.data, term))
            if entry.type is EntryType.NORMAL and entry.data
            else entry
            for entry in message.entries
        )
        return replace(message, entries=entries)

    def _rebuild(self, table: QosTable) -> None:
        """Buckets for the table's tenants with a write rate; unchanged ones kept."""
        now_s = self._now()
        every: list[tuple[TenantId, TenantLimits]] = [
            *table.tenants.items(),
            *table.callers.items(),
        ]
        kept = self.buckets
        self.buckets = {
            tenant: found
            if (found := kept.get(tenant)) is not None and found.same_rates(limits)
            else WriteBuckets.of(limits, now_s)
            for tenant, limits in every
            if _has_write_rate(limits)
        }
        self._seen, self._version = table, table.version

    def _decide(self, table: QosTable, data: bytes, term: int) -> bytes:
        try:
            envelope = Envelope.decode(data)
        except ValueError:
            return data  # the state machine logs and skips it
        if envelope.kind is not EnvelopeKind.V3_REQUEST:
            return data
        request = InternalRaftRequest()
        try:
            request.ParseFromString(envelope.body)
        except DecodeError:
            return data
        charges = write_charges(table, request, self._roles_of)
        if not charges:
            return data
        now_s = self._now()
        if term != self._term:  # a new leader, or a new term: full buckets
            self._term = term
            self.buckets = {
                tenant: WriteBuckets.of(found.limits, now_s)
                for tenant, found in self.buckets.items()
            }
        taken = take_all(self.buckets, charges, now_s)
        if taken is not None:
            self._last_taken += taken
            return data
        self.refused += 1
        if self.refused & (self.refused - 1) == 0:  # 1, 2, 4, ...: bounded log volume
            log.warning(
                "qos: leader refused a write of tenant %r (%d so far)", charges[0][0], self.refused
            )
        return refused_entry(envelope)
