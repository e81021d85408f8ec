"""The values the Raft core consumes and produces.

Everything here is an immutable value: messages cross actor channels and the
wire, entries sit in logs that several parties read. Nothing in this module
does I/O; encoding to bytes for the wire lives in ``net``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

NO_NODE = 0
"""The id that means "nobody": no leader known, no vote cast."""


class MessageType(enum.IntEnum):
    """Every kind of message the core steps.

    Local messages (``HUP``, ``BEAT``, ``CHECK_QUORUM``, ``UNREACHABLE``,
    ``SNAPSHOT_STATUS``) are made by the node itself from ticks and reports;
    they are refused when they arrive from the network.
    """

    HUP = 0
    BEAT = 1
    PROPOSE = 2
    APPEND = 3
    APPEND_RESPONSE = 4
    VOTE = 5
    VOTE_RESPONSE = 6
    SNAPSHOT = 7
    HEARTBEAT = 8
    HEARTBEAT_RESPONSE = 9
    UNREACHABLE = 10
    SNAPSHOT_STATUS = 11
    CHECK_QUORUM = 12
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESPONSE = 16
    PRE_VOTE = 17
    PRE_VOTE_RESPONSE = 18


LOCAL_MESSAGE_TYPES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.CHECK_QUORUM,
        MessageType.UNREACHABLE,
        MessageType.SNAPSHOT_STATUS,
    }
)

RESPONSE_MESSAGE_TYPES = frozenset(
    {
        MessageType.APPEND_RESPONSE,
        MessageType.VOTE_RESPONSE,
        MessageType.HEARTBEAT_RESPONSE,
        MessageType.READ_INDEX_RESPONSE,
        MessageType.PRE_VOTE_RESPONSE,
    }
)

PERSIST_DEPENDENT_MESSAGE_TYPES = frozenset(
    {
        MessageType.APPEND_RESPONSE,
        MessageType.VOTE,
        MessageType.VOTE_RESPONSE,
        MessageType.PRE_VOTE,
        MessageType.PRE_VOTE_RESPONSE,
    }
)
"""Messages that vouch for durable state and so leave only after the persist.

An append acknowledgement claims the entries are on disk; a vote (granted or
requested for oneself) claims the term and vote are on disk. Sending either
before the fsync lets a crash break the promise. A pre-vote changes nothing
durable, but it carries terms and log positions read from the unpersisted
log, so it waits too; the cost is at most one fsync of latency on an election.
"""


class EntryType(enum.IntEnum):
    """What an entry's payload means to the core."""

    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data`` is opaque to the core unless it is a conf change."""

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def payload_size_bytes(self) -> int:
        """The bytes this entry counts against append and uncommitted limits."""
        return len(self.data)


@dataclass(frozen=True, slots=True)
class HardState:
    """The state that must be on disk before a node speaks for it."""

    term: int = 0
    vote: int = NO_NODE
    commit: int = 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class ConfState:
    """A configuration: the voters and the learners, each sorted."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        assert list(self.voters) == sorted(set(self.voters)), self.voters
        assert list(self.learners) == sorted(set(self.learners)), self.learners
        assert not set(self.voters) & set(self.learners), (self.voters, self.learners)

    def members(self) -> tuple[int, ...]:
        """Every member, voter or learner, in id order."""
        return tuple(sorted(self.voters + self.learners))


class ConfChangeType(enum.IntEnum):
    """The single-member changes the core supports, one at a time."""

    ADD_VOTER = 0
    """Add a voter, or promote an existing learner to a voter."""
    ADD_LEARNER = 1
    """Add a learner (refused for an existing voter: no demotion)."""
    REMOVE = 2
    """Remove a voter or a learner."""


_CONF_CHANGE_HEADER = struct.Struct(">BQ")


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A membership change carried in a ``CONF_CHANGE`` entry.

    ``context`` is opaque to the core; the member layer puts the new member's
    name and URLs there.
    """

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        """The entry payload: a one-byte type and an eight-byte id, then the context."""
        return _CONF_CHANGE_HEADER.pack(self.type, self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """Parse an entry payload made by :meth:`encode`.

        Raises:
            ValueError: the payload is too short or names an unknown change type.
        """
        if len(data) < _CONF_CHANGE_HEADER.size:
            raise ValueError(f"conf change payload of {len(data)} bytes is too short")
        change_type, node_id = _CONF_CHANGE_HEADER.unpack_from(data)
        return cls(ConfChangeType(change_type), node_id, bytes(data[_CONF_CHANGE_HEADER.size :]))


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    """Where a snapshot sits in the log, and the configuration at that point."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application state up to ``metadata.index``, opaque to the core."""

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        """True for the placeholder snapshot of a log that was never compacted."""
        return self.metadata.index == 0


EMPTY_SNAPSHOT = Snapshot()


@dataclass(frozen=True, slots=True)
class Message:
    """One message between nodes (or from a node to itself, for local types).

    Field meaning depends on ``type``, as in the Raft paper: for ``APPEND``
    ``index``/``log_term`` name the entry just before ``entries``; for an
    ``APPEND_RESPONSE`` ``index`` is the last index acknowledged, or for a
    rejection the probe index refused, with ``reject_hint``/``log_term`` the
    follower's suggestion where to retry. ``context`` carries a ReadIndex
    request id, or the campaign kind on votes.
    """

    type: MessageType
    recipient: int = NO_NODE
    sender: int = NO_NODE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


class Role(enum.Enum):
    """What a node currently is."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting but not persisting."""

    leader_id: int
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: serve the read once applied reaches ``index``."""

    index: int
    request_context: bytes
