"""Latency and rate of synced RocksDB writes, with the fsync in a worker thread or inline.

Each configuration opens a fresh ``RocksKeyValueStore`` in a temporary directory and makes
``--writes`` synced writes of ``batch`` records (``--value-bytes`` each) one after another,
timing each ``write(..., sync=True)``. A probe task sleeping 1 ms at a time measures how late
the event loop wakes it: how long the loop stalls while the writes run. A plain file's
``fdatasync`` is timed first, as the disk's own floor.

    python -m bench.storage_fsync --writes 400 --batch 1 10 100
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import trio

from storage.kv import RocksKeyValueStore, WriteBatch

PROBE_INTERVAL_S = 0.001
WARMUP_WRITES = 20


@dataclass(frozen=True)
class FsyncResult:
    """One measured configuration."""

    mode: str
    batch: int
    writes: int
    latency_ms_p50: float
    latency_ms_p99: float
    latency_ms_max: float
    writes_per_second: float
    records_per_second: float
    loop_stall_ms_max: float


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The sample at ``fraction`` of the sorted samples (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def plain_fdatasync_ms(directory: Path, count: int) -> tuple[float, float]:
    """p50 and p99 of appending 128 bytes to a file and fdatasync-ing it."""
    samples: list[float] = []
    descriptor = os.open(directory / "plain", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            os.write(descriptor, b"x" * 128)
            started = time.perf_counter()
            os.fdatasync(descriptor)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(descriptor)
    return percentile(samples, 0.5), percentile(samples, 0.99)


def make_batch(first_key: int, records: int, value_bytes: int) -> WriteBatch:
    batch = WriteBatch()
    for key in range(first_key, first_key + records):
        batch.put(b"bench/%016d" % key, b"v" * value_bytes)
    return batch


async def measure(
    directory: Path, *, fsync_in_thread: bool, batch: int, writes: int, value_bytes: int
) -> FsyncResult:
    """Time ``writes`` synced writes of ``batch`` records each."""
    store = RocksKeyValueStore(directory, fsync_in_thread=fsync_in_thread)
    latencies_ms: list[float] = []
    stall_ms_max = 0.0
    key = 0
    try:
        for _ in range(WARMUP_WRITES):
            await store.write(make_batch(key, batch, value_bytes), sync=True)
            key += batch

        async def probe() -> None:
            nonlocal stall_ms_max
            while True:
                expected = time.perf_counter() + PROBE_INTERVAL_S
                await trio.sleep(PROBE_INTERVAL_S)
                stall_ms_max = max(stall_ms_max, (time.perf_counter() - expected) * 1000)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe)
            started = time.perf_counter()
            for _ in range(writes):
                write_batch = make_batch(key, batch, value_bytes)
                key += batch
                write_started = time.perf_counter()
                await store.write(write_batch, sync=True)
                latencies_ms.append((time.perf_counter() - write_started) * 1000)
            elapsed_s = time.perf_counter() - started
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    return FsyncResult(
        mode="thread" if fsync_in_thread else "inline",
        batch=batch,
        writes=writes,
        latency_ms_p50=round(percentile(latencies_ms, 0.5), 3),
        latency_ms_p99=round(percentile(latencies_ms, 0.99), 3),
        latency_ms_max=round(max(latencies_ms), 3),
        writes_per_second=round(writes / elapsed_s),
        records_per_second=round(writes * batch / elapsed_s),
        loop_stall_ms_max=round(stall_ms_max, 3),
    )


async def run(arguments: argparse.Namespace) -> list[FsyncResult]:
    results: list[FsyncResult] = []
    with tempfile.TemporaryDirectory(prefix="troika-fsync-", dir=arguments.dir) as root:
        p50, p99 = plain_fdatasync_ms(Path(root), arguments.writes)
        print(f"plain file fdatasync: p50 {p50:.3f} ms, p99 {p99:.3f} ms  ({root})")
        for fsync_in_thread in (True, False):
            for batch in arguments.batch:
                directory = Path(root, f"{fsync_in_thread}-{batch}")
                results.append(
                    await measure(
                        directory,
                        fsync_in_thread=fsync_in_thread,
                        batch=batch,
                        writes=arguments.writes,
                        value_bytes=arguments.value_bytes,
                    )
                )
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=400, help="synced writes per configuration")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 10, 100], help="records/write")
    parser.add_argument("--value-bytes", type=int, default=128, help="bytes per record value")
    parser.add_argument("--dir", default=None, help="where to make the temporary directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    arguments = parser.parse_args(argv)
    results = trio.run(run, arguments)
    if arguments.json:
        for result in results:
            print(json.dumps(asdict(result)))
        return
    header = (
        f"{'fsync':>6} {'batch':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'writes/s':>9} {'records/s':>10} {'loop stall max ms':>18}"
    )
    print(header)
    for result in results:
        print(
            f"{result.mode:>6} {result.batch:>5} {result.latency_ms_p50:>8.3f} "
            f"{result.latency_ms_p99:>8.3f} {result.latency_ms_max:>8.3f} "
            f"{result.writes_per_second:>9} {result.records_per_second:>10} "
            f"{result.loop_stall_ms_max:>18.3f}"
        )


if __name__ == "__main__":
    main()
