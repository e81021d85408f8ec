"""The v3 Cluster and Maintenance services with etcdctl 3.4, on troika beside etcd 3.4.

Each scenario runs the same etcdctl commands against a troika cluster and an etcd cluster and
compares what an operator sees (exit codes, errors, the member table's shape), then checks
troika's state: a backup taken with ``etcdctl snapshot save`` restores with ``troika snapshot
restore`` into a new 3-member cluster holding the same keys, revisions and HashKV; a learner is
refused promotion until it has caught up, then promoted; NOSPACE is raised past
``--quota-backend-bytes`` and writes are refused until space is freed and the alarm disarmed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from google.protobuf.message import Message

from bench.clusters import EtcdCluster, PortBlock, ProcessCluster, TroikaCluster, etcd_available
from bench.grpc_lite import LiteConnection
from net.etcdpb import rpc_pb2
from net.etcdpb.routes import grpc_path
from storage.snapshot_file import read_snapshot

pytestmark = pytest.mark.process

ETCDCTL = shutil.which("etcdctl")
COMMAND_TIMEOUT_S = 30
WAIT_S = 20.0
NO_SPACE = "etcdserver: mvcc: database space exceeded"
PUT_PATH = grpc_path("KV", "Put")
DELETE_PATH = grpc_path("KV", "DeleteRange")
NOT_IN_SYNC = "etcdserver: can only promote a learner member which is in sync with leader"


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ProcessCluster]]:
    if not etcd_available() or ETCDCTL is None:
        pytest.skip("etcd and etcdctl are not installed (.ci/run installs them)")
    troika = TroikaCluster(3, tmp_path_factory.mktemp("troika"))
    etcd = EtcdCluster(3, tmp_path_factory.mktemp("etcd"))
    with troika, etcd:
        yield [troika, etcd]


def etcdctl(endpoints: str | list[str], *args: str) -> subprocess.CompletedProcess[str]:
    if isinstance(endpoints, list):
        endpoints = ",".join(endpoints)
    assert ETCDCTL is not None
    return subprocess.run(
        [ETCDCTL, f"--endpoints={endpoints}", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def ok(endpoints: str | list[str], *args: str) -> str:
    done = etcdctl(endpoints, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def as_json(endpoints: str | list[str], *args: str) -> Any:
    return json.loads(ok(endpoints, *args, "-w", "json"))


def reconfigure(endpoints: str | list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """A membership command, retried while etcd finds the cluster "unhealthy" (its strict
    reconfiguration check wants the leader connected to a quorum for 5 s first)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        done = etcdctl(endpoints, *args)
        if "unhealthy cluster" not in done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(0.5)


def members(cluster: ProcessCluster) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = as_json(cluster.client_urls[0], "member", "list")["members"]
    return listed


def same_url_error(done: subprocess.CompletedProcess[str]) -> str:
    """A second add of one peer URL: "member ID already exist" within the second of the first
    add (the id hashes the URLs and the time, in etcd and troika alike), "Peer URLs already
    exists" after it."""
    line = error_line(done)
    if line.endswith(("member ID already exist", "Peer URLs already exists")):
        return "refused: in use"
    return line


def leader_of(cluster: ProcessCluster) -> int:
    leader: int = as_json(cluster.client_urls[0], "endpoint", "status")[0]["Status"]["leader"]
    return leader


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """etcdctl's one-line error (``Error: <message>``), without the cluster-specific ids."""
    lines = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    return lines[-1] if lines else done.stderr.strip()


def until(predicate: Any, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {what}")


# -- Cluster service ----------------------------------------------------------------------------


def test_learner_promote_refused_until_in_sync_then_removed(
    clusters: list[ProcessCluster],
) -> None:
    """A learner added but never started has matched nothing: promotion is refused with etcd's
    error on both; a second learner is refused; removing it works on both."""
    seen = []
    for cluster in clusters:
        endpoint = cluster.client_urls[0]
        ports = PortBlock.claim([0])
        try:
            url = f"http://127.0.0.1:{ports.base}"
            add = reconfigure(
                endpoint, "member", "add", "extra", "--learner", f"--peer-urls={url}", "-w", "json"
            )
            assert add.returncode == 0, add.stderr
            added = json.loads(add.stdout)
            learner_id = f"{added['member']['ID']:x}"
            assert added["member"]["isLearner"] is True
            assert any(m.get("isLearner") for m in members(cluster))
            refused = etcdctl(endpoint, "member", "promote", learner_id)
            voter = etcdctl(endpoint, "member", "promote", member_id_at(endpoint))
            to_learner = etcdctl(cluster.client_urls, "move-leader", learner_id)
            second = etcdctl(
                endpoint, "member", "add", "x2", "--learner", f"--peer-urls={url[:-1]}9"
            )
            duplicate = etcdctl(endpoint, "member", "add", "x3", f"--peer-urls={url}")
            assert reconfigure(endpoint, "member", "remove", learner_id).returncode == 0
            gone = etcdctl(endpoint, "member", "remove", learner_id)
            seen.append(
                (
                    refused.returncode,
                    error_line(refused),
                    error_line(second),
                    same_url_error(duplicate),
                    error_line(gone),
                    error_line(voter),
                    error_line(to_learner),
                    len(members(cluster)),
                )
            )
        finally:
            ports.release()
    troika, etcd = seen
    assert troika == etcd, seen
    assert NOT_IN_SYNC in troika[1]


def test_member_update_same_urls(clusters: list[ProcessCluster]) -> None:
    """``member update`` with a member's own peer URLs is accepted by both; an unknown id is
    "member not found" on both."""
    seen = []
    for cluster in clusters:
        listed = members(cluster)
        target = listed[-1]
        urls = ",".join(target["peerURLs"])
        done = ok(
            cluster.client_urls[0], "member", "update", f"{target['ID']:x}", f"--peer-urls={urls}"
        )
        unknown = etcdctl(
            cluster.client_urls[0], "member", "update", "1234", "--peer-urls=http://127.0.0.1:1"
        )
        seen.append((done.split(" updated ")[0].startswith("Member"), error_line(unknown)))
        assert members(cluster) == listed
    assert seen[0] == seen[1], seen


def start_joining_member(
    cluster: TroikaCluster, name: str, client_port: int, peer_port: int, data_dir: Path
) -> subprocess.Popen[bytes]:
    """A troika member started to join ``cluster`` (after ``member add``)."""
    peer = f"http://127.0.0.1:{peer_port}"
    client = f"http://127.0.0.1:{client_port}"
    initial = f"{cluster.layout.initial_cluster()},{name}={peer}"
    log = (data_dir.parent / f"{name}.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "troika",
            "serve",
            "--name",
            name,
            "--data-dir",
            str(data_dir),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "existing",
            "--initial-cluster-token",
            cluster.layout.token,
            *os.environ.get("TROIKA_TEST_JOIN_FLAGS", "").split(),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_troika_learner_catches_up_and_is_promoted(
    clusters: list[ProcessCluster], tmp_path: Path
) -> None:
    """A learner started with ``--initial-cluster-state existing`` catches up (it holds the
    keys written before it joined), is promoted with ``etcdctl member promote`` sent to a
    follower, then counts as a voter; removed again at the end."""
    troika = clusters[0]
    assert isinstance(troika, TroikaCluster)
    endpoint = troika.client_urls[0]
    for number in range(50):
        ok(endpoint, "put", f"learner/{number}", "v" * 100)
    ports = PortBlock.claim([0, 1])
    process = None
    try:
        peer = f"http://127.0.0.1:{ports.base + 1}"
        added = as_json(endpoint, "member", "add", "m9", "--learner", f"--peer-urls={peer}")
        learner_id = f"{added['member']['ID']:x}"
        process = start_joining_member(troika, "m9", ports.base, ports.base + 1, tmp_path / "m9")
        client = f"http://127.0.0.1:{ports.base}"

        def caught_up() -> bool:
            done = etcdctl(client, "get", "learner/49", "--consistency=s", "--print-value-only")
            return done.returncode == 0 and done.stdout.strip() == "v" * 100

        until(caught_up, "the learner serves the keys written before it joined")
        leader = troika.leader_index()
        follower = troika.client_urls[(0 if leader is None else leader + 1) % 3]
        # through a follower: it hands the promotion to the leader, which alone can decide
        until(
            lambda: etcdctl(follower, "member", "promote", learner_id).returncode == 0,
            "the learner is promoted",
        )
        assert not any(m.get("isLearner") for m in members(troika))
        status = as_json(client, "endpoint", "status")[0]["Status"]
        assert not status.get("isLearner")
        ok(endpoint, "put", "after-promotion", "x")
        ok(endpoint, "member", "remove", learner_id)
    finally:
        if process is not None:
            process.kill()
            process.wait()
        ports.release()
    assert len(members(troika)) == 3


# -- Maintenance service ------------------------------------------------------------------------


def test_hashkv_defrag_hash_and_status(clusters: list[ProcessCluster]) -> None:
    """``endpoint hashkv`` is equal on every member (a corruption check), ``defrag`` answers
    per member, and both give etcd's output shape."""
    for cluster in clusters:
        endpoints = cluster.client_urls
        for number in range(20):
            ok(endpoints[0], "put", f"hash/{number}", str(number))
        ok(endpoints[0], "del", "hash/3")
        revision = as_json(endpoints[0], "get", "hash/0")["header"]["revision"]

        def hashes(endpoints: list[str] = endpoints, revision: int = revision) -> set[int]:
            found = as_json(endpoints, "endpoint", "hashkv", f"--rev={revision}")
            return {entry["HashKV"]["hash"] for entry in found}

        until(lambda: len(hashes()) == 1, f"{cluster.system}: one HashKV on every member")
        defragged = ok(endpoints, "defrag")
        assert defragged.count("Finished defragmenting etcd member") == 3, defragged
        statuses = as_json(endpoints, "endpoint", "status")
        assert (
            sum(bool(s["Status"]["leader"] == s["Status"]["header"]["member_id"]) for s in statuses)
            == 1
        )


def test_move_leader(clusters: list[ProcessCluster]) -> None:
    """``etcdctl move-leader`` hands leadership to a follower on both; asked of a follower
    directly it is refused with "not leader" on both."""
    seen = []
    for cluster in clusters:
        statuses = as_json(cluster.client_urls, "endpoint", "status")
        leader = statuses[0]["Status"]["leader"]
        follower = next(s for s in statuses if s["Status"]["header"]["member_id"] != leader)
        target = follower["Status"]["header"]["member_id"]
        moved = ok(cluster.client_urls, "move-leader", f"{target:x}")
        assert "Leadership transferred" in moved, moved
        until(lambda cluster=cluster, target=target: leader_of(cluster) == target, "it leads")
        other = next(s for s in statuses if s["Status"]["header"]["member_id"] not in (target,))
        refused = etcdctl(other["Endpoint"], "move-leader", f"{target:x}")
        seen.append(refused.returncode)
    assert seen[0] == seen[1]


LOADED_KEYS = 3000
"""Keys of the backup test's load; each is written ``LOADED_ROUNDS`` times, one put each."""
LOADED_ROUNDS = 3
LOADED_DELETED_EVERY = 10
"""Every tenth key is deleted after the last round."""
LOAD_WRITERS = 16
"""Puts in flight while loading (one gRPC connection)."""
LOAD_TIMEOUT_S = 300.0


def load_keys(endpoint: str, keys: list[bytes], rounds: int, deleted: list[bytes]) -> None:
    """Put every key ``rounds`` times (a round after the other, each put its own revision),
    then delete ``deleted``, over one gRPC connection with ``LOAD_WRITERS`` calls in flight."""
    host, _, port = endpoint.removeprefix("http://").rpartition(":")

    async def load() -> None:
        async with trio.open_nursery() as nursery:
            connection = LiteConnection(host, int(port))
            await nursery.start(connection.run)
            for round_number in range(rounds):
                requests = [
                    (PUT_PATH, rpc_pb2.PutRequest(key=key, value=b"r%d-%s" % (round_number, key)))
                    for key in keys
                ]
                await send_all(connection, requests)
            deletes = [(DELETE_PATH, rpc_pb2.DeleteRangeRequest(key=key)) for key in deleted]
            await send_all(connection, deletes)
            nursery.cancel_scope.cancel()

    trio.run(load)


async def send_all(connection: LiteConnection, requests: Sequence[tuple[str, Message]]) -> None:
    pending = list(reversed(requests))

    async def writer() -> None:
        while pending:
            path, request = pending.pop()
            await connection.unary(path, request.SerializeToString())

    with trio.fail_after(LOAD_TIMEOUT_S):
        async with trio.open_nursery() as writers:
            for _ in range(LOAD_WRITERS):
                writers.start_soon(writer)


def test_snapshot_save_restores_into_a_new_cluster(
    clusters: list[ProcessCluster], tmp_path: Path
) -> None:
    """A backup of a loaded troika cluster (3,000 keys written 3 times each, one revision a
    put, every tenth key deleted, overwrites, a lease, a compaction) taken with ``etcdctl
    snapshot save`` restores with ``troika snapshot restore`` into a new 3-member cluster: a
    new cluster id, the same keys with the same create/mod revisions and versions, the same
    history above the compaction, the same HashKV at the backup's revision on every member
    of both clusters, and the new cluster takes writes."""
    troika = clusters[0]
    endpoint = troika.client_urls[0]
    keys = [b"backup/%05d" % number for number in range(LOADED_KEYS)]
    load_keys(endpoint, keys, LOADED_ROUNDS, keys[::LOADED_DELETED_EVERY])
    for number in range(200):
        ok(endpoint, "put", f"backup/x{number % 120}", f"value-{number}")
    ok(endpoint, "del", "backup/x7")
    lease = ok(endpoint, "lease", "grant", "600").split()[1]
    ok(endpoint, "put", "backup/leased", "x", f"--lease={lease}")
    revision = as_json(endpoint, "get", "backup/x0")["header"]["revision"]
    assert revision > LOADED_KEYS * LOADED_ROUNDS
    compacted = revision - LOADED_KEYS  # within the last round: its history stays
    ok(endpoint, "compaction", str(compacted))
    history_revision = compacted + LOADED_KEYS // 2
    before = as_json(endpoint, "get", "backup/", "--prefix")
    assert before["count"] == LOADED_KEYS - LOADED_KEYS // LOADED_DELETED_EVERY + 120
    history_before = as_json(endpoint, "get", "backup/", "--prefix", f"--rev={history_revision}")
    source_hashes = as_json(troika.client_urls, "endpoint", "hashkv", f"--rev={revision}")
    hash_before = source_hashes[0]["HashKV"]
    assert {entry["HashKV"]["hash"] for entry in source_hashes} == {hash_before["hash"]}
    file = tmp_path / "backup.db"
    saved = etcdctl(endpoint, "snapshot", "save", str(file))
    assert saved.returncode == 0, saved.stderr
    assert "Snapshot saved at" in saved.stdout
    ours = tmp_path / "ours.db"
    saved_by_troika = subprocess.run(
        [sys.executable, "-m", "troika", "snapshot", "save", str(ours), f"--endpoints={endpoint}"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert saved_by_troika.returncode == 0, saved_by_troika.stderr
    assert read_snapshot(ours).records == read_snapshot(file).records

    restored = TroikaCluster(3, tmp_path / "restored")
    with restored:
        restored.stop()  # the ports stay claimed: restore into the data directories
        layout = restored.layout
        for index, name in enumerate(restored.names):
            shutil.rmtree(restored.data_dir(index))
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "troika",
                    "snapshot",
                    "restore",
                    str(file),
                    "--name",
                    name,
                    "--data-dir",
                    str(restored.data_dir(index)),
                    "--initial-cluster",
                    layout.initial_cluster(),
                    "--initial-cluster-token",
                    layout.token,
                    "--initial-advertise-peer-urls",
                    layout.peer_url(index),
                ],
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        restored.start()
        urls = restored.client_urls
        for url in urls:  # every member, each from its own store
            after = as_json(url, "get", "backup/", "--prefix", "--consistency=s")
            assert after["kvs"] == before["kvs"]
            assert after["header"]["revision"] == before["header"]["revision"]
            assert after["header"]["cluster_id"] != before["header"]["cluster_id"]
        history = as_json(urls[2], "get", "backup/", "--prefix", f"--rev={history_revision}")
        assert history["kvs"] == history_before["kvs"]
        below = etcdctl(urls[1], "get", "backup/00001", f"--rev={compacted - 1}")
        assert "required revision has been compacted" in below.stderr, below.stderr
        hashes = as_json(urls, "endpoint", "hashkv", f"--rev={revision}")
        assert {entry["HashKV"]["hash"] for entry in hashes} == {hash_before["hash"]}
        assert {entry["HashKV"]["compact_revision"] for entry in hashes} == {compacted}
        leased = as_json(urls[0], "get", "backup/leased")["kvs"][0]
        assert f"{leased['lease']:016x}" == lease  # etcdctl prints 16 hex digits
        ok(urls[1], "put", "backup/new", "y")
        assert len(members(restored)) == 3


QUOTA_BYTES = 3 * 1024 * 1024
"""A quota a few 256 KiB puts exceed on both: troika's store starts near 1.1 MB (RocksDB's
files), etcd's near 20 KB."""
VALUE_BYTES = 256 * 1024
PUTS_MAX = 40


@pytest.fixture(scope="module")
def quota_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ProcessCluster]]:
    if not etcd_available() or ETCDCTL is None:
        pytest.skip("etcd and etcdctl are not installed (.ci/run installs them)")
    flags = (f"--quota-backend-bytes={QUOTA_BYTES}",)
    troika = TroikaCluster(1, tmp_path_factory.mktemp("troika-quota"), extra_flags=flags)
    etcd = EtcdCluster(1, tmp_path_factory.mktemp("etcd-quota"), extra_flags=flags)
    with troika, etcd:
        yield [troika, etcd]


def test_nospace_alarm_until_space_freed_and_disarmed(
    quota_clusters: list[ProcessCluster], tmp_path: Path
) -> None:
    """Puts past ``--quota-backend-bytes`` raise NOSPACE: puts are refused with etcd's error
    while reads and deletes go on; ``alarm list`` names it; after deleting, compacting,
    defragmenting and disarming, puts are taken again and no alarm is left. The same on
    both."""
    value_file = tmp_path / "value"
    value_file.write_text("v" * VALUE_BYTES)
    seen = []
    for cluster in quota_clusters:
        endpoint = cluster.client_urls[0]
        refused = None
        for number in range(PUTS_MAX):
            done = put_file(endpoint, f"big/{number}", value_file)
            if done.returncode != 0:
                refused = done
                break
        assert refused is not None, f"{cluster.system}: no put refused under the quota"
        member_id = as_json(endpoint, "endpoint", "status")[0]["Status"]["header"]["member_id"]
        alarms = ok(endpoint, "alarm", "list").strip()
        assert alarms == f"memberID:{member_id} alarm:NOSPACE", alarms
        status = as_json(endpoint, "endpoint", "status")[0]["Status"]
        assert status["errors"] == [f"memberID:{member_id} alarm:NOSPACE "], status
        small = etcdctl(endpoint, "put", "small", "x")
        read = etcdctl(endpoint, "get", "big/0", "--keys-only")
        ok(endpoint, "del", "big/", "--prefix")
        revision = as_json(endpoint, "get", "small")["header"]["revision"]
        ok(endpoint, "compaction", str(revision), "--physical")
        ok(endpoint, "defrag")
        disarmed = ok(endpoint, "alarm", "disarm").strip()
        after = etcdctl(endpoint, "put", "small", "y")
        seen.append(
            (
                error_line(refused),
                error_line(small),
                read.returncode,
                disarmed == f"memberID:{member_id} alarm:NOSPACE",
                after.returncode,
                ok(endpoint, "alarm", "list").strip(),
            )
        )
    assert seen[0] == seen[1], seen
    assert seen[0] == (f"Error: {NO_SPACE}", f"Error: {NO_SPACE}", 0, True, 0, ""), seen


def put_file(endpoint: str, key: str, value_file: Path) -> subprocess.CompletedProcess[str]:
    """``etcdctl put key`` with the value on standard input (too large for an argument)."""
    assert ETCDCTL is not None
    with value_file.open() as value:
        return subprocess.run(
            [ETCDCTL, f"--endpoints={endpoint}", "put", key],
            stdin=value,
            capture_output=True,
            text=True,
            env={**os.environ, "ETCDCTL_API": "3"},
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )


def member_id_at(endpoint: str) -> str:
    """The hex id of the member serving ``endpoint``."""
    return f"{as_json(endpoint, 'endpoint', 'status')[0]['Status']['header']['member_id']:x}"


def succeeds(endpoints: str | list[str], *args: str) -> bool:
    return etcdctl(endpoints, *args).returncode == 0


def test_troika_learner_hot_standby_takes_over_when_the_leader_is_lost(tmp_path: Path) -> None:
    """The hot-standby path: a learner (in "another location") follows a 3-member cluster;
    the leader's machine is lost (kill -9); the two members left elect a leader, the operator
    removes the lost member and promotes the learner with etcdctl, and the cluster has three
    voters again: it keeps every acknowledged write and survives losing one more member."""
    if ETCDCTL is None:
        pytest.skip("etcdctl is not installed")
    cluster = TroikaCluster(3, tmp_path / "main")
    ports = PortBlock.claim([0, 1])
    standby = None
    with cluster:
        try:
            urls = cluster.client_urls
            for number in range(30):
                ok(urls[0], "put", f"standby/{number}", str(number))
            peer = f"http://127.0.0.1:{ports.base + 1}"
            added = as_json(urls[0], "member", "add", "dr", "--learner", f"--peer-urls={peer}")
            standby_id = f"{added['member']['ID']:x}"
            standby = start_joining_member(
                cluster, "dr", ports.base, ports.base + 1, tmp_path / "dr"
            )
            standby_url = f"http://127.0.0.1:{ports.base}"
            until(
                lambda: succeeds(standby_url, "get", "standby/29", "--consistency=s"),
                "the standby serves serializable reads",
            )
            lost = cluster.leader_index()
            assert lost is not None
            lost_id = member_id_at(urls[lost])
            cluster.kill(lost)
            left = [url for index, url in enumerate(urls) if index != lost]
            until(lambda: succeeds(left, "put", "standby/after-loss", "x"), "a new leader")
            ok(left, "member", "remove", lost_id)
            until(lambda: succeeds(left, "member", "promote", standby_id), "the promotion")
            listed = as_json(left, "member", "list")["members"]
            assert [m.get("isLearner", False) for m in listed] == [False] * 3
            survivors = [index for index in range(3) if index != lost]
            cluster.kill(survivors[0])
            remaining = [urls[survivors[1]], standby_url]
            until(
                lambda: succeeds(remaining, "put", "standby/after-second-loss", "y"),
                "the last original member and the promoted standby take writes",
            )
            assert len(as_json(remaining, "get", "standby/", "--prefix")["kvs"]) == 32
        finally:
            if standby is not None:
                standby.kill()
                standby.wait()
            ports.release()


ALARM_CATCH_UP_ENTRIES = 6500
"""More entries than the 5,000 entries a leader keeps behind its snapshot: a member down through
them catches up only by installing a Raft snapshot."""


def activate_alarm(endpoint: str, member_id: int, alarm: int) -> None:
    """Maintenance/Alarm ACTIVATE over gRPC (etcdctl can only list and disarm)."""
    host, _, port = endpoint.removeprefix("http://").rpartition(":")
    request = rpc_pb2.AlarmRequest(
        action=rpc_pb2.AlarmRequest.ACTIVATE,
        memberID=member_id,
        alarm=alarm,  # type: ignore[arg-type]
    )

    async def send() -> None:
        async with trio.open_nursery() as nursery:
            connection = LiteConnection(host, int(port))
            await nursery.start(connection.run)
            await connection.unary(grpc_path("Maintenance", "Alarm"), request.SerializeToString())
            nursery.cancel_scope.cancel()

    trio.run(send)


def test_an_alarm_reaches_a_member_through_a_raft_snapshot(tmp_path: Path) -> None:
    """NOSPACE raised while a follower is down; the follower comes back after more entries
    than the leader keeps, installs a Raft snapshot, and then holds the alarm as its peers do:
    its own ``endpoint status`` names it and it refuses a put with etcd's error (both are
    answered from the member's own table, not through the log); so after a kill -9 and a
    restart."""
    if ETCDCTL is None:
        pytest.skip("etcdctl is not installed")
    with TroikaCluster(3, tmp_path / "alarms", extra_flags=("--snapshot-count=1000",)) as cluster:
        leader = cluster.wait_for_leader()
        lagging = (leader + 1) % 3
        urls = cluster.client_urls
        live = [url for index, url in enumerate(urls) if index != lagging]
        leader_id = as_json(urls[leader], "endpoint", "status")[0]["Status"]["header"]["member_id"]
        cluster.stop_member(lagging)
        activate_alarm(urls[leader], leader_id, rpc_pb2.NOSPACE)  # before the snapshot's index
        expected = f"memberID:{leader_id} alarm:NOSPACE"
        assert ok(live, "alarm", "list").strip() == expected
        # entries NOSPACE lets through: deletes (of keys that are not there; each is an entry)
        keys = [b"catch-up/%05d" % number for number in range(ALARM_CATCH_UP_ENTRIES)]
        load_keys(urls[leader], [], 0, keys)

        def compacted() -> bool:  # the alarm's entry is gone from the leader's log
            found = re.findall(r"log compacted up to (\d+)", cluster.log_tail(leader, 400))
            return bool(found) and int(found[-1]) > 0

        until(compacted, "the leader compacts its log past the alarm's entry")
        cluster.restart(lagging, wait=False)  # (its /health is false once it holds NOSPACE)
        until(
            lambda: "installed a snapshot" in cluster.log_tail(lagging, 400),
            "the lagging member installs a snapshot",
        )
        for restarted in (False, True):
            if restarted:
                cluster.kill(lagging)
                cluster.restart(lagging, wait=False)

            def errors() -> list[str]:
                done = etcdctl(urls[lagging], "endpoint", "status", "-w", "json")
                if done.returncode != 0:
                    return ["no answer"]
                listed: list[str] = json.loads(done.stdout)[0]["Status"].get("errors", [])
                return listed

            until(lambda: "etcdserver: no leader" not in errors(), "it knows the leader")
            assert errors() == [f"{expected} "]
            refused = etcdctl(urls[lagging], "put", "catch-up/after", "x")
            assert error_line(refused) == f"Error: {NO_SPACE}"
        assert ok(urls[lagging], "alarm", "disarm").strip() == expected
        ok(urls[lagging], "put", "catch-up/after", "x")
