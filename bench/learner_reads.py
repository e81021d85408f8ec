"""Read scaling with learners (issue 16 item 5): serializable reads with 0, 1 and 2 learners.

A 3-member troika cluster (``bench.clusters.TroikaCluster`` with ``--troika-max-learners=2``;
etcd 3.4 allows one learner) gets learners added one at a time (``troika member add
--learner``, then ``troika serve --initial-cluster-state existing`` with
``--troika-learner-linearizable-reads``); once a learner serves the preloaded keys, the same
closed-loop load of gRPC ranges (``bench.loadgen_v3``'s ``v3-range-serializable``, without its
preload) is run against every member at once, one client process per member with the same
number of requests in flight each. A serializable range is answered from the member's own
store, so each member added is one more server of reads.

What is reported per learner count: the reads per second of all clients together, each
member's share, and the members' CPU per read (their user plus system CPU during the run,
over the reads answered). On a machine with fewer cores than processes the clients and the
members share the cores, so throughput can grow only while there are idle cores; CPU per
read says whether a member costs more per read when there are more of them (it should not).

``python -m bench.learner_reads --learners 0 1 2 --rounds 3 --connections 8 --duration 10``
prints one line per run and the medians per count; ``--json FILE`` keeps the figures.
``--member-cores 0.25`` caps every member at a quarter of a core (``bench.cpu_quota``, a
cgroup CPU quota; needs root) for the measured rounds, so that each member stands for a
machine of its own and a learner added brings its own budget: the only way to see scaling
out on a machine with fewer cores than members. The
process test for linearizable reads on a learner is ``tests/process/test_learner_reads.py``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import trio

from bench.clusters import _LAUNCHER, PortBlock, TroikaCluster
from bench.cpu_quota import cpu_quota
from bench.loadgen import (
    CpuWindow,
    LoadResult,
    LoadSpec,
    Recorder,
    Workload,
    process_cpu_s,
    summarise,
)
from bench.loadgen_v3 import V3Requests, _grpc_load, preload_grpc

VOTERS: Final = 3
LEARNERS_MAX: Final = 2
CATCH_UP_TIMEOUT_S: Final = 60.0
"""How long a new learner may take to serve the preloaded keys."""
COMMAND_TIMEOUT_S: Final = 30.0
CLIENT_GRACE_S: Final = 30.0
"""A client process's time beyond its warm-up and window (start-up, connection, report)."""
POLL_S: Final = 0.2
ROUNDS_MAX: Final = 10
WORKLOADS: Final[dict[str, Workload]] = {"s": "v3-range-serializable", "l": "v3-range"}
"""``--read s`` (serializable, the default) or ``l`` (linearizable: a ReadIndex round through
the leader for each batch of reads; learners need ``--troika-learner-linearizable-reads``)."""
LEARNER_FLAGS: Final = ("--troika-learner-linearizable-reads=true",)


@dataclass
class Learner:
    """A learner process added to a cluster."""

    name: str
    member_id: int
    client_url: str
    process: subprocess.Popen[bytes]
    ports: PortBlock

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.ports.release()


def troika_command(*args: str) -> Any:
    """``python -m troika <args> -w json``, parsed.

    Raises:
        RuntimeError: the command failed.
    """
    done = subprocess.run(
        [sys.executable, "-m", "troika", *args, "-w", "json"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"troika {' '.join(args)}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def add_learner(
    cluster: TroikaCluster, name: str, data_dir: Path, extra_flags: Sequence[str] = LEARNER_FLAGS
) -> Learner:
    """Add ``name`` as a learner of ``cluster`` and start its process (``existing`` state)."""
    ports = PortBlock.claim([0, 1])
    client = f"http://127.0.0.1:{ports.base}"
    peer = f"http://127.0.0.1:{ports.base + 1}"
    try:
        endpoints = ",".join(cluster.client_urls)
        added = troika_command(
            "member", "add", name, "--learner", f"--peer-urls={peer}", f"--endpoints={endpoints}"
        )
        members = [f"{m.get('name') or name}={','.join(m['peerURLs'])}" for m in added["members"]]
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = (data_dir.parent / f"{name}.log").open("ab")
        argv = [
            sys.executable, "-m", "troika", "serve",
            "--name", name,
            "--data-dir", str(data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", ",".join(members),
            "--initial-cluster-state", "existing",
            "--initial-cluster-token", cluster.layout.token,
            *extra_flags,
        ]  # fmt: skip
        if (
            sys.platform.startswith("linux")
            and threading.current_thread() is threading.main_thread()
        ):
            # killed with us, as TroikaCluster's members are (PR_SET_PDEATHSIG)
            argv = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *argv]
        # its own session, as TroikaCluster starts the voters: with the kernel's autogroup
        # scheduling a session shares CPU as one, so a learner left in ours would share a
        # voter's slice with the clients and every other learner
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
    except BaseException:
        ports.release()
        raise
    return Learner(name, int(added["member"]["ID"]), client, process, ports)


def range_value(client_url: str, key: bytes, *, serializable: bool = True) -> bytes | None:
    """The value of ``key`` read over the gateway (None: absent, or the member refused)."""
    body = {"key": base64.b64encode(key).decode(), "serializable": serializable}
    request = urllib.request.Request(
        client_url + "/v3/kv/range",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=COMMAND_TIMEOUT_S) as response:
            answer = json.loads(response.read())
    except OSError:
        return None
    kvs = answer.get("kvs") or []
    return base64.b64decode(kvs[0].get("value", "")) if kvs else None


def wait_serving(client_url: str, key: bytes, value: bytes, timeout_s: float) -> None:
    """Until ``client_url`` answers ``key`` = ``value`` to a serializable range.

    Raises:
        TimeoutError: it did not in ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while range_value(client_url, key) != value:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{client_url} does not serve {key!r} after {timeout_s} s")
        time.sleep(POLL_S)


# -- the load ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """The load of one run: per member, closed-loop gRPC ranges of the preloaded keys."""

    connections: int = 8
    """Requests in flight per member."""
    duration_s: float = 10.0
    warmup_s: float = 2.0
    read: str = "s"
    """A key of ``WORKLOADS``."""

    def spec(self, endpoint: str) -> LoadSpec:
        return LoadSpec(
            endpoint=endpoint,
            workload=WORKLOADS[self.read],
            connections=self.connections,
            duration_s=self.duration_s,
            warmup_s=self.warmup_s,
        )

    def client_argv(self, endpoint: str, output: Path) -> list[str]:
        return [
            sys.executable, "-m", "bench.learner_reads", "client",
            "--endpoint", endpoint,
            "--connections", str(self.connections),
            "--duration", str(self.duration_s),
            "--warmup", str(self.warmup_s),
            "--read", self.read,
            "--json", str(output),
        ]  # fmt: skip


async def client_load(spec: LoadSpec) -> LoadResult:
    """``run_v3_load`` of ranges without its preload (a learner takes no puts; the keys were
    written through a voter before)."""
    requests = V3Requests(spec)
    now = time.perf_counter_ns()
    window_start = now + int(spec.warmup_s * 1e9)
    window_end = window_start + int(spec.duration_s * 1e9)
    recorder = Recorder(window_start, window_end)
    cpu = CpuWindow()
    with trio.move_on_after(spec.warmup_s + spec.duration_s + CLIENT_GRACE_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cpu.watch, window_start, window_end)
            await _grpc_load(spec, requests, spec.workload, recorder, window_end)
    return summarise(spec, recorder, cpu.percent())


@dataclass
class ScalingPoint:
    """One learner count's run."""

    learners: int
    read: str
    members: int
    connections_per_member: int
    reads_per_s: float
    reads_per_s_by_member: dict[str, float]
    errors: int
    member_cpu_s: dict[str, float]
    server_cpu_us_per_read: float
    client_cpu_percent: float
    p99_ms: dict[str, float] = field(default_factory=dict)


def run_point(
    endpoints: dict[str, str], pids: dict[str, int | None], shape: Shape, learners: int
) -> ScalingPoint:
    """One client process per member, all at once; the members' CPU over the same time."""

    with tempfile.TemporaryDirectory() as scratch:
        outputs = {name: Path(scratch) / f"{name}.json" for name in endpoints}
        cpu_before = {name: process_cpu_s(pid) for name, pid in pids.items()}
        clients = [
            subprocess.Popen(shape.client_argv(url, outputs[name]), start_new_session=True)
            for name, url in endpoints.items()
        ]
        for client in clients:
            client.wait(shape.warmup_s + shape.duration_s + CLIENT_GRACE_S + COMMAND_TIMEOUT_S)
        cpu = {name: process_cpu_s(pid) - cpu_before[name] for name, pid in pids.items()}
        results = {name: json.loads(path.read_text()) for name, path in outputs.items()}
    by_member = {name: round(r["ops_per_s"], 1) for name, r in results.items()}
    reads = sum(r["requests"] for r in results.values())
    # the members' CPU covers warm-up and window: count the reads of both (at the window's rate)
    window_share = (shape.warmup_s + shape.duration_s) / shape.duration_s
    return ScalingPoint(
        learners=learners,
        read=shape.read,
        members=len(endpoints),
        connections_per_member=shape.connections,
        reads_per_s=round(sum(by_member.values()), 1),
        reads_per_s_by_member=by_member,
        errors=sum(r["errors"] for r in results.values()),
        member_cpu_s={name: round(value, 2) for name, value in cpu.items()},
        server_cpu_us_per_read=round(sum(cpu.values()) * 1e6 / max(1.0, reads * window_share), 1),
        client_cpu_percent=round(sum(r["client_cpu_percent"] for r in results.values()), 1),
        p99_ms={name: round(r["latency"]["p99_ms"], 2) for name, r in results.items()},
    )


def run_scaling(
    counts: Sequence[int],
    shape: Shape,
    root: Path,
    rounds: int = 1,
    member_cores: float | None = None,
) -> list[ScalingPoint]:
    """Every learner needed is added first; then each round runs every count in turn (the
    clients load the voters and the first ``count`` learners), so that counts interleave in
    time and a busy moment of a shared machine does not fall on one count only. The CPU is
    every member's, idle learners included. With ``member_cores``, every member is capped at
    that fraction of a core (``bench.cpu_quota``) for the measured rounds."""
    if any(not 0 <= count <= LEARNERS_MAX for count in counts) or not 1 <= rounds <= ROUNDS_MAX:
        raise ValueError(f"learner counts are within 0..{LEARNERS_MAX}, rounds 1..{ROUNDS_MAX}")
    points: list[ScalingPoint] = []
    learners: list[Learner] = []
    voter_flags = (f"--troika-max-learners={LEARNERS_MAX}",)
    with TroikaCluster(VOTERS, root / "cluster", extra_flags=voter_flags) as cluster:
        try:
            leader = cluster.wait_for_leader()
            requests = V3Requests(shape.spec(cluster.client_urls[leader]))
            trio.run(preload_grpc, requests)
            last_key = requests.read_keys[-1]
            while len(learners) < max(counts):
                name = f"learner{len(learners) + 1}"
                learners.append(add_learner(cluster, name, root / name))
                wait_serving(learners[-1].client_url, last_key, requests.value_bytes,
                             CATCH_UP_TIMEOUT_S)  # fmt: skip
            pids = {name: cluster.pid(index) for index, name in enumerate(cluster.names)}
            pids.update({learner.name: learner.process.pid for learner in learners})
            with _capped(pids, member_cores):
                for _ in range(rounds):
                    for count in counts:
                        endpoints = dict(zip(cluster.names, cluster.client_urls, strict=True))
                        endpoints.update({lr.name: lr.client_url for lr in learners[:count]})
                        point = run_point(endpoints, pids, shape, count)
                        print(format_point(point), flush=True)
                        points.append(point)
        finally:
            for learner in learners:
                learner.stop()
    return points


def _capped(
    pids: dict[str, int | None], member_cores: float | None
) -> contextlib.AbstractContextManager[object]:
    """Every running member capped at ``member_cores`` of a core, or nothing done."""
    if member_cores is None:
        return contextlib.nullcontext()
    running = {name: pid for name, pid in pids.items() if pid is not None}
    return cpu_quota(running, member_cores)


def medians(points: Sequence[ScalingPoint]) -> dict[int, tuple[float, float]]:
    """Per learner count: the median reads per second and server CPU microseconds per read."""
    counts = sorted({point.learners for point in points})
    return {
        count: (
            statistics.median(p.reads_per_s for p in points if p.learners == count),
            statistics.median(p.server_cpu_us_per_read for p in points if p.learners == count),
        )
        for count in counts
    }


def format_point(point: ScalingPoint) -> str:
    shares = " ".join(f"{name} {rate:.0f}" for name, rate in point.reads_per_s_by_member.items())
    return (
        f"learners {point.learners} ({point.read}): {point.reads_per_s:8.0f} reads/s ({shares}), "
        f"server cpu {point.server_cpu_us_per_read:.0f} us/read, "
        f"clients {point.client_cpu_percent:.0f}% cpu, errors {point.errors}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.learner_reads``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.learner_reads", description=(__doc__ or "").split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command")
    client = commands.add_parser("client", help="(internal) load one member, write JSON")
    client.add_argument("--endpoint", required=True)
    client.add_argument("--json", type=Path, required=True)
    for target in (parser, client):
        target.add_argument("--connections", "-c", type=int, default=8, help="per member")
        target.add_argument("--duration", "-d", type=float, default=10.0)
        target.add_argument("--warmup", type=float, default=2.0)
        target.add_argument("--read", choices=sorted(WORKLOADS), default="s")
    parser.add_argument("--learners", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=1, help="each count this many times")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--member-cores",
        type=float,
        help="cap every member at this fraction of a core (a cgroup CPU quota; needs root): "
        "each member then stands for a machine of its own",
    )
    arguments = parser.parse_args(argv)
    shape = Shape(arguments.connections, arguments.duration, arguments.warmup, arguments.read)
    if arguments.command == "client":
        result = trio.run(client_load, shape.spec(arguments.endpoint))
        arguments.json.write_text(json.dumps(asdict(result)) + "\n")
        return
    with tempfile.TemporaryDirectory(prefix="troika-learner-reads-") as root:
        points = run_scaling(
            arguments.learners, shape, Path(root), arguments.rounds, arguments.member_cores
        )
    for count, (rate, cpu_us) in medians(points).items():
        print(f"median, {count} learners: {rate:.0f} reads/s, {cpu_us:.0f} us of server cpu/read")
    if arguments.json:
        arguments.json.write_text(json.dumps([asdict(p) for p in points], indent=2) + "\n")


if __name__ == "__main__":
    main()
