"""The v3 Watch differential suite: the same watch streams on troika (3 member processes) and
etcd 3.4.23 (3 members), over gRPC and over the gateway's ``/v3/watch``, compared response by
response.

A case writes some keys (``before``), opens a Watch stream with its requests (``stream``: the
gateway reads them from one body, as etcd3gw and curl send them; gRPC sends them in order
on the open stream), then makes more writes one by one (``after``). After the opening and
after each write, the responses that arrive until the stream is quiet for ``QUIET_S`` form
one batch; the batches are compared, each sorted by header revision and watch id (etcd
hands a revision's events to its watchers in Go map order). Responses are normalized as in
``tests/process/v3diff.py``: header ids as ``set``, revisions as deltas from the case's
anchor put, keys and values decoded with the case prefix as ``{p}``.

Writes go over gRPC on both transports. Cases follow ETCD_API.md §2.5, §3 (Watch) and §9.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.protobuf import json_format

from bench.clusters import EtcdCluster, TroikaCluster, etcd_available
from net.etcdpb import rpc_pb2
from tests.process.v3diff import (
    COMPACT,
    DELETE,
    PUT,
    TRANSPORTS,
    TXN,
    Call,
    Normalizer,
    Target,
    Transport,
    anchor,
    differences,
    observe_grpc,
    op_put,
)

pytestmark = pytest.mark.process

QUIET_S = 0.4
"""A batch ends when no response came for this long."""
BATCH_WAIT_S = 8.0
"""The longest a batch is gathered."""
WATCH_PATH = "/etcdserverpb.Watch/Watch"


@dataclass(frozen=True)
class LeaseCall:
    """A Lease RPC (not in v3diff's table), over gRPC; ``{lease}`` in the body is a lease id
    of the case's own (the same on both systems)."""

    method: str
    body: dict[str, Any]


Step = Call | LeaseCall


def with_lease(value: Any, lease_id: int) -> Any:
    """``value`` with every ``"{lease}"`` replaced by ``lease_id``."""
    if isinstance(value, dict):
        return {name: with_lease(item, lease_id) for name, item in value.items()}
    if isinstance(value, list):
        return [with_lease(item, lease_id) for item in value]
    return str(lease_id) if value == "{lease}" else value


def observe(target: Target, step: Step, normalizer: Normalizer, lease_id: int) -> Any:
    if isinstance(step, Call):
        body = with_lease(dict(step.body or {}), lease_id)
        return observe_grpc(target, dataclasses.replace(step, body=body), normalizer)
    request_type, response_type = LEASE_RPCS[step.method]
    request = request_type()
    json_format.ParseDict(normalizer.fill(with_lease(step.body, lease_id)), request)
    path = f"/etcdserverpb.Lease/{step.method}"
    reply, error = target.grpc_call(path, request.SerializeToString())
    if error is not None:
        return {"error": error}
    assert reply is not None
    message = response_type.FromString(reply)
    return normalizer.json(json_format.MessageToDict(message, preserving_proto_field_name=True))


LEASE_RPCS: dict[str, tuple[Any, Any]] = {
    "LeaseGrant": (rpc_pb2.LeaseGrantRequest, rpc_pb2.LeaseGrantResponse),
    "LeaseRevoke": (rpc_pb2.LeaseRevokeRequest, rpc_pb2.LeaseRevokeResponse),
}


@dataclass(frozen=True)
class WatchCase:
    """Writes, a watch stream's requests (gateway JSON, templates as in v3diff), more writes."""

    name: str
    stream: tuple[dict[str, Any], ...]
    after: tuple[Step, ...] = ()
    before: tuple[Step, ...] = ()
    xfail: dict[Transport, str] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return "watch-" + "".join(c if c.isalnum() else "-" for c in self.name.lower())[:70]


def create(key: str, **fields: Any) -> dict[str, Any]:
    return {"create_request": {"key": key, **fields}}


def cancel(watch_id: int) -> dict[str, Any]:
    return {"cancel_request": {"watch_id": watch_id}}


PROGRESS: dict[str, Any] = {"progress_request": {}}
BIG = "x" * 800_000

CASES = [
    WatchCase(
        "prefix watch with prev_kv: puts, a delete, a txn in one response",
        (create("{p}/w/", range_end="{p}/w0", prev_kv=True),),
        after=(
            PUT("{p}/w/a", "1"),
            PUT("{p}/w/a", "2"),
            DELETE("{p}/w/a"),
            TXN(success=[op_put("{p}/w/b", "b"), op_put("{p}/w/c", "c")]),
            PUT("{p}/other", "x"),
        ),
    ),
    WatchCase(
        "a past start revision replays the history in one response",
        (create("{p}/k", start_revision="{rev+1}", prev_kv=True),),
        before=(PUT("{p}/k", "1"), PUT("{p}/x", "x"), PUT("{p}/k", "2"), DELETE("{p}/k")),
        after=(PUT("{p}/k", "3"),),
    ),
    WatchCase(
        "a start revision in the future skips what comes before it",
        (create("{p}/k", start_revision="{rev+3}"),),
        after=(PUT("{p}/k", "1"), PUT("{p}/k", "2"), PUT("{p}/k", "3"), PUT("{p}/k", "4")),
    ),
    WatchCase(
        "client-chosen id, progress request, cancel",
        (create("{p}/k", watch_id=7), PROGRESS, cancel(7)),
        after=(PUT("{p}/k", "1"),),
    ),
    WatchCase(
        "a duplicate watch id is refused",
        (create("{p}/a", watch_id=3), create("{p}/b", watch_id=3)),
        after=(PUT("{p}/b", "1"), PUT("{p}/a", "1")),
    ),
    WatchCase(
        "automatic ids count from 0 and skip a client's",
        (create("{p}/a", watch_id=1), create("{p}/a"), create("{p}/a")),
        after=(PUT("{p}/a", "1"),),
    ),
    WatchCase(
        "filters NOPUT and NODELETE",
        (create("{p}/k", filters=["NOPUT"]), create("{p}/k", filters=["NODELETE"])),
        after=(PUT("{p}/k", "1"), DELETE("{p}/k"), PUT("{p}/k", "2")),
    ),
    WatchCase(
        "an empty range is refused",
        (create("{p}/b", range_end="{p}/a"), create("{p}/b", range_end="{p}/b")),
    ),
    WatchCase(
        "a cancel of an unknown id and an empty request are not answered",
        (cancel(5), {}, create("{p}/k")),
        after=(PUT("{p}/k", "1"),),
    ),
    WatchCase(
        "range_end NUL watches every key from key on",
        (create("{p}/m", range_end="\0"),),
        after=(PUT("{p}/z", "1"), PUT("{p}/a", "1"), PUT("{p}/m", "1")),
    ),
    WatchCase(
        "a create without a key watches the smallest key",
        ({"create_request": {}},),
    ),
    WatchCase(
        "a start below the compact revision is cancelled, at it replays",
        (
            create("{p}/k", start_revision="{rev+1}"),
            create("{p}/k", start_revision="{rev+2}"),
        ),
        before=(PUT("{p}/k", "1"), PUT("{p}/k", "2"), PUT("{p}/k", "3"), COMPACT("{rev+2}")),
        after=(PUT("{p}/k", "4"),),
    ),
    WatchCase(
        "a lease revoke deletes its keys in one response",
        (create("{p}/l/", range_end="{p}/l0", prev_kv=True),),
        before=(LeaseCall("LeaseGrant", {"ID": "{lease}", "TTL": 600}),),
        after=(
            PUT("{p}/l/a", "1", lease="{lease}"),
            PUT("{p}/l/b", "2", lease="{lease}"),
            PUT("{p}/l/c", "3"),
            LeaseCall("LeaseRevoke", {"ID": "{lease}"}),
        ),
    ),
    WatchCase(
        "a large replay is fragmented for a fragment watcher only",
        (
            create("{p}/f/", range_end="{p}/f0", start_revision="{rev+1}", fragment=True),
            create("{p}/f/", range_end="{p}/f0", start_revision="{rev+1}"),
        ),
        before=(PUT("{p}/f/1", BIG), PUT("{p}/f/2", BIG), PUT("{p}/f/3", BIG)),
    ),
]


# ---------------------------------------------------------------------------- streams


class Stream:
    """One open Watch stream; ``batch()`` gathers what arrives until it is quiet."""

    def __init__(self) -> None:
        self.inbox: queue.Queue[tuple[float, Any]] = queue.Queue()

    def batch(self) -> list[Any]:
        return [document for _, document in self.timed_batch()]

    def timed_batch(self) -> list[tuple[float, Any]]:
        """What arrives until the stream is quiet, each with its arrival time (monotonic s), for
        checks that must count what came within a window and not what a slow batch gathered."""
        found: list[tuple[float, Any]] = []
        deadline = time.monotonic() + BATCH_WAIT_S
        while time.monotonic() < deadline:
            try:
                found.append(self.inbox.get(timeout=QUIET_S))
            except queue.Empty:
                break
        return found

    def deliver(self, document: Any) -> None:
        self.inbox.put((time.monotonic(), document))

    def close(self) -> None:
        raise NotImplementedError


class GrpcStream(Stream):
    def __init__(self, target: Target, requests: list[rpc_pb2.WatchRequest]) -> None:
        super().__init__()
        self._outbox: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        for request in requests:
            self._outbox.put(request)
        call = target.channel.stream_stream(
            WATCH_PATH,
            request_serializer=rpc_pb2.WatchRequest.SerializeToString,
            response_deserializer=rpc_pb2.WatchResponse.FromString,
        )
        self._call = call(self._requests())
        threading.Thread(target=self._read, daemon=True).start()

    def _requests(self) -> Iterator[rpc_pb2.WatchRequest]:
        while (request := self._outbox.get()) is not None:
            yield request

    def _read(self) -> None:
        try:
            for response in self._call:
                document = json_format.MessageToDict(response, preserving_proto_field_name=True)
                self.deliver(document)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.deliver({"grpc error": error.code().name, "details": error.details()})

    def close(self) -> None:
        self._outbox.put(None)
        self._call.cancel()


class GatewayStream(Stream):
    def __init__(self, target: Target, body: bytes) -> None:
        super().__init__()
        self._connection = http.client.HTTPConnection(target.host, target.port, timeout=30)
        self._connection.request(
            "POST", "/v3/watch", body=body, headers={"Content-Type": "application/json"}
        )
        self._response = self._connection.getresponse()
        self.status = self._response.status
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while line := self._response.readline():
                document = json.loads(line)
                self.deliver(document.get("result", document))
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            # the stream was closed under the reader (http.client is not thread-safe there)
            return

    def close(self) -> None:
        # Shut the socket first: the reader thread holds the response's buffer while it waits
        # in readline, and close() alone would wait for its timeout.
        if self._connection.sock is not None:
            with contextlib.suppress(OSError):
                self._connection.sock.shutdown(socket.SHUT_RDWR)
        self._connection.close()


# ---------------------------------------------------------------------------- running


def open_stream(target: Target, transport: Transport, requests: list[dict[str, Any]]) -> Stream:
    if transport == "grpc":
        messages = []
        for request in requests:
            message = rpc_pb2.WatchRequest()
            json_format.ParseDict(request, message, ignore_unknown_fields=True)
            messages.append(message)
        return GrpcStream(target, messages)
    return GatewayStream(target, b" ".join(json.dumps(r).encode() for r in requests))


def normalized(batch: list[Any], normalizer: Normalizer) -> list[Any]:
    shown = [normalizer.json(document) for document in batch]

    def order(document: Any) -> tuple[str, int]:
        header = document.get("header", {}) if isinstance(document, dict) else {}
        return str(header.get("revision", "")), int(document.get("watch_id", 0))

    return sorted(shown, key=order)


def run_watch_case(
    case: WatchCase, transport: Transport, troika: Target, etcd: Target
) -> list[str]:
    prefix = f"/{transport}/{case.slug}"
    sides = [
        (troika, Normalizer(anchor(troika, transport, case.slug), prefix)),
        (etcd, Normalizer(anchor(etcd, transport, case.slug), prefix)),
    ]
    found: list[str] = []
    lease_id = 0x7A7C_0000 + CASES.index(case) * 2 + TRANSPORTS.index(transport)
    for number, step in enumerate(case.before, start=1):
        left, right = (observe(target, step, normalizer, lease_id) for target, normalizer in sides)
        found += [f"before {number}: {d}" for d in differences(left, right)]
    streams = [
        open_stream(target, transport, [normalizer.fill(r) for r in case.stream])
        for target, normalizer in sides
    ]
    try:
        batches = [stream.batch() for stream in streams]
        found += _compare("opening", batches, sides)
        for number, step in enumerate(case.after, start=1):
            for target, normalizer in sides:
                observe(target, step, normalizer, lease_id)
            batches = [stream.batch() for stream in streams]
            found += _compare(f"after write {number}", batches, sides)
    finally:
        for stream in streams:
            stream.close()
    return found


def _compare(
    where: str, batches: list[list[Any]], sides: list[tuple[Target, Normalizer]]
) -> list[str]:
    troika, etcd = (
        normalized(batch, normalizer) for batch, (_, normalizer) in zip(batches, sides, strict=True)
    )
    return [f"{where}: {difference}" for difference in differences(troika, etcd)]


def parameters() -> Iterator[Any]:
    for case in CASES:
        for transport in TRANSPORTS:
            marks = []
            if transport in case.xfail:
                marks.append(pytest.mark.xfail(strict=True, reason=case.xfail[transport]))
            yield pytest.param(case, transport, id=f"{transport}-{case.slug}", marks=marks)


@pytest.fixture(scope="module")
def targets(
    troika_cluster: TroikaCluster, etcd_cluster: EtcdCluster
) -> Iterator[tuple[Target, Target]]:
    troika = Target("troika", troika_cluster.client_urls[0])
    etcd = Target("etcd", etcd_cluster.client_urls[0])
    yield troika, etcd
    troika.close()
    etcd.close()


def test_case_names_are_unique() -> None:
    slugs = [case.slug for case in CASES]
    assert len(slugs) == len(set(slugs))


@pytest.mark.parametrize(("case", "transport"), list(parameters()))
def test_watch_case(case: WatchCase, transport: Transport, targets: tuple[Target, Target]) -> None:
    found = run_watch_case(case, transport, *targets)
    assert not found, "\n".join(found)


PROGRESS_FLAG = "--experimental-watch-progress-notify-interval=1s"
PROGRESS_OBSERVED_S = 3.6
"""Long enough for three ticks of a 1 s interval with etcd's 10 % jitter (1.1, 2.2, 3.3 s)."""


def test_progress_notify_every_interval_on_both(tmp_path_factory: pytest.TempPathFactory) -> None:
    """With the interval at 1 s on both, an idle ``progress_notify`` watcher hears of the
    revision about once a second (``watch_id`` 0, the current revision, nothing else) and a
    watcher without it never does; after an event, the next tick is skipped. Ticks are timed by
    each server, so the comparison is of their content and number, not of batches."""
    if not etcd_available():
        pytest.skip("etcd is not installed")
    root = tmp_path_factory.mktemp("progress")
    with (
        TroikaCluster(1, root / "troika", extra_flags=[PROGRESS_FLAG]) as troika_cluster,
        EtcdCluster(1, root / "etcd", extra_flags=[PROGRESS_FLAG]) as etcd_cluster,
    ):
        seen = []
        for cluster in (troika_cluster, etcd_cluster):
            target = Target(cluster.system, cluster.client_urls[0])
            normalizer = Normalizer(anchor(target, "grpc", "progress"), "/progress")
            requests = [create("/progress/k", progress_notify=True), create("/progress/j")]
            stream = open_stream(target, "grpc", [normalizer.fill(r) for r in requests])
            time.sleep(PROGRESS_OBSERVED_S)
            idle = normalized(stream.batch(), normalizer)
            busy_from = time.monotonic()
            target.put("/progress/k", "v")
            time.sleep(1.0)
            target.put("/progress/j", "v")  # an event for the other watcher only
            time.sleep(PROGRESS_OBSERVED_S - 1.0)
            busy_until = busy_from + PROGRESS_OBSERVED_S  # fixed, however long the puts took
            arrived = stream.timed_batch()
            busy = normalized([d for t, d in arrived if busy_from <= t < busy_until], normalizer)
            stream.close()
            target.close()
            seen.append((cluster.system, idle, busy))
    for system, idle, busy in seen:
        progress = [r for r in idle if not r.get("created")]
        assert 3 <= len(progress) <= 4, (system, idle)
        assert all(r == progress[0] for r in progress), (system, idle)
        assert "watch_id" not in progress[0] and "events" not in progress[0]
        assert progress[0]["header"]["revision"] == "B+0"
        ticks = [r for r in busy if "events" not in r]
        assert 2 <= len(ticks) <= 3, (system, busy)  # one of ~3 ticks skipped after the put
    (_, troika_idle, _), (_, etcd_idle, _) = seen
    assert differences(troika_idle[:3], etcd_idle[:3]) == []
