"""troika.systemd_notify: READY=1 to $NOTIFY_SOCKET once ready, nothing without it."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from troika.systemd_notify import READY, notify, notify_when_ready, socket_address


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    receiver.bind(path)
    receiver.settimeout(5)
    try:
        yield receiver, path
    finally:
        receiver.close()


async def test_ready_is_sent_once_the_member_is_ready(
    listener: tuple[socket.socket, str],
) -> None:
    receiver, path = listener
    ready = trio.Event()
    receiver.setblocking(False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(notify_when_ready, ready, {"NOTIFY_SOCKET": path})
        await trio.sleep(0.01)
        with pytest.raises(BlockingIOError):
            receiver.recv(64)  # not before it is ready
        ready.set()
    assert receiver.recv(64) == READY


async def test_nothing_is_sent_or_awaited_without_the_variable() -> None:
    with trio.fail_after(1):
        await notify_when_ready(trio.Event(), {})  # never set: returns at once


async def test_a_socket_nobody_listens_on_is_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="troika.systemd_notify")  # whatever the root's
    ready = trio.Event()
    ready.set()
    await notify_when_ready(ready, {"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert "could not notify systemd" in caplog.text


def test_the_abstract_namespace() -> None:
    assert socket_address("@troika/notify") == "\0troika/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    name = f"troika-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(5)
        notify(READY, "@" + name)
        assert receiver.recv(64) == READY
