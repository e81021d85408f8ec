"""What the usage recorder costs per recorded request, and the memory it holds.

``python -m bench.usage_cost``: a stream of Range observations over many distinct keys
(``/registry/pods/nsN/pod-M``, N of 97 namespaces, M of a million pods: the sketches'
worst case, evictions on almost every record) and over a few hot keys, through
``UsageRecorder.record`` (every level of every record) and through ``record_kv`` (the
request and response as the client port's wrapper sees them). Prints microseconds per
recorded request and the entries the sketches hold.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio
from google.protobuf.message import Message

from actors.usage import UsageRecorder, record_methods
from net.etcdpb import kv_pb2, rpc_pb2
from net.etcdpb.routes import grpc_path
from net.v3.methods import CallContext, UnaryMethod
from storage.usage.sketch import READ

RECORDS = 200_000


def _timed_us(records: int, step: Callable[[int], None]) -> float:
    started_s = time.perf_counter()
    for number in range(records):
        step(number)
    return (time.perf_counter() - started_s) / records * 1e6


def measure(records: int = RECORDS) -> dict[str, float]:
    """Microseconds per record for each stream, and the sketch entries held after them."""
    clock = [0.0]
    recorder = UsageRecorder(now_s=lambda: clock[0])
    distinct = [b"/registry/pods/ns%d/pod-%d" % (n % 97, n) for n in range(records)]
    hot = [b"/registry/leases/ns%d/lock" % (n % 5) for n in range(records)]

    def distinct_step(number: int) -> None:
        clock[0] = number * 1e-4  # 20 s of virtual time: the interval rolls twice
        recorder.record(READ, distinct[number], 120)

    def hot_step(number: int) -> None:
        recorder.record(READ, hot[number], 120)

    request = rpc_pb2.RangeRequest(key=b"/registry/pods/ns1/pod-1")
    response = rpc_pb2.RangeResponse(kvs=[kv_pb2.KeyValue(key=request.key, value=b"v" * 100)])

    def kv_step(number: int) -> None:
        del number
        recorder.record_kv(request, response)

    figures = {
        "record, all-distinct keys (us)": _timed_us(records, distinct_step),
        "record, 5 hot keys (us)": _timed_us(records, hot_step),
        "record_kv, a Range and its response (us)": _timed_us(records, kv_step),
    }
    entries = sum(
        sketch.memory_entries() for frame in [recorder.windows.frame(clock[0])] for sketch in frame
    )
    figures["a unary call through record_methods' wrapper, less the bare call (us)"] = trio.run(
        _wrapper_cost_us, recorder, request, response, records
    )
    figures["entries in the current frame"] = float(entries)
    figures["frames held"] = float(recorder.windows.frames_held())
    return figures


async def _wrapper_cost_us(
    recorder: UsageRecorder, request: Message, response: Message, records: int
) -> float:
    """The wrapper's cost on the call path: the same handler awaited bare and wrapped."""

    async def handler(message: Message, context: CallContext) -> Message:
        del message, context
        return response

    path = grpc_path("KV", "Range")
    bare = {path: UnaryMethod(rpc_pb2.RangeRequest, handler)}
    wrapped = record_methods(recorder, bare)
    timings_us = []
    for methods in (bare, wrapped):
        method = methods[path]
        assert isinstance(method, UnaryMethod)
        started_s = time.perf_counter()
        for _ in range(records):
            await method.handler(request, CallContext())
        timings_us.append((time.perf_counter() - started_s) / records * 1e6)
    return timings_us[1] - timings_us[0]


def main() -> None:
    for name, value in measure().items():
        print(f"{name:70} {value:10.2f}")


if __name__ == "__main__":
    main()
