# ruff: noqa: E501 (the recorded session: one exchange per line)
"""KvApplier against etcd 3.4.23: a recorded session replayed on a new store.

The session was run on a fresh single-member etcd 3.4.23 through its JSON gateway (requests and
responses as the gateway encodes them: base64 bytes, int64 as strings, defaults left out; the
header reduced to its revision, the only field the applier sets). Replaying the requests on a
new store must give the same responses and errors, step by step.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from actors.kv_applier import KvApplier
from net.etcdpb import rpc_pb2
from net.v3.errors import RpcError
from storage.mvcc import MvccStore

_REQUESTS: dict[str, type[Message]] = {
    "range": rpc_pb2.RangeRequest,
    "put": rpc_pb2.PutRequest,
    "delete_range": rpc_pb2.DeleteRangeRequest,
    "txn": rpc_pb2.TxnRequest,
    "compact": rpc_pb2.CompactionRequest,
}

# [method, request, response or {"error", "code"}], one line per step, in order.
SESSION: list[list[Any]] = json.loads(
    """[
["range",{"key":"AA==","range_end":"AA=="},{"header":{"revision":"1"}}],
["delete_range",{"key":"AA==","range_end":"AA=="},{"header":{"revision":"1"}}],
["put",{"key":"Zm9v","value":"YmFy"},{"header":{"revision":"2"}}],
["put",{"key":"Zm9v","value":"YmFyMg==","prev_kv":true},{"header":{"revision":"3"},"prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}}],
["range",{"key":"Zm9v"},{"header":{"revision":"3"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmFyMg=="}],"count":"1"}],
["range",{"key":"bm90aGVyZQ=="},{"header":{"revision":"3"}}],
["put",{"key":"YS8x","value":"djE="},{"header":{"revision":"4"}}],
["put",{"key":"YS8y","value":"djI="},{"header":{"revision":"5"}}],
["put",{"key":"YS8z","value":"djM="},{"header":{"revision":"6"}}],
["put",{"key":"YS8y","value":"djJi"},{"header":{"revision":"7"}}],
["range",{"key":"YS8=","range_end":"YTA=","limit":2,"sort_order":"DESCEND","sort_target":"KEY"},{"header":{"revision":"7"},"kvs":[{"key":"YS8z","create_revision":"6","mod_revision":"6","version":"1","value":"djM="},{"key":"YS8y","create_revision":"5","mod_revision":"7","version":"2","value":"djJi"}],"more":true,"count":"3"}],
["range",{"key":"YS8=","range_end":"YTA=","limit":2},{"header":{"revision":"7"},"kvs":[{"key":"YS8x","create_revision":"4","mod_revision":"4","version":"1","value":"djE="},{"key":"YS8y","create_revision":"5","mod_revision":"7","version":"2","value":"djJi"}],"more":true,"count":"3"}],
["range",{"key":"YS8=","range_end":"YTA=","limit":3},{"header":{"revision":"7"},"kvs":[{"key":"YS8x","create_revision":"4","mod_revision":"4","version":"1","value":"djE="},{"key":"YS8y","create_revision":"5","mod_revision":"7","version":"2","value":"djJi"},{"key":"YS8z","create_revision":"6","mod_revision":"6","version":"1","value":"djM="}],"count":"3"}],
["range",{"key":"YS8=","range_end":"YTA=","keys_only":true},{"header":{"revision":"7"},"kvs":[{"key":"YS8x","create_revision":"4","mod_revision":"4","version":"1"},{"key":"YS8y","create_revision":"5","mod_revision":"7","version":"2"},{"key":"YS8z","create_revision":"6","mod_revision":"6","version":"1"}],"count":"3"}],
["range",{"key":"AA==","range_end":"AA==","count_only":true},{"header":{"revision":"7"},"count":"4"}],
["range",{"key":"YS8=","range_end":"AA==","count_only":true},{"header":{"revision":"7"},"count":"4"}],
["range",{"key":"YS8=","range_end":"YTA=","min_mod_revision":6},{"header":{"revision":"7"},"kvs":[{"key":"YS8y","create_revision":"5","mod_revision":"7","version":"2","value":"djJi"},{"key":"YS8z","create_revision":"6","mod_revision":"6","version":"1","value":"djM="}],"count":"3"}],
["range",{"key":"YS8=","range_end":"YTA=","max_mod_revision":6,"min_create_revision":6},{"header":{"revision":"7"},"kvs":[{"key":"YS8z","create_revision":"6","mod_revision":"6","version":"1","value":"djM="}],"count":"3"}],
["range",{"key":"YS8=","range_end":"YTA=","sort_target":"VERSION"},{"header":{"revision":"7"},"kvs":[{"key":"YS8x","create_revision":"4","mod_revision":"4","version":"1","value":"djE="},{"key":"YS8z","create_revision":"6","mod_revision":"6","version":"1","value":"djM="},{"key":"YS8y","create_revision":"5","mod_revision":"7","version":"2","value":"djJi"}],"count":"3"}],
["range",{"key":"YS8=","range_end":"YTA=","sort_target":"VALUE","sort_order":"DESCEND","limit":1},{"header":{"revision":"7"},"kvs":[{"key":"YS8z","create_revision":"6","mod_revision":"6","version":"1","value":"djM="}],"more":true,"count":"3"}],
["range",{"key":"YS8=","range_end":"YTA=","sort_target":"CREATE","sort_order":"ASCEND","max_create_revision":6,"limit":1},{"header":{"revision":"7"},"kvs":[{"key":"YS8x","create_revision":"4","mod_revision":"4","version":"1","value":"djE="}],"more":true,"count":"3"}],
["range",{"key":"YS8=","range_end":"YTA=","sort_target":"MOD","sort_order":"NONE"},{"header":{"revision":"7"},"kvs":[{"key":"YS8x","create_revision":"4","mod_revision":"4","version":"1","value":"djE="},{"key":"YS8z","create_revision":"6","mod_revision":"6","version":"1","value":"djM="},{"key":"YS8y","create_revision":"5","mod_revision":"7","version":"2","value":"djJi"}],"count":"3"}],
["range",{"key":"Zm9v","revision":2},{"header":{"revision":"7"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}],
["range",{"key":"Zm9v","revision":1000},{"error":"etcdserver: mvcc: required revision is a future revision","code":11}],
["range",{"key":"Zm9v","revision":-4},{"header":{"revision":"7"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmFyMg=="}],"count":"1"}],
["put",{"key":"Zm9v","value":"eA==","lease":"4242"},{"error":"etcdserver: requested lease not found","code":5}],
["put",{"key":"bm9wZQ==","ignore_value":true},{"error":"etcdserver: key not found","code":3}],
["put",{"key":"bm9wZQ==","value":"dg==","ignore_lease":true},{"error":"etcdserver: key not found","code":3}],
["put",{"key":"bm9wZQ==","ignore_value":true,"lease":"4242"},{"error":"etcdserver: requested lease not found","code":5}],
["put",{"key":"Zm9v","ignore_value":true,"prev_kv":true},{"header":{"revision":"8"},"prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmFyMg=="}}],
["put",{"key":"Zm9v","value":"eQ==","ignore_lease":true},{"header":{"revision":"9"}}],
["delete_range",{"key":"YS8x","prev_kv":true},{"header":{"revision":"10"},"deleted":"1","prev_kvs":[{"key":"YS8x","create_revision":"4","mod_revision":"4","version":"1","value":"djE="}]}],
["delete_range",{"key":"YS8x","prev_kv":true},{"header":{"revision":"10"}}],
["delete_range",{"key":"eno=","range_end":"AA=="},{"header":{"revision":"10"}}],
["txn",{"compare":[{"target":"VALUE","key":"Zm9v","result":"EQUAL","value":"eQ=="}],"success":[{"request_put":{"key":"Zm9v","value":"eg=="}},{"request_range":{"key":"Zm9v"}}],"failure":[{"request_range":{"key":"YS8y"}}]},{"header":{"revision":"11"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"11"}}},{"response_range":{"header":{"revision":"11"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"11","version":"5","value":"eg=="}],"count":"1"}}]}],
["txn",{"compare":[{"target":"VALUE","key":"Zm9v","result":"EQUAL","value":"eQ=="}],"success":[{"request_put":{"key":"Zm9v","value":"eg=="}}],"failure":[{"request_range":{"key":"YS8y"}}]},{"header":{"revision":"11"},"responses":[{"response_range":{"header":{"revision":"11"},"kvs":[{"key":"YS8y","create_revision":"5","mod_revision":"7","version":"2","value":"djJi"}],"count":"1"}}]}],
["txn",{"success":[{"request_range":{"key":"Zm9v"}},{"request_put":{"key":"dC9j","value":"Mw=="}},{"request_delete_range":{"key":"bm90aGluZw=="}},{"request_txn":{"success":[{"request_range":{"key":"dC9j"}}]}}]},{"header":{"revision":"12"},"succeeded":true,"responses":[{"response_range":{"header":{"revision":"11"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"11","version":"5","value":"eg=="}],"count":"1"}},{"response_put":{"header":{"revision":"12"}}},{"response_delete_range":{"header":{"revision":"12"}}},{"response_txn":{"header":{},"succeeded":true,"responses":[{"response_range":{"header":{"revision":"12"},"kvs":[{"key":"dC9j","create_revision":"12","mod_revision":"12","version":"1","value":"Mw=="}],"count":"1"}}]}}]}],
["txn",{"success":[{"request_delete_range":{"key":"bm90aGluZw=="}},{"request_range":{"key":"Zm9v"}}]},{"header":{"revision":"12"},"succeeded":true,"responses":[{"response_delete_range":{"header":{"revision":"12"}}},{"response_range":{"header":{"revision":"12"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"11","version":"5","value":"eg=="}],"count":"1"}}]}],
["txn",{"compare":[{"target":"VALUE","key":"bWlzc2luZw==","result":"NOT_EQUAL","value":"eA=="}],"failure":[{"request_range":{"key":"Zm9v","keys_only":true}}]},{"header":{"revision":"12"},"responses":[{"response_range":{"header":{"revision":"12"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"11","version":"5"}],"count":"1"}}]}],
["txn",{"compare":[{"target":"VERSION","key":"YS8=","range_end":"YTA=","result":"GREATER","version":"0"}],"success":[{"request_put":{"key":"YS8z","value":"eA==","prev_kv":true}}]},{"header":{"revision":"13"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"13"},"prev_kv":{"key":"YS8z","create_revision":"6","mod_revision":"6","version":"1","value":"djM="}}}]}],
["txn",{"compare":[{"target":"VERSION","key":"YS8=","range_end":"YTA=","result":"GREATER","version":"1"}],"success":[{"request_put":{"key":"YS8z","value":"eA=="}}]},{"header":{"revision":"14"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"14"}}}]}],
["txn",{"compare":[{"target":"VERSION","key":"bWlzc2luZw==","result":"EQUAL","version":"0"},{"target":"CREATE","key":"bWlzc2luZw==","result":"LESS","create_revision":"1"},{"target":"LEASE","key":"Zm9v","result":"EQUAL","lease":"0"},{"target":"MOD","key":"bWlzc2luZw==","result":"EQUAL","mod_revision":"0"}],"success":[]},{"header":{"revision":"14"},"succeeded":true}],
["txn",{"compare":[{"target":"MOD","key":"Zm9v","result":"GREATER","create_revision":"5"}]},{"header":{"revision":"14"},"succeeded":true}],
["txn",{"compare":[{"target":"VALUE","key":"AA==","range_end":"AA==","result":"GREATER","value":""}],"success":[{"request_range":{"key":"Zm9v","count_only":true}}]},{"header":{"revision":"14"},"succeeded":true,"responses":[{"response_range":{"header":{"revision":"14"},"count":"1"}}]}],
["txn",{"success":[{"request_put":{"key":"bWlzc2luZw==","value":"eA==","ignore_lease":true}}]},{"error":"etcdserver: key not found","code":3}],
["txn",{"compare":[{"target":"VERSION","key":"Zm9v","result":"EQUAL","version":"0"}],"success":[{"request_put":{"key":"bWlzc2luZw==","ignore_lease":true}}],"failure":[{"request_range":{"key":"Zm9v"}}]},{"header":{"revision":"14"},"responses":[{"response_range":{"header":{"revision":"14"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"11","version":"5","value":"eg=="}],"count":"1"}}]}],
["txn",{"success":[{"request_put":{"key":"dC96","value":"MQ==","lease":"12345"}}]},{"error":"etcdserver: requested lease not found","code":5}],
["txn",{"failure":[{"request_put":{"key":"dC96","value":"MQ==","lease":"12345"}}]},{"header":{"revision":"14"},"succeeded":true}],
["txn",{"success":[{"request_txn":{"success":[{"request_put":{"key":"dC96","value":"MQ==","lease":"12345"}}]}}]},{"error":"etcdserver: requested lease not found","code":5}],
["txn",{"success":[{"request_range":{"key":"Zm9v","revision":"1000"}}]},{"error":"etcdserver: mvcc: required revision is a future revision","code":11}],
["txn",{"success":[{"request_put":{"key":"Zm9v","value":"dw=="}},{"request_range":{"key":"Zm9v","revision":"0"}},{"request_delete_range":{"key":"YS8y","prev_kv":true}}]},{"header":{"revision":"15"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"15"}}},{"response_range":{"header":{"revision":"15"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"15","version":"6","value":"dw=="}],"count":"1"}},{"response_delete_range":{"header":{"revision":"15"},"deleted":"1","prev_kvs":[{"key":"YS8y","create_revision":"5","mod_revision":"7","version":"2","value":"djJi"}]}}]}],
["txn",{"compare":[{"target":"MOD","key":"Zm9v","result":"LESS","mod_revision":"100"}],"success":[{"request_put":{"key":"bi8x","value":"b25l"}},{"request_txn":{"compare":[{"target":"VALUE","key":"bi8x","result":"EQUAL","value":"b25l"}],"success":[{"request_put":{"key":"bi8y","value":"cw=="}}],"failure":[{"request_range":{"key":"bi8x"}},{"request_put":{"key":"bi8z","value":"Zg=="}}]}}]},{"header":{"revision":"16"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"16"}}},{"response_txn":{"header":{},"responses":[{"response_range":{"header":{"revision":"16"},"kvs":[{"key":"bi8x","create_revision":"16","mod_revision":"16","version":"1","value":"b25l"}],"count":"1"}},{"response_put":{"header":{"revision":"16"}}}]}}]}],
["txn",{"success":[{"request_txn":{"compare":[{"target":"VERSION","key":"bi8x","result":"EQUAL","version":"1"}],"success":[{"request_delete_range":{"key":"bi8=","range_end":"bjA="}},{"request_txn":{}}]}},{"request_range":{"key":"bi8=","range_end":"bjA="}}]},{"header":{"revision":"17"},"succeeded":true,"responses":[{"response_txn":{"header":{},"succeeded":true,"responses":[{"response_delete_range":{"header":{"revision":"17"},"deleted":"2"}},{"response_txn":{"header":{},"succeeded":true}}]}},{"response_range":{"header":{"revision":"17"}}}]}],
["compact",{"revision":"5"},{"header":{"revision":"17"}}],
["compact",{"revision":"5"},{"error":"etcdserver: mvcc: required revision has been compacted","code":11}],
["compact",{"revision":"4"},{"error":"etcdserver: mvcc: required revision has been compacted","code":11}],
["compact",{"revision":"1000"},{"error":"etcdserver: mvcc: required revision is a future revision","code":11}],
["range",{"key":"Zm9v","revision":5},{"header":{"revision":"17"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmFyMg=="}],"count":"1"}],
["range",{"key":"Zm9v","revision":4},{"error":"etcdserver: mvcc: required revision has been compacted","code":11}],
["range",{"key":"Zm9v","revision":-4},{"header":{"revision":"17"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"15","version":"6","value":"dw=="}],"count":"1"}],
["txn",{"success":[{"request_range":{"key":"Zm9v","revision":"4"}}]},{"error":"etcdserver: mvcc: required revision has been compacted","code":11}],
["txn",{"success":[{"request_range":{"key":"Zm9v","revision":"-1"}}]},{"error":"etcdserver: mvcc: required revision has been compacted","code":11}],
["txn",{"success":[{"request_range":{"key":"Zm9v","revision":"5"}}]},{"header":{"revision":"17"},"succeeded":true,"responses":[{"response_range":{"header":{"revision":"17"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmFyMg=="}],"count":"1"}}]}],
["delete_range",{"key":"AA==","range_end":"AA=="},{"header":{"revision":"18"},"deleted":"3"}],
["range",{"key":"AA==","range_end":"AA=="},{"header":{"revision":"18"}}]
]"""
)


def call(applier: KvApplier, method: str, request: Message) -> Message:
    handler = getattr(applier, method)
    response: Message = handler(request)
    return response


def test_the_recorded_session_replays_identically() -> None:
    applier = KvApplier(MvccStore())
    for number, (method, body, expected) in enumerate(SESSION):
        request = json_format.ParseDict(body, _REQUESTS[method]())
        try:
            response = call(applier, method, request)
        except RpcError as error:
            got: dict[str, Any] = {"error": error.message, "code": int(error.code)}
        else:
            got = json_format.MessageToDict(response, preserving_proto_field_name=True)
        assert got == expected, f"step {number}: {method} {body}"


@pytest.mark.parametrize("number", [n for n, step in enumerate(SESSION) if "error" in step[2]])
def test_a_refused_request_changes_nothing(number: int) -> None:
    applier = KvApplier(MvccStore())
    for method, body, _ in SESSION[:number]:
        with contextlib.suppress(RpcError):
            call(applier, method, json_format.ParseDict(body, _REQUESTS[method]()))
    store = applier.store
    before = (store.current_revision, store.hash_kv(), store.compact_revision)
    store.take_events()
    method, body, _ = SESSION[number]
    with pytest.raises(RpcError):
        call(applier, method, json_format.ParseDict(body, _REQUESTS[method]()))
    assert (store.current_revision, store.hash_kv(), store.compact_revision) == before
    assert store.take_events() == []
