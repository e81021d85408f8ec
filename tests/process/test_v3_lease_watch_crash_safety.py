"""Leases and watches through a kill -9 of the leader, on a 3-process troika cluster.

While a writer puts new keys under ``PREFIX`` (each key once) through any member:

- ``HOLDERS`` lease holders each grant a lease of ``TTL_S``, attach a key to it, and send a
  keep-alive every ``KEEP_ALIVE_EVERY_S`` on a LeaseKeepAlive stream (to a member of their
  own; after a failure, to the next member);
- ``WATCHERS`` watchers each watch the whole prefix from the test's start revision on a Watch
  stream of their own; after a failure they resume on the next member from the revision after
  the last event they saw.

Then the leader is killed with SIGKILL, a new one is elected, the old one restarts, and the
load goes on a while; the writers stop, and the watchers once they have seen the last write.
Checked at the end:

- every watcher saw exactly the writes made under the prefix after its start revision (the
  authoritative list: each key's create revision read at the end, every key written once),
  in revision order, with no gap and no event twice;
- every acknowledged put is among them;
- no lease whose keep-alives kept being answered within its TTL expired: each lease still
  exists with its key (and each holder's longest wait between answered keep-alives is below
  the TTL, or the test says the cluster could not serve keep-alives in time).
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from google.protobuf.message import Message

from bench.clusters import TroikaCluster
from net.etcdpb import rpc_pb2

pytestmark = pytest.mark.process

PREFIX = b"lw/"
HOLDERS = 8
WATCHERS = 4
TTL_S = 6
KEEP_ALIVE_EVERY_S = 1.0
STEADY_S = 3.0
AFTER_RESTART_S = 4.0
CALL_TIMEOUT_S = 2.0
RETRY_DELAY_S = 0.1
SETTLE_TIMEOUT_S = 20.0
STARTUP_TIMEOUT_S = 15.0


def channel_to(url: str) -> grpc.Channel:
    return grpc.insecure_channel(url.removeprefix("http://"))


def unary(channel: grpc.Channel, method: str, request: Message, reply: type[Message]) -> Message:
    call = channel.unary_unary(
        f"/etcdserverpb.{method}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=reply.FromString,
    )
    return call(request, timeout=CALL_TIMEOUT_S)  # type: ignore[no-any-return]


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


@dataclass
class Shared:
    urls: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    """Stops the writer and the lease holders."""
    stop_watching: threading.Event = field(default_factory=threading.Event)
    """Stops the watchers (once they have seen the last write)."""
    acked: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def writer(shared: Shared) -> None:
    target = 0
    channel = channel_to(shared.urls[target])
    for sequence in itertools.count():
        if shared.stop.is_set():
            break
        request = rpc_pb2.PutRequest(key=PREFIX + b"w/%07d" % sequence, value=b"v")
        try:
            reply = unary(channel, "KV/Put", request, rpc_pb2.PutResponse)
        except grpc.RpcError:
            channel.close()
            target = (target + 1) % len(shared.urls)
            channel = channel_to(shared.urls[target])
            time.sleep(RETRY_DELAY_S)
            continue
        assert isinstance(reply, rpc_pb2.PutResponse)
        with shared.lock:
            shared.acked.append(reply.header.revision)
        time.sleep(0.01)
    channel.close()


@dataclass
class Holder:
    number: int
    lease_id: int = 0
    answered: list[float] = field(default_factory=list)
    """When each keep-alive with a positive TTL was answered."""
    lost: bool = False
    """A keep-alive was answered TTL 0: the lease was gone."""


def hold(holder: Holder, shared: Shared) -> None:
    target = holder.number % len(shared.urls)
    while not shared.stop.is_set():
        channel = channel_to(shared.urls[target])
        try:
            if holder.lease_id == 0:
                grant = unary(
                    channel,
                    "Lease/LeaseGrant",
                    rpc_pb2.LeaseGrantRequest(TTL=TTL_S),
                    rpc_pb2.LeaseGrantResponse,
                )
                assert isinstance(grant, rpc_pb2.LeaseGrantResponse)
                put = rpc_pb2.PutRequest(
                    key=PREFIX + b"lease/%d" % holder.number, value=b"held", lease=grant.ID
                )
                unary(channel, "KV/Put", put, rpc_pb2.PutResponse)
                holder.lease_id = grant.ID
                holder.answered.append(time.monotonic())
            keep_alive(holder, shared, channel)
        except grpc.RpcError:
            time.sleep(RETRY_DELAY_S)
        finally:
            channel.close()
        target = (target + 1) % len(shared.urls)


def keep_alive(holder: Holder, shared: Shared, channel: grpc.Channel) -> None:
    def requests() -> Iterator[rpc_pb2.LeaseKeepAliveRequest]:
        while not shared.stop.is_set():
            yield rpc_pb2.LeaseKeepAliveRequest(ID=holder.lease_id)
            time.sleep(KEEP_ALIVE_EVERY_S)

    call = channel.stream_stream(
        "/etcdserverpb.Lease/LeaseKeepAlive",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=rpc_pb2.LeaseKeepAliveResponse.FromString,
    )
    responses = call(requests(), timeout=60)
    last = time.monotonic()
    for response in responses:
        if response.TTL <= 0:
            holder.lost = True
            return
        last = time.monotonic()
        holder.answered.append(last)
        if shared.stop.is_set():
            responses.cancel()
            return


@dataclass
class Watcher:
    number: int
    start_revision: int
    events: list[tuple[int, bytes, int]] = field(default_factory=list)
    """(mod revision, key, event type) of every event received, in order."""
    resumed: int = 0


def watch(watcher: Watcher, shared: Shared) -> None:
    target = watcher.number % len(shared.urls)
    while not shared.stop_watching.is_set():
        start = watcher.events[-1][0] + 1 if watcher.events else watcher.start_revision
        channel = channel_to(shared.urls[target])
        outbox: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        outbox.put(
            rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(
                    key=PREFIX, range_end=prefix_end(PREFIX), start_revision=start
                )
            )
        )

        call = channel.stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=rpc_pb2.WatchResponse.FromString,
        )
        responses = call(queued(outbox))
        stopper = threading.Thread(target=cancel_on_stop, args=(shared, responses, outbox))
        stopper.start()
        try:
            for response in responses:
                assert not response.canceled, f"watch canceled: {response}"
                for event in response.events:
                    watcher.events.append((event.kv.mod_revision, event.kv.key, event.type))
        except grpc.RpcError:
            watcher.resumed += 1
            time.sleep(RETRY_DELAY_S)
        finally:
            outbox.put(None)
            channel.close()
            stopper.join()
        target = (target + 1) % len(shared.urls)


def queued(outbox: queue.Queue[rpc_pb2.WatchRequest | None]) -> Iterator[rpc_pb2.WatchRequest]:
    """The requests put on ``outbox``, until a None."""
    while (request := outbox.get()) is not None:
        yield request


def cancel_on_stop(shared: Shared, responses: grpc.Future, outbox: queue.Queue[object]) -> None:
    while not shared.stop_watching.wait(0.1):
        if responses.done():
            return
    responses.cancel()
    outbox.put(None)


def written_revisions(url: str, start_revision: int) -> list[int]:
    """The revision of every write under the prefix after ``start_revision`` (each key is
    written once and never deleted, so its create revision is its one write)."""
    channel = channel_to(url)
    try:
        request = rpc_pb2.RangeRequest(key=PREFIX, range_end=prefix_end(PREFIX))
        reply = unary(channel, "KV/Range", request, rpc_pb2.RangeResponse)
        assert isinstance(reply, rpc_pb2.RangeResponse)
        assert all(kv.version == 1 for kv in reply.kvs), "a key was written twice"
        return sorted(kv.create_revision for kv in reply.kvs if kv.create_revision > start_revision)
    finally:
        channel.close()


def lease_alive(url: str, lease_id: int) -> tuple[int, list[bytes]]:
    channel = channel_to(url)
    try:
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=True)
        reply = unary(channel, "Lease/LeaseTimeToLive", request, rpc_pb2.LeaseTimeToLiveResponse)
        assert isinstance(reply, rpc_pb2.LeaseTimeToLiveResponse)
        return reply.TTL, list(reply.keys)
    finally:
        channel.close()


def wait_until(condition: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_watchers_and_leases_come_through_a_leader_kill(tmp_path: Path) -> None:
    cluster = TroikaCluster(3, tmp_path / "cluster", startup_timeout_s=STARTUP_TIMEOUT_S)
    shared = Shared([])
    threads: list[threading.Thread] = []
    try:
        cluster.start()
        shared.urls = list(cluster.client_urls)
        first = channel_to(shared.urls[0])
        anchor = unary(
            first, "KV/Put", rpc_pb2.PutRequest(key=b"anchor", value=b"a"), rpc_pb2.PutResponse
        )
        first.close()
        assert isinstance(anchor, rpc_pb2.PutResponse)
        start_revision = anchor.header.revision
        holders = [Holder(number) for number in range(HOLDERS)]
        watchers = [Watcher(number, start_revision + 1) for number in range(WATCHERS)]
        threads = [
            threading.Thread(target=writer, args=(shared,)),
            *(threading.Thread(target=hold, args=(holder, shared)) for holder in holders),
            *(threading.Thread(target=watch, args=(watcher, shared)) for watcher in watchers),
        ]
        for thread in threads:
            thread.start()
        wait_until(lambda: all(holder.lease_id for holder in holders), SETTLE_TIMEOUT_S)
        time.sleep(STEADY_S)
        leader = cluster.wait_for_leader()
        acked_before_kill = len(shared.acked)
        killed_at = time.monotonic()
        cluster.kill(leader)
        new_leader = cluster.wait_for_leader()
        elected_s = time.monotonic() - killed_at
        cluster.restart(leader)
        time.sleep(AFTER_RESTART_S)
        shared.stop.set()
        for thread in threads[: 1 + HOLDERS]:
            thread.join(timeout=15)
        survivor = shared.urls[new_leader]
        written = written_revisions(survivor, start_revision)
        alive = {holder.number: lease_alive(survivor, holder.lease_id) for holder in holders}
        # The watchers stop once each has seen the last write (or the wait times out, and the
        # comparison below says what is missing).
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: all(w.events and w.events[-1][0] >= written[-1] for w in watchers),
                SETTLE_TIMEOUT_S,
            )
        shared.stop_watching.set()
        for thread in threads:
            thread.join(timeout=15)
        assert not any(thread.is_alive() for thread in threads), "a client did not stop"
    finally:
        shared.stop.set()
        shared.stop_watching.set()
        cluster.close()

    print(
        f"\nleader {leader} killed; {new_leader} elected in {elected_s:.1f} s; "
        f"{len(shared.acked)} puts acknowledged ({acked_before_kill} before the kill), "
        f"{len(written)} writes under the prefix; watchers resumed "
        f"{[watcher.resumed for watcher in watchers]} times"
    )
    assert len(shared.acked) > acked_before_kill > 0, "no puts on one side of the kill"
    assert set(shared.acked) <= set(written), "an acknowledged put is missing"
    for watcher in watchers:
        revisions = [revision for revision, _, _ in watcher.events]
        assert revisions == sorted(set(revisions)), f"watcher {watcher.number}: out of order"
        assert revisions == written, (
            f"watcher {watcher.number}: missing {sorted(set(written) - set(revisions))[:10]}, "
            f"extra {sorted(set(revisions) - set(written))[:10]}"
        )
    for holder in holders:
        gaps = [later - earlier for earlier, later in itertools.pairwise(holder.answered)]
        longest_s = max(gaps, default=0.0)
        assert longest_s < TTL_S, (
            f"holder {holder.number} went {longest_s:.1f} s without an answered keep-alive: "
            "the cluster could not serve keep-alives within a TTL through the failover"
        )
        remaining_s, keys = alive[holder.number]
        assert not holder.lost and remaining_s > 0, f"lease of holder {holder.number} expired"
        assert keys == [PREFIX + b"lease/%d" % holder.number]
