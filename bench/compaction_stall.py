"""The longest apply stall a compaction causes (issue 16 item 4): the MVCC store's reclaim,
timed a step at a time.

``python -m bench.compaction_stall [--keys 100000] [--versions 2]`` writes ``--keys`` keys
``--versions`` times each into an in-memory ``MvccStore`` (one revision a put), compacts at the
current revision, and times every ``compaction_step`` (with ``take_changes``, the records a
step hands the persist): the apply actor runs one step between two applied batches, so the
longest step is the longest the apply path waits for a compaction. For comparison it times the
same reclaim done in one step (what a compaction that is not cut into steps costs). CPU time
(``time.process_time``), so other work on the machine weighs less.
"""

from __future__ import annotations

import argparse
import json
import time

from storage.mvcc import MvccStore
from storage.mvcc.store import COMPACTION_KEYS_PER_STEP


def filled(keys: int, versions: int) -> MvccStore:
    store = MvccStore()
    for version in range(versions):
        for number in range(keys):
            with store.write() as txn:
                txn.put(b"/k/%07d" % number, b"v%d" % version * 32)
    store.take_changes()
    store.take_events()
    return store


def timed_steps(store: MvccStore, keys_max: int) -> list[float]:
    """Milliseconds of CPU of each step until the compaction is finished."""
    store.compact(store.current_revision)
    steps_ms = []
    finished = False
    while not finished:
        began = time.process_time()
        finished = store.compaction_step(keys_max=keys_max, revisions_max=10 * keys_max)
        store.take_changes()
        steps_ms.append((time.process_time() - began) * 1000)
    return steps_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--versions", type=int, default=2)
    args = parser.parse_args()
    for label, keys_max in (("bounded", COMPACTION_KEYS_PER_STEP), ("one step", 10**9)):
        steps_ms = timed_steps(filled(args.keys, args.versions), keys_max)
        print(json.dumps({
            "reclaim": label, "keys": args.keys, "versions": args.versions,
            "keys_per_step": min(keys_max, args.keys), "steps": len(steps_ms),
            "longest_step_ms": round(max(steps_ms), 2), "total_ms": round(sum(steps_ms), 1),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
