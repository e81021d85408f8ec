"""Adaptive auto-compaction in a real ``troika serve`` (issue 16 item 4): a burst of writes,
then quiet; the leader compacts in small steps during the quiet period, never inside the last
R revisions, and says so in ``/metrics`` and its log."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import trio

from bench.clusters import TroikaCluster, http_get
from net.etcdpb import rpc_pb2
from net.tcp import TcpNetwork
from net.v3.client import V3Client

pytestmark = pytest.mark.process

RETENTION = 200
PUTS = 400
QUIET_WAIT_S = 30.0
QUIET_STEPS = 3


def burst(url: str) -> None:
    async def main() -> None:
        client = V3Client(TcpNetwork(), [url], timeout_s=30.0)
        for number in range(PUTS):
            await client.put(rpc_pb2.PutRequest(key=b"/c/%d" % (number % 20), value=b"v"))
        await client.aclose()

    trio.run(main)


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


def test_quiet_periods_compact_in_small_steps(tmp_path: Path) -> None:
    flags = ["--auto-compaction-mode=adaptive", f"--auto-compaction-retention={RETENTION}"]
    with TroikaCluster(1, tmp_path, extra_flags=flags) as cluster:
        cluster.wait_for_leader()
        url = cluster.client_urls[0]
        burst(url)
        deadline = time.monotonic() + QUIET_WAIT_S
        while time.monotonic() < deadline:
            _, body = http_get(url + "/metrics")
            text = body.decode()
            quiet = metric(text, 'troika_adaptive_compaction_decisions_total{decision="quiet"}')
            if quiet >= QUIET_STEPS:
                break
            time.sleep(0.5)
        assert quiet >= QUIET_STEPS  # several small steps during the quiet period
        assert metric(text, 'troika_adaptive_compaction_decisions_total{decision="forced"}') == 0
        history = metric(text, "troika_adaptive_compaction_history_revisions")
        assert RETENTION <= history < PUTS  # compacting, the retention kept
        log_text = cluster.log_path(0).read_text(errors="replace")
        steps = re.findall(r"auto adaptive compaction \(quiet\) at revision (\d+)", log_text)
        targets = [int(step) for step in steps]
        assert len(targets) >= QUIET_STEPS and targets == sorted(targets)
        assert max(b - a for a, b in zip([0, *targets], targets, strict=False)) <= RETENTION // 10
        assert targets[-1] <= PUTS + 1 - RETENTION
