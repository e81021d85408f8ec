"""An end-of-run invariant: members that applied the same log hold the same MVCC store.

Every member applies the one Raft log to its own v3 MVCC store, so two members at the same
applied index must agree on the current revision, the compact revision and etcd's ``HashKV``
of every retained version (``storage.mvcc.MvccStore.hash_kv``, which covers what a
compaction keeps whether or not its bounded steps have run). The Monitor's entry check
compares the log; this compares what applying it built, so a bug in the applier, in restoring
a snapshot or in reopening the store after a crash shows here even when the log agrees.

The pure core (``disagreement``) compares digests; the shell (``check_mvcc_agreement``) waits,
within a bound of virtual time, for the members to reach one applied index and samples them.

Once they agree, ``agreed_history`` reads one member's retained versions (through the records
it would put in a snapshot, decoded by the store's own codec, not through the event reader the
watch service uses) as the reference that ``sim.watch_checker`` and ``sim.lease_checker`` hold
watchers and leases to, and ``agreed_leases`` its lease table, read in the same instant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import trio

from sim.cluster import MONITOR_INTERVAL_S, SimCluster
from sim.v3_records import Version
from sim.watch_checker import MvccHistory, mvcc_history
from storage.mvcc.codec import RECORD_TAG, decode_record, parse_record_key

AGREEMENT_WAIT_S_MAX: Final = 10.0
"""How long the members get to reach one applied index after recovery (virtual seconds)."""


@dataclass(frozen=True, slots=True)
class MvccDigest:
    """What one member's MVCC store holds, at the index it has applied."""

    applied_index: int
    revision: int
    compact_revision: int
    hash: int

    def describe(self) -> str:
        return (
            f"applied {self.applied_index} revision {self.revision} "
            f"compacted {self.compact_revision} hash {self.hash:08x}"
        )


def disagreement(digests: Mapping[str, MvccDigest]) -> str:
    """The first pair of members at one applied index whose stores differ, as a violation
    text; ``""`` when every such pair agrees."""
    first_at: dict[int, tuple[str, MvccDigest]] = {}
    for name in sorted(digests):
        digest = digests[name]
        known = first_at.setdefault(digest.applied_index, (name, digest))
        if known[1] != digest:
            return (
                f"mvcc agreement: at applied index {digest.applied_index} {known[0]} has "
                f"{known[1].describe()} but {name} has {digest.describe()}"
            )
    return ""


def digest_of(cluster: SimCluster, name: str) -> MvccDigest:
    """A running member's digest, read between write transactions."""
    member = cluster.member(name)
    mvcc = member.machine.mvcc
    hashed = mvcc.hash_kv()
    return MvccDigest(member.applied_index(), hashed.revision, hashed.compact_revision, hashed.hash)


async def check_mvcc_agreement(
    cluster: SimCluster, wait_s_max: float = AGREEMENT_WAIT_S_MAX
) -> str:
    """Wait (at most ``wait_s_max``) for every running member to reach one applied index,
    then compare their stores; compares whatever indexes they share if they never do."""
    digests: dict[str, MvccDigest] = {}
    with trio.move_on_after(wait_s_max):
        while True:
            digests = {name: digest_of(cluster, name) for name in cluster.up()}
            if len({digest.applied_index for digest in digests.values()}) <= 1:
                break
            await trio.sleep(MONITOR_INTERVAL_S)
    return disagreement(digests)


def agreed_history(cluster: SimCluster, name: str) -> MvccHistory:
    """Every retained version of a running member's MVCC store, as events."""
    mvcc = cluster.member(name).machine.mvcc
    prefix = mvcc.prefix
    versions = []
    for key, value in mvcc.snapshot_items():
        if not key.startswith(prefix + RECORD_TAG):
            continue
        main, sub = parse_record_key(prefix, key)
        kv = decode_record(key, value, main)
        version = Version(
            kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease
        )
        versions.append((main, sub, version))
    return mvcc_history(versions, mvcc.compact_revision, mvcc.current_revision)


def agreed_leases(cluster: SimCluster, name: str) -> frozenset[int]:
    """The leases in a running member's lease table."""
    return frozenset(cluster.member(name).machine.leases.ids())
