"""v3 watch fan-out: N watchers of one prefix over gRPC Watch streams, events delivered per second.

Theory of operation
-------------------

Workloads (``connections`` is the number of watchers):

``v3-watch``
    Watchers multiplexed as etcd's clientv3 does: one connection and one Watch stream per
    member, every watcher a create request on it (watcher ``i`` on member ``i mod size``).
``v3-watch-streams``
    One Watch stream per watcher (watcher ``i`` on member ``i mod size``), up to
    ``STREAMS_PER_CONNECTION`` streams per HTTP/2 connection.

A put of ``<prefix>/start`` gives revision ``R``; every watcher is created on
``<prefix>/`` from ``R + 1`` with a client-chosen ``watch_id`` (etcd 3.4), and writing starts
once every watcher is acknowledged ``created``. ``writers`` closed-loop workers then put new
keys ``<prefix>/<sequence>`` on the leader through warm-up and the measured window; then
writing stops and every watcher must reach the last revision written (the drain, bounded by
``drain_timeout_s``).

Nothing else writes during a sample, so every revision after ``R`` is one put under the
prefix: each watcher must see revisions ``R+1, R+2, ...`` in order, each once. A response
whose first event is not the watcher's next revision counts a ``gap`` or a ``repeat`` (the
watcher then follows the revisions it was sent); a watcher short of the last revision after
the drain counts its missing events as ``not delivered``; a watcher cancelled by the server
is an error.

Figures: events received in the window over the window (``ops_per_s``: deliveries per
second), the write rate, the drain time, and latency from a put's send to a watcher's receipt
of the response carrying it (for the first event of each response, which is most of them).
The client's CPU in the window, per delivered event, is in the result: the load generator
runs on the same machine and must cost well under the server's share.

The client is ``bench.grpc_lite``: raw HTTP/2 frames, each response decoded once with the
C protobuf (upb), only the first and last event's revisions read.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import trio

from bench.grpc_lite import LiteConnection, LiteRpcError
from bench.loadgen import VALUE_ALPHABET, LatencySummary, LoadResult, split_endpoint
from net.etcdpb import rpc_pb2
from net.etcdpb.routes import grpc_path

WatchMode = Literal["mux", "streams"]
WATCH_WORKLOADS: Final[dict[str, WatchMode]] = {"v3-watch": "mux", "v3-watch-streams": "streams"}
STREAMS_PER_CONNECTION: Final = 100
"""Watch streams per HTTP/2 connection when each watcher has its own (troika allows 1000)."""
CREATE_TIMEOUT_S: Final = 120.0
"""How long every watcher may take to be acknowledged."""
WRITE_TIMEOUT_S: Final = 10.0
WATCHERS_MAX: Final = 100_000
ERROR_KINDS_MAX: Final = 16
LATENCY_SAMPLE_EVERY: Final = 10
"""Latency is taken for watchers 0, 10, 20, ... (every member's, since 10 mod 3 != 0): a
clock read per response costs as much as the rest of the bookkeeping."""
DRAIN_POLL_S: Final = 0.01

PUT_PATH: Final = grpc_path("KV", "Put")
WATCH_PATH: Final = grpc_path("Watch", "Watch")


@dataclass(frozen=True)
class WatchV3Spec:
    """Who watches how, who writes, and for how long."""

    leader: str
    endpoints: Sequence[str]
    watchers: int = 100
    mode: WatchMode = "mux"
    writers: int = 16
    """Puts in flight."""
    duration_s: float = 5.0
    warmup_s: float = 1.0
    drain_timeout_s: float = 60.0
    key_size: int = 8
    value_size: int = 256
    prefix: str = "benchwatch"
    seed: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.watchers <= WATCHERS_MAX or self.writers < 1:
            raise ValueError(f"watchers within 1..{WATCHERS_MAX}, writers at least 1")
        if self.mode not in ("mux", "streams"):
            raise ValueError("mode is mux or streams")
        if not self.endpoints:
            raise ValueError("at least one endpoint to watch on")
        if not self.prefix.isalnum():
            raise ValueError("prefix must be a non-empty alphanumeric path segment")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("duration_s must be positive and warmup_s not negative")

    @property
    def workload(self) -> str:
        return "v3-watch" if self.mode == "mux" else "v3-watch-streams"


def placement(spec: WatchV3Spec) -> list[list[list[int]]]:
    """Watchers by member, connection and stream: ``[member][connection][stream]`` lists the
    watcher ids each stream carries."""
    members = len(spec.endpoints)
    layout: list[list[list[int]]] = []
    for member in range(members):
        mine = list(range(member, spec.watchers, members))
        if not mine:
            layout.append([])
        elif spec.mode == "mux":
            layout.append([mine])
        else:
            layout.append(
                [
                    mine[start : start + STREAMS_PER_CONNECTION]
                    for start in range(0, len(mine), STREAMS_PER_CONNECTION)
                ]
            )
    return layout


def create_request(spec: WatchV3Spec, watch_id: int, start_revision: int) -> bytes:
    """A watcher of the whole prefix from ``start_revision``, with its id."""
    key = f"{spec.prefix}/".encode()
    request = rpc_pb2.WatchRequest(
        create_request=rpc_pb2.WatchCreateRequest(
            key=key, range_end=key[:-1] + b"0", start_revision=start_revision, watch_id=watch_id
        )
    )
    return request.SerializeToString()


@dataclass
class Tally:
    """What every watcher saw, filled by the stream handlers (the hot path)."""

    watchers: int
    start_revision: int = 0
    window_start_ns: int = 0
    window_end_ns: int = 0
    sent_ns: list[int] = field(default_factory=list)
    """When put number ``n`` (key ``<prefix>/<n>``) was sent."""
    last_revision: list[int] = field(default_factory=list)
    created: int = 0
    delivered: int = 0
    """Events received by all watchers so far."""
    delivered_at: list[int] = field(default_factory=lambda: [0, 0])
    """``delivered`` at the window's start and end (read there by a timer, not per event)."""
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    errors: dict[str, int] = field(default_factory=dict)
    closing: bool = False
    """Set when the sample ends: streams closing then are not errors."""
    streams: int = 0
    streams_ended: int = 0
    all_created: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self.last_revision = [0] * self.watchers

    def error(self, description: str, count: int = 1) -> None:
        if description not in self.errors and len(self.errors) >= ERROR_KINDS_MAX:
            description = "other"
        self.errors[description] = self.errors.get(description, 0) + count

    def behind(self, revision: int) -> int:
        """Watchers that have not reached ``revision``."""
        return sum(1 for last in self.last_revision if last < revision)

    @property
    def window_events(self) -> int:
        return self.delivered_at[1] - self.delivered_at[0]


class WatchHandler:
    """One Watch stream's responses: counts, order checks, sampled latency."""

    def __init__(self, tally: Tally, prefix_bytes: int) -> None:
        self.tally = tally
        self.prefix_bytes = prefix_bytes
        self.ended: LiteRpcError | None = None

    def on_message(self, data: memoryview) -> None:
        """The hot path: one decode, the first (and last) event's revision, a counter."""
        response = rpc_pb2.WatchResponse.FromString(data)  # type: ignore[arg-type]  # any buffer
        events = response.events
        if not events:
            self._control(response)
            return
        tally = self.tally
        last_revision = tally.last_revision
        watcher = response.watch_id
        count = len(events)
        first = events[0].kv
        revision = first.mod_revision
        expected = last_revision[watcher] + 1
        if revision != expected:
            tally.error("gap" if revision > expected else "repeat")
        last_revision[watcher] = revision if count == 1 else events[count - 1].kv.mod_revision
        tally.delivered += count
        if watcher % LATENCY_SAMPLE_EVERY == 0:
            now = time.perf_counter_ns()
            if tally.window_start_ns <= now < tally.window_end_ns:
                sequence = int(first.key[self.prefix_bytes :])
                if sequence < len(tally.sent_ns):
                    tally.latencies_ns.append(now - tally.sent_ns[sequence])

    def _control(self, response: rpc_pb2.WatchResponse) -> None:
        tally = self.tally
        if response.created and not response.canceled:
            tally.last_revision[response.watch_id] = tally.start_revision - 1
            tally.created += 1
            if tally.created == tally.watchers:
                tally.all_created.set()
        elif response.canceled:
            reason = response.cancel_reason or f"compact_revision {response.compact_revision}"
            tally.error(f"watcher cancelled: {reason[:80]}")

    def on_end(self, error: LiteRpcError | None) -> None:
        if self.tally.closing:
            return
        self.ended = error or LiteRpcError(0, "stream ended")
        tally = self.tally
        tally.error(f"watch stream ended: {self.ended.message[:80]}")
        tally.streams_ended += 1
        if tally.streams_ended == tally.streams:
            tally.all_created.set()  # no more acknowledgements can come


async def _put(
    connection: LiteConnection, key: bytes, value: bytes, timeout_s: float | None = WRITE_TIMEOUT_S
) -> int:
    """One put; the revision it made."""
    request = rpc_pb2.PutRequest(key=key, value=value).SerializeToString()
    answer = await connection.unary(PUT_PATH, request, timeout_s)
    return rpc_pb2.PutResponse.FromString(answer).header.revision


@dataclass
class _Writers:
    spec: WatchV3Spec
    connection: LiteConnection
    tally: Tally
    value: bytes
    puts: int = 0
    window_puts: int = 0
    last_revision: int = 0

    async def run(self, stop_ns: int) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.spec.writers):
                nursery.start_soon(self._worker, stop_ns)

    async def _worker(self, stop_ns: int) -> None:
        """Closed loop until ``stop_ns``; a put still unanswered ``WRITE_TIMEOUT_S`` after
        it is abandoned (one deadline for the loop: one per put costs more than the put)."""
        tally = self.tally
        prefix = self.spec.prefix.encode() + b"/"
        width = self.spec.key_size
        value = self.value
        connection = self.connection
        with trio.move_on_at(trio.current_time() + (stop_ns - time.perf_counter_ns()) / 1e9
                             + WRITE_TIMEOUT_S):  # fmt: skip
            while (started := time.perf_counter_ns()) < stop_ns:
                sequence = len(tally.sent_ns)
                tally.sent_ns.append(started)
                key = prefix + str(sequence).zfill(width).encode()
                try:
                    revision = await _put(connection, key, value, None)
                except LiteRpcError as error:
                    tally.error(f"put: {error.message[:80]}")
                    await trio.sleep(0.05)
                    continue
                self.puts += 1
                if tally.window_start_ns <= started < tally.window_end_ns:
                    self.window_puts += 1
                self.last_revision = max(self.last_revision, revision)


async def _open(nursery: trio.Nursery, endpoint: str) -> LiteConnection:
    host, port = split_endpoint(endpoint)
    connection = LiteConnection(host, port)
    await nursery.start(connection.run)
    return connection


async def _create_watchers(
    spec: WatchV3Spec, nursery: trio.Nursery, tally: Tally
) -> list[WatchHandler]:
    """Open every stream and send every create request (acknowledgements come later)."""
    handlers = []
    prefix_bytes = len(spec.prefix) + 1
    for member, connections in enumerate(placement(spec)):
        for streams in connections:
            connection = await _open(nursery, spec.endpoints[member])
            if spec.mode == "mux":
                groups = [streams]
            else:
                groups = [[watcher] for watcher in streams]
            for group in groups:
                handler = WatchHandler(tally, prefix_bytes)
                tally.streams += 1
                stream_id = connection.open_stream(WATCH_PATH, handler.on_message, handler.on_end)
                handlers.append(handler)
                for watcher in group:
                    request = create_request(spec, watcher, tally.start_revision)
                    await connection.send(stream_id, request)
    return handlers


async def run_watch_v3(spec: WatchV3Spec) -> LoadResult:
    """Create the watchers, write through warm-up and window, drain: the result."""
    chooser_value = "".join(VALUE_ALPHABET[(spec.seed + n) % len(VALUE_ALPHABET)]
                            for n in range(spec.value_size)).encode()  # fmt: skip
    tally = Tally(spec.watchers)
    detail: dict[str, float] = {}
    cpu_s = [0.0, 0.0]
    async with trio.open_nursery() as nursery:
        writer = await _open(nursery, spec.leader)
        start = await _put(writer, f"{spec.prefix}/start".encode(), b"start")
        tally.start_revision = start + 1
        began = time.perf_counter()
        await _create_watchers(spec, nursery, tally)
        with trio.move_on_after(CREATE_TIMEOUT_S):
            await tally.all_created.wait()
        detail["create_s"] = round(time.perf_counter() - began, 3)
        writers = _Writers(spec, writer, tally, chooser_value)
        if tally.created < spec.watchers:
            tally.error("not created", spec.watchers - tally.created)
            tally.closing = True
            nursery.cancel_scope.cancel()
            return _result(spec, tally, 0.0, detail)
        now = time.perf_counter_ns()
        tally.window_start_ns = now + int(spec.warmup_s * 1e9)
        tally.window_end_ns = tally.window_start_ns + int(spec.duration_s * 1e9)
        async with trio.open_nursery() as timing:
            timing.start_soon(_snapshot_at, tally.window_start_ns, tally, cpu_s, 0)
            timing.start_soon(_snapshot_at, tally.window_end_ns, tally, cpu_s, 1)
            await writers.run(tally.window_end_ns)
        drained = time.perf_counter()
        with trio.move_on_after(spec.drain_timeout_s):
            while tally.behind(writers.last_revision) and tally.streams_ended < tally.streams:
                await trio.sleep(DRAIN_POLL_S)
        detail["drain_s"] = round(time.perf_counter() - drained, 3)
        tally.closing = True
        nursery.cancel_scope.cancel()
    missing = sum(max(0, writers.last_revision - max(last, start)) for last in tally.last_revision)
    if missing:
        tally.error("not delivered", missing)
    detail["writes_per_s"] = round(writers.window_puts / spec.duration_s, 1)
    detail["puts"] = writers.puts
    detail["last_revision"] = writers.last_revision
    detail["events_total"] = tally.delivered
    return _result(spec, tally, cpu_s[1] - cpu_s[0], detail)


async def _snapshot_at(at_ns: int, tally: Tally, cpu_s: list[float], slot: int) -> None:
    """At the window's start or end: this process's CPU time and the events delivered."""
    await trio.sleep(max(0.0, (at_ns - time.perf_counter_ns()) / 1e9))
    cpu_s[slot] = time.process_time()
    tally.delivered_at[slot] = tally.delivered


def _result(
    spec: WatchV3Spec, tally: Tally, client_cpu_s: float, detail: dict[str, float]
) -> LoadResult:
    latency = LatencySummary.of(tally.latencies_ns)
    events = tally.window_events
    detail["client_cpu_s"] = round(client_cpu_s, 3)
    return LoadResult(
        workload=spec.workload,
        endpoint=spec.leader,
        connections=spec.watchers,
        duration_s=spec.duration_s,
        requests=events,
        errors=sum(tally.errors.values()),
        error_kinds=dict(sorted(tally.errors.items())),
        ops_per_s=events / spec.duration_s,
        latency=latency,
        by_kind={"delivery": latency},
        client_cpu_percent=round(100.0 * client_cpu_s / spec.duration_s, 1),
        key_size=spec.key_size,
        value_size=spec.value_size,
        client_cpu_us_per_op=round(1e6 * client_cpu_s / events, 2) if events else 0.0,
        detail=detail,
    )
