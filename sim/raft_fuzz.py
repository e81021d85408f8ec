"""Randomized fault schedules against a cluster of Raft cores.

One seed decides everything: the fault knobs (swarm testing: each seed
draws its own mix of drops, duplicates, partitions, crashes and
compactions), then every step's action. Safety invariants are checked after
every step (``sim.raft_invariants``). After the faulty phase, every fault is
healed and the cluster must elect a leader and commit a new proposal on
every member within a bounded number of ticks.

Run ``python -m sim.raft_fuzz --seeds 0..1999`` to sweep; a failure prints
the command that replays it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

from actors.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    PlantedBug,
    ProposalDropped,
)
from sim.raft_cluster import RaftCluster
from sim.raft_invariants import InvariantViolation

TRACE_TAIL_LENGTH = 40
SPARE_MEMBERS = 2
"""Ids beyond the initial members that membership changes may add."""


@dataclass(frozen=True)
class FuzzOptions:
    """What a run looks like; the fault mix itself is drawn per seed."""

    members: int = 5
    steps: int = 3000
    heal_ticks_max: int = 200
    planted_bug: PlantedBug | None = None


@dataclass(frozen=True)
class FaultKnobs:
    """Relative weights of the fault actions, drawn per seed (swarm testing)."""

    drop: int
    duplicate: int
    partition: int
    crash: int
    compact: int
    transfer: int
    skew: int
    membership: int
    append_bytes_max: int
    inflight_messages_max: int

    @classmethod
    def draw(cls, rng: Random) -> FaultKnobs:
        """Each fault is off for some seeds and strong for others."""

        def knob(high: int) -> int:
            return rng.choice((0, 0, 1, high // 2, high))

        return cls(
            drop=knob(12),
            duplicate=knob(6),
            partition=knob(3),
            crash=knob(2),
            compact=knob(3),
            transfer=knob(1),
            skew=knob(4),
            membership=knob(2),
            append_bytes_max=rng.choice((1, 16, 64, 4096)),
            inflight_messages_max=rng.choice((1, 4, 64)),
        )


@dataclass
class FuzzResult:
    """The outcome of one seed."""

    seed: int
    passed: bool
    steps: int
    error: str = ""
    trace_tail: list[str] = field(default_factory=list)


def replay_command(seed: int, options: FuzzOptions) -> str:
    """The command that runs ``seed`` again, exactly."""
    command = f"python -m sim.raft_fuzz --seed {seed} --members {options.members}"
    command += f" --steps {options.steps}"
    if options.planted_bug is not None:
        command += f" --bug {options.planted_bug.value}"
    return command


class Fuzzer:
    """Drives one cluster through one seed's schedule."""

    def __init__(self, seed: int, options: FuzzOptions) -> None:
        self.seed = seed
        self.options = options
        self.rng = Random(seed)
        self.knobs = FaultKnobs.draw(self.rng)
        bugs = frozenset({options.planted_bug}) if options.planted_bug else frozenset()
        knobs = self.knobs

        def make_config(node_id: int, applied_index: int) -> Config:
            return Config(
                node_id,
                applied_index=applied_index,
                election_timeout_ticks=10,
                heartbeat_interval_ticks=2,
                append_bytes_max=knobs.append_bytes_max,
                inflight_messages_max=knobs.inflight_messages_max,
                planted_bugs=bugs,
            )

        ids = range(1, options.members + 1)
        self.cluster = RaftCluster(
            ids, Random(self.rng.getrandbits(64)), config_factory=make_config, snapshot_index=1
        )
        self.spare_ids = list(range(options.members + 1, options.members + 1 + SPARE_MEMBERS))
        self.removed_ids: set[int] = set()
        self.trace: list[str] = []
        self.proposals = 0
        self.actions = self._weighted_actions()

    def _weighted_actions(self) -> list[Callable[[], None]]:
        knobs = self.knobs
        weights: list[tuple[int, Callable[[], None]]] = [
            (4, self.tick_all),
            (knobs.skew, self.tick_one),
            (12, self.take_ready),
            (12, self.finish_ready),
            (40, self.deliver),
            (knobs.drop, self.drop),
            (knobs.duplicate, self.duplicate),
            (8, self.propose),
            (knobs.partition, self.partition),
            (knobs.partition * 2, self.heal),
            (knobs.crash, self.crash),
            (knobs.crash, self.crash_leader),
            (knobs.partition, self.isolate_leader),
            (knobs.crash * 3, self.restart),
            (knobs.compact, self.compact),
            (knobs.transfer, self.transfer),
            (knobs.membership, self.change_membership),
        ]
        return [action for weight, action in weights for _ in range(weight)]

    def note(self, text: str) -> None:
        """Record an action for the failure report."""
        self.trace.append(text)

    # -- actions -------------------------------------------------------------------

    def _pick_up(self) -> int | None:
        ids = self.cluster.up_ids()
        return self.rng.choice(ids) if ids else None

    def tick_all(self) -> None:
        self.note("tick-all")
        self.cluster.tick_all()

    def tick_one(self) -> None:
        node_id = self._pick_up()
        if node_id is not None:
            self.note(f"tick {node_id}")
            self.cluster.node(node_id).tick()
            self.cluster.checker.observe(self.cluster)

    def take_ready(self) -> None:
        cluster = self.cluster
        ready = [
            node_id
            for node_id in cluster.up_ids()
            if cluster.members[node_id].outstanding is None and cluster.node(node_id).has_ready()
        ]
        if ready:
            node_id = self.rng.choice(ready)
            cluster.take_ready(node_id)
            self.note(f"take-ready {node_id}")

    def finish_ready(self) -> None:
        pending = [m.node_id for m in self.cluster.members.values() if m.outstanding is not None]
        if pending:
            node_id = self.rng.choice(pending)
            self.note(f"finish-ready {node_id}")
            self.cluster.finish_ready(node_id)

    def deliver(self) -> None:
        if self.cluster.in_flight:
            position = self.rng.randrange(len(self.cluster.in_flight))
            message = self.cluster.deliver(position)
            self.note(f"deliver {message.sender}->{message.recipient} {message.type.name}")

    def drop(self) -> None:
        if self.cluster.in_flight:
            message = self.cluster.drop(self.rng.randrange(len(self.cluster.in_flight)))
            self.note(f"drop {message.sender}->{message.recipient} {message.type.name}")

    def duplicate(self) -> None:
        if self.cluster.in_flight:
            self.cluster.duplicate(self.rng.randrange(len(self.cluster.in_flight)))
            self.note("duplicate")

    def propose(self) -> None:
        node_id = self._pick_up()
        if node_id is None:
            return
        self.proposals += 1
        payload = b"p%d" % self.proposals
        try:
            self.cluster.node(node_id).propose(payload)
            self.note(f"propose {node_id} {payload.decode()}")
        except ProposalDropped as dropped:
            self.note(f"propose {node_id} dropped: {dropped.reason.value}")

    def partition(self) -> None:
        ids = list(self.cluster.members)
        self.rng.shuffle(ids)
        cut = self.rng.randrange(1, len(ids))
        groups = (sorted(ids[:cut]), sorted(ids[cut:]))
        self.note(f"partition {groups[0]} {groups[1]}")
        self.cluster.partition(*groups)

    def heal(self) -> None:
        if self.cluster.blocked_links:
            self.note("heal")
            self.cluster.heal()

    def crash(self) -> None:
        node_id = self._pick_up()
        if node_id is not None:
            self.note(f"crash {node_id}")
            self.cluster.crash(node_id)

    def crash_leader(self) -> None:
        leader = self.cluster.leader()
        if leader is not None:
            self.note(f"crash leader {leader}")
            self.cluster.crash(leader)

    def isolate_leader(self) -> None:
        leader = self.cluster.leader()
        if leader is not None:
            self.note(f"isolate leader {leader}")
            self.cluster.isolate(leader)

    def restart(self) -> None:
        down = [n for n, m in self.cluster.members.items() if not m.is_up()]
        if down:
            node_id = self.rng.choice(down)
            self.note(f"restart {node_id}")
            self.cluster.restart(node_id)

    def compact(self) -> None:
        node_id = self._pick_up()
        if node_id is not None and self.cluster.compact(node_id):
            self.note(f"compact {node_id}")

    def transfer(self) -> None:
        leader = self.cluster.leader()
        if leader is None:
            return
        target = self.rng.choice(list(self.cluster.members))
        self.note(f"transfer {leader}->{target}")
        self.cluster.node(leader).transfer_leader(target)

    def change_membership(self) -> None:
        """Propose one random change: add a learner or voter, promote, or remove."""
        leader = self.cluster.leader()
        if leader is None:
            return
        conf = self.cluster.node(leader).raft.tracker.conf_state
        members = set(conf.members())
        candidates = set(self.spare_ids) | set(self.cluster.members)
        addable = sorted(candidates - members - self.removed_ids)
        roll = self.rng.random()
        if conf.learners and roll < 0.3:
            change = ConfChange(ConfChangeType.ADD_VOTER, self.rng.choice(conf.learners))
        elif addable and roll < 0.65:
            kind = self.rng.choice((ConfChangeType.ADD_LEARNER, ConfChangeType.ADD_VOTER))
            change = ConfChange(kind, self.rng.choice(addable))
        else:
            change = ConfChange(ConfChangeType.REMOVE, self.rng.choice(sorted(members)))
        if change.node_id not in self.cluster.members:
            self.cluster.add_member(change.node_id)
        try:
            self.cluster.node(leader).propose_conf_change(change)
        except ProposalDropped as dropped:
            self.note(f"conf-change {change.type.name} {change.node_id} dropped: {dropped}")
            return
        if change.type is ConfChangeType.REMOVE:
            self.removed_ids.add(change.node_id)
        self.note(f"conf-change {leader} {change.type.name} {change.node_id}")

    # -- phases ----------------------------------------------------------------------

    def run_faults(self) -> None:
        """The faulty phase: random actions, invariants checked after each."""
        for _ in range(self.options.steps):
            self.rng.choice(self.actions)()

    def _propose_marker(self, leader: int, tick: int) -> tuple[int, int] | None:
        node = self.cluster.node(leader)
        try:
            node.propose(b"final-%d" % tick)
        except ProposalDropped:
            return None
        self.note(f"propose {leader} final-{tick}")
        return node.raft.log.last_index(), node.raft.term

    def _committed_everywhere(self, leader: int, index: int, term: int) -> bool:
        """Is the entry at (index, term) committed and applied by every current member?"""
        if self.cluster.checker.committed_term_by_index.get(index) != term:
            return False
        conf = self.cluster.node(leader).raft.tracker.conf_state
        return all(self.cluster.members[n].app.applied_index >= index for n in conf.members())

    def run_recovery(self) -> None:
        """Heal everything; a leader must emerge and commit a proposal everywhere."""
        cluster = self.cluster
        self.note("heal-all")
        cluster.heal()
        for node_id, member in cluster.members.items():
            if not member.is_up():
                cluster.restart(node_id)
        for node_id in cluster.up_ids():
            cluster.finish_ready(node_id)
        marker: tuple[int, int] | None = None  # (index, term) of the last proposal
        for tick in range(self.options.heal_ticks_max):
            cluster.tick_all()
            cluster.stabilize()
            leader = cluster.leader()
            if leader is None:
                continue
            if marker is not None and self._committed_everywhere(leader, *marker):
                return
            if marker is None or tick % 20 == 0:
                marker = self._propose_marker(leader, tick)
        states = {n: cluster.node(n).status()["role"].value for n in cluster.up_ids()}
        raise InvariantViolation(
            f"liveness: no proposal committed on every member within "
            f"{self.options.heal_ticks_max} ticks of healing (roles: {states})"
        )


def run_seed(seed: int, options: FuzzOptions) -> FuzzResult:
    """Run one seed; never raises for a violation, reports it."""
    fuzzer = Fuzzer(seed, options)
    try:
        fuzzer.run_faults()
        fuzzer.run_recovery()
    except AssertionError as violation:
        # InvariantViolation, or an assertion inside the core: both are bugs found.
        error = f"{type(violation).__name__}: {violation}"
        return FuzzResult(seed, False, len(fuzzer.trace), error, fuzzer.trace[-TRACE_TAIL_LENGTH:])
    return FuzzResult(seed, True, len(fuzzer.trace))


def parse_seed_range(text: str) -> range:
    """``"A..B"`` (inclusive) or a single seed."""
    if ".." in text:
        low, high = text.split("..", 1)
        return range(int(low), int(high) + 1)
    return range(int(text), int(text) + 1)


def format_failure(result: FuzzResult, options: FuzzOptions) -> str:
    """A failure report ending with the replay command."""
    lines = [f"seed {result.seed} FAILED after {result.steps} actions: {result.error}"]
    lines.append("last actions:")
    lines.extend(f"  {action}" for action in result.trace_tail)
    lines.append(f"replay: {replay_command(result.seed, options)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Sweep seeds from the command line; exit 1 on any failure."""
    parser = argparse.ArgumentParser(prog="python -m sim.raft_fuzz", description=__doc__)
    parser.add_argument("--seed", help="one seed, or a range A..B", default=None)
    parser.add_argument("--seeds", help="a range A..B (inclusive)", default="0..99")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--steps", type=int, default=FuzzOptions.steps)
    parser.add_argument("--bug", choices=[bug.value for bug in PlantedBug], default=None)
    parser.add_argument("--stop-on-failure", action="store_true")
    args = parser.parse_args(argv)
    bug = PlantedBug(args.bug) if args.bug else None
    options = FuzzOptions(members=args.members, steps=args.steps, planted_bug=bug)
    seeds = parse_seed_range(args.seed if args.seed is not None else args.seeds)
    print(f"SEEDS={seeds.start}..{seeds.stop - 1} members={options.members} steps={options.steps}")
    started = time.perf_counter()  # nondeterminism-ok: reporting wall time, not simulating
    failures = 0
    for seed in seeds:
        result = run_seed(seed, options)
        if not result.passed:
            failures += 1
            print(format_failure(result, options))
            if args.stop_on_failure:
                break
    elapsed = time.perf_counter() - started  # nondeterminism-ok: reporting wall time
    print(f"{len(seeds)} seeds, {failures} failed, {elapsed:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
