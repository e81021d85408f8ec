"""Put latency while auto-compaction runs (issue 16 item 4): troika's ``adaptive`` mode beside
troika's and etcd 3.4.23's ``periodic`` mode, the same load on the same machine.

``python -m bench.compaction_p99 [--seconds 60] [--repeat 2] [--out FILE.json]`` starts one
single-member cluster per configuration (one member: the 2-core machine is shared, and a
compaction's cost is each member's own) and runs the same load on each, one after another:

- ``KEYS`` keys overwritten in bursts: ``BURST_S`` seconds at ``BUSY_RATE_PER_S`` puts a
  second, then ``QUIET_S`` seconds at ``QUIET_RATE_PER_S`` (the quiet period an adaptive
  compactor can use), for ``--seconds``; each put's latency is recorded with its time;
- ``periodic``: ``--auto-compaction-retention=PERIODIC_RETENTION`` (etcd's duration syntax),
  so compactions land wherever the period falls, busy or quiet;
- ``adaptive``: ``--auto-compaction-retention=ADAPTIVE_RETENTION`` revisions (about the same
  history as the periodic window at the busy rate).

Per run: p50/p99/max of every put, p99 of the puts in busy bursts, the compactions the member
logged, and the member's CPU seconds. Wall-clock time is fine here (a benchmark, not member
code).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import trio

from bench.clusters import EtcdCluster, ProcessCluster, TroikaCluster, etcd_available
from bench.suite import process_cpu_s
from net.etcdpb import rpc_pb2
from net.tcp import TcpNetwork
from net.v3.client import V3Client
from net.v3.errors import RpcError

KEYS: Final = 2000
VALUE_BYTES: Final = 256
BUSY_RATE_PER_S: Final = 150
QUIET_RATE_PER_S: Final = 5
BURST_S: Final = 6.0
QUIET_S: Final = 3.0
WRITERS: Final = 4
PERIODIC_RETENTION: Final = "10s"
ADAPTIVE_RETENTION: Final = "1000"
CONFIGURATIONS: Final = (
    ("troika", "adaptive", ADAPTIVE_RETENTION),
    ("troika", "periodic", PERIODIC_RETENTION),
    ("etcd", "periodic", PERIODIC_RETENTION),
)
COMPACTION_LOG_MARKS: Final = ("auto adaptive compaction", "auto periodic compaction",
                               "Starting auto-compaction")  # fmt: skip


def rate_at(elapsed_s: float) -> int:
    """The load's rate at a time: bursts, then quiet."""
    return BUSY_RATE_PER_S if elapsed_s % (BURST_S + QUIET_S) < BURST_S else QUIET_RATE_PER_S


async def load(url: str, seconds: float) -> list[tuple[float, float, bool]]:
    """(time, latency ms, busy?) of each put, ``WRITERS`` connections sharing the pace."""
    samples: list[tuple[float, float, bool]] = []
    start = time.perf_counter()
    counter = [0]

    async def writer() -> None:
        client = V3Client(TcpNetwork(), [url], timeout_s=10.0)
        due = time.perf_counter()
        while (now := time.perf_counter()) - start < seconds:
            rate = rate_at(now - start)
            due = max(due + WRITERS / rate, now - 1.0)
            await trio.sleep(max(0.0, due - time.perf_counter()))
            counter[0] += 1
            key = b"/compaction/%05d" % (counter[0] % KEYS)
            began = time.perf_counter()
            try:
                await client.put(rpc_pb2.PutRequest(key=key, value=b"x" * VALUE_BYTES))
            except RpcError:
                continue
            elapsed = began - start
            latency_ms = (time.perf_counter() - began) * 1000
            samples.append((elapsed, latency_ms, rate_at(elapsed) == BUSY_RATE_PER_S))
        await client.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(WRITERS):
            nursery.start_soon(writer)
    return samples


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def run_one(system: str, mode: str, retention: str, seconds: float) -> dict[str, Any]:
    flags = [f"--auto-compaction-mode={mode}", f"--auto-compaction-retention={retention}"]
    with tempfile.TemporaryDirectory() as scratch:
        cluster: ProcessCluster = (
            TroikaCluster(1, Path(scratch), extra_flags=flags) if system == "troika"
            else EtcdCluster(1, Path(scratch), extra_flags=flags)
        )  # fmt: skip
        with cluster:
            cluster.wait_for_leader()
            cpu_before_s = process_cpu_s(cluster.pid(0))
            samples = trio.run(load, cluster.client_urls[0], seconds)
            cpu_s = process_cpu_s(cluster.pid(0)) - cpu_before_s
            log_text = cluster.log_path(0).read_text(errors="replace")
    latencies = [latency for _, latency, _ in samples]
    busy = [latency for _, latency, is_busy in samples if is_busy]
    return {
        "system": system,
        "mode": mode,
        "retention": retention,
        "puts": len(samples),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "busy_p99_ms": round(percentile(busy, 0.99), 2),
        "max_ms": round(max(latencies), 2),
        "compactions": sum(log_text.count(mark) for mark in COMPACTION_LOG_MARKS),
        "member_cpu_s": round(cpu_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for repetition in range(args.repeat):
        for system, mode, retention in CONFIGURATIONS:
            if system == "etcd" and not etcd_available():
                continue
            row = {"repetition": repetition, **run_one(system, mode, retention, args.seconds)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
