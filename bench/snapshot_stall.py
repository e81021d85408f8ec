"""How long a snapshot of the state machine holds up the apply actor, at N keys.

``python -m bench.snapshot_stall --keys 100000``: a RocksDB store with N MVCC-sized records
(330-byte values) and a RaftStore in it, in a temporary directory; then, as the apply actor
makes a snapshot (``actors.apply_actor``), the records scanned into chunks, each sealed and
written into the RaftStore. Two ways, each timed:

- *inline*: the whole snapshot at once, as the apply actor made it before it moved the
  snapshot to a task of its own: the time every batch waited behind it.
- *stepwise*: ``SNAPSHOT_RECORDS_PER_STEP`` records at a time, as the task does now between
  checkpoints: the longest step is the longest the event loop waits for it.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence

from actors.apply_actor import SNAPSHOT_RECORDS_PER_STEP
from actors.state_machine import ChunkBuilder, chunk_records
from storage.kv import RocksKeyValueStore, WriteBatch
from storage.raft_store import RaftStore, encode_snapshot_chunk

VALUE_BYTES = 330
FILL_BATCH_RECORDS = 5000
PERCENTILE_99 = 0.99
SLOW_STEP_S = 0.010


def fill(kv: RocksKeyValueStore, keys: int) -> None:
    for start in range(0, keys, FILL_BATCH_RECORDS):
        batch = WriteBatch()
        for number in range(start, min(keys, start + FILL_BATCH_RECORDS)):
            batch.put(b"mvcc/k/%012d" % number, b"v" * VALUE_BYTES)
        kv.apply(batch)


def scan(kv: RocksKeyValueStore) -> Iterator[tuple[bytes, bytes]]:
    return kv.scan(b"mvcc/", b"mvcc0")


def inline_s(kv: RocksKeyValueStore, store: RaftStore, index: int) -> tuple[float, int]:
    """Seconds for the whole snapshot at once, and its chunks."""
    started_s = time.perf_counter()
    chunks = 0
    for seq, body in enumerate(chunk_records(scan(kv))):
        store.put_snapshot_chunk(index, False, seq, encode_snapshot_chunk(index, seq, body))
        chunks += 1
    elapsed_s = time.perf_counter() - started_s
    store.clear_snapshot_chunks(index, received=False)
    return elapsed_s, chunks


def step_times_s(kv: RocksKeyValueStore, store: RaftStore, index: int) -> list[float]:
    """Seconds of each bounded step, as the apply actor's snapshot task takes them."""
    records, builder, seq, steps = scan(kv), ChunkBuilder(), 0, []
    while True:
        started_s = time.perf_counter()
        step = list(itertools.islice(records, SNAPSHOT_RECORDS_PER_STEP))
        if not step:
            break
        for key, value in step:
            body = builder.add(key, value)
            if body is not None:
                store.put_snapshot_chunk(index, False, seq, encode_snapshot_chunk(index, seq, body))
                seq += 1
        steps.append(time.perf_counter() - started_s)
    store.clear_snapshot_chunks(index, received=False)
    return sorted(steps)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="snapshot-stall-")
    try:
        kv = RocksKeyValueStore(directory)
        fill(kv, arguments.keys)
        store = RaftStore.open(kv)
        for run in range(arguments.runs):
            whole_s, chunks = inline_s(kv, store, 10 + run)
            steps = step_times_s(kv, store, 100 + run)
            p99_s = steps[int(len(steps) * PERCENTILE_99)]
            slow = sum(step > SLOW_STEP_S for step in steps)
            print(
                f"{arguments.keys} keys, {chunks} chunks: inline {whole_s * 1000:.0f} ms; "
                f"stepwise {sum(steps) * 1000:.0f} ms in {len(steps)} steps, longest "
                f"{steps[-1] * 1000:.1f} ms, p99 {p99_s * 1000:.1f} ms, {slow} over 10 ms"
            )
        kv.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
