"""What deleting a prefix costs the other clients: ``etcdctl del --prefix`` (one DeleteRange,
one revision) against ``troika del-prefix`` (batches at a bounded rate), on a 3-member troika
cluster (processes on loopback).

``python -m bench.del_prefix_bench [KEYS]``: for each way, KEYS keys are written under
``/junk/``, then deleted while a reader sends linearizable gets of another key, one after the
other, to another member; prints the deletion's duration and the reads' p50, p99 and max
latency, beside the same reads on the idle cluster.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import trio

from bench.clusters import TroikaCluster
from net.etcdpb import rpc_pb2
from net.tcp import TcpNetwork
from net.v3.client import V3Client

KEYS_DEFAULT = 20_000
WRITERS = 16


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _fill(url: str, keys: int) -> None:
    client = V3Client(TcpNetwork(), [url], timeout_s=60.0)

    async def writer(start: int) -> None:
        for number in range(start, keys, WRITERS):
            await client.put(rpc_pb2.PutRequest(key=b"/junk/%08d" % number, value=b"x" * 100))

    async with trio.open_nursery() as nursery:
        for start in range(WRITERS):
            nursery.start_soon(writer, start)
    await client.put(rpc_pb2.PutRequest(key=b"/live/key", value=b"v"))
    await client.aclose()


async def _settle(urls: list[str]) -> None:
    """Wait until every member has applied the same revision (followers catch up on the
    fill before anything is measured)."""
    clients = [V3Client(TcpNetwork(), [url], timeout_s=60.0) for url in urls]
    while True:
        revisions = set()
        for client in clients:
            reply = await client.range(rpc_pb2.RangeRequest(key=b"/live/key", serializable=True))
            revisions.add(reply.header.revision)
        if len(revisions) == 1:
            break
        await trio.sleep(0.2)
    for client in clients:
        await client.aclose()
    await trio.sleep(2.0)


async def _reads_while(url: str, running: Callable[[], bool]) -> list[float]:
    client = V3Client(TcpNetwork(), [url], timeout_s=60.0)
    latencies_ms: list[float] = []
    first_s = time.perf_counter()
    slowest = (0.0, 0.0)
    while running():
        started_s = time.perf_counter()
        await client.range(rpc_pb2.RangeRequest(key=b"/live/key"))
        latencies_ms.append((time.perf_counter() - started_s) * 1e3)
        slowest = max(slowest, (latencies_ms[-1], started_s - first_s))
    await client.aclose()
    print(f"  (slowest read: {slowest[0]:.1f} ms, {slowest[1]:.2f} s into the run)")
    return latencies_ms


def _measure(cluster: TroikaCluster, command: list[str] | None, seconds_idle: float = 3.0) -> str:
    reader_url = cluster.client_urls[1]
    process = None
    if command is not None:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    started_s = time.perf_counter()

    def running() -> bool:
        if process is None:
            return time.perf_counter() - started_s < seconds_idle
        return process.poll() is None

    latencies = trio.run(_reads_while, reader_url, running)
    took_s = time.perf_counter() - started_s
    p50_ms, p99_ms = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    return (
        f"{took_s:6.2f} s, {len(latencies):5d} reads, p50 {p50_ms:6.1f} ms, "
        f"p99 {p99_ms:6.1f} ms, max {max(latencies):7.1f} ms"
    )


def main() -> None:
    keys = int(sys.argv[1]) if len(sys.argv) > 1 else KEYS_DEFAULT
    with tempfile.TemporaryDirectory() as root, TroikaCluster(3, root) as cluster:
        cluster.wait_for_leader()
        endpoint = cluster.client_urls[0].removeprefix("http://")
        print(f"idle cluster:                    {_measure(cluster, None)}")
        trio.run(_fill, cluster.client_urls[0], keys)
        trio.run(_settle, cluster.client_urls)
        one_shot = ["etcdctl", "--endpoints", endpoint, "del", "--prefix", "/junk/"]
        print(f"etcdctl del --prefix ({keys} keys): {_measure(cluster, one_shot)}")
        trio.run(_fill, cluster.client_urls[0], keys)
        trio.run(_settle, cluster.client_urls)
        batched = [sys.executable, "-m", "troika", "del-prefix", "/junk/", "--endpoints",
                   endpoint, "--batch", "500", "--rate", "5000"]  # fmt: skip
        started = time.strftime("%H:%M:%S")
        print(f"troika del-prefix ({keys} keys):    {_measure(cluster, batched)}")
        print(f"  (started {started}; members' snapshots since the fill:)")
        for index in range(cluster.size):
            for line in cluster.log_path(index).read_text().splitlines():
                if "snapshot at index" in line and line[11:19] >= started:
                    print(f"  member {index}: {line}")


if __name__ == "__main__":
    main()
