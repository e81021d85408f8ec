"""Real etcd v2 clients, unchanged, against the v2 API over TCP (the fake member behind it).

python-etcd runs in a worker thread (it is synchronous); etcdctl v2 runs as a process and is
skipped when it is not installed.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import etcd  # type: ignore[import-untyped]
import pytest
import trio

from net.backend import MemberInfo
from net.http import HttpClient, HttpServer
from net.tcp import TcpNetwork
from net.v2api import V2Api
from tests.net.v2_fake import MEMBER_ID, FakeBackend


@asynccontextmanager
async def v2_over_tcp() -> AsyncIterator[tuple[FakeBackend, str]]:
    backend = FakeBackend()
    server = HttpServer(TcpNetwork(), V2Api(backend))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve, "127.0.0.1:0")
        url = f"http://{address}"
        me = MemberInfo(MEMBER_ID, "n1", ("http://127.0.0.1:1",), (url,))
        backend.members_list = [me]
        backend.leader_member = me
        try:
            yield backend, address
        finally:
            nursery.cancel_scope.cancel()


async def test_our_client_over_tcp_reuses_and_streams() -> None:
    async with v2_over_tcp() as (_, address):
        client = HttpClient(TcpNetwork(), f"http://{address}")
        form = (("Content-Type", "application/x-www-form-urlencoded"),)
        reply = await client.request("PUT", "/v2/keys/a", headers=form, body=b"value=1")
        assert reply.status == 201
        async with client.stream("GET", "/v2/keys/a?wait=true&stream=true") as watch:
            chunks = watch.chunks()
            for value in (b"2", b"3"):
                await client.request("PUT", "/v2/keys/a", headers=form, body=b"value=" + value)
                assert b'"value":"%b"' % value in await chunks.__anext__()
        assert (await client.request("GET", "/v2/keys/a")).json()["node"]["value"] == "3"
        await client.aclose()


async def test_python_etcd_works_unchanged() -> None:
    async with v2_over_tcp() as (_, address):
        host, port = address.rsplit(":", 1)

        def session() -> list[object]:
            client = etcd.Client(host=host, port=int(port))
            seen: list[object] = []
            seen.append(client.write("/py/a", "1").newKey)
            seen.append(client.write("/py/a", "2").newKey)
            seen.append(client.read("/py/a").value)
            try:
                client.write("/py/a", "3", prevExist=False)
            except etcd.EtcdAlreadyExist:
                seen.append("exists")
            try:
                client.read("/py/none")
            except etcd.EtcdKeyNotFound:
                seen.append("not found")
            seen.append(client.test_and_set("/py/a", "4", "2").value)
            seen.append(client.write("/py/q", "job", append=True).key)
            client.write("/py/t", "x", ttl=30)
            seen.append(client.refresh("/py/t", ttl=60).ttl)
            seen.append((client.version, client.leader["name"], client.machines))
            watched: list[str] = []
            watcher = threading.Thread(
                target=lambda: watched.append(client.watch("/py/w", timeout=10).value)
            )
            watcher.start()
            while not watched:
                client.write("/py/w", "watched")
                watcher.join(0.2)
            seen.append(watched)
            client.delete("/py", recursive=True)
            return seen

        with trio.fail_after(30):
            seen = await trio.to_thread.run_sync(session)
        assert seen == [
            True,
            False,
            "2",
            "exists",
            "not found",
            "4",
            "/py/q/00000000000000000007",
            60,
            ("3.4.23", "n1", [f"http://{address}"]),
            ["watched"],
        ]


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed")
async def test_etcdctl_v2_works_unchanged() -> None:
    async with v2_over_tcp() as (_, address):
        environment = {**os.environ, "ETCDCTL_API": "2"}

        async def etcdctl(*arguments: str) -> str:
            command = ["etcdctl", "--endpoints", f"http://{address}", *arguments]
            with trio.fail_after(20):
                done = await trio.run_process(
                    command, env=environment, capture_stdout=True, capture_stderr=True, check=False
                )
            return (done.stdout + done.stderr).decode()

        assert await etcdctl("set", "/ctl/a", "1") == "1\n"
        refused = "Error:  105: Key already exists (/ctl/a) [4]\n"
        assert await etcdctl("mk", "/ctl/a", "2") == refused
        assert await etcdctl("get", "/ctl/a") == "1\n"
        assert await etcdctl("ls", "--recursive", "/") == "/ctl\n/ctl/a\n"
        assert "isLeader=true" in await etcdctl("member", "list")
        assert "cluster is healthy" in await etcdctl("cluster-health")
