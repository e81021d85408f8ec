"""The v2 store's values as etcd writes them on the wire: JSON objects, HTTP statuses, times.

The store (``storage.v2store``) returns plain values and typed errors; this is
where they become etcd 3.4's bytes. Each function returns a ``dict`` whose
insertion order is etcd's field order, so ``net.gocompat.encode_json`` gives
etcd's exact output (the HTTP layer adds the trailing newline).
"""

from __future__ import annotations

import datetime
from typing import Any, Final

from storage.v2store.model import NS_PER_SECOND, Event, NodeView, V2Error, ttl_seconds

_ERROR_STATUS: Final[dict[int, int]] = {
    100: 404,
    101: 412,
    105: 412,
    102: 403,
    108: 403,
    110: 401,
    300: 500,
    301: 500,
}


def error_status(error: V2Error) -> int:
    """The HTTP status etcd answers an error with (``errorStatus``; everything else is 400)."""
    return _ERROR_STATUS.get(error.code, 400)


def error_json(error: V2Error) -> dict[str, Any]:
    """``{"errorCode", "message", "cause"?, "index"}``, in etcd's field order."""
    out: dict[str, Any] = {"errorCode": error.code, "message": error.message}
    if error.cause:
        out["cause"] = error.cause
    out["index"] = error.index
    return out


def format_rfc3339_nano(time_ns: int) -> str:
    """Format a Unix time in nanoseconds as Go's ``time.RFC3339Nano`` in UTC.

    The fraction drops its trailing zeros, and disappears when it is zero:
    ``2026-11-20T22:55:16.45954Z``, ``2026-11-20T22:55:16Z``.
    """
    seconds, fraction_ns = divmod(time_ns, NS_PER_SECOND)
    stamp = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if fraction_ns:
        text += "." + f"{fraction_ns:09d}".rstrip("0")
    return text + "Z"


def node_json(node: NodeView, now_ns: int) -> dict[str, Any]:
    """A node as etcd renders it at ``now_ns``, with etcd's ``omitempty`` rules."""
    out: dict[str, Any] = {}
    if node.key and node.key != "/":
        out["key"] = node.key
    if node.value is not None:
        out["value"] = node.value
    if node.dir:
        out["dir"] = True
    if node.expiration_ns is not None:
        out["expiration"] = format_rfc3339_nano(node.expiration_ns)
        ttl = ttl_seconds(node.expiration_ns, now_ns)
        if ttl:
            out["ttl"] = ttl
    if node.nodes:
        out["nodes"] = [node_json(child, now_ns) for child in node.nodes]
    if node.modified_index:
        out["modifiedIndex"] = node.modified_index
    if node.created_index:
        out["createdIndex"] = node.created_index
    return out


def event_json(event: Event, now_ns: int | None = None) -> dict[str, Any]:
    """An event as etcd renders it; ``ttl`` is computed at ``now_ns`` (default: the event's
    own time, which is what etcd shows)."""
    at_ns = event.time_ns if now_ns is None else now_ns
    out: dict[str, Any] = {"action": event.action.value, "node": node_json(event.node, at_ns)}
    if event.prev_node is not None:
        out["prevNode"] = node_json(event.prev_node, at_ns)
    return out
