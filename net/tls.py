"""TLS for the client and peer listeners, and a Network that counts peer bytes.

etcd's TLS flags (``--cert-file``, ``--key-file``, ``--trusted-ca-file``,
``--client-cert-auth``, ``--auto-tls`` and their ``--peer-*`` twins) become
:class:`TlsFiles`, and from them ``ssl.SSLContext`` objects:

- a server context per side: its certificate and key; with ``client_cert_auth`` a client
  must present a certificate signed by the trusted CA (the handshake fails otherwise, as in
  etcd); ALPN offers ``http/1.1`` and ``h2``: gRPC clients offer only ``h2`` and get it (gRPC
  over TLS, as etcd serves it), other clients get HTTP/1.1 (troika's HTTP/2 is gRPC only);
- a client context for the connections a member opens to its peers: it presents the peer
  certificate and checks the peer's against the peer CA (with ``--peer-auto-tls`` and no CA,
  as etcd, it checks nothing: self-signed certificates prove no identity).

Whether a listener speaks TLS is decided by its URL's scheme (``https://``), as in etcd;
``--auto-tls`` makes a self-signed certificate (ECDSA P-256, a year, the listen hosts as its
names) under ``<data-dir>/fixtures/client`` or ``.../peer``, as etcd does.

:class:`ServingNetwork` wraps the real ``TcpNetwork``: it serves TLS on the addresses that
have a server context, dials peers with the peer client context, and counts the bytes that
cross peer connections for ``etcd_network_peer_*_bytes_total``. Member code sees a plain
:class:`~net.network.Network`.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio

from net.network import ConnectionRefused, Network, StreamHandler, split_address

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S: Final = 10.0
"""A client that has not finished its TLS handshake by then is dropped (a slowloris bound)."""
AUTO_TLS_VALID_DAYS: Final = 365
ALPN_SERVER: Final = ("http/1.1", "h2")
"""The server's preference: an HTTP/1.1 client that also offers h2 (curl) gets HTTP/1.1; a
gRPC client offers only h2."""


class TlsConfigError(Exception):
    """The TLS flags cannot be used (missing file, a key that does not match, no CA...)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """One side's TLS flags (client or peer)."""

    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    auto_tls: bool = False

    def empty(self) -> bool:
        """No certificate given (with or without auto-TLS)."""
        return not self.cert_file and not self.key_file


def make_self_signed(directory: Path, hosts: Iterable[str]) -> TlsFiles:
    """etcd's ``--auto-tls``: a self-signed certificate for ``hosts`` in ``directory``
    (``cert.pem``, ``key.pem``), made once and kept.

    Raises:
        TlsConfigError: the directory cannot be written.
    """
    # cryptography is imported only here: importing it costs a member about 10 MiB of
    # resident memory, and only --auto-tls needs it (issue 13's RSS target).
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return TlsFiles(str(cert_path), str(key_path), auto_tls=True)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _self_signed(key, sorted(set(hosts)))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    except OSError as error:
        message = f"cannot write the auto-TLS certificate in {directory}: {error}"
        raise TlsConfigError(message) from error
    logger.info("auto-TLS: a self-signed certificate in %s", directory)
    return TlsFiles(str(cert_path), str(key_path), auto_tls=True)


def _self_signed(key: ec.EllipticCurvePrivateKey, hosts: list[str]) -> x509.Certificate:
    from cryptography import x509  # noqa: PLC0415 (see make_self_signed)
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    # --auto-tls certificates are made by the composition root for real listeners only (never
    # on the simulated path), and their validity needs the real date.
    now = datetime.datetime.now(datetime.UTC)  # nondeterminism-ok: auto-TLS's real date
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "troika")])
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=AUTO_TLS_VALID_DAYS))
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256())


def _load_chain(context: ssl.SSLContext, files: TlsFiles) -> None:
    try:
        context.load_cert_chain(files.cert_file, files.key_file)
    except (OSError, ssl.SSLError) as error:
        raise TlsConfigError(
            f"cannot load the certificate {files.cert_file!r} with key {files.key_file!r}: {error}"
        ) from error


def _load_ca(context: ssl.SSLContext, ca_file: str) -> None:
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as error:
        raise TlsConfigError(f"cannot load the trusted CA file {ca_file!r}: {error}") from error


def server_context(files: TlsFiles, flag_prefix: str = "") -> ssl.SSLContext:
    """The context a TLS listener serves with (``flag_prefix`` "peer-" names the peer flags
    in errors).

    Raises:
        TlsConfigError: no certificate, an unreadable file, or client-cert-auth without a CA.
    """
    if files.empty():
        raise TlsConfigError(
            f"an https:// URL needs --{flag_prefix}cert-file and --{flag_prefix}key-file "
            f"(or --{flag_prefix}auto-tls)"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, files)
    if files.client_cert_auth:
        if not files.trusted_ca_file:
            raise TlsConfigError(
                f"--{flag_prefix}client-cert-auth needs --{flag_prefix}trusted-ca-file"
            )
        _load_ca(context, files.trusted_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(list(ALPN_SERVER))
    return context


def peer_client_context(files: TlsFiles) -> ssl.SSLContext:
    """The context a member dials its peers with: its peer certificate, and the peer CA (no
    verification with auto-TLS and no CA, as etcd).

    Raises:
        TlsConfigError: an unreadable file.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not files.empty():
        _load_chain(context, files)
    if files.trusted_ca_file:
        _load_ca(context, files.trusted_ca_file)
    elif files.auto_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def verified_common_name(stream: trio.abc.Stream) -> str | None:
    """The CommonName of the client certificate a TLS server stream verified (None: no TLS,
    no certificate asked for, or none verified): with ``--client-cert-auth`` it names the
    user, as etcd's ``AuthInfoFromTLS``."""
    while isinstance(stream, _CountingStream):
        stream = stream.inner
    if not isinstance(stream, trio.SSLStream):
        return None
    try:
        certificate = stream.getpeercert()
    except (ValueError, AttributeError):  # no handshake yet
        return None
    for rdn in (certificate or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName" and isinstance(value, str):
                return value
    return None


class _CountingStream(trio.abc.Stream):
    """A stream that adds the bytes it carries to its network's tallies for one address."""

    def __init__(self, inner: trio.abc.Stream, tally: ByteTally, address: str) -> None:
        self.inner = inner
        self.tally = tally
        self.address = address

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)
        self.tally.add_sent(self.address, len(data))

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        self.tally.add_received(self.address, len(data))
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class _HalfCloseableCountingStream(_CountingStream, trio.abc.HalfCloseableStream):
    async def send_eof(self) -> None:
        assert isinstance(self.inner, trio.abc.HalfCloseableStream)
        await self.inner.send_eof()


def _counting(inner: trio.abc.Stream, tally: ByteTally, address: str) -> trio.abc.Stream:
    if isinstance(inner, trio.abc.HalfCloseableStream):
        return _HalfCloseableCountingStream(inner, tally, address)
    return _CountingStream(inner, tally, address)


PEERS_COUNTED_MAX: Final = 1024
"""Distinct addresses tallied; past it the rest go under "other" (a bound on label values)."""


class ByteTally:
    """Bytes sent to and received from peers, by address (bounded)."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self.received: dict[str, int] = {}

    def _key(self, table: dict[str, int], address: str) -> str:
        return address if address in table or len(table) < PEERS_COUNTED_MAX else "other"

    def add_sent(self, address: str, count: int) -> None:
        key = self._key(self.sent, address)
        self.sent[key] = self.sent.get(key, 0) + count

    def add_received(self, address: str, count: int) -> None:
        key = self._key(self.received, address)
        self.received[key] = self.received.get(key, 0) + count

    def snapshot(self) -> tuple[Mapping[str, int], Mapping[str, int]]:
        """(sent, received) by address, copied."""
        return dict(self.sent), dict(self.received)


class ServingNetwork:
    """A Network over another that adds TLS where configured and counts peer bytes.

    Args:
        inner: the real network.
        server_contexts: the listen addresses served with TLS, and how.
        peer_context: how peers are dialled (None: in the clear).
        peer_addresses: the listen addresses that are peer listeners (their inbound bytes are
            counted; the sender of an inbound connection is not known, so it is tallied under
            "unknown").
    """

    def __init__(
        self,
        inner: Network,
        *,
        server_contexts: Mapping[str, ssl.SSLContext] | None = None,
        peer_context: ssl.SSLContext | None = None,
        peer_addresses: Iterable[str] = (),
    ) -> None:
        self.inner = inner
        self.server_contexts = dict(server_contexts or {})
        self.peer_context = peer_context
        self.peer_addresses = frozenset(peer_addresses)
        self.tally = ByteTally()

    async def connect(self, address: str) -> trio.abc.Stream:
        """Dial a peer (TLS with the peer context when set); its bytes are counted."""
        stream = await self.inner.connect(address)
        if self.peer_context is not None:
            host, _ = split_address(address)
            tls = trio.SSLStream(stream, self.peer_context, server_hostname=host)
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                    await tls.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError) as error:
                await trio.aclose_forcefully(tls)
                raise ConnectionRefused(f"TLS handshake with {address} failed: {error}") from error
            stream = tls
        return _counting(stream, self.tally, address)

    async def serve(
        self,
        address: str,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``address``, in TLS if it has a server context."""
        context = self.server_contexts.get(address)
        counted = address in self.peer_addresses

        async def serve_one(stream: trio.abc.Stream) -> None:
            if context is not None:
                tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
                try:
                    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                        await tls.do_handshake()
                except (trio.BrokenResourceError, trio.TooSlowError) as error:
                    logger.info("%s: TLS handshake failed: %s", address, error.__cause__ or error)
                    await trio.aclose_forcefully(tls)
                    return
                stream = tls
            if counted:
                stream = _counting(stream, self.tally, "unknown")
            await handler(stream)

        await self.inner.serve(address, serve_one, task_status=task_status)
