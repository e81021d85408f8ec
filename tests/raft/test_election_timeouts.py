"""The randomized election timeout (Raft §5.2).

Claims checked:

- the timeout is drawn from the ``random.Random`` the node was given, and
  from nothing else: the same seed gives the same sequence, different seeds
  give different ones, and the global ``random`` module plays no part;
- every draw lies in ``[election_timeout_ticks, 2 * election_timeout_ticks)``,
  and every value of that range occurs;
- a follower (or a candidate) campaigns on exactly the tick its randomized
  timeout elapses, counted from the last time its clock was restarted.

A node draws a new timeout whenever it changes term, so campaigning again and
again (no peer ever answers here) yields a sequence of draws.
"""

from __future__ import annotations

import random
from random import Random

import pytest

from actors.raft import Config, ConfState, MemoryStorage, Message, MessageType, RawNode, Role

VOTERS = (1, 2, 3)


def make_node(rng: Random, election_timeout_ticks: int = 10, *, pre_vote: bool = False) -> RawNode:
    """Node 1 of three voters, with an empty log, using ``rng``."""
    config = Config(
        1,
        election_timeout_ticks=election_timeout_ticks,
        heartbeat_interval_ticks=1,
        pre_vote=pre_vote,
        check_quorum=False,
    )
    return RawNode(config, MemoryStorage(ConfState(VOTERS)), rng)


def timeout_ticks(node: RawNode) -> int:
    return node.raft.randomized_election_timeout_ticks


def role(node: RawNode) -> Role:
    """The node's role, read fresh (a function, so the type checker does not narrow it)."""
    return node.raft.role


def draws(node: RawNode, count: int) -> list[int]:
    """The node's timeout now, then after each of ``count - 1`` campaigns."""
    values = [timeout_ticks(node)]
    for _ in range(count - 1):
        node.campaign()
        values.append(timeout_ticks(node))
    return values


# -- where the randomness comes from ------------------------------------------------


def test_same_seed_gives_the_same_timeouts() -> None:
    first = draws(make_node(Random(7)), 50)
    second = draws(make_node(Random(7)), 50)
    assert first == second


def test_different_seeds_give_different_timeouts() -> None:
    one = draws(make_node(Random(1)), 50)
    two = draws(make_node(Random(2)), 50)
    assert one != two


def test_global_random_plays_no_part() -> None:
    saved = random.getstate()
    try:
        random.seed(1)
        first = draws(make_node(Random(3)), 50)
        random.seed(2)
        second = draws(make_node(Random(3)), 50)
    finally:
        random.setstate(saved)
    assert first == second


def test_each_new_term_consumes_the_injected_generator() -> None:
    rng = Random(5)
    node = make_node(rng)
    before = rng.getstate()
    node.campaign()
    assert node.raft.term == 1
    assert rng.getstate() != before


# -- the range --------------------------------------------------------------------------


@pytest.mark.parametrize("election_timeout_ticks", [2, 3, 10, 25])
def test_timeouts_cover_exactly_election_to_twice_election(election_timeout_ticks: int) -> None:
    values = draws(make_node(Random(11), election_timeout_ticks), 2000)
    low, high = election_timeout_ticks, 2 * election_timeout_ticks
    assert all(low <= value < high for value in values), sorted(set(values))
    # Both ends are reached: the lower bound is inclusive, the upper exclusive.
    assert set(values) == set(range(low, high))


# -- when a node campaigns --------------------------------------------------------------


def tick(node: RawNode, times: int) -> None:
    for _ in range(times):
        node.tick()


@pytest.mark.parametrize("seed", range(1, 9))
def test_follower_campaigns_exactly_when_its_timeout_elapses(seed: int) -> None:
    node = make_node(Random(seed))
    timeout = timeout_ticks(node)

    tick(node, timeout - 1)
    assert role(node) is Role.FOLLOWER
    assert node.raft.term == 0

    tick(node, 1)
    assert role(node) is Role.CANDIDATE
    assert node.raft.term == 1


@pytest.mark.parametrize("seed", range(1, 9))
def test_pre_vote_follower_becomes_pre_candidate_exactly_on_time(seed: int) -> None:
    node = make_node(Random(seed), pre_vote=True)
    timeout = timeout_ticks(node)

    tick(node, timeout - 1)
    assert role(node) is Role.FOLLOWER

    tick(node, 1)
    assert role(node) is Role.PRE_CANDIDATE
    assert node.raft.term == 0  # PreVote does not raise the term


def test_timeouts_differ_between_seeds_so_campaign_times_differ() -> None:
    # The point of randomizing: members started together time out apart.
    timeouts = {timeout_ticks(make_node(Random(seed))) for seed in range(1, 9)}
    assert len(timeouts) > 1


def test_hearing_a_leader_restarts_the_count() -> None:
    node = make_node(Random(4))
    tick(node, timeout_ticks(node) - 1)

    heartbeat = Message(MessageType.HEARTBEAT, recipient=1, sender=2, term=1)
    node.step(heartbeat)
    assert node.raft.leader_id == 2
    # A new term: a new timeout is drawn, and the clock starts again from 0.
    timeout = timeout_ticks(node)

    tick(node, timeout - 1)
    assert role(node) is Role.FOLLOWER
    node.step(heartbeat)  # same term: the clock restarts, no new draw
    assert timeout_ticks(node) == timeout

    tick(node, timeout - 1)
    assert role(node) is Role.FOLLOWER
    tick(node, 1)
    assert role(node) is Role.CANDIDATE
    assert node.raft.term == 2


def test_candidate_campaigns_again_when_its_new_timeout_elapses() -> None:
    node = make_node(Random(6))
    node.campaign()
    assert role(node) is Role.CANDIDATE
    assert node.raft.term == 1
    timeout = timeout_ticks(node)  # drawn when term 1 began

    tick(node, timeout - 1)
    assert node.raft.term == 1
    tick(node, 1)
    assert role(node) is Role.CANDIDATE
    assert node.raft.term == 2
