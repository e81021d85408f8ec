"""Per-tenant QoS on an auth-on cluster of 3 member processes, through the real CLI: ``troika
qos`` takes the global ``--user`` flag (a change needs root's token; without it the member
refuses), a user tenant set with ``--tenant-user`` is listed alike by every member, and that
user's puts are refused with "etcdserver: too many requests" while another user is served; a
role tenant's ``watches_max`` counts its users' watch creates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from actors.qos import TOO_MANY_REQUESTS
from bench.clusters import TroikaCluster
from net.etcdpb import rpc_pb2
from net.tcp import TcpNetwork
from net.v3.client import WATCH_GRPC_PATH, Credentials, V3Client
from net.v3.errors import RpcError, StatusCode
from tests.process.test_qos import CLI_TIMEOUT_S, ETCDCTL, endpoint

pytestmark = pytest.mark.process

PUTS = 20
ROOT = "root:rootpw"


def troika(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "troika", *args, "--endpoints", endpoint(url)],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip


def qos(url: str, *args: str) -> Any:
    done = troika(url, "qos", *args, "--user", ROOT, "-w", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def refused_puts(url: str, user: str) -> int:
    """How many of ``PUTS`` quick puts ``user`` (password ``pw``) gets refused."""

    async def main() -> int:
        client = V3Client(TcpNetwork(), [url], timeout_s=30.0, credentials=Credentials(user, "pw"))
        refused = 0
        for number in range(PUTS):
            try:
                await client.put(rpc_pb2.PutRequest(key=b"k/%s/%d" % (user.encode(), number)))
            except RpcError as error:
                assert error.code is StatusCode.RESOURCE_EXHAUSTED, error
                refused += 1
        await client.aclose()
        return refused

    return trio.run(main)


def test_user_tenant_set_with_root_and_enforced(troika_cluster: TroikaCluster) -> None:
    cluster = troika_cluster
    cluster.wait_for_leader()
    urls = cluster.client_urls
    for command in (
        ("user", "add", ROOT),
        ("user", "grant-role", "root", "root"),
        ("role", "add", "rw"),
        ("role", "grant-permission", "--prefix", "rw", "readwrite", "k/"),
        ("user", "add", "alice:pw"),
        ("user", "add", "bob:pw"),
        ("user", "grant-role", "alice", "rw"),
        ("user", "grant-role", "bob", "rw"),
        ("auth", "enable"),
    ):
        done = troika(urls[0], *command, "--user", ROOT)  # no token until it is enabled
        assert done.returncode == 0, (command, done.stderr)
    refused = troika(urls[1], "qos", "set", "--tenant-user", "alice", "--write-requests-per-s", "2")
    assert refused.returncode != 0 and "auth" in refused.stderr, refused.stderr
    qos(urls[1], "set", "--tenant-user", "alice", "--write-requests-per-s", "2")
    trio.run(trio.sleep, 0.5)
    for url in urls:
        assert qos(url, "list")["tenants"] == [{"user": "alice", "write_requests_per_s": 2}]
    assert qos(urls[2], "get", "--tenant-user", "alice")["tenants"]
    assert refused_puts(urls[2], "alice") > 0
    assert refused_puts(urls[2], "bob") == 0  # no tenant of his
    watches_by_caller(urls)


def watches_by_caller(urls: list[str]) -> None:
    """A role tenant's ``watches_max`` counts its users' watch creates on the member (bob's
    second is refused etcd's way, also to ``etcdctl watch``); alice's user tenant, which has
    no watch limit, replaces the role's, so hers are not counted."""
    qos(urls[0], "set", "--tenant-role", "rw", "--watches-max", "1")
    trio.run(trio.sleep, 0.5)

    async def main() -> dict[str, list[bool]]:
        opened = {}
        async with AsyncExitStack() as stack:
            for user in ("bob", "alice"):
                client = V3Client(TcpNetwork(), [urls[2]], credentials=Credentials(user, "pw"))
                stack.push_async_callback(client.aclose)
                call = await stack.enter_async_context(
                    client.stream(WATCH_GRPC_PATH, rpc_pb2.WatchResponse)
                )
                answers = []
                for key in (b"k/1", b"k/2"):
                    create = rpc_pb2.WatchCreateRequest(key=key)
                    await call.send(rpc_pb2.WatchRequest(create_request=create))
                    answers.append(await anext(aiter(call)))
                assert all(a.cancel_reason in ("", TOO_MANY_REQUESTS) for a in answers), answers
                opened[user] = [not answer.canceled for answer in answers]
            assert qos(urls[2], "list")["watches"] == {"role:rw": 1}
            if ETCDCTL is not None:
                done = subprocess.run(
                    [ETCDCTL, "--endpoints", endpoint(urls[2]), "--user", "bob:pw", "watch", "k/3"],
                    capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
                    env={**os.environ, "ETCDCTL_API": "3"},
                )  # fmt: skip
                assert TOO_MANY_REQUESTS in done.stdout + done.stderr, (done.stdout, done.stderr)
        return opened

    assert trio.run(main) == {"bob": [True, False], "alice": [True, True]}
