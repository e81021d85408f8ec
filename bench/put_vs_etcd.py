"""Writes per second, troika against etcd 3.4: the same put load on the leader of each.

A 3-member troika cluster and a 3-member etcd 3.4 cluster (``--enable-v2=true``) run on
loopback one after the other, never at the same time, so neither takes CPU from the other.
For each connection count the same load (``bench.loadgen``: v2 ``PUT``s of ``value_size``
bytes to random keys, a warm-up, then ``duration_s`` measured) goes to the cluster's leader.
Before the clusters, the load generator's own ceiling is measured against a trivial server.
Every member's CPU use during each run is recorded, and the leader is checked not to have
changed during it.

    python -m bench.put_vs_etcd                      # 1, 16 and 64 connections, 8 s each
    python -m bench.put_vs_etcd -c 1 16 64 256 -d 30 --warmup 5 --json put.json

Without the ``etcd`` binary it measures troika alone and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import trio

from bench.clusters import EtcdCluster, ProcessCluster, TroikaCluster, etcd_available
from bench.loadgen import (
    CeilingResult,
    LoadResult,
    LoadSpec,
    format_result,
    measure_ceiling,
    process_cpu_s,
    run_load,
)

CLUSTER_SIZE = 3
CEILING_DURATION_S = 3.0
DEFAULT_JSON = Path("put_vs_etcd.json")
BUSY_LOAD_AVERAGE = 0.5
"""A one-minute load average above this before the run is reported: the figures are noisy."""


@dataclass(frozen=True)
class SystemRun:
    """One connection count against one system's leader."""

    system: str
    load: LoadResult
    leader: str
    leader_changed: bool
    member_cpu_percent: dict[str, float]
    """Each member's CPU use over the whole run (warm-up included), % of one core."""
    leader_cpu_ms_per_op: float
    cluster_cpu_ms_per_op: float
    """CPU time a put cost the leader, and every member together (less noisy than ops/s
    on a shared machine: it does not depend on how much CPU the cluster was given)."""


def measure_cluster(
    cluster: ProcessCluster, spec: LoadSpec, connections: Sequence[int]
) -> list[SystemRun]:
    """Start ``cluster``, run the load at each connection count on its leader, stop it."""
    runs: list[SystemRun] = []
    with cluster:
        print(f"{cluster.system}: {cluster.size} members ready in {cluster.startup_s:.1f} s")
        for count in connections:
            leader = cluster.wait_for_leader()
            pids = {cluster.names[i]: cluster.pid(i) for i in range(cluster.size)}
            cpu_before = {name: process_cpu_s(pid or 0) for name, pid in pids.items()}
            began = time.perf_counter()
            load = trio.run(
                run_load, replace(spec, endpoint=cluster.client_urls[leader], connections=count)
            )
            wall = time.perf_counter() - began
            cpu = {
                name: round(100.0 * (process_cpu_s(pid or 0) - cpu_before[name]) / wall, 1)
                for name, pid in pids.items()
            }
            changed = cluster.leader_index() != leader
            name = cluster.names[leader]
            run = SystemRun(
                cluster.system,
                load,
                name,
                changed,
                cpu,
                cpu_ms_per_op(cpu[name], load.ops_per_s),
                cpu_ms_per_op(sum(cpu.values()), load.ops_per_s),
            )
            runs.append(run)
            note = "  LEADER CHANGED DURING THE RUN" if changed else ""
            print(f"  {format_result(load)}{note}", flush=True)
            print(
                f"    member cpu % (leader {name}): {cpu}; cpu ms per put: leader "
                f"{run.leader_cpu_ms_per_op:.3f}, all members {run.cluster_cpu_ms_per_op:.3f}",
                flush=True,
            )
    return runs


def cpu_ms_per_op(cpu_percent: float, ops_per_s: float) -> float:
    """CPU milliseconds per operation from a CPU share (% of one core) and a rate."""
    return round(10.0 * cpu_percent / ops_per_s, 3) if ops_per_s > 0 else 0.0


def format_table(troika: list[SystemRun], etcd: list[SystemRun]) -> str:
    """The side-by-side table."""
    by_connections = {run.load.connections: run for run in etcd}
    lines = [
        "conns | troika ops/s   p50 ms   p99 ms | etcd ops/s   p50 ms   p99 ms | troika/etcd"
        " | leader cpu ms/put troika  etcd",
        "------+--------------------------------+------------------------------+------------"
        "-+-----------------------------",
    ]
    for run in troika:
        load = run.load
        row = (
            f"{load.connections:5d} | {load.ops_per_s:12.0f} {load.latency.p50_ms:8.2f} "
            f"{load.latency.p99_ms:8.2f} |"
        )
        other = by_connections.get(load.connections)
        if other is None:
            row += f" {'(etcd not run)':>28} | {'':10} | {run.leader_cpu_ms_per_op:24.3f}"
        else:
            ratio = load.ops_per_s / other.load.ops_per_s if other.load.ops_per_s else 0.0
            row += (
                f" {other.load.ops_per_s:10.0f} {other.load.latency.p50_ms:8.2f} "
                f"{other.load.latency.p99_ms:8.2f} | {ratio:10.2f} | "
                f"{run.leader_cpu_ms_per_op:24.3f} {other.leader_cpu_ms_per_op:5.3f}"
            )
        lines.append(row)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.put_vs_etcd``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.put_vs_etcd", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--connections", "-c", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", "-d", type=float, default=8.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--key-size", type=int, default=8)
    parser.add_argument("--value-size", type=int, default=256)
    parser.add_argument("--key-space", type=int, default=100_000)
    parser.add_argument("--sequential-keys", action="store_true")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the client's ceiling")
    parser.add_argument("--troika-only", action="store_true")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    parser.add_argument("--data-root", type=Path, help="keep member data and logs here")
    options = parser.parse_args(argv)

    spec = LoadSpec(
        endpoint="http://127.0.0.1:1",
        workload="put",
        duration_s=options.duration,
        warmup_s=options.warmup,
        key_size=options.key_size,
        value_size=options.value_size,
        key_space=options.key_space,
        sequential_keys=options.sequential_keys,
    )
    notes: list[str] = []
    load_average = os.getloadavg()[0]
    if load_average > BUSY_LOAD_AVERAGE:
        notes.append(
            f"the machine was busy before the run (load average {load_average:.1f}): "
            "other processes shared the CPUs with the clusters"
        )
        print(f"warning: {notes[-1]}")
    print(
        f"put: {options.key_size}-byte keys, {options.value_size}-byte values, "
        f"{options.warmup:g} s warm-up + {options.duration:g} s per run, "
        f"{os.cpu_count()} CPUs shared by the client and every member"
    )
    ceilings: list[CeilingResult] = []
    if not options.no_ceiling:
        print("load generator ceiling (trivial server in another process):")
        for count in options.connections:
            ceiling_spec = replace(
                spec, connections=count, duration_s=CEILING_DURATION_S, warmup_s=0.5
            )
            ceiling = trio.run(measure_ceiling, ceiling_spec)
            ceilings.append(ceiling)
            print(f"  {format_result(ceiling.load)}  limited by {ceiling.limited_by}", flush=True)

    with tempfile.TemporaryDirectory(prefix="put-vs-etcd-") as scratch:
        root = options.data_root or Path(scratch)
        troika = measure_cluster(
            TroikaCluster(CLUSTER_SIZE, root / "troika"), spec, options.connections
        )
        etcd: list[SystemRun] = []
        if options.troika_only:
            notes.append("etcd skipped (--troika-only)")
        elif not etcd_available():
            notes.append("etcd is not installed: troika alone (apt-get install etcd-server)")
        else:
            etcd = measure_cluster(
                EtcdCluster(CLUSTER_SIZE, root / "etcd"), spec, options.connections
            )

    print()
    print(format_table(troika, etcd))
    for note in notes:
        print(f"note: {note}")
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "load_average_before": round(load_average, 2),
        },
        "spec": asdict(spec),
        "connections": options.connections,
        "ceiling": [asdict(ceiling) for ceiling in ceilings],
        "troika": [asdict(run) for run in troika],
        "etcd": [asdict(run) for run in etcd],
        "notes": notes,
    }
    options.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
