"""The one seam between a member and the world: open streams, serve streams.

Everything a member sends or receives (peer frames, client HTTP) goes over a
:class:`Network`. ``net.tcp.TcpNetwork`` uses real sockets; the simulator's
network gives in-memory streams it can delay, clog, partition and reset.
Member code never knows which one it has.

Addresses are ``"host:port"`` strings, as they appear in URLs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

StreamHandler = Callable[[trio.abc.Stream], Awaitable[None]]
"""Serves one accepted connection; the stream is closed when it returns."""


class NetworkError(Exception):
    """Base of the errors a Network raises."""


class ConnectionRefused(NetworkError):
    """Nobody serves the address, or the network refused to connect."""


class Network(Protocol):
    """Open and serve byte streams."""

    async def connect(self, address: str) -> trio.abc.Stream:
        """Open a stream to ``address``.

        Raises:
            ConnectionRefused: nothing listens there, or the path is cut.
        """
        ...

    async def serve(
        self,
        address: str,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections on ``address`` until cancelled, each in its own task.

        Reports the bound address (with the real port when ``address`` asked
        for port 0) through ``task_status.started`` once it is listening. A
        handler that raises is logged and its stream closed; the server goes on.
        """
        ...


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` into its parts.

    Raises:
        ValueError: not of that form, or the port is not a number in range.
    """
    host, separator, port_text = address.rpartition(":")
    if not separator or not host or not port_text.isdigit():
        raise ValueError(f"address {address!r} is not host:port")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return host.strip("[]"), port


def address_from_url(url: str) -> str:
    """``"http://127.0.0.1:2379"`` into ``"127.0.0.1:2379"``.

    Raises:
        ValueError: not an http URL with a host and a port.
    """
    scheme, separator, rest = url.partition("://")
    if separator != "://" or scheme not in ("http", "https"):
        raise ValueError(f"URL {url!r} is not http://host:port")
    address = rest.split("/", 1)[0]
    split_address(address)
    return address
