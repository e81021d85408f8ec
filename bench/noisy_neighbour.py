"""The noisy-neighbour benchmark (issue 16 item 3): does a tenant's limit protect the others?

``python -m bench.noisy_neighbour [--repeat 3] [--seconds 8] [--out FILE.json]`` starts a
3-member troika cluster on loopback and, for each repetition, measures tenant B's put latency
(one connection, paced at ``B_RATE_PER_S`` puts a second to member 0, keys under ``/b/``) in
three phases:

1. ``idle``: B alone;
2. ``flood``: tenant A floods puts under ``/a/`` from ``FLOOD_PROCESSES`` separate processes,
   ``FLOOD_CONNECTIONS`` connections each spread over the three members, each as fast as it is
   answered (refusals included), with no limit on A;
3. ``flood+limit``: the same flood with ``troika qos set /a/ --write-requests-per-s
   A_LIMIT_PER_S`` (in the whole cluster: the serving member and the leader both charge it).

Per phase: B's p50/p99/max and how many of B's puts failed; A's puts accepted and refused a
second; whether every member still answered at the end (the cluster did not fall over). The
flooders are separate processes, so B's client is not starved by them inside one event loop;
all of it shares the machine's cores with the members, as a real noisy neighbour shares
them (``--flood-nice 19`` lowers the flooders' priority: on a 2-core machine their own CPU
otherwise weighs more than anything the members do). Wall-clock time is fine here: this is
a benchmark, not member code.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import trio

from bench.clusters import TroikaCluster, http_get
from bench.loadgen import process_cpu_s
from net.etcdpb import rpc_pb2
from net.tcp import TcpNetwork
from net.v3.client import V3Client
from net.v3.errors import RpcError

B_RATE_PER_S: Final = 50
FLOOD_PROCESSES: Final = 2
FLOOD_CONNECTIONS: Final = 16
A_LIMIT_PER_S: Final = 20
SETTLE_S: Final = 1.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure_b(url: str, seconds: float) -> dict[str, Any]:
    """B's paced puts for ``seconds``: latency figures in ms."""
    client = V3Client(TcpNetwork(), [url], timeout_s=10.0)
    latencies_ms: list[float] = []
    failures = 0
    start = time.perf_counter()
    number = 0
    while time.perf_counter() - start < seconds:
        due = start + number / B_RATE_PER_S
        await trio.sleep(max(0.0, due - time.perf_counter()))
        began = time.perf_counter()
        try:
            await client.put(rpc_pb2.PutRequest(key=b"/b/%05d" % (number % 1000), value=b"b" * 64))
            latencies_ms.append((time.perf_counter() - began) * 1000)
        except RpcError:
            failures += 1
        number += 1
    await client.aclose()
    return {
        "puts": len(latencies_ms),
        "failures": failures,
        "p50_ms": round(statistics.median(latencies_ms), 2),
        "p99_ms": round(percentile(latencies_ms, 0.99), 2),
        "max_ms": round(max(latencies_ms), 2),
    }


def flood_process(urls: list[str], seconds: float, out: Any, nice: int = 0) -> None:
    """One flooding process: ``FLOOD_CONNECTIONS`` clients putting as fast as answered (at
    ``nice``: a flooder on another machine costs this one nothing)."""
    os.nice(nice)
    counts = {"accepted": 0, "refused": 0, "other": 0}

    async def worker(number: int) -> None:
        client = V3Client(TcpNetwork(), [urls[number % len(urls)]], timeout_s=10.0)
        deadline = time.perf_counter() + seconds
        key = 0
        while time.perf_counter() < deadline:
            key += 1
            try:
                await client.put(rpc_pb2.PutRequest(key=b"/a/%d-%d" % (number, key % 500),
                                                    value=b"a" * 64))  # fmt: skip
                counts["accepted"] += 1
            except RpcError as error:
                counts["refused" if "too many requests" in str(error) else "other"] += 1
        await client.aclose()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for number in range(FLOOD_CONNECTIONS):
                nursery.start_soon(worker, number)

    trio.run(main)
    out.put(counts)


def phase(cluster: TroikaCluster, seconds: float, *, flood: bool, nice: int) -> dict[str, Any]:
    """B measured for ``seconds``, with or without A's flood beside it."""
    urls = cluster.client_urls
    queue: Any = multiprocessing.get_context("spawn").Queue()
    flooders = []
    if flood:
        for _ in range(FLOOD_PROCESSES):
            process = multiprocessing.get_context("spawn").Process(
                target=flood_process, args=(urls, seconds + SETTLE_S, queue, nice)
            )
            process.start()
            flooders.append(process)
        time.sleep(SETTLE_S)  # the flood is on before B starts
    pids = [cluster.pid(index) for index in range(cluster.size)]
    cpu_before_s = sum(process_cpu_s(pid) for pid in pids)
    result = trio.run(measure_b, urls[0], seconds)
    result["members_cpu_s"] = round(sum(process_cpu_s(pid) for pid in pids) - cpu_before_s, 2)
    a_counts = {"accepted": 0, "refused": 0, "other": 0}
    for process in flooders:
        process.join(timeout=seconds + 60)
        for name, count in queue.get(timeout=10).items():
            a_counts[name] += count
    total_s = seconds + SETTLE_S
    result["a_accepted_per_s"] = round(a_counts["accepted"] / total_s) if flood else 0
    result["a_refused_per_s"] = round(a_counts["refused"] / total_s) if flood else 0
    result["a_other_errors"] = a_counts["other"]
    result["members_healthy"] = all(http_get(url + "/health")[0] == 200 for url in urls)
    return result


def set_limit(cluster: TroikaCluster, limit: int | None) -> None:
    url = cluster.client_urls[0].removeprefix("http://")
    args = (["set", "/a/", "--write-requests-per-s", str(limit)] if limit is not None
            else ["delete", "/a/"])  # fmt: skip
    subprocess.run([sys.executable, "-m", "troika", "qos", *args, "--endpoints", url],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    time.sleep(SETTLE_S)


def run(
    repeat: int, seconds: float, nice: int = 0, limit: int = A_LIMIT_PER_S
) -> list[dict[str, Any]]:
    """Every repetition's three phases."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch, TroikaCluster(3, Path(scratch)) as cluster:
        cluster.wait_for_leader()
        for repetition in range(repeat):
            idle = phase(cluster, seconds, flood=False, nice=nice)
            flooded = phase(cluster, seconds, flood=True, nice=nice)
            set_limit(cluster, limit)
            limited = phase(cluster, seconds, flood=True, nice=nice)
            set_limit(cluster, None)
            for name, result in (("idle", idle), ("flood", flooded), ("flood+limit", limited)):
                row = {"repetition": repetition, "phase": name, "flood_nice": nice}
                row.update(a_limit=limit, **result)
                row["p99_vs_idle"] = round(result["p99_ms"] / idle["p99_ms"], 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--flood-nice", type=int, default=0,
        help="run the flooders at this nice value (19: as if on other machines)",
    )  # fmt: skip
    parser.add_argument("--limit", type=int, default=A_LIMIT_PER_S, help="A's writes/s in all")
    args = parser.parse_args()
    rows = run(args.repeat, args.seconds, args.flood_nice, args.limit)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
