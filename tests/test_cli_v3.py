"""``troika put/get/del/txn/compaction`` against etcdctl 3.4, and their pure cores.

The differential half starts two fresh etcd 3.4 members (the reference and the subject),
runs one script of commands with real ``etcdctl`` against the reference and with
``troika`` against the subject, and wants the same stdout, the same ``Error:`` line and
the same exit code at every step. Both servers see the same history, so revisions line up
and ``-w json`` output compares exactly once the cluster and member ids (which differ
between any two clusters) are mapped. To check troika's own v3 server, set
``TROIKA_CLI_V3_SUBJECT`` to a fresh troika member's ``host:port``: troika's commands then
run against it instead of the second etcd.

The unit half checks the txn parser, request building and output formatting directly.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.clusters import TroikaCluster
from net.etcdpb import kv_pb2, rpc_pb2
from net.v3.client import endpoint_url, rpc_error_from_body
from net.v3.errors import RpcError, StatusCode
from troika.cli import app
from troika.v3_commands import (
    CtlError,
    DelOptions,
    Display,
    GetOptions,
    PutOptions,
    argify,
    compaction_request,
    delete_request,
    go_json,
    go_quote,
    parse_compare,
    parse_go_duration,
    parse_request_op,
    prefix_range_end,
    put_request,
    range_request,
    read_txn,
    render,
    scan_go_quoted,
    select_api,
)

STARTUP_SECONDS_MAX = 20.0
COMMAND_SECONDS_MAX = 20.0

runner = CliRunner()


# -- the differential half --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command did, as a person sees it."""

    stdout: bytes
    error: str
    exit_code: int


def _error_line(stderr: str) -> str:
    """The ``Error: ...`` line (etcdctl also logs client retries as JSON on stderr)."""
    return "\n".join(line for line in stderr.splitlines() if line.startswith("Error:"))


class Etcd:
    """One etcd 3.4 member on loopback ports, in a temp data dir."""

    def __init__(self, data_dir: Path, name: str) -> None:
        client_port, peer_port = _free_port(), _free_port()
        self.endpoint = f"127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._log = (data_dir / f"{name}.log").open("wb")
        self.process = subprocess.Popen(
            [
                "etcd",
                "--name",
                name,
                "--data-dir",
                str(data_dir / name),
                "--listen-client-urls",
                f"http://{self.endpoint}",
                "--advertise-client-urls",
                f"http://{self.endpoint}",
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"{name}={peer_url}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + STARTUP_SECONDS_MAX
        while etcdctl(self.endpoint, ["endpoint", "health"]).exit_code != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"etcd {name} did not start; see {data_dir / name}.log")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def etcdctl(endpoint: str, args: list[str], stdin: bytes = b"") -> Outcome:
    """Run the real etcdctl (v3) against ``endpoint``."""
    done = subprocess.run(
        ["etcdctl", f"--endpoints={endpoint}", *args],
        input=stdin,
        capture_output=True,
        timeout=COMMAND_SECONDS_MAX,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin:/usr/local/bin"},
        check=False,
    )
    return Outcome(done.stdout, _error_line(done.stderr.decode()), done.returncode)


def troika(endpoint: str, args: list[str], stdin: bytes = b"") -> Outcome:
    """Run ``troika`` in-process against ``endpoint`` (the flags after the command)."""
    command, *rest = args
    result = runner.invoke(app, [command, f"--endpoints={endpoint}", *rest], input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.stdout_bytes, _error_line(result.stderr), result.exit_code)


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Etcd, Etcd]]:
    if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
        pytest.skip("etcd and etcdctl (3.4) are not on PATH")
    data_dir = tmp_path_factory.mktemp("etcd-v3-cli")
    reference = Etcd(data_dir, "reference")
    try:
        subject = Etcd(data_dir, "subject")
    except RuntimeError:
        reference.stop()
        raise
    yield reference, subject
    subject.stop()
    reference.stop()


def test_gateway_error_bodies_become_rpc_errors() -> None:
    body = b'{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}'
    assert rpc_error_from_body(503, body) == RpcError(
        StatusCode.UNAVAILABLE, "etcdserver: no leader"
    )
    assert rpc_error_from_body(404, b"404 page not found\n") == RpcError(
        StatusCode.UNKNOWN, "HTTP 404: 404 page not found"
    )
    assert endpoint_url("127.0.0.1:2379") == "http://127.0.0.1:2379"
    assert endpoint_url("http://h:1/") == "http://h:1"
    with pytest.raises(ValueError, match="not host:port"):
        endpoint_url("unix://socket")


SUBJECT_VARIABLE = "TROIKA_CLI_V3_SUBJECT"
"""host:port of a fresh server to run troika's commands against instead of a second etcd."""


def _ids(outcome: Outcome) -> tuple[int, int]:
    """The cluster and member ids in the header of a ``get -w json``."""
    header = json.loads(outcome.stdout)["header"]
    return header["cluster_id"], header["member_id"]


def _same_ids(stdout: bytes, ours: tuple[int, int], theirs: tuple[int, int]) -> bytes:
    """Our ``-w json`` output with our cluster and member ids written as the reference's."""
    text = stdout.decode("utf-8", errors="surrogateescape")
    for mine, reference in zip(ours, theirs, strict=True):
        text = text.replace(str(mine), str(reference))
    return text.encode("utf-8", errors="surrogateescape")


SCRIPT: list[tuple[list[str], bytes]] = [
    (["put", "foo", "bar"], b""),
    (["put", "foo", "bar2", "--prev-kv"], b""),
    (["put", "a/1", "one"], b""),
    (["put", "a/2", "two", "-w", "json"], b""),
    (["put", "a/3", "three", "--prev-kv", "-w", "json"], b""),
    (["put", "b", "x y\tz"], b""),
    (["put", "s"], b"from stdin\n"),
    (["put", "empty"], b""),
    (["put", "k", "--ignore-value"], b""),
    (["put", "foo", "--ignore-value", "--prev-kv"], b""),
    (["put", "foo", "v", "--ignore-value"], b""),
    (["put", "foo", "v", "--lease", "zz"], b""),
    (["put", "foo", "v", "--lease", "1234"], b""),
    (["put", "foo", "v", "-w", "table"], b""),
    (["get", "foo"], b""),
    (["get", "foo", "-w", "json"], b""),
    (["get", "s"], b""),
    (["get", "a/", "--prefix"], b""),
    (["get", "a", "--prefix", "--keys-only"], b""),
    (["get", "a/", "--prefix", "--limit", "2", "-w", "json"], b""),
    (["get", "a/1", "a/3"], b""),
    (["get", "a/2", "--from-key"], b""),
    (["get", "", "--prefix", "--keys-only"], b""),
    (["get", "", "--from-key", "--limit", "1"], b""),
    (["get", "a/", "--prefix", "--sort-by", "VALUE", "--order", "DESCEND"], b""),
    (["get", "a/", "--prefix", "--sort-by", "modify", "--order", "descend"], b""),
    (["get", "a/", "--prefix", "--order", "ASCEND", "-w", "json"], b""),
    (["get", "a/", "--prefix", "--sort-by", "CREATE", "--order", "ASCEND", "-w", "json"], b""),
    (["get", "a/", "--prefix", "--print-value-only"], b""),
    (["get", "a/", "--prefix", "--hex"], b""),
    (["get", "foo", "--consistency", "s"], b""),
    (["get", "nothere"], b""),
    (["get", "nothere", "-w", "json"], b""),
    (["get", "foo", "--rev", "2"], b""),
    (["get", "foo", "--rev", "2", "-w", "json"], b""),
    (["get", "foo", "--rev", "1000"], b""),
    (["get", "a", "--prefix", "--from-key"], b""),
    (["get", "a/1", "a/2", "--prefix"], b""),
    (["get"], b""),
    (["get", "foo", "--order", "bogus"], b""),
    (["get", "foo", "--sort-by", "bogus"], b""),
    (["get", "foo", "--consistency", "x"], b""),
    (["get", "foo", "-w", "json", "--print-value-only"], b""),
    (
        ["txn"],
        b'value("foo") = "bar2"\nmod("foo") > "0"\n\nput foo baz\nget foo\ndel a/3 --prev-kv\n\n'
        b"get nope\n\n",
    ),
    (["txn"], b'value("foo") = "nope"\n\nput foo no\n\nget foo\nput x y --prev-kv\n\n'),
    (["txn", "-w", "json"], b'ver("foo") = "3"\n\nget a/ --prefix\nput c d\n\nget zz\n\n'),
    (["txn", "-i"], b'c("foo") < "1000"\n\nget "foo"\n\n\n'),
    (["txn"], b"\n\n\n"),
    (["txn"], b'val("foo") != "q\\x41"\n\nget foo\n\n\n'),
    (["txn"], b'value(`foo`) = "baz"\n\nget foo --keys-only\n\n\n'),
    (["txn"], b"foo\n\n\n"),
    (["txn"], b'value("foo")="baz"\n\n\n\n'),
    (["txn"], b'value("foo") = baz\n\n\n\n'),
    (["txn"], b'version("foo") = "x"\n\n\n\n'),
    (["txn"], b'value ("foo") = "baz"\n\n\n\n'),
    (["txn"], b"\nbogus x\n\n\n"),
    (["txn"], b"\nget\n\n\n"),
    (["txn"], b"\nget a --bogus\n\n\n"),
    (["txn"], b"\nget a --prefix --from-key\n\n\n"),
    (["txn"], b"\nput k v\n"),
    (["txn"], b"\n"),
    (["txn", "extra"], b""),
    (["del", "a/1", "--prev-kv"], b""),
    (["del", "nothing"], b""),
    (["del", "a/", "--prefix", "-w", "json"], b""),
    (["del", "b", "--from-key", "--prev-kv"], b""),
    (["del"], b""),
    (["del", "a", "b", "c"], b""),
    (["del", "a", "--prefix", "--from-key"], b""),
    (["compaction", "3"], b""),
    (["get", "foo", "--rev", "2"], b""),
    (["compaction", "2"], b""),
    (["compaction", "100000"], b""),
    (["compaction", "abc"], b""),
    (["compaction"], b""),
    (["compaction", "5", "--physical", "-w", "json"], b""),
    (["get", "", "--prefix", "-w", "json"], b""),
]


@pytest.fixture
def troika_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Etcd, str]]:
    """A fresh etcd and a fresh one-member troika cluster (both empty, so their revisions
    line up)."""
    if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
        pytest.skip("etcd and etcdctl (3.4) are not on PATH")
    reference = Etcd(tmp_path_factory.mktemp("etcd-v3-cli-reference"), "reference")
    try:
        with TroikaCluster(1, tmp_path_factory.mktemp("troika-v3-cli")) as cluster:
            yield reference, cluster.client_urls[0].removeprefix("http://")
    finally:
        reference.stop()


@pytest.mark.process
@pytest.mark.parametrize("server", ["etcd", "troika"])
def test_troika_prints_what_etcdctl_prints(server: str, request: pytest.FixtureRequest) -> None:
    """The script through etcdctl against a reference etcd and through troika's commands
    against a second etcd, then against a troika member: the same output, step by step."""
    if server == "etcd":
        reference, second = request.getfixturevalue("clusters")
        subject = second.endpoint
    else:
        reference, subject = request.getfixturevalue("troika_pair")
    subject = os.environ.get(SUBJECT_VARIABLE) or subject
    theirs = _ids(etcdctl(reference.endpoint, ["get", "x", "-w", "json"]))
    ours = _ids(troika(subject, ["get", "x", "-w", "json"]))
    differences = []
    for args, stdin in SCRIPT:
        expected = etcdctl(reference.endpoint, args, stdin)
        got = troika(subject, args, stdin)
        got = Outcome(_same_ids(got.stdout, ours, theirs), got.error, got.exit_code)
        if got != expected:
            differences.append(f"{args} stdin={stdin!r}:\n  etcdctl {expected}\n  troika  {got}")
    assert not differences, "\n".join(differences)


@pytest.mark.process
def test_count_only_counts_what_etcdctl_finds(clusters: tuple[Etcd, Etcd]) -> None:
    """``--count-only`` is not in etcdctl 3.4; its count is the one etcdctl's json shows."""
    reference, _ = clusters
    etcdctl(reference.endpoint, ["put", "count/1", "x"])
    etcdctl(reference.endpoint, ["put", "count/2", "y"])
    expected = json.loads(
        etcdctl(reference.endpoint, ["get", "count/", "--prefix", "-w", "json"]).stdout
    )["count"]
    got = troika(reference.endpoint, ["get", "count/", "--prefix", "--count-only"])
    assert (got.stdout, got.exit_code) == (f"{expected}\n".encode(), 0)
    as_json = troika(
        reference.endpoint, ["get", "count/", "--prefix", "--count-only", "-w", "json"]
    )
    assert "kvs" not in json.loads(as_json.stdout)
    assert json.loads(as_json.stdout)["count"] == expected == 2


def test_unreachable_endpoints_fail_as_etcdctl_does() -> None:
    dead = f"127.0.0.1:{_free_port()}"
    result = runner.invoke(app, ["get", "k", f"--endpoints={dead}", "--dial-timeout=200ms"])
    assert (result.exit_code, result.stderr) == (1, "Error: context deadline exceeded\n")


@pytest.mark.process
def test_failover_to_the_next_endpoint(clusters: tuple[Etcd, Etcd]) -> None:
    reference, _ = clusters
    dead = f"127.0.0.1:{_free_port()}"
    etcdctl(reference.endpoint, ["put", "failover", "works"])
    result = runner.invoke(app, ["--endpoints", f"{dead},{reference.endpoint}", "get", "failover"])
    assert (result.exit_code, result.stdout) == (0, "failover\nworks\n")


# -- the unit half: requests --------------------------------------------------------------------


def test_prefix_range_end_increments_the_last_byte_below_0xff() -> None:
    assert prefix_range_end(b"a/") == b"a0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\x00"


def test_range_request_follows_etcdctl_get() -> None:
    prefix = range_request([b"a/"], GetOptions(prefix=True, limit=2, consistency="s"))
    assert (prefix.key, prefix.range_end, prefix.limit, prefix.serializable) == (
        b"a/",
        b"a0",
        2,
        True,
    )
    everything = range_request([b""], GetOptions(prefix=True))
    assert (everything.key, everything.range_end) == (b"\x00", b"\x00")
    from_key = range_request([b"m"], GetOptions(from_key=True))
    assert (from_key.key, from_key.range_end) == (b"m", b"\x00")
    between = range_request([b"a", b"c"], GetOptions(rev=7))
    assert (between.range_end, between.revision) == (b"c", 7)
    # ASCEND by KEY is what the server does anyway, so etcdctl sends no order at all.
    assert range_request([b"a"], GetOptions(order="ascend")).sort_order == 0
    by_value = range_request([b"a"], GetOptions(sort_by="value", order="DESCEND"))
    assert (by_value.sort_target, by_value.sort_order) == (
        rpc_pb2.RangeRequest.VALUE,
        rpc_pb2.RangeRequest.DESCEND,
    )


@pytest.mark.parametrize(
    ("args", "options", "exit_code", "message"),
    [
        ([], GetOptions(), 128, "get command needs one argument"),
        ([b"a"], GetOptions(prefix=True, from_key=True), 128, "cannot be set at the same time"),
        ([b"a", b"b"], GetOptions(prefix=True), 128, "too many arguments"),
        ([b"a"], GetOptions(consistency="q"), 4, 'unknown consistency flag "q"'),
        ([b"a"], GetOptions(order="up"), 4, "bad sort order up"),
        ([b"a"], GetOptions(sort_by="size"), 4, "bad sort target size"),
        ([b"a"], GetOptions(keys_only=True, count_only=True), 128, "`--count-only`"),
    ],
)
def test_range_request_refuses_what_etcdctl_refuses(
    args: list[bytes], options: GetOptions, exit_code: int, message: str
) -> None:
    with pytest.raises(CtlError) as caught:
        range_request(args, options)
    assert caught.value.exit_code == exit_code
    assert message in caught.value.message


def test_put_request_reads_stdin_and_parses_a_hex_lease() -> None:
    request = put_request([b"k"], PutOptions(lease="1a", prev_kv=True), lambda: b"v\n")
    assert (request.key, request.value, request.lease, request.prev_kv) == (b"k", b"v\n", 26, True)
    with pytest.raises(CtlError, match="put command needs 1 argument"):
        put_request([b"k"], PutOptions(), lambda: b"")
    with pytest.raises(CtlError, match=r"bad lease ID \(strconv.ParseInt: parsing \"g\""):
        put_request([b"k", b"v"], PutOptions(lease="g"), None)
    assert put_request([b"k"], PutOptions(ignore_value=True), None).ignore_value


def test_delete_and_compaction_requests() -> None:
    assert delete_request([b"a/"], DelOptions(prefix=True, prev_kv=True)).range_end == b"a0"
    with pytest.raises(CtlError, match="del command needs one argument"):
        delete_request([b"a", b"b", b"c"], DelOptions())
    assert compaction_request(["12"], physical=True).revision == 12
    with pytest.raises(CtlError) as caught:
        compaction_request(["x"], physical=False)
    assert (caught.value.exit_code, caught.value.message) == (
        1,
        'strconv.ParseInt: parsing "x": invalid syntax',
    )


# -- the unit half: txn's syntax ------------------------------------------------------------------


def test_go_quoted_strings() -> None:
    assert scan_go_quoted('  "a\\tb\\x41\\u00e9\\101" rest', 0) == (b"a\tbA\xc3\xa9A", 22)
    assert scan_go_quoted("`raw\\n`", 0) == (b"raw\\n", 7)
    assert scan_go_quoted('"open', 0) is None
    assert scan_go_quoted('"bad \\q"', 0) is None
    assert go_quote('a"\n\\') == '"a\\"\\n\\\\"'


def test_argify_splits_words_and_quoted_strings() -> None:
    assert argify("put \"a b\" 'c d' --prev-kv") == ["put", "a b", "c d", "--prev-kv"]
    assert argify('get "x\\"y"') == ["get", 'x"y']


def test_parse_compare_targets_and_operators() -> None:
    value = parse_compare('value("foo") = "bar"')
    assert (value.target, value.key, value.value, value.result) == (
        rpc_pb2.Compare.VALUE,
        b"foo",
        b"bar",
        rpc_pb2.Compare.EQUAL,
    )
    version = parse_compare('ver("k") != "3"')
    assert (version.target, version.version, version.result) == (
        rpc_pb2.Compare.VERSION,
        3,
        rpc_pb2.Compare.NOT_EQUAL,
    )
    assert parse_compare('c("k") > "2"').create_revision == 2
    assert parse_compare('mod("k")   <   "9"').mod_revision == 9
    lease = parse_compare('lease("k") = "1a"')
    assert (lease.target, lease.lease) == (rpc_pb2.Compare.LEASE, 26)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("foo", "malformed comparison: foo"),
        ('value("foo")="baz"', 'malformed comparison: value("foo")="baz"; got value("foo")  ""'),
        ('value("k") = v', 'malformed comparison: value("k") = v; got value("k") = ""'),
        ('ver("k") = "x"', 'invalid txn compare request: ver("k") = "x"'),
        ('size("k") = "1"', 'malformed comparison: size("k") = "1" (unknown target size)'),
        ('val("k") ~ "1"', "(unknown operator ~)"),
    ],
)
def test_parse_compare_refuses_as_etcdctl(line: str, message: str) -> None:
    with pytest.raises(CtlError) as caught:
        parse_compare(line)
    assert caught.value.exit_code == 3
    assert message in caught.value.message


def test_parse_request_op() -> None:
    get = parse_request_op("get a/ --prefix --limit=2 --rev 3")
    assert (get.request_range.range_end, get.request_range.limit) == (b"a0", 2)
    assert get.request_range.revision == 3
    put = parse_request_op('put "k 1" -- -v --prev-kv')
    assert (put.request_put.key, put.request_put.value) == (b"k 1", b"-v")
    assert not put.request_put.prev_kv  # after --, a flag is an argument
    delete = parse_request_op("del k --prev-kv=true")
    assert delete.request_delete_range.prev_kv
    for bad in ("get", "watch k", "get k --bogus", "get k --limit x", "put k"):
        with pytest.raises(CtlError):
            parse_request_op(bad)


def _reader(text: str) -> Callable[[], str]:
    lines = iter(text.splitlines(keepends=True))
    return lambda: next(lines, "")


def test_read_txn_sections_and_prompts() -> None:
    prompts: list[str] = []
    request = read_txn(
        _reader('val("a") = "1"\n\nput a 2\nget a\n\ndel a\n\n'),
        prompts.append,
    )
    assert [op.WhichOneof("request") for op in request.success] == [
        "request_put",
        "request_range",
    ]
    assert [op.WhichOneof("request") for op in request.failure] == ["request_delete_range"]
    assert len(request.compare) == 1
    assert prompts == [
        "compares:",
        "success requests (get, put, del):",
        "failure requests (get, put, del):",
    ]
    with pytest.raises(CtlError, match=r"^EOF$"):
        read_txn(_reader("\nput a 2\n"), lambda _: None)


# -- the unit half: output -----------------------------------------------------------------------


def _kv(key: bytes, value: bytes, revision: int) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=key, value=value, create_revision=revision, mod_revision=revision, version=1
    )


def test_simple_output() -> None:
    simple = Display()
    found = rpc_pb2.RangeResponse(kvs=[_kv(b"k", b"v", 2), _kv(b"l", b"", 3)], count=2)
    assert render(found, simple) == [b"k", b"v", b"l", b""]
    assert render(found, Display(value_only=True)) == [b"v", b""]
    assert render(found, Display(hex=True))[:2] == [b"\\x6b", b"\\x76"]
    assert render(found, simple, count_only=True) == [b"2"]
    assert render(rpc_pb2.PutResponse(), simple) == [b"OK"]
    assert render(rpc_pb2.PutResponse(prev_kv=_kv(b"k", b"old", 2)), simple) == [
        b"OK",
        b"k",
        b"old",
    ]
    assert render(rpc_pb2.DeleteRangeResponse(deleted=3), simple) == [b"3"]
    txn = rpc_pb2.TxnResponse(
        succeeded=False,
        responses=[
            rpc_pb2.ResponseOp(response_put=rpc_pb2.PutResponse()),
            rpc_pb2.ResponseOp(response_range=found),
        ],
    )
    assert render(txn, simple) == [b"FAILURE", b"", b"OK", b"", b"k", b"v", b"l", b""]


def test_json_output_is_gos_encoding_of_the_structs() -> None:
    header = rpc_pb2.ResponseHeader(
        cluster_id=7801232528081817440, member_id=13458989633860879742, revision=4, raft_term=2
    )
    response = rpc_pb2.RangeResponse(header=header, kvs=[_kv(b"foo", b"bar", 3)], count=1)
    assert go_json(response) == (
        b'{"header":{"cluster_id":7801232528081817440,"member_id":13458989633860879742,'
        b'"revision":4,"raft_term":2},"kvs":[{"key":"Zm9v","create_revision":3,'
        b'"mod_revision":3,"version":1,"value":"YmFy"}],"count":1}'
    )
    txn = rpc_pb2.TxnResponse(
        succeeded=True,
        responses=[
            rpc_pb2.ResponseOp(
                response_put=rpc_pb2.PutResponse(header=rpc_pb2.ResponseHeader(revision=5))
            )
        ],
    )
    assert json.loads(go_json(txn)) == {
        "succeeded": True,
        "responses": [{"Response": {"ResponsePut": {"header": {"revision": 5}}}}],
    }
    assert base64.b64decode(json.loads(go_json(response))["kvs"][0]["value"]) == b"bar"


def test_render_refuses_unsupported_formats() -> None:
    with pytest.raises(CtlError) as caught:
        render(rpc_pb2.PutResponse(), Display(write_out="table"))
    assert (caught.value.exit_code, caught.value.message) == (
        4,
        "table not supported as output format",
    )
    with pytest.raises(CtlError, match="print-value-only is only for"):
        render(rpc_pb2.RangeResponse(), Display(write_out="json", value_only=True))


# -- the unit half: flags and API selection -----------------------------------------------------


def test_go_durations() -> None:
    assert parse_go_duration("2s") == 2.0
    assert parse_go_duration("1m30s") == 90.0
    assert parse_go_duration("250ms") == 0.25
    with pytest.raises(CtlError, match='time: missing unit in duration "5"'):
        parse_go_duration("5")
    with pytest.raises(CtlError, match='time: invalid duration "2x"'):
        parse_go_duration("2x")


def test_select_api_routes_v2_commands_when_asked() -> None:
    assert select_api(["put", "k", "v"], {}) == ["put", "k", "v"]
    assert select_api(["put", "k", "v"], {"ETCDCTL_API": "3"}) == ["put", "k", "v"]
    assert select_api(["get", "/k"], {"ETCDCTL_API": "2"}) == ["v2", "get", "/k"]
    assert select_api(["--endpoints", "h:1", "ls"], {"TROIKA_API": "2"}) == [
        "--endpoints",
        "h:1",
        "v2",
        "ls",
    ]
    # TROIKA_API wins over ETCDCTL_API; member and endpoint commands stay where they are.
    assert select_api(["get", "k"], {"TROIKA_API": "3", "ETCDCTL_API": "2"}) == ["get", "k"]
    assert select_api(["member", "list"], {"ETCDCTL_API": "2"}) == ["member", "list"]
    with pytest.raises(CtlError, match="unsupported API version 4"):
        select_api(["get", "k"], {"ETCDCTL_API": "4"})
    assert select_api(["serve", "--name", "m1"], {"ETCDCTL_API": "4"}) == ["serve", "--name", "m1"]


def test_v2_commands_live_under_v2() -> None:
    result = runner.invoke(app, ["v2", "--help"])
    assert result.exit_code == 0
    for command in ("put", "get", "del", "ls", "watch"):
        assert command in result.stdout
    top = runner.invoke(app, ["--help"])
    for command in ("txn", "compaction", "member", "endpoint", "v2"):
        assert command in top.stdout


def _troika_process(args: list[str], api: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "troika", *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS_MAX,
        env={**os.environ, "ETCDCTL_API": api, "TROIKA_API": ""},
        check=False,
    )


def test_etcdctl_api_picks_the_commands_of_the_console_script() -> None:
    v2 = _troika_process(["get", "--help"], "2")
    assert v2.returncode == 0
    assert "Print a key's value" in v2.stdout
    v3 = _troika_process(["get", "--help"], "3")
    assert v3.returncode == 0
    assert "Gets the key or a range of keys" in v3.stdout
    unsupported = _troika_process(["get", "k"], "9")
    assert (unsupported.returncode, unsupported.stderr) == (1, "unsupported API version 9\n")
