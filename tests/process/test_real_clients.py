"""Real etcd clients, unchanged, against a 3-process troika cluster: etcdctl v2
(``ETCDCTL_API=2``) compared command by command with the same commands against etcd 3.4, and
python-etcd's ``Client``.

etcdctl first reads ``/v2/members`` and then talks to the client URLs it finds there, so these
tests also check that every member advertises a reachable URL. Outputs are compared after
putting indexes as deltas from an anchor write (``[B+2]``), member ids as names and URLs as
``<client m1>``; ``ls`` without ``--sort`` is compared as a set of lines (etcd's order is Go's
map order).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import etcd  # type: ignore[import-untyped]
import pytest

from bench.clusters import EtcdCluster, ProcessCluster, TroikaCluster
from tests.process.v2http import get, put, send

pytestmark = pytest.mark.process

ETCDCTL = shutil.which("etcdctl")
ETCDCTL_TIMEOUT_S = 30.0
WATCH_TIMEOUT_S = 15.0
ERROR_INDEX = re.compile(r"\[(\d+)\]$", re.MULTILINE)
INDEX_LINE = re.compile(r"^(Created-Index|Modified-Index|Index): (\d+)$", re.MULTILINE)
JSON_INDEX = re.compile(r'"(createdIndex|modifiedIndex)":(\d+)')
IN_ORDER_KEY = re.compile(r"/(\d{20})\b")

needs_etcdctl = pytest.mark.skipif(ETCDCTL is None, reason="etcdctl is not installed")


@dataclass(frozen=True)
class Run:
    """An etcdctl run, normalized: exit code, stdout, stderr."""

    code: int
    stdout: str
    stderr: str


class Etcdctl:
    """etcdctl v2 against one cluster, with its output normalized for comparison."""

    def __init__(self, cluster: ProcessCluster) -> None:
        self.cluster = cluster
        self.base = put(cluster.client_urls[0], "/_anchors/etcdctl", "anchor").header_int(
            "X-Etcd-Index"
        )
        members = send(cluster.client_urls[0], "GET", "/v2/members").json()["members"]
        self.names_by_id = {member["id"]: member["name"] for member in members}

    def raw(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        assert ETCDCTL is not None
        command = [ETCDCTL, "--endpoints", self.cluster.client_urls[0], *arguments]
        environment = dict(os.environ, ETCDCTL_API="2")
        return subprocess.run(
            command,
            env=environment,
            capture_output=True,
            text=True,
            timeout=ETCDCTL_TIMEOUT_S,
            check=False,
        )

    def __call__(self, *arguments: str) -> Run:
        done = self.raw(*arguments)
        return Run(done.returncode, self.normalize(done.stdout), self.normalize(done.stderr))

    def normalize(self, text: str) -> str:
        def index(number: str) -> str:
            value = int(number)
            return f"B+{value - self.base}" if value >= self.base else number

        text = ERROR_INDEX.sub(lambda match: f"[{index(match.group(1))}]", text)
        text = INDEX_LINE.sub(lambda match: f"{match.group(1)}: {index(match.group(2))}", text)
        text = JSON_INDEX.sub(lambda match: f'"{match.group(1)}":"{index(match.group(2))}"', text)
        text = IN_ORDER_KEY.sub(lambda match: f"/<{index(match.group(1))}>", text)
        for member_id, name in self.names_by_id.items():
            text = text.replace(member_id, f"<id {name}>")
        for number, name in enumerate(self.cluster.names):
            text = text.replace(self.cluster.client_urls[number], f"<client {name}>")
            text = text.replace(self.cluster.peer_urls[number], f"<peer {name}>")
        return text


@pytest.fixture(scope="module")
def etcdctl_pair(
    troika_cluster: TroikaCluster, etcd_cluster: EtcdCluster
) -> Iterator[tuple[Etcdctl, Etcdctl]]:
    if ETCDCTL is None:
        pytest.skip("etcdctl is not installed")
    yield Etcdctl(troika_cluster), Etcdctl(etcd_cluster)


# (arguments, exit code, troika's normalized stdout + stderr when it is worth spelling out)
SESSION: list[tuple[tuple[str, ...], int, str | None]] = [
    (("set", "/ctl/a", "1"), 0, "1\n"),
    (("get", "/ctl/a"), 0, "1\n"),
    (("mk", "/ctl/a", "2"), 4, "Error:  105: Key already exists (/ctl/a) [B+1]\n"),
    (("mk", "/ctl/b", "2"), 0, "2\n"),
    (("update", "/ctl/a", "3"), 0, "3\n"),
    (("update", "/ctl/none", "1"), 4, "Error:  100: Key not found (/ctl/none) [B+3]\n"),
    (("rm", "/ctl/b"), 0, "PrevNode.Value: 2\n"),
    (("rm", "/ctl/none"), 4, None),
    (("mkdir", "/ctl/d"), 0, ""),
    (("mkdir", "/ctl/d"), 4, "Error:  105: Key already exists (/ctl/d) [B+5]\n"),
    (("set", "/ctl/d/x", "y"), 0, "y\n"),
    (("mkdir", "/ctl/d/e"), 0, ""),
    (("ls", "--sort", "/ctl"), 0, "/ctl/a\n/ctl/d\n"),
    (("ls", "--sort", "--recursive", "/ctl"), 0, "/ctl/a\n/ctl/d\n/ctl/d/e\n/ctl/d/x\n"),
    (("ls", "--sort", "--recursive", "-p", "/ctl"), 0, None),
    (("ls", "/nonexistent"), 4, None),
    (("get", "/ctl/d"), 1, "/ctl/d: is a directory\n"),
    (("rmdir", "/ctl/d"), 4, "Error:  108: Directory not empty (/ctl/d) [B+7]\n"),
    (("rmdir", "/ctl/d/e"), 0, ""),
    (("-o", "extended", "get", "/ctl/a"), 0, None),
    (("-o", "json", "get", "/ctl/a"), 0, None),
    (("set", "--swap-with-value", "3", "/ctl/a", "4"), 0, "4\n"),
    (("set", "--swap-with-value", "9", "/ctl/a", "5"), 4, None),
    (("rm", "--with-value", "4", "/ctl/a"), 0, "\n"),
    (("set", "--ttl", "100", "/ctl/t", "v"), 0, "v\n"),
    (("update", "--ttl", "200", "/ctl/t", "w"), 0, "w\n"),
    (("mk", "--in-order", "/ctl/q", "job"), 0, "job\n"),
    (("updatedir", "--ttl", "50", "/ctl/d"), 0, ""),
    (("rm", "--recursive", "/ctl/d"), 0, ""),
]


@needs_etcdctl
def test_etcdctl_commands_match_etcd(etcdctl_pair: tuple[Etcdctl, Etcdctl]) -> None:
    troika, reference = etcdctl_pair
    differences: list[str] = []
    for arguments, code, expected in SESSION:
        ours, theirs = troika(*arguments), reference(*arguments)
        assert ours.code == code, (arguments, ours)
        if expected is not None:
            assert ours.stdout + ours.stderr == expected, (arguments, ours)
        if ours != theirs:
            differences.append(f"etcdctl {' '.join(arguments)}: troika {ours} != etcd {theirs}")
    assert not differences, "\n".join(differences)
    # ls without --sort: etcd's order is arbitrary, the set of lines is not.
    ours, theirs = troika("ls", "--recursive", "/ctl"), reference("ls", "--recursive", "/ctl")
    assert ours.code == theirs.code == 0
    assert sorted(ours.stdout.splitlines()) == sorted(theirs.stdout.splitlines())
    assert "/ctl/t" in ours.stdout.splitlines()


def run_watch(ctl: Etcdctl, key: str) -> subprocess.CompletedProcess[str]:
    """``etcdctl watch key`` in the background; set the key until the watch prints it."""
    assert ETCDCTL is not None
    command = [ETCDCTL, "--endpoints", ctl.cluster.client_urls[0], "watch", key]
    environment = dict(os.environ, ETCDCTL_API="2")
    with subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as watcher:
        deadline = time.monotonic() + WATCH_TIMEOUT_S
        try:
            while watcher.poll() is None and time.monotonic() < deadline:
                assert ctl.raw("set", key, "seen").returncode == 0
                try:
                    watcher.wait(timeout=0.3)
                except subprocess.TimeoutExpired:
                    continue
        finally:
            if watcher.poll() is None:
                watcher.kill()
        stdout, stderr = watcher.communicate(timeout=5)
        return subprocess.CompletedProcess(command, watcher.returncode, stdout, stderr)


@needs_etcdctl
def test_etcdctl_watch_sees_a_set(etcdctl_pair: tuple[Etcdctl, Etcdctl]) -> None:
    troika, reference = etcdctl_pair
    ours, theirs = run_watch(troika, "/ctl/watched"), run_watch(reference, "/ctl/watched")
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, "seen\n", "")
    assert (ours.returncode, ours.stdout, ours.stderr) == (
        theirs.returncode,
        theirs.stdout,
        theirs.stderr,
    )


def member_lines(ctl: Etcdctl) -> list[str]:
    """``member list``, normalized, with isLeader replaced by whether it names the leader."""
    leader_name = ctl.cluster.names[ctl.cluster.wait_for_leader()]
    run = ctl("member", "list")
    assert run.code == 0, run
    assert run.stderr == ""
    lines = []
    for line in run.stdout.splitlines():
        match = re.fullmatch(r"<id (m\d)>: name=(m\d) (.*) isLeader=(true|false)", line)
        assert match, line
        assert match.group(1) == match.group(2)
        assert (match.group(4) == "true") == (match.group(1) == leader_name), line
        lines.append(f"{match.group(1)}: {match.group(3)}")
    return sorted(lines)


@needs_etcdctl
def test_etcdctl_member_list(etcdctl_pair: tuple[Etcdctl, Etcdctl]) -> None:
    troika, reference = etcdctl_pair
    ours = member_lines(troika)
    assert ours == [
        f"{name}: peerURLs=<peer {name}> clientURLs=<client {name}>" for name in ("m1", "m2", "m3")
    ]
    assert ours == member_lines(reference)


@needs_etcdctl
def test_etcdctl_cluster_health(etcdctl_pair: tuple[Etcdctl, Etcdctl]) -> None:
    troika, reference = etcdctl_pair
    ours, theirs = troika("cluster-health"), reference("cluster-health")
    assert ours.code == 0
    assert sorted(ours.stdout.splitlines()) == sorted(
        [
            *(
                f"member <id {name}> is healthy: got healthy result from <client {name}>"
                for name in ("m1", "m2", "m3")
            ),
            "cluster is healthy",
        ]
    )
    assert (ours.code, sorted(ours.stdout.splitlines()), ours.stderr) == (
        theirs.code,
        sorted(theirs.stdout.splitlines()),
        theirs.stderr,
    )


# ---------------------------------------------------------------------------- python-etcd


@pytest.fixture(scope="module")
def python_etcd(troika_cluster: TroikaCluster) -> etcd.Client:
    """python-etcd's Client on every member, reconnecting to another when one fails."""
    hosts = []
    for url in troika_cluster.client_urls:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        hosts.append((host, int(port)))
    return etcd.Client(host=tuple(hosts), allow_reconnect=True, read_timeout=10)


def test_python_etcd_write_read_test_and_set_delete(python_etcd: etcd.Client) -> None:
    client = python_etcd
    created = client.write("/py/a", "1")
    assert (created.newKey, created.action, created.value) == (True, "set", "1")
    replaced = client.write("/py/a", "2")
    assert (replaced.newKey, replaced.action, replaced._prev_node.value) == (False, "set", "1")
    assert client.read("/py/a").value == "2"
    swapped = client.test_and_set("/py/a", "3", "2")
    assert (swapped.action, swapped.value) == ("compareAndSwap", "3")
    with pytest.raises(etcd.EtcdCompareFailed):
        client.test_and_set("/py/a", "4", "2")
    with pytest.raises(etcd.EtcdAlreadyExist):
        client.write("/py/a", "5", prevExist=False)
    deleted = client.delete("/py/a")
    assert deleted.action == "delete"
    with pytest.raises(etcd.EtcdKeyNotFound):
        client.read("/py/a")
    with pytest.raises(etcd.EtcdKeyNotFound):
        client.read("/py/a", quorum=True)


def test_python_etcd_append_and_recursive_read(python_etcd: etcd.Client) -> None:
    client = python_etcd
    first = client.write("/py/queue", "job1", append=True)
    second = client.write("/py/queue", "job2", append=True)
    assert first.newKey and first.action == "create"
    for result in (first, second):
        name = result.key.rsplit("/", 1)[1]
        assert re.fullmatch(r"\d{20}", name), result.key
        assert int(name) == result.createdIndex == result.modifiedIndex
    assert second.createdIndex > first.createdIndex
    client.write("/py/tree/x", "1")
    client.write("/py/tree/sub/y", "2")
    tree = client.read("/py", recursive=True, sorted=True)
    assert tree.dir
    leaves = {child.key: child.value for child in tree.leaves}
    assert leaves == {
        first.key: "job1",
        second.key: "job2",
        "/py/tree/x": "1",
        "/py/tree/sub/y": "2",
    }
    ordered = client.read("/py/queue", sorted=True)
    assert [child.value for child in ordered.children] == ["job1", "job2"]
    client.delete("/py", recursive=True)
    with pytest.raises(etcd.EtcdKeyNotFound):
        client.read("/py/tree/x")


def test_python_etcd_watch(python_etcd: etcd.Client, troika_cluster: TroikaCluster) -> None:
    client = python_etcd
    with pytest.raises(etcd.EtcdWatchTimedOut):
        client.watch("/pywatch/quiet", timeout=0.5)
    # A watch from a past index returns at once.
    written = client.write("/pywatch/k", "past")
    seen = client.watch("/pywatch/k", index=written.modifiedIndex, timeout=5)
    assert (seen.value, seen.modifiedIndex) == ("past", written.modifiedIndex)
    # A watch on the next change, woken by a write through another member.
    results: list[etcd.EtcdResult] = []
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            results.append(client.watch("/pywatch/dir", recursive=True, timeout=10))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    watcher = threading.Thread(target=watch)
    watcher.start()
    other_url = troika_cluster.client_urls[-1]
    while watcher.is_alive():
        assert put(other_url, "/pywatch/dir/child", "woken").status in (200, 201)
        watcher.join(0.3)
    assert errors == []
    assert (results[0].key, results[0].value) == ("/pywatch/dir/child", "woken")
    assert get(other_url, "/pywatch/dir/child").json()["node"]["value"] == "woken"


def test_python_etcd_cluster_information(
    python_etcd: etcd.Client, troika_cluster: TroikaCluster
) -> None:
    client = python_etcd
    assert client.version == "3.4.23"
    assert sorted(client.machines) == sorted(troika_cluster.client_urls)
    leader = troika_cluster.wait_for_leader()
    assert client.leader["name"] == troika_cluster.names[leader]
    assert sorted(member["name"] for member in client.members.values()) == troika_cluster.names
