"""Raft values to plain data and back: for peer frames and for storage records.

``net`` moves dicts and ``storage`` keeps plain records; neither knows Raft.
This module is where a Raft ``Message`` becomes a dict for a cbor2 frame (and
back), with every field checked on the way in: a peer's bytes are input like
any other, and a malformed message must be refused, never stepped.

Wire keys are short because every append carries them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from actors.raft import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from storage.raft_store import (
    SNAPSHOT_CHUNK_VALUE_BYTES_MAX,
    SNAPSHOT_CHUNKS_MAX,
    HardStateRecord,
    LogRecord,
    SnapshotRecord,
)

ID_MAX = (1 << 64) - 1
INDEX_MAX = (1 << 63) - 1
ENTRIES_PER_MESSAGE_MAX = 1 << 20
MEMBERS_PER_CONF_MAX = 1024


class WireError(ValueError):
    """A peer payload is not a well-formed Raft message."""


# -- peer messages --------------------------------------------------------------


def message_to_wire(message: Message) -> dict[str, Any]:
    """A dict for a cbor2 frame; zero fields are left out."""
    wire: dict[str, Any] = {"t": int(message.type), "to": message.recipient, "fr": message.sender}
    if message.term:
        wire["tm"] = message.term
    if message.log_term:
        wire["lt"] = message.log_term
    if message.index:
        wire["i"] = message.index
    if message.commit:
        wire["c"] = message.commit
    if message.entries:
        wire["e"] = [[e.term, e.index, int(e.type), e.data] for e in message.entries]
    if message.snapshot is not None:
        wire["s"] = snapshot_to_wire(message.snapshot)
    if message.reject:
        wire["r"] = True
    if message.reject_hint:
        wire["rh"] = message.reject_hint
    if message.context:
        wire["x"] = message.context
    return wire


def message_from_wire(wire: object) -> Message:
    """Parse and check a peer payload.

    Raises:
        WireError: a missing or mistyped field, a number out of range, an
            unknown message type.
    """
    if not isinstance(wire, dict):
        raise WireError("a message must be a map")
    try:
        kind = MessageType(_integer(wire, "t", 0, 255, required=True))
    except ValueError:
        raise WireError(f"unknown message type {wire.get('t')!r}") from None
    entries_wire = wire.get("e", [])
    if not isinstance(entries_wire, list) or len(entries_wire) > ENTRIES_PER_MESSAGE_MAX:
        raise WireError("entries must be a list of bounded length")
    snapshot_wire = wire.get("s")
    return Message(
        type=kind,
        recipient=_integer(wire, "to", 0, ID_MAX, required=True),
        sender=_integer(wire, "fr", 0, ID_MAX, required=True),
        term=_integer(wire, "tm", 0, INDEX_MAX),
        log_term=_integer(wire, "lt", 0, INDEX_MAX),
        index=_integer(wire, "i", 0, INDEX_MAX),
        commit=_integer(wire, "c", 0, INDEX_MAX),
        entries=tuple(_entry_from_wire(item) for item in entries_wire),
        snapshot=None if snapshot_wire is None else snapshot_from_wire(snapshot_wire),
        reject=_boolean(wire, "r"),
        reject_hint=_integer(wire, "rh", 0, INDEX_MAX),
        context=_bytes(wire, "x"),
    )


def _integer(wire: dict[Any, Any], key: str, low: int, high: int, required: bool = False) -> int:
    if key not in wire:
        if required:
            raise WireError(f"field {key!r} is missing")
        return 0
    value = wire[key]
    if type(value) is not int or not low <= value <= high:
        raise WireError(f"field {key!r} must be an integer in [{low}, {high}]")
    return value


def _boolean(wire: dict[Any, Any], key: str) -> bool:
    value = wire.get(key, False)
    if type(value) is not bool:
        raise WireError(f"field {key!r} must be a boolean")
    return value


def _bytes(wire: dict[Any, Any], key: str) -> bytes:
    value = wire.get(key, b"")
    if not isinstance(value, bytes):
        raise WireError(f"field {key!r} must be bytes")
    return value


def _entry_from_wire(item: object) -> Entry:
    if not isinstance(item, list) or len(item) != 4:
        raise WireError("an entry must be [term, index, type, data]")
    term, index, kind, data = item
    for name, number in (("term", term), ("index", index)):
        if type(number) is not int or not 0 <= number <= INDEX_MAX:
            raise WireError(f"entry {name} must be a non-negative integer")
    if kind not in (EntryType.NORMAL, EntryType.CONF_CHANGE) or type(kind) is not int:
        raise WireError("entry type must be 0 or 1")
    if not isinstance(data, bytes):
        raise WireError("entry data must be bytes")
    return Entry(term, index, EntryType(kind), data)


@dataclass(frozen=True, slots=True)
class SnapshotManifest:
    """What a core ``Snapshot.data`` holds: not the state, only where its chunks are.

    The state is ``chunks`` chunks (``size_bytes`` of sealed chunk values) in the RaftStore,
    under the set of the snapshot's index made here (``received`` False) or received from a
    peer (True). The core carries it opaquely; the transport sends the chunks it names.
    """

    chunks: int = 0
    size_bytes: int = 0
    received: bool = False

    def __post_init__(self) -> None:
        if type(self.chunks) is not int or not 0 <= self.chunks <= SNAPSHOT_CHUNKS_MAX:
            raise ValueError(f"a snapshot of {self.chunks!r} chunks")
        if type(self.size_bytes) is not int or self.size_bytes < 0:
            raise ValueError(f"a snapshot of {self.size_bytes!r} bytes")
        if self.size_bytes > self.chunks * SNAPSHOT_CHUNK_VALUE_BYTES_MAX:
            raise ValueError(f"{self.size_bytes} bytes cannot be in {self.chunks} chunks")
        if type(self.received) is not bool:
            raise ValueError("received must be a bool")

    def encode(self) -> bytes:
        """For ``Snapshot.data``."""
        return cbor2.dumps([self.chunks, self.size_bytes, self.received])

    @classmethod
    def decode(cls, data: bytes) -> SnapshotManifest:
        """Parse ``Snapshot.data`` (empty: no chunks).

        Raises:
            ValueError: not a manifest.
        """
        if not data:
            return cls()
        try:
            item = cbor2.loads(data)
        except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError):
            raise ValueError("snapshot data is not a manifest") from None
        if not isinstance(item, list) or len(item) != 3:
            raise ValueError("snapshot data is not a manifest")
        return cls(*item)


def snapshot_to_wire(snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot as a dict: the metadata and the manifest (the transport sends the chunks)."""
    meta = snapshot.metadata
    return {
        "i": meta.index,
        "tm": meta.term,
        "v": list(meta.conf_state.voters),
        "l": list(meta.conf_state.learners),
        "d": snapshot.data,
    }


def snapshot_from_wire(wire: object) -> Snapshot:
    """Parse and check a snapshot map.

    Raises:
        WireError: malformed, or a configuration that is not sorted and disjoint.
    """
    if not isinstance(wire, dict):
        raise WireError("a snapshot must be a map")
    voters = _member_list(wire.get("v", []))
    learners = _member_list(wire.get("l", []))
    if set(voters) & set(learners):
        raise WireError("a member cannot be both voter and learner")
    metadata = SnapshotMetadata(
        index=_integer(wire, "i", 0, INDEX_MAX, required=True),
        term=_integer(wire, "tm", 0, INDEX_MAX, required=True),
        conf_state=ConfState(voters, learners),
    )
    data = _bytes(wire, "d")
    try:
        SnapshotManifest.decode(data)
    except ValueError as error:
        raise WireError(str(error)) from None
    return Snapshot(metadata, data)


def _member_list(value: object) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MEMBERS_PER_CONF_MAX:
        raise WireError("a member list must be a bounded list")
    if any(type(item) is not int or not 0 < item <= ID_MAX for item in value):
        raise WireError("member ids must be positive 64-bit integers")
    members = tuple(sorted(set(value)))
    if len(members) != len(value):
        raise WireError("member ids must be distinct")
    return members


# -- storage records -----------------------------------------------------------


def entry_to_record(entry: Entry) -> LogRecord:
    """An entry as the storage layer keeps it."""
    return LogRecord(entry.index, entry.term, int(entry.type), entry.data)


def entry_from_record(record: LogRecord) -> Entry:
    """A stored record as an entry."""
    return Entry(record.term, record.index, EntryType(record.kind), record.data)


def hard_state_to_record(hard_state: HardState) -> HardStateRecord:
    """The hard state as the storage layer keeps it."""
    return HardStateRecord(hard_state.term, hard_state.vote, hard_state.commit)


def hard_state_from_record(record: HardStateRecord) -> HardState:
    """A stored hard state."""
    return HardState(record.term, record.vote, record.commit)


def snapshot_to_record(snapshot: Snapshot) -> SnapshotRecord:
    """A snapshot as the storage layer keeps it (its manifest as chunk fields).

    Raises:
        ValueError: its data is not a manifest.
    """
    meta = snapshot.metadata
    conf = meta.conf_state
    manifest = SnapshotManifest.decode(snapshot.data)
    return SnapshotRecord(
        meta.index, meta.term, conf.voters, conf.learners, b"",
        manifest.chunks, manifest.size_bytes, manifest.received,
    )  # fmt: skip


def snapshot_from_record(record: SnapshotRecord) -> Snapshot:
    """A stored snapshot, its data the manifest of its chunks."""
    conf = ConfState(tuple(record.voters), tuple(record.learners))
    manifest = SnapshotManifest(record.chunks, record.size_bytes, record.received)
    return Snapshot(SnapshotMetadata(record.index, record.term, conf), manifest.encode())
