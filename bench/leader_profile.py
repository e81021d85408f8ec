"""Where a troika leader's CPU goes, per workload, grouped by what the work is for.

``python -m bench.leader_profile -w put -w v3-range -c 16``: for each workload, a fresh
3-member troika cluster runs the ``troika bench`` sample of that workload (``bench.suite``'s
``measure_sample``: the same load, the same watch fan-outs) while py-spy samples the leader;
the leader's main thread is then grouped by the troika module nearest each sampled frame.
The question it answers is the one the performance issue asks of every workload: how much of
the leader goes to carrying requests in and out (Trio's run loop, the HTTP server, ``h2`` and
the gRPC layer) and how much to the key-value work itself (the API, Raft, storage and apply,
the peers).

Needs py-spy (``pip install py-spy``) and the right to read another process's memory (root,
or ``kernel.yama.ptrace_scope`` 0). The raw profiles are kept with ``--out DIR``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.clusters import TroikaCluster
from bench.memory import MEMORY_WORKLOADS
from bench.suite import BENCH_WORKLOADS, BenchPlan, Sample, measure_sample

SAMPLE_RATE_HZ: Final = 250
PROFILE_START_S: Final = 1.0
"""After the warm-up, so that the samples fall inside the measured window."""
LOAD_JOIN_TIMEOUT_S: Final = 120.0
PROFILED_WORKLOADS: Final = tuple(w for w in BENCH_WORKLOADS if w not in MEMORY_WORKLOADS)
"""Every ``troika bench`` workload of requests or deliveries (not the memory ones)."""

TROIKA_PACKAGES: Final = frozenset({"actors", "net", "storage", "sim", "bench"})
"""The top-level packages whose frames are the member's own (``troika/`` is the entry point,
below every frame of the member, so it owns nothing)."""
HTTP2_LIBRARIES: Final = frozenset({"h2", "hpack", "hyperframe"})
WORKER_THREAD_MARK: Final = "trio/_core/_thread_cache.py"
"""The base frame of the threads Trio hands blocking calls to: the fsync and RocksDB workers.
(The main thread's side of a hand-off, ``trio/_threads.py``, is the main thread's work.)"""

RUN_LOOP: Final = "run loop"
HTTP: Final = "HTTP server, sockets"
HTTP2: Final = "h2, hpack"
GRPC: Final = "gRPC (ours)"
API: Final = "API"
RAFT: Final = "Raft"
STORAGE: Final = "storage, apply"
PEERS: Final = "peers"
ACCOUNTING: Final = "accounting"
OTHER: Final = "other member code"
CARRYING: Final = (RUN_LOOP, HTTP, HTTP2, GRPC)
KEY_VALUE_WORK: Final = (API, RAFT, STORAGE, PEERS)
COLUMNS: Final = (*CARRYING, *KEY_VALUE_WORK, ACCOUNTING, OTHER)

MODULE_GROUPS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    # accounting first: storage/usage is accounting, not storage
    (ACCOUNTING, ("actors/usage.py", "actors/metrics.py", "actors/qos.py", "storage/usage")),
    (HTTP, ("net/http", "net/tcp.py", "net/tls.py", "net/gocompat.py", "net/v2auth_http.py")),
    (GRPC, ("net/grpc",)),
    (API, ("net/v2api.py", "net/v3", "net/v2auth.py", "actors/client_api.py",
           "actors/api_backend.py", "actors/v3_backend.py", "actors/auth_gate.py")),
    (RAFT, ("actors/raft", "actors/member.py", "actors/waiters.py", "actors/read_batcher.py")),
    (PEERS, ("net/peers.py", "net/frames.py", "actors/transport_actor.py", "actors/codec.py")),
    (STORAGE, ("storage/", "actors/state_machine.py", "actors/storage_actor.py",
               "actors/kv_applier.py", "actors/apply_actor.py", "actors/alarms.py")),
)  # fmt: skip
"""Module path prefixes by group, the first match winning (``actors/raft`` also covers
``actors/raft_actor.py``)."""

FRAME_PATH = re.compile(r"\(([^()]*?):\d+\)$")


def frame_module(frame: str) -> str:
    """A py-spy raw frame (``function (path:line)``) as the module that ran it: a troika path
    such as ``net/http/server.py``, ``lib:NAME`` for a library, ``other:NAME`` otherwise."""
    found = FRAME_PATH.search(frame)
    path = found.group(1) if found else frame
    path = path.rpartition("site-packages/")[2]
    top = path.split("/")[0]
    if top in TROIKA_PACKAGES:
        return path
    if top in HTTP2_LIBRARIES or top in ("trio", "prometheus_client"):
        return f"lib:{top}"
    return f"other:{top}"


def group_of_module(module: str) -> str:
    for group, prefixes in MODULE_GROUPS:
        if module.startswith(prefixes):
            return group
    return OTHER


def classify(frames: Sequence[str]) -> str | None:
    """The group a sampled stack (outermost frame first) is charged to; None for a worker
    thread's stack, left out because its time is mostly waiting on the disk."""
    if any(WORKER_THREAD_MARK in frame for frame in frames):
        return None
    modules = [frame_module(frame) for frame in frames]
    if any(module.removeprefix("lib:") in HTTP2_LIBRARIES for module in modules):
        return HTTP2
    if "lib:prometheus_client" in modules:
        return ACCOUNTING
    ours = [module for module in modules if module.split("/")[0] in TROIKA_PACKAGES]
    if not ours:
        return RUN_LOOP
    nearest = ours[-1]
    if nearest == "actors/member.py" and modules[-1] == "lib:trio":
        return RUN_LOOP  # the member's nursery waiting in Trio: scheduling, not Raft
    return group_of_module(nearest)


@dataclass(frozen=True)
class Shares:
    """A profile's main-thread samples by group, and those left out: worker threads' and
    stacks with no Python frame in them (py-spy read none: a thread in native code, or a read
    of the running process, ``--nonblocking``, that found no frame)."""

    by_group: Counter[str]
    worker_thread_samples: int
    empty_samples: int

    @property
    def main_thread_samples(self) -> int:
        return sum(self.by_group.values())

    def percent(self, groups: Sequence[str]) -> float:
        total = self.main_thread_samples
        return 100.0 * sum(self.by_group[group] for group in groups) / total if total else 0.0


def shares_of(raw_profile: str) -> Shares:
    """Group the lines of a py-spy ``--format raw`` profile (``frame;frame;... count``)."""
    by_group: Counter[str] = Counter()
    worker = empty = 0
    for line in raw_profile.split("\n"):
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        if not stack.strip():
            empty += int(count_text)
        elif (group := classify(stack.split(";"))) is None:
            worker += int(count_text)
        else:
            by_group[group] += int(count_text)
    return Shares(by_group, worker, empty)


def table(rows: Sequence[tuple[str, Shares]]) -> str:
    """Markdown: one row per workload, the groups' shares of the leader's main thread."""
    header = ["workload", *COLUMNS, "carrying", "key-value work"]
    header.append("samples: main, workers, empty")
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for name, shares in rows:
        cells = [f"{shares.percent([group]):.0f} %" for group in COLUMNS]
        cells += [f"{shares.percent(CARRYING):.0f} %", f"{shares.percent(KEY_VALUE_WORK):.0f} %"]
        cells.append(
            f"{shares.main_thread_samples}, {shares.worker_thread_samples}, {shares.empty_samples}"
        )
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def py_spy_command() -> str | None:
    """py-spy on the PATH, or beside this interpreter (a virtualenv not activated)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def py_spy_record(py_spy: str, pid: int, duration_s: float, out: Path) -> None:
    command = [py_spy, "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE_HZ),
               "--duration", str(max(1, round(duration_s))), "--format", "raw",
               "--nonblocking", "--output", str(out)]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile_workload(
    py_spy: str, plan: BenchPlan, workload: str, connections: int, out: Path
) -> Sample:
    """One sample of ``workload`` against a fresh cluster while py-spy records its leader for
    the sample's measured seconds; the raw profile is written to ``out``."""
    with tempfile.TemporaryDirectory() as scratch, TroikaCluster(3, scratch) as cluster:
        leader_pid = cluster.pid(cluster.wait_for_leader())
        if leader_pid is None:
            raise RuntimeError("the leader has no process")
        samples: list[Sample] = []
        failures: list[Exception] = []
        profiled = threading.Event()

        def run_load() -> None:
            # the v2 watch sample is a burst of writes, not a duration: it runs again (a new
            # prefix each time) until the profile is taken
            try:
                while True:
                    run = len(samples)
                    samples.append(measure_sample(plan, cluster, workload, connections, run))
                    if workload != "watch" or profiled.is_set():
                        return
            except Exception as error:  # handed to the main thread below
                failures.append(error)

        load = threading.Thread(target=run_load)
        load.start()
        try:
            time.sleep(plan.warmup_s + PROFILE_START_S)
            py_spy_record(py_spy, leader_pid, plan.duration_s - PROFILE_START_S, out)
        finally:
            profiled.set()
            load.join(LOAD_JOIN_TIMEOUT_S)
        if failures:
            raise RuntimeError(f"{workload}: the load failed") from failures[0]
        if not samples:
            raise RuntimeError(f"{workload}: the load did not finish")
        return samples[-1]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-w", "--workload", action="append", choices=PROFILED_WORKLOADS)
    parser.add_argument("-c", "--connections", type=int, default=16)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--out", type=Path, help="keep the raw profiles here")
    parser.add_argument("--raw", type=Path, nargs="*", help="only group these raw profiles")
    args = parser.parse_args(argv)
    if args.raw:
        print(table([(path.stem, shares_of(path.read_text())) for path in args.raw]))
        return
    py_spy = py_spy_command()
    if py_spy is None:
        parser.error("py-spy is not installed (pip install py-spy)")
    if args.connections < 1:
        parser.error("--connections must be at least 1")
    if args.duration <= PROFILE_START_S + 1:
        parser.error(f"--duration must be above {PROFILE_START_S + 1:.0f} s")
    workloads = args.workload or ["put"]
    plan = BenchPlan(workloads=tuple(workloads), connections=(args.connections,), runs=1,
                     duration_s=args.duration, warmup_s=2.0)  # fmt: skip
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="leader-profile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for workload in workloads:
        raw = out_dir / f"{workload}.raw"
        sample = profile_workload(py_spy, plan, workload, args.connections, raw)
        print(f"{workload}: {sample.load.ops_per_s:,.0f} ops/s, leader {sample.leader}, "
              f"raw profile {raw}", file=sys.stderr)  # fmt: skip
        rows.append((workload, shares_of(raw.read_text())))
    print(table(rows))


if __name__ == "__main__":
    main()
