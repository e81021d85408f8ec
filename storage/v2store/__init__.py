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
from storage.v2store.store import KV_PREFIX, PATH_DEPTH_MAX, StoreStats, V2Store, clean_path
from storage.v2store.watch import HISTORY_EVENTS_MAX, WATCHER_BUFFER_EVENTS, Watcher, WatcherHub

__all__ = [
    "ERROR_MESSAGES",
    "HISTORY_EVENTS_MAX",
    "KV_PREFIX",
    "PATH_DEPTH_MAX",
    "WATCHER_BUFFER_EVENTS",
    "Action",
    "ErrorCode",
    "Event",
    "NodeView",
    "StoreStats",
    "V2Error",
    "V2Request",
    "V2Store",
    "Watcher",
    "WatcherHub",
    "clean_path",
]
