"""The real Network: TCP sockets through Trio.

``connect`` opens a ``trio.SocketStream`` (a half-closeable stream) with ``TCP_NODELAY`` set;
every error of the dial becomes ``ConnectionRefused``. ``serve`` listens, reports the bound
``"host:port"`` (the real port when asked for port 0) and runs each connection's handler in
its own task; a handler that raises is logged and its stream closed, and the server goes on.

When ``serve`` is asked for port 0 on a host that resolves to several addresses (``localhost``
on a dual-stack machine, or the empty host), it listens on the first one only, so that one
port can be reported.
"""

from __future__ import annotations

import logging
import os
import socket

import trio

from net.network import ConnectionRefused, StreamHandler, split_address

logger = logging.getLogger(__name__)


class TcpNetwork:
    """The Network of real clusters and benchmarks."""

    async def connect(self, address: str) -> trio.abc.Stream:
        """Open a TCP stream to ``address`` (``"host:port"``).

        Raises:
            ConnectionRefused: nothing listens there, the host is unknown or unreachable.
            ValueError: ``address`` is not ``"host:port"``.
        """
        host, port = split_address(address)
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as error:
            raise ConnectionRefused(f"cannot connect to {address}: {error}") from error
        _set_no_delay(stream)
        return stream

    async def serve(
        self,
        address: str,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections on ``address`` until cancelled, each in its own task.

        Raises:
            OSError: the address cannot be listened on (in use, not local).
            ValueError: ``address`` is not ``"host:port"``.
        """
        host, port = split_address(address)
        listeners = await trio.open_tcp_listeners(port, host=host)
        if port == 0:
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        bound_port = listeners[0].socket.getsockname()[1]
        bound = f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"

        async def serve_one(stream: trio.SocketStream) -> None:
            await _serve_one(bound, handler, stream)

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, serve_one, listeners)
            logger.debug("serving %s", bound)
            task_status.started(bound)


async def _serve_one(bound: str, handler: StreamHandler, stream: trio.SocketStream) -> None:
    """Run one handler; its failure is logged, never passed on to the server."""
    _set_no_delay(stream)
    try:
        await handler(stream)
    except Exception:
        # The top of a connection's task: whatever the handler failed with (trio.Cancelled is
        # a BaseException and passes), the server must go on serving the others.
        logger.exception("%s: a connection handler failed", bound)
    finally:
        await trio.aclose_forcefully(stream)


def _set_no_delay(stream: trio.SocketStream) -> None:
    """Frames are written whole; do not let Nagle hold the last segment of one back."""
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)


class DirectSocket:
    """A plain TCP stream's socket, read and written without Trio's wrapper around each call.

    Trio's ``SocketStream`` tries every ``send`` at once and then yields to the scheduler
    even when the kernel took it all, and tries every ``recv`` before waiting, which fails
    whenever the client has not sent its next request yet. For a request-answer loop that
    is a run-loop pass per answer and a wasted system call per request. This writes what the
    kernel takes without waiting (the caller waits through the stream for the rest) and
    waits for readability before reading. It reads the socket's file descriptor with
    ``os.read``/``os.write`` (no private attribute of Trio), so it must be used only while
    the stream is open, by the stream's one owner.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._fd = stream.socket.fileno()

    def send_now(self, data: bytes) -> int:
        """How many leading bytes of ``data`` the kernel took without waiting.

        Raises:
            trio.BrokenResourceError: the peer reset or closed the connection.
        """
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as error:
            raise trio.BrokenResourceError(str(error)) from error

    async def receive_some(self, max_bytes: int) -> bytes:
        """Wait until the socket is readable, then read; b"" at the end of the stream (or on
        a reset, as a client that left)."""
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            try:
                return os.read(self._fd, max_bytes)
            except BlockingIOError:
                continue
            except OSError:
                return b""


def direct_socket(stream: trio.abc.Stream) -> DirectSocket | None:
    """The :class:`DirectSocket` of a plain TCP stream; None for any other (TLS, simulated)."""
    return DirectSocket(stream) if isinstance(stream, trio.SocketStream) else None
