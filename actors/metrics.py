"""A member's Prometheus metrics, named as etcd 3.4 names them, for ``/metrics``.

Why
---

An operator who swaps etcd for troika keeps the Grafana dashboards and alert rules, which
query etcd's metric names (``etcd_server_has_leader``, ``etcd_server_proposals_*``,
``etcd_mvcc_db_total_size_in_bytes``, ``grpc_server_handled_total``...). troika exports those
names where it has the same quantity, with etcd's types and label names, through the
maintained ``prometheus_client`` library (its text exposition, version 0.0.4 as etcd serves).

How
---

- Member state (leader, indexes, pending proposals, store size, key count, revision) is read
  when scraped, by a custom collector (:class:`MemberCollector`): nothing in the actors is
  instrumented for it, and nothing is computed between scrapes.
- gRPC calls are counted by wrapping the method table (:func:`instrument_methods`): started,
  handled by code, messages received and sent, labelled by service, method, type and code as
  go-grpc-prometheus does. Labels come from the fixed method table and gRPC's 17 codes, so the
  number of series is bounded (no key, client or peer address is ever a label value).
- Peer traffic is counted by the composition root's network wrapper (``net.tls``'s
  :class:`~net.tls.CountingNetwork`) per peer address; here each address is shown as the
  member id it belongs to (etcd's ``To`` label); an address of no known member is ``unknown``.
- Process metrics (``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
  ``process_open_fds``...) come from the library's ProcessCollector, on Linux.

Every member has its own registry, so several members in one process (the tests) never mix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Final

import trio
from google.protobuf.message import Message
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from net.v3.errors import RpcError, StatusCode
from net.v3.methods import (
    CallContext,
    Method,
    Methods,
    SendMessage,
    StreamMethod,
    UnaryMethod,
)

if TYPE_CHECKING:
    from actors.member import Member

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""What etcd 3.4 answers /metrics with: ``text/plain; version=0.0.4; charset=utf-8``."""

GRPC_CODE_NAMES: Final[Mapping[StatusCode, str]] = {
    StatusCode.OK: "OK",
    StatusCode.CANCELLED: "Canceled",
    StatusCode.UNKNOWN: "Unknown",
    StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    StatusCode.NOT_FOUND: "NotFound",
    StatusCode.ALREADY_EXISTS: "AlreadyExists",
    StatusCode.PERMISSION_DENIED: "PermissionDenied",
    StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    StatusCode.ABORTED: "Aborted",
    StatusCode.OUT_OF_RANGE: "OutOfRange",
    StatusCode.UNIMPLEMENTED: "Unimplemented",
    StatusCode.INTERNAL: "Internal",
    StatusCode.UNAVAILABLE: "Unavailable",
    StatusCode.DATA_LOSS: "DataLoss",
    StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
"""grpc-go's names of the codes, as the ``grpc_code`` label spells them."""

STREAM_TYPES: Final[Mapping[str, str]] = {
    "Watch": "bidi_stream",
    "LeaseKeepAlive": "bidi_stream",
    "Snapshot": "server_stream",
    "Observe": "server_stream",
}
"""``grpc_type`` of the streaming methods (any other stream is counted as bidi_stream)."""

GRPC_LABELS: Final = ("grpc_type", "grpc_service", "grpc_method")


class GrpcCounters:
    """go-grpc-prometheus's server counters, in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            GRPC_LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*GRPC_LABELS, "grpc_code"),
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            GRPC_LABELS,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            GRPC_LABELS,
            registry=registry,
        )


def split_path(path: str) -> tuple[str, str]:
    """``/etcdserverpb.KV/Range`` into (``etcdserverpb.KV``, ``Range``)."""
    _, service, method = path.split("/", 2)
    return service, method


def instrument_methods(methods: Methods, counters: GrpcCounters) -> Methods:
    """The same methods, each counted in ``counters`` (start, end with its code, messages)."""
    return {path: _instrumented(path, method, counters) for path, method in methods.items()}


def _code_of(error: BaseException | None) -> StatusCode:
    if error is None:
        return StatusCode.OK
    if isinstance(error, RpcError):
        return error.code
    if isinstance(error, trio.Cancelled):
        return StatusCode.CANCELLED
    return StatusCode.UNKNOWN


def _instrumented(path: str, method: Method, counters: GrpcCounters) -> Method:
    service, name = split_path(path)
    if isinstance(method, UnaryMethod):
        labels = ("unary", service, name)
        unary = method.handler

        async def call(request: Message, context: CallContext) -> Message:
            counters.started.labels(*labels).inc()
            counters.received.labels(*labels).inc()
            error: BaseException | None = None
            try:
                response = await unary(request, context)
            except BaseException as raised:
                error = raised
                raise
            finally:
                counters.handled.labels(*labels, GRPC_CODE_NAMES[_code_of(error)]).inc()
            counters.sent.labels(*labels).inc()
            return response

        return UnaryMethod(method.request_type, call)
    stream_labels = (STREAM_TYPES.get(name, "bidi_stream"), service, name)
    stream = method.handler

    async def call_stream(
        requests: AsyncIterator[Message], send: SendMessage, context: CallContext
    ) -> None:
        counters.started.labels(*stream_labels).inc()
        received = counters.received.labels(*stream_labels)
        sent = counters.sent.labels(*stream_labels)

        async def counted_requests() -> AsyncIterator[Message]:
            async for request in requests:
                received.inc()
                yield request

        async def counted_send(message: Message) -> None:
            await send(message)
            sent.inc()

        error: BaseException | None = None
        try:
            await stream(counted_requests(), counted_send, context)
        except BaseException as raised:
            error = raised
            raise
        finally:
            code = GRPC_CODE_NAMES[_code_of(error)]
            counters.handled.labels(*stream_labels, code).inc()

    return StreamMethod(method.request_type, call_stream)


PeerBytes = Callable[[], tuple[Mapping[str, int], Mapping[str, int]]]
"""(bytes sent by peer address, bytes received by peer address) so far."""


class MemberCollector(Collector):
    """Reads a member's state at scrape time into etcd's metric families."""

    def __init__(
        self,
        member: Member,
        *,
        quota_bytes: int,
        versions: tuple[str, str],
        peer_bytes: PeerBytes | None = None,
    ) -> None:
        self.member = member
        self.quota_bytes = quota_bytes
        self.versions = versions
        self.peer_bytes = peer_bytes

    def collect(self) -> Iterator[Metric]:
        yield from self._server()
        yield from self._mvcc()
        yield from self._network()

    def _server(self) -> Iterator[Metric]:
        member = self.member
        status = member.status
        yield _gauge(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            float(status.leader_id != 0),
        )
        yield _gauge(
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            float(member.is_leader()),
        )
        yield _gauge(
            "etcd_server_is_learner",
            "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            float(member.is_learner()),
        )
        yield CounterMetricFamily(
            "etcd_server_leader_changes_seen",
            "The number of leader changes seen.",
            value=status.leader_changes,
        )
        yield _gauge(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            float(status.commit_index),
        )
        yield _gauge(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            float(member.applied_index()),
        )
        yield _gauge(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            float(member.waiters.proposals()),
        )
        yield CounterMetricFamily(
            "etcd_server_proposals_failed",
            "The total number of failed proposals seen.",
            value=member.proposals_failed,
        )
        yield _gauge(
            "etcd_server_quota_backend_bytes",
            "Current backend storage quota size in bytes.",
            float(self.quota_bytes),
        )
        yield _labelled(
            "etcd_server_id",
            "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
            "server_id",
            f"{member.member_id:x}",
        )
        server_version, cluster_version = self.versions
        yield _labelled(
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            "server_version",
            server_version,
        )
        yield _labelled(
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            "cluster_version",
            ".".join(cluster_version.split(".")[:2]),
        )

    def _mvcc(self) -> Iterator[Metric]:
        machine = self.member.machine
        total_bytes, in_use_bytes = self.member.kv.size_bytes()
        for name in (
            "etcd_mvcc_db_total_size_in_bytes",
            "etcd_debugging_mvcc_db_total_size_in_bytes",
        ):
            yield _gauge(
                name, "Total size of the underlying database physically allocated in bytes.",
                float(total_bytes),
            )  # fmt: skip
        yield _gauge(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            float(in_use_bytes),
        )
        yield _gauge(
            "etcd_debugging_mvcc_keys_total",
            "Total number of keys.",
            float(machine.mvcc.key_count()),
        )
        yield _gauge(
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store.",
            float(machine.mvcc.current_revision),
        )
        yield _gauge(
            "etcd_debugging_mvcc_compact_revision",
            "The revision of the last compaction in store.",
            float(max(0, machine.mvcc.compact_revision)),
        )

    def _network(self) -> Iterator[Metric]:
        if self.peer_bytes is None:
            return
        sent, received = self.peer_bytes()
        ids = self._ids_by_address()
        families = (
            ("etcd_network_peer_sent_bytes", "The total number of bytes sent to peers.", "To",
             sent),
            ("etcd_network_peer_received_bytes", "The total number of bytes received from peers.",
             "From", received),
        )  # fmt: skip
        for name, documentation, label, by_address in families:
            family = CounterMetricFamily(name, documentation, labels=(label,))
            by_id: dict[str, int] = {}
            for address, count in by_address.items():
                key = ids.get(address, "unknown")
                by_id[key] = by_id.get(key, 0) + count
            for key in sorted(by_id):
                family.add_metric((key,), by_id[key])
            if by_id:  # as Go's client: a vector without series is not shown at all
                yield family

    def _ids_by_address(self) -> dict[str, str]:
        ids: dict[str, str] = {}
        for record in self.member.membership.members.values():
            for url in record.peer_urls:
                address = url.partition("://")[2].split("/", 1)[0]
                ids[address] = f"{record.member_id:x}"
        return ids


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(name: str, documentation: str, label: str, value: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=(label,))
    family.add_metric((value,), 1.0)
    return family


DISK_BUCKETS_S: Final = tuple(0.001 * 2**power for power in range(14))
"""etcd's buckets for its disk histograms: 1 ms to about 8 s, doubling."""


class DiskTimings:
    """etcd's two disk latency histograms, fed by the composition root's store wrapper.

    - ``etcd_disk_wal_fsync_duration_seconds``: each fsync of the store's write-ahead log
      (troika's Raft log and applied state share RocksDB's WAL, which is what etcd's WAL
      fsync is: the wait before an append may be acknowledged);
    - ``etcd_disk_backend_commit_duration_seconds``: each write batch applied to RocksDB
      (etcd: each bbolt commit of applied data).
    """

    def __init__(self) -> None:
        self.fsync = Histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            buckets=DISK_BUCKETS_S,
            registry=None,
        )
        self.commit = Histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            buckets=DISK_BUCKETS_S,
            registry=None,
        )


class MemberMetrics:
    """One member's registry: its collector, its gRPC counters and the process metrics."""

    def __init__(
        self,
        member: Member,
        *,
        quota_bytes: int,
        versions: tuple[str, str],
        peer_bytes: PeerBytes | None = None,
        disk: DiskTimings | None = None,
        process: bool = True,
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # etcd's Go client exports no *_created series
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            MemberCollector(
                member, quota_bytes=quota_bytes, versions=versions, peer_bytes=peer_bytes
            )
        )
        self.grpc = GrpcCounters(self.registry)
        if disk is not None:
            self.registry.register(disk.fsync)
            self.registry.register(disk.commit)
        if process:
            ProcessCollector(registry=self.registry)

    def exposition(self) -> bytes:
        """The text exposition of every metric, as etcd's /metrics answers."""
        return generate_latest(self.registry)

    def instrument(self, methods: Methods) -> Methods:
        """``methods`` counted in this registry's gRPC counters."""
        return instrument_methods(methods, self.grpc)
