"""Memory of a member holding many leases or many watchers: resident set before, holding, peak.

Theory of operation
-------------------

Workloads (``items`` is ``--memory-items``, 10,000 by default):

``mem-leases``
    ``items`` LeaseGrant calls (TTL ``LEASE_TTL_S``, long enough to outlive the sample) on
    the leader, ``GRANTS_IN_FLIGHT`` at a time. Every member holds every lease (the grant
    goes through the log); the figures are the leader's, every member's peak is in the JSON.
``mem-watchers``
    ``items`` watchers of one prefix on one Watch stream to the leader (as one clientv3
    client watching that many keys would; past ``WATCHERS_PER_STREAM``, on several streams of
    one connection), each acknowledged ``created`` before measuring.
``mem-keys``
    ``items`` distinct keys, each put once with a value of ``KEY_VALUE_BYTES`` (256) bytes,
    ``PUTS_IN_FLIGHT`` at a time on one gRPC connection to the leader (issue 13's target:
    every member's peak at 100,000 keys at most etcd's, ``--memory-items 100000``). Every
    member holds every key; ``members_rss_peak_mib`` is the figure compared.

Each sample runs on a cluster of its own, started for it and stopped after, so that a
member's peak (``VmHWM``) is this load's and nothing earlier's. The member's resident set
(``VmRSS``) is read once the cluster is ready and a first write is done, and again
``SETTLE_S`` after the last item is acknowledged, while the items are still held (the
watchers' streams stay open until then). ``kib_per_item`` is the difference over ``items``:
what one more lease or watcher costs, allocator slack included.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import trio

from bench.grpc_lite import LiteConnection, LiteRpcError
from bench.loadgen import split_endpoint
from bench.watch_v3 import WATCH_PATH
from net.etcdpb import rpc_pb2
from net.etcdpb.routes import grpc_path

MEMORY_WORKLOADS: Final = ("mem-leases", "mem-watchers", "mem-keys")
ITEMS_DEFAULT: Final = 10_000
ITEMS_MAX: Final = 1_000_000
WATCHERS_PER_STREAM: Final = 10_000
"""Watchers created on one Watch stream: troika refuses more on one stream (its
``STREAM_WATCHERS_MAX``; etcd has no such bound), so larger counts use several streams."""
LEASE_TTL_S: Final = 3600
GRANTS_IN_FLIGHT: Final = 32
KEY_VALUE_BYTES: Final = 256
PUTS_IN_FLIGHT: Final = 64
SETTLE_S: Final = 1.0
"""Wait after the last item before reading memory (late allocations, the lessor's tick)."""
HOLD_TIMEOUT_S: Final = 300.0
CALL_TIMEOUT_S: Final = 10.0
KIB_PER_MIB: Final = 1024
ERROR_KINDS_MAX: Final = 8

PUT_PATH: Final = grpc_path("KV", "Put")
GRANT_PATH: Final = grpc_path("Lease", "LeaseGrant")


def proc_status_kib(pid: int | None, field_name: str) -> int:
    """One ``/proc/<pid>/status`` figure in KiB (``VmRSS``, ``VmHWM``); 0 when it is gone."""
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class MemorySample:
    """One member holding ``items`` leases or watchers."""

    system: str
    workload: str
    items: int
    run: int
    member: str
    """The member measured (the leader)."""
    rss_before_mib: float
    rss_holding_mib: float
    rss_peak_mib: float
    kib_per_item: float
    members_rss_peak_mib: dict[str, float]
    held: int
    """Items acknowledged (grants answered, watchers created)."""
    setup_s: float
    client_cpu_s: float
    errors: int
    error_kinds: dict[str, int] = field(default_factory=dict)


@dataclass
class _Outcome:
    held: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    closing: bool = False

    def error(self, description: str) -> None:
        if description not in self.errors and len(self.errors) >= ERROR_KINDS_MAX:
            description = "other"
        self.errors[description] = self.errors.get(description, 0) + 1


Measure = Callable[[], None]
"""Called while the items are held."""


async def _grant_leases(connection: LiteConnection, items: int, outcome: _Outcome) -> None:
    request = rpc_pb2.LeaseGrantRequest(TTL=LEASE_TTL_S).SerializeToString()
    remaining = [items]

    async def granter() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            try:
                answer = await connection.unary(GRANT_PATH, request, CALL_TIMEOUT_S)
            except LiteRpcError as error:
                outcome.error(f"grant: {error.message[:80]}")
                continue
            if rpc_pb2.LeaseGrantResponse.FromString(answer).ID:
                outcome.held += 1
            else:
                outcome.error("grant: no ID")

    async with trio.open_nursery() as nursery:
        for _ in range(min(GRANTS_IN_FLIGHT, items)):
            nursery.start_soon(granter)


def key_of(index: int) -> bytes:
    """The ``index``-th key of ``mem-keys`` (distinct, fixed width, sorted by index)."""
    return b"memory/key/%09d" % index


async def _put_keys(connection: LiteConnection, items: int, outcome: _Outcome) -> None:
    value = b"v" * KEY_VALUE_BYTES
    next_index = [0]

    async def putter() -> None:
        while next_index[0] < items:
            index = next_index[0]
            next_index[0] += 1
            request = rpc_pb2.PutRequest(key=key_of(index), value=value).SerializeToString()
            try:
                await connection.unary(PUT_PATH, request, CALL_TIMEOUT_S)
            except LiteRpcError as error:
                outcome.error(f"put: {error.message[:80]}")
                continue
            outcome.held += 1

    async with trio.open_nursery() as nursery:
        for _ in range(min(PUTS_IN_FLIGHT, items)):
            nursery.start_soon(putter)


async def _create_watchers(
    connection: LiteConnection, items: int, prefix: bytes, outcome: _Outcome
) -> None:
    all_created = trio.Event()

    def on_message(data: memoryview) -> None:
        response = rpc_pb2.WatchResponse.FromString(data)  # type: ignore[arg-type]  # any buffer
        if response.created and not response.canceled:
            outcome.held += 1
        elif response.canceled:
            outcome.error(f"watcher cancelled: {response.cancel_reason[:80]}")
        if outcome.held + sum(outcome.errors.values()) >= items:
            all_created.set()

    def on_end(error: LiteRpcError | None) -> None:
        if outcome.closing:
            return
        outcome.error(f"watch stream ended: {error.message[:80] if error else 'OK'}")
        all_created.set()

    create = rpc_pb2.WatchCreateRequest(key=prefix + b"/", range_end=prefix + b"0")
    for first in range(0, items, WATCHERS_PER_STREAM):
        stream_id = connection.open_stream(WATCH_PATH, on_message, on_end)
        for watcher in range(first, min(items, first + WATCHERS_PER_STREAM)):
            create.watch_id = watcher
            await connection.send(
                stream_id, rpc_pb2.WatchRequest(create_request=create).SerializeToString()
            )
    await all_created.wait()


async def hold_and_measure(
    endpoint: str, workload: str, items: int, before: Measure, holding: Measure
) -> tuple[_Outcome, float, float]:
    """Create ``items`` leases, watchers or keys on ``endpoint``, calling ``before`` first and
    ``holding`` while they are held: the outcome, setup seconds and client CPU seconds."""
    if workload not in MEMORY_WORKLOADS:
        raise ValueError(f"memory workloads are {', '.join(MEMORY_WORKLOADS)}")
    host, port = split_endpoint(endpoint)
    outcome = _Outcome()
    cpu_started = time.process_time()
    setup_s = 0.0
    async with trio.open_nursery() as nursery:
        connection = LiteConnection(host, port)
        await nursery.start(connection.run)
        start = rpc_pb2.PutRequest(key=b"memory/start", value=b"x").SerializeToString()
        await connection.unary(PUT_PATH, start, CALL_TIMEOUT_S)
        before()
        began = time.perf_counter()
        with trio.move_on_after(HOLD_TIMEOUT_S):
            if workload == "mem-leases":
                await _grant_leases(connection, items, outcome)
            elif workload == "mem-keys":
                await _put_keys(connection, items, outcome)
            else:
                await _create_watchers(connection, items, b"memory", outcome)
        setup_s = time.perf_counter() - began
        await trio.sleep(SETTLE_S)
        holding()
        outcome.closing = True
        nursery.cancel_scope.cancel()
    return outcome, round(setup_s, 3), round(time.process_time() - cpu_started, 3)


def mib(kib: int) -> float:
    """KiB as MiB, one decimal."""
    return round(kib / KIB_PER_MIB, 1)
