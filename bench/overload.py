"""Overload: many connections pushing puts as fast as they can; members' memory, refusals, loss.

Theory of operation
-------------------

Issue 13 asks that memory stay bounded under overload: ``connections`` (1,000 by default)
closed-loop writers, each with one put in flight at a time, for ``duration_s`` (60 s), never
grow a member past a fixed bound; excess load waits or is refused with etcd's "too many
requests", and nothing acknowledged is lost. One sample:

1. A cluster of its own is started (so each member's peak, ``VmHWM``, is this load's).
2. The connections are opened round-robin over the members (clients spread their
   connections; followers forward to the leader), over gRPC (``bench.grpc_lite``, one HTTP/2
   connection per writer) or over the v2 HTTP API (``bench.loadgen.Connection``, keep-alive
   HTTP/1.1).
3. Writer ``c`` puts ``<prefix>/c<c>/<n>`` for n = 0, 1, ... with a value derived from the key
   (``value_of``), the next only once the last was answered. An acknowledged put (gRPC OK, v2
   200/201) records ``n``; anything else is counted by kind (refusals, timeouts, broken
   connections) and the writer goes on (a broken connection is dialled again after a pause).
4. Every second each member's resident set (``VmRSS``, from ``/proc``) is sampled: the series,
   its maximum and the members' ``VmHWM`` are the figures.
5. After the load, every acknowledged key is read back (a range or a recursive v2 GET per
   writer, from the leader, linearizable) and compared with its value: ``lost`` counts the
   acknowledged puts missing or different; it must be 0.

The client is one Python process: on a shared 2-core machine it cannot push etcd as hard as
troika, so the ops/s are context; the memory figures and ``lost`` are the point.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import quote

import trio

from bench.clusters import EtcdCluster, ProcessCluster, TroikaCluster
from bench.grpc_lite import UNAVAILABLE, LiteConnection, LiteRpcError
from bench.loadgen import Connection, ConnectionClosed, split_endpoint
from bench.memory import mib, proc_status_kib
from net.etcdpb import rpc_pb2
from net.etcdpb.routes import grpc_path

APIS: Final = ("grpc", "v2")
SYSTEMS: Final = {"troika": TroikaCluster, "etcd": EtcdCluster}
CONNECTIONS_DEFAULT: Final = 1_000
CONNECTIONS_MAX: Final = 5_000
DURATION_S_DEFAULT: Final = 60.0
VALUE_BYTES_DEFAULT: Final = 64
SAMPLE_INTERVAL_S: Final = 1.0
CALL_TIMEOUT_S: Final = 10.0
REDIAL_PAUSE_S: Final = 0.2
DIALS_AT_ONCE: Final = 64
"""Connections dialled at the same time when the load starts (a listen backlog is finite)."""
READ_BACK_TIMEOUT_S: Final = 30.0
ERROR_KINDS_MAX: Final = 12
ERROR_TEXT_CHARS: Final = 80
PUT_PATH: Final = grpc_path("KV", "Put")
RANGE_PATH: Final = grpc_path("KV", "Range")


@dataclass(frozen=True)
class OverloadSpec:
    """One overload sample's load."""

    api: str = "grpc"
    connections: int = CONNECTIONS_DEFAULT
    duration_s: float = DURATION_S_DEFAULT
    value_bytes: int = VALUE_BYTES_DEFAULT
    prefix: str = "overload"

    def __post_init__(self) -> None:
        if self.api not in APIS:
            raise ValueError(f"api is one of {', '.join(APIS)}")
        if not 1 <= self.connections <= CONNECTIONS_MAX or self.duration_s <= 0:
            raise ValueError(f"connections within 1..{CONNECTIONS_MAX}, a positive duration")


def key_of(prefix: str, writer: int, number: int) -> str:
    """Writer ``writer``'s ``number``-th key."""
    return f"{prefix}/c{writer}/{number}"


def value_of(key: str, value_bytes: int) -> str:
    """The value put at ``key``: the key repeated to ``value_bytes`` (checkable on read)."""
    return (key * (value_bytes // max(len(key), 1) + 1))[:value_bytes]


@dataclass
class Ledger:
    """What the writers were told: acknowledged numbers per writer, errors by kind."""

    acknowledged: list[list[int]]
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, description: str) -> None:
        description = description[:ERROR_TEXT_CHARS]
        if description not in self.errors and len(self.errors) >= ERROR_KINDS_MAX:
            description = "other"
        self.errors[description] = self.errors.get(description, 0) + 1

    @property
    def acknowledged_total(self) -> int:
        return sum(len(numbers) for numbers in self.acknowledged)

    def refusals(self) -> int:
        """Errors that are etcd's "too many requests"."""
        return sum(count for kind, count in self.errors.items() if "too many requests" in kind)


# -- writers ------------------------------------------------------------------------------------


async def _grpc_writer(
    spec: OverloadSpec, writer: int, endpoint: str, ledger: Ledger, stop_at: float
) -> None:
    host, port = split_endpoint(endpoint)
    number = 0
    while trio.current_time() < stop_at:
        try:
            async with trio.open_nursery() as nursery:
                connection = LiteConnection(host, port)
                await nursery.start(connection.run)
                while trio.current_time() < stop_at:
                    key = key_of(spec.prefix, writer, number)
                    request = rpc_pb2.PutRequest(
                        key=key.encode(), value=value_of(key, spec.value_bytes).encode()
                    ).SerializeToString()
                    try:
                        await connection.unary(PUT_PATH, request, CALL_TIMEOUT_S)
                        ledger.acknowledged[writer].append(number)
                    except LiteRpcError as error:
                        ledger.error(f"grpc {error.code}: {error.message}")
                        if error.code == UNAVAILABLE and error.message.startswith("connection"):
                            break  # the connection broke: dial again
                    number += 1
                nursery.cancel_scope.cancel()
        except OSError as error:
            ledger.error(f"dial: {type(error).__name__}")
        if trio.current_time() < stop_at:
            await trio.sleep(REDIAL_PAUSE_S)


def v2_put_request(host: str, key: str, value: str) -> bytes:
    """A keep-alive HTTP/1.1 ``PUT /v2/keys/<key>``."""
    body = f"value={quote(value, safe='')}".encode()
    return (
        f"PUT /v2/keys/{key} HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _v2_writer(
    spec: OverloadSpec, writer: int, endpoint: str, ledger: Ledger, stop_at: float
) -> None:
    host, port = split_endpoint(endpoint)
    connection = Connection(host, port)
    number = 0
    try:
        while trio.current_time() < stop_at:
            if not connection.connected:
                try:
                    await connection.open()
                except OSError as error:
                    ledger.error(f"dial: {type(error).__name__}")
                    await trio.sleep(REDIAL_PAUSE_S)
                    continue
            key = key_of(spec.prefix, writer, number)
            request = v2_put_request(f"{host}:{port}", key, value_of(key, spec.value_bytes))
            try:
                with trio.fail_after(CALL_TIMEOUT_S):
                    status, _, body = await connection.exchange(request)
            except (OSError, ConnectionClosed, trio.TooSlowError) as error:
                ledger.error(f"v2 connection: {type(error).__name__}")
                connection.close()
                number += 1
                continue
            if status in (200, 201):
                ledger.acknowledged[writer].append(number)
            else:
                ledger.error(f"v2 {status}: {_v2_cause(body)}")
            number += 1
    finally:
        connection.close()


def _v2_cause(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return body[:ERROR_TEXT_CHARS].decode(errors="replace")
    if isinstance(answer, dict):
        return f"{answer.get('errorCode')} {answer.get('cause') or answer.get('message')}"
    return str(answer)[:ERROR_TEXT_CHARS]


SampleHook = Callable[[], None]
"""Called every ``SAMPLE_INTERVAL_S`` while the load runs (reads the members' memory)."""


async def drive(
    spec: OverloadSpec, endpoints: Sequence[str], on_second: SampleHook | None = None
) -> tuple[Ledger, float]:
    """Run the writers against ``endpoints`` (round-robin) for the spec's duration, calling
    ``on_second`` every ``SAMPLE_INTERVAL_S``: the ledger and the seconds the load ran."""
    ledger = Ledger([[] for _ in range(spec.connections)])
    writer_of = _grpc_writer if spec.api == "grpc" else _v2_writer
    began = trio.current_time()
    stop_at = began + spec.duration_s
    dials = trio.CapacityLimiter(DIALS_AT_ONCE)

    async def start_writer(writer: int) -> None:
        async with dials:
            await trio.sleep(0)
        await writer_of(spec, writer, endpoints[writer % len(endpoints)], ledger, stop_at)

    async with trio.open_nursery() as nursery:
        for writer in range(spec.connections):
            nursery.start_soon(start_writer, writer)
        if on_second is not None:
            while trio.current_time() < stop_at:
                on_second()
                await trio.sleep(SAMPLE_INTERVAL_S)
            on_second()
    return ledger, trio.current_time() - began


# -- reading back -------------------------------------------------------------------------------


async def _read_back_grpc(spec: OverloadSpec, endpoint: str, ledger: Ledger) -> int:
    host, port = split_endpoint(endpoint)
    lost = 0
    async with trio.open_nursery() as nursery:
        connection = LiteConnection(host, port)
        await nursery.start(connection.run)
        for writer, numbers in enumerate(ledger.acknowledged):
            if not numbers:
                continue
            start = f"{spec.prefix}/c{writer}/".encode()
            request = rpc_pb2.RangeRequest(key=start, range_end=start[:-1] + b"0")
            answer = rpc_pb2.RangeResponse.FromString(
                await connection.unary(RANGE_PATH, request.SerializeToString(), READ_BACK_TIMEOUT_S)
            )
            stored = {kv.key.decode(): kv.value.decode() for kv in answer.kvs}
            lost += _missing(spec, writer, numbers, stored)
        nursery.cancel_scope.cancel()
    return lost


async def _read_back_v2(spec: OverloadSpec, endpoint: str, ledger: Ledger) -> int:
    host, port = split_endpoint(endpoint)
    connection = Connection(host, port)
    await connection.open()
    lost = 0
    try:
        for writer, numbers in enumerate(ledger.acknowledged):
            if not numbers:
                continue
            request = (
                f"GET /v2/keys/{spec.prefix}/c{writer}?recursive=true&quorum=true HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\n\r\n"
            ).encode()
            with trio.fail_after(READ_BACK_TIMEOUT_S):
                status, _, body = await connection.exchange(request)
            nodes = json.loads(body).get("node", {}).get("nodes", []) if status == 200 else []
            stored = {node["key"].lstrip("/"): node.get("value", "") for node in nodes}
            lost += _missing(spec, writer, numbers, stored)
    finally:
        connection.close()
    return lost


def _missing(spec: OverloadSpec, writer: int, numbers: list[int], stored: dict[str, str]) -> int:
    missing = 0
    for number in numbers:
        key = key_of(spec.prefix, writer, number)
        if stored.get(key) != value_of(key, spec.value_bytes):
            missing += 1
    return missing


async def read_back(spec: OverloadSpec, endpoint: str, ledger: Ledger) -> int:
    """Acknowledged puts missing (or with another value) when read from ``endpoint``."""
    reader = _read_back_grpc if spec.api == "grpc" else _read_back_v2
    return await reader(spec, endpoint, ledger)


# -- one sample on a cluster --------------------------------------------------------------------


@dataclass(frozen=True)
class OverloadSample:
    """One system under one overload."""

    system: str
    api: str
    connections: int
    duration_s: float
    acknowledged: int
    ops_per_s: float
    refusals: int
    """Puts answered etcd's "too many requests"."""
    errors: int
    error_kinds: dict[str, int]
    lost: int
    """Acknowledged puts not read back: must be 0."""
    rss_start_mib: dict[str, float]
    rss_max_mib: dict[str, float]
    """Each member's largest ``VmRSS`` over the per-second samples."""
    rss_peak_mib: dict[str, float]
    """Each member's ``VmHWM`` at the end (the kernel's own peak)."""
    rss_series_mib: dict[str, list[float]]


def measure_overload(
    kind: type[ProcessCluster], spec: OverloadSpec, root: Path, size: int = 3
) -> OverloadSample:
    """Start a ``kind`` cluster, overload it as ``spec`` says, read back, stop it."""
    with kind(size, root / f"{kind.system}-{spec.api}") as cluster:
        leader = cluster.wait_for_leader()
        pids = {name: cluster.pid(index) for index, name in enumerate(cluster.names)}
        series: dict[str, list[float]] = {name: [] for name in pids}

        def sample() -> None:
            for name, pid in pids.items():
                series[name].append(mib(proc_status_kib(pid, "VmRSS")))

        start = {name: mib(proc_status_kib(pid, "VmRSS")) for name, pid in pids.items()}
        ledger, ran_s = trio.run(drive, spec, cluster.client_urls, sample)
        peaks = {name: mib(proc_status_kib(pid, "VmHWM")) for name, pid in pids.items()}
        leader = cluster.wait_for_leader()
        lost = trio.run(read_back, spec, cluster.client_urls[leader], ledger)
    acknowledged = ledger.acknowledged_total
    return OverloadSample(
        system=kind.system,
        api=spec.api,
        connections=spec.connections,
        duration_s=round(ran_s, 1),
        acknowledged=acknowledged,
        ops_per_s=round(acknowledged / max(ran_s, 1e-9), 1),
        refusals=ledger.refusals(),
        errors=sum(ledger.errors.values()),
        error_kinds=dict(sorted(ledger.errors.items())),
        lost=lost,
        rss_start_mib=start,
        rss_max_mib={name: max(values, default=0.0) for name, values in series.items()},
        rss_peak_mib=peaks,
        rss_series_mib=series,
    )


def format_samples(samples: Sequence[OverloadSample]) -> str:
    """One line per system and API: the largest member's figures."""
    lines = [
        f"{'system':<7} {'api':<5} {'conns':>6} {'acked':>8} {'ops/s':>8} {'refused':>8} "
        f"{'errors':>7} {'lost':>5} | {'rss start':>9} {'rss max':>8} {'VmHWM':>8} "
        "(MiB, largest member)"
    ]
    for s in samples:
        lines.append(
            f"{s.system:<7} {s.api:<5} {s.connections:>6} {s.acknowledged:>8} "
            f"{s.ops_per_s:>8.0f} {s.refusals:>8} {s.errors:>7} {s.lost:>5} | "
            f"{max(s.rss_start_mib.values()):>9.1f} {max(s.rss_max_mib.values()):>8.1f} "
            f"{max(s.rss_peak_mib.values()):>8.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.overload``: each system and API in turn; a table and a JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--system", action="append", choices=sorted(SYSTEMS))
    parser.add_argument("--api", action="append", choices=APIS)
    parser.add_argument("--connections", type=int, default=CONNECTIONS_DEFAULT)
    parser.add_argument("--duration", type=float, default=DURATION_S_DEFAULT)
    parser.add_argument("--value-size", type=int, default=VALUE_BYTES_DEFAULT)
    parser.add_argument("--json", type=Path, default=Path("overload.json"))
    arguments = parser.parse_args(argv)
    samples = []
    with tempfile.TemporaryDirectory(prefix="troika-overload-") as scratch:
        for api in arguments.api or APIS:
            spec = OverloadSpec(
                api, arguments.connections, arguments.duration, arguments.value_size
            )
            for system in arguments.system or ("troika", "etcd"):
                began = time.perf_counter()
                print(
                    f"{system} {api} {spec.connections} connections {spec.duration_s} s", flush=True
                )
                samples.append(measure_overload(SYSTEMS[system], spec, Path(scratch)))
                print(
                    format_samples(samples[-1:]),
                    f"({time.perf_counter() - began:.0f} s)",
                    flush=True,
                )
    arguments.json.write_text(json.dumps([asdict(s) for s in samples], indent=1))
    print(format_samples(samples))


if __name__ == "__main__":
    main()
