"""The usage recorder's pure parts: what a KV request counts as, the hot answer, the
Prometheus collector's bounded label values, v2 paths, and memory bounded over time whatever
the keys."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from actors.usage import (
    LEVELS,
    METRIC_TOP,
    SKETCH_CAPACITY,
    UsageCollector,
    UsageRecorder,
    kv_observations,
    record_v2,
)
from net.etcdpb import kv_pb2, rpc_pb2
from net.http.messages import Headers, Request, Response, StreamingResponse
from net.inspect_api import InspectError, parse_query
from storage.usage.sketch import READ, WRITE
from storage.usage.windows import COARSE_INTERVALS, FINE_PER_COARSE


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_a_txn_counts_the_operations_of_the_branch_that_ran() -> None:
    request = rpc_pb2.TxnRequest(
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"/a/1", value=b"vv"))],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"/b/1"))],
    )
    ran_then = rpc_pb2.TxnResponse(
        succeeded=True, responses=[rpc_pb2.ResponseOp(response_put=rpc_pb2.PutResponse())]
    )
    assert list(kv_observations(request, ran_then)) == [(WRITE, b"/a/1", 6)]
    found = rpc_pb2.RangeResponse(kvs=[kv_pb2.KeyValue(key=b"/b/1", value=b"x")])
    ran_else = rpc_pb2.TxnResponse(
        succeeded=False, responses=[rpc_pb2.ResponseOp(response_range=found)]
    )
    assert list(kv_observations(request, ran_else)) == [(READ, b"/b/1", found.ByteSize())]


def test_hot_answer_by_depth_and_prefix_and_refusals() -> None:
    recorder = UsageRecorder(now_s=FakeClock())
    for number in range(10):
        recorder.record(WRITE, b"/t1/app/%d" % (number % 2), 10)
    recorder.record(READ, b"/t2/x", 5)
    answer = recorder.hot(b"", 1, "1m", 10)
    assert [(item["key"], item["count"]) for item in answer["items"]] == [
        ("/t1/", 10),
        ("/t2/", 1),
    ]
    keys = recorder.hot(b"/t1/", 0, "5m", 1)
    assert [item["key"] for item in keys["items"]] == ["/t1/app/1"]
    with pytest.raises(InspectError):
        recorder.hot(b"", 9, "1m", 10)
    with pytest.raises(InspectError):
        recorder.hot(b"", 1, "2h", 10)
    with pytest.raises(InspectError, match="at least the prefix's"):
        recorder.hot(b"/t1/app/", 1, "1m", 10)  # /t1/ cannot be under /t1/app/
    assert recorder.hot(b"/t1/app/", 2, "1m", 10)["items"][0]["count"] == 10
    assert parse_query("prefix=%2F%FF&depth=2") == (b"/\xff", 2, "1m", 20)


def test_metrics_label_values_are_bounded_whatever_the_prefixes() -> None:
    recorder = UsageRecorder(now_s=FakeClock())
    for number in range(5000):
        recorder.record(READ, b"/tenant-%d/k" % number, 1)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(UsageCollector(recorder))
    text = generate_latest(registry).decode()
    series = [line for line in text.splitlines() if line.startswith("troika_prefix_requests_1m{")]
    assert len(series) == METRIC_TOP + 1 and 'prefix="other"' in text


def test_memory_stays_bounded_over_time_with_ever_new_keys() -> None:
    clock = FakeClock()
    recorder = UsageRecorder(now_s=clock, capacity=32)
    frames_max = FINE_PER_COARSE + COARSE_INTERVALS + FINE_PER_COARSE + 1
    for number in range(60_000):  # 50 minutes, a new key every 50 ms
        clock.now_s = number * 0.05
        recorder.record(WRITE, b"/a%d/b%d/c%d" % (number % 7, number, number), 1)
    assert recorder.windows.frames_held() <= frames_max
    held = recorder.windows.window(clock.now_s, 900.0)
    assert all(len(sketch) <= 32 for sketch in held) and len(held) == LEVELS
    assert SKETCH_CAPACITY >= 32


async def test_v2_key_requests_are_counted_by_path() -> None:
    recorder = UsageRecorder(now_s=FakeClock())

    async def v2(request: Request) -> Response | StreamingResponse:
        return Response(200, (), b'{"node":{}}')

    handle = record_v2(recorder, v2)
    await handle(Request("PUT", "/v2/keys/app/x", "/v2/keys/app/x", "", Headers(), b"value=1"))
    await handle(Request("GET", "/v2/keys/app/x", "/v2/keys/app/x", "", Headers()))
    await handle(Request("GET", "/version", "/version", "", Headers()))
    (item,) = recorder.hot(b"", 2, "1m", 5)["items"]
    assert (item["key"], item["writes"], item["reads"]) == ("/v2/keys/", 1, 1)
