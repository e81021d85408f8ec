"""Put latency while auto-compaction runs (issue 16 item 4): troika's ``adaptive`` mode beside
troika's and etcd 3.4.23's ``periodic`` mode, the same load on the same machine.

``python -m bench.compaction_p99 [--keys 2000] [--seconds 60] [--repeat 2] [--out FILE.json]``
starts one single-member cluster per configuration (one member: the 2-core machine is shared,
and a compaction's cost is each member's own) and runs the same steps on each, one after
another:

1. **Preload**, auto-compaction off: the ``--keys`` keys (``VALUE_BYTES`` values) written
   ``PRELOAD_VERSIONS`` times each, so the first versions are garbage a compaction reclaims.
   Not put by put (100,000 puts at about 100 a second is 15 minutes of a Python member): as
   v3 Txn requests of ``TXN_PUTS_MAX`` puts (etcd's default ``--max-txn-ops``; 128 x 256-byte
   values is about 40 KiB, far below the 1.5 MiB request limit) on ``PRELOAD_CONNECTIONS``
   connections, each batch of keys written twice in a row (so the garbage is spread evenly
   over the preload's revisions: a Txn is one revision). 100,000 keys are 1,564 revisions.
2. **Restart** the member with the configuration's compaction flags (so no compaction runs
   during the preload, and every mode starts from the same store with the whole preload's
   history to compact).
3. **Measured load**: the keys overwritten in bursts, ``BURST_S`` seconds at
   ``BUSY_RATE_PER_S`` puts a second on ``WRITERS`` connections, then ``QUIET_S`` seconds at
   ``QUIET_RATE_PER_S`` (the quiet period an adaptive compactor can use), for ``--seconds``;
   each put's latency is recorded with its time.

The retentions, chosen so that a compaction of the preload's history lands in the measured
window in every mode:

- ``periodic``: ``PERIODIC_RETENTION`` (10 s, etcd's duration syntax). etcd 3.4's periodic
  compactor (and troika's, which follows it) first compacts one retention after it started, at
  the revision it saw then: about 10 s into the load, at the revision the preload ended, so
  that one compaction reclaims all of the preload's garbage at once, wherever the period falls
  (busy or quiet); later ones reclaim the last 10 s of the load.
- ``adaptive``: R revisions, ``adaptive_retention(keys)``: at least ``ADAPTIVE_RETENTION_MIN``
  (about the history of the periodic window at the busy rate), and at least the preload's
  revisions rounded up to ``ADAPTIVE_RETENTION_STEP`` (2,000 for 100,000 keys). The adaptive
  compactor steps R/10 revisions past the last compaction in each quiet second, never inside
  the last R revisions, and is forced to compact at once only past 4R revisions kept; with R
  at least the preload's revisions the quiet steps reclaim the preload (a tenth of R at a
  time: about 12,800 keys' garbage a step at 100,000 keys) in the first quiet periods, and
  the forced limit is far off (at 100,000 keys a 60 s run logged 18 quiet steps, no forced
  one). A smaller R would also compact the preload within the window, but largely through
  forced compactions during bursts, which is not what the mode is for.

Per run: p50/p99/max of every put, p99 of the puts in busy bursts, p99 of the puts in flight
during a second in which a compaction ran (``compacting``: from the line the member logs when
it starts one to the line it logs when the reclaim is finished, widened to whole seconds;
troika logs the finish at debug level, so troika members run with ``--log-level=debug``, which
adds no line per request), the compactions the member logged (and how many of the adaptive
ones were ``forced``) and the seconds they ran, the preload's seconds and the member's CPU
seconds during the load. Wall-clock time is fine here (a benchmark, not member code).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import trio

from bench.clusters import EtcdCluster, TroikaCluster, etcd_available
from bench.loadgen import process_cpu_s
from net.etcdpb import rpc_pb2
from net.tcp import TcpNetwork
from net.v3.client import V3Client
from net.v3.errors import RpcError

KEYS: Final = 2000
KEYS_MAX: Final = 999_999
"""Keys are ``/compaction/NNNNNN``."""
VALUE_BYTES: Final = 256
BUSY_RATE_PER_S: Final = 150
QUIET_RATE_PER_S: Final = 5
BURST_S: Final = 6.0
QUIET_S: Final = 3.0
WRITERS: Final = 4
CLIENT_TIMEOUT_S: Final = 10.0
PRELOAD_TIMEOUT_S: Final = 60.0
TXN_PUTS_MAX: Final = 128
"""etcd's default ``--max-txn-ops``."""
PRELOAD_CONNECTIONS: Final = 4
PRELOAD_VERSIONS: Final = 2
PERIODIC_RETENTION: Final = "10s"
ADAPTIVE_RETENTION_MIN: Final = 1000
ADAPTIVE_RETENTION_STEP: Final = 1000
TROIKA_FLAGS: Final = ("--log-level=debug",)
"""For the compaction-finished line (see the module docstring)."""
COMPACTION_LOG_MARKS: Final = ("auto adaptive compaction", "auto periodic compaction",
                               "Starting auto-compaction")  # fmt: skip
COMPACTION_START = re.compile(
    r"(?:auto \w+ compaction(?: \(\w+\))?|Starting auto-compaction) at revision (\d+)"
)
COMPACTION_FINISH = re.compile(
    r"(?:compaction at (\d+) finished|finished scheduled compaction at (\d+))"
)
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,]\d+)")
"""troika's ``asctime`` (``,`` then milliseconds) and etcd 3.4's capnslog time (``.``, micro-
seconds), both local time."""


def rate_at(elapsed_s: float) -> int:
    """The load's rate at a time: bursts, then quiet."""
    return BUSY_RATE_PER_S if elapsed_s % (BURST_S + QUIET_S) < BURST_S else QUIET_RATE_PER_S


def key_of(number: int) -> bytes:
    return b"/compaction/%06d" % number


def preload_batches(keys: int) -> list[range]:
    """The key numbers of each preload Txn."""
    return [range(start, min(keys, start + TXN_PUTS_MAX)) for start in range(0, keys, TXN_PUTS_MAX)]


def preload_revisions(keys: int) -> int:
    """The revisions the preload takes (one a Txn)."""
    return PRELOAD_VERSIONS * len(preload_batches(keys))


def adaptive_retention(keys: int) -> int:
    """R for the adaptive mode: at least the preload's revisions (see the module docstring)."""
    step = ADAPTIVE_RETENTION_STEP
    return max(ADAPTIVE_RETENTION_MIN, -(-preload_revisions(keys) // step) * step)


def configurations(keys: int) -> list[tuple[str, str, str]]:
    """(system, mode, retention) of each run, in the order they run."""
    adaptive = str(adaptive_retention(keys))
    return [
        ("troika", "adaptive", adaptive),
        ("troika", "periodic", PERIODIC_RETENTION),
        ("etcd", "periodic", PERIODIC_RETENTION),
    ]


def batch_txn(batch: range, version: int) -> rpc_pb2.TxnRequest:
    value = (b"v%d-" % version).ljust(VALUE_BYTES, b"x")
    puts = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key_of(n), value=value))
            for n in batch]  # fmt: skip
    return rpc_pb2.TxnRequest(success=puts)


async def preload(url: str, keys: int) -> None:
    """Every key written ``PRELOAD_VERSIONS`` times, a batch of keys at a time."""
    batches = preload_batches(keys)
    taken = [0]

    async def loader() -> None:
        client = V3Client(TcpNetwork(), [url], timeout_s=PRELOAD_TIMEOUT_S)
        while taken[0] < len(batches):
            batch = batches[taken[0]]
            taken[0] += 1
            for version in range(PRELOAD_VERSIONS):
                await client.txn(batch_txn(batch, version))
        await client.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(PRELOAD_CONNECTIONS):
            nursery.start_soon(loader)


Sample = tuple[float, float, bool]
"""(start in seconds since the epoch, latency ms, sent during a burst?) of one put."""


async def load(url: str, keys: int, seconds: float) -> list[Sample]:
    """Each put's sample, ``WRITERS`` connections taking turns on one schedule (so up to
    ``WRITERS`` puts are in flight when the member is slow)."""
    samples: list[Sample] = []
    start = time.perf_counter()
    epoch_start = time.time()
    counter = [0]
    next_due = [start]

    async def writer() -> None:
        client = V3Client(TcpNetwork(), [url], timeout_s=CLIENT_TIMEOUT_S)
        while (now := time.perf_counter()) - start < seconds:
            # one schedule for all writers: the puts are evenly spaced, not sent four at once
            due = next_due[0] = max(next_due[0] + 1 / rate_at(now - start), now - 1.0)
            await trio.sleep(max(0.0, due - time.perf_counter()))
            counter[0] += 1
            key = key_of(counter[0] % keys)
            began = time.perf_counter()
            try:
                await client.put(rpc_pb2.PutRequest(key=key, value=b"x" * VALUE_BYTES))
            except RpcError:
                continue
            elapsed = began - start
            latency_ms = (time.perf_counter() - began) * 1000
            busy = rate_at(elapsed) == BUSY_RATE_PER_S
            samples.append((epoch_start + elapsed, latency_ms, busy))
        await client.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(WRITERS):
            nursery.start_soon(writer)
    return samples


def log_time_s(line: str) -> float | None:
    """A log line's time in seconds since the epoch (None if it has none)."""
    found = LOG_TIME.match(line)
    if found is None:
        return None
    stamp = found.group(1).replace(",", ".")
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()


Window = tuple[float, float]
"""(start, finish) of a compaction, in seconds since the epoch."""


def compaction_windows(log_text: str, end_s: float) -> list[Window]:
    """(start, finish) of each compaction the log shows, in seconds since the epoch; a start
    is finished by the first finish line of its revision or a later one (a newer compaction
    that overtook it), or by ``end_s`` if none came."""
    starts: list[tuple[float, int]] = []
    finishes: list[tuple[float, int]] = []
    for line in log_text.splitlines():
        when = log_time_s(line)
        if when is None:
            continue
        if (started := COMPACTION_START.search(line)) is not None:
            starts.append((when, int(started.group(1))))
        elif (finished := COMPACTION_FINISH.search(line)) is not None:
            finishes.append((when, int(finished.group(1) or finished.group(2))))
    windows = []
    for began, revision in starts:
        done = [when for when, upto in finishes if upto >= revision and when >= began]
        windows.append((began, min(done, default=end_s)))
    return windows


def compacting_seconds(windows: list[Window]) -> set[int]:
    """The whole seconds (since the epoch) in which some compaction ran."""
    return {second for start, finish in windows for second in range(int(start), int(finish) + 1)}


def during(samples: list[Sample], windows: list[Window]) -> list[float]:
    """The latencies of the puts in flight at some moment of a second in which a compaction
    ran (whole seconds: a reclaim of a few hundred milliseconds also weighs on the puts just
    after it, and an even 5 puts a second would seldom be in flight during it exactly)."""
    seconds = compacting_seconds(windows)
    return [
        latency
        for began, latency, _ in samples
        if any(s in seconds for s in range(int(began), int(began + latency / 1000) + 1))
    ]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def run_one(system: str, mode: str, retention: str, keys: int, seconds: float) -> dict[str, Any]:
    flags = [f"--auto-compaction-mode={mode}", f"--auto-compaction-retention={retention}"]
    with tempfile.TemporaryDirectory() as scratch:
        cluster: TroikaCluster | EtcdCluster = (
            TroikaCluster(1, Path(scratch), extra_flags=TROIKA_FLAGS) if system == "troika"
            else EtcdCluster(1, Path(scratch))
        )  # fmt: skip
        with cluster:
            cluster.wait_for_leader()
            began = time.perf_counter()
            trio.run(preload, cluster.client_urls[0], keys)
            preload_s = time.perf_counter() - began
            cluster.extra_flags = (*cluster.extra_flags, *flags)
            log_offset = cluster.log_path(0).stat().st_size
            cluster.restart(0)
            cluster.wait_for_leader()
            cpu_before_s = process_cpu_s(cluster.pid(0))
            samples = trio.run(load, cluster.client_urls[0], keys, seconds)
            cpu_s = process_cpu_s(cluster.pid(0)) - cpu_before_s
            end_s = time.time()
            with cluster.log_path(0).open("rb") as log:
                log.seek(log_offset)
                log_text = log.read().decode(errors="replace")
    return summary(system, mode, retention, samples, compaction_windows(log_text, end_s)) | {
        "keys": keys,
        "preload_s": round(preload_s, 1),
        "compactions": sum(log_text.count(mark) for mark in COMPACTION_LOG_MARKS),
        "forced": log_text.count("auto adaptive compaction (forced)"),
        "member_cpu_s": round(cpu_s, 2),
    }


def summary(
    system: str, mode: str, retention: str, samples: list[Sample], windows: list[Window]
) -> dict[str, Any]:
    latencies = [latency for _, latency, _ in samples]
    busy = [latency for _, latency, is_busy in samples if is_busy]
    compacting = during(samples, windows)
    return {
        "system": system,
        "mode": mode,
        "retention": retention,
        "puts": len(samples),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "busy_p99_ms": round(percentile(busy, 0.99), 2),
        "compacting_puts": len(compacting),
        "compacting_p99_ms": round(percentile(compacting, 0.99), 2),
        "max_ms": round(max(latencies), 2),
        "compaction_windows": len(windows),
        "compacting_s": round(sum(finish - start for start, finish in windows), 2),
        "longest_compaction_s": round(max((f - s for s, f in windows), default=0.0), 2),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=KEYS)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not 0 < args.keys <= KEYS_MAX:
        parser.error(f"--keys must be 1 to {KEYS_MAX}")
    rows = []
    for repetition in range(args.repeat):
        for system, mode, retention in configurations(args.keys):
            if system == "etcd" and not etcd_available():
                continue
            row = {
                "repetition": repetition,
                **run_one(system, mode, retention, args.keys, args.seconds),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
