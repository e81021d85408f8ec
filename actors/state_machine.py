"""The member's state machine: what applying the log builds.

It is a set of sub-machines chosen by the kind of each entry's envelope, as
in etcd 3.4 where one log feeds both stores: the v2 key tree
(``V2_REQUEST``), the v3 MVCC store (``V3_REQUEST``, applied by
``KvApplier``), and the member table (``PUBLISH``, ``UPDATE_MEMBER`` and
conf-change entries), plus the Raft configuration as of the applied index,
and the applied index itself. Applying is synchronous and deterministic: the
same entries give the same state on every member. What changed since the last
persist (in either store) is written in one batch together with the applied
index (``storage.applied_state``), so a restart resumes exactly after the last
applied entry: nothing is applied twice, nothing skipped.

Snapshots carry all of it (v2 tree, MVCC records and member table; the
configuration travels in the snapshot metadata).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol, assert_never

import cbor2
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from actors.envelope import Envelope, EnvelopeKind, RequestId
from actors.kv_applier import KvApplier
from actors.membership import Member, Membership
from actors.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Snapshot,
    conf_state_after,
)
from net.etcdpb.raft_internal_pb2 import InternalRaftRequest
from net.etcdpb.rpc_pb2 import RangeRequest, RangeResponse, TxnRequest, TxnResponse
from net.v3.errors import RpcError
from storage.applied_state import AppliedState
from storage.kv import KeyValueStore, WriteBatch
from storage.mvcc import MvccStore
from storage.mvcc.model import HashResult
from storage.v2store.model import Event, V2Error, V2Request
from storage.v2store.store import V2Store
from storage.v2store.watch import Watcher

log = logging.getLogger(__name__)

MEMBERSHIP_BLOB = b"membership"
CONF_STATE_BLOB = b"conf-state"


class V2Reader(Protocol):
    """What the v2 API may do with the v2 store: read it and watch it, never write."""

    def get(
        self, path: str, *, recursive: bool = False, sorted: bool = False, now_ns: int
    ) -> Event:
        """A node, or V2Error 100."""
        ...

    def watch(
        self, path: str, *, recursive: bool = False, stream: bool = False, since_index: int = 0
    ) -> Watcher:
        """A watcher of ``path``."""
        ...

    def stats_json(self) -> dict[str, int]:
        """``/v2/stats/store``."""
        ...


class KvReader(Protocol):
    """What the v3 API may do with the MVCC store: ranges, read-only txns, its revision and
    hash, never a write."""

    def range(self, request: RangeRequest) -> RangeResponse:
        """A Range on the local store."""
        ...

    def txn(self, request: TxnRequest) -> TxnResponse:
        """A txn with no writes (anything else is proposed)."""
        ...

    def revision(self) -> int:
        """The current revision."""
        ...

    def hash_kv(self, revision: int) -> HashResult:
        """HashKV up to ``revision`` (0: the current one)."""
        ...


Outcome = Event | V2Error | ProtoMessage | RpcError | None
"""What applying one entry gives its proposer: a v2 event or error, a v3 response or error,
or nothing (membership entries)."""


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of one entry, for the waiter of the member that proposed it."""

    request_id: RequestId
    result: Outcome


def encode_conf_state(conf_state: ConfState) -> bytes:
    """For the applied state."""
    return cbor2.dumps([list(conf_state.voters), list(conf_state.learners)])


def decode_conf_state(data: bytes) -> ConfState:
    """Parse what ``encode_conf_state`` made.

    Raises:
        ValueError: malformed.
    """
    item = _loads(data, "conf state")
    if not isinstance(item, list) or len(item) != 2 or not all(_is_id_list(ids) for ids in item):
        raise ValueError("conf state must be [voters, learners], two lists of member ids")
    voters, learners = item
    if set(voters) & set(learners):
        raise ValueError("conf state lists a member as voter and learner")
    return ConfState(tuple(voters), tuple(learners))


def _is_id_list(value: object) -> bool:
    """A sorted list of distinct member ids (as ``ConfState`` holds them)."""
    if not isinstance(value, list):
        return False
    if not all(type(member_id) is int and 0 < member_id < 1 << 64 for member_id in value):
        return False
    return value == sorted(set(value))


def _loads(data: bytes, what: str) -> Any:
    """``cbor2.loads`` with every decoding failure a ValueError."""
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as error:
        raise ValueError(f"{what} is not cbor: {error}") from None


def _decode_urls_body(body: bytes, what: str) -> tuple[object, tuple[str, ...]]:
    """The ``[first, urls]`` body of a PUBLISH or UPDATE_MEMBER entry.

    Raises:
        ValueError: malformed.
    """
    item = _loads(body, what)
    if not isinstance(item, list) or len(item) != 2:
        raise ValueError(f"{what} must be a 2-item list")
    first, urls = item
    if not isinstance(urls, list) or not all(type(url) is str for url in urls):
        raise ValueError(f"{what} must carry a list of URLs")
    return first, tuple(urls)


def conf_change_context(member: Member, request_id: RequestId) -> bytes:
    """What a conf-change entry carries: who asked, and the member it is about."""
    return cbor2.dumps([request_id.member_id, request_id.sequence, member.to_plain()])


def parse_conf_change_context(context: bytes) -> tuple[RequestId, Member]:
    """Parse what ``conf_change_context`` made.

    Raises:
        ValueError: malformed.
    """
    try:
        item: Any = cbor2.loads(context)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as error:
        raise ValueError(f"conf change context is not cbor: {error}") from None
    if not isinstance(item, list) or len(item) != 3:
        raise ValueError("conf change context must be [member, sequence, record]")
    member_id, sequence, plain = item
    if type(member_id) is not int or type(sequence) is not int:
        raise ValueError("conf change context has a malformed request id")
    return RequestId(member_id, sequence), Member.from_plain(plain)


class StateMachine:
    """The v2 store, the MVCC store, the member table and the configuration, at an applied
    index."""

    def __init__(
        self,
        store: V2Store,
        mvcc: MvccStore,
        membership: Membership,
        conf_state: ConfState,
        applied_index: int,
    ) -> None:
        self.store = store
        self.mvcc = mvcc
        self.kv = KvApplier(mvcc)
        self.membership = membership
        self.conf_state = conf_state
        self.applied_index = applied_index
        self.membership_changed = True

    # -- read-only views, for the APIs -------------------------------------------------------

    def v2_reader(self) -> V2Reader:
        """The v2 store, for reads and watches."""
        return self.store

    def kv_reader(self) -> KvReader:
        """The MVCC store, for reads."""
        return _KvView(self.kv, self.mvcc)

    # -- starting ------------------------------------------------------------------

    @classmethod
    def load(cls, kv: KeyValueStore, applied: AppliedState) -> StateMachine:
        """The state a member persisted before it stopped."""
        membership_data = applied.get_blob(MEMBERSHIP_BLOB)
        conf_data = applied.get_blob(CONF_STATE_BLOB)
        membership = Membership.decode(membership_data) if membership_data else Membership()
        conf_state = decode_conf_state(conf_data) if conf_data else ConfState()
        return cls(
            V2Store.load(kv), _load_mvcc(kv), membership, conf_state, applied.applied_index()
        )

    @classmethod
    def empty(cls) -> StateMachine:
        """Nothing applied yet."""
        return cls(V2Store(), _new_mvcc(), Membership(), ConfState(), 0)

    @staticmethod
    def bootstrap_snapshot_data(members: list[Member]) -> bytes:
        """The snapshot every founding member starts from: an empty tree, these members."""
        return StateMachine(
            V2Store(), _new_mvcc(), Membership({m.member_id: m for m in members}), ConfState(), 0
        ).snapshot_data()

    # -- applying ------------------------------------------------------------------

    def apply(self, entry: Entry) -> Applied | None:
        """Apply one committed entry."""
        assert entry.index == self.applied_index + 1, (entry.index, self.applied_index)
        self.applied_index = entry.index
        if entry.type is EntryType.CONF_CHANGE:
            try:
                change = ConfChange.decode(entry.data)
            except ValueError as error:
                log.error("entry %d is not a conf change (%s); skipped", entry.index, error)
                return None
            return self._apply_conf_change(change)
        if not entry.data:
            return None  # a new leader's empty entry
        try:
            envelope = Envelope.decode(entry.data)
        except ValueError as error:
            log.error("entry %d is not an envelope (%s); skipped", entry.index, error)
            return None
        return Applied(envelope.request_id, self._apply_envelope(envelope))

    def _apply_envelope(self, envelope: Envelope) -> Outcome:
        match envelope.kind:
            case EnvelopeKind.V2_REQUEST:
                return self._apply_v2(envelope.body)
            case EnvelopeKind.V3_REQUEST:
                return self._apply_v3(envelope.body)
            case EnvelopeKind.PUBLISH:
                try:
                    name, client_urls = _decode_urls_body(envelope.body, "publish")
                    if type(name) is not str:
                        raise ValueError("publish must carry a name")
                except ValueError as error:
                    log.error("malformed publish in the log (%s); skipped", error)
                    return None
                self.membership.publish(envelope.request_id.member_id, name, client_urls)
            case EnvelopeKind.UPDATE_MEMBER:
                try:
                    member_id, peer_urls = _decode_urls_body(envelope.body, "member update")
                    if type(member_id) is not int:
                        raise ValueError("member update must carry a member id")
                except ValueError as error:
                    log.error("malformed member update in the log (%s); skipped", error)
                    return None
                self.membership.update_peer_urls(member_id, peer_urls)
            case _:
                assert_never(envelope.kind)
        self.membership_changed = True
        return None

    def _apply_v2(self, body: bytes) -> Outcome:
        try:
            return self.store.apply(V2Request.decode(body))
        except V2Error as error:
            return error
        except ValueError as error:
            log.error("malformed v2 request in the log (%s); skipped", error)
            return None

    def _apply_v3(self, body: bytes) -> Outcome:
        request = InternalRaftRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as error:
            log.error("malformed v3 request in the log (%s); skipped", error)
            return None
        return self.kv.apply(request)

    def _apply_conf_change(self, change: ConfChange) -> Applied | None:
        self.conf_state = conf_state_after(self.conf_state, change)
        self.membership_changed = True
        try:
            request_id, member = parse_conf_change_context(change.context)
        except ValueError as error:
            log.error("conf change for %x has a bad context (%s)", change.node_id, error)
            if change.type is ConfChangeType.REMOVE:
                self.membership.remove(change.node_id)
            return None
        if change.type is ConfChangeType.REMOVE:
            self.membership.remove(change.node_id)
        else:
            learner = change.type is ConfChangeType.ADD_LEARNER
            existing = self.membership.members.get(change.node_id)
            base = existing if existing is not None else member
            self.membership.add(
                Member(change.node_id, base.name, base.peer_urls, base.client_urls, learner)
            )
        return Applied(request_id, None)

    # -- snapshots -----------------------------------------------------------------

    def snapshot_data(self) -> bytes:
        """Everything but the configuration (the snapshot metadata has it)."""
        return cbor2.dumps(
            {
                "v2": self.store.snapshot(),
                "mvcc": [[key, value] for key, value in self.mvcc.snapshot_items()],
                "members": self.membership.encode(),
            }
        )

    def restore(self, snapshot: Snapshot) -> None:
        """Replace everything with a snapshot's state."""
        item = cbor2.loads(snapshot.data)
        self.store.restore(item["v2"])
        self.mvcc.restore((key, value) for key, value in item.get("mvcc", ()))
        self.membership = Membership.decode(item["members"])
        self.conf_state = snapshot.metadata.conf_state
        self.applied_index = snapshot.metadata.index
        self.membership_changed = True

    # -- persisting ------------------------------------------------------------------

    def changes(self) -> tuple[WriteBatch, dict[bytes, bytes]]:
        """What changed since the last call: a batch for the v2 store, and the
        member table and configuration when they changed (``AppliedState.commit``
        writes both with the applied index, atomically)."""
        batch = WriteBatch()
        for key, value in [*self.store.take_changes(), *self.mvcc.take_changes()]:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        blobs: dict[bytes, bytes] = {}
        if self.membership_changed:
            blobs[MEMBERSHIP_BLOB] = self.membership.encode()
            blobs[CONF_STATE_BLOB] = encode_conf_state(self.conf_state)
            self.membership_changed = False
        return batch, blobs

    async def persist(self, applied: AppliedState, *, sync: bool = False) -> None:
        """Write what changed, with the applied index, in one batch."""
        batch, blobs = self.changes()
        await applied.commit(batch, self.applied_index, blobs=blobs, sync=sync)


def _new_mvcc() -> MvccStore:
    # No watch service consumes the store's events yet, so it keeps none.
    return MvccStore(track_events=False)


def _load_mvcc(kv: KeyValueStore) -> MvccStore:
    return MvccStore.load(kv, track_events=False)


@dataclass(frozen=True, slots=True)
class _KvView:
    """``KvReader`` over the applier and its store."""

    applier: KvApplier
    store: MvccStore

    def range(self, request: RangeRequest) -> RangeResponse:
        return self.applier.range(request)

    def txn(self, request: TxnRequest) -> TxnResponse:
        return self.applier.txn(request)

    def revision(self) -> int:
        return self.store.current_revision

    def hash_kv(self, revision: int) -> HashResult:
        return self.store.hash_kv(revision)
