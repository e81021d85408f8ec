"""The composition root of a real member: TCP (and TLS), RocksDB, the wall clock.

This is the one place that picks the real implementations (the simulator
picks simulated ones): a TcpNetwork (wrapped by ``net.tls.ServingNetwork`` for
TLS and peer byte counts), a RocksKeyValueStore in the data directory with
the ``--quota-backend-bytes`` guard, a clock whose epoch is the machine's wall
clock at start, and a random generator seeded from the operating system.

Beside the member it runs what etcd's server runs beside its Raft node: the
``/metrics`` exposition (client port and ``--listen-metrics-urls``), the
auto-compactor (``actors.compactor``), and the ``--enable-v2`` switch. The
flags themselves are read by ``troika.serve_flags`` (etcd's names, meaning and
``ETCD_*`` variables); :meth:`ServeOptions.from_flags` maps them here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from random import Random, SystemRandom

import trio

from actors.api_backend import CLUSTER_VERSION, SERVER_VERSION, MemberV2Backend
from actors.auth_backend import in_thread
from actors.auth_tokens import (
    BCRYPT_COST_DEFAULT,
    SIMPLE_TOKEN_TTL_S_DEFAULT,
    AuthConfig,
    parse_auth_token,
)
from actors.bootstrap import IDENTITY_KEY, MemberConfig, open_state
from actors.client_api import MAX_REQUEST_BYTES_MAX, serve_client_api
from actors.clock import TrioClock
from actors.compactor import run_compactor
from actors.join import fetch_join_identity
from actors.member import BoundAddresses, Member, NoLeader, RequestTimeout
from actors.membership import parse_initial_cluster
from actors.metrics import CONTENT_TYPE, DiskTimings, MemberMetrics
from actors.raft_actor import NotLeader
from actors.usage import UsageCollector, recorder_of
from net.etcdpb import raft_internal_pb2, rpc_pb2
from net.http.messages import Handler, Request, Response, StreamingResponse, plain_text
from net.http.server import HttpServer
from net.network import address_from_url
from net.tcp import TcpNetwork
from net.tls import (
    ServingNetwork,
    TlsFiles,
    make_self_signed,
    peer_client_context,
    server_context,
)
from net.v2api import V2Api
from net.v3 import errors
from net.v3.errors import RpcError
from net.v3.service import MAX_REQUEST_BYTES_DEFAULT, MAX_TXN_OPS_DEFAULT, ServiceLimits
from storage.kv import RocksKeyValueStore, WriteBatch
from storage.space import QUOTA_BACKEND_BYTES_DEFAULT, SpaceGuard
from troika.serve_flags import ParsedFlags, compaction_retention_s
from troika.systemd_notify import notify_when_ready

log = logging.getLogger(__name__)

QUOTA_DISABLED_BYTES = 1 << 62
"""What a negative ``--quota-backend-bytes`` (etcd: no quota) becomes in the guard."""
QUOTA_WARNING_BYTES = 8 * 1024**3
"""etcd warns past this quota (its suggested maximum)."""
NO_TLS = TlsFiles()


@dataclass(frozen=True)
class ServeOptions:
    """``troika serve`` flags, named as etcd's (``troika.serve_flags`` lists them all)."""

    name: str = "default"
    data_dir: str = ""
    listen_client_urls: tuple[str, ...] = ("http://localhost:2379",)
    advertise_client_urls: tuple[str, ...] = ("http://localhost:2379",)
    listen_peer_urls: tuple[str, ...] = ("http://localhost:2380",)
    initial_advertise_peer_urls: tuple[str, ...] = ("http://localhost:2380",)
    initial_cluster: str = ""
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = 100_000
    max_txn_ops: int = MAX_TXN_OPS_DEFAULT
    max_request_bytes: int = MAX_REQUEST_BYTES_DEFAULT
    learner_linearizable_reads: bool = False
    learners_max: int = 1
    """``--troika-max-learners`` (beyond etcd; its ``maxLearners`` is 1)."""
    """``--troika-learner-linearizable-reads`` (beyond etcd; docs/beyond-etcd.md)."""
    watch_progress_notify_interval_s: float = 600.0
    enable_v2: bool = True
    quota_backend_bytes: int = 0
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: float = 0.0
    """Seconds (periodic) or revisions (revision); 0 is off."""
    listen_metrics_urls: tuple[str, ...] = ()
    client_tls: TlsFiles = NO_TLS
    peer_tls: TlsFiles = NO_TLS
    auth_token: str = "simple"
    bcrypt_cost: int = BCRYPT_COST_DEFAULT
    auth_token_ttl_s: int = SIMPLE_TOKEN_TTL_S_DEFAULT

    @classmethod
    def from_flags(cls, flags: ParsedFlags) -> ServeOptions:
        """The options of parsed etcd flags (``troika.serve_flags.parse``)."""
        return cls(
            name=flags.text("name"),
            data_dir=flags.text("data-dir"),
            listen_client_urls=flags.urls("listen-client-urls"),
            advertise_client_urls=flags.urls("advertise-client-urls"),
            listen_peer_urls=flags.urls("listen-peer-urls"),
            initial_advertise_peer_urls=flags.urls("initial-advertise-peer-urls"),
            initial_cluster=flags.text("initial-cluster"),
            initial_cluster_state=flags.text("initial-cluster-state"),
            initial_cluster_token=flags.text("initial-cluster-token"),
            heartbeat_interval_ms=flags.number("heartbeat-interval"),
            election_timeout_ms=flags.number("election-timeout"),
            snapshot_count=flags.number("snapshot-count"),
            max_txn_ops=flags.number("max-txn-ops"),
            max_request_bytes=flags.number("max-request-bytes"),
            learner_linearizable_reads=flags.flag("troika-learner-linearizable-reads"),
            learners_max=flags.number("troika-max-learners"),
            watch_progress_notify_interval_s=flags.seconds(
                "experimental-watch-progress-notify-interval"
            ),
            enable_v2=flags.flag("enable-v2"),
            quota_backend_bytes=flags.number("quota-backend-bytes"),
            auto_compaction_mode=flags.text("auto-compaction-mode"),
            auto_compaction_retention=compaction_retention_s(flags),
            listen_metrics_urls=flags.urls("listen-metrics-urls"),
            client_tls=TlsFiles(
                flags.text("cert-file"),
                flags.text("key-file"),
                flags.text("trusted-ca-file"),
                flags.flag("client-cert-auth"),
                flags.flag("auto-tls"),
            ),
            peer_tls=TlsFiles(
                flags.text("peer-cert-file"),
                flags.text("peer-key-file"),
                flags.text("peer-trusted-ca-file"),
                flags.flag("peer-client-cert-auth"),
                flags.flag("peer-auto-tls"),
            ),
            auth_token=flags.text("auth-token"),
            bcrypt_cost=flags.number("bcrypt-cost"),
            auth_token_ttl_s=flags.number("auth-token-ttl"),
        )

    def auth_config(self) -> AuthConfig:
        """``--auth-token``, ``--bcrypt-cost``, ``--auth-token-ttl`` (key files read now).

        Raises:
            AuthConfigError: a malformed ``--auth-token``.
        """
        return parse_auth_token(
            self.auth_token, token_ttl_s=self.auth_token_ttl_s, bcrypt_cost=self.bcrypt_cost
        )

    def data_path(self) -> Path:
        """``--data-dir``, or etcd's default ``NAME.etcd``."""
        return Path(self.data_dir or f"{self.name}.etcd")

    def quota_bytes(self) -> int:
        """The guard's quota: etcd's 2 GiB for 0, none (a huge bound) when negative."""
        if self.quota_backend_bytes == 0:
            return QUOTA_BACKEND_BYTES_DEFAULT
        if self.quota_backend_bytes < 0:
            return QUOTA_DISABLED_BYTES
        return self.quota_backend_bytes

    def service_limits(self) -> ServiceLimits:
        """``--max-txn-ops``, ``--max-request-bytes`` and whether learners serve
        linearizable reads.

        Raises:
            ValueError: a limit out of range.
        """
        if self.max_request_bytes > MAX_REQUEST_BYTES_MAX:
            raise ValueError(f"--max-request-bytes must be at most {MAX_REQUEST_BYTES_MAX}")
        return ServiceLimits(
            self.max_txn_ops,
            self.max_request_bytes,
            self.learner_linearizable_reads,
            self.learners_max,
        )

    def member_config(self) -> MemberConfig:
        """The member's configuration from the flags.

        Raises:
            ValueError: a malformed URL or cluster list, or inconsistent timing.
        """
        initial = self.initial_cluster or f"{self.name}={self.initial_advertise_peer_urls[0]}"
        if self.election_timeout_ms < 5 * self.heartbeat_interval_ms:
            raise ValueError("--election-timeout must be at least 5 times --heartbeat-interval")
        return MemberConfig(
            name=self.name,
            initial_cluster=parse_initial_cluster(initial),
            initial_cluster_state=self.initial_cluster_state,
            initial_cluster_token=self.initial_cluster_token,
            advertise_peer_urls=self.initial_advertise_peer_urls,
            advertise_client_urls=self.advertise_client_urls,
            listen_peer_addresses=tuple(address_from_url(url) for url in self.listen_peer_urls),
            listen_client_addresses=tuple(address_from_url(url) for url in self.listen_client_urls),
            tick_interval_s=self.heartbeat_interval_ms / 1000,
            election_ticks=max(2, self.election_timeout_ms // self.heartbeat_interval_ms),
            snapshot_every_entries=self.snapshot_count,
            watch_progress_notify_interval_s=self.watch_progress_notify_interval_s,
        )

    def peer_urls(self) -> tuple[str, ...]:
        """Every peer URL this member listens on, advertises or dials."""
        cluster = parse_initial_cluster(
            self.initial_cluster or f"{self.name}={self.initial_advertise_peer_urls[0]}"
        )
        dialled = tuple(url for urls in cluster.values() for url in urls)
        return (*self.listen_peer_urls, *self.initial_advertise_peer_urls, *dialled)

    def network(self) -> ServingNetwork:
        """TCP, with TLS on the ``https://`` listeners and towards ``https://`` peers.

        Raises:
            TlsConfigError: a TLS flag that cannot be used (a missing file, no certificate).
        """
        data = self.data_path()
        contexts: dict[str, ssl.SSLContext] = {}
        client_urls = (*self.listen_client_urls, *self.listen_metrics_urls)
        if any(url.startswith("https://") for url in client_urls):
            client = self.client_tls
            if client.empty() and client.auto_tls:
                client = _auto(client, data / "fixtures" / "client", self.listen_client_urls)
            context = server_context(client)
            contexts.update((address_from_url(u), context) for u in client_urls if _tls(u))
        peer_context = None
        if any(url.startswith("https://") for url in self.peer_urls()):
            peer = self.peer_tls
            if peer.empty() and peer.auto_tls:
                peer = _auto(peer, data / "fixtures" / "peer", self.listen_peer_urls)
            if any(_tls(url) for url in self.listen_peer_urls):
                context = server_context(peer, "peer-")
                contexts.update(
                    (address_from_url(u), context) for u in self.listen_peer_urls if _tls(u)
                )
            peer_context = peer_client_context(peer)
        peers = [address_from_url(url) for url in self.listen_peer_urls]
        return ServingNetwork(
            TcpNetwork(), server_contexts=contexts, peer_context=peer_context, peer_addresses=peers
        )


def _tls(url: str) -> bool:
    return url.startswith("https://")


def _auto(files: TlsFiles, directory: Path, urls: tuple[str, ...]) -> TlsFiles:
    hosts = [address_from_url(url).rpartition(":")[0].strip("[]") for url in urls]
    made = make_self_signed(directory, hosts)
    return dataclasses.replace(made, client_cert_auth=files.client_cert_auth)


# -- HTTP beside the APIs --------------------------------------------------------------------


def v2_disabled(handler: Handler) -> Handler:
    """``--enable-v2=false``: every ``/v2`` path answers Go's "404 page not found", as etcd 3.4
    does when it does not serve the v2 API; ``/version``, ``/health``, ``/v3`` go on."""

    async def routed(request: Request) -> Response | StreamingResponse:
        if request.path == "/v2" or request.path.startswith("/v2/"):
            return plain_text(404, "404 page not found")
        return await handler(request)

    return routed


def with_metrics(metrics: MemberMetrics, handler: Handler) -> Handler:
    """``GET /metrics`` answered from ``metrics``; anything else by ``handler``."""

    async def routed(request: Request) -> Response | StreamingResponse:
        if request.path == "/metrics":
            return metrics_response(metrics, request)
        return await handler(request)

    return routed


def metrics_response(metrics: MemberMetrics, request: Request) -> Response:
    """The exposition (HEAD: the headers; other methods get it too, as Go's promhttp)."""
    del request
    return Response(200, (("Content-Type", CONTENT_TYPE),), metrics.exposition())


def metrics_listener_handler(member: Member, metrics: MemberMetrics) -> Handler:
    """What ``--listen-metrics-urls`` serve: ``/metrics`` and ``/health`` (etcd's answer),
    404 for everything else."""
    health = V2Api(MemberV2Backend(member))

    async def handle(request: Request) -> Response | StreamingResponse:
        if request.path == "/metrics":
            return metrics_response(metrics, request)
        if request.path == "/health":
            return await health(request)
        return plain_text(404, "404 page not found")

    return handle


def client_http_wrapper(
    options: ServeOptions, metrics: MemberMetrics
) -> Callable[[Handler], Handler]:
    """The client port's HTTP routes that the composition root adds."""

    def wrap(handler: Handler) -> Handler:
        routed = handler if options.enable_v2 else v2_disabled(handler)
        return with_metrics(metrics, routed)

    return wrap


async def compact_to(member: Member, revision: int) -> bool:
    """Propose a compaction to ``revision``; True once done or already compacted."""
    request = raft_internal_pb2.InternalRaftRequest(
        compaction=rpc_pb2.CompactionRequest(revision=revision)
    )
    try:
        await member.propose_v3(request)
    except RpcError as error:
        if error == errors.compacted():
            return True
        log.warning("auto compaction at revision %d failed: %s", revision, error)
        return False
    except (RequestTimeout, NoLeader, NotLeader) as error:
        log.warning("auto compaction at revision %d failed: %s", revision, error)
        return False
    return True


# -- running ---------------------------------------------------------------------------------


class TimedStore(RocksKeyValueStore):
    """RocksDB with each batch and each fsync timed for etcd's disk histograms."""

    def __init__(self, path: str, *, space: SpaceGuard, timings: DiskTimings) -> None:
        super().__init__(path, space=space)
        self.timings = timings

    def apply(self, batch: WriteBatch) -> None:
        started_s = time.perf_counter()
        super().apply(batch)
        self.timings.commit.observe(time.perf_counter() - started_s)

    async def sync(self) -> None:
        started_s = time.perf_counter()
        await super().sync()
        self.timings.fsync.observe(time.perf_counter() - started_s)


def open_store(options: ServeOptions, timings: DiskTimings) -> TimedStore:
    """The member's RocksDB store, its space guard holding ``--quota-backend-bytes``."""
    path = options.data_path() / "db"
    guard = SpaceGuard.from_environment(path)
    if options.quota_backend_bytes != 0:
        guard = dataclasses.replace(guard, quota_bytes=options.quota_bytes())
    if options.quota_backend_bytes < 0:
        log.warning("disabling backend quota (--quota-backend-bytes < 0)")
    elif options.quota_bytes() > QUOTA_WARNING_BYTES:
        log.warning(
            "--quota-backend-bytes %d exceeds the suggested maximum %d",
            options.quota_bytes(),
            QUOTA_WARNING_BYTES,
        )
    return TimedStore(str(path), space=guard, timings=timings)


async def serve(
    options: ServeOptions,
    *,
    task_status: trio.TaskStatus[BoundAddresses] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one member until cancelled; report its bound peer and client addresses."""
    config = options.member_config()
    auth = options.auth_config()
    options.data_path().mkdir(parents=True, exist_ok=True)
    network = options.network()
    timings = DiskTimings()
    kv = open_store(options, timings)
    try:
        join_identity = None
        if config.initial_cluster_state == "existing" and kv.get(IDENTITY_KEY) is None:
            join_identity = await fetch_join_identity(network, config)
        state = await open_state(config, kv, join_identity)
        clock = TrioClock(time.time_ns())
        rng = Random(secrets.randbits(64))
        member = Member(config, state, network=network, kv=kv, clock=clock, rng=rng)
        member.auth.configure(
            auth,
            rng=SystemRandom(),  # salts and token letters: unpredictable in production
            hasher=in_thread,
            client_cert_auth=options.client_tls.client_cert_auth,
        )
        metrics = MemberMetrics(
            member,
            quota_bytes=kv.space.quota_bytes,
            versions=(SERVER_VERSION, CLUSTER_VERSION),
            peer_bytes=network.tally.snapshot,
            disk=timings,
        )
        metrics.registry.register(UsageCollector(recorder_of(member)))  # issue 16
        client_api = partial(
            serve_client_api,
            limits=options.service_limits(),
            wrap_http=client_http_wrapper(options, metrics),
            wrap_methods=metrics.instrument,
        )
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(member.run, client_api)
            nursery.start_soon(notify_when_ready, member.published, os.environ)  # Type=notify
            for url in options.listen_metrics_urls:
                server = HttpServer(network, metrics_listener_handler(member, metrics))
                await nursery.start(server.serve, address_from_url(url))
            nursery.start_soon(
                partial(
                    run_compactor,
                    options.auto_compaction_mode,
                    options.auto_compaction_retention,
                    is_leader=member.is_leader,
                    revision=lambda: member.machine.mvcc.current_revision,
                    compact=partial(compact_to, member),
                    compacted=lambda: member.machine.mvcc.compact_revision,
                    registry=metrics.registry,
                )
            )
            task_status.started(bound)
    finally:
        kv.close()


async def serve_until_signalled(options: ServeOptions) -> None:
    """Run one member until SIGINT or SIGTERM, then stop it cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, options)
            async for number in signals:
                log.info("stopping on signal %d", number)
                nursery.cancel_scope.cancel()
                break
