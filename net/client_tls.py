"""TLS for troika's clients: etcdctl's ``--cacert``, ``--cert``, ``--key``,
``--insecure-skip-tls-verify`` and ``--insecure-transport``.

Which endpoints speak TLS is what etcdctl 3.4 does in practice (measured against etcd
3.4.23): when any TLS file is given or ``--insecure-transport=false``, every endpoint does,
``http://`` ones included (clientv3's balancer dials every endpoint with the client's
credentials); otherwise only ``https://`` endpoints do, verified against the system's CAs,
and ``--insecure-skip-tls-verify`` alone changes nothing (etcdctl applies it only to a TLS
configuration made from the other flags).

A connection is dialled through the ordinary :class:`~net.network.Network`, then wrapped in a
``trio.SSLStream``: the gateway's HTTP/1.1 client and the gRPC channel both use
:class:`TlsDialingNetwork`, each with its own ALPN (``http/1.1`` for the gateway, ``h2`` for
gRPC, which etcd's listener tells apart by ALPN on the same port).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import trio

from net.network import ConnectionRefused, Network, StreamHandler, split_address

HANDSHAKE_TIMEOUT_S: Final = 10.0
"""A server that has not finished the TLS handshake by then is given up on."""
ALPN_HTTP1: Final = "http/1.1"
ALPN_H2: Final = "h2"


class ClientTlsError(Exception):
    """A TLS file cannot be used (missing, unreadable, a key that does not match)."""


@dataclass(frozen=True, slots=True)
class ClientTls:
    """etcdctl's TLS flags."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False
    insecure_transport: bool = True
    """etcdctl's default: a bare ``host:port`` is dialled in the clear unless a file is given."""

    def bare_endpoints_secure(self) -> bool:
        """Whether every endpoint is dialled with TLS (a TLS configuration exists)."""
        given = self.ca_file or self.cert_file or self.key_file
        return bool(given) or not self.insecure_transport

    def context(self, alpn: str) -> ssl.SSLContext:
        """A client context offering ``alpn`` only.

        Raises:
            ClientTlsError: a file cannot be loaded.
        """
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            if self.ca_file:
                context.load_verify_locations(cafile=self.ca_file)
            if self.cert_file or self.key_file:
                context.load_cert_chain(self.cert_file, self.key_file or None)
        except (OSError, ssl.SSLError) as error:
            raise ClientTlsError(f"cannot load the TLS files: {error}") from error
        if self.insecure_skip_verify and self.bare_endpoints_secure():
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols([alpn])
        return context


def endpoint_with_scheme(endpoint: str, tls: ClientTls) -> str:
    """An endpoint as etcdctl takes it (``host:port`` or a URL) as ``http(s)://host:port``.

    Raises:
        ValueError: neither form, or a scheme other than http(s).
    """
    text = endpoint.strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    scheme, address = text.split("://", 1)
    if scheme not in ("http", "https"):
        raise ValueError(f"endpoint {endpoint!r} is not host:port or http://host:port")
    return ("https://" if tls.bare_endpoints_secure() else scheme + "://") + address


async def tls_connect(
    stream: trio.abc.Stream, context: ssl.SSLContext, address: str
) -> trio.SSLStream[trio.abc.Stream]:
    """Wrap ``stream`` (to ``address``) in TLS and finish the handshake.

    Raises:
        ConnectionRefused: the handshake failed (a certificate refused by either side) or
            took longer than ``HANDSHAKE_TIMEOUT_S``.
    """
    host, _ = split_address(address)
    tls = trio.SSLStream(stream, context, server_hostname=host)
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT_S):
            await tls.do_handshake()
    except (trio.BrokenResourceError, trio.TooSlowError) as error:
        await trio.aclose_forcefully(tls)
        cause = error.__cause__ or error
        raise ConnectionRefused(f"TLS handshake with {address} failed: {cause}") from error
    return tls


class DialingNetwork:
    """The base of a client's Network wrappers: they dial, and never serve."""

    async def connect(self, address: str) -> trio.abc.Stream:
        raise NotImplementedError

    async def serve(
        self,
        address: str,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        raise NotImplementedError("a client network does not serve")


class TlsDialingNetwork(DialingNetwork):
    """A Network that dials the addresses in ``contexts`` with TLS, the others with
    ``default`` (None: in the clear). A default covers addresses learnt later (a member
    list's client URLs) when the TLS flags make every endpoint secure."""

    def __init__(
        self,
        inner: Network,
        contexts: Mapping[str, ssl.SSLContext],
        default: ssl.SSLContext | None = None,
    ) -> None:
        self._inner = inner
        self._contexts = dict(contexts)
        self._default = default

    async def connect(self, address: str) -> trio.abc.Stream:
        stream = await self._inner.connect(address)
        context = self._contexts.get(address, self._default)
        if context is None:
            return stream
        return await tls_connect(stream, context, address)
