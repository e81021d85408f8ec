"""The values of the v2 key tree: errors, nodes, events and the request that goes through Raft.

These mirror etcd 3.4's ``v2error.Error``, ``v2store.NodeExtern``, ``v2store.Event`` and the v2
``etcdserverpb.Request``. Each value renders itself as the JSON object etcd writes
(rendered as etcd's JSON by ``net.v2json``: storage holds data, net holds wire formats).

Time is never read here: a node keeps its absolute expiration time and the remaining ``ttl`` is
computed from the ``now_ns`` the caller passes (integer nanoseconds since the Unix epoch).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Final

import cbor2

NS_PER_SECOND: Final = 1_000_000_000
UINT64_MAX: Final = 2**64 - 1
INT64_MAX: Final = 2**63 - 1


class ErrorCode(IntEnum):
    """etcd's v2 error codes (``v2error/error.go``)."""

    KEY_NOT_FOUND = 100
    TEST_FAILED = 101
    NOT_FILE = 102
    NO_MORE_PEER = 103
    NOT_DIR = 104
    NODE_EXIST = 105
    KEY_IS_PRESERVED = 106
    ROOT_READ_ONLY = 107
    DIR_NOT_EMPTY = 108
    EXISTING_PEER_ADDR = 109
    UNAUTHORIZED = 110

    VALUE_REQUIRED = 200
    PREV_VALUE_REQUIRED = 201
    TTL_NAN = 202
    INDEX_NAN = 203
    VALUE_OR_TTL_REQUIRED = 204
    TIMEOUT_NAN = 205
    NAME_REQUIRED = 206
    INDEX_OR_VALUE_REQUIRED = 207
    INDEX_VALUE_MUTEX = 208
    INVALID_FIELD = 209
    INVALID_FORM = 210
    REFRESH_VALUE = 211
    REFRESH_TTL_REQUIRED = 212

    RAFT_INTERNAL = 300
    LEADER_ELECT = 301

    WATCHER_CLEARED = 400
    EVENT_INDEX_CLEARED = 401
    STANDBY_INTERNAL = 402
    INVALID_ACTIVE_SIZE = 403
    INVALID_REMOVE_DELAY = 404

    CLIENT_INTERNAL = 500


ERROR_MESSAGES: Final[dict[int, str]] = {
    100: "Key not found",
    101: "Compare failed",
    102: "Not a file",
    103: "Reached the max number of peers in the cluster",
    104: "Not a directory",
    105: "Key already exists",
    106: "The prefix of given key is a keyword in etcd",
    107: "Root is read only",
    108: "Directory not empty",
    109: "Peer address has existed",
    110: "The request requires user authentication",
    200: "Value is Required in POST form",
    201: "PrevValue is Required in POST form",
    202: "The given TTL in POST form is not a number",
    203: "The given index in POST form is not a number",
    204: "Value or TTL is required in POST form",
    205: "The given timeout in POST form is not a number",
    206: "Name is required in POST form",
    207: "Index or value is required",
    208: "Index and value cannot both be specified",
    209: "Invalid field",
    210: "Invalid POST form",
    211: "Value provided on refresh",
    212: "A TTL must be provided on refresh",
    300: "Raft Internal Error",
    301: "During Leader Election",
    400: "watcher is cleared due to etcd recovery",
    401: "The event in requested index is outdated and cleared",
    402: "Standby Internal Error",
    403: "Invalid active size",
    404: "Standby remove delay",
    500: "Client Internal Error",
}


class V2Error(Exception):
    """An etcd v2 error: ``{"errorCode", "message", "cause"?, "index"}``.

    Args:
        code: the etcd error code (see ``ErrorCode``); the message comes from etcd's table
            (an unknown code has an empty message, as in etcd).
        cause: what the error is about (a key, ``"[two != bar]"``, ...); omitted when empty.
        index: the store index when the error happened; 0 for request-parsing errors.
    """

    def __init__(self, code: int, cause: str = "", index: int = 0) -> None:
        self.code = int(code)
        self.message = ERROR_MESSAGES.get(self.code, "")
        self.cause = cause
        self.index = index
        super().__init__(f"{self.code}: {self.message} ({cause}) [{index}]")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, V2Error):
            return NotImplemented
        return (self.code, self.cause, self.index) == (other.code, other.cause, other.index)

    def __hash__(self) -> int:
        return hash((self.code, self.cause, self.index))

    def __repr__(self) -> str:
        return f"V2Error({self.code}, {self.cause!r}, index={self.index})"


def ttl_seconds(expiration_ns: int, now_ns: int) -> int:
    """The remaining TTL as etcd computes it: whole seconds, rounded up while positive.

    Go divides a Duration by a Second truncating toward zero and adds one only for a positive
    remainder, so a key past its expiration shows 0 (then omitted) or a negative number.
    """
    remaining_ns = expiration_ns - now_ns
    if remaining_ns > 0:
        return -(-remaining_ns // NS_PER_SECOND)  # ceiling
    return -(-remaining_ns // NS_PER_SECOND)  # truncation toward zero: -1.5 s -> -1


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as a client sees it (etcd's ``NodeExtern``).

    Attributes:
        key: the node's path ("/" for the root, rendered without a key).
        value: the value of a key; None for a directory.
        dir: True for a directory.
        expiration_ns: absolute expiration time; None when the node is permanent.
        modified_index: the index of the last change (0 for the root, then omitted).
        created_index: the index that created the node (0 for the root, then omitted).
        nodes: the listed children of a directory; None when not listed.
    """

    key: str
    value: str | None
    dir: bool
    expiration_ns: int | None
    modified_index: int
    created_index: int
    nodes: tuple[NodeView, ...] | None = None

    def ttl(self, now_ns: int) -> int:
        """Remaining seconds at ``now_ns`` (0 for a permanent node)."""
        if self.expiration_ns is None:
            return 0
        return ttl_seconds(self.expiration_ns, now_ns)


class Action(StrEnum):
    """The ``action`` of a v2 event."""

    GET = "get"
    SET = "set"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    COMPARE_AND_SWAP = "compareAndSwap"
    COMPARE_AND_DELETE = "compareAndDelete"
    EXPIRE = "expire"


@dataclass(frozen=True, slots=True)
class Event:
    """The result of a v2 operation, also what watchers receive.

    Attributes:
        action: what happened.
        node: the node after the operation (for a delete or an expiry: without a value, with
            ``modified_index`` = the index of the delete).
        prev_node: the node before the operation, when there was one.
        etcd_index: the store index after the operation (``X-Etcd-Index``); for an event
            handed out from the watch history, the store index when the watch started.
        time_ns: the time the operation ran at (the Raft entry's time for a write), the
            default time for rendering ``ttl``, which etcd computes when the event happens.
        refresh: a TTL refresh: kept in the watch history but never delivered to watchers.
    """

    action: Action
    node: NodeView
    prev_node: NodeView | None
    etcd_index: int
    time_ns: int
    refresh: bool = False

    @property
    def index(self) -> int:
        """The index of the event (the node's modified index), what ``waitIndex`` compares."""
        return self.node.modified_index

    def created(self) -> bool:
        """True when the event created the node: the reply is 201 Created, not 200 OK."""
        if self.action is Action.CREATE:
            return True
        return self.action is Action.SET and self.prev_node is None


METHODS: Final = frozenset({"PUT", "POST", "DELETE", "QGET", "GET", "SYNC"})
V2_REQUEST_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class V2Request:
    """A v2 command, as proposed through Raft (etcd's v2 ``Request``).

    Attributes:
        method: "PUT", "POST", "DELETE", "QGET", "GET" or "SYNC".
        path: the key (cleaned by the store).
        value: the new value ("" when not given).
        dir: create (PUT/POST) or delete (DELETE) a directory.
        prev_value: compare the current value ("" = not given).
        prev_index: compare the current modified index (0 = not given).
        prev_exist: None = not given; False = create only; True = update only.
        expiration_ns: absolute expiration (proposer's time + ttl); 0 = permanent.
        refresh: reset the TTL, keep the value, do not notify watchers.
        recursive: GET the subtree / DELETE a non-empty directory.
        sorted: GET with children sorted by key.
        time_ns: the proposer's clock; the time the operation runs at on every member (SYNC
            deletes what expired at or before it).

    Raises:
        ValueError: a field has the wrong type or is out of range.
    """

    method: str
    path: str
    value: str = ""
    dir: bool = False
    prev_value: str = ""
    prev_index: int = 0
    prev_exist: bool | None = None
    expiration_ns: int = 0
    refresh: bool = False
    recursive: bool = False
    sorted: bool = False
    time_ns: int = 0

    def __post_init__(self) -> None:
        _check(self.method in METHODS, "method", self.method)
        for name in ("path", "value", "prev_value"):
            _check(_is_utf8_text(getattr(self, name)), name, getattr(self, name))
        for name in ("dir", "refresh", "recursive", "sorted"):
            _check(type(getattr(self, name)) is bool, name, getattr(self, name))
        _check(self.prev_exist is None or type(self.prev_exist) is bool, "prev_exist", None)
        _check(_is_uint(self.prev_index, UINT64_MAX), "prev_index", self.prev_index)
        _check(_is_uint(self.expiration_ns, INT64_MAX), "expiration_ns", self.expiration_ns)
        _check(_is_uint(self.time_ns, INT64_MAX), "time_ns", self.time_ns)

    def encode(self) -> bytes:
        """The request as a deterministic CBOR array (format version first)."""
        return cbor2.dumps(
            [
                V2_REQUEST_FORMAT,
                self.method,
                self.path,
                self.value,
                self.dir,
                self.prev_value,
                self.prev_index,
                self.prev_exist,
                self.expiration_ns,
                self.refresh,
                self.recursive,
                self.sorted,
                self.time_ns,
            ],
            canonical=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> V2Request:
        """Decode ``encode``'s bytes, which may come from a peer.

        Raises:
            ValueError: the bytes are not a well-formed request of this format.
        """
        fields = _loads(data)
        if type(fields) is not list or len(fields) != 13:
            raise ValueError("v2 request: expected a CBOR array of 13 fields")
        if type(fields[0]) is not int or fields[0] != V2_REQUEST_FORMAT:
            raise ValueError(f"v2 request: unknown format {fields[0]!r}")
        return cls(
            method=fields[1],
            path=fields[2],
            value=fields[3],
            dir=fields[4],
            prev_value=fields[5],
            prev_index=fields[6],
            prev_exist=fields[7],
            expiration_ns=fields[8],
            refresh=fields[9],
            recursive=fields[10],
            sorted=fields[11],
            time_ns=fields[12],
        )


def _is_utf8_text(value: object) -> bool:
    """A str that encodes as UTF-8 (no lone surrogates), as keys and values are stored."""
    if type(value) is not str:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _is_uint(value: object, maximum: int) -> bool:
    return type(value) is int and 0 <= value <= maximum


def _check(ok: bool, name: str, value: object) -> None:
    if not ok:
        raise ValueError(f"v2 request: invalid {name}: {value!r}")


def _loads(data: bytes) -> Any:
    """``cbor2.loads`` with every decoding failure turned into ValueError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError("expected bytes")
    try:
        return cbor2.loads(bytes(data), allow_duplicate_keys=False)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as error:
        raise ValueError(f"malformed CBOR: {error}") from error
