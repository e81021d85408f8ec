"""Throughput of the Raft core alone: a 3-member cluster in memory, no faults.

Measures how many proposals per second the core commits and applies on every
member when nothing but the core's own work (and MemoryStorage) costs time:
no sockets, no fsync, no Trio. Each round the leader takes ``batch``
proposals (one ``propose`` call each, so the core's own batching into one
append per follower is what is measured), then every Ready is processed and
every message delivered until the round is committed everywhere.

    python -m bench.raft_core --proposals 100000 --batch 1 16 256
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from random import Random

from actors.raft import Config, Entry, MemoryStorage, Role
from sim.raft_cluster import RaftCluster
from sim.raft_invariants import InvariantChecker


class NoChecks(InvariantChecker):
    """The benchmark measures the core, not the checker."""

    def on_persist(self, node_id: int, storage: MemoryStorage, entries: Sequence[Entry]) -> None:
        pass

    def on_apply(self, node_id: int, index: int, state_hash: bytes) -> None:
        pass

    def observe(self, cluster: RaftCluster) -> None:
        pass


@dataclass(frozen=True)
class CoreResult:
    """One measured configuration."""

    members: int
    batch: int
    payload_bytes: int
    proposals: int
    seconds: float
    proposals_per_second: float
    rounds: int


def elect(cluster: RaftCluster) -> int:
    """Elect member 1 and commit its first entry."""
    cluster.node(1).campaign()
    cluster.stabilize()
    assert cluster.node(1).raft.role is Role.LEADER
    return 1


def measure(members: int, batch: int, payload_bytes: int, proposals: int) -> CoreResult:
    """Commit ``proposals`` entries in rounds of ``batch`` and time it."""
    ids = range(1, members + 1)
    cluster = RaftCluster(
        ids,
        Random(1),
        config_factory=lambda node, applied: Config(node, applied_index=applied),
        checker=NoChecks(),
    )
    leader = elect(cluster)
    node = cluster.node(leader)
    payload = b"x" * payload_bytes
    target = node.raft.log.last_index() + proposals
    rounds = 0
    started = time.perf_counter()
    sent = 0
    while sent < proposals:
        for _ in range(min(batch, proposals - sent)):
            node.propose(payload)
            sent += 1
        cluster.stabilize()
        rounds += 1
    seconds = time.perf_counter() - started
    for member in cluster.members.values():
        assert member.app.applied_index == target, (member.app.applied_index, target)
    return CoreResult(
        members, batch, payload_bytes, proposals, seconds, proposals / seconds, rounds
    )


def main(argv: list[str] | None = None) -> list[CoreResult]:
    """Run the benchmark from the command line and print a table."""
    parser = argparse.ArgumentParser(prog="python -m bench.raft_core", description=__doc__)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--proposals", type=int, default=50_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--payload-bytes", type=int, default=128)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = [
        measure(args.members, batch, args.payload_bytes, args.proposals) for batch in args.batch
    ]
    header = ("members", "batch", "payload B", "proposals", "seconds", "commits/s")
    print("{:>7} {:>6} {:>9} {:>9} {:>8} {:>10}".format(*header))
    for r in results:
        print(
            f"{r.members:>7} {r.batch:>6} {r.payload_bytes:>9} {r.proposals:>9} "
            f"{r.seconds:>8.2f} {r.proposals_per_second:>10,.0f}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([asdict(r) for r in results], handle, indent=2)
    return results


if __name__ == "__main__":
    main()
