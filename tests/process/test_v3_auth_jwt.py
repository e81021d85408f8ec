"""JWT tokens (``--auth-token jwt,...``) with real processes, etcd 3.4.23 and troika compared:
a token issued by one member works on every member and after a member is killed and
restarted (it is signed, not remembered), is refused with "revision of auth store is old" once
the auth store has changed since it was issued, and a forged one is "invalid auth token".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.clusters import EtcdCluster, ProcessCluster, TroikaCluster, etcd_available
from net.etcdpb import rpc_pb2
from tests.process.test_v3_auth_differential import ROOT, Grpc, Observation, etcdctl

pytestmark = pytest.mark.process


def _key_files(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / "jwt.key", directory / "jwt.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _range(cluster: ProcessCluster, index: int, key: bytes, token: str) -> Observation:
    rpc = Grpc(cluster, index)
    try:
        response, seen = rpc.call(
            "KV/Range", rpc_pb2.RangeRequest(key=key), rpc_pb2.RangeResponse, token
        )
    finally:
        rpc.close()
    if isinstance(response, rpc_pb2.RangeResponse):
        return (index, "OK", [(kv.key, kv.value) for kv in response.kvs])
    return (index, *seen[1:])


def _scenario(cluster: ProcessCluster) -> list[Observation]:
    seen = [
        etcdctl(cluster, "user", "add", ROOT),
        etcdctl(cluster, "auth", "enable"),
        etcdctl(cluster, "put", "j/a", "1", user=ROOT),
        etcdctl(cluster, "role", "add", "j-reader", user=ROOT),
        etcdctl(
            cluster, "role", "grant-permission", "j-reader", "read", "--prefix", "j/", user=ROOT
        ),
        etcdctl(cluster, "user", "add", "erin:epw", user=ROOT),
        etcdctl(cluster, "user", "grant-role", "erin", "j-reader", user=ROOT),
    ]
    rpc = Grpc(cluster)
    try:
        token = rpc.token("erin", "epw")
    finally:
        rpc.close()
    seen += [_range(cluster, index, b"j/a", token) for index in range(3)]
    cluster.kill(1)
    cluster.restart(1)
    seen.append(_range(cluster, 1, b"j/a", token))  # signed, so it outlives the member
    seen.append(_range(cluster, 2, b"j/a", token[:-6] + "AAAAAA"))  # a forged signature
    seen.append(etcdctl(cluster, "role", "grant-permission", "j-reader", "read", "k", user=ROOT))
    seen.append(_range(cluster, 2, b"j/a", token))  # issued before that change
    rpc = Grpc(cluster, 2)
    try:
        fresh = rpc.token("erin", "epw")
    finally:
        rpc.close()
    seen += [_range(cluster, index, b"j/a", fresh) for index in range(3)]
    seen.append(_range(cluster, 0, b"z", fresh))
    return seen


def _run(make: Callable[[], ProcessCluster]) -> list[Observation]:
    with make() as cluster:
        return _scenario(cluster)


def test_jwt_tokens_work_on_every_member_and_expire_with_the_auth_revision(
    tmp_path: Path,
) -> None:
    if not etcd_available():
        pytest.skip("etcd is not installed")
    private, public = _key_files(tmp_path)
    flags = (f"--auth-token=jwt,pub-key={public},priv-key={private},sign-method=ES256,ttl=10m",)
    expected = _run(lambda: EtcdCluster(3, tmp_path / "etcd", extra_flags=flags))
    got = _run(lambda: TroikaCluster(3, tmp_path / "troika", extra_flags=flags))
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, f"step {index}:\n etcd:   {want}\n troika: {have}"
