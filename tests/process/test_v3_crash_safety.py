"""v3 crash safety: acknowledged gRPC puts survive kill -9, with their revisions, on every
member, and the members' MVCC stores agree.

A 3-process troika cluster takes a stream of v3 puts (``/etcdserverpb.KV/Put`` over gRPC,
grpcio) from ``WRITERS`` client threads, each put to a new key, spread over the members. A put
counts as acknowledged only once a member answered it OK, with the revision in its header; a
put that failed or timed out is not counted (it may or may not have happened). Meanwhile:

1. kill -9 a follower; keep writing with two members; restart it;
2. kill -9 the leader; keep writing through the election; restart it;
3. kill -9 every member at once; start them all again.

Then the writers stop, and:

- revisions never repeat: each acknowledged put has a revision of its own;
- revisions never go back: per client they increase in acknowledgement order, and across
  clients a put sent after another was acknowledged has a larger revision (real-time order);
- every acknowledged put is on every member with its value, ``create_revision`` and
  ``mod_revision`` equal to the acknowledged revision, ``version`` 1 (keys are written once);
- the members' MVCC states are equal: the whole key space read on each member with a
  serializable Range at the same revision R (once each has applied R), and HashKV at R when the
  server has it (``/etcdserverpb.Maintenance/HashKV``; answered UNIMPLEMENTED, it is skipped).

Each phase must have had acknowledged puts, or the test proves nothing.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from google.protobuf.message import Message

from bench.clusters import TroikaCluster
from net.etcdpb import rpc_pb2

pytestmark = pytest.mark.process

WRITERS = 6
WRITE_TIMEOUT_S = 1.0
"""A put not answered within this is given up on (not acknowledged)."""
RETRY_DELAY_S = 0.05
STEADY_S = 2.5
DOWN_S = 2.0
PROGRESS_WRITES_MIN = 50
PROGRESS_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 20.0
APPLY_TIMEOUT_S = 20.0
STARTUP_TIMEOUT_S = 15.0
RUN_TIMEOUT_S = 60.0
PREFIX = "crash3"


@dataclass(frozen=True)
class Ack:
    writer: int
    key: bytes
    value: bytes
    revision: int
    sent: float
    acknowledged: float


@dataclass
class Ledger:
    acks: list[Ack] = field(default_factory=list)
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ack: Ack) -> None:
        with self.lock:
            self.acks.append(ack)

    def fail(self) -> None:
        with self.lock:
            self.failures += 1

    def acknowledged_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for ack in self.acks if start < ack.acknowledged <= end)


def channel_to(url: str) -> grpc.Channel:
    return grpc.insecure_channel(url.removeprefix("http://"))


def unary(
    channel: grpc.Channel, method: str, request: Message, response_type: type[Message]
) -> Message:
    call = channel.unary_unary(
        f"/etcdserverpb.{method}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response_type.FromString,
    )
    reply = call(request, timeout=READ_TIMEOUT_S if method != "KV/Put" else WRITE_TIMEOUT_S)
    assert isinstance(reply, response_type)
    return reply


def writer(number: int, urls: list[str], ledger: Ledger, stop: threading.Event) -> None:
    """Put new keys until ``stop``; after a failure, a new channel to the next member."""
    channels: list[grpc.Channel | None] = [None] * len(urls)
    target = number % len(urls)
    token = secrets.token_hex(4)
    try:
        for sequence in range(10**9):
            if stop.is_set():
                return
            channel = channels[target]
            if channel is None:
                channel = channels[target] = channel_to(urls[target])
            key = f"{PREFIX}/w{number}-{sequence:07d}".encode()
            value = f"{token}-{number}-{sequence}".encode()
            sent = time.monotonic()
            try:
                reply = unary(
                    channel, "KV/Put", rpc_pb2.PutRequest(key=key, value=value), rpc_pb2.PutResponse
                )
            except grpc.RpcError:
                ledger.fail()
                channel.close()
                channels[target] = None
                target = (target + 1) % len(urls)
                time.sleep(RETRY_DELAY_S)
                continue
            assert isinstance(reply, rpc_pb2.PutResponse)
            ledger.add(Ack(number, key, value, reply.header.revision, sent, time.monotonic()))
    finally:
        for channel in channels:
            if channel is not None:
                channel.close()


def stay_down(ledger: Ledger, since: float) -> None:
    time.sleep(DOWN_S)
    deadline = time.monotonic() + PROGRESS_TIMEOUT_S
    while time.monotonic() < deadline:
        if ledger.acknowledged_between(since, time.monotonic()) >= PROGRESS_WRITES_MIN:
            return
        time.sleep(0.1)


def crash_schedule(cluster: TroikaCluster, ledger: Ledger, events: dict[str, float]) -> None:
    """Follower, then leader, then every member: kill -9 and restart, writes throughout."""

    def mark(name: str) -> None:
        events[name] = time.monotonic()

    time.sleep(STEADY_S)
    leader = cluster.wait_for_leader()
    follower = next(index for index in range(cluster.size) if index != leader)
    cluster.kill(follower)
    mark("follower killed")
    stay_down(ledger, events["follower killed"])
    mark("follower restarting")
    cluster.restart(follower)
    mark("follower restarted")
    time.sleep(STEADY_S)

    leader = cluster.wait_for_leader()
    cluster.kill(leader)
    mark("leader killed")
    stay_down(ledger, events["leader killed"])
    mark("leader restarting")
    cluster.restart(leader)
    mark("leader restarted")
    time.sleep(STEADY_S)

    pids = [pid for pid in map(cluster.pid, range(cluster.size)) if pid is not None]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while cluster.running_indexes():
        assert time.monotonic() < deadline, "a member outlived SIGKILL"
        time.sleep(0.01)
    mark("all killed")
    cluster.start()
    mark("all restarted")
    time.sleep(STEADY_S)
    mark("end")


KeyValue = tuple[bytes, bytes, int, int, int, int]
"""key, value, create_revision, mod_revision, version, lease."""


def member_view(url: str, revision: int) -> tuple[list[KeyValue], int | None, int | None]:
    """Member ``url``'s whole key space at ``revision`` (serializable, once it has applied
    ``revision``), and its HashKV (hash, compact revision) at ``revision`` if served."""
    channel = channel_to(url)
    try:
        deadline = time.monotonic() + APPLY_TIMEOUT_S
        while True:
            probe = unary(
                channel,
                "KV/Range",
                rpc_pb2.RangeRequest(key=b"\0", serializable=True, count_only=True),
                rpc_pb2.RangeResponse,
            )
            assert isinstance(probe, rpc_pb2.RangeResponse)
            if probe.header.revision >= revision:
                break
            assert time.monotonic() < deadline, f"{url} never applied revision {revision}"
            time.sleep(0.1)
        reply = unary(
            channel,
            "KV/Range",
            rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0", revision=revision, serializable=True),
            rpc_pb2.RangeResponse,
        )
        assert isinstance(reply, rpc_pb2.RangeResponse)
        assert not reply.more and reply.count == len(reply.kvs)
        kvs = [
            (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
            for kv in reply.kvs
        ]
        try:
            hashed = unary(
                channel,
                "Maintenance/HashKV",
                rpc_pb2.HashKVRequest(revision=revision),
                rpc_pb2.HashKVResponse,
            )
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            return kvs, None, None
        assert isinstance(hashed, rpc_pb2.HashKVResponse)
        return kvs, hashed.hash, hashed.compact_revision
    finally:
        channel.close()


def current_revision(url: str) -> int:
    """The cluster's revision, by a linearizable read through ``url``."""
    channel = channel_to(url)
    try:
        reply = unary(channel, "KV/Range", rpc_pb2.RangeRequest(key=b"\0"), rpc_pb2.RangeResponse)
        assert isinstance(reply, rpc_pb2.RangeResponse)
        return int(reply.header.revision)
    finally:
        channel.close()


def revision_order_problems(acks: list[Ack]) -> list[str]:
    """Repeated revisions, per-client order, real-time order (first few of each)."""
    problems: list[str] = []
    by_revision: dict[int, Ack] = {}
    for ack in acks:
        other = by_revision.setdefault(ack.revision, ack)
        if other is not ack:
            problems.append(
                f"revision {ack.revision} acknowledged twice: {other.key!r}, {ack.key!r}"
            )
    for number in range(WRITERS):
        own = sorted(
            (ack for ack in acks if ack.writer == number), key=lambda ack: ack.acknowledged
        )
        for before, after in itertools.pairwise(own):
            if after.revision <= before.revision:
                problems.append(
                    f"writer {number}: {after.key!r} got {after.revision} after "
                    f"{before.key!r} got {before.revision}"
                )
    by_ack = sorted(acks, key=lambda ack: ack.acknowledged)
    highest = 0
    position = 0
    for ack in sorted(acks, key=lambda ack: ack.sent):
        while position < len(by_ack) and by_ack[position].acknowledged < ack.sent:
            highest = max(highest, by_ack[position].revision)
            position += 1
        if ack.revision <= highest:
            problems.append(
                f"{ack.key!r} sent after revision {highest} was acknowledged, got {ack.revision}"
            )
    return problems[:20]


def test_acknowledged_v3_puts_survive_kill_9(tmp_path: Path) -> None:
    cluster = TroikaCluster(3, tmp_path / "cluster", startup_timeout_s=STARTUP_TIMEOUT_S)
    ledger = Ledger()
    events: dict[str, float] = {}
    stop = threading.Event()
    threads: list[threading.Thread] = []
    started = time.monotonic()
    try:
        cluster.start()
        events["start"] = time.monotonic()
        threads = [
            threading.Thread(target=writer, args=(number, cluster.client_urls, ledger, stop))
            for number in range(WRITERS)
        ]
        for thread in threads:
            thread.start()
        crash_schedule(cluster, ledger, events)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in threads), "a writer did not stop"
        revision = current_revision(cluster.client_urls[0])
        views = [member_view(url, revision) for url in cluster.client_urls]
    finally:
        stop.set()
        cluster.close()
    assert time.monotonic() - started < RUN_TIMEOUT_S * 2

    acks = ledger.acks
    when = ", ".join(f"{name} +{at - events['start']:.1f} s" for name, at in events.items())
    print(f"\n{len(acks)} puts acknowledged, {ledger.failures} failed or timed out; {when}")
    phases = {
        "before any fault": ("start", "follower killed"),
        "while a follower was down": ("follower killed", "follower restarting"),
        "after the follower came back": ("follower restarted", "leader killed"),
        "while the old leader was down": ("leader killed", "leader restarting"),
        "after the old leader came back": ("leader restarted", "all killed"),
        "after the whole cluster restarted": ("all restarted", "end"),
    }
    for phase, (begin, end) in phases.items():
        count = ledger.acknowledged_between(events[begin], events[end])
        print(f"  {count:6d} acknowledged {phase}")
        assert count > 0, f"no put was acknowledged {phase}: the test proved nothing"

    problems = revision_order_problems(acks)
    assert not problems, f"revisions repeated or went back: {problems}; events: {when}"
    assert max(ack.revision for ack in acks) <= revision

    names = cluster.names
    for index, (kvs, _, _) in enumerate(views):
        held = {kv[0]: kv for kv in kvs}
        lost = []
        for ack in acks:
            kv = held.get(ack.key)
            wanted = (ack.key, ack.value, ack.revision, ack.revision, 1, 0)
            if kv != wanted:
                lost.append(f"{ack.key!r} (revision {ack.revision}) holds {kv}")
        assert not lost, (
            f"member {names[index]}: {len(lost)} acknowledged puts lost or changed at revision "
            f"{revision}, e.g. {lost[:10]}; events: {when}"
        )
    first_kvs, first_hash, first_compacted = views[0]
    for index, (kvs, hashed, compacted) in enumerate(views[1:], start=1):
        if kvs != first_kvs:
            mine, theirs = set(first_kvs), set(kvs)
            sample = random.Random(7).sample(sorted(mine ^ theirs), min(10, len(mine ^ theirs)))
            pytest.fail(
                f"{names[0]} and {names[index]} differ at revision {revision}: "
                f"{len(mine - theirs)} entries only in {names[0]}, {len(theirs - mine)} only in "
                f"{names[index]}, e.g. {sample}"
            )
        assert (hashed, compacted) == (first_hash, first_compacted), (
            f"HashKV at {revision}: {names[0]} {first_hash} (compacted {first_compacted}), "
            f"{names[index]} {hashed} (compacted {compacted})"
        )
    print(
        f"  {len(first_kvs)} keys equal on every member at revision {revision}; HashKV "
        + ("not served" if first_hash is None else f"{first_hash} on every member")
    )
