"""troika's Raft core: a pure, deterministic consensus engine.

No I/O, no clock, no threads, no global randomness: time arrives as
``tick()``, everything else as ``step(message)``, and what the node wants
done comes back as a :class:`Ready` value. See ``core`` for the theory of
operation and ``rawnode`` for the loop an application runs around it.
"""

from actors.raft.config import Config, PlantedBug, ReadOnlyOption
from actors.raft.core import CAMPAIGN_TRANSFER
from actors.raft.errors import (
    CompactedError,
    ConfigError,
    DropReason,
    ProposalDropped,
    RaftError,
    SnapshotOutOfDate,
    SnapshotTemporarilyUnavailable,
    StepRefused,
    StorageError,
    UnavailableError,
)
from actors.raft.messages import (
    NO_NODE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Role,
    Snapshot,
    SnapshotMetadata,
    SoftState,
)
from actors.raft.rawnode import PersistedUpTo, RawNode, Ready, StorageAppend, StorageApply
from actors.raft.storage import MemoryStorage, Storage
from actors.raft.tracker import conf_state_after, validate_conf_change

__all__ = [
    "CAMPAIGN_TRANSFER",
    "NO_NODE",
    "CompactedError",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "ConfigError",
    "DropReason",
    "Entry",
    "EntryType",
    "HardState",
    "MemoryStorage",
    "Message",
    "MessageType",
    "PersistedUpTo",
    "PlantedBug",
    "ProposalDropped",
    "RaftError",
    "RawNode",
    "ReadOnlyOption",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotOutOfDate",
    "SnapshotTemporarilyUnavailable",
    "SoftState",
    "StepRefused",
    "Storage",
    "StorageAppend",
    "StorageApply",
    "StorageError",
    "UnavailableError",
    "conf_state_after",
    "validate_conf_change",
]
