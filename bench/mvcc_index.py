"""How the MVCC store's key index was chosen: put throughput and range latency, measured.

``python -m bench.mvcc_index [--keys 10000 100000]`` prints, for each key count:

- the store itself (``storage.mvcc``: a sorted list with ``bisect`` beside a dict, values in
  memory): puts of new keys and of existing keys per second (``take_changes`` every 100
  puts, as the apply stage would), and the latency of a point read, a 100-key range and a
  ``count_only`` over every key;
- the candidate structures on their own, for the same random keys: inserting every key, and a
  100-key range from a random start, with a sorted list + ``bisect.insort``, a
  ``sortedcontainers.SortedList`` (if installed; it is not a dependency of troika) and RocksDB
  iteration (rocksdict, unsynced puts, one iterator per range).

Figures are in the docstring of ``storage.mvcc.index``.
"""

from __future__ import annotations

import argparse
import bisect
import random
import statistics
import tempfile
import time
from collections.abc import Callable

import rocksdict

from storage.mvcc import MvccStore

RANGE_KEYS = 100
SAMPLES = 300


def _keys(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [b"key/%016x" % rng.getrandbits(60) for _ in range(count)]


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def _timed(action: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return _median_us(samples)


def bench_store(keys: list[bytes], rng: random.Random) -> dict[str, float]:
    """The store: puts per second (new keys, then updates), read latencies in microseconds."""
    value = b"v" * 100
    store = MvccStore(track_events=False)
    results: dict[str, float] = {}
    for name in ("put_new_per_s", "put_update_per_s"):
        start = time.perf_counter()
        for number, key in enumerate(keys):
            with store.write() as txn:
                txn.put(key, value)
            if number % 100 == 99:
                store.take_changes()
        results[name] = len(keys) / (time.perf_counter() - start)
    starts = [rng.choice(keys) for _ in range(SAMPLES)]
    ordered = sorted(keys)
    ends = {
        key: ordered[min(bisect.bisect_left(ordered, key) + RANGE_KEYS, len(ordered) - 1)]
        for key in starts
    }
    point = iter(starts * 2)
    results["get_us"] = _timed(lambda: store.range(next(point)), SAMPLES)
    ranged = iter(starts)
    results["range100_us"] = _timed(
        lambda: store.range((start := next(ranged)), ends[start]), SAMPLES
    )
    results["count_all_us"] = _timed(lambda: store.range(b"\0", b"\0", count_only=True), 5)
    return results


def bench_structures(keys: list[bytes], rng: random.Random) -> dict[str, float]:
    """Insert microseconds per key and 100-key range microseconds, per candidate structure."""
    results: dict[str, float] = {}
    starts = [rng.choice(keys) for _ in range(SAMPLES)]

    listed: list[bytes] = []
    start = time.perf_counter()
    for key in keys:
        bisect.insort(listed, key)
    results["list_insert_us"] = (time.perf_counter() - start) / len(keys) * 1e6
    it = iter(starts)

    def list_range() -> object:
        low = bisect.bisect_left(listed, next(it))
        return listed[low : low + RANGE_KEYS]

    results["list_range100_us"] = _timed(list_range, SAMPLES)

    try:
        import sortedcontainers  # type: ignore[import-untyped]  # noqa: PLC0415 (optional)
    except ImportError:
        pass
    else:
        sorted_list = sortedcontainers.SortedList()
        start = time.perf_counter()
        for key in keys:
            sorted_list.add(key)
        results["sortedlist_insert_us"] = (time.perf_counter() - start) / len(keys) * 1e6
        it2 = iter(starts)

        def sorted_range() -> object:
            low = sorted_list.bisect_left(next(it2))
            return list(sorted_list.islice(low, low + RANGE_KEYS))

        results["sortedlist_range100_us"] = _timed(sorted_range, SAMPLES)

    with tempfile.TemporaryDirectory() as directory:
        db = rocksdict.Rdict(directory, rocksdict.Options(raw_mode=True))
        start = time.perf_counter()
        for key in keys:
            db[key] = b"v" * 100
        results["rocksdb_insert_us"] = (time.perf_counter() - start) / len(keys) * 1e6
        it3 = iter(starts)

        def rocks_range() -> object:
            iterator = db.iter()
            iterator.seek(next(it3))
            found: list[tuple[bytes, bytes]] = []
            while iterator.valid() and len(found) < RANGE_KEYS:
                found.append((iterator.key(), iterator.value()))
                iterator.next()
            return found

        results["rocksdb_range100_us"] = _timed(rocks_range, SAMPLES)
        db.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    for count in arguments.keys:
        keys = _keys(count, arguments.seed)
        rng = random.Random(arguments.seed)
        print(f"{count} keys")
        for name, figure in {**bench_store(keys, rng), **bench_structures(keys, rng)}.items():
            print(f"  {name:24} {figure:12.1f}")


if __name__ == "__main__":
    main()
