"""What a Raft entry carries for the member: a request, tagged with who asked.

Every normal entry a member proposes is an envelope: its kind, the proposing
member and a sequence number unique to that member (so only the proposer's
waiter is woken when the entry is applied), and the body. Bodies are opaque
here; the state machine decodes them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import cbor2

ENVELOPE_BYTES_MAX = 8 * 1024 * 1024
"""An entry larger than this is refused when decoding (a proposal is bounded earlier)."""


class EnvelopeKind(enum.IntEnum):
    """What the body of an entry is."""

    V2_REQUEST = 1
    """A v2 keys request (``storage.v2store.model.V2Request`` bytes)."""
    PUBLISH = 2
    """A member announcing its name and client URLs after it starts."""
    UPDATE_MEMBER = 3
    """New peer URLs for a member (no configuration change)."""
    V3_REQUEST = 4
    """A v3 write: etcd's ``InternalRaftRequest`` protobuf (``net.etcdpb.raft_internal_pb2``)."""
    QOS = 5
    """A tenant's QoS limits set or deleted (``storage.qos.limits``; issue 16)."""
    QOS_REFUSED = 6
    """A write the leader refused for its tenant's rate (``actors.qos_leader``): the same
    request id, an empty body; applying it changes nothing and answers "too many requests"."""


@dataclass(frozen=True, slots=True)
class RequestId:
    """Unique across the cluster and across restarts of a member."""

    member_id: int
    sequence: int


@dataclass(frozen=True, slots=True)
class Envelope:
    """One entry's payload."""

    kind: EnvelopeKind
    request_id: RequestId
    body: bytes

    def encode(self) -> bytes:
        """The entry data."""
        return cbor2.dumps(
            [int(self.kind), self.request_id.member_id, self.request_id.sequence, self.body]
        )

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Parse entry data.

        Raises:
            ValueError: not an envelope.
        """
        if len(data) > ENVELOPE_BYTES_MAX:
            raise ValueError("envelope too large")
        try:
            item: Any = cbor2.loads(data)
        except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as error:
            raise ValueError(f"envelope is not cbor: {error}") from None
        if not isinstance(item, list) or len(item) != 4:
            raise ValueError("envelope must be a 4-item list")
        kind, member_id, sequence, body = item
        if type(member_id) is not int or type(sequence) is not int or not isinstance(body, bytes):
            raise ValueError("envelope fields have the wrong types")
        try:
            return cls(EnvelopeKind(kind), RequestId(member_id, sequence), body)
        except ValueError:
            raise ValueError(f"unknown envelope kind {kind!r}") from None


class RequestIds:
    """Hands out request ids: the member id, its incarnation, and a counter.

    The incarnation is persisted and bumped at every start, so a restarted
    member never reuses the id of a request its earlier life proposed (an old
    entry applied after the restart must not wake a new waiter).
    """

    COUNTER_BITS = 40

    def __init__(self, member_id: int, incarnation: int) -> None:
        self.member_id = member_id
        self._next = incarnation << self.COUNTER_BITS

    def next(self) -> RequestId:
        """A fresh id."""
        self._next += 1
        return RequestId(self.member_id, self._next)
