"""What the QoS hook costs a request when no tenant is set (issue 16 item 3).

``python -m bench.qos_cost``: a KV handler called bare, through ``actors.qos``'s wrapper with
an empty tenant table, and through an empty wrapper (one more coroutine layer and nothing
else), 200,000 calls each, the best of three. The hook's own check is the difference between
the last two.
"""

from __future__ import annotations

import time
import types
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from google.protobuf.message import Message

from actors.qos import QosLimiter, _limited_unary
from actors.qos_apply import QosState
from net.etcdpb import rpc_pb2
from net.v3.methods import CallContext, UnaryMethod

CALLS: Final = 200_000
ROUNDS: Final = 3

Handler = Callable[[Message, Any], Awaitable[Message]]


async def bare(request: Message, context: CallContext) -> Message:
    return request


async def empty_wrapper(request: Message, context: CallContext) -> Message:
    return await bare(request, context)


async def per_call_ns(handler: Handler, request: Message) -> float:
    best_s = float("inf")
    for _ in range(ROUNDS):
        began = time.perf_counter()
        for _ in range(CALLS):
            await handler(request, None)
        best_s = min(best_s, time.perf_counter() - began)
    return best_s / CALLS * 1e9


async def main() -> None:
    member: Any = types.SimpleNamespace(machine=types.SimpleNamespace(qos=QosState()))
    wrapped = _limited_unary(QosLimiter(member), UnaryMethod(rpc_pb2.PutRequest, bare))
    request = rpc_pb2.PutRequest(key=b"/b/1", value=b"v")
    for label, handler in (("bare", bare), ("qos wrapper, no tenant", wrapped),
                           ("empty wrapper", empty_wrapper)):  # fmt: skip
        print(f"{label}: {await per_call_ns(handler, request):.0f} ns a call")


if __name__ == "__main__":
    trio.run(main)
