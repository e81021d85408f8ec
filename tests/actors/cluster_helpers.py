"""An in-process cluster of real members over an in-memory network, for tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from random import Random

import trio

from actors.bootstrap import MemberConfig, open_state
from actors.clock import TrioClock
from actors.member import BoundAddresses, Member
from storage.kv import MemoryKeyValueStore
from storage.v2store.model import V2Request
from tests.net.memory_network import MemoryNetwork

EPOCH_NS = 1_700_000_000 * 10**9


@dataclass
class InProcessCluster:
    """Members keyed by name, with their stores and a scope each to stop them."""

    network: MemoryNetwork
    nursery: trio.Nursery
    members: dict[str, Member] = field(default_factory=dict)
    stores: dict[str, MemoryKeyValueStore] = field(default_factory=dict)
    scopes: dict[str, trio.CancelScope] = field(default_factory=dict)
    initial: dict[str, list[str]] = field(default_factory=dict)
    snapshot_every_entries: int = 10_000
    snapshot_catch_up_entries: int = 5_000

    def config(self, name: str, state: str = "new") -> MemberConfig:
        peer_url = self.initial[name][0]
        return MemberConfig(
            name=name,
            initial_cluster=self.initial,
            initial_cluster_state=state,
            advertise_peer_urls=(peer_url,),
            advertise_client_urls=(peer_url.replace(":23", ":24"),),
            listen_peer_addresses=(peer_url.removeprefix("http://"),),
            request_timeout_s=5.0,
            snapshot_every_entries=self.snapshot_every_entries,
            snapshot_catch_up_entries=self.snapshot_catch_up_entries,
        )

    async def start(self, name: str, state: str = "new") -> Member:
        kv = self.stores.setdefault(name, MemoryKeyValueStore())
        opened = await open_state(self.config(name, state), kv)
        member = Member(
            self.config(name, state),
            opened,
            network=self.network,
            kv=kv,
            clock=TrioClock(EPOCH_NS),
            rng=Random(sum(map(ord, name))),
        )
        scope = trio.CancelScope()

        async def run(
            task_status: trio.TaskStatus[BoundAddresses] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            with scope:
                await member.run(task_status=task_status)

        await self.nursery.start(run)
        self.members[name] = member
        self.scopes[name] = scope
        return member

    def stop(self, name: str) -> None:
        """Stop a member as a crash would: nothing more is written."""
        self.scopes.pop(name).cancel()
        self.members.pop(name)

    async def leader(self, timeout_s: float = 30.0) -> Member:
        with trio.fail_after(timeout_s):
            while True:
                for member in self.members.values():
                    if member.is_leader():
                        return member
                await trio.sleep(0.05)


async def start_cluster(nursery: trio.Nursery, size: int = 3, **options: int) -> InProcessCluster:
    """Found a cluster of ``size`` members named m1..mN (``options``: snapshot settings)."""
    cluster = InProcessCluster(MemoryNetwork(), nursery, **options)  # type: ignore[arg-type]
    cluster.initial = {f"m{i}": [f"http://127.0.0.1:{2380 + i}"] for i in range(1, size + 1)}
    for name in cluster.initial:
        await cluster.start(name)
    return cluster


def put(path: str, value: str, **fields: object) -> V2Request:
    """A v2 set."""
    return V2Request(method="PUT", path=path, value=value, **fields)  # type: ignore[arg-type]
