"""A Network of in-memory stream pairs, for tests that need no sockets.

Each ``connect`` makes a ``trio.testing.memory_stream_pair`` and runs the
server's handler on one end in the server's nursery, closing the stream
afterwards. Unlike a production Network, a handler that raises is logged and
re-raised, so that the test which caused it fails loudly.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import trio
import trio.testing

from net.network import ConnectionRefused, StreamHandler

logger = logging.getLogger(__name__)


@dataclass
class _Listener:
    nursery: trio.Nursery
    handler: StreamHandler


class MemoryNetwork:
    """Addresses are any ``"host:port"`` strings; port 0 picks a fresh one."""

    def __init__(self) -> None:
        self._listeners: dict[str, _Listener] = {}
        self._ports = itertools.count(40000)
        self.connections_opened = 0

    async def connect(self, address: str) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        listener = self._listeners.get(address)
        if listener is None:
            raise ConnectionRefused(f"nothing listens on {address}")
        client, server = trio.testing.memory_stream_pair()
        self.connections_opened += 1
        listener.nursery.start_soon(self._run, listener.handler, server)
        return client

    async def serve(
        self,
        address: str,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        host, _, port = address.rpartition(":")
        if port == "0":
            address = f"{host}:{next(self._ports)}"
        if address in self._listeners:
            raise OSError(f"{address} is in use")
        async with trio.open_nursery() as nursery:
            self._listeners[address] = _Listener(nursery, handler)
            try:
                task_status.started(address)
                await trio.sleep_forever()
            finally:
                del self._listeners[address]

    @staticmethod
    async def _run(handler: StreamHandler, stream: trio.abc.Stream) -> None:
        try:
            await handler(stream)
        except Exception:
            logger.exception("handler failed")
            raise
        finally:
            await trio.aclose_forcefully(stream)
