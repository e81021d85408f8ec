"""Watches across kill -9 of the leader: every watcher resumes from its last revision and sees
every change once, in order.

A 3-process troika cluster; one watcher per member on the prefix ``watchcrash/`` over gRPC
(grpcio, with etcd's ``hasleader`` metadata as clientv3 sends it), each starting after an anchor
put. A watcher whose stream fails (its member was killed) reconnects to the next member with
``start_revision`` = its last revision + 1, as clientv3 resumes. A writer puts new keys through
the members meanwhile; the leader is killed with SIGKILL, the writes go on through the
election, the old leader is restarted. Then the writes stop and, once every watcher has reached
the last revision:

- each watcher's revisions strictly increase (no duplicate, no reordering);
- all watchers saw exactly the same events (so none has a gap the others do not);
- every acknowledged put is among them, with its revision and value;
- the events are exactly the prefix's history, read back with ranges at each revision (a
  revision with no event is one that wrote nothing under the prefix).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest

from bench.clusters import TroikaCluster
from net.etcdpb import rpc_pb2

pytestmark = pytest.mark.process

PREFIX = b"watchcrash/"
PREFIX_END = b"watchcrash0"
WRITE_TIMEOUT_S = 1.0
STEADY_S = 2.0
DOWN_S = 3.0
CATCH_UP_TIMEOUT_S = 30.0
RETRY_DELAY_S = 0.1
WATCH = "/etcdserverpb.Watch/Watch"
METADATA = (("hasleader", "true"),)

Seen = tuple[int, bytes, bytes, int]
"""mod_revision, key, value, event type."""


def channel_to(url: str) -> grpc.Channel:
    return grpc.insecure_channel(url.removeprefix("http://"))


def put(channel: grpc.Channel, key: bytes, value: bytes) -> int:
    call = channel.unary_unary(
        "/etcdserverpb.KV/Put",
        request_serializer=rpc_pb2.PutRequest.SerializeToString,
        response_deserializer=rpc_pb2.PutResponse.FromString,
    )
    reply = call(rpc_pb2.PutRequest(key=key, value=value), timeout=WRITE_TIMEOUT_S)
    return int(reply.header.revision)


@dataclass
class Watcher:
    """A resuming watcher: its events, and how many times it reconnected."""

    urls: list[str]
    first: int
    start_index: int
    events: list[Seen] = field(default_factory=list)
    reconnects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def last_revision(self) -> int:
        with self.lock:
            return self.events[-1][0] if self.events else self.first - 1

    def run(self, stop: threading.Event) -> None:
        index = self.start_index
        while not stop.is_set():
            channel = channel_to(self.urls[index])
            try:
                self._watch(channel, stop)
            except grpc.RpcError:
                self.reconnects += 1
                index = (index + 1) % len(self.urls)
                time.sleep(RETRY_DELAY_S)
            finally:
                channel.close()

    def _watch(self, channel: grpc.Channel, stop: threading.Event) -> None:
        start = self.last_revision() + 1
        create = rpc_pb2.WatchCreateRequest(key=PREFIX, range_end=PREFIX_END, start_revision=start)

        def requests() -> Iterator[rpc_pb2.WatchRequest]:
            yield rpc_pb2.WatchRequest(create_request=create)
            stop.wait()

        call = channel.stream_stream(
            WATCH,
            request_serializer=rpc_pb2.WatchRequest.SerializeToString,
            response_deserializer=rpc_pb2.WatchResponse.FromString,
        )
        responses = call(requests(), metadata=METADATA)
        stopper = threading.Thread(target=lambda: (stop.wait(), responses.cancel()), daemon=True)
        stopper.start()
        for response in responses:
            assert not response.canceled, response
            with self.lock:
                for event in response.events:
                    kv = event.kv
                    self.events.append((kv.mod_revision, kv.key, kv.value, event.type))


def writer(urls: list[str], acked: list[tuple[int, bytes, bytes]], stop: threading.Event) -> None:
    target = 0
    channel = channel_to(urls[target])
    for sequence in range(10**9):
        if stop.is_set():
            break
        key = PREFIX + b"%07d" % sequence
        value = b"v%d" % sequence
        try:
            acked.append((put(channel, key, value), key, value))
        except grpc.RpcError:
            channel.close()
            target = (target + 1) % len(urls)
            channel = channel_to(urls[target])
            time.sleep(RETRY_DELAY_S)
    channel.close()


def history(url: str, first: int, last: int) -> list[Seen]:
    """The prefix's changes in ``[first, last]``, from ranges at each revision (puts as the
    version written, deletes as keys that disappeared; this test only puts)."""
    channel = channel_to(url)
    call = channel.unary_unary(
        "/etcdserverpb.KV/Range",
        request_serializer=rpc_pb2.RangeRequest.SerializeToString,
        response_deserializer=rpc_pb2.RangeResponse.FromString,
    )
    request = rpc_pb2.RangeRequest(
        key=PREFIX, range_end=PREFIX_END, min_mod_revision=first, max_mod_revision=last
    )
    reply = call(request, timeout=20)
    channel.close()
    return sorted((kv.mod_revision, kv.key, kv.value, 0) for kv in reply.kvs)


def test_watchers_resume_without_loss_or_repeat_across_a_leader_kill(tmp_path: Path) -> None:
    with TroikaCluster(3, tmp_path) as cluster:
        urls = list(cluster.client_urls)
        anchor_channel = channel_to(urls[0])
        first = put(anchor_channel, b"watchcrash-anchor", b"x") + 1
        anchor_channel.close()
        stop_watching, stop_writing = threading.Event(), threading.Event()
        watchers = [Watcher(urls, first, index) for index in range(len(urls))]
        threads = [
            threading.Thread(target=w.run, args=(stop_watching,), daemon=True) for w in watchers
        ]
        acked: list[tuple[int, bytes, bytes]] = []
        threads.append(
            threading.Thread(target=writer, args=(urls, acked, stop_writing), daemon=True)
        )
        for thread in threads:
            thread.start()
        try:
            time.sleep(STEADY_S)
            leader = cluster.wait_for_leader()
            before_kill = len(acked)
            cluster.kill(leader)
            time.sleep(DOWN_S)
            cluster.restart(leader)
            time.sleep(STEADY_S)
            stop_writing.set()
            threads[-1].join(10)
            assert acked and before_kill > 0 and len(acked) > before_kill
            last = max(revision for revision, _, _ in acked)
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
            while any(w.last_revision() < last for w in watchers):
                assert time.monotonic() < deadline, [w.last_revision() for w in watchers]
                time.sleep(0.1)
        finally:
            stop_watching.set()
        seen = [list(w.events) for w in watchers]
        for events in seen:
            revisions = [revision for revision, *_ in events]
            assert revisions == sorted(set(revisions))  # one put per revision here
        assert seen[0] == seen[1] == seen[2]
        by_revision = {revision: (key, value) for revision, key, value, _ in seen[0]}
        for revision, key, value in acked:
            assert by_revision.get(revision) == (key, value), revision
        upto = seen[0][-1][0]
        assert seen[0] == history(urls[(leader + 1) % 3], first, upto)
        assert watchers[leader].reconnects >= 1  # the killed member's watcher resumed
