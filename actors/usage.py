"""A member's usage recorder: requests counted by key prefix, and per-prefix storage use.

Why
---

etcd cannot tell an operator which keys are hot or which prefixes use the space. Each troika
member counts the requests it serves by key and by prefix at depths 1 to ``DEPTH_MAX``
(reads, writes, watch events sent, bytes) in space-saving sketches (``storage.usage``), over
sliding windows of 1, 5 and 15 minutes on Trio's clock. Memory is bounded by the windows'
frames, ``LEVELS`` sketches each of ``SKETCH_CAPACITY`` items, whatever the key
distribution. The storage use per prefix is computed on demand from the MVCC index, a page
at a time, so the member goes on serving during a scan.

How it is fed
-------------

The client port's method table is wrapped (:func:`record_methods`): KV Range, Put,
DeleteRange and Txn are counted once each, from the request and the response, and Watch
responses once per event sent; the v2 keys API is wrapped as an HTTP handler
(:func:`record_v2`), counting ``/v2/keys/...`` paths (so v2 traffic shows under the
``/v2/`` prefix). Nothing in the services changes; one recorder serves every client
listener of a member (:func:`recorder_of`).

The JSON answers for ``net.inspect_api`` (``/troika/v1/hot``, ``/troika/v1/usage``) and a
bounded-cardinality Prometheus collector (:class:`UsageCollector`) read the same recorder.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

import trio
from google.protobuf.message import Message
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from net.etcdpb import rpc_pb2
from net.etcdpb.routes import grpc_path
from net.http.messages import Handler, Request, Response, StreamingResponse
from net.inspect_api import InspectError
from net.v3.methods import (
    CallContext,
    Methods,
    SendMessage,
    StreamHandler,
    StreamMethod,
    UnaryHandler,
    UnaryMethod,
)
from storage.usage.prefixes import prefix_depth, prefixes
from storage.usage.sketch import EVENT, READ, WRITE, Item
from storage.usage.space import PAGE_KEYS, UsageScan
from storage.usage.windows import WINDOWS_S, Windows

if TYPE_CHECKING:
    from actors.member import Member

DEPTH_MAX: Final = 4
"""Prefix depths counted (``/a/``, ``/a/b/``, ...); level 0 counts whole keys."""
LEVELS: Final = DEPTH_MAX + 1
SKETCH_CAPACITY: Final = 256
"""Items monitored per level per interval: a key or prefix above 1/256 of the traffic of
an interval is always among them."""
TOP_MAX: Final = 1000
"""Rows in one answer."""
METRIC_DEPTH: Final = 1
METRIC_TOP: Final = 10
"""Prometheus shows the top 10 prefixes at depth 1 over 1 minute (plus ``other``): at most
11 label values per series name, whatever the keys."""
V2_KEYS_PATH: Final = "/v2/keys"

Now = Callable[[], float]


class UsageRecorder:
    """Counts requests by key and prefix; see the module docstring.

    Args:
        now_s: the clock (Trio's by default; a test passes its own).
    """

    def __init__(self, now_s: Now = trio.current_time, capacity: int = SKETCH_CAPACITY) -> None:
        self.now_s = now_s
        self.windows = Windows(LEVELS, capacity)
        self.recorded = 0

    def record(self, kind: int, key: bytes, size_bytes: int) -> None:
        """Count one operation (READ, WRITE or EVENT) on ``key`` carrying ``size_bytes``."""
        frame = self.windows.frame(self.now_s())
        for sketch, name in zip(frame, prefixes(key, DEPTH_MAX), strict=True):
            sketch.add(name, kind, size_bytes)
        self.recorded += 1

    def record_kv(self, request: Message, response: Message) -> None:
        """Count a KV request once it is answered."""
        for kind, key, size_bytes in kv_observations(request, response):
            self.record(kind, key, size_bytes)

    def hot(self, prefix: bytes, depth: int, window: str, limit: int) -> dict[str, Any]:
        """The JSON answer of ``/troika/v1/hot``.

        Raises:
            InspectError: a depth or window not served.
        """
        if not 0 <= depth <= DEPTH_MAX:
            raise InspectError(f"depth must be between 0 and {DEPTH_MAX}")
        if 0 < depth < prefix_depth(prefix):
            raise InspectError(f"depth must be 0 or at least the prefix's ({prefix_depth(prefix)})")
        if window not in WINDOWS_S:
            raise InspectError(f"window must be one of {', '.join(WINDOWS_S)}")
        limit = max(1, min(limit, TOP_MAX))
        now_s = self.now_s()
        sketch = self.windows.window(now_s, WINDOWS_S[window])[depth]
        top = sketch.top(limit, prefix)
        names = [item.key for item in top]
        series = []
        for point in self.windows.series(now_s):
            counts = {item.key: item.count for item in point.frame[depth].items()}
            series.append({"age_minutes": point.age,
                           "counts": [counts.get(name, 0) for name in names]})  # fmt: skip
        return {
            "window": window,
            "depth": depth,
            "prefix": prefix.decode("utf-8", "surrogateescape"),
            "total": sketch.total,
            "floor": sketch.floor(),
            "capacity": sketch.capacity,
            "items": [item.to_json() for item in top],
            "series": series,
        }


def kv_observations(request: Message, response: Message) -> Iterator[tuple[int, bytes, int]]:
    """(kind, key, bytes) of each operation of an answered KV request: a range is one read
    of its response's size, a put one write of its key and value, a delete one write; a
    txn's operations of the branch that ran."""
    match request:
        case rpc_pb2.RangeRequest():
            yield READ, request.key, response.ByteSize()
        case rpc_pb2.PutRequest():
            yield WRITE, request.key, len(request.key) + len(request.value)
        case rpc_pb2.DeleteRangeRequest():
            yield WRITE, request.key, len(request.key)
        case rpc_pb2.TxnRequest():
            assert isinstance(response, rpc_pb2.TxnResponse)
            ops = request.success if response.succeeded else request.failure
            for op, result in zip(ops, response.responses, strict=False):
                inner = getattr(op, op.WhichOneof("request") or "request_range")
                outer = getattr(result, result.WhichOneof("response") or "response_range")
                yield from kv_observations(inner, outer)


# -- the shells ----------------------------------------------------------------------------

_RECORDERS: weakref.WeakKeyDictionary[Member, UsageRecorder] = weakref.WeakKeyDictionary()


def recorder_of(member: Member) -> UsageRecorder:
    """The member's one recorder (made on first use), shared by all its client listeners."""
    recorder = _RECORDERS.get(member)
    if recorder is None:
        recorder = UsageRecorder()
        _RECORDERS[member] = recorder
    return recorder


RECORDED_KV = frozenset(grpc_path("KV", name) for name in ("Range", "Put", "DeleteRange", "Txn"))
WATCH_PATH = grpc_path("Watch", "Watch")


def record_methods(recorder: UsageRecorder, methods: Methods) -> Methods:
    """``methods`` with the KV calls and the Watch stream counted in ``recorder``."""
    wrapped = dict(methods)
    for path in RECORDED_KV & methods.keys():
        method = methods[path]
        assert isinstance(method, UnaryMethod), path
        wrapped[path] = UnaryMethod(method.request_type, _recorded_unary(recorder, method))
    watch = methods.get(WATCH_PATH)
    if isinstance(watch, StreamMethod):
        wrapped[WATCH_PATH] = StreamMethod(watch.request_type, _recorded_watch(recorder, watch))
    return wrapped


def _recorded_unary(recorder: UsageRecorder, method: UnaryMethod) -> UnaryHandler:
    handler = method.handler

    async def call(request: Message, context: CallContext) -> Message:
        response = await handler(request, context)
        recorder.record_kv(request, response)
        return response

    return call


def _recorded_watch(recorder: UsageRecorder, method: StreamMethod) -> StreamHandler:
    handler = method.handler

    async def call(
        requests: AsyncIterator[Message], send: SendMessage, context: CallContext
    ) -> None:
        async def counted(message: Message) -> None:
            if isinstance(message, rpc_pb2.WatchResponse):
                for event in message.events:
                    kv = event.kv
                    recorder.record(EVENT, kv.key, len(kv.key) + len(kv.value))
            await send(message)

        await handler(requests, counted, context)

    return call


def record_v2(recorder: UsageRecorder, handler: Handler) -> Handler:
    """The v2 API's handler with ``/v2/keys/...`` requests counted by their path."""

    async def handle(request: Request) -> Response | StreamingResponse:
        response = await handler(request)
        path = request.path
        if path.startswith(V2_KEYS_PATH):
            key = path.encode("utf-8", "surrogateescape")
            if request.method in {"GET", "HEAD"}:
                size = len(response.body) if isinstance(response, Response) else 0
                recorder.record(READ, key, size)
            else:
                recorder.record(WRITE, key, len(request.body))
        return response

    return handle


async def usage_answer(member: Member, prefix: bytes, depth: int, limit: int) -> dict[str, object]:
    """The JSON answer of ``/troika/v1/usage``: the scan runs a page at a time, letting the
    member's other tasks run between pages."""
    if depth < 0:
        raise InspectError("depth must not be negative")
    scan = UsageScan(prefix, depth, groups_max=max(1, min(limit, TOP_MAX)))
    mvcc = member.machine.mvcc
    revision = mvcc.current_revision
    while not scan.step(mvcc, PAGE_KEYS):
        await trio.sleep(0)
    rows = sorted(scan.rows(), key=lambda row: (-row.history_bytes, row.prefix))
    return {
        "prefix": prefix.decode("utf-8", "surrogateescape"),
        "depth": depth,
        "revision": revision,
        "compact_revision": max(0, mvcc.compact_revision),
        "member_id": f"{member.member_id:x}",
        "keys_scanned": scan.keys_scanned,
        "total": scan.total.to_json(),
        "other": scan.other.to_json(),
        "rows": [row.to_json() for row in rows],
    }


class UsageCollector(Collector):
    """Prometheus gauges of the top prefixes at depth 1 over the last minute: requests,
    reads, writes, watch events and bytes, labelled by prefix; the ``METRIC_TOP`` largest and
    ``other`` (the rest of the traffic), so the label values are bounded."""

    def __init__(self, recorder: UsageRecorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[Metric]:
        now_s = self.recorder.now_s()
        sketch = self.recorder.windows.window(now_s, WINDOWS_S["1m"])[METRIC_DEPTH]
        top = sketch.top(METRIC_TOP)
        for name in ("requests", "reads", "writes", "events", "bytes"):
            family = GaugeMetricFamily(
                f"troika_prefix_{name}_1m",
                f"{name.capitalize()} by key prefix (depth {METRIC_DEPTH}) over the last minute "
                "on this member (space-saving estimates: the top prefixes, then other).",
                labels=("prefix",),
            )
            values = [_metric_value(item, name) for item in top]
            for item, value in zip(top, values, strict=True):
                family.add_metric((item.key.decode("utf-8", "replace"),), float(value))
            if name == "requests":
                family.add_metric(("other",), float(max(0, sketch.total - sum(values))))
            yield family


def _metric_value(item: Item, name: str) -> int:
    if name == "requests":
        return item.count
    value = getattr(item, name)
    assert isinstance(value, int)
    return value
