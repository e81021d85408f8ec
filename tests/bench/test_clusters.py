"""bench.clusters without real members: port blocks, and the errors a start gives."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest

from bench.clusters import (
    HOST,
    ClusterError,
    PortBlock,
    ProcessCluster,
    port_is_free,
)


def test_a_claimed_block_is_not_claimed_again() -> None:
    offsets = [0, 1, 10, 11]
    first = PortBlock.claim(offsets)
    try:
        with pytest.raises(ClusterError, match="in use"):
            PortBlock.claim(offsets, base_port=first.base)
        others = [PortBlock.claim(offsets) for _ in range(5)]
        assert first.base not in {block.base for block in others}
        for block in others:
            block.release()
    finally:
        first.release()
    again = PortBlock.claim(offsets, base_port=first.base)
    again.release()


def test_a_block_with_a_port_in_use_is_refused() -> None:
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert not port_is_free(port)
        with pytest.raises(ClusterError, match="in use"):
            PortBlock.claim([0, 1], base_port=port)


class ScriptCluster(ProcessCluster):
    """Members that run a Python one-liner instead of a real member."""

    system = "script"

    def __init__(self, root: Path, script: str, *, first_member_script: str | None = None) -> None:
        super().__init__(2, root, startup_timeout_s=1.0)
        self.script = script
        self.first_member_script = first_member_script or script

    def member_argv(self, index: int) -> list[str]:
        return [sys.executable, "-c", self.first_member_script if index == 0 else self.script]


def test_a_member_that_exits_early_fails_the_start_with_its_log(tmp_path: Path) -> None:
    """Only the first member fails, so which member's log the error names does not depend on
    which of two failing processes the start notices first; the healthy one is stopped."""
    cluster = ScriptCluster(
        tmp_path,
        "import time; time.sleep(60)",
        first_member_script="import sys; print('bad flag --frobnicate'); sys.exit(3)",
    )
    with pytest.raises(ClusterError) as raised:
        cluster.start()
    message = str(raised.value)
    assert "member m1 exited (code 3) before it was ready" in message
    assert "bad flag --frobnicate" in message
    assert str(cluster.log_path(0)) in message
    assert cluster.running_indexes() == []
    cluster.close()


def test_a_member_that_never_gets_ready_times_out_and_is_stopped(tmp_path: Path) -> None:
    script = "import time; print('waiting for peers', flush=True); time.sleep(60)"
    with pytest.raises(ClusterError) as raised, ScriptCluster(tmp_path, script):
        pass
    message = str(raised.value)
    assert "not ready after 1.0 s" in message
    assert "/health is not true" in message
    assert "waiting for peers" in message


def test_kill_and_restart_of_a_member_process(tmp_path: Path) -> None:
    cluster = ScriptCluster(tmp_path, "import time; time.sleep(60)")
    with pytest.raises(ClusterError):
        cluster.start()  # never ready: no /health
    cluster.restart(0, wait=False)
    first_pid = cluster.pid(0)
    assert cluster.running_indexes() == [0]
    cluster.kill(0, signal.SIGKILL)
    assert cluster.running_indexes() == []
    assert "killed with signal 9" in cluster.log_tail(0)
    with pytest.raises(ClusterError, match="not running"):
        cluster.kill(0)
    cluster.restart(0, wait=False)
    assert cluster.pid(0) not in (None, first_pid)
    cluster.close()
    assert cluster.running_indexes() == []
