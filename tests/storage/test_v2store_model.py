"""The v2 values: the error table and status map (ETCD_API.md 1.6), node and event JSON
(1.2), and the V2Request codec, which must refuse anything malformed from a peer."""

from __future__ import annotations

import calendar
import json
import time

import cbor2
import pytest

from net.v2json import error_json, error_status, event_json, format_rfc3339_nano, node_json
from storage.v2store.model import (
    ERROR_MESSAGES,
    Action,
    ErrorCode,
    Event,
    NodeView,
    V2Error,
    V2Request,
    ttl_seconds,
)

SECOND = 1_000_000_000


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def utc_ns(text: str, fraction_ns: int = 0) -> int:
    """'2026-11-20T22:55:16' -> ns since the epoch."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")) * SECOND + fraction_ns


# -- errors (ETCD_API.md 1.6) ------------------------------------------------------------------

ETCD_TABLE = {
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


def test_error_messages_are_etcds_table() -> None:
    assert ERROR_MESSAGES == ETCD_TABLE
    assert {int(code) for code in ErrorCode} == set(ETCD_TABLE)
    for code, message in ETCD_TABLE.items():
        assert V2Error(code).message == message


@pytest.mark.parametrize(
    ("code", "status"),
    [
        *[(100, 404), (101, 412), (105, 412), (102, 403), (108, 403), (110, 401), (300, 500)],
        *[(301, 500), (103, 400), (104, 400), (107, 400), (202, 400), (212, 400), (401, 400)],
        *[(400, 400), (500, 400)],
    ],
)
def test_error_http_status(code: int, status: int) -> None:
    assert error_status(V2Error(code)) == status


def test_error_json_shapes_from_etcd() -> None:
    # [live] rows of 1.4 and 1.5
    assert (
        compact(error_json(V2Error(100, "/missing", 5)))
        == '{"errorCode":100,"message":"Key not found","cause":"/missing","index":5}'
    )
    assert (
        compact(error_json(V2Error(101, "[two != bar]", 9)))
        == '{"errorCode":101,"message":"Compare failed","cause":"[two != bar]","index":9}'
    )
    assert (
        compact(error_json(V2Error(202, 'invalid value for "ttl"')))
        == '{"errorCode":202,"message":"The given TTL in POST form is not a number",'
        '"cause":"invalid value for \\"ttl\\"","index":0}'
    )
    assert (
        compact(error_json(V2Error(212, "No TTL value set")))
        == '{"errorCode":212,"message":"A TTL must be provided on refresh",'
        '"cause":"No TTL value set","index":0}'
    )
    cleared = "the requested history has been cleared [128/5]"
    assert compact(error_json(V2Error(401, cleared, 1127))) == (
        '{"errorCode":401,"message":"The event in requested index is outdated and cleared",'
        '"cause":"the requested history has been cleared [128/5]","index":1127}'
    )
    # [live] a compare-and-delete of the root: no cause at all
    assert compact(error_json(V2Error(102, "", 19))) == (
        '{"errorCode":102,"message":"Not a file","index":19}'
    )


def test_error_text_is_etcdctls() -> None:
    error = V2Error(ErrorCode.NODE_EXIST, "/ctl/a", 1145)
    assert str(error) == "105: Key already exists (/ctl/a) [1145]"
    assert error == V2Error(105, "/ctl/a", 1145)
    assert error.code == 105 and type(error.code) is int


# -- nodes and events (ETCD_API.md 1.2) --------------------------------------------------------


def test_rfc3339_nano_trims_trailing_zeros() -> None:
    base = utc_ns("2026-11-20T22:55:16")
    assert format_rfc3339_nano(base + 459540957) == "2026-11-20T22:55:16.459540957Z"
    assert format_rfc3339_nano(base + 331805620) == "2026-11-20T22:55:16.33180562Z"
    assert format_rfc3339_nano(base) == "2026-11-20T22:55:16Z"
    assert format_rfc3339_nano(base + 1) == "2026-11-20T22:55:16.000000001Z"


def test_ttl_rounds_up_then_truncates_past_expiry() -> None:
    assert ttl_seconds(20 * SECOND, 0) == 20
    assert ttl_seconds(20 * SECOND + 1, 0) == 21
    assert ttl_seconds(1, 0) == 1
    assert ttl_seconds(0, 0) == 0
    assert ttl_seconds(0, SECOND // 2) == 0  # just expired: 0, omitted
    assert ttl_seconds(0, 3 * SECOND // 2) == -1  # Go truncates toward zero
    assert ttl_seconds(0, 2 * SECOND) == -2


def test_node_json_field_order_and_omissions() -> None:
    expiration = utc_ns("2026-11-20T22:55:16", 459540957)
    node = NodeView("/foo", "bar", False, expiration, 6, 6)
    assert compact(node_json(node, expiration - 20 * SECOND)) == (
        '{"key":"/foo","value":"bar","expiration":"2026-11-20T22:55:16.459540957Z","ttl":20,'
        '"modifiedIndex":6,"createdIndex":6}'
    )
    # at the expiration the ttl is 0 and omitted; the expiration stays
    assert "ttl" not in node_json(node, expiration)
    empty = NodeView("/e", "", False, None, 3, 2)
    assert (
        compact(node_json(empty, 0)) == '{"key":"/e","value":"","modifiedIndex":3,"createdIndex":2}'
    )
    directory = NodeView("/d", None, True, None, 4, 4, nodes=())
    assert (
        compact(node_json(directory, 0))
        == '{"key":"/d","dir":true,"modifiedIndex":4,"createdIndex":4}'
    )


def test_root_has_no_key_and_no_indexes() -> None:
    child = NodeView("/a", "1", False, None, 4, 4)
    root = NodeView("/", None, True, None, 0, 0, nodes=(child,))
    assert compact(node_json(root, 0)) == (
        '{"dir":true,"nodes":[{"key":"/a","value":"1","modifiedIndex":4,"createdIndex":4}]}'
    )


def test_event_json_and_created() -> None:
    new = NodeView("/message", "Hello etcd", False, None, 5, 5)
    old = NodeView("/message", "Hello world", False, None, 4, 4)
    replaced = Event(Action.SET, new, old, etcd_index=5, time_ns=0)
    assert compact(event_json(replaced)) == (
        '{"action":"set","node":{"key":"/message","value":"Hello etcd","modifiedIndex":5,'
        '"createdIndex":5},"prevNode":{"key":"/message","value":"Hello world",'
        '"modifiedIndex":4,"createdIndex":4}}'
    )
    assert not replaced.created()
    assert Event(Action.SET, old, None, etcd_index=4, time_ns=0).created()
    assert Event(Action.CREATE, old, None, etcd_index=4, time_ns=0).created()
    assert not Event(Action.UPDATE, new, old, etcd_index=5, time_ns=0).created()
    assert not Event(Action.COMPARE_AND_SWAP, new, old, etcd_index=5, time_ns=0).created()
    assert replaced.index == 5


def test_event_ttl_defaults_to_the_event_time() -> None:
    node = NodeView("/t", "v", False, 100 * SECOND, 2, 2)
    event = Event(Action.SET, node, None, etcd_index=2, time_ns=70 * SECOND)
    assert event_json(event)["node"]["ttl"] == 30
    assert event_json(event, 90 * SECOND)["node"]["ttl"] == 10


# -- the Raft command --------------------------------------------------------------------------


def test_request_round_trip() -> None:
    requests = [
        V2Request("PUT", "/a", value="x", prev_exist=True, time_ns=5),
        V2Request("PUT", "/a", prev_exist=False, dir=True, expiration_ns=2**62),
        V2Request("POST", "/q", value="é\u2603", time_ns=2**63 - 1),
        V2Request("DELETE", "/d", prev_value="v", prev_index=2**64 - 1, recursive=True),
        V2Request("QGET", "/", recursive=True, sorted=True),
        V2Request("SYNC", "", time_ns=123),
        V2Request("GET", "/g", refresh=True),
    ]
    for request in requests:
        data = request.encode()
        assert V2Request.decode(data) == request
        assert V2Request.decode(data).encode() == data


def good_fields() -> list[object]:
    return cbor2.loads(V2Request("PUT", "/a", value="v", time_ns=7).encode())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("position", "bad"),
    [
        (0, 2),  # unknown format
        (1, "PATCH"),
        (1, b"PUT"),
        (2, None),
        (2, b"/a"),
        (3, 5),
        (4, 1),  # an int is not a bool
        (5, None),
        (6, -1),
        (6, 2**64),
        (6, True),  # a bool is not an int
        (6, 1.0),
        (7, 0),
        (7, "true"),
        (8, -5),
        (8, 2**63),
        (9, "yes"),
        (10, None),
        (11, 0),
        (12, -1),
        (12, "7"),
    ],
)
def test_request_decode_refuses_bad_fields(position: int, bad: object) -> None:
    fields = good_fields()
    fields[position] = bad
    with pytest.raises(ValueError):
        V2Request.decode(cbor2.dumps(fields))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"\x9f",  # an unterminated indefinite array
        cbor2.dumps({"method": "PUT"}),
        cbor2.dumps([]),
        cbor2.dumps([1] * 14),
        cbor2.dumps("PUT /a"),
        cbor2.dumps(cbor2.CBORTag(1, 5)),  # a datetime
        b"\xc1\x01",
        b"\x81" * 1000 + b"\x01",  # nested far too deep
    ],
)
def test_request_decode_refuses_malformed_bytes(data: bytes) -> None:
    with pytest.raises(ValueError):
        V2Request.decode(data)


def test_request_refuses_text_that_cannot_be_utf8() -> None:
    with pytest.raises(ValueError):
        V2Request("PUT", "/bad\udcff")


def test_request_constructor_validates() -> None:
    with pytest.raises(ValueError):
        V2Request("PUT", "/a", prev_index=-1)
    with pytest.raises(ValueError):
        V2Request("HEAD", "/a")
    with pytest.raises(ValueError):
        V2Request("PUT", "/a", dir=1)  # type: ignore[arg-type]
