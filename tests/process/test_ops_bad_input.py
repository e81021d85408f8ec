"""Issue 12's "bad input" done-when: refused as etcd 3.4.23 refuses, and nothing changed.

Both systems run the systemd unit of ``test_ops_systemd_tls_auth`` (TLS for clients and peers
with client-certificate authentication, simple tokens) with three settings of its environment
file made small enough to reach: ``ETCD_MAX_REQUEST_BYTES=65536``, ``ETCD_MAX_TXN_OPS=16`` and
``ETCD_AUTH_TOKEN_TTL=2``. Each case is sent to both, and what the client saw (etcdctl's exit
code and error lines, or a gRPC status code and message) is compared; then a read shows the
store unchanged (the revision and the keys of the case's prefix as before).

- Certificates: a client certificate from another CA, an expired one, none at all (the
  server refuses the handshake); a server certificate for another host name (the client
  refuses it: a member started with it serves nobody who checks the name).
- Sizes: a put over ``--max-request-bytes`` ("request is too large"), one over gRPC's receive
  limit as well, a txn of 17 operations over ``--max-txn-ops``.
- Auth: a wrong password, an unknown user (etcd answers both alike), a simple token used after
  ``--auth-token-ttl`` ("invalid auth token"), a token that was never issued (its index,
  after the dot, already applied: etcd waits for a simple token's index to be applied
  first, so a larger one would time out instead).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest

from bench.clusters import PortBlock
from net.etcdpb import rpc_pb2
from tests.process.test_ops_systemd_tls_auth import (
    ETCD,
    ETCDCTL,
    ETCDCTL_COMMAND_TIMEOUT_S,
    NAMES,
    PORTS_PER_MEMBER,
    TROIKA,
    UnitCluster,
    authenticate,
    error_lines,
    etcdctl,
    grpc_channel,
    pki,
    tls_flags,
)

pytestmark = pytest.mark.process

__all__ = ["pki"]  # the certificates fixture, shared with the unit test

SMALL_LIMITS = {
    "ETCD_MAX_REQUEST_BYTES": "65536",
    "ETCD_MAX_TXN_OPS": "16",
    "ETCD_AUTH_TOKEN_TTL": "2",
}
TOKEN_TTL_S = 2
TOKEN_EXPIRY_WAIT_S = TOKEN_TTL_S + 3
"""etcd drops an idle simple token within a second after its TTL."""
OVER_REQUEST_BYTES = 100 * 1024
"""Over ``--max-request-bytes`` (64 KiB) but under gRPC's receive limit (it + 512 KiB)."""
OVER_GRPC_BYTES = 700 * 1024
"""Over gRPC's receive limit too."""
GRPC_TIMEOUT_S = 10
REFUSED_HANDSHAKE_TIMEOUT_S = 3
"""A refused handshake ends etcdctl only at its command timeout (``ETCDCTL_COMMAND_TIMEOUT_S``
by default), the same for both systems: a shorter one keeps each refusal from costing that."""
ROOT = "root:rootpw"


@pytest.fixture(scope="module")
def clusters(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[UnitCluster]]:
    """etcd's and troika's unit clusters, small limits; auth off between tests."""
    if ETCD is None or ETCDCTL is None:
        pytest.skip("etcd 3.4 not installed")
    started: list[UnitCluster] = []
    try:
        for system, binary in (("etcd", [ETCD]), ("troika", TROIKA)):
            ports = PortBlock.claim(range(PORTS_PER_MEMBER * len(NAMES)))
            cluster = UnitCluster(
                system, binary, tmp_path_factory.mktemp(system), pki, ports, dict(SMALL_LIMITS)
            )
            started.append(cluster)
            cluster.start()
        yield started
    finally:
        for cluster in started:
            cluster.stop()
            cluster.ports.release()


def ctl(
    cluster: UnitCluster,
    *args: str,
    cert: str = "client",
    user: str | None = None,
    stdin: str | None = None,
    command_timeout_s: int = ETCDCTL_COMMAND_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    return etcdctl(
        cluster.endpoints[0],
        *args,
        tls=tls_flags(cluster.pki, cert),
        user=user,
        stdin=stdin,
        command_timeout_s=command_timeout_s,
    )


def shown(done: subprocess.CompletedProcess[str]) -> tuple[int, list[str]]:
    """What the client showed of a refusal: the exit code and the error lines."""
    return done.returncode, error_lines(done)


def state(cluster: UnitCluster, prefix: str, user: str | None = None) -> tuple[int, str]:
    """The store's revision and the keys and values under ``prefix`` (as root's certificate
    or ``user``)."""
    done = ctl(cluster, "get", prefix, "--prefix", "-w", "json", user=user)
    assert done.returncode == 0, done.stderr
    header_revision = int(done.stdout.split('"revision":')[1].split(",")[0])
    listed = ctl(cluster, "get", prefix, "--prefix", user=user)
    return header_revision, listed.stdout


def compare(seen: dict[str, list[Any]]) -> None:
    differences = [
        f"case {index}:\n etcd:   {expected}\n troika: {got}"
        for index, (expected, got) in enumerate(zip(seen["etcd"], seen["troika"], strict=True))
        if got != expected
    ]
    assert not differences, "\n".join(differences)


# -- certificates -------------------------------------------------------------------------------


def test_invalid_client_certificates_are_refused_as_etcd_refuses_them(
    clusters: list[UnitCluster],
) -> None:
    seen: dict[str, list[Any]] = {}
    for cluster in clusters:
        assert ctl(cluster, "put", "/certs/k", "v0").returncode == 0
        before = state(cluster, "/certs/")
        answers: list[Any] = []
        for cert in ("stranger", "expired"):
            refused = ctl(
                cluster,
                "put",
                "/certs/k",
                "v1",
                cert=cert,
                command_timeout_s=REFUSED_HANDSHAKE_TIMEOUT_S,
            )
            answers.append((cert, shown(refused)))
        no_cert = etcdctl(
            cluster.endpoints[0],
            "put",
            "/certs/k",
            "v1",
            tls=[f"--cacert={cluster.pki / 'ca.pem'}"],
            command_timeout_s=REFUSED_HANDSHAKE_TIMEOUT_S,
        )
        answers.append(("no client certificate", shown(no_cert)))
        answers.append(("unchanged", state(cluster, "/certs/") == before))
        seen[cluster.system] = answers
    compare(seen)
    assert all(answer[1][0] != 0 for answer in seen["troika"][:3]), seen["troika"]
    assert seen["troika"][-1] == ("unchanged", True)


def test_a_server_certificate_for_another_host_is_refused_by_the_client(
    pki: Path, tmp_path: Path
) -> None:
    """A member whose certificate names another host: etcdctl (checking the name) refuses it
    for both systems alike; the member itself runs (its metrics listener is healthy)."""
    assert ETCD is not None
    wrong = tmp_path / "pki"
    shutil.copytree(pki, wrong)
    for suffix in (".pem", "-key.pem"):
        shutil.copy(pki / f"wrong-host{suffix}", wrong / f"server{suffix}")
    seen: dict[str, list[Any]] = {}
    for system, binary in (("etcd", [ETCD]), ("troika", TROIKA)):
        ports = PortBlock.claim(range(PORTS_PER_MEMBER))
        cluster = UnitCluster(system, binary, tmp_path / system, wrong, ports, size=1)
        try:
            cluster.start()  # ready by its metrics listener's /health (plain HTTP)
            done = ctl(
                cluster, "put", "/wrong-host/k", "v", command_timeout_s=REFUSED_HANDSHAKE_TIMEOUT_S
            )
            seen[system] = [shown(done)]
        finally:
            cluster.stop()
            ports.release()
    compare(seen)
    assert seen["troika"][0][0] != 0


# -- sizes --------------------------------------------------------------------------------------


def test_oversized_requests_and_txns_over_max_txn_ops(clusters: list[UnitCluster]) -> None:
    seen: dict[str, list[Any]] = {}
    for cluster in clusters:
        assert ctl(cluster, "put", "/sizes/k", "v0").returncode == 0
        before = state(cluster, "/sizes/")
        answers: list[Any] = []
        for size in (OVER_REQUEST_BYTES, OVER_GRPC_BYTES):
            done = ctl(cluster, "put", "/sizes/k", stdin="v" * size)
            answers.append((size, shown(done)))
        puts = "".join(f"put /sizes/t{number} x\n" for number in range(17))
        answers.append(("txn 17", shown(ctl(cluster, "txn", stdin=f"\n{puts}\n\n"))))
        sixteen = "".join(f"put /sizes/t{number} x\n" for number in range(16))
        answers.append(("unchanged", state(cluster, "/sizes/") == before))
        answers.append(("txn 16", ctl(cluster, "txn", stdin=f"\n{sixteen}\n\n").stdout))
        seen[cluster.system] = answers
    compare(seen)
    troika = seen["troika"]
    assert troika[0][1] == (1, ["Error: etcdserver: request is too large"])
    assert troika[2][1] == (1, ["Error: etcdserver: too many operations in txn request"])
    assert troika[3] == ("unchanged", True)


# -- auth ---------------------------------------------------------------------------------------


def grpc_put(channel: Any, token: str, key: bytes) -> tuple[str, str]:
    """A put with ``token``: ("OK", "") or the status code's name and the message."""
    call = channel.unary_unary(
        "/etcdserverpb.KV/Put",
        request_serializer=rpc_pb2.PutRequest.SerializeToString,
        response_deserializer=rpc_pb2.PutResponse.FromString,
    )
    try:
        call(
            rpc_pb2.PutRequest(key=key, value=b"x"),
            timeout=GRPC_TIMEOUT_S,
            metadata=[("token", token)],
        )
    except grpc.RpcError as error:
        return error.code().name, error.details()
    return "OK", ""


def test_wrong_passwords_unknown_users_and_expired_tokens(clusters: list[UnitCluster]) -> None:
    seen: dict[str, list[Any]] = {}
    for cluster in clusters:
        answers: list[Any] = []
        assert ctl(cluster, "put", "/auth/k", "v0").returncode == 0
        for args in (("user", "add", ROOT), ("role", "add", "app"), ("user", "add", "app:apppw")):
            assert ctl(cluster, *args).returncode == 0
        assert (
            ctl(
                cluster, "role", "grant-permission", "app", "readwrite", "--prefix", "/auth/"
            ).returncode
            == 0
        )
        assert ctl(cluster, "user", "grant-role", "app", "app").returncode == 0
        assert ctl(cluster, "auth", "enable").returncode == 0
        channel = grpc_channel(cluster)
        try:
            before = state(cluster, "/auth/", user=ROOT)
            answers.append(
                ("wrong password", shown(ctl(cluster, "put", "/auth/k", "v1", user="app:wrong")))
            )
            answers.append(
                ("unknown user", shown(ctl(cluster, "put", "/auth/k", "v1", user="nobody:x")))
            )
            answers.append(("never issued", grpc_put(channel, "notatoken.1", b"/auth/k")))
            token = authenticate(channel, "app", "apppw")
            answers.append(("fresh token", grpc_put(channel, token, b"/auth/fresh")))
            after_fresh = state(cluster, "/auth/", user=ROOT)
            time.sleep(TOKEN_EXPIRY_WAIT_S)
            answers.append(("expired token", grpc_put(channel, token, b"/auth/k")))
            answers.append(("unchanged", state(cluster, "/auth/", user=ROOT) == after_fresh))
            answers.append(("only the fresh put", before[0] + 1 == after_fresh[0]))
        finally:
            channel.close()
            assert ctl(cluster, "auth", "disable", user=ROOT).returncode == 0
        seen[cluster.system] = answers
    compare(seen)
    troika = dict(seen["troika"])
    assert troika["wrong password"][1] == [
        "Error: etcdserver: authentication failed, invalid user ID or password"
    ]
    assert troika["expired token"] == ("UNAUTHENTICATED", "etcdserver: invalid auth token")
    assert troika["unchanged"] and troika["only the fresh put"]
