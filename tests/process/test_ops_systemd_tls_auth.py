"""Issue 12's first "done when": an etcd 3.4 systemd unit, unchanged, run on troika.

``UNIT`` and ``ENVIRONMENT_FILE`` are what a typical etcd 3.4 deployment installs
(``/etc/systemd/system/etcd.service`` with an ``EnvironmentFile=/etc/etcd/etcd.env``, as
kubespray and the etcd operations guide write them): the identity and URLs on ``ExecStart``,
TLS for clients and peers with client-certificate authentication, simple auth tokens,
snapshots, timing, quota, periodic compaction, a metrics listener, zap logging and the v2 API
in the environment file. The test fills in the paths and ports, reads the unit the way systemd
does (``ExecStart`` with its continuation lines, ``KEY=VALUE`` lines of the environment file)
and starts three members with the binary swapped: once ``/usr/bin/etcd`` (3.4.23), which proves
the flags are etcd's, once ``python -m troika serve``. Certificates are made by trustme: one CA,
a server certificate for 127.0.0.1 used for the client and peer listeners, and a client
certificate whose common name is ``root`` (etcd takes a client certificate's CN as the user
when a request carries no token).

Then ``etcdctl`` over TLS with that client certificate runs an operator's session on each
cluster: endpoint health/status/hashkv, member list, a learner added, started (the same unit
with ``--initial-cluster-state=existing``), promoted and removed, ``snapshot save`` (restored
with ``troika snapshot restore`` for troika; ``etcdctl snapshot status`` reads only etcd's
bbolt file, so troika's backup is checked with ``troika snapshot status``), users and roles,
``auth enable``, a put a user may make and one it may not, the CN as the user, and alarm
list/disarm. What each step printed is normalised (member ids as names, ports as their place in
the cluster's block, sizes, times and hashes masked) and compared between the two systems.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import jwt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.clusters import PortBlock
from net.etcdpb import rpc_pb2

pytestmark = pytest.mark.process

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")
needs_etcd = pytest.mark.skipif(ETCD is None or ETCDCTL is None, reason="etcd 3.4 not installed")
TROIKA = [sys.executable, "-m", "troika", "serve"]
HOST = "127.0.0.1"
NAMES = ("infra0", "infra1", "infra2")
LEARNER = "infra3"
PORTS_PER_MEMBER = 3
"""client, peer, metrics."""
START_TIMEOUT_S = 40.0
COMMAND_TIMEOUT_S = 30
ETCDCTL_COMMAND_TIMEOUT_S = 15
"""The ``--command-timeout`` these helpers give etcdctl (etcdctl's own default is 5 s), under
the subprocess's ``COMMAND_TIMEOUT_S``."""
GRPC_TIMEOUT_S = 10
JWT_KEY_BITS = 2048
STOP_TIMEOUT_S = 10
POLL_S = 0.3
HTTP_OK = 200

UNIT = r"""
[Unit]
Description=etcd key-value store
Documentation=https://github.com/etcd-io/etcd
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
User=etcd
EnvironmentFile=/etc/etcd/etcd.env
ExecStart=/usr/local/bin/etcd \
  --name {name} \
  --data-dir {data_dir} \
  --listen-client-urls https://{host}:{client_port} \
  --advertise-client-urls https://{host}:{client_port} \
  --listen-peer-urls https://{host}:{peer_port} \
  --initial-advertise-peer-urls https://{host}:{peer_port} \
  --initial-cluster {initial_cluster} \
  --initial-cluster-state {state} \
  --initial-cluster-token etcd-cluster-prod \
  --cert-file={pki}/server.pem \
  --key-file={pki}/server-key.pem \
  --client-cert-auth \
  --trusted-ca-file={pki}/ca.pem \
  --peer-cert-file={pki}/server.pem \
  --peer-key-file={pki}/server-key.pem \
  --peer-client-cert-auth \
  --peer-trusted-ca-file={pki}/ca.pem
Restart=on-failure
RestartSec=5
LimitNOFILE=40000

[Install]
WantedBy=multi-user.target
"""

ENVIRONMENT_FILE = """
# /etc/etcd/etcd.env
ETCD_AUTH_TOKEN=simple
ETCD_SNAPSHOT_COUNT=10000
ETCD_HEARTBEAT_INTERVAL=100
ETCD_ELECTION_TIMEOUT=1000
ETCD_QUOTA_BACKEND_BYTES=8589934592
ETCD_AUTO_COMPACTION_MODE=periodic
ETCD_AUTO_COMPACTION_RETENTION=8
ETCD_MAX_REQUEST_BYTES=1572864
ETCD_LISTEN_METRICS_URLS=http://{host}:{metrics_port}
ETCD_METRICS=basic
ETCD_LOGGER=zap
ETCD_LOG_LEVEL=info
ETCD_LOG_OUTPUTS=stderr
ETCD_ENABLE_V2=true
ETCD_STRICT_RECONFIG_CHECK=true
"""


def exec_start(unit: str) -> list[str]:
    """The ``ExecStart=`` command of a unit, continuation lines joined, as systemd splits it."""
    joined = re.sub(r"\\\n", " ", unit)
    line = next(line for line in joined.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def environment_of(text: str) -> dict[str, str]:
    """An ``EnvironmentFile``'s ``KEY=VALUE`` lines (comments and blank lines skipped)."""
    pairs = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


# -- certificates -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ca.pem``, ``server(-key).pem`` (127.0.0.1), ``client(-key).pem`` (CN root), and for
    the bad-input tests ``stranger`` (another CA), ``expired``, ``wrong-host`` and the other
    CA itself (``other-ca.pem``); ``jwt.key``/``jwt.pub``, an RSA pair for JWT tokens."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    other = trustme.CA()
    server = ca.issue_cert(HOST, "localhost")
    client = ca.issue_cert("root", common_name="root")
    stranger = other.issue_cert("root", common_name="root")
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    expired = ca.issue_cert(
        HOST, "localhost", common_name="root", not_before=past, not_after=past.replace(year=2021)
    )
    wrong_host = ca.issue_cert("elsewhere.example", common_name="root")
    other_server = other.issue_cert(HOST, "localhost")
    key = rsa.generate_private_key(public_exponent=65537, key_size=JWT_KEY_BITS)
    (directory / "jwt.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "jwt.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    other.cert_pem.write_to_path(str(directory / "other-ca.pem"))
    for name, leaf in (
        ("server", server),
        ("client", client),
        ("stranger", stranger),
        ("expired", expired),
        ("wrong-host", wrong_host),
        ("other-server", other_server),
    ):
        leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(directory / f"{name}-key.pem"))
    return directory


def tls_flags(pki: Path, cert: str = "client") -> list[str]:
    return [
        f"--cacert={pki / 'ca.pem'}",
        f"--cert={pki / f'{cert}.pem'}",
        f"--key={pki / f'{cert}-key.pem'}",
    ]


# -- a cluster started from the unit -------------------------------------------------------------


@dataclass
class UnitCluster:
    """Members (three unless ``size`` says fewer) started from ``UNIT`` and
    ``ENVIRONMENT_FILE`` with ``binary``; ``extra_environment`` overrides the file."""

    system: str
    binary: list[str]
    root: Path
    pki: Path
    ports: PortBlock
    extra_environment: dict[str, str] = field(default_factory=dict)
    size: int = len(NAMES)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def port(self, index: int, kind: int) -> int:
        return self.ports.base + PORTS_PER_MEMBER * index + kind

    def client_url(self, index: int) -> str:
        return f"https://{HOST}:{self.port(index, 0)}"

    def peer_url(self, index: int) -> str:
        return f"https://{HOST}:{self.port(index, 1)}"

    def metrics_url(self, index: int) -> str:
        return f"http://{HOST}:{self.port(index, 2)}"

    @property
    def endpoints(self) -> list[str]:
        return [self.client_url(index) for index in range(self.size)]

    def initial_cluster(self, names: Sequence[str]) -> str:
        return ",".join(f"{name}={self.peer_url(i)}" for i, name in enumerate(names))

    def command(
        self, index: int, names: Sequence[str], state: str
    ) -> tuple[list[str], dict[str, str]]:
        """The unit's command line and environment for member ``index``, binary swapped."""
        name = names[index]
        values = {
            "name": name,
            "data_dir": self.root / f"{name}.etcd",
            "host": HOST,
            "client_port": self.port(index, 0),
            "peer_port": self.port(index, 1),
            "metrics_port": self.port(index, 2),
            "initial_cluster": self.initial_cluster(names),
            "state": state,
            "pki": self.pki,
        }
        argv = exec_start(UNIT.format(**values))
        assert argv[0] == "/usr/local/bin/etcd"
        environment = environment_of(ENVIRONMENT_FILE.format(**values))
        return [*self.binary, *argv[1:]], {**environment, **self.extra_environment}

    def start_member(self, index: int, names: Sequence[str], state: str) -> None:
        argv, environment = self.command(index, names, state)
        log = (self.root / f"{names[index]}.log").open("ab")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        self.processes[names[index]] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**clean, **environment}
        )
        log.close()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for index in range(self.size):
            self.start_member(index, NAMES[: self.size], "new")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(healthy(self.metrics_url(index)) for index in range(self.size)):
            for name, process in self.processes.items():
                assert process.poll() is None, self.log(name)
            assert time.monotonic() < deadline, f"{self.system}: not healthy over TLS"
            time.sleep(POLL_S)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop_member(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        for name in list(self.processes):
            if name != NAMES[0]:
                self.stop_member(name)
        if NAMES[0] in self.processes:
            self.stop_member(NAMES[0])


def etcdctl(
    endpoints: str | Sequence[str],
    *args: str,
    tls: Sequence[str],
    user: str | None = None,
    stdin: str | None = None,
    command_timeout_s: int = ETCDCTL_COMMAND_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """``ETCDCTL_API=3 etcdctl`` over TLS (``tls``: its certificate flags)."""
    assert ETCDCTL is not None
    if not isinstance(endpoints, str):
        endpoints = ",".join(endpoints)
    command = [
        ETCDCTL,
        f"--endpoints={endpoints}",
        "--dial-timeout=5s",
        f"--command-timeout={command_timeout_s}s",
    ]
    if user is not None:
        command.append(f"--user={user}")
    return subprocess.run(
        [*command, *tls, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        env={**os.environ, "ETCDCTL_API": "3"},
        check=False,
    )


def healthy(metrics_url: str) -> bool:
    """``/health`` on the plain-HTTP metrics listener says true (a leader, no alarm)."""
    try:
        with urllib.request.urlopen(metrics_url + "/health", timeout=POLL_S * 10) as response:
            return bool(response.status == HTTP_OK)
    except OSError:
        return False


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    """etcdctl's error lines without clientv3's JSON log lines."""
    return [line for line in done.stderr.splitlines() if line and not line.startswith("{")]


@dataclass
class Normaliser:
    """Makes two clusters' outputs comparable: member ids as names, ports as their place in
    the cluster's block, durations, sizes, hashes and revisions-as-numbers masked where they
    are each system's own."""

    cluster: UnitCluster
    ids: dict[int, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)

    def learn(self, members: list[dict[str, Any]], learner_id: int | None = None) -> None:
        for member in members:
            if member.get("name"):
                self.ids[int(member["ID"])] = member["name"]
        if learner_id is not None:
            self.ids[learner_id] = LEARNER

    def __call__(self, text: str) -> str:
        for member_id, name in self.ids.items():
            text = re.sub(rf"\b{member_id:x}\b", f"<{name}>", text)
            text = re.sub(rf"\b{member_id}\b", f"<{name}>", text)
        base = self.cluster.ports.base
        text = re.sub(rf"{re.escape(HOST)}:(\d+)", lambda m: f"H:{int(m.group(1)) - base}", text)
        text = re.sub(r"\b[0-9a-f]{12,16}\b", "<cluster-id>", text)
        text = re.sub(r"took = [\d.]+(ns|µs|ms|s)", "took = T", text)
        text = re.sub(r" {2,}", " ", text)  # etcdctl's %16x pads an id of fewer digits
        text = re.sub(
            r'ETCD_INITIAL_CLUSTER="([^"]*)"',
            lambda m: f'ETCD_INITIAL_CLUSTER="{",".join(sorted(m.group(1).split(",")))}"',
            text,
        )
        for path, name in self.paths.items():
            text = text.replace(path, name)
        return text.replace(str(self.cluster.root), "ROOT")


def step(
    seen: list[str], normalise: Normaliser, label: str, done: subprocess.CompletedProcess[str]
) -> None:
    """Record what a step showed: exit code, output (lines sorted: several endpoints answer
    in any order) and error lines."""
    out = sorted(normalise(done.stdout).splitlines())
    errors = sorted(normalise(line) for line in error_lines(done))
    seen.append(f"{label}: {done.returncode} {out} {errors}")


def wait_until(predicate: Any, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(POLL_S)


@pytest.fixture(scope="module")
def unit_clusters(
    pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, UnitCluster]]:
    """Both systems started from the unit (etcd first), each on its own block of ports."""
    if ETCD is None or ETCDCTL is None:
        pytest.skip("etcd 3.4 not installed")
    clusters: dict[str, UnitCluster] = {}
    try:
        for system, binary in (("etcd", [ETCD]), ("troika", TROIKA)):
            ports = PortBlock.claim(range(PORTS_PER_MEMBER * (len(NAMES) + 1)))
            cluster = UnitCluster(system, binary, tmp_path_factory.mktemp(system), pki, ports)
            clusters[system] = cluster
            cluster.start()
        yield clusters
    finally:
        for cluster in clusters.values():
            cluster.stop()
            cluster.ports.release()


def grpc_channel(cluster: UnitCluster) -> Any:
    """A gRPC channel to member 0 with the client certificate."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(cluster.pki / "ca.pem").read_bytes(),
        private_key=(cluster.pki / "client-key.pem").read_bytes(),
        certificate_chain=(cluster.pki / "client.pem").read_bytes(),
    )
    return grpc.secure_channel(cluster.endpoints[0].removeprefix("https://"), credentials)


def authenticate(channel: Any, name: str, password: str) -> str:
    call = channel.unary_unary(
        "/etcdserverpb.Auth/Authenticate",
        request_serializer=rpc_pb2.AuthenticateRequest.SerializeToString,
        response_deserializer=rpc_pb2.AuthenticateResponse.FromString,
    )
    answer = call(rpc_pb2.AuthenticateRequest(name=name, password=password), timeout=GRPC_TIMEOUT_S)
    return str(answer.token)


# -- the operator's session ---------------------------------------------------------------------


Ctl = Callable[..., subprocess.CompletedProcess[str]]
"""etcdctl against a cluster: ``ctl(*args, user=None, at=endpoint)``."""


def auth_steps(ctl: Ctl, seen: list[str], normalise: Normaliser) -> None:
    """root, a role reading and writing ``/app/``, a user holding it, auth enabled; a put the
    user may make, one it may not (which leaves nothing), a read."""
    root = "root:rootpw"
    step(seen, normalise, "user add root", ctl("user", "add", root))
    step(seen, normalise, "role add", ctl("role", "add", "app-rw"))
    step(
        seen,
        normalise,
        "grant",
        ctl("role", "grant-permission", "app-rw", "readwrite", "--prefix", "/app/"),
    )
    step(seen, normalise, "user add app", ctl("user", "add", "app:apppw"))
    step(seen, normalise, "grant-role", ctl("user", "grant-role", "app", "app-rw"))
    step(seen, normalise, "auth enable", ctl("auth", "enable"))
    step(seen, normalise, "permitted put", ctl("put", "/app/config", "v2", user="app:apppw"))
    step(seen, normalise, "refused put", ctl("put", "/other/key", "x", user="app:apppw"))
    step(seen, normalise, "refused put left nothing", ctl("get", "/other/key", user=root))
    step(seen, normalise, "get as app", ctl("get", "/app/config", user="app:apppw"))


def operator_session(cluster: UnitCluster, scratch: Path) -> list[str]:
    """What an operator does with etcdctl over TLS, step by step; what each step showed."""
    tls = tls_flags(cluster.pki)
    endpoints = cluster.endpoints
    seen: list[str] = []
    normalise = Normaliser(cluster)

    def ctl(
        *args: str, user: str | None = None, at: str | Sequence[str] = endpoints[0]
    ) -> subprocess.CompletedProcess[str]:
        return etcdctl(at, *args, tls=tls, user=user)

    listed = json.loads(ctl("member", "list", "-w", "json").stdout)
    normalise.learn(listed["members"])
    step(seen, normalise, "endpoint health", ctl("endpoint", "health", at=endpoints))
    step(seen, normalise, "member list", ctl("member", "list"))
    step(seen, normalise, "put", ctl("put", "/app/config", "v1"))
    for endpoint in endpoints:
        step(seen, normalise, "get", ctl("get", "/app/config", "--consistency=s", at=endpoint))

    # a learner: added, started from the same unit (existing cluster), promoted, removed
    learner_peer = cluster.peer_url(len(NAMES))
    added = ctl("member", "add", LEARNER, "--learner", f"--peer-urls={learner_peer}")
    deadline = time.monotonic() + START_TIMEOUT_S
    while "unhealthy cluster" in added.stderr and time.monotonic() < deadline:
        time.sleep(POLL_S)  # etcd's strict reconfig check wants 5 s of a connected quorum
        added = ctl("member", "add", LEARNER, "--learner", f"--peer-urls={learner_peer}")
    assert added.returncode == 0, added.stderr
    learner_id = int(re.search(r"Member\s+([0-9a-f]+)\s+added", added.stdout).group(1), 16)  # type: ignore[union-attr]
    normalise.learn([], learner_id)
    step(seen, normalise, "member add --learner", added)
    everyone = (*NAMES, LEARNER)
    cluster.start_member(len(NAMES), everyone, "existing")
    learner_url = cluster.client_url(len(NAMES))
    wait_until(
        lambda: (
            ctl("get", "/app/config", "--consistency=s", at=learner_url).stdout
            == "/app/config\nv1\n"
        ),
        "the learner serves the data",
    )
    linearizable = ctl("get", "/app/config", at=learner_url)
    step(seen, normalise, "linearizable get on the learner", linearizable)
    wait_until(
        lambda: ctl("member", "promote", f"{learner_id:x}").returncode == 0,
        "the learner is promoted",
    )
    step(seen, normalise, "member list (4 voters)", ctl("member", "list"))
    step(seen, normalise, "member remove", ctl("member", "remove", f"{learner_id:x}"))
    cluster.stop_member(LEARNER)
    step(seen, normalise, "member list (3)", ctl("member", "list"))

    # a backup, and what each system's tools say of it
    (scratch / cluster.system).mkdir()
    backup = scratch / cluster.system / "backup.db"
    normalise.paths[str(scratch / cluster.system)] = "SCRATCH"
    saved = ctl("snapshot", "save", str(backup), at=endpoints[1])
    step(seen, normalise, "snapshot save", saved)
    if cluster.system == "etcd":
        status = subprocess.run(
            [ETCDCTL or "etcdctl", "snapshot", "status", str(backup), "-w", "json"],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False,
            env={**os.environ, "ETCDCTL_API": "3"},
        )  # fmt: skip
        restore = [ETCDCTL or "etcdctl", "snapshot", "restore", str(backup)]
    else:
        status = subprocess.run(
            [sys.executable, "-m", "troika", "snapshot", "status", str(backup), "-w", "json"],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False,
        )  # fmt: skip
        restore = [sys.executable, "-m", "troika", "snapshot", "restore", str(backup)]
    seen.append(f"snapshot status: {status.returncode} {sorted(json.loads(status.stdout))}")
    restored = subprocess.run(
        [
            *restore,
            "--name", "r0",
            "--data-dir", str(scratch / cluster.system / "restored"),
            "--initial-cluster", f"r0=https://{HOST}:1",
            "--initial-cluster-token", "restored",
            "--initial-advertise-peer-urls", f"https://{HOST}:1",
        ],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False,
        env={**os.environ, "ETCDCTL_API": "3"},
    )  # fmt: skip
    seen.append(f"snapshot restore: {restored.returncode}")

    # users, roles, auth
    root = "root:rootpw"
    auth_steps(ctl, seen, normalise)
    # no token: the client certificate's CN (root) is the user
    step(seen, normalise, "put as the certificate's CN", ctl("put", "/other/key", "by-cn"))
    step(seen, normalise, "user list", ctl("user", "list", user=root))
    step(seen, normalise, "role get", ctl("role", "get", "app-rw", user=root))

    # alarms and endpoints (as root)
    step(seen, normalise, "alarm list", ctl("alarm", "list", user=root))
    step(seen, normalise, "alarm disarm", ctl("alarm", "disarm", user=root))
    statuses = json.loads(ctl("endpoint", "status", "-w", "json", at=endpoints, user=root).stdout)
    seen.append(
        "endpoint status: "
        + str(
            sorted(
                (
                    normalise(s["Endpoint"]),
                    s["Status"]["leader"] in normalise.ids,
                    s["Status"]["raftTerm"] > 0,
                )
                for s in statuses
            )
        )
    )
    step(seen, normalise, "endpoint health", ctl("endpoint", "health", at=endpoints, user=root))
    revision = json.loads(ctl("get", "/app/config", "-w", "json", user=root).stdout)["header"][
        "revision"
    ]
    hashes = json.loads(
        ctl("endpoint", "hashkv", f"--rev={revision}", "-w", "json", at=endpoints, user=root).stdout
    )
    seen.append(f"hashkv: {len(hashes)} members, {len({h['HashKV']['hash'] for h in hashes})} hash")
    step(seen, normalise, "auth disable", ctl("auth", "disable", user=root))
    return seen


@needs_etcd
def test_an_etcd_units_flags_run_troika_unchanged(
    unit_clusters: dict[str, UnitCluster], tmp_path: Path
) -> None:
    sessions = {
        system: operator_session(cluster, tmp_path) for system, cluster in unit_clusters.items()
    }
    differences = [
        f"step {index}:\n etcd:   {expected}\n troika: {got}"
        for index, (expected, got) in enumerate(
            zip(sessions["etcd"], sessions["troika"], strict=True)
        )
        if got != expected
    ]
    assert not differences, "\n".join(differences)
    troika = sessions["troika"]
    assert any(line.startswith("refused put: 1") and "permission denied" in line for line in troika)
    assert "hashkv: 3 members, 1 hash" in troika


@needs_etcd
def test_the_unit_with_jwt_tokens(pki: Path, tmp_path: Path) -> None:
    """The same unit with ``ETCD_AUTH_TOKEN=jwt,...`` (RS256, a key pair made here): the auth
    steps compare equal, and the token Authenticate hands out is a JWT signed with the
    private key, naming the user (verified with the public key)."""
    assert ETCD is not None
    token_flag = (
        f"jwt,pub-key={pki / 'jwt.pub'},priv-key={pki / 'jwt.key'},sign-method=RS256,ttl=10m"
    )
    sessions: dict[str, list[str]] = {}
    for system, binary in (("etcd", [ETCD]), ("troika", TROIKA)):
        ports = PortBlock.claim(range(PORTS_PER_MEMBER * len(NAMES)))
        environment = {"ETCD_AUTH_TOKEN": token_flag}
        cluster = UnitCluster(system, binary, tmp_path / system, pki, ports, environment)
        try:
            cluster.start()
            seen: list[str] = []
            normalise = Normaliser(cluster)

            def ctl(
                *args: str, user: str | None = None, at: str = cluster.endpoints[0]
            ) -> subprocess.CompletedProcess[str]:
                return etcdctl(at, *args, tls=tls_flags(pki), user=user)

            auth_steps(ctl, seen, normalise)
            channel = grpc_channel(cluster)
            try:
                token = authenticate(channel, "app", "apppw")
            finally:
                channel.close()
            public_key = (pki / "jwt.pub").read_bytes()
            claims = jwt.decode(token, public_key, algorithms=["RS256"])
            header = jwt.get_unverified_header(token)
            seen.append(f"jwt: {header['alg']} {sorted(claims)} {claims['username']}")
            sessions[system] = seen
        finally:
            cluster.stop()
            ports.release()
    differences = [
        f"step {index}:\n etcd:   {expected}\n troika: {got}"
        for index, (expected, got) in enumerate(
            zip(sessions["etcd"], sessions["troika"], strict=True)
        )
        if got != expected
    ]
    assert not differences, "\n".join(differences)
    assert sessions["troika"][-1] == "jwt: RS256 ['exp', 'revision', 'username'] app"


@needs_etcd
def test_type_notify_readiness_as_etcd(pki: Path, tmp_path: Path) -> None:
    """The unit says ``Type=notify``: systemd waits for ``READY=1`` on ``$NOTIFY_SOCKET``.
    etcd sends it once it serves clients; so does troika (one member of each, from the
    unit)."""
    assert ETCD is not None
    received: dict[str, bytes] = {}
    for system, binary in (("etcd", [ETCD]), ("troika", TROIKA)):
        path = tmp_path / f"{system}.notify"
        ports = PortBlock.claim(range(PORTS_PER_MEMBER))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
            receiver.bind(str(path))
            receiver.settimeout(START_TIMEOUT_S)
            environment = {"NOTIFY_SOCKET": str(path)}
            cluster = UnitCluster(system, binary, tmp_path / system, pki, ports, environment, 1)
            try:
                cluster.start()
                received[system] = receiver.recv(64)
            finally:
                cluster.stop()
                ports.release()
    assert received == {"etcd": b"READY=1", "troika": b"READY=1"}
