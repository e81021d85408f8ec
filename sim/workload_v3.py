"""Simulated v3 clients: etcd's KV RPCs over gRPC (``net.grpc.client``), every one recorded.

The v3 twin of ``sim.workload``. Each client is a sequential process on its own simulated
host with one ``GrpcChannel`` (one HTTP/2 connection) per member it has talked to; it moves
on to another member when one stops answering. An operation is a ``Put``, a linearizable or a
serializable ``Range``, a ``DeleteRange`` or a ``Txn`` compare-and-put, on one of a few keys,
recorded in ``sim.history`` with invoke and completion in virtual time:

- ok, with what the response says: the value and ``mod_revision`` read (or that the key is
  absent), the revision a write made, whether a txn's compare held or a delete deleted;
- failed: a gRPC status that says the request was refused before it was proposed
  (``DEFINITE_CODES``);
- indeterminate: any other status (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, a reset
  connection...): it may have committed.

The txn is etcd's compare-and-swap: ``If(value(k) == seen)`` or ``If(mod_revision(k) ==
seen)`` (0 when the client last saw the key absent: "create"), ``Then(Put(k, v))``,
``Else(Range(k))``, so even a failed compare observes the key. Some txns are on two keys
(``multi_key_txn_fraction``): ``If(mod_revision(a) == seen_a, mod_revision(b) == seen_b)``,
``Then(Put(a, v_a), Put(b, v_b))``, ``Else(Range(a), Range(b))``: one operation, recorded as a
group of per-key records (``History.invoke_txn_group``) that the checker holds to one revision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Final

import trio
from google.protobuf.message import Message

from net.etcdpb import kv_pb2, rpc_pb2
from net.etcdpb.routes import grpc_path
from net.grpc.client import GrpcChannel
from net.v3.errors import RpcError, StatusCode
from sim.cluster import CLIENT_PORT, SimCluster
from sim.history import History, OpKind
from sim.workload import run_clients

RANGE_PATH: Final = grpc_path("KV", "Range")
PUT_PATH: Final = grpc_path("KV", "Put")
DELETE_RANGE_PATH: Final = grpc_path("KV", "DeleteRange")
TXN_PATH: Final = grpc_path("KV", "Txn")

DEFINITE_CODES: Final = frozenset(
    {
        StatusCode.INVALID_ARGUMENT,
        StatusCode.RESOURCE_EXHAUSTED,  # "too many requests": refused before proposing
        StatusCode.OUT_OF_RANGE,
        StatusCode.PERMISSION_DENIED,
        StatusCode.UNAUTHENTICATED,
        StatusCode.UNIMPLEMENTED,
    }
)
"""Statuses that say the request took no effect; any other may hide a commit."""
NEVER_WRITTEN: Final = "never-written"
"""The value a client compares with before it has seen the key: the compare fails."""


@dataclass(frozen=True)
class V3WorkloadOptions:
    """How the v3 clients behave.

    Attributes:
        clients: concurrent sequential clients.
        keys: how many keys they share.
        request_timeout_s: a client gives up (indeterminate) after this (sent as grpc-timeout).
        think_s_max: pause between a client's requests, drawn in [0, max).
        weights: relative frequency of each operation kind.
        value_compare_fraction: of the txns on one key, how many compare the value (the
            rest compare the mod_revision).
        multi_key_txn_fraction: of the txns, how many are on two keys (with two keys or more).
    """

    clients: int = 8
    keys: int = 4
    request_timeout_s: float = 3.0
    think_s_max: float = 0.05
    weights: tuple[tuple[OpKind, int], ...] = (
        (OpKind.RANGE, 28),
        (OpKind.SERIAL_RANGE, 10),
        (OpKind.PUT, 20),
        (OpKind.TXN, 32),
        (OpKind.DELETE_RANGE, 10),
    )
    value_compare_fraction: float = 0.5
    multi_key_txn_fraction: float = 0.4


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a response says, in the history's terms."""

    output_value: str | None = None
    index: int | None = None
    succeeded: bool | None = None


def member_address(name: str) -> str:
    """A member's client address (``host:port``) on the simulated network."""
    return f"{name}:{CLIENT_PORT}"


@dataclass
class V3Client:
    """One sequential v3 client."""

    client_id: int
    cluster: SimCluster
    history: History
    options: V3WorkloadOptions
    rng: Random
    sent: int = 0
    last_seen: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    """Per key, the last value (None: absent) and mod_revision (0: absent) this client saw."""

    def _pick_kind(self) -> OpKind:
        kinds = [kind for kind, weight in self.options.weights for _ in range(weight)]
        return self.rng.choice(kinds)

    async def run(self, stop_at_s: float, operations_max: int | None = None) -> None:
        """Send requests until ``stop_at_s`` (virtual time), at most ``operations_max``."""
        host = self.cluster.network.host(f"c{self.client_id}")
        target = self.rng.choice(self.cluster.names)
        channels: dict[str, GrpcChannel] = {}
        async with contextlib.AsyncExitStack() as stack:
            while trio.current_time() < stop_at_s:
                if operations_max is not None and self.sent >= operations_max:
                    return
                if target not in channels:
                    channel = GrpcChannel(host, member_address(target))
                    channels[target] = await stack.enter_async_context(channel)
                answered = await self.one(channels[target])
                if not answered:
                    target = self.rng.choice(self.cluster.names)
                await trio.sleep(self.rng.random() * self.options.think_s_max)

    async def one(self, channel: GrpcChannel) -> bool:
        """One request, recorded; False when the member did not answer usefully."""
        self.sent += 1
        kind = self._pick_kind()
        fraction = self.options.multi_key_txn_fraction
        if kind is OpKind.TXN and self.options.keys >= 2 and self.rng.random() < fraction:
            return await self.txn_on_two_keys(channel)
        key = f"k{self.rng.randrange(self.options.keys)}"
        value = f"c{self.client_id}-{self.sent}" if kind in (OpKind.PUT, OpKind.TXN) else None
        prev_value: str | None = None
        prev_index: int | None = None
        if kind is OpKind.TXN:
            seen_value, seen_revision = self.last_seen.get(key, (None, 0))
            if self.rng.random() < self.options.value_compare_fraction:
                prev_value = seen_value if seen_value is not None else NEVER_WRITTEN
            else:
                prev_index = seen_revision
        op_id = self.history.invoke(
            self.client_id,
            kind,
            key,
            value=value,
            prev_value=prev_value,
            prev_index=prev_index,
            time_s=trio.current_time(),
        )
        request = build_request(kind, key, value, prev_value, prev_index)
        path, response_type, read = _CALLS[kind]
        try:
            response = await channel.unary(
                path, request, response_type, timeout_s=self.options.request_timeout_s
            )
        except RpcError as error:
            note = f"{error.code.name}: {error.message}"
            if error.code in DEFINITE_CODES:
                self.history.fail(op_id, error_code=None, note=note, time_s=trio.current_time())
                return True
            self.history.indeterminate(op_id, note=note, time_s=trio.current_time())
            return False
        outcome = read(response)
        self._remember(kind, key, value, outcome)
        self.history.ok(
            op_id,
            output_value=outcome.output_value,
            index=outcome.index,
            succeeded=outcome.succeeded,
            time_s=trio.current_time(),
        )
        return True

    async def txn_on_two_keys(self, channel: GrpcChannel) -> bool:
        """A txn comparing two keys' mod_revisions, putting both or ranging both; recorded as
        one group."""
        first, second = self.rng.sample(range(self.options.keys), 2)
        keys = (f"k{first}", f"k{second}")
        compares = [(key, self.last_seen.get(key, (None, 0))[1]) for key in keys]
        values = [f"c{self.client_id}-{self.sent}-{key}" for key in keys]
        op_ids = self.history.invoke_txn_group(
            self.client_id, compares, values, time_s=trio.current_time()
        )
        request = build_group_txn(compares, values)
        try:
            response = await channel.unary(
                TXN_PATH, request, rpc_pb2.TxnResponse, timeout_s=self.options.request_timeout_s
            )
        except RpcError as error:
            note = f"{error.code.name}: {error.message}"
            for op_id in op_ids:
                if error.code in DEFINITE_CODES:
                    self.history.fail(op_id, error_code=None, note=note, time_s=trio.current_time())
                else:
                    self.history.indeterminate(op_id, note=note, time_s=trio.current_time())
            return error.code in DEFINITE_CODES
        assert isinstance(response, rpc_pb2.TxnResponse)
        revision = response.header.revision
        for position, (op_id, key, value) in enumerate(zip(op_ids, keys, values, strict=True)):
            if response.succeeded:
                self.last_seen[key] = (value, revision)
                self.history.ok(op_id, index=revision, succeeded=True, time_s=trio.current_time())
                continue
            read = _read_kvs(list(response.responses[position].response_range.kvs))
            self.last_seen[key] = (read.output_value, read.index or 0)
            self.history.ok(
                op_id, output_value=read.output_value, index=read.index, succeeded=False,
                header_revision=revision, time_s=trio.current_time(),
            )  # fmt: skip
        return True

    def _remember(self, kind: OpKind, key: str, value: str | None, outcome: _Outcome) -> None:
        """What the client now believes of the key, for its next compare."""
        wrote = kind is OpKind.PUT or (kind is OpKind.TXN and outcome.succeeded)
        if wrote and outcome.index is not None:
            self.last_seen[key] = (value, outcome.index)
        elif kind is OpKind.DELETE_RANGE:
            self.last_seen[key] = (None, 0)
        elif kind in (OpKind.RANGE, OpKind.SERIAL_RANGE, OpKind.TXN):
            self.last_seen[key] = (outcome.output_value, outcome.index or 0)


def build_request(
    kind: OpKind, key: str, value: str | None, prev_value: str | None, prev_index: int | None
) -> Message:
    """The RPC request of one operation on one key."""
    name = key.encode()
    match kind:
        case OpKind.RANGE:
            return rpc_pb2.RangeRequest(key=name)
        case OpKind.SERIAL_RANGE:
            return rpc_pb2.RangeRequest(key=name, serializable=True)
        case OpKind.PUT:
            assert value is not None
            return rpc_pb2.PutRequest(key=name, value=value.encode())
        case OpKind.DELETE_RANGE:
            return rpc_pb2.DeleteRangeRequest(key=name)
        case OpKind.TXN:
            assert value is not None
            if prev_value is not None:
                compare = rpc_pb2.Compare(
                    result=rpc_pb2.Compare.EQUAL,
                    target=rpc_pb2.Compare.VALUE,
                    key=name,
                    value=prev_value.encode(),
                )
            else:
                assert prev_index is not None
                compare = rpc_pb2.Compare(
                    result=rpc_pb2.Compare.EQUAL,
                    target=rpc_pb2.Compare.MOD,
                    key=name,
                    mod_revision=prev_index,
                )
            put = rpc_pb2.PutRequest(key=name, value=value.encode())
            return rpc_pb2.TxnRequest(
                compare=[compare],
                success=[rpc_pb2.RequestOp(request_put=put)],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=name))],
            )
    raise AssertionError(kind)


def build_group_txn(compares: Sequence[tuple[str, int]], values: Sequence[str]) -> Message:
    """``If`` every key's mod_revision is its compare's, put every key its value, else range
    every key (in the compares' order)."""
    names = [key.encode() for key, _ in compares]
    return rpc_pb2.TxnRequest(
        compare=[
            rpc_pb2.Compare(
                result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.MOD, key=name,
                mod_revision=revision,
            )
            for name, (_, revision) in zip(names, compares, strict=True)
        ],
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=name, value=value.encode()))
            for name, value in zip(names, values, strict=True)
        ],
        failure=[
            rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=name)) for name in names
        ],
    )  # fmt: skip


def _read_kvs(kvs: Sequence[kv_pb2.KeyValue]) -> _Outcome:
    if not kvs:
        return _Outcome()
    return _Outcome(output_value=kvs[0].value.decode(), index=kvs[0].mod_revision)


def read_range(response: Message) -> _Outcome:
    """A range of one key: its value and mod_revision, or absent."""
    assert isinstance(response, rpc_pb2.RangeResponse)
    return _read_kvs(list(response.kvs))


def read_put(response: Message) -> _Outcome:
    """A put made the header's revision."""
    assert isinstance(response, rpc_pb2.PutResponse)
    return _Outcome(index=response.header.revision)


def read_delete(response: Message) -> _Outcome:
    """A delete that deleted the key made the header's revision; one that deleted nothing made
    none."""
    assert isinstance(response, rpc_pb2.DeleteRangeResponse)
    if response.deleted:
        return _Outcome(index=response.header.revision, succeeded=True)
    return _Outcome(succeeded=False)


def read_txn(response: Message) -> _Outcome:
    """A txn that succeeded made the header's revision; one that did not read the key."""
    assert isinstance(response, rpc_pb2.TxnResponse)
    if response.succeeded:
        return _Outcome(index=response.header.revision, succeeded=True)
    read = _read_kvs(list(response.responses[0].response_range.kvs))
    return _Outcome(read.output_value, read.index, succeeded=False)


_CALLS: Final[dict[OpKind, tuple[str, type[Message], Callable[[Message], _Outcome]]]] = {
    OpKind.RANGE: (RANGE_PATH, rpc_pb2.RangeResponse, read_range),
    OpKind.SERIAL_RANGE: (RANGE_PATH, rpc_pb2.RangeResponse, read_range),
    OpKind.PUT: (PUT_PATH, rpc_pb2.PutResponse, read_put),
    OpKind.DELETE_RANGE: (DELETE_RANGE_PATH, rpc_pb2.DeleteRangeResponse, read_delete),
    OpKind.TXN: (TXN_PATH, rpc_pb2.TxnResponse, read_txn),
}


async def run_v3_workload(
    cluster: SimCluster,
    history: History,
    *,
    options: V3WorkloadOptions,
    rng: Random,
    stop_at_s: float,
    operations_max: int | None = None,
) -> list[V3Client]:
    """Run every v3 client until ``stop_at_s``; the clients (for their counters)."""
    clients = [
        V3Client(number, cluster, history, options, Random(rng.getrandbits(64)))
        for number in range(1, options.clients + 1)
    ]
    return await run_clients(clients, stop_at_s, operations_max)
