"""Real v3 clients, unchanged, against troika (3 member processes) and etcd 3.4 (3 members),
the same operations on both and the results compared:

- ``ETCDCTL_API=3 etcdctl`` (gRPC): put/get with the common flags, del --prefix, txn from
  stdin, compaction, member list, endpoint status and endpoint health;
- python ``etcd3`` (gRPC), run in a subprocess with
  ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``, which its old generated code needs (the
  server's protobuf is not affected);
- ``etcd3gw`` (the JSON gateway): KV and txn operations.

Outputs are compared after putting revisions as deltas from an anchor put (``B+2``), member
ids as member names, URLs by their port's place in the cluster's block of ports (the same
layout for both systems), sizes and durations as placeholders.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import etcd3gw
import pytest

from bench.clusters import EtcdCluster, ProcessCluster, TroikaCluster
from net.etcdpb import rpc_pb2
from tests.process.v3diff import Target

pytestmark = pytest.mark.process

ETCDCTL = shutil.which("etcdctl")
CLIENT_TIMEOUT_S = 60.0
URL = re.compile(r"https?://127\.0\.0\.1:(\d+)")
DURATION = re.compile(r"took = [0-9.]+[a-zµ]+")

needs_etcdctl = pytest.mark.skipif(ETCDCTL is None, reason="etcdctl is not installed")


def port_place(text: str) -> str:
    return URL.sub(lambda match: f"<url :{int(match.group(1)) % 100:02d}>", text)


class System:
    """One cluster as the clients see it: member 0, its anchor revision, member names."""

    def __init__(self, cluster: ProcessCluster, label: str) -> None:
        self.cluster = cluster
        self.url = cluster.client_urls[0]
        self.target = Target(cluster.system, self.url)
        self.base = int(self.target.put(f"/_anchors/{label}", "anchor").header.revision)
        reply, error = self.target.grpc_call(
            "/etcdserverpb.Cluster/MemberList", rpc_pb2.MemberListRequest().SerializeToString()
        )
        assert reply is not None, error
        members = rpc_pb2.MemberListResponse.FromString(reply).members
        self.names = {member.ID: member.name for member in members}

    def revision(self, number: int) -> str:
        return f"B+{number - self.base}" if number >= self.base else "old"

    def text(self, text: str) -> str:
        """Revisions after "revision " as deltas, member ids as names, URLs, durations."""
        text = port_place(text)
        text = DURATION.sub("took = <duration>", text)
        for member_id, name in self.names.items():
            text = text.replace(f"{member_id:x}", f"<{name}>").replace(str(member_id), f"<{name}>")
        return re.sub(
            r"(revision:? )(\d+)",
            lambda match: match.group(1) + self.revision(int(match.group(2))),
            text,
        )

    def close(self) -> None:
        self.target.close()


@pytest.fixture(scope="module")
def systems(
    troika_cluster: TroikaCluster, etcd_cluster: EtcdCluster
) -> Iterator[tuple[System, System]]:
    pair = (System(troika_cluster, "clients"), System(etcd_cluster, "clients"))
    yield pair
    for system in pair:
        system.close()


# ---------------------------------------------------------------------------- etcdctl


def etcdctl(
    system: System, *arguments: str, stdin: str | None = None, endpoints: str | None = None
) -> tuple[int, str, str]:
    assert ETCDCTL is not None
    done = subprocess.run(
        [ETCDCTL, "--endpoints", endpoints or system.url, "--command-timeout=20s", *arguments],
        env=dict(os.environ, ETCDCTL_API="3"),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )
    return done.returncode, done.stdout, without_client_logs(done.stderr)


def without_client_logs(text: str) -> str:
    """stderr without the client library's JSON log lines (retries: times, connection ids)."""
    return "".join(
        line for line in text.splitlines(keepends=True) if not line.startswith('{"level":')
    )


def table(text: str) -> list[str]:
    """A table's lines, column widths put aside, sorted."""
    return sorted(re.sub(r"-+", "-", re.sub(r" +", " ", line)) for line in text.splitlines())


def json_revisions(system: System, value: Any, name: str = "") -> Any:
    """etcdctl's ``-w json``: revisions as deltas, ids and terms as present."""
    if isinstance(value, list):
        return [json_revisions(system, item, name) for item in value]
    if isinstance(value, dict):
        return {key: json_revisions(system, item, key) for key, item in value.items()}
    if name in ("revision", "create_revision", "mod_revision") and isinstance(value, int):
        return system.revision(value)
    if name in ("cluster_id", "member_id", "raft_term") and isinstance(value, int):
        return "set"
    return value


ETCDCTL_SCRIPT = [
    ("put", "{p}/a", "1"),
    ("put", "{p}/b", "2"),
    ("put", "{p}/c", "3"),
    ("put", "{p}/a", "4", "--prev-kv"),
    ("get", "{p}/a"),
    ("get", "{p}/missing"),
    ("get", "{p}/", "--prefix"),
    ("get", "{p}/", "--prefix", "--keys-only"),
    ("get", "{p}/", "--prefix", "--print-value-only"),
    ("get", "{p}/", "--prefix", "--limit=2"),
    ("get", "{p}/", "--prefix", "--count-only", "-w", "json"),
    ("get", "{p}/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"),
    ("get", "{p}/", "--prefix", "--sort-by=VALUE", "--order=ASCEND"),
    ("get", "{p}/", "--prefix", "--sort-by=CREATE", "--order=DESCEND", "--limit=1"),
    ("get", "{p}/b", "--from-key", "--keys-only", "--limit=2"),
    ("get", "{p}/a", "{p}/c"),
    ("get", "{p}/a", "-w", "json"),
    ("get", "{p}/a", "-w", "fields"),
    ("get", "{p}/", "--prefix", "-w", "json", "--limit=1"),
    ("get", "{p}/a", "--rev={rev+1}"),
    ("get", "{p}/a", "--rev={rev+1000}"),
    ("get", "{p}/a", "--consistency=s"),
    ("put", "{p}/a", "--ignore-value", "--prev-kv"),
    ("put", "{p}/new", "--ignore-value"),
    ("put", "{p}/a", "5", "--lease=1234abcd"),
    ("del", "{p}/c", "--prev-kv"),
    ("del", "{p}/missing"),
    ("put", "{p}/d/1", "x"),
    ("put", "{p}/d/2", "y"),
    ("del", "{p}/d/", "--prefix"),
    ("del", "{p}/a", "{p}/b0"),
    ("get", "{p}/", "--prefix", "-w", "json"),
    ("del", "{p}/", "--prefix", "--prev-kv"),
]


def fill(system: System, part: str, prefix: str) -> str:
    """``{p}`` as the prefix, ``{rev+N}`` as the anchor revision plus N."""
    revisions = re.sub(r"\{rev\+(\d+)\}", lambda m: str(system.base + int(m.group(1))), part)
    return revisions.replace("{p}", prefix)


def fields_revisions(system: System, out: str) -> str:
    """etcdctl's ``-w fields``: revisions as deltas, the cluster id and term as set."""
    out = re.sub(r'^"(ClusterID|RaftTerm)" : \d+$', r'"\1" : set', out, flags=re.M)
    return re.sub(
        r'^"(\w*Revision)" : (\d+)$',
        lambda m: f'"{m.group(1)}" : {system.revision(int(m.group(2)))}',
        out,
        flags=re.M,
    )


def revisions_as_deltas(system: System, out: str) -> str:
    """etcdctl's txn JSON: revisions as deltas, ids and terms as set."""
    out = re.sub(
        r'"(\w+_revision|revision)":(\d+)',
        lambda m: f'"{m.group(1)}":"{system.revision(int(m.group(2)))}"',
        out,
    )
    return re.sub(r'"(cluster_id|member_id|raft_term)":\d+', r'"\1":"set"', out)


@needs_etcdctl
def test_etcdctl_kv_commands(systems: tuple[System, System]) -> None:
    outputs: list[list[str]] = []
    for system in systems:
        prefix = "/etcdctl/kv"
        lines = []
        for command in ETCDCTL_SCRIPT:
            arguments = [fill(system, part, prefix) for part in command]
            code, out, err = etcdctl(system, *arguments)
            if "fields" in arguments:
                out = fields_revisions(system, out)
            if "json" in arguments and code == 0:
                out = json.dumps(json_revisions(system, json.loads(out)), sort_keys=True)
            shown = system.text(f"{' '.join(command)} -> {code}\n{out}{err}")
            lines.append(shown)
        outputs.append(lines)
    troika, etcd = outputs
    assert any("1234abcd" in line for line in etcd)
    for command, left, right in zip(ETCDCTL_SCRIPT, troika, etcd, strict=True):
        assert left == right, f"{command}: troika\n{left}\n!= etcd\n{right}"


TXN_INPUTS = [
    # success branch, several ops, a read seeing nothing of the branch before it
    'value("{p}/k") = "v"\n\nput {p}/k "w"\nget {p}/k\n\nget {p}/k\n\n',
    # failure branch
    'value("{p}/k") = "nope"\n\nput {p}/k "x"\n\nget {p}/k\ndel {p}/k\n\n',
    # create == 0 on a missing key, mod and version compares
    'create("{p}/k") = "0"\n\nput {p}/k "again"\n\n\n',
    'mod("{p}/k") > "0"\nver("{p}/k") = "1"\n\nget {p}/k -w json\n\nput {p}/k "no"\n\n',
    # no compares at all
    "\nput {p}/j 1\nput {p}/i 2\n\n\n",
    # a duplicate key
    "\nput {p}/j 1\nput {p}/j 2\n\n\n",
]


@needs_etcdctl
def test_etcdctl_txn_from_stdin(systems: tuple[System, System]) -> None:
    outputs: list[list[str]] = []
    for system in systems:
        assert etcdctl(system, "put", "/etcdctl/txn/k", "v")[0] == 0
        lines = []
        for script in TXN_INPUTS:
            code, out, err = etcdctl(system, "txn", stdin=script.replace("{p}", "/etcdctl/txn"))
            if "-w json" in script:
                out = revisions_as_deltas(system, out)
            lines.append(system.text(f"{code}\n{out}{err}"))
        outputs.append(lines)
    troika, etcd = outputs
    for script, left, right in zip(TXN_INPUTS, troika, etcd, strict=True):
        assert left == right, f"txn {script!r}: troika\n{left}\n!= etcd\n{right}"


@needs_etcdctl
def test_etcdctl_compaction(systems: tuple[System, System]) -> None:
    outputs = []
    for system in systems:
        for value in ("1", "2", "3"):
            assert etcdctl(system, "put", "/etcdctl/compact/k", value)[0] == 0
        code, out, _ = etcdctl(system, "get", "/etcdctl/compact/k", "-w", "json")
        assert code == 0
        current = json.loads(out)["header"]["revision"]
        runs = [
            etcdctl(system, "compaction", str(current - 1)),
            etcdctl(system, "compaction", str(current - 1)),
            etcdctl(system, "compaction", "--physical", str(current)),
            etcdctl(system, "compaction", str(current + 1000)),
            etcdctl(system, "get", "/etcdctl/compact/k", f"--rev={current - 2}"),
            etcdctl(system, "get", "/etcdctl/compact/k", f"--rev={current}"),
        ]
        shown = []
        for code, out, err in runs:
            text = re.sub(rf"\b{current + 1000}\b", "<future>", f"{code}\n{out}{err}")
            for delta in range(-3, 1):
                text = re.sub(rf"\b{current + delta}\b", f"<now{delta:+d}>", text)
            shown.append(system.text(text))
        outputs.append(shown)
    assert outputs[0] == outputs[1]


@needs_etcdctl
def test_etcdctl_member_list_and_endpoints(systems: tuple[System, System]) -> None:
    outputs = []
    for system in systems:
        endpoints = ",".join(system.cluster.client_urls)
        shown: dict[str, tuple[Any, ...]] = {}
        code, out, err = etcdctl(system, "member", "list")
        shown["member list"] = (code, sorted(system.text(out).splitlines()), err)
        code, out, err = etcdctl(system, "member", "list", "-w", "table")
        shown["member list table"] = (code, table(system.text(out)), err)
        code, out, err = etcdctl(system, "endpoint", "health", endpoints=endpoints)
        shown["endpoint health"] = (code, sorted(system.text(out + err).splitlines()))
        code, out, err = etcdctl(system, "endpoint", "health", "--cluster")
        shown["endpoint health --cluster"] = (code, sorted(system.text(out + err).splitlines()))
        code, out, err = etcdctl(system, "endpoint", "status", endpoints=endpoints)
        shown["endpoint status"] = (code, endpoint_status(system, out), err)
        code, out, err = etcdctl(system, "endpoint", "status", "--cluster", "-w", "json")
        shown["endpoint status json"] = (code, endpoint_status_json(system, out), err)
        outputs.append(shown)
    troika, etcd = outputs
    assert etcd["member list"][0] == 0
    for name in etcd:
        assert troika[name] == etcd[name], f"{name}: troika {troika[name]} != etcd {etcd[name]}"


def endpoint_status(system: System, out: str) -> list[list[str]]:
    """The table's rows: url, id, version, db size, is leader, is learner, raft term,
    raft index, raft applied index, errors; sizes and Raft numbers as placeholders, one
    leader counted."""
    rows = []
    for line in out.splitlines():
        fields = [field.strip() for field in line.split(",")]
        url, member_id, version, _size, leader, learner, term, index, applied = fields[:9]
        assert int(term) > 0 and int(index) > 0 and int(applied) > 0, line
        rows.append([system.text(url), system.text(member_id), version, learner, *fields[9:]])
        rows[-1].append(leader)
    leaders = sorted(row.pop() for row in rows)
    return [*sorted(rows), leaders]


def endpoint_status_json(system: System, out: str) -> Any:
    document = json.loads(out)
    shown = []
    for entry in document:
        status = entry["Status"]
        shown.append(
            {
                "Endpoint": port_place(entry["Endpoint"]),
                "fields": sorted(status),
                "header": sorted(status["header"]),
                "version": status["version"],
                "leader is a member": status["leader"] in system.names,
                "member_id is a member": status["header"]["member_id"] in system.names,
            }
        )
    return sorted(shown, key=lambda entry: entry["Endpoint"])


# ---------------------------------------------------------------------------- python etcd3

ETCD3_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import etcd3

    host, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    client = etcd3.client(host=host, port=port, timeout=20)
    base = client.put(prefix + "/_anchor", "x").header.revision
    out = []

    def rev(number):
        return "B+%d" % (number - base) if number >= base else "old"

    def meta(m):
        if m is None:
            return None
        return [m.key.decode(), rev(m.create_revision), rev(m.mod_revision), m.version, m.lease_id]

    def record(name, thunk):
        try:
            out.append([name, thunk()])
        except Exception as error:
            if hasattr(error, "code") and hasattr(error, "details"):
                out.append([name, "raised", error.code().name, error.details()])
            else:
                out.append([name, "raised", type(error).__name__, str(error)])

    p = prefix
    record("put a", lambda: rev(client.put(p + "/a", "1").header.revision))
    record("put b prev_kv", lambda: str(client.put(p + "/b", "2", prev_kv=True).prev_kv))
    record("put a prev_kv", lambda: client.put(p + "/a", "3", prev_kv=True).prev_kv.value.decode())
    record("get a", lambda: (lambda v, m: [v.decode(), meta(m)])(*client.get(p + "/a")))
    record("get missing", lambda: list(client.get(p + "/missing")))
    record("get serializable", lambda: client.get(p + "/a", serializable=True)[0].decode())
    record("get_prefix", lambda: [[v.decode(), meta(m)] for v, m in client.get_prefix(p + "/")])
    record("get_prefix descending by key", lambda: [m.key.decode() for v, m in
           client.get_prefix(p + "/", sort_order="descend", sort_target="key")])
    record("get_prefix by mod", lambda: [m.key.decode() for v, m in
           client.get_prefix(p + "/", sort_order="ascend", sort_target="mod")])
    record("get_range", lambda: [m.key.decode() for v, m in client.get_range(p + "/a", p + "/b")])
    record("put_if_not_exists new", lambda: client.put_if_not_exists(p + "/c", "x"))
    record("put_if_not_exists again", lambda: client.put_if_not_exists(p + "/c", "y"))
    record("replace matching", lambda: client.replace(p + "/a", "3", "4"))
    record("replace stale", lambda: client.replace(p + "/a", "3", "5"))
    t = client.transactions
    def txn(compare, success, failure):
        ok, responses = client.transaction(compare=compare, success=success, failure=failure)
        shown = []
        for response in responses:
            if isinstance(response, list):
                shown.append([[v.decode(), meta(m)] for v, m in response])
            else:
                shown.append(type(response).__name__)
        return [ok, shown]
    record("txn success", lambda: txn([t.value(p + "/a") == "4", t.version(p + "/a") > 1],
           [t.put(p + "/a", "6"), t.get(p + "/a"), t.delete(p + "/b")], [t.get(p + "/a")]))
    record("txn failure", lambda: txn([t.create(p + "/a") == 0],
           [t.put(p + "/a", "7")], [t.get(p + "/a"), t.get(p + "/b")]))
    record("txn mod compare", lambda: txn([t.mod(p + "/a") < base + 1000],
           [t.get(p + "/", range_end=p + "0")], []))
    record("txn duplicate key", lambda: txn([], [t.put(p + "/a", "1"), t.put(p + "/a", "2")], []))
    record("delete", lambda: client.delete(p + "/a"))
    record("delete missing", lambda: client.delete(p + "/a"))
    record("delete prev_kv", lambda: client.delete(p + "/c", prev_kv=True,
           return_response=True).prev_kvs[0].value.decode())
    record("put d/1", lambda: rev(client.put(p + "/d/1", "1").header.revision))
    record("delete_prefix", lambda: client.delete_prefix(p + "/d/").deleted)
    record("status", lambda: [client.status().version, client.status().leader is not None])
    record("members", lambda: sorted([m.name, len(m.peer_urls), len(m.client_urls)]
           for m in client.members))
    record("compact future", lambda: client.compact(base + 1000))
    record("compact", lambda: client.compact(base + 2))
    record("get compacted revision", lambda: str(client.kvstub.Range(
           etcd3.etcdrpc.RangeRequest(key=(p + "/a").encode(), revision=base + 1), timeout=20)))
    record("get at a kept revision", lambda: len(client.kvstub.Range(
           etcd3.etcdrpc.RangeRequest(key=(p + "/a").encode(), revision=base + 6), timeout=20).kvs))
    record("get empty key", lambda: client.get(""))
    print(json.dumps(out))
    """
)


def run_etcd3(system: System, prefix: str) -> Any:
    environment = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    done = subprocess.run(
        [sys.executable, "-c", ETCD3_SCRIPT, system.target.host, str(system.target.port), prefix],
        env=environment,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_python_etcd3_over_grpc(systems: tuple[System, System]) -> None:
    troika, etcd = (run_etcd3(system, "/etcd3") for system in systems)
    assert etcd[0] == ["put a", "B+1"]
    for left, right in zip(troika, etcd, strict=True):
        assert left == right, f"troika {left} != etcd {right}"


# ---------------------------------------------------------------------------- etcd3gw


def run_etcd3gw(system: System, prefix: str) -> list[Any]:
    client = etcd3gw.Etcd3Client(host=system.target.host, port=system.target.port, timeout=20)
    out: list[Any] = []
    base = int(
        client.post(
            client.get_url("/kv/put"),
            json={"key": encode(prefix + "/_anchor"), "value": encode("x")},
        )["header"]["revision"]
    )

    def meta(item: Any) -> list[Any]:
        return [
            item["key"].decode() if isinstance(item["key"], bytes) else item["key"],
            f"B+{int(item['create_revision']) - base}",
            f"B+{int(item['mod_revision']) - base}",
            item["version"],
        ]

    def record(name: str, thunk: Any) -> None:
        try:
            out.append([name, thunk()])
        except Exception as error:
            out.append([name, "raised", type(error).__name__, str(error)])

    p = prefix
    record("put a", lambda: client.put(p + "/a", "1"))
    record("put b", lambda: client.put(p + "/b", "2"))
    record("get a", lambda: [value.decode() for value in client.get(p + "/a")])
    record("get missing", lambda: client.get(p + "/missing"))
    record(
        "get metadata",
        lambda: [[v.decode(), meta(m)] for v, m in client.get(p + "/a", metadata=True)],
    )
    record("get_prefix", lambda: [[v.decode(), meta(m)] for v, m in client.get_prefix(p + "/")])
    record(
        "get_prefix descending",
        lambda: [
            m["key"] for _, m in client.get_prefix(p + "/", sort_order="descend", sort_target="key")
        ],
    )
    record(
        "get keys_only limit",
        lambda: client.get(p + "/", range_end=p + "0", keys_only=True, limit=1, metadata=True)[0][
            1
        ]["key"],
    )
    record("create new", lambda: client.create(p + "/c", "3"))
    record("create again", lambda: client.create(p + "/c", "4"))
    record("replace matching", lambda: client.replace(p + "/a", "1", "5"))
    record("replace stale", lambda: client.replace(p + "/a", "1", "6"))
    record(
        "transaction",
        lambda: txn_shape(
            client.transaction(
                {
                    "compare": [
                        {
                            "key": encode(p + "/a"),
                            "result": "EQUAL",
                            "target": "VALUE",
                            "value": encode("5"),
                        }
                    ],
                    "success": [
                        {"request_put": {"key": encode(p + "/a"), "value": encode("7")}},
                        {"request_range": {"key": encode(p + "/a")}},
                    ],
                    "failure": [],
                }
            ),
            base,
        ),
    )
    record(
        "transaction failure",
        lambda: txn_shape(
            client.transaction(
                {
                    "compare": [
                        {
                            "key": encode(p + "/a"),
                            "result": "EQUAL",
                            "target": "CREATE",
                            "create_revision": 0,
                        }
                    ],
                    "success": [],
                    "failure": [{"request_range": {"key": encode(p + "/b")}}],
                }
            ),
            base,
        ),
    )
    record("delete", lambda: client.delete(p + "/a"))
    record("delete missing", lambda: client.delete(p + "/a"))
    record("delete prev_kv", lambda: client.delete(p + "/b", prev_kv=True))
    record("delete_prefix", lambda: client.delete_prefix(p + "/"))
    record("get after", lambda: client.get_prefix(p + "/"))
    record("status", lambda: sorted(client.status()))
    record("members", lambda: sorted([m["name"], sorted(m)] for m in client.members()))
    record("put empty key", lambda: client.put("", "x"))
    return out


def encode(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def txn_shape(result: Any, base: int) -> Any:
    text = json.dumps(
        {name: value for name, value in result.items() if name != "header"}, sort_keys=True
    )
    text = re.sub(
        r'"(create_revision|mod_revision|revision)": "(\d+)"',
        lambda m: f'"{m.group(1)}": "B+{int(m.group(2)) - base}"',
        text,
    )
    return json.loads(text)


def test_etcd3gw_over_the_gateway(systems: tuple[System, System]) -> None:
    troika, etcd = (run_etcd3gw(system, "/etcd3gw") for system in systems)
    assert etcd[0] == ["put a", True]
    for left, right in zip(troika, etcd, strict=True):
        assert left == right, f"troika {left} != etcd {right}"
