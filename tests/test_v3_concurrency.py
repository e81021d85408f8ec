"""troika.v3_concurrency's stream recipes against a scripted fake client, in virtual time:
keep-alive pacing and reopening, watch resumption without loss or repeat, and the errors that
end them (the process tests in tests/test_cli_v3_leases.py run them against real servers)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import trio
import trio.testing

from net.etcdpb import kv_pb2, rpc_pb2
from net.v3.client import V3Client
from net.v3.errors import RpcError, StatusCode
from troika.v3_concurrency import keep_alive, watch

Step = Any
"""A scripted answer: a message to return, or an exception to raise."""


class FakeCall:
    """One stream: records what is sent, answers from its script, then ends."""

    def __init__(self, script: list[Step], send_failure: RpcError | None = None) -> None:
        self.script = list(script)
        self.sent: list[Any] = []
        self.send_failure = send_failure

    async def send(self, message: Any) -> None:
        if self.send_failure is not None and self.sent:
            raise self.send_failure
        self.sent.append(message)

    def __aiter__(self) -> FakeCall:
        return self

    async def __anext__(self) -> Any:
        await trio.lowlevel.checkpoint()
        if not self.script:
            raise StopAsyncIteration
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


class FakeClient:
    """Hands out the scripted streams in order."""

    def __init__(self, calls: list[FakeCall], credentials: Any = None) -> None:
        self.calls = list(calls)
        self.opened: list[FakeCall] = []
        self.credentials = credentials
        self.renewals = 0

    async def authenticate(self, *, again: bool = False) -> None:
        self.renewals += again

    @contextlib.asynccontextmanager
    async def stream(self, path: str, response_type: type[Any]) -> AsyncIterator[FakeCall]:
        call = self.calls.pop(0)
        self.opened.append(call)
        yield call


def _alive(ttl: int) -> rpc_pb2.LeaseKeepAliveResponse:
    return rpc_pb2.LeaseKeepAliveResponse(ID=7, TTL=ttl)


async def test_keep_alive_paces_at_a_third_of_the_ttl_and_reopens_after_internal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    internal = RpcError(StatusCode.INTERNAL, "server closed the stream without sending trailers")
    first = FakeCall([_alive(6)], send_failure=internal)
    second = FakeCall([_alive(6), _alive(0)])
    client = FakeClient([first, second])
    times: list[float] = []
    began = trio.current_time()
    ended = await keep_alive(
        cast(V3Client, client), 7, lambda _: times.append(trio.current_time() - began)
    )
    assert ended is not None and ended.TTL == 0
    # first answer at once; the second send, 2 s later, breaks; the new stream 0.5 s after.
    assert times == [0.0, 2.5]
    assert [request.ID for request in second.sent] == [7, 7]


async def test_keep_alive_gives_up_a_lease_unanswered_for_its_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    unavailable = RpcError(StatusCode.UNAVAILABLE, "cannot connect")
    calls = [FakeCall([_alive(3)])] + [FakeCall([unavailable]) for _ in range(20)]
    client = FakeClient(calls)
    assert await keep_alive(cast(V3Client, client), 7, lambda _: None) is None
    assert len(client.opened) < len(calls)


async def test_keep_alive_stops_on_an_error_clientv3_does_not_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    denied = RpcError(StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")
    client = FakeClient([FakeCall([denied])])
    with pytest.raises(RpcError, match="permission denied"):
        await keep_alive(cast(V3Client, client), 7, lambda _: None)


def _events(*revisions: int) -> rpc_pb2.WatchResponse:
    return rpc_pb2.WatchResponse(
        header=rpc_pb2.ResponseHeader(revision=revisions[-1]),
        events=[
            kv_pb2.Event(kv=kv_pb2.KeyValue(key=b"k", mod_revision=revision))
            for revision in revisions
        ],
    )


async def test_watch_resumes_after_the_last_event_seen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    created = rpc_pb2.WatchResponse(created=True)
    lost = RpcError(StatusCode.UNAVAILABLE, "connection closed")
    first = FakeCall([created, _events(5, 6), lost])
    cancelled = rpc_pb2.WatchResponse(canceled=True, compact_revision=9)
    second = FakeCall([created, _events(7), cancelled])
    client = FakeClient([first, second])
    seen: list[rpc_pb2.WatchResponse] = []

    async def record(response: rpc_pb2.WatchResponse) -> bool:
        seen.append(response)
        return False

    request = rpc_pb2.WatchCreateRequest(key=b"k", start_revision=2)
    ended = await watch(cast(V3Client, client), request, record)
    assert ended == cancelled
    assert first.sent[0].create_request.start_revision == 2
    assert second.sent[0].create_request.start_revision == 7
    revisions = [event.kv.mod_revision for response in seen for event in response.events]
    assert revisions == [5, 6, 7]
    assert not any(response.created for response in seen)


async def test_watch_stops_when_the_caller_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = FakeClient([FakeCall([_events(3), _events(4)])])

    async def stop(response: rpc_pb2.WatchResponse) -> bool:
        return True

    assert await watch(cast(V3Client, client), rpc_pb2.WatchCreateRequest(key=b"k"), stop) is None
    assert len(client.calls) == 0


INVALID_TOKEN = "etcdserver: invalid auth token"


async def test_a_watch_refused_for_its_token_is_opened_again_with_a_new_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    created = rpc_pb2.WatchResponse(created=True)
    refused = rpc_pb2.WatchResponse(canceled=True, cancel_reason=INVALID_TOKEN)
    compacted = rpc_pb2.WatchResponse(canceled=True, compact_revision=9)
    first = FakeCall([refused])
    second = FakeCall([created, _events(3), compacted])
    client = FakeClient([first, second], credentials=("u", "p"))

    async def record(response: rpc_pb2.WatchResponse) -> bool:
        return False

    ended = await watch(cast(V3Client, client), rpc_pb2.WatchCreateRequest(key=b"k"), record)
    assert ended == compacted and client.renewals == 1
    # without a user there is nothing to renew: the refusal ends the watch
    alone = FakeClient([FakeCall([refused])])
    assert await watch(cast(V3Client, alone), rpc_pb2.WatchCreateRequest(key=b"k"), record) == (
        refused
    )


async def test_keep_alive_renews_a_refused_token_once_in_a_row(
    autojump_clock: trio.testing.MockClock,
) -> None:
    refused = RpcError(StatusCode.UNAUTHENTICATED, INVALID_TOKEN)
    renewed = FakeClient([FakeCall([refused]), FakeCall([_alive(0)])], credentials=("u", "p"))
    ended = await keep_alive(cast(V3Client, renewed), 7, lambda _: None)
    assert ended is not None and ended.TTL == 0 and renewed.renewals == 1
    twice = FakeClient([FakeCall([refused]), FakeCall([refused])], credentials=("u", "p"))
    with pytest.raises(RpcError, match="invalid auth token"):
        await keep_alive(cast(V3Client, twice), 7, lambda _: None)
    assert twice.renewals == 1
