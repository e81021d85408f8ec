"""A request that another member forwarded to a follower (it led when the request was sent):
a proposal goes on to the leader as this member's own, since the transport drops a message
whose sender is not the peer it came from; a read index is dropped, since its answer would
come back here rather than to the member waiting for it."""

from __future__ import annotations

from random import Random

import pytest

from actors.raft import DropReason, Entry, Message, MessageType, ProposalDropped
from sim.raft_cluster import RaftCluster

LEADER, FOLLOWER, ORIGIN = 1, 2, 3


def settled_cluster() -> RaftCluster:
    cluster = RaftCluster([LEADER, FOLLOWER, ORIGIN], Random(0))
    cluster.node(LEADER).campaign()
    cluster.stabilize()
    assert cluster.leader() == LEADER
    return cluster


def test_a_proposal_forwarded_twice_goes_on_with_this_member_as_its_sender() -> None:
    cluster = settled_cluster()
    entry = Entry(index=0, term=0, data=b"again")
    cluster.node(FOLLOWER).step(
        Message(MessageType.PROPOSE, recipient=FOLLOWER, sender=ORIGIN, entries=(entry,))
    )
    ready = cluster.take_ready(FOLLOWER)
    assert ready is not None
    (forwarded,) = ready.messages
    assert (forwarded.type, forwarded.sender, forwarded.recipient) == (
        MessageType.PROPOSE, FOLLOWER, LEADER,
    )  # fmt: skip
    assert forwarded.entries == (entry,)


def test_a_read_index_forwarded_twice_is_dropped() -> None:
    cluster = settled_cluster()
    request = Message(MessageType.READ_INDEX, recipient=FOLLOWER, sender=ORIGIN, context=b"r1")
    with pytest.raises(ProposalDropped) as dropped:
        cluster.node(FOLLOWER).step(request)
    assert dropped.value.reason is DropReason.READ_FORWARDED_TWICE
    assert cluster.take_ready(FOLLOWER) is None
