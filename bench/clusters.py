"""Real clusters as OS processes: troika members and etcd 3.4 members, side by side.

Tests and benchmarks use these to run the real thing: one process per member, TCP on loopback,
data on disk. ``TroikaCluster`` runs ``python -m troika serve`` (the same command line as
``troika cluster up``); ``EtcdCluster`` runs etcd 3.4 with ``--enable-v2=true``. Both have the
same interface::

    with TroikaCluster(3, tmp_path / "troika") as cluster:   # start() on entry
        cluster.client_urls                 # ["http://127.0.0.1:20310", ...]
        cluster.leader_index()              # 1
        cluster.kill(1)                     # kill -9 the leader
        cluster.wait_for_leader()           # a new one, among the live members
        cluster.restart(1)                  # back, and caught up with the leader
        cluster.stop(); cluster.start()     # a full restart on the same ports and data
                                            # (close() on exit: stop, then free the ports)

This runs outside member code, so it is synchronous (``subprocess``, ``http.client``).

Ports. Member i serves clients on base+10i and peers on base+10i+1 (``troika.cluster``'s
layout). Without ``base_port`` a cluster takes a block of 100 ports in 20000-32699, below
Linux's ephemeral range (so outgoing connections do not take them), claimed with an exclusive
``flock`` on ``$TMPDIR/troika-bench-ports/<base>.lock`` (so parallel pytest workers and other
runs on this machine never pick the same block) and checked with a bind of every port it
uses; a start that still loses a port to another program is retried on another block.

Processes. Every member runs in its own session, writes its output to ``<data_root>/<name>.log``
and is stopped with SIGTERM, a grace period, then SIGKILL. None is left behind: ``close()`` runs
on leaving the ``with`` block and at interpreter exit, and a member started from the main
thread on Linux gets SIGKILL from the kernel if this process dies (``PR_SET_PDEATHSIG``).

Readiness. ``start()`` returns once every member answers ``/health`` true, they all name the
same leader in ``/v2/stats/self``, and each lists every member with its client URLs in
``/v2/members`` (etcd serves clients only after publishing them; a troika member may answer
``/health`` first); ``startup_s`` is how long that took. A member that exits early, or a
cluster not ready in time, raises ``ClusterError`` with each member's last log lines.
``python -m bench.clusters`` measures the startup time of both systems.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from troika.cluster import PORT_STRIDE, ClusterLayout

HOST = "127.0.0.1"
MEMBERS_MAX = 9
"""A cluster's ports must fit in one block: 10 per member."""
PORT_BLOCK_SIZE = 100
PORT_BLOCKS_FIRST = 20_000
PORT_BLOCKS_COUNT = 127
"""Blocks 20000-20099 ... 32600-32699: below the ephemeral range (32768-60999 by default)."""
PORT_CLAIM_ATTEMPTS_MAX = 60
START_ATTEMPTS_MAX = 3
"""A start that loses a port to another program is tried again on another block."""

STARTUP_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
KILL_WAIT_S = 10.0
POLL_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 2.0
LOG_TAIL_LINES = 25

ETCD_BINARY = "etcd"
PORT_LOCK_DIRECTORY = Path(tempfile.gettempdir()) / "troika-bench-ports"
PORT_CLASH_MARKERS = ("address already in use", "errno 98")

PR_SET_PDEATHSIG = 1
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    f"ctypes.CDLL(None).prctl({PR_SET_PDEATHSIG}, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)
"""Arms PR_SET_PDEATHSIG, then becomes the member (the setting survives execve)."""


class ClusterError(Exception):
    """A cluster did not start, a member did not come back, or no leader was found."""


# ---------------------------------------------------------------------------- HTTP probes


def http_get(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[int, bytes]:
    """GET ``url`` directly (no proxy, no redirects): (status, body).

    Raises:
        OSError: the connection failed or timed out.
    """
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        path = parts.path or "/"
        connection.request("GET", path + (f"?{parts.query}" if parts.query else ""))
        response = connection.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as error:
        raise OSError(f"GET {url}: {error!r}") from error
    finally:
        connection.close()


def http_get_json(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> Any:
    """GET ``url`` and decode its JSON body; None when the status is not 200.

    Raises:
        OSError: the connection failed, or the body is not JSON.
    """
    status, body = http_get(url, timeout_s)
    if status != 200:
        return None
    try:
        return json.loads(body)
    except ValueError as error:
        raise OSError(f"GET {url}: not JSON: {body[:200]!r}") from error


# ---------------------------------------------------------------------------- ports


class PortBlock:
    """A block of loopback ports held for one cluster until ``release()``."""

    def __init__(self, base: int, lock_descriptor: int) -> None:
        self.base = base
        self._lock_descriptor: int | None = lock_descriptor

    @classmethod
    def claim(cls, offsets: Sequence[int], base_port: int | None = None) -> PortBlock:
        """Claim ``base + offset`` for every offset: the given base, or a free block.

        Raises:
            ClusterError: the given ports are taken, or no free block was found.
        """
        PORT_LOCK_DIRECTORY.mkdir(parents=True, exist_ok=True)
        if base_port is not None:
            block = cls._try(base_port, offsets)
            if block is None:
                raise ClusterError(f"ports {base_port}+{list(offsets)} are in use")
            return block
        rng = random.Random()
        for _ in range(PORT_CLAIM_ATTEMPTS_MAX):
            base = PORT_BLOCKS_FIRST + PORT_BLOCK_SIZE * rng.randrange(PORT_BLOCKS_COUNT)
            block = cls._try(base, offsets)
            if block is not None:
                return block
        raise ClusterError(f"no free block of loopback ports in {PORT_CLAIM_ATTEMPTS_MAX} tries")

    @classmethod
    def _try(cls, base: int, offsets: Sequence[int]) -> PortBlock | None:
        descriptor = os.open(PORT_LOCK_DIRECTORY / f"{base}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return None
        if all(port_is_free(base + offset) for offset in offsets):
            return cls(base, descriptor)
        os.close(descriptor)
        return None

    def release(self) -> None:
        """Let other clusters have these ports (closing the descriptor drops the lock)."""
        if self._lock_descriptor is not None:
            os.close(self._lock_descriptor)
            self._lock_descriptor = None


def port_is_free(port: int) -> bool:
    """Whether a listener could bind ``HOST:port`` now (as servers do, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
            probe.listen(1)
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------- clusters

_LIVE_CLUSTERS: set[ProcessCluster] = set()


def _close_live_clusters() -> None:
    for cluster in list(_LIVE_CLUSTERS):
        cluster.close()


atexit.register(_close_live_clusters)


class ProcessCluster:
    """Members as OS processes on loopback; ``TroikaCluster`` and ``EtcdCluster`` fill in the
    command line.

    Args:
        size: how many members (1 to 9).
        data_root: holds each member's data directory (``<name>``) and log (``<name>.log``).
        base_port: member i serves clients on base+10i and peers on base+10i+1; by default a
            free block is claimed (see the module docstring).
        startup_timeout_s: how long ``start()`` and ``restart()`` wait for readiness.
    """

    system = "cluster"

    def __init__(
        self,
        size: int,
        data_root: Path | str,
        *,
        base_port: int | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> None:
        if not 1 <= size <= MEMBERS_MAX:
            raise ValueError(f"size must be between 1 and {MEMBERS_MAX}, not {size}")
        self.size = size
        self.data_root = Path(data_root).resolve()
        self.startup_timeout_s = startup_timeout_s
        self.startup_s: float | None = None
        """Seconds from the first spawn to a ready cluster, for the last ``start()``."""
        self.restart_s: float | None = None
        """Seconds from spawn to ready, for the last ``restart()``."""
        self._base_port = base_port
        self._ports: PortBlock | None = None
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * size

    # -- layout ----------------------------------------------------------------------

    @property
    def layout(self) -> ClusterLayout:
        """Names, URLs and data directories (``troika cluster up``'s layout)."""
        if self._ports is None:
            raise ClusterError("the cluster has no ports yet: start() it first")
        return ClusterLayout(self.size, self._ports.base, self.data_root, host=HOST)

    @property
    def names(self) -> list[str]:
        """m1, m2, ..."""
        return [f"m{number}" for number in range(1, self.size + 1)]

    @property
    def client_urls(self) -> list[str]:
        """Each member's client URL, by index."""
        return [self.layout.client_url(index) for index in range(self.size)]

    @property
    def peer_urls(self) -> list[str]:
        """Each member's peer URL, by index."""
        return [self.layout.peer_url(index) for index in range(self.size)]

    def data_dir(self, index: int) -> Path:
        """Member ``index``'s data directory."""
        return self.data_root / self.names[index]

    def log_path(self, index: int) -> Path:
        """Member ``index``'s log file (every start appends to it)."""
        return self.data_root / f"{self.names[index]}.log"

    def log_tail(self, index: int, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of member ``index``'s log."""
        try:
            text = self.log_path(index).read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def member_argv(self, index: int) -> list[str]:
        """The command line of member ``index`` (first start and restarts alike)."""
        raise NotImplementedError

    def _port_offsets(self) -> list[int]:
        return [PORT_STRIDE * index + side for index in range(self.size) for side in (0, 1)]

    # -- processes -------------------------------------------------------------------

    def is_running(self, index: int) -> bool:
        """Whether member ``index``'s process is alive."""
        process = self._processes[index]
        return process is not None and process.poll() is None

    def running_indexes(self) -> list[int]:
        """Indexes of the members that are alive."""
        return [index for index in range(self.size) if self.is_running(index)]

    def pid(self, index: int) -> int | None:
        """Member ``index``'s process id while it runs."""
        process = self._processes[index]
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> Self:
        """Start every member and wait until the cluster is ready (``startup_s``).

        A cluster that was stopped starts again on the same ports with the data it has.

        Raises:
            ClusterError: not ready in time, or a member exited (with its last log lines).
        """
        if self.running_indexes():
            raise ClusterError(f"{self.system} cluster is already running")
        self.data_root.mkdir(parents=True, exist_ok=True)
        fresh = not any(self.data_dir(index).exists() for index in range(self.size))
        for attempt in range(1, START_ATTEMPTS_MAX + 1):
            if self._ports is None:
                self._ports = PortBlock.claim(self._port_offsets(), self._base_port)
            _LIVE_CLUSTERS.add(self)
            began = time.monotonic()
            try:
                for index in range(self.size):
                    self._spawn(index)
                self.wait_ready(range(self.size), timeout_s=self.startup_timeout_s)
            except ClusterError as error:
                self.stop()
                retry = fresh and self._base_port is None and attempt < START_ATTEMPTS_MAX
                if not (retry and self._lost_a_port()):
                    raise
                self._note_all(f"retrying on new ports after: {str(error).splitlines()[0]}")
                for index in range(self.size):
                    shutil.rmtree(self.data_dir(index), ignore_errors=True)
                self._ports.release()
                self._ports = None
                continue
            self.startup_s = time.monotonic() - began
            return self
        raise AssertionError("unreachable: the last attempt raises")

    def _lost_a_port(self) -> bool:
        return any(
            marker in self.log_tail(index).lower()
            for index in range(self.size)
            for marker in PORT_CLASH_MARKERS
        )

    def _note_all(self, text: str) -> None:
        for index in range(self.size):
            self._note(index, text)

    def _note(self, index: int, text: str) -> None:
        with self.log_path(index).open("a") as log:
            log.write(f"--- bench.clusters {time.strftime('%H:%M:%S')}: {text}\n")

    def _spawn(self, index: int) -> None:
        argv = self.member_argv(index)
        self._note(index, f"starting {self.names[index]}: {' '.join(argv)}")
        main_thread = threading.current_thread() is threading.main_thread()
        if sys.platform.startswith("linux") and main_thread:
            # The kernel kills the member if this process dies (the thread that forks it
            # must live as long as it, so only the main thread arms this).
            argv = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *argv]
        with self.log_path(index).open("ab") as log:
            self._processes[index] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_root,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                start_new_session=True,
            )

    def stop(self) -> None:
        """Stop every member: SIGTERM, a grace period, SIGKILL. The ports stay claimed.

        The followers go first, then the leader: a leader stopped together with its
        followers tries to hand over leadership to a member that is going away, and etcd
        waits seconds for that; alone, it sees no live peer and stops at once.
        """
        running = self.running_indexes()
        leader = self.leader_index() if len(running) > 1 else None
        self._terminate([index for index in range(self.size) if index != leader])
        if leader is not None:
            self._terminate([leader])

    def close(self) -> None:
        """Stop every member and free the ports."""
        self.stop()
        if self._ports is not None:
            self._ports.release()
            self._ports = None
        _LIVE_CLUSTERS.discard(self)

    def stop_member(self, index: int) -> None:
        """Stop member ``index`` cleanly (SIGTERM, grace, SIGKILL)."""
        self._terminate([index])

    def _terminate(self, indexes: Iterable[int]) -> None:
        chosen = [index for index in indexes if self._processes[index] is not None]
        for index in chosen:
            process = self._processes[index]
            assert process is not None
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for index in chosen:
            process = self._processes[index]
            assert process is not None
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._note(index, f"no exit {STOP_GRACE_S} s after SIGTERM: SIGKILL")
                process.kill()
                process.wait(timeout=KILL_WAIT_S)
            self._processes[index] = None

    def kill(self, index: int, signal_number: int = signal.SIGKILL) -> None:
        """Send ``signal_number`` to member ``index`` (kill -9 by default) and wait for it."""
        process = self._processes[index]
        if process is None or process.poll() is not None:
            raise ClusterError(f"{self.names[index]} is not running")
        process.send_signal(signal_number)
        try:
            process.wait(timeout=KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=KILL_WAIT_S)
        self._note(index, f"killed with signal {signal_number}")
        self._processes[index] = None

    def restart(self, index: int, *, wait: bool = True) -> None:
        """Start member ``index`` again with its data (stopping it first if it runs); with
        ``wait``, return once it is healthy and knows the leader (``restart_s``).

        Raises:
            ClusterError: not ready in time, or it exited.
        """
        if self.is_running(index):
            self.stop_member(index)
        began = time.monotonic()
        self._spawn(index)
        if wait:
            self.wait_ready([index], timeout_s=self.startup_timeout_s)
            self.restart_s = time.monotonic() - began

    # -- state -----------------------------------------------------------------------

    def self_stats(self, index: int) -> dict[str, Any] | None:
        """Member ``index``'s ``/v2/stats/self``, or None if it does not answer."""
        try:
            stats = http_get_json(self.client_urls[index] + "/v2/stats/self")
        except OSError:
            return None
        return stats if isinstance(stats, dict) else None

    def is_healthy(self, index: int) -> bool:
        """Whether member ``index`` answers ``/health`` with true."""
        try:
            health = http_get_json(self.client_urls[index] + "/health")
        except OSError:
            return False
        return isinstance(health, dict) and health.get("health") == "true"

    def leader_index(self) -> int | None:
        """The index of the member that leads, as the live members see it now, or None.

        A member counts when it says it is the leader and names itself as such; when
        two do (an old leader that has not noticed yet), the one more members name wins.
        """
        stats = {index: self.self_stats(index) for index in self.running_indexes()}
        index_of_id = {s["id"]: index for index, s in stats.items() if s is not None}
        named: dict[int, int] = {}
        for s in stats.values():
            leader_id = _leader_id(s)
            if leader_id in index_of_id:
                index = index_of_id[leader_id]
                named[index] = named.get(index, 0) + 1
        claimed = [
            index
            for index, s in stats.items()
            if s is not None and s.get("state") == "StateLeader" and _leader_id(s) == s["id"]
        ]
        if not claimed:
            return None
        return max(claimed, key=lambda index: named.get(index, 0))

    def wait_for_leader(self, timeout_s: float = 20.0) -> int:
        """Wait until the live members agree on a live leader; its index.

        Raises:
            ClusterError: no agreement in time.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            running = self.running_indexes()
            leader = self.leader_index()
            if leader is not None:
                seen = {_leader_id(self.self_stats(index)) for index in running}
                if len(seen) == 1 and self.is_healthy(leader):
                    return leader
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{self.system}: no leader the live members agree on after {timeout_s} s"
                    + self._tails(running)
                )
            time.sleep(POLL_INTERVAL_S)

    def wait_ready(self, indexes: Iterable[int], *, timeout_s: float) -> None:
        """Wait until each member in ``indexes`` answers ``/health`` true, names the same
        leader as the others and lists every member's client URLs.

        Raises:
            ClusterError: a member exited, or not ready in time (with the last log lines).
        """
        chosen = list(indexes)
        deadline = time.monotonic() + timeout_s
        while True:
            for index in chosen:
                process = self._processes[index]
                if process is None or process.poll() is not None:
                    code = None if process is None else process.returncode
                    raise ClusterError(
                        f"{self.system} member {self.names[index]} exited (code {code}) "
                        "before it was ready" + self._tails([index])
                    )
            waiting = self._not_ready(chosen)
            if not waiting:
                return
            if time.monotonic() > deadline:
                reasons = "; ".join(f"{self.names[i]}: {why}" for i, why in waiting.items())
                raise ClusterError(
                    f"{self.system} cluster not ready after {timeout_s} s ({reasons})"
                    + self._tails(list(waiting))
                )
            time.sleep(POLL_INTERVAL_S)

    def _not_ready(self, indexes: list[int]) -> dict[int, str]:
        waiting: dict[int, str] = {}
        leaders: dict[int, str] = {}
        for index in indexes:
            if not self.is_healthy(index):
                waiting[index] = "/health is not true"
                continue
            leader = _leader_id(self.self_stats(index))
            if not leader:
                waiting[index] = "no leader in /v2/stats/self"
                continue
            leaders[index] = leader
            unpublished = self._unpublished(index)
            if unpublished:
                waiting[index] = f"/v2/members has no client URLs for {unpublished}"
        if len(set(leaders.values())) > 1:
            waiting.update({index: f"leader {leader}" for index, leader in leaders.items()})
        return waiting

    def _unpublished(self, index: int) -> list[str]:
        """Members that member ``index`` lists without client URLs (all of them when it does
        not answer). etcd serves clients only once its URLs are published through the log;
        a troika member answers /health before that, so readiness waits for it."""
        try:
            listing = http_get_json(self.client_urls[index] + "/v2/members")
        except OSError:
            listing = None
        if not isinstance(listing, dict):
            return list(self.names)
        return sorted(
            str(member.get("name") or member.get("id"))
            for member in listing.get("members", [])
            if not member.get("clientURLs")
        )

    def _tails(self, indexes: Iterable[int]) -> str:
        return "".join(
            f"\n--- last lines of {self.log_path(index)}:\n{self.log_tail(index)}"
            for index in indexes
        )

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        base = None if self._ports is None else self._ports.base
        return f"{type(self).__name__}(size={self.size}, base_port={base}, {self.data_root})"


def _leader_id(stats: dict[str, Any] | None) -> str:
    """The leader id a ``/v2/stats/self`` names, "" for none."""
    if stats is None:
        return ""
    info = stats.get("leaderInfo")
    leader = info.get("leader", "") if isinstance(info, dict) else ""
    return "" if leader in ("", "0") else str(leader)


class TroikaCluster(ProcessCluster):
    """troika members: ``python -m troika serve`` with etcd's flag names.

    Args:
        extra_flags: more ``troika serve`` flags for every member.
    """

    system = "troika"

    def __init__(
        self,
        size: int,
        data_root: Path | str,
        *,
        base_port: int | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        extra_flags: Sequence[str] = (),
    ) -> None:
        super().__init__(size, data_root, base_port=base_port, startup_timeout_s=startup_timeout_s)
        self.extra_flags = tuple(extra_flags)

    def member_argv(self, index: int) -> list[str]:
        return [*self.layout.serve_argv(index), *self.extra_flags]


class EtcdCluster(ProcessCluster):
    """etcd 3.4 members with the v2 API on, loopback only.

    Args:
        binary: the etcd executable (``etcd`` on the PATH by default).
        extra_flags: more etcd flags for every member.
    """

    system = "etcd"

    def __init__(
        self,
        size: int,
        data_root: Path | str,
        *,
        base_port: int | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        binary: str = ETCD_BINARY,
        extra_flags: Sequence[str] = (),
    ) -> None:
        super().__init__(size, data_root, base_port=base_port, startup_timeout_s=startup_timeout_s)
        found = shutil.which(binary)
        if found is None:
            raise ClusterError(f"{binary} is not installed")
        self.binary = found
        self.extra_flags = tuple(extra_flags)

    def member_argv(self, index: int) -> list[str]:
        layout = self.layout
        return [
            self.binary,
            f"--name={self.names[index]}",
            f"--data-dir={self.data_dir(index)}",
            f"--listen-client-urls={layout.client_url(index)}",
            f"--advertise-client-urls={layout.client_url(index)}",
            f"--listen-peer-urls={layout.peer_url(index)}",
            f"--initial-advertise-peer-urls={layout.peer_url(index)}",
            f"--initial-cluster={layout.initial_cluster()}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token=bench-{layout.base_port}",
            "--enable-v2=true",
            *self.extra_flags,
        ]


def etcd_available() -> bool:
    """Whether the etcd binary is on the PATH."""
    return shutil.which(ETCD_BINARY) is not None


# ---------------------------------------------------------------------------- main


def _measure(kind: type[ProcessCluster], size: int, rounds: int) -> list[str]:
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind.system}-") as root:
        for number in range(rounds):
            cluster = kind(size, Path(root) / str(number))
            with cluster:
                leader = cluster.leader_index()
                killed = cluster.size - 1 if leader == 0 else 0
                cluster.kill(killed)
                cluster.restart(killed)
                full_began = time.monotonic()
                cluster.stop()
                cluster.start()
                full_s = time.monotonic() - full_began
            lines.append(
                f"{kind.system:7} {size} members: first start {cluster.startup_s:.2f} s, "
                f"member restart after kill -9 {cluster.restart_s:.2f} s, "
                f"full stop and start {full_s:.2f} s"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.clusters``: startup times of troika and etcd clusters."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--system", choices=("troika", "etcd", "both"), default="both")
    options = parser.parse_args(argv)
    kinds: list[type[ProcessCluster]] = []
    if options.system in ("troika", "both"):
        kinds.append(TroikaCluster)
    if options.system in ("etcd", "both"):
        if etcd_available():
            kinds.append(EtcdCluster)
        else:
            print("etcd: not installed, skipped")
    for kind in kinds:
        try:
            for line in _measure(kind, options.size, options.rounds):
                print(line, flush=True)
        except ClusterError as error:
            print(f"{kind.system}: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
