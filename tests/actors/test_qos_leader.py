"""The leader's admission of tenants' writes (``actors.qos_leader``), as pure decisions on a
fake clock: which entries are charged and to whom, the buckets' burst, rate and slack, all or
nothing, a new term, table changes; and the state machine applying a refused entry as nothing."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import cast

import pytest
import trio

from actors.envelope import Envelope, EnvelopeKind, RequestId
from actors.qos_leader import LEADER_SLACK_S, TOO_MANY_REQUESTS, LeaderAdmission, LeaderRefused
from actors.raft import (
    ConfChange,
    ConfChangeType,
    DropReason,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDropped,
    RawNode,
    Role,
    StorageAppend,
)
from actors.raft_actor import (
    ApplyWork,
    FromPeer,
    NotLeader,
    Propose,
    RaftActor,
    RaftInput,
    RaftStatus,
)
from actors.state_machine import StateMachine
from actors.waiters import Waiters
from net.etcdpb import raft_internal_pb2, rpc_pb2
from net.v3 import errors
from storage.qos import QosTable, TenantLimits
from storage.qos.limits import encode_delete, encode_set, encode_set_caller
from storage.v2store.model import V2Request

TERM = 3


class Fake:
    """The table, the roles and the clock an admission reads."""

    def __init__(self) -> None:
        self.table = QosTable()
        self.now_s = 100.0
        self.roles: dict[str, list[str]] = {}
        self.role_lookups = 0
        self.admission = LeaderAdmission(lambda: self.table, self.roles_of, now=lambda: self.now_s)

    def roles_of(self, username: str) -> Sequence[str]:
        self.role_lookups += 1
        return self.roles.get(username, [])

    def set(self, prefix: bytes, **limits: int) -> None:
        self.table.apply(encode_set(prefix, TenantLimits(**limits)))

    def admit(self, request: raft_internal_pb2.InternalRaftRequest, sequence: int = 1) -> bool:
        """Whether the entry went through unchanged (else it must be a refused one)."""
        data = Envelope(
            EnvelopeKind.V3_REQUEST, RequestId(7, sequence), request.SerializeToString()
        )
        admitted = self.admission.admit(data.encode(), TERM)
        if admitted == data.encode():
            return True
        assert Envelope.decode(admitted) == Envelope(
            EnvelopeKind.QOS_REFUSED, RequestId(7, sequence), b""
        )
        return False


def put(
    key: bytes, value: bytes = b"v", username: str = ""
) -> raft_internal_pb2.InternalRaftRequest:
    request = raft_internal_pb2.InternalRaftRequest(put=rpc_pb2.PutRequest(key=key, value=value))
    if username:
        request.header.username = username
    return request


def txn(*ops: rpc_pb2.RequestOp) -> raft_internal_pb2.InternalRaftRequest:
    return raft_internal_pb2.InternalRaftRequest(txn=rpc_pb2.TxnRequest(success=ops))


def op_put(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"v"))


def op_range(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))


def test_without_a_write_rate_nothing_is_decoded() -> None:
    fake = Fake()
    garbage = b"\xff not an envelope"
    assert fake.admission.admit(garbage, TERM) is garbage  # no tenant: one flag test
    fake.set(b"/a/", read_requests_per_s=1, keys_max=5)
    assert fake.admission.admit(garbage, TERM) is garbage  # no write rate: not decoded
    assert fake.admission.buckets == {}
    fake.set(b"/a/", write_requests_per_s=1)
    assert fake.admission.admit(garbage, TERM) is garbage  # not an envelope: the apply skips it


def test_burst_then_the_rate_with_a_little_slack() -> None:
    fake = Fake()
    fake.set(b"/a/", write_requests_per_s=2)
    assert [fake.admit(put(b"/a/%d" % n), n) for n in range(3)] == [True, True, False]
    fake.now_s += 0.5 - LEADER_SLACK_S  # a token is due within the slack: taken in debt
    assert fake.admit(put(b"/a/x"))
    assert not fake.admit(put(b"/a/y"))  # the debt would last past the slack
    fake.now_s += 10
    assert [fake.admit(put(b"/a/%d" % n)) for n in range(3)] == [True, True, False]  # burst only
    assert fake.admission.refused == 3


def test_other_tenants_and_other_entries_are_not_charged() -> None:
    fake = Fake()
    fake.set(b"/a/", write_requests_per_s=1)
    fake.set(b"/a/b/", write_requests_per_s=100)
    assert fake.admit(put(b"/a/0"))
    for _ in range(20):
        assert fake.admit(put(b"/a/b/0"))  # the longest prefix's tenant
        assert fake.admit(put(b"/c/0"))  # no tenant
        assert fake.admit(txn(op_range(b"/a/0")))  # a txn without writes
        lease = rpc_pb2.LeaseGrantRequest(ID=1, TTL=10)
        assert fake.admit(raft_internal_pb2.InternalRaftRequest(lease_grant=lease))
    v2 = Envelope(EnvelopeKind.V2_REQUEST, RequestId(7, 1), V2Request("PUT", "/a/x").encode())
    assert fake.admission.admit(v2.encode(), TERM) == v2.encode()  # v2 is not a tenant write
    qos = Envelope(EnvelopeKind.QOS, RequestId(7, 2), encode_delete(b"/a/")).encode()
    assert fake.admission.admit(qos, TERM) == qos
    delete = rpc_pb2.DeleteRangeRequest(key=b"/a/1")
    assert not fake.admit(raft_internal_pb2.InternalRaftRequest(delete_range=delete))


def test_a_txn_pays_for_each_key_it_names_and_all_or_nothing() -> None:
    fake = Fake()
    fake.set(b"/a/", write_requests_per_s=3)
    fake.set(b"/b/", write_requests_per_s=1)
    # /a/ pays 2 (a write txn's range too, as the serving member counts it), /b/ cannot pay 2
    assert not fake.admit(txn(op_put(b"/a/0"), op_range(b"/a/1"), op_put(b"/b/0"), op_put(b"/b/1")))
    assert fake.admit(put(b"/b/0"))  # nothing was taken: /b/ still holds its token
    assert [fake.admit(put(b"/a/%d" % n)) for n in range(4)] == [True, True, True, False]


def test_bytes_are_charged_and_a_refusal_spends_nothing() -> None:
    fake = Fake()
    fake.set(b"/a/", write_requests_per_s=10, write_bytes_per_s=100)
    assert not fake.admit(put(b"/a/0", b"v" * 200))  # past the burst and the slack's bytes
    buckets = fake.admission.buckets[b"/a/"]
    assert buckets.requests is not None and buckets.requests.tokens == 10  # given back
    assert fake.admit(put(b"/a/0", b"v" * 90))  # 94 bytes
    assert not fake.admit(put(b"/a/1", b"v" * 40))  # 38 bytes short: 0.38 s at 100/s
    assert fake.admit(put(b"/a/1", b"v" * 20))


def test_a_callers_tenants_replace_the_prefix() -> None:
    fake = Fake()
    fake.set(b"/a/", write_requests_per_s=1)
    fake.table.apply(encode_set_caller("user", "alice", TenantLimits(write_requests_per_s=5)))
    fake.table.apply(encode_set_caller("role", "slow", TenantLimits(write_requests_per_s=2)))
    fake.table.apply(encode_set_caller("role", "fast", TenantLimits(write_requests_per_s=50)))
    fake.roles = {"bob": ["fast", "slow"], "carol": ["fast"], "alice": ["slow"]}
    alice = [fake.admit(put(b"/a/%d" % n, username="alice")) for n in range(7)]
    assert alice == [True] * 6 + [False]  # 5 of burst, 1 in debt (0.2 s), then refused
    assert [fake.admit(put(b"/a/%d" % n, username="bob")) for n in range(3)] == [
        True,
        True,
        False,  # the tightest role binds
    ]
    assert all(fake.admit(put(b"/a/%d" % n, username="carol")) for n in range(10))
    assert [fake.admit(put(b"/a/%d" % n, username="dave")) for n in range(2)] == [True, False]
    assert [fake.admit(put(b"/a/x")) for _ in range(2)] == [False, False]  # no caller: /a/'s


def test_a_new_term_starts_with_full_buckets_and_unchanged_tenants_keep_theirs() -> None:
    fake = Fake()
    fake.set(b"/a/", write_requests_per_s=1)
    assert [fake.admit(put(b"/a/0")) for _ in range(2)] == [True, False]
    fake.set(b"/other/", keys_max=3)  # the table changed, /a/'s write rate did not
    assert not fake.admit(put(b"/a/0"))
    fake.set(b"/a/", write_requests_per_s=2)  # a new rate: a new, full bucket
    assert [fake.admit(put(b"/a/0")) for _ in range(3)] == [True, True, False]
    data = Envelope(EnvelopeKind.V3_REQUEST, RequestId(7, 1), put(b"/a/0").SerializeToString())
    assert fake.admission.admit(data.encode(), TERM + 1) == data.encode()  # a new leader


def test_a_forwarded_proposal_has_its_normal_entries_admitted() -> None:
    fake = Fake()
    fake.set(b"/a/", write_requests_per_s=1)
    data = [
        Envelope(EnvelopeKind.V3_REQUEST, RequestId(7, n), put(b"/a/0").SerializeToString())
        for n in (1, 2)
    ]
    change = ConfChange(ConfChangeType.ADD_VOTER, 9).encode()
    entries = (
        Entry(0, 0, data=data[0].encode()),
        Entry(0, 0, EntryType.CONF_CHANGE, change),
        Entry(0, 0),
        Entry(0, 0, data=data[1].encode()),
    )
    message = Message(MessageType.PROPOSE, recipient=1, sender=2, entries=entries)
    admitted = fake.admission.admit_message(message, TERM)
    assert admitted.entries[:3] == entries[:3] and admitted.sender == 2
    assert Envelope.decode(admitted.entries[3].data).kind is EnvelopeKind.QOS_REFUSED


def test_applying_a_refused_entry_changes_nothing() -> None:
    machine = StateMachine.empty()
    request = put(b"/a/0").SerializeToString()
    first = Envelope(EnvelopeKind.V3_REQUEST, RequestId(1, 1), request).encode()
    assert machine.apply(Entry(1, 1, data=first)) is not None
    revision = machine.mvcc.current_revision
    refused = Envelope(EnvelopeKind.QOS_REFUSED, RequestId(1, 2), b"").encode()
    applied = machine.apply(Entry(1, 2, data=refused))
    assert applied is not None and applied.request_id == RequestId(1, 2)
    assert isinstance(applied.result, LeaderRefused)
    assert applied.result == errors.too_many_requests()
    assert str(applied.result) == TOO_MANY_REQUESTS
    assert machine.applied_index == 2 and machine.mvcc.current_revision == revision
    assert machine.mvcc.take_events() == []


@pytest.mark.parametrize("kind", list(EnvelopeKind))
def test_every_kind_round_trips(kind: EnvelopeKind) -> None:
    envelope = Envelope(kind, RequestId(1, 2), b"body")
    assert Envelope.decode(envelope.encode()) == envelope


def test_a_refund_gives_back_exactly_what_the_last_admission_took() -> None:
    """The core may drop entries the admission let through (a leader transfer under way, the
    uncommitted limit): the shell refunds them, since the client sends them again."""
    fake = Fake()
    fake.set(b"/a/", write_requests_per_s=2, write_bytes_per_s=1_000)
    assert fake.admit(put(b"/a/0"))
    (buckets,) = fake.admission.buckets.values()
    assert buckets.requests is not None and buckets.volume is not None
    before = (buckets.requests.tokens, buckets.volume.tokens)
    assert fake.admit(put(b"/a/1", b"x" * 100))
    fake.admission.refund()
    assert (buckets.requests.tokens, buckets.volume.tokens) == before
    fake.admission.refund()  # nothing more to give back
    assert (buckets.requests.tokens, buckets.volume.tokens) == before
    assert fake.admit(put(b"/a/1"))  # the refunded token is there again
    assert not fake.admit(put(b"/a/2"))
    fake.admission.refund()  # a refused entry took nothing
    assert not fake.admit(put(b"/a/3"))


def test_a_refund_of_a_forwarded_proposal_gives_back_all_its_entries() -> None:
    fake = Fake()
    fake.set(b"/a/", write_requests_per_s=3)
    entries = tuple(
        Entry(0, 0, data=Envelope(
            EnvelopeKind.V3_REQUEST, RequestId(7, n), put(b"/a/0").SerializeToString()
        ).encode())
        for n in (1, 2)
    )  # fmt: skip
    message = Message(MessageType.PROPOSE, recipient=1, sender=2, entries=entries)
    assert fake.admission.admit_message(message, TERM) == message
    fake.admission.refund()
    assert [fake.admit(put(b"/a/%d" % n), n) for n in range(4)] == [True, True, True, False]


class DroppingLeader:
    """A leader's core that drops every proposal (a leader transfer is under way)."""

    async_storage_writes = True

    def __init__(self) -> None:
        self.raft = SimpleNamespace(role=Role.LEADER, term=TERM)

    def propose(self, data: bytes) -> None:
        raise ProposalDropped(DropReason.TRANSFER_IN_PROGRESS)

    def step(self, message: Message) -> None:
        raise ProposalDropped(DropReason.TRANSFER_IN_PROGRESS)


def test_the_raft_actor_refunds_what_the_core_dropped() -> None:
    fake = Fake()
    fake.set(b"/a/", write_requests_per_s=1)
    send_storage, _ = trio.open_memory_channel[StorageAppend](1)
    send_apply, _ = trio.open_memory_channel[ApplyWork](1)
    _, inbox = trio.open_memory_channel[RaftInput](1)
    waiters = Waiters()
    actor = RaftActor(
        cast(RawNode, DroppingLeader()), inbox=inbox, to_storage=send_storage,
        to_apply=send_apply, send=lambda message: None, waiters=waiters,
        status=RaftStatus(1),
    )  # fmt: skip
    actor.admission = fake.admission
    request = put(b"/a/0").SerializeToString()
    for sequence in (1, 2, 3):  # the rate allows one; each is dropped and refunded
        waiter = waiters.register(RequestId(7, sequence))
        data = Envelope(EnvelopeKind.V3_REQUEST, RequestId(7, sequence), request).encode()
        actor.handle(Propose(RequestId(7, sequence), data))
        assert isinstance(waiter.error, NotLeader)
    entry = Entry(0, 0, data=Envelope(EnvelopeKind.V3_REQUEST, RequestId(8, 1), request).encode())
    actor.handle(FromPeer(Message(MessageType.PROPOSE, recipient=1, sender=2, entries=(entry,))))
    assert fake.admission.refused == 0
    assert fake.admit(put(b"/a/1"))  # the token is still there
