"""The core with asynchronous storage writes: persisting and applying acknowledged apart.

Small cases first (what a Ready holds while earlier parts are unacknowledged),
then randomized clusters (``AsyncRaftCluster``) that interleave taking Readies,
persisting, applying, delivering, crashing and partitioning, with the safety
checks of ``sim.raft_invariants`` after every step and a commit on every member
after healing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from random import Random

import pytest

from actors.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    MemoryStorage,
    MessageType,
    PlantedBug,
    ProposalDropped,
    RawNode,
    Role,
)
from sim.raft_invariants import InvariantViolation
from tests.raft.async_cluster import AsyncRaftCluster


def three_members(**config: object) -> AsyncRaftCluster:
    def make(node_id: int, applied_index: int) -> Config:
        return Config(node_id, applied_index=applied_index, **config)  # type: ignore[arg-type]

    return AsyncRaftCluster([1, 2, 3], Random(1), config_factory=make, snapshot_index=1)


def elect_1(cluster: AsyncRaftCluster) -> None:
    cluster.node(1).campaign()
    cluster.stabilize()
    assert cluster.node(1).raft.role is Role.LEADER


def settle(cluster: AsyncRaftCluster) -> None:
    """Carry out every queued part, take every Ready, deliver everything, until quiet."""
    for _ in range(1000):
        moved = False
        for node_id in cluster.up_ids():
            moved |= cluster.process_ready(node_id) is not None or cluster.busy(node_id)
        if cluster.in_flight:
            cluster.deliver_all()
            moved = True
        if not moved:
            return
    raise InvariantViolation("liveness: the cluster did not settle")


# -- what a Ready holds ------------------------------------------------------------


def test_the_next_ready_holds_only_what_was_not_handed_out() -> None:
    cluster = three_members()
    elect_1(cluster)
    leader = cluster.node(1)
    leader.propose(b"a")
    first = cluster.take_ready(1)
    assert first is not None and first.append is not None
    assert [e.data for e in first.append.entries] == [b"a"]
    leader.propose(b"b")
    second = cluster.take_ready(1)
    assert second is not None and second.append is not None
    assert [e.data for e in second.append.entries] == [b"b"]  # "a" is in flight already
    assert cluster.take_ready(1) is None


def test_a_leader_commits_only_what_it_persisted() -> None:
    cluster = three_members()
    elect_1(cluster)
    leader = cluster.node(1)
    leader.propose(b"a")
    cluster.take_ready(1)
    cluster.isolate(3)
    cluster.deliver_all()
    cluster.process_ready(2)  # one follower persists and acknowledges; the leader has not
    cluster.deliver_all(types=[MessageType.APPEND_RESPONSE])
    last = leader.raft.log.last_index()
    assert leader.raft.log.committed == last - 1
    cluster.persist_next(1)
    assert leader.raft.log.committed == last


def test_committed_entries_wait_until_they_are_durable_here() -> None:
    cluster = three_members()
    elect_1(cluster)
    cluster.node(1).propose(b"a")
    settle(cluster)
    follower = cluster.node(2)
    cluster.node(1).propose(b"b")
    cluster.process_ready(1)
    cluster.deliver_all(types=[MessageType.APPEND])
    cluster.take_ready(2)  # 2 is persisting "b"; 3 persists it and acknowledges
    assert cluster.appends[2]
    cluster.process_ready(3)
    cluster.deliver_all()
    # The leader's next append brings the commit index before 2 persisted "b".
    cluster.process_ready(1)
    cluster.deliver_all(types=[MessageType.APPEND])
    last = follower.raft.log.last_index()
    assert follower.raft.log.committed == last
    ready = cluster.take_ready(2, append=False)
    assert ready is None or ready.apply is None
    cluster.persist_next(2)
    ready = cluster.take_ready(2, append=False)
    assert ready is not None and ready.apply is not None
    assert [e.data for e in ready.apply.committed_entries] == [b"b"]


def test_acknowledgements_wait_for_the_next_append_even_with_nothing_to_write() -> None:
    cluster = three_members()
    elect_1(cluster)
    cluster.node(1).propose(b"a")
    cluster.process_ready(1)
    append = next(m for m in cluster.in_flight if m.recipient == 2)
    cluster.deliver_all()
    cluster.take_ready(2)  # persisting "a": its acknowledgement waits for it
    cluster.in_flight.append(append)  # the same append again: nothing new to write
    cluster.deliver_all()
    ready = cluster.take_ready(2, append=False)
    assert ready is None or not ready.messages
    ready = cluster.take_ready(2)
    assert ready is not None and ready.append is not None
    assert not ready.append.has_write()
    assert [m.type for m in ready.append.messages_after_persist] == [MessageType.APPEND_RESPONSE]


def test_planted_ack_before_sync_sends_acknowledgements_at_once() -> None:
    cluster = three_members(planted_bugs=frozenset({PlantedBug.ACK_BEFORE_SYNC}))
    elect_1(cluster)
    cluster.node(1).propose(b"a")
    cluster.process_ready(1)
    cluster.deliver_all(types=[MessageType.APPEND])
    ready = cluster.take_ready(2)
    assert ready is not None and ready.append is not None
    assert [m.type for m in ready.messages] == [MessageType.APPEND_RESPONSE]
    assert not ready.append.messages_after_persist


def test_a_conf_change_takes_effect_when_applied() -> None:
    cluster = three_members()
    elect_1(cluster)
    leader = cluster.node(1)
    leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE, 3))
    for _ in range(20):
        for node_id in cluster.up_ids():
            cluster.take_ready(node_id)
            while cluster.persist_next(node_id) is not None:
                pass
        cluster.deliver_all()
        if cluster.applies[1]:
            break
    assert 3 in leader.raft.tracker.voters()  # handed out, not applied yet
    with pytest.raises(ProposalDropped):
        leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE, 2))
    cluster.apply_next(1)
    assert leader.raft.tracker.voters() == (1, 2)


def test_advance_and_the_acknowledgements_belong_to_their_own_mode() -> None:
    sync = RawNode(Config(1), MemoryStorage(), Random(0))
    with pytest.raises(RuntimeError):
        sync.on_applied(0)
    with pytest.raises(RuntimeError):
        sync.ready(append=False)
    node = RawNode(Config(1, async_storage_writes=True), MemoryStorage(), Random(0))
    node.campaign()
    with pytest.raises(RuntimeError):
        node.advance(node.ready())


# -- randomized clusters ------------------------------------------------------------


class AsyncFuzzer:
    """One seed's schedule over an AsyncRaftCluster."""

    def __init__(self, seed: int, members: int, bugs: frozenset[PlantedBug]) -> None:
        self.rng = Random(seed)

        def make(node_id: int, applied_index: int) -> Config:
            return Config(
                node_id, applied_index=applied_index, election_timeout_ticks=10,
                heartbeat_interval_ticks=2, append_bytes_max=64, inflight_messages_max=4,
                planted_bugs=bugs,
            )  # fmt: skip

        ids = range(1, members + 1)
        self.cluster = AsyncRaftCluster(
            ids, Random(self.rng.getrandbits(64)), config_factory=make, snapshot_index=1
        )
        self.proposals = 0
        weights: list[tuple[int, Callable[[], None]]] = [
            (40, self.cluster.tick_all), (120, self.take_ready), (100, self.persist),
            (100, self.apply), (400, self.deliver), (20, self.drop), (60, self.propose),
            (2, self.crash), (10, self.restart), (3, self.partition), (8, self.cluster.heal),
            (2, self.compact),
        ]  # fmt: skip
        self.actions = [action for weight, action in weights for _ in range(weight)]

    def _up(self) -> int | None:
        ids = self.cluster.up_ids()
        return self.rng.choice(ids) if ids else None

    def take_ready(self) -> None:
        node_id = self._up()
        if node_id is not None:
            append, apply = self.rng.random() < 0.7, self.rng.random() < 0.7
            self.cluster.take_ready(node_id, append=append, apply=apply)

    def persist(self) -> None:
        node_id = self._up()
        if node_id is not None:
            self.cluster.persist_next(node_id)

    def apply(self) -> None:
        node_id = self._up()
        if node_id is not None:
            self.cluster.apply_next(node_id)

    def deliver(self) -> None:
        if self.cluster.in_flight:
            self.cluster.deliver(self.rng.randrange(len(self.cluster.in_flight)))

    def drop(self) -> None:
        if self.cluster.in_flight:
            self.cluster.drop(self.rng.randrange(len(self.cluster.in_flight)))

    def propose(self) -> None:
        node_id = self._up()
        if node_id is not None:
            self.proposals += 1
            with contextlib.suppress(ProposalDropped):
                self.cluster.node(node_id).propose(b"p%d" % self.proposals)

    def crash(self) -> None:
        node_id = self._up()
        if node_id is not None and len(self.cluster.up_ids()) > 1:
            self.cluster.crash(node_id)

    def restart(self) -> None:
        down = [n for n, m in self.cluster.members.items() if not m.is_up()]
        if down:
            self.cluster.restart(self.rng.choice(down))

    def partition(self) -> None:
        ids = list(self.cluster.members)
        self.rng.shuffle(ids)
        cut = self.rng.randrange(1, len(ids))
        self.cluster.partition(ids[:cut], ids[cut:])

    def compact(self) -> None:
        node_id = self._up()
        if node_id is not None:
            self.cluster.compact(node_id)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.rng.choice(self.actions)()
        self.recover()

    def recover(self) -> None:
        """Heal, restart everyone, and demand one new entry applied on every member."""
        cluster = self.cluster
        cluster.heal()
        for node_id, member in cluster.members.items():
            if not member.is_up():
                cluster.restart(node_id)
        for _ in range(300):
            settle(cluster)
            leader = cluster.leader()
            if leader is not None and cluster.node(leader).raft.log.committed == (
                cluster.node(leader).raft.log.last_index()
            ):
                try:
                    cluster.node(leader).propose(b"final")
                except ProposalDropped:
                    continue
                settle(cluster)
                applied = {
                    m.app.applied_payloads[-1:] == [b"final"] for m in cluster.members.values()
                }
                if applied == {True}:
                    return
            cluster.tick_all()
        raise InvariantViolation("liveness: no entry committed on every member after healing")


@pytest.mark.parametrize("chunk", range(4))
def test_randomized_clusters_stay_safe_and_recover(chunk: int) -> None:
    for seed in range(chunk * 50, chunk * 50 + 50):
        members = 3 if seed % 2 else 5
        try:
            AsyncFuzzer(seed, members, frozenset()).run(steps=6000)
        except InvariantViolation as violation:
            pytest.fail(f"seed {seed} ({members} members): {violation}")


def test_the_randomized_clusters_catch_acknowledgements_before_the_persist() -> None:
    """A safety violation, not just a stuck cluster (a follower that lost what it
    acknowledged can leave its leader probing forever)."""
    for seed in range(300):
        try:
            AsyncFuzzer(seed, 5, frozenset({PlantedBug.ACK_BEFORE_SYNC})).run(steps=6000)
        except InvariantViolation as violation:
            if "liveness" not in str(violation):
                return
    pytest.fail("ack-before-sync went unnoticed for 300 seeds")
