"""A disk that fills up: a clean NOSPACE refusal, no crash, nothing acknowledged lost.

Each of 3 ``troika serve`` processes keeps its data directory on its own small tmpfs
(``TMPFS_BYTES``), with ``TROIKA_DISK_RESERVE_BYTES=RESERVE_BYTES`` (``storage.space``). A file
on each tmpfs takes all but a few MiB above the reserve (something else filled the disk), then
writers put ``VALUE_BYTES`` values through every member until the members refuse.

Checked:

1. refusals come in etcd's shape: v2 ``500 {"errorCode":300, "cause":"etcdserver: mvcc:
   database space exceeded"}``, the v3 gateway ``429 {"code":8, "error":"etcdserver: mvcc:
   database space exceeded"}``, gRPC RESOURCE_EXHAUSTED with those words, as etcd answers
   under its NOSPACE alarm; a v3 delete is still taken (it makes room);
2. no member crashed, all stay healthy with one leader, reads are served;
3. once the filler files are deleted, writes are taken again;
4. every acknowledged write is on every member (a quorum read of the whole directory), and
   after the whole cluster is stopped and started again (nothing on disk was left corrupt).

The hard case, a disk full before any reserve is reached (``RESERVE_BYTES=0``): see
``test_a_member_whose_disk_fills_stops_cleanly_and_recovers`` below.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import grpc  # type: ignore[import-untyped]
import pytest

from bench.clusters import TroikaCluster
from net.etcdpb import rpc_pb2
from storage.space import NO_SPACE_MESSAGE, RESERVE_ENVIRONMENT

pytestmark = pytest.mark.process

TMPFS_BYTES = 48 * 1024 * 1024
RESERVE_BYTES = 8 * 1024 * 1024
ROOM_ABOVE_RESERVE_BYTES = 4 * 1024 * 1024
"""What the filler leaves above the reserve: writes fill it, then the members refuse."""
VALUE_BYTES = 32 * 1024
WRITES_MAX = 2000
REFUSALS_IN_A_ROW = 20
REQUEST_TIMEOUT_S = 10.0
RECOVERY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 60.0
FAILED_WRITE_PAUSE_S = 0.05


def mount_tmpfs(path: Path, size_bytes: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def tmpfs_available(folder: Path) -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    probe = folder / "probe"
    try:
        mount_tmpfs(probe, 1024 * 1024)
    except (subprocess.CalledProcessError, OSError) as error:
        return f"cannot mount a tmpfs: {error}"
    unmount(probe)
    return None


@contextlib.contextmanager
def small_disks(root: Path, names: list[str]) -> Iterator[list[Path]]:
    paths = [root / name for name in names]
    try:
        for path in paths:
            mount_tmpfs(path, TMPFS_BYTES)
        yield paths
    finally:
        for path in paths:
            unmount(path)


def fill(disk: Path, leave_bytes: int) -> Path:
    """A file taking all but ``leave_bytes`` of the disk's free space."""
    stats = os.statvfs(disk)
    size = max(0, stats.f_bavail * stats.f_frsize - leave_bytes)
    filler = disk / "filler"
    with filler.open("wb") as out:
        block = b"\0" * (1 << 20)
        while size > 0:
            out.write(block[: min(size, len(block))])
            size -= min(size, len(block))
    return filler


def request(
    url: str, method: str, path: str, body: bytes = b"", content_type: str = ""
) -> tuple[int, bytes]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=REQUEST_TIMEOUT_S)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        connection.request(method, path, body=body, headers=headers)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def v2_put(url: str, key: str, value: str) -> tuple[int, bytes]:
    form = urlencode({"value": value}).encode()
    return request(url, "PUT", f"/v2/keys/{key}", form, "application/x-www-form-urlencoded")


def v3_call(url: str, path: str, body: dict[str, object]) -> tuple[int, bytes]:
    return request(url, "POST", path, json.dumps(body).encode(), "application/json")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def grpc_put(url: str) -> tuple[str, str]:
    """A v3 put over gRPC: (status code name, details)."""
    with grpc.insecure_channel(url.removeprefix("http://")) as channel:
        put = channel.unary_unary(
            "/etcdserverpb.KV/Put",
            request_serializer=rpc_pb2.PutRequest.SerializeToString,
            response_deserializer=rpc_pb2.PutResponse.FromString,
        )
        try:
            put(rpc_pb2.PutRequest(key=b"v3-grpc", value=b"x"), timeout=REQUEST_TIMEOUT_S)
        except grpc.RpcError as error:
            return error.code().name, error.details() or ""
    return "OK", ""


def is_no_space_v2(status: int, body: bytes) -> bool:
    if status != 500:
        return False
    reply = json.loads(body)
    return bool(reply.get("errorCode") == 300 and reply.get("cause") == NO_SPACE_MESSAGE)


def write_until_refused(cluster: TroikaCluster, acknowledged: dict[str, str]) -> int:
    """v2 puts through the members in turn until ``REFUSALS_IN_A_ROW`` were NOSPACE refusals
    in a row; the refusals seen. Any other answer fails the test."""
    refused_in_a_row = refusals = 0
    for number in range(WRITES_MAX):
        url = cluster.client_urls[number % cluster.size]
        key, value = f"full/{number:05d}", f"{number:05d}-" + "v" * VALUE_BYTES
        status, body = v2_put(url, key, value)
        if status in (200, 201):
            acknowledged[key] = value
            refused_in_a_row = 0
            continue
        assert is_no_space_v2(status, body), (status, body[:300])
        refusals += 1
        refused_in_a_row += 1
        if refused_in_a_row >= REFUSALS_IN_A_ROW:
            return refusals
    pytest.fail(f"{WRITES_MAX} writes and no NOSPACE refusal")


def check_every_member_has(cluster: TroikaCluster, acknowledged: dict[str, str]) -> None:
    for url in cluster.client_urls:
        status, body = request(url, "GET", "/v2/keys/full?recursive=true&quorum=true")
        assert status == 200, (url, status, body[:200])
        nodes = json.loads(body)["node"].get("nodes", [])
        stored = {node["key"].removeprefix("/"): node["value"] for node in nodes}
        missing = [key for key in acknowledged if stored.get(key) != acknowledged[key]]
        assert missing == [], f"{url}: acknowledged writes missing or wrong: {missing[:5]}"


@pytest.fixture
def reserve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RESERVE_ENVIRONMENT, str(RESERVE_BYTES))


def test_a_full_disk_refuses_writes_in_etcds_words_and_loses_nothing(
    tmp_path: Path, reserve: None
) -> None:
    why_not = tmpfs_available(tmp_path)
    if why_not is not None:
        pytest.skip(why_not)
    cluster = TroikaCluster(3, tmp_path)
    with small_disks(tmp_path, cluster.names) as disks, cluster:
        leader = cluster.wait_for_leader()
        fillers = [fill(disk, RESERVE_BYTES + ROOM_ABOVE_RESERVE_BYTES) for disk in disks]
        acknowledged: dict[str, str] = {}
        refusals = write_until_refused(cluster, acknowledged)
        assert len(acknowledged) > 10

        # v3 over the gateway: a put is refused as etcd does, a delete goes through.
        status, body = v3_call(
            cluster.client_urls[0], "/v3/kv/put", {"key": b64("v3"), "value": b64("x")}
        )
        assert status == 429, (status, body)
        assert json.loads(body) == {
            "error": NO_SPACE_MESSAGE,
            "message": NO_SPACE_MESSAGE,
            "code": 8,
        }
        assert grpc_put(cluster.client_urls[1]) == ("RESOURCE_EXHAUSTED", NO_SPACE_MESSAGE)
        status, body = v3_call(cluster.client_urls[0], "/v3/kv/deleterange", {"key": b64("none")})
        assert status == 200, (status, body)

        # No crash, one leader, reads served.
        assert cluster.running_indexes() == [0, 1, 2]
        assert all(cluster.is_healthy(index) for index in range(3))
        assert cluster.wait_for_leader() == leader
        check_every_member_has(cluster, acknowledged)

        # Room again: writes are taken.
        for filler in fillers:
            filler.unlink()
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        for index, url in enumerate(cluster.client_urls):
            while True:
                key, value = f"full/after-{index}", "room again"
                status, body = v2_put(url, key, value)
                if status in (200, 201):
                    acknowledged[key] = value
                    break
                assert time.monotonic() < deadline, (status, body[:200])
                time.sleep(0.2)
        check_every_member_has(cluster, acknowledged)

        # A full stop and start: the stores open (nothing corrupt), everything is there.
        cluster.stop()
        cluster.start()
        check_every_member_has(cluster, acknowledged)
        logs = "".join(cluster.log_path(index).read_text() for index in range(3))
        assert "refusing writes (NOSPACE)" in logs and "taking writes again" in logs
        assert "Traceback" not in logs
    print(
        f"disk full: {len(acknowledged)} writes acknowledged, {refusals} refused with NOSPACE, "
        "all on every member after the restart"
    )


def write_until_members_stop(cluster: TroikaCluster, acknowledged: dict[str, str]) -> int:
    """v2 puts through the running members until one has exited; the failed writes."""
    failures = 0
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for number in itertools.count():
        assert time.monotonic() < deadline, "every member still runs on a full disk"
        running = cluster.running_indexes()
        if len(running) < cluster.size:
            return failures
        url = cluster.client_urls[running[number % len(running)]]
        key, value = f"full/{number:05d}", f"{number:05d}-" + "v" * VALUE_BYTES
        try:
            status, _ = v2_put(url, key, value)
        except OSError:
            status = 0
        if status in (200, 201):
            acknowledged[key] = value
        else:
            failures += 1
            time.sleep(FAILED_WRITE_PAUSE_S)
    raise AssertionError("unreachable")


def test_a_member_whose_disk_fills_stops_cleanly_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a reserve the disk really fills: RocksDB fails a write with ENOSPC. The member
    stops (as etcd does when it cannot write its WAL) saying the disk is full and what to do;
    once space is freed and it is started again, nothing acknowledged is lost."""
    why_not = tmpfs_available(tmp_path)
    if why_not is not None:
        pytest.skip(why_not)
    monkeypatch.setenv(RESERVE_ENVIRONMENT, "0")
    cluster = TroikaCluster(3, tmp_path)
    with small_disks(tmp_path, cluster.names) as disks, cluster:
        cluster.wait_for_leader()
        fillers = [fill(disk, ROOM_ABOVE_RESERVE_BYTES) for disk in disks]
        acknowledged: dict[str, str] = {}
        failures = write_until_members_stop(cluster, acknowledged)
        time.sleep(1.0)  # the others may be stopping too
        stopped = [index for index in range(cluster.size) if not cluster.is_running(index)]
        assert stopped
        for index in stopped:
            log = cluster.log_path(index).read_text()
            assert "the disk is full" in log and "Free space on that file system" in log
        for filler in fillers:
            filler.unlink()
        cluster.stop()
        cluster.start()
        check_every_member_has(cluster, acknowledged)
    print(
        f"disk full, no reserve: {len(acknowledged)} writes acknowledged, {failures} failed, "
        f"members {stopped} stopped; after freeing space and a restart all acknowledged "
        "writes are on every member"
    )
