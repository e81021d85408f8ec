"""troika's views beyond etcd against 3 member processes, through the real CLI
(``python -m troika``): ``inspect hot`` merges the members' counts, ``inspect usage`` shows the
storage per prefix, ``--html``/``--png`` draw them, ``/metrics`` shows the top prefixes, and
``del-prefix`` deletes a prefix in batches (dry run first), killed with SIGKILL in the middle
and run again to the end, while an ``etcdctl watch`` sees every key deleted once, an untouched
prefix stays and reads go on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from bench.clusters import TroikaCluster, http_get
from net.etcdpb import rpc_pb2
from net.tcp import TcpNetwork
from net.v3.client import V3Client

pytestmark = pytest.mark.process

ETCDCTL = shutil.which("etcdctl")
HOT_KEYS = 120
COLD_KEYS = 12
CLI_TIMEOUT_S = 60.0


def endpoints(cluster: TroikaCluster) -> str:
    return ",".join(url.removeprefix("http://") for url in cluster.client_urls)


def cli(cluster: TroikaCluster, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "troika", *args, "--endpoints", endpoints(cluster)],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def cli_json(cluster: TroikaCluster, *args: str) -> Any:
    return json.loads(cli(cluster, *args, "-w", "json").stdout)


def write_keys(cluster: TroikaCluster) -> None:
    """Puts spread over the members (each counts what it served), then reads of one key."""

    async def main() -> None:
        for index, url in enumerate(cluster.client_urls):
            client = V3Client(TcpNetwork(), [url], timeout_s=30.0)
            for number in range(index, HOT_KEYS, cluster.size):
                await client.put(rpc_pb2.PutRequest(key=b"/hot/%03d" % number, value=b"v" * 50))
            for number in range(index, COLD_KEYS, cluster.size):
                await client.put(rpc_pb2.PutRequest(key=b"/cold/%03d" % number, value=b"c"))
            await client.aclose()
        client = V3Client(TcpNetwork(), [cluster.client_urls[1]], timeout_s=30.0)
        for _ in range(30):
            await client.range(rpc_pb2.RangeRequest(key=b"/hot/007"))
        await client.aclose()

    trio.run(main)


def count_under(cluster: TroikaCluster, prefix: bytes) -> int:
    async def main() -> int:
        client = V3Client(TcpNetwork(), cluster.client_urls, timeout_s=30.0)
        reply = await client.range(
            rpc_pb2.RangeRequest(key=prefix, range_end=prefix[:-1] + b"0", count_only=True)
        )
        await client.aclose()
        return int(reply.count)

    return trio.run(main)


def test_inspect_hot_and_usage_merged_over_the_members(
    troika_cluster: TroikaCluster, tmp_path: Path
) -> None:
    cluster = troika_cluster
    cluster.wait_for_leader()
    write_keys(cluster)
    hot = cli_json(cluster, "inspect", "hot", "--depth", "1")
    assert hot["members"] == 3
    by_prefix = {item["key"]: item for item in hot["items"]}
    assert by_prefix["/hot/"]["count"] == HOT_KEYS + 30 and by_prefix["/hot/"]["error"] == 0
    assert (by_prefix["/hot/"]["writes"], by_prefix["/hot/"]["reads"]) == (HOT_KEYS, 30)
    assert by_prefix["/cold/"]["count"] == COLD_KEYS
    one = cluster.client_urls[0]
    listed = subprocess.run(
        [sys.executable, "-m", "troika", "inspect", "hot", "--cluster", "--endpoints", one,
         "-w", "json"], capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=True,
    )  # fmt: skip
    assert json.loads(listed.stdout)["items"] == hot["items"]  # --cluster: every member asked
    keys = cli_json(cluster, "inspect", "hot", "--depth", "0", "--prefix", "/hot/", "--limit", "1")
    assert keys["items"][0]["key"] == "/hot/007" and keys["items"][0]["count"] == 31

    usage = cli_json(cluster, "inspect", "usage", "--depth", "1")
    rows = {row["prefix"]: row for row in usage["rows"]}
    assert rows["/hot/"]["keys"] == HOT_KEYS and rows["/hot/"]["bytes"] == HOT_KEYS * (8 + 50)
    assert rows["/cold/"]["keys"] == COLD_KEYS and len(usage["revisions"]) == 3

    table = cli(cluster, "inspect", "hot", "--html", str(tmp_path / "hot.html"),
                "--png", str(tmp_path / "hot.png")).stdout  # fmt: skip
    assert "/hot/" in table and "3 member(s)" in table
    assert b"<svg" in (tmp_path / "hot.html").read_bytes()
    assert (tmp_path / "hot.png").read_bytes()[:4] == b"\x89PNG"
    assert "/hot/" in cli(cluster, "inspect", "usage").stdout
    status, metrics = http_get(cluster.client_urls[1] + "/metrics")
    assert status == 200
    assert 'troika_prefix_requests_1m{prefix="/hot/"}' in metrics.decode()


@pytest.mark.skipif(ETCDCTL is None, reason="etcdctl is not installed")
def test_del_prefix_dry_run_then_killed_then_resumed(troika_cluster: TroikaCluster) -> None:
    cluster = troika_cluster
    cluster.wait_for_leader()
    if count_under(cluster, b"/hot/") == 0:
        write_keys(cluster)
    dry = cli(cluster, "del-prefix", "/hot/", "--dry-run", "--batch", "10").stdout
    assert f"would delete {HOT_KEYS} keys" in dry and "12 batches" in dry, dry
    assert count_under(cluster, b"/hot/") == HOT_KEYS

    environment = {**os.environ, "ETCDCTL_API": "3"}
    watcher = subprocess.Popen(
        [ETCDCTL or "etcdctl", "--endpoints", endpoints(cluster), "watch", "--prefix", "/hot/"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=environment, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(watcher.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_for(lambda: put_seen(cluster, lines), "the watcher sees a put")
        command = [sys.executable, "-m", "troika", "del-prefix", "/hot/", "--batch", "10",
                   "--rate", "40", "--endpoints", endpoints(cluster)]  # fmt: skip
        first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        wait_for(lambda: count_under(cluster, b"/hot/") <= HOT_KEYS - 30, "3 batches done")
        first.send_signal(signal.SIGKILL)  # a crash mid-run
        first.wait()
        left = count_under(cluster, b"/hot/")
        assert 0 < left < HOT_KEYS + 1 and (left - 1) % 10 == 0  # whole batches only
        reads_ms = []
        resumed = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        while resumed.poll() is None:  # the cluster goes on serving during the run
            started_s = time.monotonic()
            assert count_under(cluster, b"/cold/") == COLD_KEYS
            reads_ms.append((time.monotonic() - started_s) * 1e3)
        output = resumed.stdout.read() if resumed.stdout else ""
        assert resumed.returncode == 0
        assert f"deleted {left} keys in {-(-left // 10)} batches" in output
        assert count_under(cluster, b"/hot/") == 0 and count_under(cluster, b"/cold/") == COLD_KEYS
        assert reads_ms and max(reads_ms) < 2000, reads_ms
        wait_for(lambda: lines.count("DELETE\n") == HOT_KEYS + 1, "every delete watched")
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    deleted = [lines[i + 1].strip() for i, line in enumerate(lines) if line == "DELETE\n"]
    expected = [f"/hot/{n:03d}" for n in range(HOT_KEYS)] + [SENTINEL.decode()]
    assert sorted(deleted) == sorted(expected)  # each once, as ordinary deletes


SENTINEL = b"/hot/~watched"


def put_seen(cluster: TroikaCluster, lines: list[str]) -> bool:
    """Put the sentinel key (under the prefix: deleted with the rest); whether the watcher
    has shown it yet."""

    async def main() -> None:
        client = V3Client(TcpNetwork(), cluster.client_urls, timeout_s=30.0)
        await client.put(rpc_pb2.PutRequest(key=SENTINEL, value=b"1"))
        await client.aclose()

    trio.run(main)
    return SENTINEL.decode() + "\n" in lines


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = CLI_TIMEOUT_S) -> None:
    deadline_s = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline_s, f"timed out waiting until {what}"
        time.sleep(0.05)
