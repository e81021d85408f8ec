"""bench.loadgen: percentiles, the response parser, and short runs against the trivial server."""

from __future__ import annotations

import socket

import pytest
import trio

from bench.loadgen import (
    TRIVIAL_RESPONSE,
    Connection,
    LatencySummary,
    LoadSpec,
    Requests,
    complete_requests,
    etcd_index,
    run_load,
    serve_trivial,
)


def test_percentiles_are_nearest_rank() -> None:
    summary = LatencySummary.of([ms * 1_000_000 for ms in range(1, 101)])
    assert summary.count == 100
    assert (summary.p50_ms, summary.p90_ms, summary.p99_ms, summary.max_ms) == (50, 90, 99, 100)
    assert summary.mean_ms == pytest.approx(50.5)
    assert LatencySummary.of([]).count == 0


def test_requests_are_pre_encoded_as_etcdctl_sends_them() -> None:
    requests = Requests(LoadSpec("http://127.0.0.1:2379", key_size=4, value_size=3, read_keys=2))
    put = requests.put(requests.key(7), b"?prevIndex=9")
    head, body = put.split(b"\r\n\r\n")
    assert head.startswith(b"PUT /v2/keys/bench/0007?prevIndex=9 HTTP/1.1\r\n")
    assert b"Host: 127.0.0.1:2379" in head
    assert b"Content-Length: 9" in head
    assert body.startswith(b"value=") and len(body) == 9
    assert requests.get_quorum[1].startswith(b"GET /v2/keys/bench/0001?quorum=true HTTP/1.1\r\n")
    assert requests.key(123456) == b"3456"


def test_the_trivial_server_counts_pipelined_requests_with_bodies() -> None:
    buffer = bytearray(b"PUT /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\nGE")
    assert complete_requests(buffer) == 2
    assert buffer == b"GE"
    assert etcd_index(TRIVIAL_RESPONSE.split(b"\r\n\r\n")[0]) == 1


async def test_a_put_run_against_the_trivial_server(nursery: trio.Nursery) -> None:
    port = await nursery.start(serve_trivial, "127.0.0.1", 0)
    spec = LoadSpec(f"http://127.0.0.1:{port}", connections=4, duration_s=0.3, warmup_s=0.1)
    result = await run_load(spec)
    assert result.errors == 0, result.error_kinds
    assert result.requests > 50
    assert result.ops_per_s == pytest.approx(result.requests / 0.3)
    assert result.latency.count == result.requests
    assert 0 < result.latency.p50_ms <= result.latency.p99_ms <= result.latency.max_ms
    assert set(result.by_kind) == {"write"}


@pytest.mark.parametrize("workload", ["cas", "mixed", "get-linearizable"])
async def test_other_workloads_run(nursery: trio.Nursery, workload: str) -> None:
    port = await nursery.start(serve_trivial, "127.0.0.1", 0)
    spec = LoadSpec(
        f"http://127.0.0.1:{port}",
        workload=workload,  # type: ignore[arg-type]
        connections=2,
        duration_s=0.2,
        warmup_s=0.05,
        read_keys=10,
    )
    result = await run_load(spec)
    assert result.errors == 0, result.error_kinds
    assert result.requests > 10


async def test_chunked_responses_and_errors_are_read(nursery: trio.Nursery) -> None:
    listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    replies = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nX-Etcd-Index: 42\r\n\r\n{}",
    ]

    async def server() -> None:
        sock, _ = await listener.accept()
        with sock:
            for reply in replies:
                await sock.recv(4096)
                await sock.send(reply)
            await sock.recv(4096)

    nursery.start_soon(server)
    connection = Connection("127.0.0.1", listener.getsockname()[1])
    await connection.open()
    status, _, body = await connection.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (200, b"abcde")
    status, head, body = await connection.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body, etcd_index(head)) == (404, b"{}", 42)
    connection.close()
    listener.close()


async def _serve_recording(
    methods: list[bytes], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """The trivial server's answer to everything, keeping each request's method (the load
    generator sends one request at a time on a connection, so each read starts with one)."""
    listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        task_status.started(listener.getsockname()[1])

        async def answer(sock: trio.socket.SocketType) -> None:
            with sock:
                while data := await sock.recv(65536):
                    methods.append(data.split(b" ", 1)[0])
                    await sock.send(TRIVIAL_RESPONSE)

        async with trio.open_nursery() as nursery:
            while True:
                sock, _ = await listener.accept()
                nursery.start_soon(answer, sock)


@pytest.mark.parametrize("preload", [True, False])
async def test_a_read_run_writes_its_keys_first_unless_told_they_are_there(
    nursery: trio.Nursery, preload: bool
) -> None:
    methods: list[bytes] = []
    port = await nursery.start(_serve_recording, methods)
    spec = LoadSpec(
        f"http://127.0.0.1:{port}",
        workload="get-serializable",
        connections=2,
        duration_s=0.1,
        warmup_s=0.0,
        read_keys=5,
        preload=preload,
    )
    result = await run_load(spec)
    assert result.errors == 0, result.error_kinds
    assert methods.count(b"PUT") == (5 if preload else 0)
    assert methods.count(b"GET") >= result.requests > 0
