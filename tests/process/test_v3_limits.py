"""etcd's request limits as flags: ``--max-txn-ops`` and ``--max-request-bytes`` on a troika
member and on an etcd 3.4 member started with the same values, the same requests to both
(over the gateway and over gRPC), the same answers."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc  # type: ignore[import-untyped]
import pytest

from bench.clusters import EtcdCluster, ProcessCluster, TroikaCluster, etcd_available
from net.etcdpb import rpc_pb2

pytestmark = pytest.mark.process

FLAGS = ("--max-txn-ops=2", "--max-request-bytes=1000")


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ProcessCluster]]:
    if not etcd_available():
        pytest.skip("etcd is not installed (.ci/run installs etcd-server and etcd-client)")
    troika = TroikaCluster(1, tmp_path_factory.mktemp("troika"), extra_flags=FLAGS)
    etcd = EtcdCluster(1, tmp_path_factory.mktemp("etcd"), extra_flags=FLAGS)
    with troika, etcd:
        yield [troika, etcd]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def gateway(cluster: ProcessCluster, path: str, body: object) -> tuple[int, object]:
    url = urlsplit(cluster.client_urls[0])
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        connection.request("POST", path, json.dumps(body))
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def grpc_put(cluster: ProcessCluster, value_bytes: int) -> tuple[str, str]:
    target = cluster.client_urls[0].removeprefix("http://")
    with grpc.insecure_channel(target) as channel:
        put = channel.unary_unary(
            "/etcdserverpb.KV/Put",
            request_serializer=rpc_pb2.PutRequest.SerializeToString,
            response_deserializer=rpc_pb2.PutResponse.FromString,
        )
        try:
            put(rpc_pb2.PutRequest(key=b"big", value=b"x" * value_bytes), timeout=10)
        except grpc.RpcError as error:
            return error.code().name, error.details() or ""
    return "OK", ""


THREE_PUTS = {
    "success": [{"request_put": {"key": b64(f"t/{n}"), "value": b64("v")}} for n in range(3)]
}
TWO_PUTS = {"success": THREE_PUTS["success"][:2]}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v3/kv/txn", THREE_PUTS),
        ("/v3/kv/txn", TWO_PUTS),
        ("/v3/kv/put", {"key": b64("k"), "value": b64("x" * 2000)}),
        ("/v3/kv/put", {"key": b64("k"), "value": b64("x" * 900)}),
        ("/v3/kv/put", {"key": b64("k"), "value": b64("x" * 600_000)}),
    ],
)
def test_gateway_answers_as_etcd_under_the_same_limits(
    clusters: list[ProcessCluster], path: str, body: object
) -> None:
    troika, etcd = (gateway(cluster, path, body) for cluster in clusters)
    assert troika[0] == etcd[0]
    if troika[0] != 200:
        assert troika[1] == etcd[1]


@pytest.mark.parametrize("value_bytes", [900, 2000, 600_000])
def test_grpc_answers_as_etcd_under_the_same_limits(
    clusters: list[ProcessCluster], value_bytes: int
) -> None:
    troika, etcd = (grpc_put(cluster, value_bytes) for cluster in clusters)
    assert troika == etcd


def test_a_request_limit_past_one_log_entry_is_refused_at_start(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "troika", "serve", "--data-dir", str(tmp_path / "d")]
    done = subprocess.run(
        [*command, "--max-request-bytes", str(64 << 20)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--max-request-bytes must be at most" in done.stderr
