"""Auth state through a Raft snapshot, with real processes: a member is killed (-9), users,
roles and permissions change while it is down, enough entries follow that the leader can only
send it a snapshot (``--snapshot-count=1000``; both systems keep 5,000 entries behind a
snapshot), and then that member alone must know the new user, its rights and the enabled flag.
Run on etcd 3.4.23 and on troika, answers compared; troika's log must show the install.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.clusters import EtcdCluster, ProcessCluster, TroikaCluster, etcd_available
from net.etcdpb import rpc_pb2
from tests.process.test_v3_auth_differential import ROOT, Grpc, Observation, etcdctl

pytestmark = pytest.mark.process

SNAPSHOT_FLAGS = ("--snapshot-count=1000",)
CATCH_UP_ENTRIES = 5_000
ENTRIES_WHILE_DOWN = 6_200
"""More than a snapshot (1,000) plus the entries kept behind it (5,000)."""
PUTS_IN_FLIGHT = 64


def _member_etcdctl(cluster: ProcessCluster, index: int, *args: str, user: str) -> Observation:
    """etcdctl against member ``index`` only."""
    command = ["etcdctl", f"--endpoints={cluster.client_urls[index]}", "--command-timeout=20s"]
    done = subprocess.run(
        [*command, f"--user={user}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ETCDCTL_API": "3"},
        check=False,
    )
    errors = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    return (*args, done.returncode, done.stdout, errors)


def _many_puts(rpc: Grpc, token: str, count: int) -> None:
    method = rpc.target.channel.unary_unary(
        "/etcdserverpb.KV/Put",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=rpc_pb2.PutResponse.FromString,
    )
    metadata = [("token", token)]
    for start in range(0, count, PUTS_IN_FLIGHT):
        futures = [
            method.future(
                rpc_pb2.PutRequest(key=b"filler/%05d" % number, value=b"x"),
                timeout=60,
                metadata=metadata,
            )
            for number in range(start, min(count, start + PUTS_IN_FLIGHT))
        ]
        for future in futures:
            future.result()


def _scenario(cluster: ProcessCluster) -> tuple[list[Observation], int]:
    seen = [
        etcdctl(cluster, "user", "add", ROOT),
        etcdctl(cluster, "auth", "enable"),
        etcdctl(cluster, "put", "snap/a", "1", user=ROOT),
    ]
    leader = cluster.wait_for_leader()
    down = next(index for index in (2, 1) if index != leader)  # a follower, not member 0
    cluster.kill(down)
    seen += [
        etcdctl(cluster, "role", "add", "snap-reader", user=ROOT),
        etcdctl(
            cluster,
            "role",
            "grant-permission",
            "snap-reader",
            "read",
            "--prefix",
            "snap/",
            user=ROOT,
        ),
        etcdctl(cluster, "user", "add", "dave:dpw", user=ROOT),
        etcdctl(cluster, "user", "grant-role", "dave", "snap-reader", user=ROOT),
    ]
    rpc = Grpc(cluster)
    try:
        _many_puts(rpc, rpc.token("root", "rootpw"), ENTRIES_WHILE_DOWN)
    finally:
        rpc.close()
    cluster.restart(down)
    seen += [
        _member_etcdctl(cluster, down, "get", "snap/a", user="dave:dpw"),
        _member_etcdctl(cluster, down, "put", "snap/a", "2", user="dave:dpw"),
        _member_etcdctl(cluster, down, "user", "list", user=ROOT),
        _member_etcdctl(cluster, down, "role", "get", "snap-reader", user=ROOT),
        _member_etcdctl(cluster, down, "get", "filler/06199", "--print-value-only", user=ROOT),
    ]
    return seen, down


def _run(make: Callable[[], ProcessCluster]) -> tuple[list[Observation], str]:
    with make() as cluster:
        seen, down = _scenario(cluster)
        return seen, cluster.log_tail(down, lines=400)


def test_auth_changes_reach_a_member_that_was_down_through_a_snapshot(tmp_path: Path) -> None:
    if not etcd_available():
        pytest.skip("etcd is not installed")
    expected, _ = _run(lambda: EtcdCluster(3, tmp_path / "etcd", extra_flags=SNAPSHOT_FLAGS))
    got, log = _run(lambda: TroikaCluster(3, tmp_path / "troika", extra_flags=SNAPSHOT_FLAGS))
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, f"step {index}:\n etcd:   {want}\n troika: {have}"
    installed = [int(index) for index in re.findall(r"installed a snapshot at index (\d+)", log)]
    # the founding snapshot is at index 1; one past the entries kept behind a snapshot is ours
    assert max(installed, default=0) > CATCH_UP_ENTRIES, "it caught up from the log alone"
