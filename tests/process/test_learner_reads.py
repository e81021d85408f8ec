"""Read scaling with learners (issue 16 item 5), on real processes.

A 3-member troika cluster started with ``--troika-max-learners=2`` gets two learners: one with
``--troika-learner-linearizable-reads`` (troika's, beyond etcd 3.4) and one without (etcd's
behaviour). Over the JSON gateway:

- the plain learner refuses a linearizable range with etcd 3.4's error (``rpc not supported
  for learner``, 503 / code 14) and serves serializable ones;
- the scaled learner's linearizable range sees every write the leader acknowledged just before
  it, write after write;
- with two voters down there is no quorum to confirm a read index: the scaled learner's
  linearizable range fails while its serializable range still answers. A learner that served
  "linearizable" reads from its own store (the planted bug: treating them as serializable)
  would answer here, and this check fails for it.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench.clusters import TroikaCluster
from bench.learner_reads import CATCH_UP_TIMEOUT_S, add_learner, wait_serving

pytestmark = pytest.mark.process

WRITES = 100
"""Acknowledged writes each followed at once by a linearizable read on the learner."""
REQUEST_TIMEOUT_S = 30.0


def gateway(url: str, method: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """``POST /v3/kv/<method>``: the status and the JSON answer (an error's too)."""
    request = urllib.request.Request(
        f"{url}/v3/kv/{method}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def put(url: str, key: str, value: str) -> int:
    status, answer = gateway(url, "put", {"key": b64(key), "value": b64(value)})
    assert status == 200, answer
    return int(answer["header"]["revision"])


def read(url: str, key: str, *, serializable: bool) -> tuple[int, dict[str, Any]]:
    return gateway(url, "range", {"key": b64(key), "serializable": serializable})


def value_of(answer: dict[str, Any]) -> str | None:
    kvs = answer.get("kvs") or []
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def test_a_learner_reads_linearizably_through_the_leader(tmp_path: Path) -> None:
    cluster = TroikaCluster(3, tmp_path / "cluster", extra_flags=("--troika-max-learners=2",))
    with cluster:
        leader_url = cluster.client_urls[cluster.wait_for_leader()]
        put(leader_url, "seed", "x")
        scaled = add_learner(cluster, "scaled", tmp_path / "scaled")
        plain = add_learner(cluster, "plain", tmp_path / "plain", extra_flags=())
        try:
            for learner in (scaled, plain):
                wait_serving(learner.client_url, b"seed", b"x", CATCH_UP_TIMEOUT_S)
            status, answer = read(plain.client_url, "seed", serializable=False)
            assert (status, answer["code"], answer["message"]) == (
                503,
                14,
                "etcdserver: rpc not supported for learner",
            )
            assert value_of(read(plain.client_url, "seed", serializable=True)[1]) == "x"

            for number in range(WRITES):
                acknowledged = put(leader_url, "linearizable", str(number))
                status, answer = read(scaled.client_url, "linearizable", serializable=False)
                assert status == 200, answer
                assert value_of(answer) == str(number), (number, answer)
                assert int(answer["header"]["revision"]) >= acknowledged

            leader = cluster.leader_index()
            assert leader is not None
            for index in range(3):
                if index != leader:
                    cluster.kill(index)
            status, answer = read(scaled.client_url, "linearizable", serializable=False)
            assert status != 200, answer  # no quorum: no read index to read at
            status, answer = read(scaled.client_url, "linearizable", serializable=True)
            assert (status, value_of(answer)) == (200, str(WRITES - 1))
            for index in range(3):
                if index != leader:
                    cluster.restart(index, wait=False)
            cluster.wait_ready(range(3), timeout_s=CATCH_UP_TIMEOUT_S)
            status, answer = read(scaled.client_url, "linearizable", serializable=False)
            assert (status, value_of(answer)) == (200, str(WRITES - 1))
        finally:
            scaled.stop()
            plain.stop()
