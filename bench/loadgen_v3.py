"""The v3 load: etcd's KV API over gRPC and over the JSON gateway, the same for troika and etcd.

Theory of operation
-------------------

The workloads are ``v3-put``, ``v3-range`` (linearizable), ``v3-range-serializable`` and
``v3-txn`` (each worker owns a key and swaps it: ``If(mod_revision == last) Then(Put)``, etcd's
compare-and-swap), over gRPC; the same names with ``-gw`` go through the JSON gateway
(``POST /v3/kv/put``, ``/v3/kv/range``, ``/v3/kv/txn`` with base64 keys and values).

``connections`` is the number of requests in flight: that many closed-loop workers, each
sending its next request when the last one is answered. Over gRPC they share HTTP/2
connections, ``STREAMS_PER_CHANNEL`` workers per connection: 1 and 16 requests in flight use
one connection, 64 use four, as gRPC clients multiplex. The gRPC client is
``bench.grpc_lite`` (raw HTTP/2 frames, pre-encoded headers): ``net.grpc.client`` runs every
frame through h2 in Python, about half a millisecond of CPU per call, and limited etcd's
figures before etcd did. A call has no deadline of its own (a cancel scope per call costs
more than the rest of it); the run's end bounds every worker.

Over the gateway each worker has its own keep-alive HTTP/1.1 connection and the pre-encoded
request bytes of ``bench.loadgen`` (only the txn's body is built per request, since it names
the revision to compare). The window, the latency and the client's
CPU are measured as ``bench.loadgen`` measures them (``Recorder``, ``CpuWindow``).

Reads are of ``read_keys`` keys written first (over gRPC, for both transports).
"""

from __future__ import annotations

import base64
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final, TypeVar

import trio
from google.protobuf.message import Message

from bench.grpc_lite import LiteConnection, LiteRpcError
from bench.loadgen import (
    PRELOAD_CONNECTIONS_MAX,
    RECONNECT_DELAY_S,
    STOP_GRACE_S,
    V3_WORKLOADS,
    VALUE_ALPHABET,
    Connection,
    ConnectionClosed,
    CpuWindow,
    LoadResult,
    LoadSpec,
    Recorder,
    _dial,
    split_endpoint,
    summarise,
)
from net.etcdpb import rpc_pb2
from net.etcdpb.routes import grpc_path
from net.v3.errors import StatusCode

GATEWAY_SUFFIX: Final = "-gw"
STREAMS_PER_CHANNEL: Final = 16
"""Requests in flight per HTTP/2 connection of the gRPC load."""
PRELOAD_TIMEOUT_S: Final = 60.0
"""The preload of the keys a range reads must be done by then."""
GATEWAY_PREFIX: Final = "/v3/kv/"

PUT_PATH: Final = grpc_path("KV", "Put")
RANGE_PATH: Final = grpc_path("KV", "Range")
TXN_PATH: Final = grpc_path("KV", "Txn")


def is_v3(workload: str) -> bool:
    """Whether ``workload`` is one of this module's."""
    return workload in V3_WORKLOADS


def operation_and_transport(workload: str) -> tuple[str, str]:
    """``v3-put-gw`` as (``v3-put``, ``gateway``); ``v3-put`` as (``v3-put``, ``grpc``)."""
    if workload.endswith(GATEWAY_SUFFIX):
        return workload.removesuffix(GATEWAY_SUFFIX), "gateway"
    return workload, "grpc"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class V3Requests:
    """Keys, the value, and the pre-encoded gateway requests of one spec."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        chooser = random.Random(spec.seed)
        self.value = "".join(chooser.choice(VALUE_ALPHABET) for _ in range(spec.value_size))
        self.value_bytes = self.value.encode()
        self.key_space = min(spec.key_space, 10**spec.key_size)
        self.read_keys = [self.key(n) for n in range(min(spec.read_keys, self.key_space))]
        host, port = split_endpoint(spec.endpoint)
        self.address = f"{host}:{port}"
        self.host_header = f"{host}:{port}".encode()
        self.range_linearizable = [self.gateway("range", {"key": _b64(k)}) for k in self.read_keys]
        self.range_serializable = [
            self.gateway("range", {"key": _b64(k), "serializable": True}) for k in self.read_keys
        ]

    def key(self, number: int) -> bytes:
        """Key ``number``: the prefix and ``key_size`` digits."""
        size = self.spec.key_size
        return f"{self.spec.prefix}/{f'{number:0{size}d}'[-size:]}".encode()

    def gateway(self, method: str, body: dict[str, object]) -> bytes:
        """A ``POST /v3/kv/<method>`` request with a JSON body."""
        payload = json.dumps(body, separators=(",", ":")).encode()
        return (
            b"POST " + GATEWAY_PREFIX.encode() + method.encode() + b" HTTP/1.1\r\nHost: "
            + self.host_header + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )  # fmt: skip

    def gateway_put(self, key: bytes) -> bytes:
        return self.gateway("put", {"key": _b64(key), "value": _b64(self.value_bytes)})

    def gateway_txn(self, key: bytes, revision: int) -> bytes:
        encoded = _b64(key)
        compare = {"key": encoded, "target": "MOD", "result": "EQUAL", "mod_revision": revision}
        put = {"request_put": {"key": encoded, "value": _b64(self.value_bytes)}}
        return self.gateway("txn", {"compare": [compare], "success": [put]})

    def txn(self, key: bytes, revision: int) -> rpc_pb2.TxnRequest:
        compare = rpc_pb2.Compare(
            result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.MOD, key=key,
            mod_revision=revision,
        )  # fmt: skip
        put = rpc_pb2.PutRequest(key=key, value=self.value_bytes)
        return rpc_pb2.TxnRequest(compare=[compare], success=[rpc_pb2.RequestOp(request_put=put)])


# -- gRPC ---------------------------------------------------------------------------------------

MessageT = TypeVar("MessageT", bound=Message)


async def unary(
    connection: LiteConnection, path: str, request: Message, response_type: type[MessageT]
) -> MessageT:
    """One call on the lean client, without a deadline of its own (see the module docstring).

    Raises:
        LiteRpcError: the call failed.
    """
    answer = await connection.unary(path, request.SerializeToString(), None)
    return response_type.FromString(answer)


Call = Callable[[LiteConnection], Awaitable[tuple[str, bool]]]
"""One request on a connection: its kind (read or write) and whether it did what was asked."""


def grpc_call(requests: V3Requests, operation: str, worker: int) -> Call:
    """Worker ``worker``'s request source over gRPC."""
    spec = requests.spec
    chooser = random.Random(spec.seed * 1_000_003 + worker)
    space = requests.key_space
    if operation == "v3-put":

        async def put(connection: LiteConnection) -> tuple[str, bool]:
            key = requests.key(chooser.randrange(space))
            request = rpc_pb2.PutRequest(key=key, value=requests.value_bytes)
            await unary(connection, PUT_PATH, request, rpc_pb2.PutResponse)
            return "write", True

        return put
    if operation in ("v3-range", "v3-range-serializable"):
        serializable = operation == "v3-range-serializable"

        async def get(connection: LiteConnection) -> tuple[str, bool]:
            request = rpc_pb2.RangeRequest(
                key=chooser.choice(requests.read_keys), serializable=serializable
            )
            response = await unary(connection, RANGE_PATH, request, rpc_pb2.RangeResponse)
            return "read", response.count == 1

        return get
    assert operation == "v3-txn", operation
    key = b"%s/txn%d" % (spec.prefix.encode(), worker)
    revision = 0

    async def swap(connection: LiteConnection) -> tuple[str, bool]:
        nonlocal revision
        if revision == 0:  # (re)start from a plain put: its revision is ours
            request = rpc_pb2.PutRequest(key=key, value=requests.value_bytes)
            put = await unary(connection, PUT_PATH, request, rpc_pb2.PutResponse)
            revision = put.header.revision
            return "setup", True
        txn = requests.txn(key, revision)
        response = await unary(connection, TXN_PATH, txn, rpc_pb2.TxnResponse)
        revision = response.header.revision if response.succeeded else 0
        return "write", response.succeeded

    return swap


def status_name(code: int) -> str:
    """gRPC's name of a status code (``NOT_FOUND``), or the number."""
    try:
        return StatusCode(code).name
    except ValueError:
        return str(code)


async def run_grpc_worker(
    connection: LiteConnection, call: Call, recorder: Recorder, stop_ns: int
) -> None:
    """Closed loop until ``stop_ns``: one request at a time on a shared connection."""
    while time.perf_counter_ns() < stop_ns:
        started = time.perf_counter_ns()
        try:
            kind, done = await call(connection)
        except LiteRpcError as error:
            recorder.error(f"grpc {status_name(error.code)}", time.perf_counter_ns())
            await trio.sleep(RECONNECT_DELAY_S)
            continue
        finished = time.perf_counter_ns()
        if kind == "setup":
            continue
        if done:
            recorder.record(kind, started, finished)
        else:
            recorder.error(f"{kind} not done (compare failed or key missing)", finished)


async def _open(nursery: trio.Nursery, requests: V3Requests) -> LiteConnection:
    host, port = split_endpoint(requests.spec.endpoint)
    connection = LiteConnection(host, port)
    await nursery.start(connection.run)
    return connection


async def _grpc_load(
    spec: LoadSpec, requests: V3Requests, operation: str, recorder: Recorder, stop_ns: int
) -> None:
    count = math.ceil(spec.connections / STREAMS_PER_CHANNEL)
    async with trio.open_nursery() as nursery:
        connections = [await _open(nursery, requests) for _ in range(count)]
        async with trio.open_nursery() as workers:
            for worker in range(spec.connections):
                call = grpc_call(requests, operation, worker)
                connection = connections[worker % count]
                workers.start_soon(run_grpc_worker, connection, call, recorder, stop_ns)
        nursery.cancel_scope.cancel()


async def preload_grpc(requests: V3Requests) -> None:
    """Write every read key once, over gRPC, so that ranges find them.

    Raises:
        LiteRpcError: a preload write failed.
    """
    pending = list(requests.read_keys)
    async with trio.open_nursery() as nursery:
        connection = await _open(nursery, requests)

        async def writer() -> None:
            while pending:
                request = rpc_pb2.PutRequest(key=pending.pop(), value=requests.value_bytes)
                await unary(connection, PUT_PATH, request, rpc_pb2.PutResponse)

        with trio.fail_after(PRELOAD_TIMEOUT_S):
            async with trio.open_nursery() as writers:
                for _ in range(min(PRELOAD_CONNECTIONS_MAX, len(pending))):
                    writers.start_soon(writer)
        nursery.cancel_scope.cancel()


# -- the gateway --------------------------------------------------------------------------------


async def run_gateway_worker(
    connection: Connection,
    requests: V3Requests,
    operation: str,
    worker: int,
    *,
    recorder: Recorder,
    stop_ns: int,
) -> None:
    """Closed loop of gateway requests on one keep-alive connection."""
    chooser = random.Random(requests.spec.seed * 1_000_003 + worker)
    space = requests.key_space
    key = b"%s/txn%d" % (requests.spec.prefix.encode(), worker)
    revision = 0
    while time.perf_counter_ns() < stop_ns:
        if not connection.connected and not await _dial(connection, recorder):
            continue
        kind = "read"
        if operation == "v3-put":
            kind, request = "write", requests.gateway_put(requests.key(chooser.randrange(space)))
        elif operation == "v3-range":
            request = chooser.choice(requests.range_linearizable)
        elif operation == "v3-range-serializable":
            request = chooser.choice(requests.range_serializable)
        elif revision == 0:
            kind, request = "setup", requests.gateway_put(key)
        else:
            kind, request = "write", requests.gateway_txn(key, revision)
        outcome = await _exchange_body(connection, request, recorder)
        if outcome is None:
            revision = 0
            continue
        status, body, started, finished = outcome
        if not 200 <= status < 300:
            recorder.error(f"http {status}", finished)
            revision = 0
            continue
        if operation == "v3-txn":
            revision = _txn_revision(body, kind)
            if kind == "write" and not revision:
                recorder.error("write not done (compare failed)", finished)
                continue
        if kind != "setup":
            recorder.record(kind, started, finished)
    connection.close()


def _txn_revision(body: bytes, kind: str) -> int:
    """The revision a gateway put or a succeeded txn made; 0 for a failed compare."""
    document = json.loads(body)
    if kind == "write" and not document.get("succeeded"):
        return 0
    return int(document["header"]["revision"])


async def _exchange_body(
    connection: Connection, request: bytes, recorder: Recorder
) -> tuple[int, bytes, int, int] | None:
    """``bench.loadgen``'s timed exchange, keeping the body (the txn reads its revision)."""
    started = time.perf_counter_ns()
    outcome = await _exchange_with_body(connection, request, recorder)
    if outcome is None:
        return None
    status, body = outcome
    return status, body, started, time.perf_counter_ns()


async def _exchange_with_body(
    connection: Connection, request: bytes, recorder: Recorder
) -> tuple[int, bytes] | None:
    try:
        status, _, body = await connection.exchange(request)
    except (OSError, ConnectionClosed, ValueError) as error:
        recorder.error(f"connection: {type(error).__name__}", time.perf_counter_ns())
        connection.close()
        await trio.sleep(RECONNECT_DELAY_S)
        return None
    return status, body


# -- the run ------------------------------------------------------------------------------------


async def run_v3_load(spec: LoadSpec) -> LoadResult:
    """Run a v3 ``spec``: preload if it reads, warm up, measure; the result of the window."""
    operation, transport = operation_and_transport(spec.workload)
    requests = V3Requests(spec)
    if spec.preload and operation in ("v3-range", "v3-range-serializable"):
        await preload_grpc(requests)
    now = time.perf_counter_ns()
    window_start = now + int(spec.warmup_s * 1e9)
    window_end = window_start + int(spec.duration_s * 1e9)
    recorder = Recorder(window_start, window_end)
    cpu = CpuWindow()
    host, port = split_endpoint(spec.endpoint)
    connections: list[Connection] = []
    with trio.move_on_at(trio.current_time() + spec.warmup_s + spec.duration_s + STOP_GRACE_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cpu.watch, window_start, window_end)
            if transport == "grpc":
                await _grpc_load(spec, requests, operation, recorder, window_end)
            else:
                for worker in range(spec.connections):
                    connection = Connection(host, port)
                    connections.append(connection)
                    nursery.start_soon(
                        partial(
                            run_gateway_worker, connection, requests, operation, worker,
                            recorder=recorder, stop_ns=window_end,
                        )
                    )  # fmt: skip
    for connection in connections:
        connection.close()
    return summarise(spec, recorder, cpu.percent())
