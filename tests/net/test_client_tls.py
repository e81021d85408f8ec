"""The client's TLS rules (net.client_tls): which endpoints speak TLS, and the contexts; and
its token: asked for once, renewed once when the server refuses it."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trustme
from google.protobuf.message import Message

from net.client_tls import (
    ALPN_H2,
    ClientTls,
    ClientTlsError,
    endpoint_with_scheme,
)
from net.etcdpb import rpc_pb2
from net.tcp import TcpNetwork
from net.v3.client import AUTHENTICATE_PATH, RANGE_PATH, Credentials, V3Client
from net.v3.errors import RpcError, StatusCode


def test_bare_endpoints_are_clear_unless_a_file_or_secure_transport_is_asked_for() -> None:
    assert endpoint_with_scheme("127.0.0.1:2379", ClientTls()) == "http://127.0.0.1:2379"
    with_ca = ClientTls(ca_file="ca.pem")
    assert endpoint_with_scheme("127.0.0.1:2379", with_ca) == "https://127.0.0.1:2379"
    secure = ClientTls(insecure_transport=False)
    assert endpoint_with_scheme("h:1", secure) == "https://h:1"


def test_a_tls_configuration_covers_http_endpoints_too() -> None:
    """etcdctl 3.4 dials ``http://`` endpoints with TLS when TLS flags are given."""
    with_ca = ClientTls(ca_file="ca.pem")
    assert endpoint_with_scheme("http://h:1/", with_ca) == "https://h:1"
    assert endpoint_with_scheme("http://h:1/", ClientTls()) == "http://h:1"
    assert endpoint_with_scheme("https://h:1", ClientTls()) == "https://h:1"
    with pytest.raises(ValueError, match="not host:port"):
        endpoint_with_scheme("unix://x", ClientTls())


def test_contexts_verify_unless_told_not_to(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(ca.cert_pem.bytes())
    context = ClientTls(ca_file=str(ca_path)).context(ALPN_H2)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    skipping = ClientTls(ca_file=str(ca_path), insecure_skip_verify=True).context(ALPN_H2)
    assert skipping.verify_mode is ssl.CERT_NONE
    # alone, etcdctl 3.4 has no TLS configuration to apply it to: https:// still verifies
    alone = ClientTls(insecure_skip_verify=True).context(ALPN_H2)
    assert alone.verify_mode is ssl.CERT_REQUIRED


def test_a_missing_file_is_refused_when_the_client_is_made(tmp_path: Path) -> None:
    missing = ClientTls(ca_file=str(tmp_path / "nothing.pem"))
    with pytest.raises(ClientTlsError, match="cannot load the TLS files"):
        V3Client(TcpNetwork(), ["127.0.0.1:1"], tls=missing)


class _Scripted(V3Client):
    """A V3Client whose sends answer from a script: what it sent, with which token."""

    def __init__(self, answers: list[Message | RpcError]) -> None:
        super().__init__(TcpNetwork(), ["127.0.0.1:1"], credentials=Credentials("u", "p"))
        self.answers = answers
        self.sent: list[tuple[str, str | None]] = []
        self.tokens = iter(["t1", "t2", "t3"])

    async def _send(  # type: ignore[override]
        self, path: str, request: Message, response_type: type[Message], *, idempotent: bool
    ) -> Message:
        self.sent.append((path, self._token))
        if path == AUTHENTICATE_PATH:
            token: Message = rpc_pb2.AuthenticateResponse(token=next(self.tokens))
            return token
        answer = self.answers.pop(0)
        if isinstance(answer, RpcError):
            raise answer
        return answer


INVALID = RpcError(StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")


def test_a_refused_token_is_renewed_once_and_the_call_sent_again() -> None:
    client = _Scripted([INVALID, rpc_pb2.RangeResponse(count=1)])
    response = trio.run(client.range, rpc_pb2.RangeRequest(key=b"k"))
    assert response.count == 1
    assert client.sent == [
        (AUTHENTICATE_PATH, None),
        (RANGE_PATH, "t1"),
        (AUTHENTICATE_PATH, None),
        (RANGE_PATH, "t2"),
    ]
    twice = _Scripted([INVALID, INVALID])
    with pytest.raises(RpcError, match="invalid auth token"):
        trio.run(twice.range, rpc_pb2.RangeRequest(key=b"k"))
    assert [path for path, _ in twice.sent].count(AUTHENTICATE_PATH) == 2


def test_other_errors_and_auth_off_are_not_retried() -> None:
    denied = RpcError(StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")
    client = _Scripted([denied])
    with pytest.raises(RpcError, match="permission denied"):
        trio.run(client.range, rpc_pb2.RangeRequest(key=b"k"))
    assert [path for path, _ in client.sent] == [AUTHENTICATE_PATH, RANGE_PATH]
