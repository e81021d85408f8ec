"""``troika serve`` as a drop-in for ``etcd``: the same flags, the same answers.

Each test runs real processes: troika and etcd 3.4.23 with the same command line and
environment, compared where etcd's answer is observable (flag errors, the v2 switch, /health,
/version, /metrics names, auto-compaction), and etcdctl over TLS with client certificates made
by trustme. Members are started by :class:`Single` (one member, its own port block).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme

from bench.clusters import PortBlock

pytestmark = pytest.mark.process

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")
needs_etcd = pytest.mark.skipif(ETCD is None or ETCDCTL is None, reason="etcd 3.4 not installed")
TROIKA = [sys.executable, "-m", "troika", "serve"]
START_TIMEOUT_S = 30.0
HOST = "127.0.0.1"


def http_request(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str, bytes]:
    """GET ``url``: (status, content type, body)."""
    scheme, _, rest = url.partition("://")
    host_port, _, path = rest.partition("/")
    host, _, port = host_port.rpartition(":")
    connection: http.client.HTTPConnection
    if scheme == "https":
        connection = http.client.HTTPSConnection(host, int(port), timeout=5, context=context)
    else:
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "/" + path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


class Single:
    """One member (troika or etcd) on ports base+0 (client), +1 (peer), +2 (metrics)."""

    def __init__(self, binary: Sequence[str], data_dir: Path, base: int, scheme: str = "http"):
        self.binary = list(binary)
        self.data_dir = data_dir
        self.base = base
        self.scheme = scheme

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.base}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.base + 2}"

    def argv(self, extra: Sequence[str]) -> list[str]:
        peer = f"http://{HOST}:{self.base + 1}"
        return [
            *self.binary,
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            f"--listen-metrics-urls={self.metrics_url}",
            *extra,
        ]


@contextmanager
def running(
    member: Single,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the member; yield once /health answers 200 on its metrics URL; stop it."""
    log = open(member.data_dir.with_suffix(".log"), "wb")  # noqa: SIM115
    process = subprocess.Popen(
        member.argv(extra), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if http_request(member.metrics_url + "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, member.data_dir.with_suffix(".log").read_text()
            assert time.monotonic() < deadline, "the member did not become healthy"
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def ports() -> Iterator[int]:
    block = PortBlock.claim(range(10))
    try:
        yield block.base
    finally:
        block.release()


def etcdctl(endpoint: str, *args: str, tls: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    assert ETCDCTL is not None
    return subprocess.run(
        [ETCDCTL, f"--endpoints={endpoint}", "--dial-timeout=3s", *tls, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "ETCDCTL_API": "3"},
        check=False,
    )


# -- flags -----------------------------------------------------------------------------------

BAD_COMMAND_LINES = [
    ["--foo=1"],
    ["--heartbeat-interval=abc"],
    ["--enable-v2", "false"],
    ["--enable-v2=maybe"],
    ["--initial-cluster-state=bogus"],
    ["--snapshot-count=-1"],
    ["--auto-compaction-mode=bogus", "--auto-compaction-retention=1"],
    ["--election-timeout=200"],
    ["--listen-client-urls=http://127.0.0.1"],
    ["--name"],
    ["--", "--name=x"],
]


def _first_error_line(output: str) -> str:
    for line in output.splitlines():
        line = re.sub(r"^\S+ \S+ [A-Z] \| (etcdmain|pkg/flags): ", "", line)  # capnslog
        line = line.removeprefix("troika serve: ")
        if "[WARNING]" in line or not line.strip():
            continue
        line = line.removeprefix("error verifying flags, ")
        return re.sub(r"\. See '(etcd|troika serve) --help'\.$", "", line)
    return ""


@needs_etcd
@pytest.mark.parametrize("argv", BAD_COMMAND_LINES, ids=" ".join)
def test_a_bad_command_line_fails_as_etcd_fails(tmp_path: Path, argv: list[str]) -> None:
    assert ETCD is not None
    outcomes = []
    for binary in ([ETCD], TROIKA):
        done = subprocess.run(
            [*binary, f"--data-dir={tmp_path / 'd'}", *argv],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        outcomes.append((done.returncode, _first_error_line(done.stderr)))
    assert outcomes[0] == outcomes[1]


@needs_etcd
def test_environment_variables_as_etcd(tmp_path: Path) -> None:
    assert ETCD is not None
    cases = [
        ({"ETCD_HEARTBEAT_INTERVAL": "abc"}, []),
        ({"ETCD_NAME": "x"}, ["--name=y"]),
        ({"ETCD_INITIAL_CLUSTER_STATE": "bogus"}, []),
    ]
    for environment, argv in cases:
        outcomes = []
        for binary in ([ETCD], TROIKA):
            done = subprocess.run(
                [*binary, f"--data-dir={tmp_path / 'd'}", *argv],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                env={**os.environ, **environment},
            )
            lines = [_first_error_line(line) for line in done.stderr.splitlines()]
            errors = [line for line in lines if "environment variable" in line or "invalid" in line]
            outcomes.append((done.returncode, errors[-1:]))
        assert outcomes[0] == outcomes[1], environment


def test_unsupported_flags_are_refused_by_name(tmp_path: Path) -> None:
    for flag in ("--force-new-cluster", "--wal-dir=/var/lib/etcd/wal", "--proxy=on"):
        done = subprocess.run(
            [*TROIKA, f"--data-dir={tmp_path / 'd'}", flag],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 1
        assert f"troika does not support {flag.split('=')[0]}=" in done.stderr
        assert not (tmp_path / "d").exists()  # refused before touching the data directory


@needs_etcd
def test_v2_switch_health_version_and_metrics_listener_as_etcd(tmp_path: Path, ports: int) -> None:
    assert ETCD is not None
    answers: dict[str, list[tuple[int, bytes]]] = {}
    for name, binary, base in (("etcd", [ETCD], ports), ("troika", TROIKA, ports + 5)):
        member = Single(binary, tmp_path / name, base)
        seen = []
        with running(member):
            for url in (
                member.client_url + "/v2/keys",
                member.client_url + "/v2/members",
                member.client_url + "/health",
                member.metrics_url + "/health",
                member.metrics_url + "/version",
            ):
                status, _, body = http_request(url)
                seen.append((status, body))
            status, _, body = http_request(member.client_url + "/version")
            seen.append((status, b"etcdserver" in body))  # type: ignore[arg-type]
        with running(member, env={"ETCD_ENABLE_V2": "true"}):
            status, _, _ = http_request(member.client_url + "/v2/keys")
            seen.append((status, b""))
        answers[name] = seen
    assert answers["troika"] == answers["etcd"]
    assert answers["troika"][0] == (404, b"404 page not found\n")
    assert answers["troika"][-1] == (200, b"")


@needs_etcd
def test_metric_names_are_etcds(tmp_path: Path, ports: int) -> None:
    assert ETCD is not None
    names: dict[str, set[tuple[str, str]]] = {}
    for name, binary, base in (("etcd", [ETCD], ports), ("troika", TROIKA, ports + 5)):
        member = Single(binary, tmp_path / name, base)
        with running(member):
            assert etcdctl(member.client_url, "put", "k", "v").returncode == 0
            for url in (member.client_url + "/metrics", member.metrics_url + "/metrics"):
                status, content_type, body = http_request(url)
                assert status == 200
                assert content_type == "text/plain; version=0.0.4; charset=utf-8"
            names[name] = set(re.findall(r"^# TYPE (\S+) (\S+)", body.decode(), re.MULTILINE))
            text = body.decode()
            if name == "troika":
                assert "etcd_server_has_leader 1.0" in text
                assert "etcd_debugging_mvcc_keys_total 1.0" in text
                handled = (
                    'grpc_server_handled_total{grpc_code="OK",grpc_method="Put",'
                    'grpc_service="etcdserverpb.KV",grpc_type="unary"} 1.0'
                )
                assert handled in text
                fsyncs = re.search(r"^etcd_disk_wal_fsync_duration_seconds_count (\S+)", text, re.M)
                assert fsyncs is not None and float(fsyncs.group(1)) >= 1  # the put's, at least
    # troika's own metrics (issue 16's per-prefix usage) are namespaced troika_; every other
    # name must be etcd's.
    troika_only = {
        (metric, kind)
        for metric, kind in names["troika"] - names["etcd"]
        if not metric.startswith("troika_")
    }
    assert not troika_only, f"named otherwise than etcd: {sorted(troika_only)}"
    wanted = {
        ("etcd_server_has_leader", "gauge"),
        ("etcd_server_leader_changes_seen_total", "counter"),
        ("etcd_server_proposals_committed_total", "gauge"),
        ("etcd_server_proposals_applied_total", "gauge"),
        ("etcd_server_proposals_pending", "gauge"),
        ("etcd_server_proposals_failed_total", "counter"),
        ("etcd_mvcc_db_total_size_in_bytes", "gauge"),
        ("etcd_debugging_mvcc_keys_total", "gauge"),
        ("grpc_server_handled_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("etcd_disk_wal_fsync_duration_seconds", "histogram"),
        ("etcd_disk_backend_commit_duration_seconds", "histogram"),
    }
    assert wanted <= names["troika"]


@needs_etcd
def test_periodic_auto_compaction_as_etcd(tmp_path: Path, ports: int) -> None:
    assert ETCD is not None
    compaction = ["--auto-compaction-mode=periodic", "--auto-compaction-retention=1s"]
    seen: dict[str, str] = {}
    for name, binary, base in (("etcd", [ETCD], ports), ("troika", TROIKA, ports + 5)):
        member = Single(binary, tmp_path / name, base)
        with running(member, compaction):
            for value in ("a", "b", "c"):
                assert etcdctl(member.client_url, "put", "k", value).returncode == 0
            deadline = time.monotonic() + 10
            while True:
                done = etcdctl(member.client_url, "get", "k", "--rev=2")
                if done.returncode != 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            seen[name] = (done.stderr.strip().splitlines() or [""])[-1]
    assert seen["troika"] == seen["etcd"]
    assert "required revision has been compacted" in seen["troika"]


@needs_etcd
def test_quota_raises_nospace_and_health_says_so_as_etcd(tmp_path: Path, ports: int) -> None:
    assert ETCD is not None
    seen: dict[str, list[object]] = {}
    for name, binary, base in (("etcd", [ETCD], ports), ("troika", TROIKA, ports + 5)):
        member = Single(binary, tmp_path / name, base)
        with running(member, ["--quota-backend-bytes=4096"]):
            done = etcdctl(member.client_url, "put", "k", "v" * 1000)
            answers: list[object] = [done.returncode, done.stderr.strip().splitlines()[-1:]]
            answers.append(etcdctl(member.client_url, "get", "k").returncode)  # reads go on
            answers.append(etcdctl(member.client_url, "alarm", "list").stdout.split(" ", 1)[-1])
            for url in (
                member.client_url + "/health",
                member.client_url + "/health?exclude=NOSPACE",
                member.metrics_url + "/health",
            ):
                status, _, body = http_request(url)
                answers.append((status, body))
        seen[name] = answers
    assert seen["troika"] == seen["etcd"]
    assert seen["troika"][1] == ["Error: etcdserver: mvcc: database space exceeded"]
    assert seen["troika"][4:] == [
        (503, b'{"health":"false"}\n'),
        (200, b'{"health":"true"}'),
        (503, b'{"health":"false"}\n'),
    ]


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    server = ca.issue_cert(HOST, "localhost")
    client = ca.issue_cert("root", common_name="root")
    other_ca = trustme.CA()
    stranger = other_ca.issue_cert("root", common_name="root")
    files = {
        "ca": ca.cert_pem,
        "server": server.cert_chain_pems[0],
        "server-key": server.private_key_pem,
        "client": client.cert_chain_pems[0],
        "client-key": client.private_key_pem,
        "stranger": stranger.cert_chain_pems[0],
        "stranger-key": stranger.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        path = tmp_path / f"{name}.pem"
        blob.write_to_path(str(path))
        paths[name] = str(path)
    return paths


UNIT_ENVIRONMENT = {
    # what a systemd unit's EnvironmentFile typically sets
    "ETCD_HEARTBEAT_INTERVAL": "100",
    "ETCD_ELECTION_TIMEOUT": "1000",
    "ETCD_SNAPSHOT_COUNT": "10000",
    "ETCD_AUTO_COMPACTION_MODE": "periodic",
    "ETCD_AUTO_COMPACTION_RETENTION": "1",
    "ETCD_QUOTA_BACKEND_BYTES": "8589934592",
    "ETCD_MAX_REQUEST_BYTES": "1572864",
    "ETCD_MAX_TXN_OPS": "128",
    "ETCD_LOGGER": "zap",
    "ETCD_LOG_LEVEL": "info",
    "ETCD_LOG_OUTPUTS": "stderr",
    "ETCD_ENABLE_V2": "true",
    "ETCD_STRICT_RECONFIG_CHECK": "true",
}


def tls_cluster_argv(
    binary: Sequence[str], root: Path, base: int, certificates: dict[str, str]
) -> list[list[str]]:
    """The command lines of three members with client and peer TLS, as a unit file runs
    them (the rest of the settings come from ``UNIT_ENVIRONMENT``)."""
    names = ("a", "b", "c")
    peer = [f"https://{HOST}:{base + 3 * i + 1}" for i in range(3)]
    initial = ",".join(f"{n}={u}" for n, u in zip(names, peer, strict=True))
    commands = []
    for index, name in enumerate(names):
        client = f"https://{HOST}:{base + 3 * index}"
        commands.append(
            [
                *binary,
                f"--name={name}",
                f"--data-dir={root / name}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer[index]}",
                f"--initial-advertise-peer-urls={peer[index]}",
                f"--initial-cluster={initial}",
                "--initial-cluster-state=new",
                "--initial-cluster-token=unit-test",
                # (etcd 3.4.23 closes an https:// metrics URL's connections unanswered)
                f"--listen-metrics-urls=http://{HOST}:{base + 3 * index + 2}",
                f"--cert-file={certificates['server']}",
                f"--key-file={certificates['server-key']}",
                f"--trusted-ca-file={certificates['ca']}",
                "--client-cert-auth=true",
                f"--peer-cert-file={certificates['server']}",
                f"--peer-key-file={certificates['server-key']}",
                f"--peer-trusted-ca-file={certificates['ca']}",
                "--peer-client-cert-auth=true",
            ]
        )
    return commands


def use_tls_cluster(base: int, certificates: dict[str, str]) -> list[str]:
    """etcdctl over TLS against the cluster at ``base``: what each step printed."""
    client = [f"https://{HOST}:{base + 3 * i}" for i in range(3)]
    endpoints = ",".join(client)
    with_cert = [
        f"--cacert={certificates['ca']}",
        f"--cert={certificates['client']}",
        f"--key={certificates['client-key']}",
    ]
    deadline = time.monotonic() + START_TIMEOUT_S
    while etcdctl(endpoints, "endpoint", "health", tls=with_cert).returncode != 0:
        assert time.monotonic() < deadline, "the TLS cluster did not become healthy"
        time.sleep(0.3)
    seen = [etcdctl(endpoints, "put", "k", "v", tls=with_cert).stdout]
    for endpoint in client:  # every member answers over TLS, replicated over peer TLS
        seen.append(etcdctl(endpoint, "get", "k", "--consistency=s", tls=with_cert).stdout)
    # no client certificate, or one from another CA: refused at the handshake
    without = etcdctl(client[0], "get", "k", tls=[f"--cacert={certificates['ca']}"])
    stranger = [
        f"--cacert={certificates['ca']}",
        f"--cert={certificates['stranger']}",
        f"--key={certificates['stranger-key']}",
    ]
    refused = etcdctl(client[0], "get", "k", tls=stranger)
    seen.append(f"without {without.returncode}, stranger {refused.returncode}")
    # HTTPS on the same port (/health, the v2 API); the metrics listeners
    context = ssl.create_default_context(cafile=certificates["ca"])
    context.load_cert_chain(certificates["client"], certificates["client-key"])
    for url in (client[1] + "/health", client[2] + "/v2/keys/k"):
        status, _, body = http_request(url, context)
        seen.append(f"{status} {body[:17]!r}")
    for port in (base + 2, base + 5):
        status, _, body = http_request(f"http://{HOST}:{port}/metrics")
        seen.append(f"{status} {b'etcd_server_has_leader 1' in body}")
    return seen


@needs_etcd
def test_three_members_with_a_units_tls_flags_as_etcd(
    tmp_path: Path, ports: int, certificates: dict[str, str]
) -> None:
    assert ETCD is not None
    results = {}
    for name, binary in (("etcd", [ETCD]), ("troika", TROIKA)):
        processes = []
        try:
            for index, argv in enumerate(
                tls_cluster_argv(binary, tmp_path / name, ports, certificates)
            ):
                log = open(tmp_path / f"{name}{index}.log", "wb")  # noqa: SIM115
                environment = {**os.environ, **UNIT_ENVIRONMENT}
                processes.append(
                    subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=environment)
                )
            results[name] = use_tls_cluster(ports, certificates)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    assert results["troika"] == results["etcd"]
    assert results["troika"][:4] == ["OK\n", "k\nv\n", "k\nv\n", "k\nv\n"]
    assert results["troika"][4] == "without 1, stranger 1"


@needs_etcd
def test_auto_tls_serves_https_and_grpc(tmp_path: Path, ports: int) -> None:
    member = Single(TROIKA, tmp_path / "auto", ports, scheme="https")
    with running(member, ["--auto-tls"]):
        insecure = ["--insecure-transport=false", "--insecure-skip-tls-verify"]
        assert etcdctl(member.client_url, "put", "k", "v", tls=insecure).stdout == "OK\n"
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        assert http_request(member.client_url + "/health", context)[0] == 200
        assert (tmp_path / "auto" / "fixtures" / "client" / "cert.pem").exists()
        plain = etcdctl(f"http://{HOST}:{ports}", "get", "k")
        assert plain.returncode != 0  # TLS only on an https:// URL


@needs_etcd
def test_three_members_with_peer_auto_tls_as_etcd(tmp_path: Path, ports: int) -> None:
    assert ETCD is not None
    names = ("a", "b", "c")
    peer = [f"https://{HOST}:{ports + 3 * i + 1}" for i in range(3)]
    client = [f"http://{HOST}:{ports + 3 * i}" for i in range(3)]
    initial = ",".join(f"{n}={u}" for n, u in zip(names, peer, strict=True))
    results = {}
    for system, binary in (("etcd", [ETCD]), ("troika", TROIKA)):
        processes = []
        try:
            for index, name in enumerate(names):
                argv = [
                    *binary,
                    f"--name={name}",
                    f"--data-dir={tmp_path / system / name}",
                    f"--listen-client-urls={client[index]}",
                    f"--advertise-client-urls={client[index]}",
                    f"--listen-peer-urls={peer[index]}",
                    f"--initial-advertise-peer-urls={peer[index]}",
                    f"--initial-cluster={initial}",
                    "--peer-auto-tls",
                ]
                log = open(tmp_path / f"{system}{index}.log", "wb")  # noqa: SIM115
                processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
            endpoints = ",".join(client)
            deadline = time.monotonic() + START_TIMEOUT_S
            while etcdctl(endpoints, "endpoint", "health").returncode != 0:
                assert time.monotonic() < deadline, f"{system}: no healthy cluster"
                time.sleep(0.3)
            seen = [etcdctl(endpoints, "put", "k", "v").stdout]
            seen += [etcdctl(url, "get", "k", "--consistency=s").stdout for url in client]
            certificate = tmp_path / system / "a" / "fixtures" / "peer" / "cert.pem"
            seen.append(str(certificate.exists()))
            results[system] = seen
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    assert results["troika"] == results["etcd"]
    assert results["troika"] == ["OK\n", "k\nv\n", "k\nv\n", "k\nv\n", "True"]


def test_log_level_and_outputs_take_effect(tmp_path: Path, ports: int) -> None:
    lines = {}
    for level in ("info", "warn"):
        member = Single(TROIKA, tmp_path / level, ports)
        with running(member, [f"--log-level={level}", "--log-outputs=stdout"], {"ETCD_FOO": "1"}):
            pass
        lines[level] = member.data_dir.with_suffix(".log").read_text()
    assert " INFO " in lines["info"]
    assert "unrecognized environment variable ETCD_FOO=1" in lines["info"]
    assert " INFO " not in lines["warn"]
