"""Simulated clients: v2 requests through the real HTTP API, every one recorded.

Each client is a sequential process on its own simulated host. It picks a
member (and moves on to another when one stops answering), an operation on
one of a few keys (so that operations collide), sends it with
``net.v2client`` over the simulated network, and records the invoke and
the outcome in virtual time (``sim.history``): ok, failed with etcd's
error code, or indeterminate (a timeout, a reset, a 5xx: the write may or
may not have happened).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from random import Random
from typing import Protocol, TypeVar

import trio

from net.http.errors import HttpError
from net.v2client import EtcdError, Reply, V2Client
from sim.cluster import SimCluster
from sim.history import MODEL_ERROR_CODES, History, OpKind


@dataclass(frozen=True)
class WorkloadOptions:
    """How the clients behave.

    Attributes:
        clients: concurrent sequential clients.
        keys: how many keys they share.
        request_timeout_s: a client gives up (indeterminate) after this.
        think_s_max: pause between a client's requests, drawn in [0, max).
        weights: relative frequency of each operation kind.
    """

    clients: int = 8
    keys: int = 4
    request_timeout_s: float = 3.0
    think_s_max: float = 0.05
    weights: tuple[tuple[OpKind, int], ...] = (
        (OpKind.READ, 30),
        (OpKind.SET, 20),
        (OpKind.CREATE, 8),
        (OpKind.UPDATE, 8),
        (OpKind.CAS, 20),
        (OpKind.DELETE, 6),
        (OpKind.CAD, 8),
    )


@dataclass
class Client:
    """One sequential client."""

    client_id: int
    cluster: SimCluster
    history: History
    options: WorkloadOptions
    rng: Random
    sent: int = 0
    last_seen: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Per key, the last value and modifiedIndex this client saw: CAS compares against them."""

    def _pick_kind(self) -> OpKind:
        kinds = [kind for kind, weight in self.options.weights for _ in range(weight)]
        return self.rng.choice(kinds)

    async def run(self, stop_at_s: float, operations_max: int | None = None) -> None:
        """Send requests until ``stop_at_s`` (virtual time), at most ``operations_max``."""
        host = self.cluster.network.host(f"c{self.client_id}")
        target = self.rng.choice(self.cluster.names)
        clients: dict[str, V2Client] = {}
        try:
            while trio.current_time() < stop_at_s:
                if operations_max is not None and self.sent >= operations_max:
                    return
                if target not in clients:
                    clients[target] = V2Client(
                        host,
                        self.cluster.client_url(target),
                        timeout_s=self.options.request_timeout_s,
                    )
                answered = await self.one(clients[target])
                if not answered:
                    target = self.rng.choice(self.cluster.names)
                await trio.sleep(self.rng.random() * self.options.think_s_max)
        finally:
            with trio.CancelScope(shield=True):
                for client in clients.values():
                    await client.aclose()

    async def one(self, client: V2Client) -> bool:
        """One request, recorded; False when the member did not answer usefully."""
        self.sent += 1
        kind = self._pick_kind()
        key = f"/k{self.rng.randrange(self.options.keys)}"
        value = f"c{self.client_id}-{self.sent}"
        prev_value: str | None = None
        prev_index: int | None = None
        if kind in (OpKind.CAS, OpKind.CAD):
            seen_value, seen_index = self.last_seen.get(key, ("never-written", 1))
            if self.rng.random() < 0.5:
                prev_value = seen_value
            else:
                prev_index = seen_index
        op_id = self.history.invoke(
            self.client_id,
            kind,
            key,
            value=value if kind in (OpKind.SET, OpKind.CREATE, OpKind.UPDATE, OpKind.CAS) else None,
            prev_value=prev_value,
            prev_index=prev_index,
            time_s=trio.current_time(),
        )
        try:
            reply = await self._send(
                client, kind, key=key, value=value, prev_value=prev_value, prev_index=prev_index
            )
        except EtcdError as error:
            if error.code in MODEL_ERROR_CODES:
                self.history.fail(op_id, error_code=error.code, time_s=trio.current_time())
                return True
            self.history.indeterminate(op_id, note=str(error), time_s=trio.current_time())
            return False
        except (HttpError, trio.TooSlowError) as error:
            self.history.indeterminate(op_id, note=type(error).__name__, time_s=trio.current_time())
            return False
        node = reply.node
        index = node.get("modifiedIndex")
        output = node.get("value") if kind is OpKind.READ else None
        seen = output if kind is OpKind.READ else value
        keeps_value = kind not in (OpKind.DELETE, OpKind.CAD)
        if isinstance(index, int) and isinstance(seen, str) and keeps_value:
            self.last_seen[key] = (seen, index)
        self.history.ok(
            op_id,
            output_value=output,
            index=index if isinstance(index, int) else None,
            time_s=trio.current_time(),
        )
        return True

    @staticmethod
    async def _send(
        client: V2Client,
        kind: OpKind,
        *,
        key: str,
        value: str,
        prev_value: str | None,
        prev_index: int | None,
    ) -> Reply:
        match kind:
            case OpKind.READ:
                return await client.get(key, quorum=True)
            case OpKind.SET:
                return await client.set(key, value)
            case OpKind.CREATE:
                return await client.set(key, value, prev_exist=False)
            case OpKind.UPDATE:
                return await client.set(key, value, prev_exist=True)
            case OpKind.CAS:
                return await client.set(key, value, prev_value=prev_value, prev_index=prev_index)
            case OpKind.DELETE:
                return await client.delete(key)
            case OpKind.CAD:
                return await client.delete(key, prev_value=prev_value, prev_index=prev_index)
        raise AssertionError(kind)


async def run_workload(
    cluster: SimCluster,
    history: History,
    *,
    options: WorkloadOptions,
    rng: Random,
    stop_at_s: float,
    operations_max: int | None = None,
) -> list[Client]:
    """Run every client until ``stop_at_s``; the clients (for their counters)."""
    clients = [
        Client(number, cluster, history, options, Random(rng.getrandbits(64)))
        for number in range(1, options.clients + 1)
    ]
    return await run_clients(clients, stop_at_s, operations_max)


class SequentialClient(Protocol):
    """A simulated client: one request at a time until a time or a count."""

    async def run(self, stop_at_s: float, operations_max: int | None = None) -> None: ...


ClientT = TypeVar("ClientT", bound=SequentialClient)


async def run_clients(
    clients: list[ClientT], stop_at_s: float, operations_max: int | None
) -> list[ClientT]:
    """Run every client at once until ``stop_at_s`` (v2 and v3 workloads alike)."""
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(client.run, stop_at_s, operations_max)
    return clients
