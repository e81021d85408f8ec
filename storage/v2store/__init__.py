"""The v2 key tree (etcd's v2store): a pure, deterministic state machine behind ``/v2/keys``.

``model`` holds the values (errors, nodes, events, the Raft command), ``store`` the tree and
its operations, ``watch`` the watcher hub and its event history.
"""

from storage.v2store.model import (
    ERROR_MESSAGES,
    Action,
    ErrorCode,
    Event,
    NodeView,
    V2Error,
    V2Request,
)

__all__ = [
    "ERROR_MESSAGES",
    "Action",
    "ErrorCode",
    "Event",
    "NodeView",
    "V2Error",
    "V2Request",
]
