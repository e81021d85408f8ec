"""``troika cluster up``: a local cluster of member processes on loopback.

Each member is its own ``troika serve`` process (as a real deployment would
run them), its log lines prefixed with its name. Ctrl-C stops every member:
SIGTERM, a grace period, then SIGKILL for any that hang.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

GRACE_PERIOD_S = 5.0
PORT_STRIDE = 10
"""Member i listens for clients on base + 10*i and for peers on base + 10*i + 1."""


@dataclass(frozen=True)
class ClusterLayout:
    """Names, URLs and data directories of a local cluster."""

    size: int
    base_port: int
    data_dir: Path
    host: str = "127.0.0.1"
    token: str = "troika-local"

    def names(self) -> list[str]:
        """m1, m2, ..."""
        return [f"m{number}" for number in range(1, self.size + 1)]

    def client_url(self, index: int) -> str:
        """Member ``index``'s client URL."""
        return f"http://{self.host}:{self.base_port + PORT_STRIDE * index}"

    def peer_url(self, index: int) -> str:
        """Member ``index``'s peer URL."""
        return f"http://{self.host}:{self.base_port + PORT_STRIDE * index + 1}"

    def initial_cluster(self) -> str:
        """The ``--initial-cluster`` every founder gets."""
        return ",".join(f"{name}={self.peer_url(i)}" for i, name in enumerate(self.names()))

    def serve_argv(self, index: int) -> list[str]:
        """The command line of member ``index``."""
        name = self.names()[index]
        return [
            sys.executable,
            "-m",
            "troika",
            "serve",
            "--name", name,
            "--data-dir", str(self.data_dir / name),
            "--listen-client-urls", self.client_url(index),
            "--advertise-client-urls", self.client_url(index),
            "--listen-peer-urls", self.peer_url(index),
            "--initial-advertise-peer-urls", self.peer_url(index),
            "--initial-cluster", self.initial_cluster(),
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--enable-v2=true",
        ]  # fmt: skip


async def _relay(name: str, stream: trio.abc.ReceiveStream) -> None:
    """Print a member's output, each line prefixed with its name."""
    pending = b""
    async for chunk in stream:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            print(f"[{name}] {line.decode(errors='replace')}", flush=True)
    if pending:
        print(f"[{name}] {pending.decode(errors='replace')}", flush=True)


async def _stop(processes: list[trio.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    with trio.move_on_after(GRACE_PERIOD_S):
        for process in processes:
            await process.wait()
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def run_cluster(layout: ClusterLayout, fresh: bool) -> None:
    """Start every member, relay their logs, stop them all on cancellation."""
    if fresh and layout.data_dir.exists():
        shutil.rmtree(layout.data_dir)
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    processes: list[trio.Process] = []
    try:
        async with trio.open_nursery() as nursery:
            for index, name in enumerate(layout.names()):
                process = await trio.lowlevel.open_process(
                    layout.serve_argv(index),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=environment,
                    start_new_session=True,
                )
                processes.append(process)
                assert process.stdout is not None
                nursery.start_soon(_relay, name, process.stdout)
            print("troika cluster up: client URLs", flush=True)
            for index, name in enumerate(layout.names()):
                print(f"  {name}  {layout.client_url(index)}", flush=True)
            endpoints = ",".join(layout.client_url(i) for i in range(layout.size))
            print(f"  try: troika put /hello world --endpoints {endpoints}", flush=True)
            print("  Ctrl-C stops every member", flush=True)
            for process in processes:
                nursery.start_soon(_exit_when_gone, process, nursery)
            nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
    finally:
        with trio.CancelScope(shield=True):
            await _stop(processes)
            print(f"troika cluster: stopped; data kept in {layout.data_dir}", flush=True)


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    """Ctrl-C (SIGINT) or SIGTERM: stop the cluster."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def _exit_when_gone(process: trio.Process, nursery: trio.Nursery) -> None:
    """If a member dies, report it (the others keep running)."""
    code = await process.wait()
    print(f"troika cluster: a member exited with code {code}", flush=True)
