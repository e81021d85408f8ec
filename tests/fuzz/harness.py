"""Running one fuzz example: a server's connection handler against scripted client bytes, in
virtual time (``MockClock`` with autojump), so every timeout of the server passes in an instant.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
import trio.testing

ConnectionHandler = Callable[[trio.abc.Stream], Awaitable[None]]


def run_virtual(function: Callable[[], Awaitable[Any]]) -> Any:
    """``trio.run`` with a virtual clock that jumps whenever every task waits."""
    return trio.run(function, clock=trio.testing.MockClock(autojump_threshold=0))


@dataclass
class Conversation:
    """What the server sent back, and when it ended (virtual seconds after the start; -1 if
    it was still running after the bound and was cancelled)."""

    received: bytes
    server_ended_s: float

    @property
    def still_running(self) -> bool:
        return self.server_ended_s < 0


async def converse(
    serve: ConnectionHandler,
    chunks: list[bytes],
    *,
    half_close: bool,
    pauses_s: list[float] | None = None,
    bound_s: float,
) -> Conversation:
    """Serve one in-memory connection with ``serve`` while a client sends ``chunks``.

    The client pauses ``pauses_s[i]`` (virtual) seconds before chunk ``i``, then half-closes
    if ``half_close`` (else it keeps its side open and leaves the ending to the server's
    timeouts), and reads until the server closes. An exception of the server propagates (the
    example fails); a server still running after ``bound_s`` is cancelled, and the caller
    decides whether that was allowed (``Conversation.still_running``).
    """
    client, server = trio.testing.memory_stream_pair()
    start = trio.current_time()
    ended_s = -1.0
    running = True
    received = bytearray()

    async def run_server() -> None:
        nonlocal ended_s, running
        try:
            await serve(server)
            running = False
        finally:
            ended_s = -1.0 if running else trio.current_time() - start
            await trio.aclose_forcefully(server)

    async def send() -> None:
        for index, chunk in enumerate(chunks):
            if pauses_s and index < len(pauses_s) and pauses_s[index] > 0:
                await trio.sleep(pauses_s[index])
            try:
                await client.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
        if half_close:
            try:
                await client.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    with trio.move_on_after(bound_s):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_server)
            nursery.start_soon(send)
            while True:
                try:
                    data = await client.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if not data:
                    break
                received += data
            # The server closed its side: it must be done (or finishing) now.
    await trio.aclose_forcefully(client)
    return Conversation(bytes(received), ended_s)


class LogRecords(logging.Handler):
    """Collects the records of a logger while in a ``with`` block."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> LogRecords:
        self._old_level = self._logger.level
        self._logger.setLevel(logging.DEBUG)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._old_level)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        return [record.getMessage() for record in self.records if record.levelno >= level]
