"""A real troika cluster: 3 member processes on loopback, TCP between them, RocksDB on disk.

Each test leaves every member running again, so the module shares one cluster. The tests
talk plain HTTP to the v2 API, as any etcd client would.
"""

from __future__ import annotations

from functools import partial

import pytest

from bench.clusters import TroikaCluster
from tests.process.v2http import Exchange, eventually, get, put, send

pytestmark = pytest.mark.process

WRITE_TIMEOUT_S = 15.0
"""A write may wait out an election (about a second) plus retries."""


def write(url: str, key: str, value: str) -> Exchange:
    """A write that is retried while the cluster has no leader (as clients do)."""
    return eventually(
        lambda: put(url, key, value),
        lambda reply: reply.status in (200, 201),
        timeout_s=WRITE_TIMEOUT_S,
    )


def value_at(url: str, key: str, *, quorum: bool) -> tuple[int, str | None, int]:
    """(status, value, X-Etcd-Index) of a GET, linearizable or local."""
    reply = get(url, key, quorum=str(quorum).lower())
    value = reply.json()["node"].get("value") if reply.status == 200 else None
    return reply.status, value, reply.header_int("X-Etcd-Index")


def follower_of(cluster: TroikaCluster, leader: int) -> int:
    return next(index for index in range(cluster.size) if index != leader)


def test_a_write_on_a_follower_is_read_on_every_member(troika_cluster: TroikaCluster) -> None:
    cluster = troika_cluster
    leader = cluster.wait_for_leader()
    follower = follower_of(cluster, leader)
    reply = put(cluster.client_urls[follower], "/cluster/on-follower", "hello")
    assert reply.status == 201, reply
    written = reply.header_int("X-Etcd-Index")
    assert reply.json()["node"]["modifiedIndex"] == written
    for url in cluster.client_urls:
        status, value, index = value_at(url, "/cluster/on-follower", quorum=True)
        assert (status, value) == (200, "hello"), url
        assert index >= written
    # Local (serializable) reads catch up on every member too, with the same index.
    for url in cluster.client_urls:
        eventually(
            partial(value_at, url, "/cluster/on-follower", quorum=False),
            lambda seen: seen[1] == "hello",
        )


def test_a_stopped_follower_catches_up_after_a_restart(troika_cluster: TroikaCluster) -> None:
    cluster = troika_cluster
    leader = cluster.wait_for_leader()
    follower = follower_of(cluster, leader)
    leader_url, follower_url = cluster.client_urls[leader], cluster.client_urls[follower]
    before = value_at(leader_url, "/cluster/counter", quorum=True)
    cluster.stop_member(follower)
    assert not cluster.is_running(follower)
    last = None
    for number in range(20):
        last = write(leader_url, "/cluster/counter", str(number))
        write(leader_url, f"/cluster/while-down/{number}", "x")
    assert last is not None
    last_index = last.header_int("X-Etcd-Index")
    assert last_index > before[2]
    assert value_at(leader_url, "/cluster/counter", quorum=True)[:2] == (200, "19")

    cluster.restart(follower)
    # Its own applied state, read locally, reaches everything written while it was down.
    status, _, index = eventually(
        lambda: value_at(follower_url, "/cluster/counter", quorum=False),
        lambda seen: seen[1] == "19",
    )
    assert status == 200
    assert index >= last_index
    listing = get(follower_url, "/cluster/while-down", sorted="true").json()["node"]["nodes"]
    assert [node["key"] for node in listing] == sorted(
        f"/cluster/while-down/{number}" for number in range(20)
    )
    assert value_at(follower_url, "/cluster/counter", quorum=True)[:2] == (200, "19")


def test_killing_the_leader_elects_another_and_writes_go_on(
    troika_cluster: TroikaCluster,
) -> None:
    cluster = troika_cluster
    old_leader = cluster.wait_for_leader()
    write(cluster.client_urls[old_leader], "/cluster/leader-kill", "before")
    cluster.kill(old_leader)  # kill -9
    new_leader = cluster.wait_for_leader()
    assert new_leader != old_leader
    survivors = cluster.running_indexes()
    assert old_leader not in survivors and len(survivors) == cluster.size - 1
    for index in survivors:
        reply = write(cluster.client_urls[index], "/cluster/leader-kill", f"after-{index}")
        assert reply.json()["prevNode"]["value"] in {"before", *(f"after-{i}" for i in survivors)}
    term = int(put(cluster.client_urls[new_leader], "/cluster/term", "t").headers["x-raft-term"])
    assert term >= 2

    cluster.restart(old_leader)
    status, value, _ = eventually(
        lambda: value_at(cluster.client_urls[old_leader], "/cluster/leader-kill", quorum=False),
        lambda seen: seen[1] == f"after-{survivors[-1]}",
    )
    assert status == 200
    assert value == f"after-{survivors[-1]}"
    assert cluster.leader_index() is not None


def test_data_survives_a_full_cluster_restart(troika_cluster: TroikaCluster) -> None:
    cluster = troika_cluster
    url = cluster.client_urls[cluster.wait_for_leader()]
    write(url, "/persist/plain", "kept")
    assert send(url, "PUT", "/v2/keys/persist/dir", query="dir=true").status == 201
    appended = send(url, "POST", "/v2/keys/persist/queue", form={"value": "job"})
    assert appended.status == 201
    queue_key = appended.json()["node"]["key"]
    with_ttl = put(url, "/persist/ttl", "lasting", ttl="600")
    assert with_ttl.status == 201
    before = get(url, "/persist", recursive="true", sorted="true", quorum="true")
    assert before.status == 200

    cluster.stop()
    assert cluster.running_indexes() == []
    cluster.start()

    for member_url in cluster.client_urls:
        after = get(member_url, "/persist", recursive="true", sorted="true", quorum="true")
        assert after.status == 200
        assert strip_ttl(after.json()) == strip_ttl(before.json())
        assert after.header_int("X-Etcd-Index") >= before.header_int("X-Etcd-Index")
    node = get(url, queue_key).json()["node"]
    assert node["value"] == "job"
    ttl_node = get(url, "/persist/ttl").json()["node"]
    assert ttl_node["expiration"] == with_ttl.json()["node"]["expiration"]
    assert 0 < ttl_node["ttl"] <= 600
    # The index goes on from where it was: nothing is reused.
    again = write(url, "/persist/plain", "after restart")
    assert again.header_int("X-Etcd-Index") > before.header_int("X-Etcd-Index")
    assert again.json()["prevNode"]["value"] == "kept"


def strip_ttl(value: object) -> object:
    """A v2 reply without the remaining ``ttl`` (it counts down between two reads)."""
    if isinstance(value, dict):
        return {key: strip_ttl(item) for key, item in value.items() if key != "ttl"}
    if isinstance(value, list):
        return [strip_ttl(item) for item in value]
    return value
