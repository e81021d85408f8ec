"""Shared helpers for the simulator's tests."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio

from sim.history import Operation, OpKind, Outcome
from sim.linearizability import Verdict, check_operations
from sim.network import SimNetwork, SimStream

StreamPairMaker = Callable[[], Awaitable[tuple[SimStream, SimStream]]]


async def start_pair_maker(
    network: SimNetwork,
    nursery: trio.Nursery,
    *,
    client: str = "client",
    server: str = "server",
) -> StreamPairMaker:
    """Serve on ``server`` and return a function that connects from ``client``: each call gives
    a (client end, server end) pair. The server ends stay open until closed or the nursery is
    cancelled."""
    send, receive = trio.open_memory_channel[trio.abc.Stream](math.inf)

    async def handler(stream: trio.abc.Stream) -> None:
        await send.send(stream)
        await trio.sleep_forever()

    address = await nursery.start(network.host(server).serve, f"{server}:0", handler)

    async def make() -> tuple[SimStream, SimStream]:
        client_end = await network.host(client).connect(address)
        server_end = await receive.receive()
        assert isinstance(client_end, SimStream)
        assert isinstance(server_end, SimStream)
        return client_end, server_end

    return make


def clogged(make: StreamPairMaker, window_bytes: int) -> StreamPairMaker:
    """Pairs whose both directions are full: send_all blocks until the other end reads."""

    async def make_clogged() -> tuple[SimStream, SimStream]:
        client_end, server_end = await make()
        await client_end.send_all(b"c" * window_bytes)
        await server_end.send_all(b"s" * window_bytes)
        return client_end, server_end

    return make_clogged


class HistoryBuilder:
    """Hand-built histories: ``b.op(client, kind, start, end, key=..., ...)``, numbered in the
    order they are added, on ``key`` unless an operation names another."""

    def __init__(self, key: str = "/x") -> None:
        self.key = key
        self.operations: list[Operation] = []

    def op(
        self,
        client: int,
        kind: OpKind,
        start: float,
        end: float | None,
        *,
        key: str | None = None,
        outcome: Outcome = Outcome.OK,
        **fields: object,
    ) -> Operation:
        operation = Operation(
            op_id=len(self.operations),
            client_id=client,
            kind=kind,
            key=self.key if key is None else key,
            invoke_s=start,
            outcome=outcome,
            complete_s=end,
            **fields,  # type: ignore[arg-type]
        )
        self.operations.append(operation)
        return operation

    def check(self, **options: object) -> Verdict:
        return check_operations(self.operations, **options).verdict  # type: ignore[arg-type]
