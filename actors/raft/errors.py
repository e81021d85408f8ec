"""Errors the Raft core raises for callers to handle.

Broken invariants are assertions, not these: a caller cannot handle a
corrupted log, but it can retry a proposal dropped for want of a leader.
"""

from __future__ import annotations

import enum


class RaftError(Exception):
    """Base of every error the core raises on purpose."""


class ConfigError(RaftError, ValueError):
    """A configuration value is out of range or two values contradict."""


class DropReason(enum.Enum):
    """Why a proposal (or a read request) was refused."""

    NO_LEADER = "no leader"
    TRANSFER_IN_PROGRESS = "leader transfer in progress"
    UNCOMMITTED_LIMIT = "too many uncommitted bytes"
    NOT_A_MEMBER = "this node is not a member of the cluster"
    CONF_CHANGE_PENDING = "a configuration change is still being applied"
    INVALID_CONF_CHANGE = "invalid configuration change"
    FORWARDING_DISABLED = "proposal forwarding is disabled"
    EMPTY_PROPOSAL = "a proposal needs at least one entry"
    READ_FORWARDED_TWICE = "a read index forwarded here is not forwarded again"


class ProposalDropped(RaftError):
    """The core refused a proposal; nothing was appended.

    Attributes:
        reason: why, so the caller can map it to an API error.
    """

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason.value + (f": {detail}" if detail else ""))


class StepRefused(RaftError):
    """A message was not stepped: a local type from the network, or from a stranger."""


class StorageError(RaftError):
    """Base of the errors a Storage reports to the core."""


class CompactedError(StorageError):
    """The requested index is older than the storage's first index."""


class UnavailableError(StorageError):
    """The requested index is newer than the storage's last index."""


class SnapshotTemporarilyUnavailable(StorageError):
    """The storage is making a snapshot; ask again later."""


class SnapshotOutOfDate(StorageError):
    """A snapshot older than the one already held was offered."""
