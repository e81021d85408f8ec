"""The v3lock service over a fake member (``tests.net.concurrency_fake``): etcd's key layout,
waiters served in create-revision order, a holder losing the lock with its lease, and the
fencing token."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from net.etcdpb import rpc_pb2, v3lock_pb2
from net.etcdpb.routes import grpc_path
from net.v3 import errors
from net.v3.concurrency import (
    SESSION_TTL_S,
    ConcurrencyBackend,
    prefix_range_end,
    wait_delete,
    waiter_key,
)
from net.v3.errors import RpcError, StatusCode
from net.v3.lock_service import LockService, lock_methods
from net.v3.methods import CallContext, UnaryMethod
from tests.net.concurrency_fake import CLUSTER_ID, MEMBER_ID, FakeMember

CONTEXT = CallContext()


def as_client_error(error: RpcError) -> RpcError:
    """What etcd's lock and election servers answer for a member's error: its message with
    code Unknown (they call the member through etcd's client)."""
    return RpcError(StatusCode.UNKNOWN, error.message)


@pytest.fixture
def member() -> FakeMember:
    return FakeMember()


def backend_of(member: FakeMember) -> ConcurrencyBackend:
    return member  # the fake is a ConcurrencyBackend (checked here by mypy)


async def lock(member: FakeMember, name: bytes, lease: int) -> v3lock_pb2.LockResponse:
    return await LockService(backend_of(member)).lock(
        v3lock_pb2.LockRequest(name=name, lease=lease), CONTEXT
    )


async def unlock(member: FakeMember, key: bytes) -> v3lock_pb2.UnlockResponse:
    return await LockService(backend_of(member)).unlock(v3lock_pb2.UnlockRequest(key=key), CONTEXT)


class Lockers:
    """Lockers started in order in one nursery; ``held`` lists keys in the order granted."""

    def __init__(self, member: FakeMember, nursery: trio.Nursery) -> None:
        self.member = member
        self.nursery = nursery
        self.held: list[bytes] = []
        self.failed: list[RpcError] = []

    async def start(self, name: bytes, lease: int) -> None:
        async def run() -> None:
            try:
                self.held.append((await lock(self.member, name, lease)).key)
            except RpcError as error:
                self.failed.append(error)

        self.nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()


def test_prefix_range_end_and_key_layout() -> None:
    assert prefix_range_end(b"a/") == b"a0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\x00"
    assert waiter_key(b"mylock/", 0x68A1A1FB2B699A48) == b"mylock/68a1a1fb2b699a48"
    assert waiter_key(b"x/", -26) == b"x/-1a"  # Go's %x of a negative int64


async def test_an_uncontended_lock_is_one_txn(member: FakeMember) -> None:
    lease = member.grant(60)
    response = await lock(member, b"mylock", lease)
    key = waiter_key(b"mylock/", lease)
    assert response.key == key
    assert (response.header.cluster_id, response.header.member_id) == (CLUSTER_ID, MEMBER_ID)
    kv = member.value(key)
    assert kv is not None
    assert (kv.lease, kv.value, kv.create_revision) == (lease, b"", response.header.revision)
    assert member.calls == ["txn"]


async def test_waiters_get_the_lock_in_the_order_they_asked(member: FakeMember) -> None:
    leases = [member.grant(60) for _ in range(4)]
    async with trio.open_nursery() as nursery:
        lockers = Lockers(member, nursery)
        for lease in leases:
            await lockers.start(b"q", lease)
        keys = [waiter_key(b"q/", lease) for lease in leases]
        assert lockers.held == keys[:1]
        for index in range(3):
            await unlock(member, keys[index])
            await trio.testing.wait_all_tasks_blocked()
            assert lockers.held == keys[: index + 2]
    assert lockers.failed == []


async def test_unlocking_a_middle_waiter_does_not_wake_the_last(member: FakeMember) -> None:
    first, middle, last = (member.grant(60) for _ in range(3))
    async with trio.open_nursery() as nursery:
        lockers = Lockers(member, nursery)
        for lease in (first, middle, last):
            await lockers.start(b"q", lease)
        await unlock(member, waiter_key(b"q/", middle))  # a waiter gives up
        await trio.testing.wait_all_tasks_blocked()
        assert lockers.held == [waiter_key(b"q/", first)]
        await unlock(member, waiter_key(b"q/", first))
    assert lockers.held == [waiter_key(b"q/", first), waiter_key(b"q/", last)]
    assert lockers.failed == [errors_session_expired()]  # the middle one's key was deleted


def errors_session_expired() -> RpcError:
    return RpcError(StatusCode.UNKNOWN, "mutex: session is expired")


async def test_a_holder_whose_lease_is_revoked_loses_the_lock(member: FakeMember) -> None:
    holder, waiter = member.grant(60), member.grant(60)
    async with trio.open_nursery() as nursery:
        lockers = Lockers(member, nursery)
        await lockers.start(b"q", holder)
        await lockers.start(b"q", waiter)
        token_before = member.value(waiter_key(b"q/", holder))
        member.revoke(holder)  # what the leader's expiry of the lease does
    assert lockers.held == [waiter_key(b"q/", holder), waiter_key(b"q/", waiter)]
    assert member.value(waiter_key(b"q/", holder)) is None
    token_after = member.value(waiter_key(b"q/", waiter))
    assert token_before is not None and token_after is not None
    assert token_after.create_revision > token_before.create_revision  # the fencing token


async def test_fencing_token_refuses_the_old_holders_write(member: FakeMember) -> None:
    """The docs' example: a write guarded by the lock key's create revision."""
    holder, successor = member.grant(60), member.grant(60)
    key = (await lock(member, b"q", holder)).key
    token = member.value(key)
    assert token is not None
    member.revoke(holder)
    await lock(member, b"q", successor)

    guarded = rpc_pb2.TxnRequest(
        compare=[
            rpc_pb2.Compare(
                key=key,
                target=rpc_pb2.Compare.CREATE,
                result=rpc_pb2.Compare.EQUAL,
                create_revision=token.create_revision,
            )
        ],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"data", value=b"old"))],
    )
    assert not (await member.txn(guarded, CONTEXT)).succeeded
    assert member.value(b"data") is None


async def test_a_waiter_whose_lease_expires_is_told_so(member: FakeMember) -> None:
    holder, waiter = member.grant(60), member.grant(60)
    async with trio.open_nursery() as nursery:
        lockers = Lockers(member, nursery)
        await lockers.start(b"q", holder)
        await lockers.start(b"q", waiter)
        member.revoke(waiter)
        await trio.testing.wait_all_tasks_blocked()
        await unlock(member, waiter_key(b"q/", holder))
    # etcd 3.4 told such a waiter it held the lock (fixed in 3.5, whose answer this is)
    assert lockers.failed == [errors_session_expired()]
    assert member.keys(b"q/") == []


async def test_lock_without_a_lease_grants_a_session_lease(member: FakeMember) -> None:
    response = await lock(member, b"q", 0)
    assert member.calls == ["grant_lease", "txn"]
    (lease,) = member.leases
    assert member.leases[lease] == SESSION_TTL_S
    assert response.key == waiter_key(b"q/", lease)


async def test_lock_with_an_unknown_lease_fails_as_the_put_does(member: FakeMember) -> None:
    with pytest.raises(RpcError) as raised:
        await lock(member, b"q", 12345)
    assert raised.value == as_client_error(errors.lease_not_found())


async def test_the_same_lease_locking_again_gets_its_own_key(member: FakeMember) -> None:
    lease = member.grant(60)
    first = await lock(member, b"q", lease)
    again = await lock(member, b"q", lease)
    assert again.key == first.key
    assert again.header.revision == first.header.revision  # nothing written the second time


async def test_a_cancelled_waiter_deletes_its_key(
    member: FakeMember, autojump_clock: object
) -> None:
    holder, waiter = member.grant(60), member.grant(60)
    await lock(member, b"q", holder)
    with trio.move_on_after(1):
        await lock(member, b"q", waiter)
    assert member.keys(b"q/") == [waiter_key(b"q/", holder)]


async def test_unlock_deletes_the_key_and_answers_for_a_missing_one(member: FakeMember) -> None:
    lease = member.grant(60)
    key = (await lock(member, b"q", lease)).key
    response = await unlock(member, key)
    assert response.header.revision == member.store.current_revision
    assert member.value(key) is None
    again = await unlock(member, key)
    assert again.header.revision == response.header.revision
    with pytest.raises(RpcError) as raised:
        await unlock(member, b"")
    assert raised.value == as_client_error(errors.key_not_provided())


async def test_a_wait_on_a_compacted_revision_fails(member: FakeMember) -> None:
    member.compact(5)
    with pytest.raises(RpcError) as raised:
        await wait_delete(member, b"k", 3)
    assert raised.value == errors.compacted()


async def test_a_waiter_whose_watch_is_lost_fails_and_leaves(member: FakeMember) -> None:
    holder, waiter = member.grant(60), member.grant(60)
    async with trio.open_nursery() as nursery:
        lockers = Lockers(member, nursery)
        await lockers.start(b"q", holder)
        await lockers.start(b"q", waiter)
        member.end_watches()
    assert lockers.failed == [RpcError(StatusCode.UNKNOWN, "lost watcher waiting for delete")]
    assert member.keys(b"q/") == [waiter_key(b"q/", holder)]


async def test_methods_table(member: FakeMember) -> None:
    methods = lock_methods(member)
    assert set(methods) == {grpc_path("Lock", "Lock"), grpc_path("Lock", "Unlock")}
    method = methods["/v3lockpb.Lock/Lock"]
    assert isinstance(method, UnaryMethod)
    lease = member.grant(60)
    response = await method.handler(v3lock_pb2.LockRequest(name=b"n", lease=lease), CONTEXT)
    assert isinstance(response, v3lock_pb2.LockResponse)
    assert response.key == waiter_key(b"n/", lease)


async def test_refusals_before_the_handler_keep_their_code(member: FakeMember) -> None:
    """etcd's interceptor refuses before the lock server runs, so the code is its own."""
    member.refusal = errors.not_supported_for_learner()
    for call in (lock(member, b"q", member.grant(60)), unlock(member, b"q/1")):
        with pytest.raises(RpcError) as raised:
            await call
        assert raised.value == errors.not_supported_for_learner()
    assert member.calls == []
