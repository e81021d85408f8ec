"""v3 auth, differentially: the same sequences against a 3-member etcd 3.4 and a 3-member
troika, compared answer by answer.

The clients are the real ones: ``etcdctl`` (``--user name:password``, which authenticates and
sends the token as clientv3 does) for the user, role and auth commands and the key commands
of a read-only user; raw gRPC with the ``token`` metadata for what etcdctl cannot say exactly
(fixed lease ids, a watch create, a token kept across a restart); and the JSON gateway with
the ``Authorization`` header. Outputs are compared after dropping clientv3's JSON log lines
(timestamps, client ids) and replacing tokens by ``<token>``; gRPC answers as
``(code, details)`` or the response's fields without the header.

Each test leaves auth disabled (its ``finally``), so the clusters can be shared; names are
unique per test.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from bench.clusters import EtcdCluster, ProcessCluster, TroikaCluster
from net.etcdpb import rpc_pb2
from tests.process.v3diff import Target

pytestmark = pytest.mark.process

ETCDCTL_TIMEOUT_S = 30
GRPC_TIMEOUT_S = 15
ROOT = "root:rootpw"

Observation = tuple[Any, ...]


def _endpoint(cluster: ProcessCluster, index: int = 0) -> str:
    return cluster.client_urls[index]


def etcdctl(
    cluster: ProcessCluster, *args: str, user: str | None = None, stdin: str | None = None
) -> Observation:
    """etcdctl's exit code, output and error lines (without clientv3's JSON logs)."""
    command = ["etcdctl", f"--endpoints={_endpoint(cluster)}", "--command-timeout=10s"]
    if user is not None:
        command.append(f"--user={user}")
    done = subprocess.run(
        [*command, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=ETCDCTL_TIMEOUT_S,
        env={**os.environ, "ETCDCTL_API": "3"},
        check=False,
    )
    errors = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    return ("etcdctl", *args, done.returncode, done.stdout, errors)


class Grpc:
    """Raw gRPC calls to member ``index`` of a cluster, with an optional token."""

    def __init__(self, cluster: ProcessCluster, index: int = 0) -> None:
        self.target = Target(cluster.system, _endpoint(cluster, index))

    def close(self) -> None:
        self.target.close()

    def call(
        self, rpc: str, request: Message, response_type: type[Message], token: str | None = None
    ) -> tuple[Message | None, Observation]:
        """The response (or None) and what is compared: its fields without the header, or
        the error's code and details."""
        method = self.target.channel.unary_unary(
            f"/etcdserverpb.{rpc}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        metadata = [("token", token)] if token is not None else None
        try:
            response = method(request, timeout=GRPC_TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as error:
            return None, (rpc, error.code().name, error.details())
        shown = json_format.MessageToDict(response, preserving_proto_field_name=True)
        shown.pop("header", None)
        if "token" in shown:
            shown["token"] = "<token>"
        return response, (rpc, "OK", shown)

    def token(self, name: str, password: str) -> str:
        response, seen = self.call(
            "Auth/Authenticate",
            rpc_pb2.AuthenticateRequest(name=name, password=password),
            rpc_pb2.AuthenticateResponse,
        )
        assert isinstance(response, rpc_pb2.AuthenticateResponse), seen
        return response.token

    def snapshot_answer(self, token: str) -> Observation:
        """Whether a Snapshot stream starts (its first message) or the error it ends with."""
        method = self.target.channel.unary_stream(
            "/etcdserverpb.Maintenance/Snapshot",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=rpc_pb2.SnapshotResponse.FromString,
        )
        call = method(
            rpc_pb2.SnapshotRequest(), timeout=GRPC_TIMEOUT_S, metadata=[("token", token)]
        )
        try:
            next(call)
        except grpc.RpcError as error:
            return ("snapshot", error.code().name, error.details())
        finally:
            call.cancel()
        return ("snapshot", "OK")

    def first_watch_answer(self, create: rpc_pb2.WatchCreateRequest, token: str) -> Observation:
        """The first answer to one watch create (then the stream is cancelled)."""
        stop: queue.Queue[None] = queue.Queue()

        def requests() -> Iterator[rpc_pb2.WatchRequest]:
            yield rpc_pb2.WatchRequest(create_request=create)
            stop.get(timeout=GRPC_TIMEOUT_S)

        method = self.target.channel.stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=rpc_pb2.WatchResponse.FromString,
        )
        call = method(requests(), timeout=GRPC_TIMEOUT_S, metadata=[("token", token)])
        try:
            first = next(call)
        finally:
            stop.put(None)
            call.cancel()
        return ("watch", first.created, first.canceled, first.watch_id, first.cancel_reason)


def gateway(
    cluster: ProcessCluster, path: str, body: dict[str, Any], token: str | None = None
) -> Observation:
    """A gateway call: status and body (header and token replaced)."""
    target = Target(cluster.system, _endpoint(cluster))
    headers = {"Authorization": token} if token is not None else {}
    status, _, payload = target.http(
        "POST", path, json.dumps(body).encode(), "application/json", headers
    )
    target.close()
    document = json.loads(payload)
    if isinstance(document, dict):
        document.pop("header", None)
        if "token" in document:
            document["token"] = "<token>"
    return ("gateway", path, status, document)


def both(
    troika_cluster: TroikaCluster,
    etcd_cluster: EtcdCluster,
    script: Callable[[ProcessCluster, str], list[Observation]],
    name: str,
) -> None:
    """Run ``script`` on both clusters (auth disabled afterwards) and compare."""
    seen: dict[str, list[Observation]] = {}
    for cluster in (etcd_cluster, troika_cluster):
        prefix = f"/auth/{name}"
        try:
            seen[cluster.system] = script(cluster, prefix)
        finally:
            etcdctl(cluster, "auth", "disable", user=ROOT)
    for index, (expected, got) in enumerate(zip(seen["etcd"], seen["troika"], strict=True)):
        assert got == expected, f"step {index}:\n etcd:   {expected}\n troika: {got}"


def _setup_users(cluster: ProcessCluster, p: str, suffix: str) -> list[Observation]:
    """root (with the root role), role ro-<suffix> reading ``p/ro/`` and read-writing
    ``p/rw``, user alice-<suffix> holding it; auth enabled."""
    role, alice = f"ro-{suffix}", f"alice-{suffix}"
    return [
        etcdctl(cluster, "user", "add", ROOT),
        etcdctl(cluster, "user", "add", ROOT),  # exists
        etcdctl(cluster, "auth", "enable"),  # etcdctl grants root the root role itself
        etcdctl(cluster, "role", "add", role, user=ROOT),
        etcdctl(cluster, "role", "add", role, user=ROOT),  # exists
        etcdctl(
            cluster, "role", "grant-permission", role, "read", "--prefix", f"{p}/ro/", user=ROOT
        ),
        etcdctl(cluster, "role", "grant-permission", role, "readwrite", f"{p}/rw", user=ROOT),
        etcdctl(cluster, "role", "get", role, user=ROOT),
        etcdctl(cluster, "user", "add", f"{alice}:apw", user=ROOT),
        etcdctl(cluster, "user", "grant-role", alice, role, user=ROOT),
        etcdctl(cluster, "user", "grant-role", alice, "nope", user=ROOT),
        etcdctl(cluster, "user", "grant-role", "nobody", role, user=ROOT),
        etcdctl(cluster, "user", "get", alice, user=ROOT),
        etcdctl(cluster, "put", f"{p}/ro/a", "1", user=ROOT),
    ]


def test_users_roles_and_a_read_only_user_over_etcdctl(
    troika_cluster: TroikaCluster, etcd_cluster: EtcdCluster
) -> None:
    def script(cluster: ProcessCluster, p: str) -> list[Observation]:
        alice = "alice-kv:apw"
        seen = _setup_users(cluster, p, "kv")
        seen += [
            etcdctl(cluster, "get", f"{p}/ro/a"),  # no user: "user name is empty"
            etcdctl(cluster, "get", f"{p}/ro/a", user=alice),
            etcdctl(cluster, "get", f"{p}/ro/", "--prefix", user=alice),
            etcdctl(cluster, "get", f"{p}/", "--prefix", user=alice),  # wider than its rights
            etcdctl(cluster, "get", f"{p}/ro/a", "--from-key", user=alice),
            etcdctl(cluster, "put", f"{p}/ro/a", "2", user=alice),
            etcdctl(cluster, "del", f"{p}/ro/a", user=alice),
            etcdctl(cluster, "put", f"{p}/rw", "w", user=alice),
            etcdctl(cluster, "put", f"{p}/rw", "w2", "--prev-kv", user=alice),
            etcdctl(cluster, "del", f"{p}/rw", "--prev-kv", user=alice),
            etcdctl(
                cluster,
                "txn",
                user=alice,
                stdin=f'value("{p}/ro/a") = "nope"\n\nput {p}/ro/b 2\n\nget {p}/ro/a\n\n',
            ),
            etcdctl(
                cluster,
                "txn",
                user=alice,
                stdin=f'value("{p}/ro/a") = "1"\n\nget {p}/ro/a\n\nget {p}/rw\n\n',
            ),
            etcdctl(  # the failure branch is not taken, and still checked
                cluster,
                "txn",
                user=alice,
                stdin=f'value("{p}/ro/a") = "1"\n\nget {p}/ro/a\n\nput {p}/ro/b 2\n\n',
            ),
            etcdctl(cluster, "user", "add", "long-kv:" + "x" * 100, user=ROOT),
            # bcrypt reads 72 bytes: another tail authenticates (then has no rights)
            etcdctl(cluster, "get", f"{p}/ro/a", user="long-kv:" + "x" * 72 + "y" * 28),
            etcdctl(cluster, "get", f"{p}/ro/a", user="long-kv:" + "x" * 71),
            etcdctl(cluster, "get", f"{p}/ro/a", user="alice-kv:wrong"),
            etcdctl(cluster, "get", f"{p}/ro/a", user="nobody:x"),
            etcdctl(cluster, "user", "get", "alice-kv", user=alice),  # oneself
            etcdctl(cluster, "user", "get", "root", user=alice),
            etcdctl(cluster, "role", "get", "ro-kv", user=alice),  # a role it holds
            etcdctl(cluster, "user", "list", user=alice),
            etcdctl(cluster, "role", "add", "x-kv", user=alice),
            etcdctl(cluster, "role", "revoke-permission", "ro-kv", f"{p}/rw", user=ROOT),
            etcdctl(cluster, "role", "revoke-permission", "ro-kv", f"{p}/rw", user=ROOT),
            etcdctl(cluster, "put", f"{p}/rw", "w3", user=alice),
            etcdctl(cluster, "user", "revoke-role", "root", "root", user=ROOT),
            etcdctl(cluster, "user", "delete", "root", user=ROOT),
            etcdctl(cluster, "role", "delete", "root", user=ROOT),
            etcdctl(cluster, "user", "revoke-role", "alice-kv", "nope", user=ROOT),
            etcdctl(
                cluster,
                "user",
                "passwd",
                "alice-kv",
                "--interactive=false",
                user=ROOT,
                stdin="newpw\n",
            ),
            etcdctl(cluster, "get", f"{p}/ro/a", user=alice),  # the old password
            etcdctl(cluster, "get", f"{p}/ro/a", user="alice-kv:newpw"),
            etcdctl(cluster, "role", "delete", "ro-kv", user=ROOT),
            etcdctl(cluster, "get", f"{p}/ro/a", user="alice-kv:newpw"),
            etcdctl(cluster, "user", "delete", "alice-kv", user=ROOT),
            etcdctl(cluster, "user", "delete", "alice-kv", user=ROOT),
            etcdctl(cluster, "role", "add", "all-kv", user=ROOT),
            etcdctl(
                cluster, "role", "grant-permission", "all-kv", "read", "", "--prefix", user=ROOT
            ),
            etcdctl(
                cluster,
                "role",
                "grant-permission",
                "all-kv",
                "write",
                f"{p}/m",
                "--from-key",
                user=ROOT,
            ),
            etcdctl(cluster, "role", "get", "all-kv", user=ROOT),
            etcdctl(cluster, "user", "add", "wide-kv:w", user=ROOT),
            etcdctl(cluster, "user", "grant-role", "wide-kv", "all-kv", user=ROOT),
            etcdctl(cluster, "get", f"{p}/ro/a", user="wide-kv:w"),
            etcdctl(cluster, "put", f"{p}/z", "1", user="wide-kv:w"),
            etcdctl(cluster, "put", f"{p}/a", "1", user="wide-kv:w"),
            etcdctl(cluster, "del", f"{p}/m", f"{p}/n", user="wide-kv:w"),
            etcdctl(cluster, "del", f"{p}/l", f"{p}/n", user="wide-kv:w"),
            etcdctl(cluster, "auth", "disable", user=ROOT),
            etcdctl(cluster, "get", f"{p}/ro/a"),
            etcdctl(cluster, "auth", "disable"),
        ]
        return seen

    both(troika_cluster, etcd_cluster, script, "kv")


def test_leases_watches_and_tokens_over_grpc(
    troika_cluster: TroikaCluster, etcd_cluster: EtcdCluster
) -> None:
    def script(cluster: ProcessCluster, p: str) -> list[Observation]:
        seen = _setup_users(cluster, p, "grpc")
        rpc = Grpc(cluster)
        try:
            root = rpc.token("root", "rootpw")
            alice = rpc.token("alice-grpc", "apw")
            lease_id = 0x7A11_0000 + (1 if cluster.system == "etcd" else 2)
            _, granted = rpc.call(
                "Lease/LeaseGrant",
                rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=300),
                rpc_pb2.LeaseGrantResponse,
                root,
            )
            seen.append(("grant", granted[1]))
            put = rpc_pb2.PutRequest(key=f"{p}/ro/l".encode(), value=b"v", lease=lease_id)
            seen.append(rpc.call("KV/Put", put, rpc_pb2.PutResponse, root)[1])
            revoke = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
            seen.append(
                rpc.call("Lease/LeaseRevoke", revoke, rpc_pb2.LeaseRevokeResponse, alice)[1]
            )
            key = rpc_pb2.RangeRequest(key=f"{p}/ro/l".encode(), keys_only=True)
            seen.append(_kvs(rpc.call("KV/Range", key, rpc_pb2.RangeResponse, root)[0], p))
            bad = "nosuchtoken.1"
            seen.append(rpc.call("KV/Range", key, rpc_pb2.RangeResponse, bad)[1])
            seen.append(rpc.call("KV/Range", key, rpc_pb2.RangeResponse)[1])
            for create in (
                rpc_pb2.WatchCreateRequest(key=f"{p}/ro/".encode(), range_end=f"{p}/ro0".encode()),
                rpc_pb2.WatchCreateRequest(key=f"{p}/".encode(), range_end=f"{p}0".encode()),
                rpc_pb2.WatchCreateRequest(key=f"{p}/ro/a".encode(), range_end=b"\0"),
                rpc_pb2.WatchCreateRequest(key=f"{p}/zz".encode()),
            ):
                seen.append(rpc.first_watch_answer(create, alice))
            seen.append(rpc.first_watch_answer(rpc_pb2.WatchCreateRequest(key=b"k"), "bad.1"))
            seen.append(
                rpc.call(
                    "Maintenance/HashKV", rpc_pb2.HashKVRequest(), rpc_pb2.HashKVResponse, alice
                )[1]
            )
            seen.append(rpc.snapshot_answer(alice))
            seen.append(rpc.snapshot_answer(root))
            seen.append(
                rpc.call(
                    "Maintenance/Defragment",
                    rpc_pb2.DefragmentRequest(),
                    rpc_pb2.DefragmentResponse,
                    alice,
                )[1]
            )
            seen.append(
                rpc.call(
                    "Maintenance/Status", rpc_pb2.StatusRequest(), rpc_pb2.StatusResponse, alice
                )[1][:2]
            )
            seen.append(
                rpc.call(
                    "Cluster/MemberRemove",
                    rpc_pb2.MemberRemoveRequest(ID=1),
                    rpc_pb2.MemberRemoveResponse,
                    alice,
                )[1]
            )
            seen.append(
                rpc.call(
                    "Auth/AuthDisable",
                    rpc_pb2.AuthDisableRequest(),
                    rpc_pb2.AuthDisableResponse,
                    alice,
                )[1]
            )
            seen.append(
                rpc.call(
                    "Auth/Authenticate",
                    rpc_pb2.AuthenticateRequest(name="alice-grpc", password="x"),
                    rpc_pb2.AuthenticateResponse,
                )[1]
            )
            seen.append(
                rpc.call(
                    "Auth/UserAdd",
                    rpc_pb2.AuthUserAddRequest(name=""),
                    rpc_pb2.AuthUserAddResponse,
                    root,
                )[1]
            )
            seen.append(
                rpc.call(
                    "Auth/RoleAdd",
                    rpc_pb2.AuthRoleAddRequest(name=""),
                    rpc_pb2.AuthRoleAddResponse,
                    root,
                )[1]
            )
            carol = rpc_pb2.AuthUserAddRequest(name="carol-grpc", password="c")
            seen.append(rpc.call("Auth/UserAdd", carol, rpc_pb2.AuthUserAddResponse, root)[1])
            # kill -9 right after: the user stays; a token is a member's memory, gone
            cluster.kill(0)
            cluster.restart(0)
        finally:
            rpc.close()
        rpc = Grpc(cluster)
        try:
            seen.append(rpc.call("KV/Range", key, rpc_pb2.RangeResponse, alice)[1])
            fresh = rpc.token("alice-grpc", "apw")
            seen.append(_kvs(rpc.call("KV/Range", key, rpc_pb2.RangeResponse, fresh)[0], p))
            seen.append(
                rpc.call(
                    "Auth/UserList",
                    rpc_pb2.AuthUserListRequest(),
                    rpc_pb2.AuthUserListResponse,
                    rpc.token("root", "rootpw"),
                )[1]
            )
        finally:
            rpc.close()
        return seen

    both(troika_cluster, etcd_cluster, script, "grpc")


def _kvs(response: Message | None, p: str) -> Observation:
    if not isinstance(response, rpc_pb2.RangeResponse):
        return ("range", None)
    return ("range", [kv.key.decode().replace(p, "{p}") for kv in response.kvs])


def test_the_gateway_with_the_authorization_header(
    troika_cluster: TroikaCluster, etcd_cluster: EtcdCluster
) -> None:
    def script(cluster: ProcessCluster, p: str) -> list[Observation]:
        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        seen = _setup_users(cluster, p, "gw")
        answer = gateway(cluster, "/v3/auth/authenticate", {"name": "alice-gw", "password": "apw"})
        seen.append(answer)
        rpc = Grpc(cluster)
        try:
            token = rpc.token("alice-gw", "apw")
            root = rpc.token("root", "rootpw")
        finally:
            rpc.close()
        seen += [
            gateway(cluster, "/v3/auth/authenticate", {"name": "alice-gw", "password": "no"}),
            gateway(cluster, "/v3/kv/range", {"key": b64(f"{p}/ro/a")}, token),
            gateway(cluster, "/v3/kv/put", {"key": b64(f"{p}/ro/a"), "value": b64("x")}, token),
            gateway(cluster, "/v3/kv/range", {"key": b64(f"{p}/ro/a")}),
            gateway(cluster, "/v3/kv/range", {"key": b64(f"{p}/ro/a")}, "bad.token"),
            gateway(cluster, "/v3/auth/user/list", {}, token),
            gateway(cluster, "/v3/auth/user/list", {}, root),
            gateway(cluster, "/v3/auth/role/get", {"role": "ro-gw"}, root),
            gateway(cluster, "/v3/auth/user/get", {"name": "nobody"}, root),
            gateway(cluster, "/v3/auth/role/get", {"role": "nope"}, root),
            gateway(cluster, "/v3/lease/grant", {"TTL": 60, "ID": 7777}, root),
            gateway(cluster, "/v3/lock/lock", {"name": b64(f"{p}/ro/lk"), "lease": 7777}, token),
            gateway(cluster, "/v3/lock/lock", {"name": b64(f"{p}/rw"), "lease": 7777}, token),
            gateway(cluster, "/v3/lock/lock", {"name": b64(f"{p}/ro/lk"), "lease": 7777}, root),
            gateway(
                cluster,
                "/v3/election/campaign",
                {"name": b64(f"{p}/ro/el"), "lease": 7777, "value": b64("me")},
                token,
            ),
            gateway(cluster, "/v3/election/leader", {"name": b64(f"{p}/ro/el")}, token),
            gateway(cluster, "/v3/maintenance/hash", {}, token),
            gateway(cluster, "/v3/maintenance/status", {}, token)[:3],
            gateway(cluster, "/v3/auth/disable", {}, root),
            gateway(cluster, "/v3/auth/authenticate", {"name": "root", "password": "rootpw"}),
        ]
        return seen

    both(troika_cluster, etcd_cluster, script, "gw")
