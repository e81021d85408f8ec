"""A load generator for the etcd v2 keys API: the same load against troika and etcd.

Theory of operation
-------------------

``C`` connections, each one Trio task with its own keep-alive HTTP/1.1 socket, run a closed
loop: send one request, read its whole response, record the latency, send the next. Nothing
is pipelined, so ``C`` is also the number of requests in flight. The load starts with a
warm-up (not recorded), then a measured window of ``duration_s``; a request counts when it
completes inside the window. Throughput is completed requests over the window; latency is per
request, from just before its first byte is sent to just after the last byte of its response
is read (``time.perf_counter_ns``).

Written to cost the client as little as possible, so that it is not what is measured:
requests are bytes assembled from pre-encoded pieces (a GET of a preloaded key is one
pre-built bytes object), sockets are raw ``trio.socket`` sockets with ``TCP_NODELAY``, and the
response parser only finds the end of the headers, the status and the body length
(``Content-Length``, or ``Transfer-Encoding: chunked`` on a slower path). ``ceiling`` runs
the same client against a trivial server (``serve_trivial``, a separate process answering
every request with one fixed 200) and so measures the client's own maximum; every result also
reports the client's CPU use, so a run at 100 % of a core says the client was the limit.

Workloads (request shapes as etcdctl sends them: the value in a form body):

=====================  ==========================================================================
``put``                ``PUT /v2/keys/<prefix>/<key>`` with ``value=<value>``; keys random in
                       ``key_space`` or sequential (each request a new key)
``get-linearizable``   ``GET ...?quorum=true`` of a random key among ``read_keys`` preloaded keys
``get-serializable``   ``GET`` (a local read) of a random preloaded key
``cas``                each connection owns a key and swaps it with ``?prevIndex=<its index>``
``mixed``              ``read_fraction`` reads (``read_consistency`` l or s), the rest puts,
                       all on the preloaded keys
=====================  ==========================================================================

Command line::

    python -m bench.loadgen run --endpoint http://127.0.0.1:2379 --workload put -c 16 -d 10
    python -m bench.loadgen ceiling -c 1 16 64        # the client's own maximum
    python -m bench.loadgen trivial-server --port 0   # the trivial server alone
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import socket
import string
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import trio

Workload = Literal[
    "put", "get-linearizable", "get-serializable", "cas", "mixed",
    "v3-put", "v3-range", "v3-range-serializable", "v3-txn",
    "v3-put-gw", "v3-range-gw", "v3-range-serializable-gw", "v3-txn-gw",
]  # fmt: skip
V2_WORKLOADS: tuple[Workload, ...] = (
    "put", "get-linearizable", "get-serializable", "cas", "mixed"
)  # fmt: skip
V3_OPERATIONS: tuple[Workload, ...] = ("v3-put", "v3-range", "v3-range-serializable", "v3-txn")
"""The v3 workloads over gRPC (``bench.loadgen_v3``); ``-gw`` names the same over the gateway."""
V3_WORKLOADS: tuple[Workload, ...] = (
    *V3_OPERATIONS, "v3-put-gw", "v3-range-gw", "v3-range-serializable-gw", "v3-txn-gw"
)  # fmt: skip
WORKLOADS: tuple[Workload, ...] = (*V2_WORKLOADS, *V3_WORKLOADS)

RECEIVE_BYTES_MAX = 65536
RESPONSE_HEADER_BYTES_MAX = 64 << 10
RESPONSE_BODY_BYTES_MAX = 16 << 20
RECONNECT_DELAY_S = 0.05
"""A connection that failed waits this long before it dials again."""
STOP_GRACE_S = 10.0
"""How long after the window a request still in flight may take before it is abandoned."""
PRELOAD_CONNECTIONS_MAX = 16
ERROR_KINDS_MAX = 32
"""Distinct error descriptions kept; the rest are counted as ``other``."""
CEILING_CPU_BUSY_PERCENT = 90.0
TRIVIAL_SERVER_START_TIMEOUT_S = 10.0
NS_PER_MS = 1_000_000
VALUE_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class LoadSpec:
    """What to send, how hard and for how long."""

    endpoint: str
    workload: Workload = "put"
    connections: int = 16
    duration_s: float = 10.0
    warmup_s: float = 2.0
    key_size: int = 8
    value_size: int = 256
    sequential_keys: bool = False
    key_space: int = 100_000
    """Distinct keys of random puts."""
    read_keys: int = 1000
    """Keys written before a get, cas or mixed run starts; reads pick among them."""
    read_fraction: float = 0.9
    read_consistency: Literal["l", "s"] = "s"
    prefix: str = "bench"
    seed: int = 1
    preload: bool = True
    """False: the read keys are written already (a caller that runs several loads at once
    writes them first, so that every load's window starts after the same warm-up)."""

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS:
            raise ValueError(f"unknown workload {self.workload!r}; one of {WORKLOADS}")
        if self.connections < 1:
            raise ValueError("connections must be at least 1")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("duration_s must be positive and warmup_s not negative")
        if self.key_size < 1 or self.value_size < 0:
            raise ValueError("key_size must be at least 1 and value_size not negative")
        if self.key_space < 1 or self.read_keys < 1:
            raise ValueError("key_space and read_keys must be at least 1")
        if not 0.0 <= self.read_fraction <= 1.0:
            raise ValueError("read_fraction must be within [0, 1]")
        if self.read_consistency not in ("l", "s"):
            raise ValueError("read_consistency is l (linearizable) or s (serializable)")
        if not self.prefix or not self.prefix.isalnum():
            raise ValueError("prefix must be a non-empty alphanumeric path segment")


@dataclass(frozen=True)
class LatencySummary:
    """Latency percentiles of a set of requests, in milliseconds (nearest rank)."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @staticmethod
    def of(latencies_ns: Sequence[int]) -> LatencySummary:
        """Summarise ``latencies_ns``; all zeros when there are none."""
        if not latencies_ns:
            return LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        ordered = sorted(latencies_ns)

        def rank(fraction: float) -> float:
            index = max(0, math.ceil(fraction * len(ordered)) - 1)
            return ordered[index] / NS_PER_MS

        mean = sum(ordered) / len(ordered) / NS_PER_MS
        return LatencySummary(
            len(ordered), rank(0.50), rank(0.90), rank(0.99), ordered[-1] / NS_PER_MS, mean
        )


@dataclass(frozen=True)
class LoadResult:
    """One measured run."""

    workload: str
    endpoint: str
    connections: int
    duration_s: float
    requests: int
    """Requests answered as the workload expects (2xx) within the window."""
    errors: int
    error_kinds: dict[str, int]
    ops_per_s: float
    latency: LatencySummary
    by_kind: dict[str, LatencySummary]
    """Latency of reads and writes apart (mixed), or of the one kind."""
    client_cpu_percent: float
    """CPU time this process used during the window, as a percentage of one core."""
    key_size: int
    value_size: int
    client_cpu_us_per_op: float = 0.0
    """The client's CPU microseconds per operation in the window (0 when not measured)."""
    detail: dict[str, float] = field(default_factory=dict)
    """Figures particular to a workload (the watch's write rate, drain time, ...)."""


class ConnectionClosed(Exception):
    """The server closed the connection, or sent something we cannot read."""


# -- the client connection ----------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection that exchanges one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._socket: trio.socket.SocketType | None = None
        self._buffer = bytearray()

    async def open(self) -> None:
        """Dial (closing any earlier socket)."""
        self.close()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await sock.connect((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        self._buffer = bytearray()

    @property
    def connected(self) -> bool:
        """The socket is open (it closes on any failure, or when the server says close)."""
        return self._socket is not None

    def close(self) -> None:
        """Close the socket, if open."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def exchange(self, request: bytes) -> tuple[int, bytes, bytes]:
        """Send ``request``, read its response: status, header block, body.

        Raises:
            ConnectionClosed: the server closed or answered something unreadable.
            OSError: the socket failed.
        """
        sock = self._socket
        if sock is None:
            raise ConnectionClosed("not connected")
        sent = await sock.send(request)
        while sent < len(request):
            sent += await sock.send(request[sent:])
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(buffer) > RESPONSE_HEADER_BYTES_MAX:
                raise ConnectionClosed("response headers too large")
            data = await sock.recv(RECEIVE_BYTES_MAX)
            if not data:
                raise ConnectionClosed("closed before a response")
            buffer += data
            end = buffer.find(b"\r\n\r\n", max(0, len(buffer) - len(data) - 3))
        head = bytes(buffer[:end])
        if not head.startswith(b"HTTP/1.") or len(head) < 12:
            raise ConnectionClosed(f"not an HTTP response: {head[:40]!r}")
        status = int(head[9:12])
        lower = head.lower()
        start = lower.find(b"\r\ncontent-length:")
        if start >= 0:
            stop = lower.find(b"\r\n", start + 2)
            length = int(lower[start + 17 : stop if stop >= 0 else len(lower)])
            body = await self._read_exact(end + 4, length)
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await self._read_chunked(end + 4)
        else:
            raise ConnectionClosed("a response without Content-Length or chunked body")
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, head, body

    async def _fill(self, size: int) -> None:
        sock = self._socket
        assert sock is not None
        while len(self._buffer) < size:
            data = await sock.recv(RECEIVE_BYTES_MAX)
            if not data:
                raise ConnectionClosed("closed inside a response")
            self._buffer += data

    async def _read_exact(self, start: int, length: int) -> bytes:
        if length > RESPONSE_BODY_BYTES_MAX:
            raise ConnectionClosed("response body too large")
        await self._fill(start + length)
        body = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        return body

    async def _read_chunked(self, start: int) -> bytes:
        del self._buffer[:start]
        body = bytearray()
        while True:
            line_end = self._buffer.find(b"\r\n")
            while line_end < 0:
                await self._fill(len(self._buffer) + 1)
                line_end = self._buffer.find(b"\r\n")
            size = int(bytes(self._buffer[:line_end]).split(b";")[0], 16)
            if len(body) + size > RESPONSE_BODY_BYTES_MAX:
                raise ConnectionClosed("response body too large")
            await self._fill(line_end + 2 + size + 2)
            body += self._buffer[line_end + 2 : line_end + 2 + size]
            del self._buffer[: line_end + 2 + size + 2]
            if size == 0:
                return bytes(body)  # trailers are not used by the servers we measure


# -- requests -----------------------------------------------------------------------------------


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``http://host:port`` as (host, port)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"not an http:// endpoint: {endpoint!r}")
    return parts.hostname, parts.port or 80


class Requests:
    """Pre-encoded request pieces for one spec."""

    def __init__(self, spec: LoadSpec) -> None:
        host, port = split_endpoint(spec.endpoint)
        self.spec = spec
        host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        value_random = random.Random(spec.seed)
        value = "".join(value_random.choice(VALUE_ALPHABET) for _ in range(spec.value_size))
        self.body = f"value={value}".encode()
        self.put_start = f"PUT /v2/keys/{spec.prefix}/".encode()
        self.put_rest = (
            f" HTTP/1.1\r\nHost: {host_header}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        ).encode() + self.body
        self.get_start = f"GET /v2/keys/{spec.prefix}/".encode()
        self.get_rest = f" HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode()
        self.key_space = min(spec.key_space, 10**spec.key_size)
        self.read_key_names = [self.key(n) for n in range(min(spec.read_keys, self.key_space))]
        self.get_local = [self.get(key, quorum=False) for key in self.read_key_names]
        self.get_quorum = [self.get(key, quorum=True) for key in self.read_key_names]
        self.put_read_keys = [self.put(key) for key in self.read_key_names]

    def key(self, number: int) -> bytes:
        """Key ``number`` as ``key_size`` digits (its last ones when it has more)."""
        size = self.spec.key_size
        return f"{number:0{size}d}"[-size:].encode()

    def put(self, key: bytes, query: bytes = b"") -> bytes:
        """A PUT of the spec's value to ``key``."""
        return self.put_start + key + query + self.put_rest

    def get(self, key: bytes, *, quorum: bool) -> bytes:
        """A GET of ``key``, linearizable when ``quorum``."""
        return self.get_start + key + (b"?quorum=true" if quorum else b"") + self.get_rest


def etcd_index(head: bytes) -> int:
    """The ``X-Etcd-Index`` header of a response's header block (0 when absent)."""
    lower = head.lower()
    start = lower.find(b"\r\nx-etcd-index:")
    if start < 0:
        return 0
    stop = lower.find(b"\r\n", start + 2)
    return int(lower[start + 15 : stop if stop >= 0 else len(lower)])


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Latencies and errors of the whole run, filled by every connection task."""

    window_start_ns: int
    window_end_ns: int
    latencies_ns: dict[str, array[int]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def record(self, kind: str, started_ns: int, finished_ns: int) -> None:
        if self.window_start_ns <= started_ns and finished_ns <= self.window_end_ns:
            samples = self.latencies_ns.get(kind)
            if samples is None:
                samples = self.latencies_ns[kind] = array("q")
            samples.append(finished_ns - started_ns)

    def error(self, description: str, at_ns: int) -> None:
        if self.window_start_ns <= at_ns <= self.window_end_ns:
            if description not in self.errors and len(self.errors) >= ERROR_KINDS_MAX:
                description = "other"
            self.errors[description] = self.errors.get(description, 0) + 1


RequestMaker = Callable[[], tuple[str, bytes]]
"""Gives the next request of a connection: its kind (read or write) and its bytes."""


def request_maker(requests: Requests, index: int, sequence: itertools.count[int]) -> RequestMaker:
    """The request source of connection ``index`` (cas is handled apart)."""
    spec = requests.spec
    chooser = random.Random(spec.seed * 1_000_003 + index)
    if spec.workload == "put":
        if spec.sequential_keys:
            return lambda: ("write", requests.put(requests.key(next(sequence))))
        space = requests.key_space
        return lambda: ("write", requests.put(requests.key(chooser.randrange(space))))
    if spec.workload in ("get-linearizable", "get-serializable"):
        pool = requests.get_quorum if spec.workload == "get-linearizable" else requests.get_local
        return lambda: ("read", chooser.choice(pool))
    assert spec.workload == "mixed", spec.workload
    reads = requests.get_quorum if spec.read_consistency == "l" else requests.get_local
    writes = requests.put_read_keys
    fraction = spec.read_fraction

    def mixed() -> tuple[str, bytes]:
        if chooser.random() < fraction:
            return "read", chooser.choice(reads)
        return "write", chooser.choice(writes)

    return mixed


async def _dial(connection: Connection, recorder: Recorder) -> bool:
    try:
        await connection.open()
    except OSError as error:
        recorder.error(f"connect: {type(error).__name__}", time.perf_counter_ns())
        await trio.sleep(RECONNECT_DELAY_S)
        return False
    return True


async def _exchange(
    connection: Connection, request: bytes, recorder: Recorder
) -> tuple[int, bytes, int, int] | None:
    """One timed exchange: status, header block, start and end; None (recorded) on failure."""
    started = time.perf_counter_ns()
    try:
        status, head, _ = await connection.exchange(request)
    except (OSError, ConnectionClosed, ValueError) as error:
        recorder.error(f"connection: {type(error).__name__}", time.perf_counter_ns())
        connection.close()
        await trio.sleep(RECONNECT_DELAY_S)
        return None
    return status, head, started, time.perf_counter_ns()


async def run_connection(
    connection: Connection, make: RequestMaker, recorder: Recorder, stop_ns: int
) -> None:
    """Closed loop until ``stop_ns``: one request at a time."""
    while time.perf_counter_ns() < stop_ns:
        if not connection.connected and not await _dial(connection, recorder):
            continue
        kind, request = make()
        outcome = await _exchange(connection, request, recorder)
        if outcome is None:
            continue
        status, _, started, finished = outcome
        if 200 <= status < 300:
            recorder.record(kind, started, finished)
        else:
            recorder.error(f"http {status}", finished)
    connection.close()


async def run_cas_connection(
    connection: Connection, requests: Requests, index: int, recorder: Recorder, stop_ns: int
) -> None:
    """Closed loop of compare-and-swaps on this connection's own key."""
    key = b"cas" + requests.key(index)
    modified_index = 0
    while time.perf_counter_ns() < stop_ns:
        if not connection.connected and not await _dial(connection, recorder):
            continue
        if modified_index == 0:
            request = requests.put(key)  # (re)start from a plain set: its index is ours
        else:
            request = requests.put(key, b"?prevIndex=%d" % modified_index)
        outcome = await _exchange(connection, request, recorder)
        if outcome is None:
            modified_index = 0
            continue
        status, head, started, finished = outcome
        if 200 <= status < 300:
            modified_index = etcd_index(head)
            if b"?prevIndex=" in request:
                recorder.record("write", started, finished)
        else:
            recorder.error(f"http {status}", finished)
            modified_index = 0
    connection.close()


async def preload(spec: LoadSpec, requests: Requests) -> None:
    """Write every read key once, so that reads find them.

    Raises:
        RuntimeError: a preload write was refused.
    """
    pending = list(requests.put_read_keys)
    host, port = split_endpoint(spec.endpoint)

    async def writer() -> None:
        connection = Connection(host, port)
        await connection.open()
        try:
            while pending:
                status, _, body = await connection.exchange(pending.pop())
                if not 200 <= status < 300:
                    raise RuntimeError(f"preload write answered {status}: {body[:200]!r}")
        finally:
            connection.close()

    async with trio.open_nursery() as nursery:
        for _ in range(min(PRELOAD_CONNECTIONS_MAX, spec.connections, len(pending))):
            nursery.start_soon(writer)


async def run_load(spec: LoadSpec) -> LoadResult:
    """Run ``spec``: preload if it reads, warm up, measure; the result of the window.

    The v3 workloads run in ``bench.loadgen_v3`` (imported here: it builds on this module).
    """
    if spec.workload in V3_WORKLOADS:
        from bench.loadgen_v3 import run_v3_load  # noqa: PLC0415  # it imports this module

        return await run_v3_load(spec)
    requests = Requests(spec)
    host, port = split_endpoint(spec.endpoint)
    if spec.preload and spec.workload in ("get-linearizable", "get-serializable", "mixed"):
        await preload(spec, requests)
    now = time.perf_counter_ns()
    window_start = now + int(spec.warmup_s * 1e9)
    window_end = window_start + int(spec.duration_s * 1e9)
    recorder = Recorder(window_start, window_end)
    sequence = itertools.count(random.Random(spec.seed).randrange(10**spec.key_size // 2))
    connections = [Connection(host, port) for _ in range(spec.connections)]
    cpu = CpuWindow()
    with trio.move_on_at(trio.current_time() + spec.warmup_s + spec.duration_s + STOP_GRACE_S):
        async with trio.open_nursery() as nursery:
            for index, connection in enumerate(connections):
                if spec.workload == "cas":
                    nursery.start_soon(
                        run_cas_connection, connection, requests, index, recorder, window_end
                    )
                else:
                    make = request_maker(requests, index, sequence)
                    nursery.start_soon(run_connection, connection, make, recorder, window_end)
            nursery.start_soon(cpu.watch, window_start, window_end)
    for connection in connections:
        connection.close()
    return summarise(spec, recorder, cpu.percent())


class CpuWindow:
    """This process's CPU use between two instants (the measured window)."""

    def __init__(self) -> None:
        self._cpu_s = [0.0, 0.0]
        self._wall_s = [0.0, 0.0]

    async def watch(self, start_ns: int, end_ns: int) -> None:
        for slot, at_ns in enumerate((start_ns, end_ns)):
            await trio.sleep(max(0.0, (at_ns - time.perf_counter_ns()) / 1e9))
            self._cpu_s[slot] = time.process_time()
            self._wall_s[slot] = time.perf_counter()

    def percent(self) -> float:
        wall = self._wall_s[1] - self._wall_s[0]
        return 100.0 * (self._cpu_s[1] - self._cpu_s[0]) / wall if wall > 0 else 0.0


def summarise(spec: LoadSpec, recorder: Recorder, cpu_percent: float) -> LoadResult:
    """The result of a finished run."""
    every: list[int] = []
    for samples in recorder.latencies_ns.values():
        every.extend(samples)
    count = len(every)
    return LoadResult(
        workload=spec.workload,
        endpoint=spec.endpoint,
        connections=spec.connections,
        duration_s=spec.duration_s,
        requests=count,
        errors=sum(recorder.errors.values()),
        error_kinds=dict(sorted(recorder.errors.items())),
        ops_per_s=count / spec.duration_s,
        latency=LatencySummary.of(every),
        by_kind={
            kind: LatencySummary.of(samples)
            for kind, samples in sorted(recorder.latencies_ns.items())
        },
        client_cpu_percent=round(cpu_percent, 1),
        key_size=spec.key_size,
        value_size=spec.value_size,
        client_cpu_us_per_op=round(1e4 * cpu_percent * spec.duration_s / count, 2)
        if count
        else 0.0,
    )


# -- the trivial server and the ceiling ---------------------------------------------------------

TRIVIAL_BODY = (
    b'{"action":"set","node":{"key":"/bench/00000000","value":"x","modifiedIndex":1,'
    b'"createdIndex":1}}\n'
)
TRIVIAL_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Etcd-Cluster-Id: 1\r\n"
    b"X-Etcd-Index: 1\r\nX-Raft-Index: 1\r\nX-Raft-Term: 1\r\n"
    b"Content-Length: %d\r\n\r\n" % len(TRIVIAL_BODY)
) + TRIVIAL_BODY


def complete_requests(buffer: bytearray) -> int:
    """How many whole requests ``buffer`` starts with; removes them from it."""
    position = 0
    count = 0
    while True:
        end = buffer.find(b"\r\n\r\n", position)
        if end < 0:
            break
        head = bytes(buffer[position:end]).lower()
        start = head.find(b"\r\ncontent-length:")
        length = 0
        if start >= 0:
            stop = head.find(b"\r\n", start + 2)
            length = int(head[start + 17 : stop if stop >= 0 else len(head)])
        if end + 4 + length > len(buffer):
            break
        position = end + 4 + length
        count += 1
    del buffer[:position]
    return count


async def _trivial_connection(sock: trio.socket.SocketType) -> None:
    with sock:
        buffer = bytearray()
        while True:
            try:
                data = await sock.recv(RECEIVE_BYTES_MAX)
            except OSError:
                return
            if not data:
                return
            buffer += data
            count = complete_requests(buffer)
            if count:
                reply = TRIVIAL_RESPONSE * count
                try:
                    sent = await sock.send(reply)
                    while sent < len(reply):
                        sent += await sock.send(reply[sent:])
                except OSError:
                    return


async def serve_trivial(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer every HTTP/1.1 request with one fixed 200 (keep-alive, pipelining) until cancelled.

    Reports the bound port through ``task_status``.
    """
    listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await listener.bind((host, port))
        listener.listen(1024)
        task_status.started(listener.getsockname()[1])
        async with trio.open_nursery() as nursery:
            while True:
                sock, _ = await listener.accept()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(_trivial_connection, sock)


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process ``pid``; 0 when it is gone or unknown.

    Read from Linux's ``/proc`` so that a benchmark can charge each process its own CPU without
    a dependency; elsewhere every reading is 0 and the CPU columns say nothing.
    """
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CeilingResult:
    """The client against the trivial server: its own maximum."""

    load: LoadResult
    server_cpu_percent: float
    limited_by: str
    """Which process ran its core full (``client``, ``server``, both, or neither)."""


async def measure_ceiling(spec: LoadSpec) -> CeilingResult:
    """Run ``spec``'s load against a trivial server in a child process.

    The server runs in its own process so that it does not take the client's core (or GIL).
    """
    command = [sys.executable, "-m", "bench.loadgen", "trivial-server", "--port", "0"]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(TRIVIAL_SERVER_START_TIMEOUT_S):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(256)
                if not chunk:
                    raise RuntimeError("the trivial server exited before it listened")
                line += chunk
        port = int(line.split()[-1])
        endpoint = f"http://127.0.0.1:{port}"
        spec = LoadSpec(**{**asdict(spec), "endpoint": endpoint})
        server_cpu_before = process_cpu_s(process.pid)
        wall_before = time.perf_counter()
        load = await run_load(spec)
        wall = time.perf_counter() - wall_before
        server_cpu = 100.0 * (process_cpu_s(process.pid) - server_cpu_before) / wall
    finally:
        process.kill()
        await process.wait()
    client_busy = load.client_cpu_percent >= CEILING_CPU_BUSY_PERCENT
    server_busy = server_cpu >= CEILING_CPU_BUSY_PERCENT
    limited_by = {
        (True, True): "client and server",
        (True, False): "client",
        (False, True): "server",
        (False, False): "round trips (neither core full)",
    }[client_busy, server_busy]
    return CeilingResult(load, round(server_cpu, 1), limited_by)


# -- command line -------------------------------------------------------------------------------


def format_result(result: LoadResult) -> str:
    """One line for a result."""
    latency = result.latency
    errors = f"  errors {result.errors} {result.error_kinds}" if result.errors else ""
    return (
        f"{result.workload:<17} c={result.connections:<4} {result.ops_per_s:>9.0f} ops/s  "
        f"p50 {latency.p50_ms:7.2f}  p90 {latency.p90_ms:7.2f}  p99 {latency.p99_ms:7.2f}  "
        f"max {latency.max_ms:7.2f} ms  client cpu {result.client_cpu_percent:.0f}%{errors}"
    )


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", "-w", choices=WORKLOADS, default="put")
    parser.add_argument(
        "--connections", "-c", type=int, nargs="+", default=[16], help="one run per count"
    )
    parser.add_argument("--duration", "-d", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--key-size", type=int, default=8)
    parser.add_argument("--value-size", type=int, default=256)
    parser.add_argument("--sequential-keys", action="store_true")
    parser.add_argument("--key-space", type=int, default=100_000)
    parser.add_argument("--read-keys", type=int, default=1000)
    parser.add_argument("--read-fraction", type=float, default=0.9)
    parser.add_argument("--read-consistency", choices=("l", "s"), default="s")
    parser.add_argument("--json", type=Path, help="write the results here")


def _spec(arguments: argparse.Namespace, endpoint: str, connections: int) -> LoadSpec:
    return LoadSpec(
        endpoint=endpoint,
        workload=arguments.workload,
        connections=connections,
        duration_s=arguments.duration,
        warmup_s=arguments.warmup,
        key_size=arguments.key_size,
        value_size=arguments.value_size,
        sequential_keys=arguments.sequential_keys,
        key_space=arguments.key_space,
        read_keys=arguments.read_keys,
        read_fraction=arguments.read_fraction,
        read_consistency=arguments.read_consistency,
    )


async def _main(arguments: argparse.Namespace) -> None:
    if arguments.command == "trivial-server":

        async def announce() -> None:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve_trivial, "127.0.0.1", arguments.port)
                print(f"listening on port {port}", flush=True)

        await announce()
        return
    records: list[dict[str, object]] = []
    for connections in arguments.connections:
        if arguments.command == "ceiling":
            ceiling = await measure_ceiling(_spec(arguments, "http://127.0.0.1:1", connections))
            print(
                f"{format_result(ceiling.load)}  server cpu {ceiling.server_cpu_percent:.0f}%"
                f"  limited by {ceiling.limited_by}",
                flush=True,
            )
            records.append(asdict(ceiling))
        else:
            result = await run_load(_spec(arguments, arguments.endpoint, connections))
            print(format_result(result), flush=True)
            records.append(asdict(result))
    if arguments.json:
        arguments.json.write_text(json.dumps(records, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.loadgen``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description=(__doc__ or "").split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="load an endpoint")
    run.add_argument("--endpoint", required=True, help="http://host:port of one member")
    _add_load_options(run)
    ceiling = commands.add_parser("ceiling", help="the client's maximum, on a trivial server")
    _add_load_options(ceiling)
    trivial = commands.add_parser("trivial-server", help="serve a fixed 200 until killed")
    trivial.add_argument("--port", type=int, default=0)
    trio.run(_main, parser.parse_args(argv))


if __name__ == "__main__":
    main()
