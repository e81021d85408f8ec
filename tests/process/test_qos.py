"""Per-tenant QoS against 3 member processes, through the real CLI (``python -m troika qos``):
limits set through one member are listed alike by every member; a flood of puts on another
member gets "etcdserver: too many requests" and the refused puts change nothing while another
tenant is served; a space quota refuses the same writes on every member (etcdctl shows the
error), and the quota usage agrees across members after a member is killed and restarted; a
``leases_max`` tenant refuses ``etcdctl put --lease`` of a second lease on every member."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest
import trio

from bench.clusters import TroikaCluster, http_get
from net.etcdpb import rpc_pb2
from net.tcp import TcpNetwork
from net.v3.client import V3Client
from net.v3.errors import RpcError, StatusCode

pytestmark = pytest.mark.process

ETCDCTL = shutil.which("etcdctl")
CLI_TIMEOUT_S = 60.0
FLOOD_PUTS = 300
FLOOD_TASKS = 8
QUOTA_KEYS = 10


def endpoint(url: str) -> str:
    return url.removeprefix("http://")


def cli(url: str, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "troika", "qos", *args, "--endpoints", endpoint(url), "-w", "json"],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def qos_of(url: str) -> Any:
    status, body = http_get(url + "/troika/v1/qos")
    assert status == 200, body
    return json.loads(body)


def flood(url: str, prefix: bytes) -> tuple[int, int, list[str]]:
    """Puts as fast as ``FLOOD_TASKS`` connections go: (accepted, refused, other errors)."""
    accepted, refused, other = 0, 0, []

    async def worker(number: int) -> None:
        nonlocal accepted, refused
        client = V3Client(TcpNetwork(), [url], timeout_s=30.0)
        for index in range(number, FLOOD_PUTS, FLOOD_TASKS):
            try:
                await client.put(rpc_pb2.PutRequest(key=prefix + b"%04d" % index, value=b"x"))
                accepted += 1
            except RpcError as error:
                message = str(error)
                if error.code is StatusCode.RESOURCE_EXHAUSTED and "too many requests" in message:
                    refused += 1
                else:
                    other.append(message)
        await client.aclose()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for number in range(FLOOD_TASKS):
                nursery.start_soon(worker, number)

    trio.run(main)
    return accepted, refused, other


def count_under(url: str, prefix: bytes) -> int:
    async def main() -> int:
        client = V3Client(TcpNetwork(), [url], timeout_s=30.0)
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        reply = await client.range(rpc_pb2.RangeRequest(key=prefix, range_end=end, count_only=True))
        await client.aclose()
        return int(reply.count)

    return trio.run(main)


def put_all(url: str, keys: list[bytes]) -> list[str]:
    """Each put's outcome: "ok" or the error's message."""

    async def main() -> list[str]:
        client = V3Client(TcpNetwork(), [url], timeout_s=30.0)
        outcomes = []
        for key in keys:
            try:
                await client.put(rpc_pb2.PutRequest(key=key, value=b"v"))
                outcomes.append("ok")
            except RpcError as error:
                outcomes.append(str(error))
        await client.aclose()
        return outcomes

    return trio.run(main)


def test_limits_replicated_and_a_flood_refused_unchanged(troika_cluster: TroikaCluster) -> None:
    cluster = troika_cluster
    cluster.wait_for_leader()
    urls = cluster.client_urls
    cli(urls[0], "set", "/flood/", "--write-requests-per-s", "10")
    for url in urls:  # every member holds the limit (wait for it to be applied)
        for _ in range(50):
            if qos_of(url)["tenants"]:
                break
            trio.run(trio.sleep, 0.1)
        listed = cli(url, "list")["tenants"]
        assert listed == [{"prefix": "/flood/", "write_requests_per_s": 10}], url
    assert cli(urls[2], "get", "/flood/")["tenants"][0]["write_requests_per_s"] == 10

    accepted, refused, other = flood(urls[2], b"/flood/")
    assert other == [] and refused > 0 and accepted + refused == FLOOD_PUTS
    assert count_under(urls[0], b"/flood/") == accepted  # refused puts changed nothing
    assert qos_of(urls[2])["refused"] >= refused
    assert put_all(urls[1], [b"/calm/%d" % n for n in range(50)]) == ["ok"] * 50
    cli(urls[1], "delete", "/flood/")
    trio.run(trio.sleep, 0.5)
    assert flood(urls[2], b"/flood-again/")[1] == 0


def test_quota_agrees_on_every_member_and_after_a_restart(troika_cluster: TroikaCluster) -> None:
    cluster = troika_cluster
    cluster.wait_for_leader()
    urls = cluster.client_urls
    cli(urls[1], "set", "/quota/", "--keys-max", str(QUOTA_KEYS), "--stored-bytes-max", "1000")
    trio.run(trio.sleep, 0.5)
    outcomes = [put_all(url, [b"/quota/%s-%d" % (url[-5:].encode(), n) for n in range(5)])
                for url in urls]  # fmt: skip
    flat = [o for member in outcomes for o in member]
    assert flat.count("ok") == QUOTA_KEYS
    assert set(flat) == {"ok", "etcdserver: mvcc: tenant quota exceeded"}
    assert count_under(urls[0], b"/quota/") == QUOTA_KEYS
    if ETCDCTL is not None:
        done = subprocess.run(
            [ETCDCTL, "--endpoints", endpoint(urls[2]), "put", "/quota/etcdctl", "v"],
            capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, check=False,
        )  # fmt: skip
        assert done.returncode != 0 and "tenant quota exceeded" in done.stderr, done.stderr
    trio.run(trio.sleep, 0.5)
    usages = [qos_of(url)["usage"] for url in urls]
    assert usages[0]["/quota/"]["keys"] == QUOTA_KEYS and usages == [usages[0]] * 3

    leader = cluster.wait_for_leader()
    follower = next(index for index in range(cluster.size) if index != leader)
    cluster.kill(follower)
    cluster.restart(follower)
    restarted = urls[follower]
    assert qos_of(restarted)["usage"] == usages[0]
    assert qos_of(restarted)["tenants"] == qos_of(urls[leader])["tenants"]
    assert put_all(restarted, [b"/quota/after-restart"]) == [
        "etcdserver: mvcc: tenant quota exceeded"
    ]


def etcdctl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert ETCDCTL is not None
    return subprocess.run(
        [ETCDCTL, "--endpoints", endpoint(url), *args],
        capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"},
        timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip


@pytest.mark.skipif(ETCDCTL is None, reason="etcdctl is not installed")
def test_a_lease_past_leases_max_is_refused_on_every_member(troika_cluster: TroikaCluster) -> None:
    cluster = troika_cluster
    cluster.wait_for_leader()
    urls = cluster.client_urls
    answer = cli(urls[0], "set", "/leased/", "--leases-max", "1")
    assert {"prefix": "/leased/", "leases_max": 1} in answer["tenants"]
    leases = []
    for _ in range(2):
        granted = etcdctl(urls[0], "lease", "grant", "600")
        assert granted.returncode == 0, granted.stderr
        leases.append(granted.stdout.split()[1])  # "lease <hex id> granted with TTL(600s)"
    assert etcdctl(urls[1], "put", "/leased/a", "v", f"--lease={leases[0]}").returncode == 0
    for url in urls:  # the second lease is refused whichever member is asked
        done = etcdctl(url, "put", "/leased/b", "v", f"--lease={leases[1]}")
        assert done.returncode != 0 and "tenant quota exceeded" in done.stderr, done.stderr
    assert etcdctl(urls[2], "put", "/leased/b", "v", f"--lease={leases[0]}").returncode == 0
    assert count_under(urls[0], b"/leased/") == 2
    trio.run(trio.sleep, 0.5)
    assert [qos_of(url)["usage"]["/leased/"]["leases"] for url in urls] == [1, 1, 1]
    assert etcdctl(urls[0], "lease", "revoke", leases[0]).returncode == 0  # frees the tenant
    assert etcdctl(urls[1], "put", "/leased/c", "v", f"--lease={leases[1]}").returncode == 0


SPREAD_RATE_PER_S = 10
SPREAD_FLOOD_S = 4.0
SPREAD_CONNECTIONS_PER_MEMBER = 2


def flood_every_member(urls: list[str], prefix: bytes) -> tuple[int, int, list[str], float]:
    """Puts on ``SPREAD_CONNECTIONS_PER_MEMBER`` connections to each member, each as fast as
    it is answered, for ``SPREAD_FLOOD_S``: (accepted, refused, other errors, seconds)."""
    accepted, refused, other = 0, 0, []
    deadline = 0.0

    async def worker(url: str, number: int) -> None:
        nonlocal accepted, refused
        client = V3Client(TcpNetwork(), [url], timeout_s=30.0)
        index = 0
        while trio.current_time() < deadline:
            key = prefix + b"%d-%04d" % (number, index)
            index += 1
            try:
                await client.put(rpc_pb2.PutRequest(key=key, value=b"x"))
                accepted += 1
            except RpcError as error:
                message = str(error)
                if error.code is StatusCode.RESOURCE_EXHAUSTED and "too many requests" in message:
                    refused += 1
                else:
                    other.append(message)
        await client.aclose()

    async def main() -> float:
        nonlocal deadline
        started = trio.current_time()
        deadline = started + SPREAD_FLOOD_S
        async with trio.open_nursery() as nursery:
            for number in range(SPREAD_CONNECTIONS_PER_MEMBER * len(urls)):
                nursery.start_soon(worker, urls[number % len(urls)], number)
        return trio.current_time() - started

    elapsed_s = trio.run(main)
    return accepted, refused, other, elapsed_s


def test_a_flood_over_every_member_is_held_to_the_rate(troika_cluster: TroikaCluster) -> None:
    """The leader charges a tenant's writes again (``actors.qos_leader``): a client writing
    to all three members gets the tenant's rate in the cluster, not three times it."""
    cluster = troika_cluster
    cluster.wait_for_leader()
    urls = cluster.client_urls
    cli(urls[0], "set", "/spread/", "--write-requests-per-s", str(SPREAD_RATE_PER_S))
    for url in urls:
        for _ in range(50):
            if any(t.get("prefix") == "/spread/" for t in qos_of(url)["tenants"]):
                break
            trio.run(trio.sleep, 0.1)
    before = [qos_of(url) for url in urls]  # the cluster is shared by the module's tests
    accepted, refused, other, elapsed_s = flood_every_member(urls, b"/spread/")
    print(f"spread flood: {accepted} accepted, {refused} refused in {elapsed_s:.2f} s")
    assert other == [] and refused > 0
    # the rate over the flood, the leader's burst (1 s) and debt (0.25 s), a little margin;
    # each member alone would accept the rate and a burst: about three times as many
    assert accepted <= SPREAD_RATE_PER_S * (elapsed_s + 1.25) + 5, (accepted, refused, elapsed_s)
    assert accepted >= SPREAD_RATE_PER_S * SPREAD_FLOOD_S * 0.8, (accepted, elapsed_s)
    for url in urls:
        assert count_under(url, b"/spread/") == accepted  # refused puts changed nothing
    answers = [qos_of(url) for url in urls]
    counted = [answers[n]["refused"] - before[n]["refused"] for n in range(len(urls))]
    assert sum(counted) == refused
    as_leader = [answers[n]["refused_as_leader"] - before[n]["refused_as_leader"] for n in range(3)]
    assert sum(as_leader) > 0
    cli(urls[0], "delete", "/spread/")
