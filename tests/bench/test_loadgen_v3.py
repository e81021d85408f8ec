"""The v3 load generator: request shapes, and every v3 workload against a real member (etcd
3.4 as the reference; troika's v3 is measured by ``troika bench`` beside it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from bench.clusters import EtcdCluster, etcd_available
from bench.loadgen import V3_WORKLOADS, LoadSpec, run_load
from bench.loadgen_v3 import V3Requests, operation_and_transport
from bench.suite import BenchPlan
from troika.bench_commands import expand_workloads


def test_workload_names_and_transports() -> None:
    assert operation_and_transport("v3-txn-gw") == ("v3-txn", "gateway")
    assert operation_and_transport("v3-range") == ("v3-range", "grpc")
    assert expand_workloads(("all-v3", "v3-put"))[:2] == ("v3-put", "v3-range")
    assert "v3-put" not in expand_workloads(("all",))
    BenchPlan(workloads=V3_WORKLOADS)  # every v3 name is a bench workload


def test_gateway_requests_are_etcd_json_with_base64_keys() -> None:
    requests = V3Requests(LoadSpec(endpoint="http://127.0.0.1:2379", value_size=4))
    head, _, body = requests.gateway_txn(b"bench/txn1", 7).partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v3/kv/txn HTTP/1.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    document = json.loads(body)
    assert document["compare"][0] == {
        "key": "YmVuY2gvdHhuMQ==", "target": "MOD", "result": "EQUAL", "mod_revision": 7,
    }  # fmt: skip
    assert requests.key(12) == b"bench/00000012"


@pytest.mark.process
@pytest.mark.skipif(not etcd_available(), reason="etcd is not installed")
def test_every_v3_workload_runs_against_etcd(tmp_path: Path) -> None:
    with EtcdCluster(1, tmp_path) as cluster:
        for workload in V3_WORKLOADS:
            spec = LoadSpec(
                endpoint=cluster.client_urls[0], workload=workload, connections=3,
                duration_s=0.4, warmup_s=0.1, read_keys=20,
            )  # fmt: skip
            result = trio.run(run_load, spec)
            assert result.requests > 0, (workload, result.error_kinds)
            assert result.errors == 0, (workload, result.error_kinds)
            assert result.client_cpu_percent > 0
