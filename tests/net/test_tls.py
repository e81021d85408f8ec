"""net.tls on loopback sockets: TLS listeners with and without client certificates, peer
dialling, ALPN, auto-TLS certificates, and the peer byte tallies."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trustme

from net.network import ConnectionRefused
from net.tcp import TcpNetwork
from net.tls import (
    ServingNetwork,
    TlsConfigError,
    TlsFiles,
    make_self_signed,
    peer_client_context,
    server_context,
)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, TlsFiles]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    member = ca.issue_cert("127.0.0.1")
    stranger = trustme.CA().issue_cert("127.0.0.1")
    paths: dict[str, str] = {}
    for name, blob in (
        ("ca", ca.cert_pem),
        ("server", server.cert_chain_pems[0]),
        ("server-key", server.private_key_pem),
        ("member", member.cert_chain_pems[0]),
        ("member-key", member.private_key_pem),
        ("stranger", stranger.cert_chain_pems[0]),
        ("stranger-key", stranger.private_key_pem),
    ):
        path = tmp_path / f"{name}.pem"
        blob.write_to_path(str(path))
        paths[name] = str(path)
    return {
        "server": TlsFiles(paths["server"], paths["server-key"], paths["ca"], True),
        "member": TlsFiles(paths["member"], paths["member-key"], paths["ca"]),
        "stranger": TlsFiles(paths["stranger"], paths["stranger-key"], paths["ca"]),
        "anonymous": TlsFiles(trusted_ca_file=paths["ca"]),
    }


async def echo(stream: trio.abc.Stream) -> None:
    data = await stream.receive_some()
    await stream.send_all(b"echo:" + data)


async def serve_tls(nursery: trio.Nursery, network: ServingNetwork) -> str:
    bound: str = await nursery.start(network.serve, "127.0.0.1:0", echo)
    return bound


async def test_peers_need_a_certificate_from_the_ca_and_bytes_are_counted(
    files: dict[str, TlsFiles],
) -> None:
    context = server_context(files["server"])
    async with trio.open_nursery() as nursery:
        # the listener's context is keyed by the configured address
        listener = ServingNetwork(
            TcpNetwork(),
            server_contexts={"127.0.0.1:0": context},
            peer_addresses=["127.0.0.1:0"],
        )
        address = await serve_tls(nursery, listener)
        dialler = ServingNetwork(TcpNetwork(), peer_context=peer_client_context(files["member"]))
        stream = await dialler.connect(address)
        await stream.send_all(b"hello")
        assert await stream.receive_some() == b"echo:hello"
        await stream.aclose()
        assert dialler.tally.snapshot()[0] == {address: 5}
        assert dialler.tally.snapshot()[1] == {address: 10}
        for refused in ("stranger", "anonymous"):
            other = ServingNetwork(TcpNetwork(), peer_context=peer_client_context(files[refused]))
            with pytest.raises((ConnectionRefused, trio.BrokenResourceError)):
                stream = await other.connect(address)
                await stream.send_all(b"x")
                await stream.receive_some()  # TLS 1.3: the refusal arrives after the handshake
        nursery.cancel_scope.cancel()
    assert listener.tally.snapshot()[1]["unknown"] >= 5


async def test_grpc_clients_get_h2_and_others_http11(files: dict[str, TlsFiles]) -> None:
    context = server_context(TlsFiles(files["server"].cert_file, files["server"].key_file))
    async with trio.open_nursery() as nursery:
        listener = ServingNetwork(TcpNetwork(), server_contexts={"127.0.0.1:0": context})
        address = await serve_tls(nursery, listener)
        host, port = address.rsplit(":", 1)
        for offered, chosen in ((["h2"], "h2"), (["h2", "http/1.1"], "http/1.1")):
            client = ssl.create_default_context(cafile=files["server"].trusted_ca_file)
            client.set_alpn_protocols(offered)
            stream = trio.SSLStream(
                await trio.open_tcp_stream(host, int(port)), client, server_hostname=host
            )
            await stream.do_handshake()
            assert stream.selected_alpn_protocol() == chosen
            await stream.aclose()
        nursery.cancel_scope.cancel()


def test_auto_tls_makes_a_certificate_once_and_it_loads(tmp_path: Path) -> None:
    made = make_self_signed(tmp_path / "fixtures" / "client", ["127.0.0.1", "localhost"])
    again = make_self_signed(tmp_path / "fixtures" / "client", ["127.0.0.1"])
    assert made == again
    assert Path(made.cert_file).read_bytes() == Path(again.cert_file).read_bytes()
    server_context(made)  # loads
    context = peer_client_context(made)
    assert context.verify_mode is ssl.CERT_NONE  # auto-TLS peers prove no identity (etcd)


def test_bad_tls_flags_are_refused_with_a_reason(
    tmp_path: Path, files: dict[str, TlsFiles]
) -> None:
    with pytest.raises(TlsConfigError, match="needs --cert-file"):
        server_context(TlsFiles())
    with pytest.raises(TlsConfigError, match="--client-cert-auth needs --trusted-ca-file"):
        server_context(TlsFiles(files["server"].cert_file, files["server"].key_file, "", True))
    with pytest.raises(TlsConfigError, match="cannot load the certificate"):
        server_context(TlsFiles(str(tmp_path / "missing.pem"), files["server"].key_file))
    with pytest.raises(TlsConfigError, match="cannot load the certificate"):
        # a key that does not belong to the certificate
        server_context(TlsFiles(files["server"].cert_file, files["member"].key_file))
