"""The composition root of a real member: TCP, RocksDB, the wall clock.

This is the one place that picks the real implementations (the simulator
picks simulated ones): a TcpNetwork, a RocksKeyValueStore in the data
directory, a clock whose epoch is the machine's wall clock at start, and a
random generator seeded from the operating system.
"""

from __future__ import annotations

import logging
import secrets
import signal
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from random import Random

import trio

from actors.bootstrap import IDENTITY_KEY, MemberConfig, open_state
from actors.client_api import MAX_REQUEST_BYTES_MAX, serve_client_api
from actors.clock import TrioClock
from actors.join import fetch_join_identity
from actors.member import BoundAddresses, Member
from actors.membership import parse_initial_cluster
from net.network import address_from_url
from net.tcp import TcpNetwork
from net.v3.service import MAX_REQUEST_BYTES_DEFAULT, MAX_TXN_OPS_DEFAULT, ServiceLimits
from storage.kv import RocksKeyValueStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """``troika serve`` flags, named as etcd's."""

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
    snapshot_count: int = 10_000
    max_txn_ops: int = MAX_TXN_OPS_DEFAULT
    max_request_bytes: int = MAX_REQUEST_BYTES_DEFAULT
    watch_progress_notify_interval_s: float = 600.0

    def service_limits(self) -> ServiceLimits:
        """``--max-txn-ops`` and ``--max-request-bytes``.

        Raises:
            ValueError: a limit out of range.
        """
        if self.max_request_bytes > MAX_REQUEST_BYTES_MAX:
            raise ValueError(f"--max-request-bytes must be at most {MAX_REQUEST_BYTES_MAX}")
        return ServiceLimits(self.max_txn_ops, self.max_request_bytes)

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


async def serve(
    options: ServeOptions,
    *,
    task_status: trio.TaskStatus[BoundAddresses] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one member until cancelled."""
    config = options.member_config()
    data_dir = Path(options.data_dir or f"{options.name}.etcd")
    data_dir.mkdir(parents=True, exist_ok=True)
    network = TcpNetwork()
    kv = RocksKeyValueStore(str(data_dir / "db"))
    try:
        join_identity = None
        if config.initial_cluster_state == "existing" and kv.get(IDENTITY_KEY) is None:
            join_identity = await fetch_join_identity(network, config)
        state = await open_state(config, kv, join_identity)
        clock = TrioClock(time.time_ns())
        rng = Random(secrets.randbits(64))
        member = Member(config, state, network=network, kv=kv, clock=clock, rng=rng)
        client_api = partial(serve_client_api, limits=options.service_limits())
        await member.run(client_api, task_status=task_status)
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
