"""Majority arithmetic over one configuration of voters.

Membership changes one member at a time (see ``tracker``), so there is only
ever one majority to satisfy; joint consensus is not used.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping


class VoteResult(enum.Enum):
    """Where an election stands."""

    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(voter_count: int) -> int:
    """How many voters make a quorum."""
    return voter_count // 2 + 1


def committed_index(voters: Collection[int], match_by_id: Mapping[int, int]) -> int:
    """The largest index that a majority of ``voters`` have acknowledged.

    With no voters nothing can be committed by counting; the answer is then
    "unbounded" from the quorum's side, which callers never reach because a
    configuration always has a voter when it is used.
    """
    assert voters, "no voters"
    matches = sorted((match_by_id.get(voter, 0) for voter in voters), reverse=True)
    return matches[majority(len(matches)) - 1]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """Count the ``votes`` (granted or not) cast by ``voters``; others don't count."""
    granted = sum(1 for voter in voters if votes.get(voter) is True)
    rejected = sum(1 for voter in voters if votes.get(voter) is False)
    needed = majority(len(voters))
    if granted >= needed:
        return VoteResult.WON
    if len(voters) - rejected < needed:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(voters: Collection[int], responders: Collection[int]) -> bool:
    """Do ``responders`` include a majority of ``voters``?"""
    return sum(1 for voter in voters if voter in responders) >= majority(len(voters))
