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

Snapshots carry all of it (v2 tree, MVCC records, leases, auth, member table, alarms and QoS
limits; the
configuration travels in the snapshot metadata). A snapshot is never one value:
``snapshot_chunks`` scans the persisted records (the v2 store's and the MVCC
store's key prefixes, and the member table's blob) into chunks of at most about
``SNAPSHOT_CHUNK_BYTES``, each a CBOR list of ``[key, value]`` pairs; the apply
actor stores them in the RaftStore and the transport sends them one by one.
``install_snapshot`` writes a snapshot's chunks back over those prefixes, a
chunk per batch, then the applied index and the blobs last, and reloads the
in-memory stores from the records (``V2Store.reload``, ``MvccStore.reload``). A
crash in the middle leaves the applied index below the stored snapshot's, and
the member installs it again when it starts (``actors.bootstrap``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, assert_never

import cbor2
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from actors.alarms import ALARMS_BLOB, AlarmTable
from actors.auth_apply import AUTH_FIELDS, AuthApplier, auth_field
from actors.codec import SnapshotManifest
from actors.envelope import Envelope, EnvelopeKind, RequestId
from actors.kv_applier import KvApplier
from actors.membership import Member, Membership
from actors.qos_apply import QosState
from actors.qos_leader import LeaderRefused
from actors.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    SnapshotMetadata,
    conf_state_after,
)
from net.etcdpb.raft_internal_pb2 import InternalRaftRequest
from net.etcdpb.rpc_pb2 import (
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
    TxnResponse,
)
from net.v3 import errors
from net.v3.errors import RpcError
from storage.applied_state import AppliedState
from storage.auth.store import PREFIX as AUTH_PREFIX
from storage.auth.store import AuthStore
from storage.kv import KeyValueStore, WriteBatch, prefix_end
from storage.lease import PREFIX as LEASE_PREFIX
from storage.lease import LeaseError, LeaseTable
from storage.lease.table import (
    LEASE_EXISTS,
    LEASE_NOT_FOUND,
    LEASE_TTL_TOO_LARGE,
    LEASES_TOO_MANY,
)
from storage.mvcc import MvccStore
from storage.mvcc.model import HashResult, TxnEvents
from storage.qos.limits import QOS_BLOB, QosTable
from storage.raft_store import SNAPSHOT_CHUNK_BYTES_MAX, RaftStore
from storage.sealed import checked_records
from storage.v2store.model import Event, V2Error, V2Request
from storage.v2store.store import KV_PREFIX as V2_PREFIX
from storage.v2store.store import V2Store
from storage.v2store.watch import Watcher

log = logging.getLogger(__name__)

MEMBERSHIP_BLOB = b"membership"
CONF_STATE_BLOB = b"conf-state"

SNAPSHOT_CHUNK_BYTES = 256 * 1024
"""A snapshot chunk is cut before the record that would take its keys and values past this
(a chunk holds at least one record, and none is over ``SNAPSHOT_CHUNK_BYTES_MAX``). Closing a
chunk (encoding, sealing and writing it) is the longest step the apply actor's snapshot task
takes without a checkpoint: 3-25 ms at 1 MiB on a busy machine, a quarter of that here."""
SNAPSHOT_MEMBERS_KEY = b"snapshot/members"
"""The member table's key in a snapshot's records (it lives in an applied-state blob)."""
SNAPSHOT_ALARMS_KEY = b"snapshot/alarms"
"""The alarm table's key in a snapshot's records (an applied-state blob too), so that a member
that installs a snapshot holds the alarms its peers hold (etcd's alarm bucket travels in its
snapshots). A snapshot without it (made before alarms travelled) installs an empty table."""
SNAPSHOT_QOS_KEY = b"snapshot/qos"
"""The tenants' QoS limits in a snapshot's records (an applied-state blob, ``storage.qos``)."""
MVCC_PREFIX = b"mvcc/"
"""Where the MVCC store's records live (``MvccStore``'s default prefix)."""


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

    @property
    def index(self) -> int:
        """The store index (``X-Etcd-Index``)."""
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


class LeaseListener(Protocol):
    """Who hears of what the log does to leases on this member (its lessor, which decides
    expiry while the member leads). Called during apply: must not block or raise."""

    def granted(self, lease_id: int, ttl_s: int) -> None:
        """A lease was granted."""
        ...

    def revoked(self, lease_id: int) -> None:
        """A lease was revoked (by a client or an expiry)."""
        ...

    def leader_entry_applied(self) -> None:
        """An empty entry, a new leader's first of its term, was applied."""
        ...

    def reset(self) -> None:
        """Every lease may have changed (a snapshot was installed)."""
        ...


class _NoListener:
    def granted(self, lease_id: int, ttl_s: int) -> None:
        pass

    def revoked(self, lease_id: int) -> None:
        pass

    def leader_entry_applied(self) -> None:
        pass

    def reset(self) -> None:
        pass


_LEASE_ERRORS = {
    LEASE_NOT_FOUND: errors.lease_not_found,
    LEASE_EXISTS: errors.lease_exists,
    LEASE_TTL_TOO_LARGE: errors.lease_ttl_too_large,
    LEASES_TOO_MANY: errors.too_many_leases,
}


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
        *,
        leases: LeaseTable | None = None,
        auth: AuthStore | None = None,
    ) -> None:
        self.store = store
        self.mvcc = mvcc
        self.leases = leases if leases is not None else LeaseTable()
        self.lease_listener: LeaseListener = _NoListener()
        self.kv = KvApplier(mvcc, lease_exists=self.leases.__contains__)
        self._kv_view = _KvView(self.kv, mvcc)
        self.membership = membership
        self.conf_state = conf_state
        self.applied_index = applied_index
        self.membership_changed = True
        self._kv_events: list[TxnEvents] = []
        self.alarms = AlarmTable()
        """The cluster's alarms (``actors.alarms``; an applied-state blob)."""
        self.auth = AuthApplier(auth)
        """Users, roles and permissions (``storage.auth``), and this member's tokens."""
        self.qos = QosState()
        """Tenants' limits and their space use (``actors.qos_apply``; an applied-state blob)."""

    # -- read-only views, for the APIs -------------------------------------------------------

    def v2_reader(self) -> V2Reader:
        """The v2 store, for reads and watches."""
        return self.store

    def kv_reader(self) -> KvReader:
        """The MVCC store, for reads (one view: the stores are reloaded in place, never
        replaced)."""
        return self._kv_view

    # -- starting ------------------------------------------------------------------

    @classmethod
    def load(
        cls, kv: KeyValueStore, applied: AppliedState, *, min_lease_ttl_s: int = 1
    ) -> StateMachine:
        """The state a member persisted before it stopped."""
        membership_data = applied.get_blob(MEMBERSHIP_BLOB)
        conf_data = applied.get_blob(CONF_STATE_BLOB)
        membership = Membership.decode(membership_data) if membership_data else Membership()
        conf_state = decode_conf_state(conf_data) if conf_data else ConfState()
        mvcc = _load_mvcc(kv)
        leases = LeaseTable.load(kv, mvcc, min_ttl_s=min_lease_ttl_s)
        machine = cls(
            V2Store.load(kv),
            mvcc,
            membership,
            conf_state,
            applied.applied_index(),
            leases=leases,
            auth=AuthStore.load(kv),
        )
        machine.alarms = AlarmTable.decode(applied.get_blob(ALARMS_BLOB))
        machine.qos = QosState(QosTable.decode(applied.get_blob(QOS_BLOB)))
        machine.qos.rebuild(mvcc)
        return machine

    @classmethod
    def empty(cls, *, min_lease_ttl_s: int = 1) -> StateMachine:
        """Nothing applied yet."""
        leases = LeaseTable(min_ttl_s=min_lease_ttl_s)
        return cls(V2Store(), _new_mvcc(), Membership(), ConfState(), 0, leases=leases)

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
            self.lease_listener.leader_entry_applied()
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
            case EnvelopeKind.QOS:
                return self.qos.apply_entry(envelope.body, self.mvcc)
            case EnvelopeKind.QOS_REFUSED:
                return LeaderRefused()  # over a tenant's rate at the leader: changes nothing
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
        # One listing of the set fields instead of a HasField per auth field (about 20 per
        # entry; a tenth of a put's apply before): auth_field runs only for auth entries.
        present = {field.name for field, _ in request.ListFields()}
        if not AUTH_FIELDS.isdisjoint(present):
            name = auth_field(request)
            if name is not None:
                return self._apply_auth(request, name)
        denied = self.auth.check(request, self._lease_keys)
        if denied is not None:
            return denied  # a refused request changes nothing
        over_quota = self.qos.refusal(request, self.mvcc)
        if over_quota is not None:
            return over_quota  # a tenant's space quota (issue 16): changes nothing either
        outcome: Outcome
        try:
            if "alarm" in present:
                outcome = self.alarms.apply(request.alarm)
            elif "lease_grant" in present:
                outcome = self._grant(request.lease_grant)
            elif "lease_revoke" in present:
                outcome = self._revoke(request.lease_revoke)
            else:
                outcome = self.kv.apply(request)
        except LeaseError as error:
            outcome = _LEASE_ERRORS[error.kind]()
        events = self.mvcc.take_events()
        self.leases.observe(events)
        self.qos.usage.observe(events)
        self._kv_events.extend(events)
        return outcome

    def _apply_auth(self, request: InternalRaftRequest, name: str) -> Outcome:
        return self.auth.apply(request, name, self.applied_index, self.mvcc.current_revision)

    def _lease_keys(self, lease_id: int) -> list[bytes]:
        lease = self.leases.get(lease_id)
        return sorted(lease.keys) if lease is not None else []

    def _grant(self, request: LeaseGrantRequest) -> LeaseGrantResponse:
        lease = self.leases.grant(request.ID, request.TTL)
        self.lease_listener.granted(lease.lease_id, lease.ttl_s)
        response = LeaseGrantResponse(ID=lease.lease_id, TTL=lease.ttl_s)
        response.header.revision = self.mvcc.current_revision
        return response

    def _revoke(self, request: LeaseRevokeRequest) -> LeaseRevokeResponse:
        """Delete every key of the lease in one revision (none if it has no keys)."""
        keys = self.leases.revoke(request.ID)
        with self.mvcc.write() as txn:
            for key in keys:
                txn.delete_range(key)
        self.lease_listener.revoked(request.ID)
        response = LeaseRevokeResponse()
        response.header.revision = self.mvcc.current_revision
        return response

    def take_kv_events(self) -> list[TxnEvents]:
        """The events of every MVCC write applied since the last call, in revision order (for
        the watch service). Its caller takes them after each applied batch, which bounds them
        by a batch's writes."""
        events, self._kv_events = self._kv_events, []
        return events

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

    def snapshot_chunks(
        self, kv: KeyValueStore, applied: AppliedState, chunk_bytes: int = SNAPSHOT_CHUNK_BYTES
    ) -> Iterator[bytes]:
        """The persisted state as snapshot chunk bodies, from prefix scans made at the call.

        Call it right after ``persist``: the records are then exactly the applied state (the
        configuration travels in the snapshot metadata). Consumed lazily, one chunk at a time.
        """
        return chunk_records(self.snapshot_records(kv, applied), chunk_bytes)

    def snapshot_records(
        self, kv: KeyValueStore, applied: AppliedState
    ) -> Iterator[tuple[bytes, bytes]]:
        """The records ``snapshot_chunks`` cuts into chunks, in key order, from prefix scans
        made at the call (so a caller may consume them while later batches are applied)."""
        assert self.mvcc.prefix == MVCC_PREFIX, self.mvcc.prefix
        members = applied.get_blob(MEMBERSHIP_BLOB) or Membership().encode()
        alarms = applied.get_blob(ALARMS_BLOB) or AlarmTable().encode()
        qos = applied.get_blob(QOS_BLOB) or QosTable().encode()
        # in key order: auth/, lease/, mvcc/, snapshot/alarms, snapshot/members, snapshot/qos,
        # v2/
        return itertools.chain(
            checked_records(kv.scan(AUTH_PREFIX, prefix_end(AUTH_PREFIX), bulk=True)),
            checked_records(kv.scan(LEASE_PREFIX, prefix_end(LEASE_PREFIX), bulk=True)),
            checked_records(kv.scan(MVCC_PREFIX, prefix_end(MVCC_PREFIX), bulk=True)),
            [
                (SNAPSHOT_ALARMS_KEY, alarms),
                (SNAPSHOT_MEMBERS_KEY, members),
                (SNAPSHOT_QOS_KEY, qos),
            ],
            checked_records(kv.scan(V2_PREFIX, prefix_end(V2_PREFIX), bulk=True)),
        )

    @staticmethod
    def bootstrap_snapshot_chunks(members: list[Member]) -> list[bytes]:
        """The snapshot every founding member starts from: an empty state, these members."""
        membership = Membership({m.member_id: m for m in members})
        return list(chunk_records([(SNAPSHOT_MEMBERS_KEY, membership.encode())]))

    async def install_snapshot(
        self,
        kv: KeyValueStore,
        applied: AppliedState,
        metadata: SnapshotMetadata,
        bodies: Iterable[bytes],
        *,
        sync: bool = False,
    ) -> None:
        """Replace everything with a snapshot's state: its records written over the state
        machines' prefixes a chunk per batch, the applied index and blobs last, then the
        in-memory stores reloaded from the records.

        Raises:
            ValueError: a chunk is malformed (the state written so far stays below the
                snapshot's applied index: it is installed again at the next start).
        """
        assert metadata.index > self.applied_index, (metadata.index, self.applied_index)
        batch = WriteBatch()
        batch.delete_range(V2_PREFIX, prefix_end(V2_PREFIX))
        batch.delete_range(MVCC_PREFIX, prefix_end(MVCC_PREFIX))
        batch.delete_range(LEASE_PREFIX, prefix_end(LEASE_PREFIX))
        batch.delete_range(AUTH_PREFIX, prefix_end(AUTH_PREFIX))
        await kv.write(batch, sync=False)
        members: bytes | None = None
        alarms = AlarmTable()
        qos = QosTable()
        for body in bodies:
            batch = WriteBatch()
            for key, value in decode_snapshot_chunk(body):
                if key == SNAPSHOT_MEMBERS_KEY:
                    members = value
                elif key == SNAPSHOT_ALARMS_KEY:
                    alarms = AlarmTable.decode(value)
                elif key == SNAPSHOT_QOS_KEY:
                    qos = QosTable.decode(value)
                else:
                    batch.put(key, value)
            await kv.write(batch, sync=False)
        if members is None:
            raise ValueError(f"the snapshot at {metadata.index} has no member table")
        membership = Membership.decode(members)
        blobs = {
            MEMBERSHIP_BLOB: members,
            CONF_STATE_BLOB: encode_conf_state(metadata.conf_state),
            ALARMS_BLOB: alarms.encode(),
            QOS_BLOB: qos.encode(),
        }
        await applied.commit(WriteBatch(), metadata.index, blobs=blobs, sync=sync)
        self.store.reload(kv)
        self.mvcc.reload(kv)
        self.leases.reload(kv, self.mvcc)
        self.lease_listener.reset()
        self.auth.store.reload(kv)
        self.auth.reloaded()
        self.membership = membership
        self.conf_state = metadata.conf_state
        self.applied_index = metadata.index
        self.membership_changed = True
        self.alarms = alarms
        self.qos = QosState(qos)
        self.qos.rebuild(self.mvcc)

    async def install_stored_snapshot(
        self,
        kv: KeyValueStore,
        applied: AppliedState,
        raft_store: RaftStore,
        metadata: SnapshotMetadata,
        manifest: SnapshotManifest,
        *,
        sync: bool = False,
    ) -> None:
        """``install_snapshot`` of the chunks a manifest names in the RaftStore (read from a
        scan made now, each chunk checked as it is read).

        Raises:
            StorageCorrupted: a chunk is missing or fails its checks (naming its key).
        """
        chunks = raft_store.snapshot_chunks(metadata.index, manifest.received, manifest.chunks)
        bodies = (bytes(body) for _, body, _ in chunks)
        await self.install_snapshot(kv, applied, metadata, bodies, sync=sync)

    # -- persisting ------------------------------------------------------------------

    def changes(self) -> tuple[WriteBatch, dict[bytes, bytes]]:
        """What changed since the last call: a batch for the v2 store, and the
        member table and configuration when they changed (``AppliedState.commit``
        writes both with the applied index, atomically)."""
        batch = WriteBatch()
        changed = [
            *self.store.take_changes(),
            *self.mvcc.take_changes(),
            *self.leases.take_changes(),
            *self.auth.store.take_changes(),
        ]
        for key, value in changed:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        blobs: dict[bytes, bytes] = {}
        if self.membership_changed:
            blobs[MEMBERSHIP_BLOB] = self.membership.encode()
            blobs[CONF_STATE_BLOB] = encode_conf_state(self.conf_state)
            self.membership_changed = False
        if self.alarms.changed:
            blobs[ALARMS_BLOB] = self.alarms.encode()
            self.alarms.changed = False
        if self.qos.table.changed:
            blobs[QOS_BLOB] = self.qos.table.encode()
            self.qos.table.changed = False
        return batch, blobs

    async def persist(self, applied: AppliedState, *, sync: bool = False) -> None:
        """Write what changed, with the applied index, in one batch."""
        batch, blobs = self.changes()
        await applied.commit(batch, self.applied_index, blobs=blobs, sync=sync)


def chunk_records(
    records: Iterable[tuple[bytes, bytes]], chunk_bytes: int = SNAPSHOT_CHUNK_BYTES
) -> Iterator[bytes]:
    """Records as snapshot chunk bodies (CBOR lists of ``[key, value]``), each cut before the
    record that would take it past ``chunk_bytes``; at least one chunk.

    Raises:
        ValueError: one record alone is over ``SNAPSHOT_CHUNK_BYTES_MAX``.
    """
    builder = ChunkBuilder(chunk_bytes)
    for key, value in records:
        body = builder.add(key, value)
        if body is not None:
            yield body
    last = builder.finish()
    if last is not None:
        yield last


class ChunkBuilder:
    """``chunk_records`` a record at a time, for a caller that pauses between records."""

    def __init__(self, chunk_bytes: int = SNAPSHOT_CHUNK_BYTES) -> None:
        self._chunk_bytes = chunk_bytes
        self._pairs: list[list[bytes]] = []
        self._size_bytes = 0
        self._emitted = False

    def add(self, key: bytes, value: bytes) -> bytes | None:
        """Take one record; the chunk body it closed, if it closed one.

        Raises:
            ValueError: the record alone is over ``SNAPSHOT_CHUNK_BYTES_MAX``.
        """
        record_bytes = len(key) + len(value)
        if record_bytes > SNAPSHOT_CHUNK_BYTES_MAX - CHUNK_OVERHEAD_BYTES:
            raise ValueError(f"record {key!r} of {record_bytes} bytes is too large to snapshot")
        body = None
        if self._pairs and self._size_bytes + record_bytes > self._chunk_bytes:
            body = cbor2.dumps(self._pairs)
            self._emitted = True
            self._pairs, self._size_bytes = [], 0
        self._pairs.append([key, value])
        self._size_bytes += record_bytes
        return body

    def finish(self) -> bytes | None:
        """The last chunk body: the records not yet in one, or an empty chunk if none was."""
        if not self._pairs and self._emitted:
            return None
        body = cbor2.dumps(self._pairs)
        self._emitted = True
        self._pairs, self._size_bytes = [], 0
        return body


CHUNK_OVERHEAD_BYTES = 64
"""Room in a chunk for the CBOR framing of one record."""


def decode_snapshot_chunk(body: bytes) -> list[tuple[bytes, bytes]]:
    """The records of a chunk body, checked: pairs of bytes, keys in ascending order, each
    under the v2 store's, the MVCC store's, the lease table's or the auth store's prefix, or
    the member table's or the alarm table's key.

    Raises:
        ValueError: it is not.
    """
    item = _loads(body, "snapshot chunk")
    if not isinstance(item, list):
        raise ValueError("a snapshot chunk must be a list of [key, value]")
    records: list[tuple[bytes, bytes]] = []
    for pair in item:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError("a snapshot chunk must be a list of [key, value]")
        key, value = pair
        if type(key) is not bytes or type(value) is not bytes:
            raise ValueError("snapshot records must be bytes")
        if not (
            key.startswith((V2_PREFIX, MVCC_PREFIX, LEASE_PREFIX, AUTH_PREFIX))
            or key in (SNAPSHOT_MEMBERS_KEY, SNAPSHOT_ALARMS_KEY, SNAPSHOT_QOS_KEY)
        ):
            raise ValueError(f"snapshot record {key!r} is not state machine data")
        if records and key <= records[-1][0]:
            raise ValueError("snapshot records are not in key order")
        records.append((key, value))
    return records


def _new_mvcc() -> MvccStore:
    return MvccStore()


def _load_mvcc(kv: KeyValueStore) -> MvccStore:
    return MvccStore.load(kv)


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
