"""Watch fan-out: N v2 watchers on one prefix, M writes, and how fast each write reaches each.

Theory of operation
-------------------

Every watcher holds its own keep-alive connection and long-polls
``GET /v2/keys/<prefix>?wait=true&recursive=true&waitIndex=<next>``, asking each time for the
event after the last one it saw, as etcdctl's ``watch --forever`` does. Watchers are spread
over the cluster's members (watcher ``i`` on member ``i mod size``), so a follower's apply
path is measured too. A first write fixes the index the watchers start from; then, with every
watcher's first poll in place, one writer puts ``M`` keys one after another on the leader.

A delivery is one watcher receiving one write's event. Its latency runs from just before the
write's first byte was sent to just after the watcher read the event: replication, apply,
waking the watcher and, when writes come faster than a watcher re-polls, the event's wait in
the server's history. The result counts deliveries against the ``N * M`` expected, and a
watcher that falls more than the history's 1,000 events behind (error 401) counts as an error
and stops.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from bench.loadgen import (
    Connection,
    ConnectionClosed,
    LatencySummary,
    LoadResult,
    LoadSpec,
    Requests,
    split_endpoint,
)

WATCH_SETTLE_S = 0.5
"""How long the writer waits after the watchers' first polls are sent."""
EVENTS_PER_WATCHER_MAX = 100_000


@dataclass(frozen=True)
class WatchSpec:
    """Who watches, what is written, and how long to wait for the last delivery."""

    leader: str
    endpoints: Sequence[str]
    watchers: int = 16
    writes: int = 200
    value_size: int = 256
    key_size: int = 8
    prefix: str = "benchwatch"
    timeout_s: float = 60.0
    seed: int = 1

    def __post_init__(self) -> None:
        if self.watchers < 1 or not 1 <= self.writes <= EVENTS_PER_WATCHER_MAX:
            raise ValueError(f"watchers must be >= 1 and writes within 1..{EVENTS_PER_WATCHER_MAX}")
        if not self.endpoints:
            raise ValueError("at least one endpoint to watch on")
        if not self.prefix.isalnum():
            raise ValueError("prefix must be a non-empty alphanumeric path segment")


@dataclass
class _Deliveries:
    """Write send times and watcher receive times, filled by every task."""

    sent_ns: dict[str, int] = field(default_factory=dict)
    latencies_ns: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    first_sent_ns: int = 0
    last_received_ns: int = 0

    def error(self, description: str) -> None:
        self.errors[description] = self.errors.get(description, 0) + 1


def _watch_request(host_header: str, prefix: str, wait_index: int) -> bytes:
    return (
        f"GET /v2/keys/{prefix}?wait=true&recursive=true&waitIndex={wait_index} HTTP/1.1\r\n"
        f"Host: {host_header}\r\n\r\n"
    ).encode()


def _host_header(endpoint: str) -> str:
    host, port = split_endpoint(endpoint)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _watcher(
    spec: WatchSpec, endpoint: str, start_index: int, deliveries: _Deliveries, ready: trio.Event
) -> None:
    """Long-poll until every write was seen (or the run's deadline cancels us)."""
    host, port = split_endpoint(endpoint)
    header = _host_header(endpoint)
    connection = Connection(host, port)
    await connection.open()
    next_index = start_index
    seen = 0
    try:
        while seen < spec.writes:
            request = _watch_request(header, spec.prefix, next_index)
            if not ready.is_set():
                ready.set()
            try:
                status, _, body = await connection.exchange(request)
            except (OSError, ConnectionClosed) as error:
                deliveries.error(f"watch connection: {type(error).__name__}")
                return
            received_ns = time.perf_counter_ns()
            if status != 200:
                deliveries.error(f"watch http {status}")
                return
            node = json.loads(body)["node"]
            next_index = int(node["modifiedIndex"]) + 1
            sent_ns = deliveries.sent_ns.get(node["key"])
            if sent_ns is not None:
                deliveries.latencies_ns.append(received_ns - sent_ns)
                deliveries.last_received_ns = max(deliveries.last_received_ns, received_ns)
                seen += 1
    finally:
        connection.close()


async def _write(connection: Connection, request: bytes) -> int:
    """One write; its ``X-Etcd-Index``.

    Raises:
        RuntimeError: the write was refused.
    """
    status, head, body = await connection.exchange(request)
    if not 200 <= status < 300:
        raise RuntimeError(f"a watch benchmark write answered {status}: {body[:200]!r}")
    lower = head.lower()
    start = lower.find(b"\r\nx-etcd-index:")
    stop = lower.find(b"\r\n", start + 2)
    return int(lower[start + 15 : stop if stop >= 0 else len(lower)])


async def _writer(
    spec: WatchSpec, requests: Requests, connection: Connection, deliveries: _Deliveries
) -> None:
    """Put every key once, in order, recording when each was sent."""
    deliveries.first_sent_ns = time.perf_counter_ns()
    for number in range(spec.writes):
        key = requests.key(number)
        deliveries.sent_ns[f"/{spec.prefix}/{key.decode()}"] = time.perf_counter_ns()
        await _write(connection, requests.put(key))


async def run_watch(spec: WatchSpec) -> LoadResult:
    """Run the fan-out and summarise it as a load result (deliveries are the operations)."""
    requests = Requests(
        LoadSpec(
            endpoint=spec.leader,
            key_size=spec.key_size,
            value_size=spec.value_size,
            prefix=spec.prefix,
            seed=spec.seed,
        )
    )
    host, port = split_endpoint(spec.leader)
    writer = Connection(host, port)
    await writer.open()
    deliveries = _Deliveries()
    cpu_started_s = time.process_time()
    try:
        start_index = await _write(writer, requests.put(b"start")) + 1
        with trio.move_on_after(spec.timeout_s):
            async with trio.open_nursery() as nursery:
                readies = []
                for index in range(spec.watchers):
                    ready = trio.Event()
                    readies.append(ready)
                    endpoint = spec.endpoints[index % len(spec.endpoints)]
                    nursery.start_soon(_watcher, spec, endpoint, start_index, deliveries, ready)
                for ready in readies:
                    await ready.wait()
                await trio.sleep(WATCH_SETTLE_S)
                cpu_started_s = time.process_time()
                await _writer(spec, requests, writer, deliveries)
    finally:
        writer.close()
    return _summarise(spec, deliveries, time.process_time() - cpu_started_s)


def _summarise(spec: WatchSpec, deliveries: _Deliveries, client_cpu_s: float) -> LoadResult:
    expected = spec.watchers * spec.writes
    missing = expected - len(deliveries.latencies_ns)
    errors = dict(deliveries.errors)
    if missing:
        errors["not delivered"] = missing
    span_s = max(deliveries.last_received_ns - deliveries.first_sent_ns, 1) / 1e9
    latency = LatencySummary.of(deliveries.latencies_ns)
    return LoadResult(
        workload="watch",
        endpoint=spec.leader,
        connections=spec.watchers,
        duration_s=round(span_s, 3),
        requests=len(deliveries.latencies_ns),
        errors=sum(errors.values()),
        error_kinds=errors,
        ops_per_s=len(deliveries.latencies_ns) / span_s,
        latency=latency,
        by_kind={"delivery": latency},
        client_cpu_percent=round(100.0 * client_cpu_s / span_s, 1),
        key_size=spec.key_size,
        value_size=spec.value_size,
    )
