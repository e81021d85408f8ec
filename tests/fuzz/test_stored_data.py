"""Every decoder of stored data against corrupted bytes: a typed error, never another exception.

Each test starts from real records (written by the stores themselves) and corrupts one value,
deletes it, or adds a stray key; reopening must then succeed or raise the decoder's documented
error: ``StorageCorrupted`` for the Raft log, the applied index and the MVCC store,
``ValueError`` for the v2 store and the records of ``actors`` (envelopes, peer messages,
snapshots, membership), and the state machine skips an entry it cannot read, with a log line.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import cbor2
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from actors.codec import message_from_wire, message_to_wire, snapshot_from_wire
from actors.envelope import Envelope, EnvelopeKind, RequestId
from actors.membership import Membership
from actors.raft import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from actors.state_machine import StateMachine, decode_conf_state, parse_conf_change_context
from storage.applied_state import AppliedState
from storage.errors import StorageCorrupted
from storage.kv import MemoryKeyValueStore, WriteBatch
from storage.mvcc.codec import decode_meta, decode_record, parse_record_key
from storage.mvcc.store import MvccStore
from storage.raft_store import (
    HardStateRecord,
    LogRecord,
    RaftStore,
    SnapshotRecord,
    decode_hard_state,
    decode_log_record,
)
from storage.sealed import seal, unpack_exact, unseal
from storage.v2store.model import V2Request
from storage.v2store.store import V2Store
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.mutations import mutated

BIG = 1 << 30


# -- real records to start from --------------------------------------------------------------


def _raft_records() -> dict[bytes, bytes]:
    kv = MemoryKeyValueStore()

    async def write() -> None:
        store = RaftStore.open(kv)
        snapshot = SnapshotRecord(3, 1, (1, 2, 3), (4,), b"state")
        await store.save(None, [], snapshot)
        records = [LogRecord(index, 2, index % 2, b"x" * index) for index in range(4, 9)]
        await store.save(HardStateRecord(2, 1, 6), records, None)

    trio.run(write)
    return dict(kv.scan(b"", b"\xff" * 8))


def _mvcc_records() -> dict[bytes, bytes]:
    store = MvccStore(track_events=False)
    for number in range(4):
        with store.write() as txn:
            txn.put(b"key%d" % (number % 3), b"value%d" % number, lease=number)
    with store.write() as txn:
        txn.delete_range(b"key1")
    store.compact(3)
    return {key: value for key, value in store.take_changes() if value is not None}


def _v2_records() -> dict[bytes, bytes]:
    store = V2Store()
    requests = [
        V2Request("PUT", "/a/b", value="1", time_ns=1),
        V2Request("PUT", "/a/c", value="2", expiration_ns=10**12, time_ns=2),
        V2Request("PUT", "/d", dir=True, time_ns=3),
        V2Request("DELETE", "/a/b", time_ns=4),
        V2Request("POST", "/d", value="q", time_ns=5),
    ]
    for request in requests:
        store.apply(request)
    return {key: value for key, value in store.take_changes() if value is not None}


RAFT = _raft_records()
MVCC = _mvcc_records()
V2 = _v2_records()
APPLIED = {b"applied/index": seal((7).to_bytes(8, "big"))}


@st.composite
def corrupted(draw: st.DrawFn, records: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """``records`` with one value corrupted, removed, or a stray key added."""
    changed = dict(records)
    keys = sorted(records)
    kind = draw(st.sampled_from(["value", "delete", "stray"]))
    if kind == "stray":
        prefix = draw(st.sampled_from(sorted({key[: key.find(b"/") + 1] for key in keys})))
        stray = prefix + draw(st.binary(max_size=12))
        changed[stray] = draw(mutated(list(records.values())))
    else:
        key = draw(st.sampled_from(keys))
        if kind == "delete":
            del changed[key]
        else:
            changed[key] = draw(mutated(list(records.values())))
    return changed


def _kv_of(records: dict[bytes, bytes]) -> MemoryKeyValueStore:
    kv = MemoryKeyValueStore()
    batch = WriteBatch()
    for key, value in sorted(records.items()):
        batch.put(key, value)
    kv.apply(batch)
    return kv


def _read_raft_store(records: dict[bytes, bytes]) -> None:
    store = RaftStore.open(_kv_of(records))
    store.hard_state()
    store.snapshot()
    first, last = store.first_index(), store.last_index()
    store.term(first - 1)
    if last >= first:
        store.entries(first, last + 1, BIG)


# -- the stores -----------------------------------------------------------------------------


@fuzz_settings(fast=60, ci=3000)
@given(corrupted(RAFT))
def test_raft_store_reopens_or_raises_storage_corrupted(records: dict[bytes, bytes]) -> None:
    with contextlib.suppress(StorageCorrupted):
        _read_raft_store(records)


@fuzz_settings(fast=30, ci=1000)
@given(mutated([APPLIED[b"applied/index"]]))
def test_applied_index_reopens_or_raises_storage_corrupted(value: bytes) -> None:
    try:
        state = AppliedState(_kv_of({b"applied/index": value}))
    except StorageCorrupted:
        return
    assert 0 <= state.applied_index() < 1 << 64


@fuzz_settings(fast=60, ci=3000)
@given(corrupted(MVCC))
def test_mvcc_store_reloads_or_raises_storage_corrupted(records: dict[bytes, bytes]) -> None:
    try:
        store = MvccStore.load(_kv_of(records), track_events=False)
    except StorageCorrupted:
        return
    while store.compaction_pending and store.compaction_step():
        pass
    store.hash_kv()


@fuzz_settings(fast=60, ci=3000)
@given(corrupted(V2))
def test_v2_store_reloads_or_raises_value_error(records: dict[bytes, bytes]) -> None:
    try:
        store = V2Store.load(_kv_of(records))
    except (StorageCorrupted, ValueError):  # v2 records are sealed: most damage fails the seal
        return
    store.get("/", recursive=True, sorted=True, now_ns=0)


@fuzz_settings(fast=60, ci=3000)
@given(st.binary(max_size=64), mutated([seal(b""), seal(b"body" * 5), seal(bytes(16))]))
def test_sealed_values_unseal_or_raise_storage_corrupted(key: bytes, value: bytes) -> None:
    try:
        body = unseal(key, value)
    except StorageCorrupted:
        return
    assert seal(bytes(body)) == value


@fuzz_settings(fast=60, ci=3000)
@given(mutated([*RAFT.values(), *MVCC.values()]), st.integers(0, 20))
def test_single_records_decode_or_raise_storage_corrupted(value: bytes, index: int) -> None:
    for decode in (
        lambda: decode_log_record(b"k", value, index),
        lambda: decode_hard_state(b"k", value),
        lambda: decode_record(b"k", value, index),
        lambda: decode_meta(b"k", value),
        lambda: parse_record_key(b"mvcc/", value),
        lambda: unpack_exact(b"k", _U64, memoryview(value)),
    ):
        with contextlib.suppress(StorageCorrupted):
            decode()


_U64 = struct.Struct(">Q")


# -- records of actors: envelopes, v2 requests, peer messages --------------------------------

ENVELOPES = [
    Envelope(EnvelopeKind.V2_REQUEST, RequestId(1, 2), V2Request("PUT", "/k", value="v").encode()),
    Envelope(EnvelopeKind.V3_REQUEST, RequestId(1, 3), b"\x1a\x06\x0a\x01k\x12\x01v"),
    Envelope(EnvelopeKind.PUBLISH, RequestId(2, 1), cbor2.dumps(["n1", ["http://a:1"]])),
    Envelope(EnvelopeKind.UPDATE_MEMBER, RequestId(2, 2), cbor2.dumps([2, ["http://b:2"]])),
]
ENVELOPE_BYTES = [envelope.encode() for envelope in ENVELOPES]


@fuzz_settings(fast=60, ci=3000)
@given(mutated([*ENVELOPE_BYTES, *(envelope.body for envelope in ENVELOPES)]))
def test_envelopes_and_v2_requests_decode_or_raise_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        Envelope.decode(data)
    with contextlib.suppress(ValueError):
        V2Request.decode(data)
    for decode in (Membership.decode, decode_conf_state, parse_conf_change_context):
        with contextlib.suppress(ValueError):
            decode(data)


@st.composite
def garbage_entries(draw: st.DrawFn) -> bytes:
    """An envelope of a known kind with a corrupted body, or corrupted envelope bytes."""
    if draw(st.booleans()):
        return draw(mutated(ENVELOPE_BYTES))
    envelope = draw(st.sampled_from(ENVELOPES))
    body = draw(mutated([envelope.body, ENVELOPES[1].body]))
    return Envelope(envelope.kind, envelope.request_id, body).encode()


@fuzz_settings(fast=60, ci=2000)
@given(garbage_entries())
@example(Envelope(EnvelopeKind.V3_REQUEST, RequestId(1, 1), b"\xff\xff").encode())
@example(Envelope(EnvelopeKind.PUBLISH, RequestId(1, 1), b"\xff").encode())
@example(Envelope(EnvelopeKind.UPDATE_MEMBER, RequestId(1, 1), cbor2.dumps([1])).encode())
def test_the_state_machine_skips_entries_it_cannot_read(data: bytes) -> None:
    machine = StateMachine.empty()
    machine.apply(Entry(term=1, index=1, type=EntryType.NORMAL, data=data))
    assert machine.applied_index == 1
    machine.changes()  # what it would persist still encodes


@fuzz_settings(fast=30, ci=1000)
@given(mutated([b"", cbor2.dumps(["x"]), cbor2.dumps({"a": 1})]))
def test_a_conf_change_entry_it_cannot_read_is_skipped(data: bytes) -> None:
    machine = StateMachine.empty()
    machine.apply(Entry(term=1, index=1, type=EntryType.CONF_CHANGE, data=data))
    assert machine.applied_index == 1


# -- peer messages and snapshots (payloads that passed net.frames) ----------------------------

PLAIN: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 64), (1 << 64) - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)
"""What a frame payload can hold (net.frames refuses everything else)."""

_ENTRY = Entry(term=2, index=5, type=EntryType.NORMAL, data=b"d")
_SNAPSHOT = Snapshot(SnapshotMetadata(5, 2, ConfState((1, 2), (3,))), b"state")
WIRE = [
    message_to_wire(Message(MessageType.APPEND, 2, 1, 3, 2, 4, (_ENTRY,), 4)),
    message_to_wire(Message(MessageType.VOTE, 2, 1, 3, 2, 4)),
    message_to_wire(Message(MessageType.APPEND_RESPONSE, 2, 1, 3, reject=True, reject_hint=3)),
    message_to_wire(Message(MessageType.SNAPSHOT, 2, 1, 3, snapshot=_SNAPSHOT)),
    message_to_wire(Message(MessageType.HEARTBEAT, 2, 1, 3, commit=4, context=b"c")),
]


@st.composite
def wire_messages(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(PLAIN)
    wire = dict(draw(st.sampled_from(WIRE)))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*sorted(wire), "zz"]))
        if draw(st.integers(0, 4)) == 0:
            wire.pop(key, None)
        else:
            wire[key] = draw(PLAIN)
    return wire


@fuzz_settings(fast=100, ci=5000)
@given(wire_messages())
def test_peer_messages_decode_or_raise_value_error(wire: Any) -> None:
    try:
        message = message_from_wire(wire)
    except ValueError:
        return
    assert message_from_wire(message_to_wire(message)) == message
    if isinstance(wire, dict):
        with contextlib.suppress(ValueError):
            snapshot_from_wire(wire.get("snapshot", wire))
