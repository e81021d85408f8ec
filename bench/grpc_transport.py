"""What troika's gRPC server costs per unary call, apart from any handler's work.

``python -m bench.grpc_transport -c 1 -c 16 -d 4``: a server process runs ``net.grpc.server``
with one Range method whose handler returns a fixed response (one 256-byte key-value); this
process drives it with the lean client (``bench.grpc_lite``), ``C`` calls in flight on one
HTTP/2 connection, and reads the server's CPU time from ``/proc``. Prints calls per second
and the server's CPU microseconds per call: the transport's whole cost (h2, HPACK, framing,
the call's task and scopes, the socket writes), which every v3 request pays before and
after its handler. CPU per call is the figure to compare: the rate moves with the machine's
load, the CPU per call much less.

``--responses N``: instead, one Watch stream whose handler answers each request with N
watch responses (one event of a 256-byte value each) sent back to back, as a watch stream
with many watchers does when a revision lands; prints responses per second and the
server's CPU microseconds per response.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence

import trio
from google.protobuf.message import Message

from bench.grpc_lite import LiteConnection
from bench.loadgen import process_cpu_s
from net.etcdpb import kv_pb2, rpc_pb2
from net.grpc.server import GrpcServer
from net.v3.methods import CallContext, SendMessage, StreamMethod, unary_method

RANGE_PATH = "/etcdserverpb.KV/Range"
WATCH_PATH = "/etcdserverpb.Watch/Watch"
HOST = "127.0.0.1"
SERVER_START_TIMEOUT_S = 15.0
SERVER_POLL_S = 0.05
WARMUP_S = 0.5
VALUE_BYTES = 256


def serve(port: int) -> None:
    """The server process: a trivial Range on ``port`` until killed."""
    response = rpc_pb2.RangeResponse(
        count=1, kvs=[kv_pb2.KeyValue(key=b"k", value=b"v" * VALUE_BYTES, mod_revision=5)]
    )

    async def handler(request: rpc_pb2.RangeRequest, context: CallContext) -> rpc_pb2.RangeResponse:
        return response

    event = kv_pb2.Event(kv=kv_pb2.KeyValue(key=b"w/k", value=b"v" * VALUE_BYTES, mod_revision=7))

    async def watch(
        requests: AsyncIterator[Message], send: SendMessage, context: CallContext
    ) -> None:
        async for request in requests:
            assert isinstance(request, rpc_pb2.WatchRequest)
            for watch_id in range(request.create_request.start_revision):
                await send(rpc_pb2.WatchResponse(watch_id=watch_id, events=[event]))

    server = GrpcServer(
        {
            RANGE_PATH: unary_method(rpc_pb2.RangeRequest, handler),
            WATCH_PATH: StreamMethod(rpc_pb2.WatchRequest, watch),
        }
    )

    async def main() -> None:
        async def connection(stream: trio.SocketStream) -> None:
            await server.serve_connection(stream)

        await trio.serve_tcp(connection, port, host=HOST)

    trio.run(main)


async def drive(port: int, in_flight: int, duration_s: float) -> int:
    """Calls completed in ``duration_s`` with ``in_flight`` closed-loop callers."""
    request = rpc_pb2.RangeRequest(key=b"k").SerializeToString()
    done = 0
    async with trio.open_nursery() as nursery:
        connection = LiteConnection(HOST, port)
        await nursery.start(connection.run)
        stop_s = trio.current_time() + duration_s

        async def caller() -> None:
            nonlocal done
            while trio.current_time() < stop_s:
                await connection.unary(RANGE_PATH, request, None)
                done += 1

        async with trio.open_nursery() as callers:
            for _ in range(in_flight):
                callers.start_soon(caller)
        nursery.cancel_scope.cancel()
    return done


async def stream(port: int, responses: int, duration_s: float) -> int:
    """Responses received in ``duration_s``, asking for ``responses`` at a time on one Watch
    stream (the next request goes once the last answer of the one before arrived)."""
    received = 0
    batch_done = trio.Event()
    request = rpc_pb2.WatchRequest(
        create_request=rpc_pb2.WatchCreateRequest(key=b"w/", start_revision=responses)
    ).SerializeToString()

    def on_message(message: memoryview) -> None:
        nonlocal received
        received += 1
        if received % responses == 0:
            batch_done.set()

    def on_end(error: object) -> None:
        batch_done.set()

    async with trio.open_nursery() as nursery:
        connection = LiteConnection(HOST, port)
        await nursery.start(connection.run)
        stream_id = connection.open_stream(WATCH_PATH, on_message, on_end)
        stop_s = trio.current_time() + duration_s
        while trio.current_time() < stop_s:
            batch_done = trio.Event()
            await connection.send(stream_id, request)
            await batch_done.wait()
        nursery.cancel_scope.cancel()
    return received


def wait_for_port(port: int) -> None:
    """Return once the server accepts connections (imports take a while on a busy machine)."""
    deadline_s = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        try:
            socket.create_connection((HOST, port), timeout=SERVER_POLL_S).close()
            return
        except OSError:
            if time.monotonic() > deadline_s:
                raise
            time.sleep(SERVER_POLL_S)


def measure(
    in_flight: int, duration_s: float, port: int, responses: int = 0
) -> tuple[float, float]:
    """(calls per second, server CPU microseconds per call) against a fresh server; with
    ``responses``, (responses per second, CPU microseconds per response) on a Watch stream."""
    server = subprocess.Popen([sys.executable, "-m", "bench.grpc_transport", "--serve", str(port)])
    try:
        wait_for_port(port)
        if responses:
            trio.run(stream, port, responses, WARMUP_S)
        else:
            trio.run(drive, port, in_flight, WARMUP_S)
        cpu_before_s, started_s = process_cpu_s(server.pid), time.perf_counter()
        if responses:
            calls = trio.run(stream, port, responses, duration_s)
        else:
            calls = trio.run(drive, port, in_flight, duration_s)
        elapsed_s, cpu_s = time.perf_counter() - started_s, process_cpu_s(server.pid) - cpu_before_s
    finally:
        server.kill()
        server.wait()
    return calls / elapsed_s, cpu_s / max(calls, 1) * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-c", "--in-flight", type=int, action="append", help="repeatable")
    parser.add_argument("-d", "--duration", type=float, default=4.0, help="seconds per sample")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--port", type=int, default=0, help="default: from the process id")
    parser.add_argument("--responses", type=int, default=0, help="watch responses per request")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.serve is not None:
        serve(arguments.serve)
        return
    port = arguments.port or 30000 + os.getpid() % 20000
    if arguments.responses:
        for run in range(1, arguments.runs + 1):
            rate, cpu_us = measure(1, arguments.duration, port, arguments.responses)
            print(
                f"watch responses {arguments.responses}  run {run}  {rate:7.0f} responses/s  "
                f"server CPU {cpu_us:6.1f} us/response"
            )
        return
    for in_flight in arguments.in_flight or [1, 16]:
        for run in range(1, arguments.runs + 1):
            rate, cpu_us = measure(in_flight, arguments.duration, port)
            print(
                f"in flight {in_flight:3d}  run {run}  {rate:7.0f} calls/s  "
                f"server CPU {cpu_us:6.1f} us/call"
            )


if __name__ == "__main__":
    main()
