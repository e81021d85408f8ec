"""systemd's readiness notification (``Type=notify`` units), sent as etcd sends it.

etcd 3.4 tells systemd that it is ready (``sd_notify("READY=1")``) once it serves clients, and
an etcd unit file says ``Type=notify``: systemd then waits for that datagram, holds back the
units ordered after it, and kills the service when ``TimeoutStartSec`` passes without it. A
unit that starts troika instead of etcd needs the same message, so ``troika serve`` sends
``READY=1`` to ``$NOTIFY_SOCKET`` once the member has published itself and serves clients
(``Member.published``, the moment etcd notifies). Without the variable (not started by
systemd, or another ``Type``) nothing is sent. Only the composition root calls this: member
code never reads the environment.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Final

import trio

log = logging.getLogger(__name__)

READY: Final = b"READY=1"
NOTIFY_SOCKET_VARIABLE: Final = "NOTIFY_SOCKET"


def socket_address(path: str) -> str:
    """``$NOTIFY_SOCKET`` as a socket address: ``@name`` is Linux's abstract namespace."""
    return "\0" + path[1:] if path.startswith("@") else path


def notify(message: bytes, path: str) -> None:
    """Send one datagram to the notification socket at ``path``.

    Raises:
        OSError: nobody listens there.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.connect(socket_address(path))
        sender.sendall(message)


async def notify_when_ready(ready: trio.Event, environment: Mapping[str, str]) -> None:
    """Once ``ready`` is set, tell systemd (if it asked, through ``$NOTIFY_SOCKET``)."""
    path = environment.get(NOTIFY_SOCKET_VARIABLE)
    if not path:
        return
    await ready.wait()
    try:
        notify(READY, path)
    except OSError as error:
        log.warning("could not notify systemd at %s: %s", path, error)
        return
    log.info("notified systemd that it is ready to serve client requests")
