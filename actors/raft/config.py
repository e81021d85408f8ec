"""The core's configuration: every limit named, with its unit last, and checked."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from actors.raft.errors import ConfigError
from actors.raft.messages import NO_NODE

MIB = 1024 * 1024


class ReadOnlyOption(enum.Enum):
    """How a leader confirms it may answer a read."""

    SAFE = "safe"
    """ReadIndex: a heartbeat round confirms leadership before the read is served."""
    LEASE_BASED = "lease-based"
    """Trust the CheckQuorum lease: no round trip, but correct only with bounded clock drift."""


class PlantedBug(enum.Enum):
    """Deliberate bugs for proving that tests can fail. Never set outside tests."""

    SKIP_ELECTION_RESTRICTION = "skip-election-restriction"
    """Grant votes without checking that the candidate's log is up to date (§5.4.1)."""
    COMMIT_BY_COUNTING_OLD_TERM = "commit-by-counting-old-term"
    """Commit an entry of an earlier term by counting replicas (Figure 8)."""
    ACK_BEFORE_SYNC = "ack-before-sync"
    """Release append acknowledgements before the entries are persisted."""
    TRUNCATE_ON_STALE_APPEND = "truncate-on-stale-append"
    """Replace the log after an append's entries even when they all match (a late, stale
    append then cuts off entries this follower acknowledged)."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a node needs to know to run the core.

    Attributes:
        node_id: this node's id; never ``NO_NODE``.
        election_timeout_ticks: ticks without hearing a leader before campaigning.
            The actual timeout is drawn from ``[election, 2 * election)``.
        heartbeat_interval_ticks: ticks between a leader's heartbeats.
        applied_index: the last index the application had applied before this
            start; committed entries after it are handed out again.
        append_bytes_max: payload bytes per append message (at least one entry
            is always sent, however large).
        inflight_messages_max: unacknowledged appends per follower.
        inflight_bytes_max: unacknowledged payload bytes per follower.
        uncommitted_bytes_max: payload bytes a leader holds uncommitted before
            it refuses proposals.
        committed_bytes_max_per_ready: payload bytes of committed entries handed
            out in one Ready.
        check_quorum: a leader steps down when a quorum has not been heard
            from within an election timeout, and followers that hear a live
            leader ignore vote requests.
        pre_vote: campaign in two phases so that a rejoining node cannot bump
            the term of a healthy cluster.
        read_only_option: how reads are confirmed.
        disable_proposal_forwarding: followers refuse proposals instead of
            forwarding them to the leader.
        async_storage_writes: persisting and applying are acknowledged
            separately (``on_persisted``, ``on_applied``), and further Readies
            may be taken before earlier ones are acknowledged; committed
            entries are then handed out for applying only once they are
            durable here. Off: one Ready at a time, acknowledged by ``advance``.
        planted_bugs: test-only switches that break a rule on purpose.
    """

    node_id: int
    election_timeout_ticks: int = 10
    heartbeat_interval_ticks: int = 1
    applied_index: int = 0
    append_bytes_max: int = 1 * MIB
    inflight_messages_max: int = 256
    inflight_bytes_max: int = 32 * MIB
    uncommitted_bytes_max: int = 64 * MIB
    committed_bytes_max_per_ready: int = 64 * MIB
    check_quorum: bool = True
    pre_vote: bool = True
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    disable_proposal_forwarding: bool = False
    async_storage_writes: bool = False
    planted_bugs: frozenset[PlantedBug] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every value; called at construction.

        Raises:
            ConfigError: naming the first bad field and why.
        """
        if self.node_id == NO_NODE or self.node_id < 0:
            raise ConfigError(f"node_id must be a positive integer, not {self.node_id}")
        if self.heartbeat_interval_ticks <= 0:
            raise ConfigError("heartbeat_interval_ticks must be positive")
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks:
            raise ConfigError(
                "election_timeout_ticks must be greater than heartbeat_interval_ticks"
            )
        if self.applied_index < 0:
            raise ConfigError("applied_index must not be negative")
        positive = {
            "append_bytes_max": self.append_bytes_max,
            "inflight_messages_max": self.inflight_messages_max,
            "inflight_bytes_max": self.inflight_bytes_max,
            "uncommitted_bytes_max": self.uncommitted_bytes_max,
            "committed_bytes_max_per_ready": self.committed_bytes_max_per_ready,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be positive, not {value}")
        if self.read_only_option is ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise ConfigError("lease-based reads are only safe with check_quorum on")
