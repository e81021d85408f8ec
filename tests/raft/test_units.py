"""Unit tests for the Raft core's small, pure pieces.

Config validation, the MemoryStorage contract, the inflight window, the
quorum arithmetic and the conf change codec. The scenario scripts in
testdata/ cover how these behave together inside a cluster.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from actors.raft import (
    CompactedError,
    ConfChange,
    ConfChangeType,
    Config,
    ConfigError,
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    ReadOnlyOption,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDate,
    UnavailableError,
)
from actors.raft.progress import Inflights
from actors.raft.quorum import VoteResult, committed_index, majority, vote_result

VOTERS = ConfState(voters=(1, 2, 3))

# -- Config -------------------------------------------------------------------------


def test_config_defaults_are_valid() -> None:
    config = Config(1)
    assert config.election_timeout_ticks > config.heartbeat_interval_ticks
    assert config.check_quorum
    assert config.pre_vote


@pytest.mark.parametrize("node_id", [0, -1])
def test_config_refuses_a_node_id_that_is_not_positive(node_id: int) -> None:
    with pytest.raises(ConfigError, match="node_id"):
        Config(node_id)


@pytest.mark.parametrize(("election", "heartbeat"), [(5, 5), (3, 5)])
def test_config_refuses_heartbeat_not_below_election(election: int, heartbeat: int) -> None:
    with pytest.raises(ConfigError, match="election_timeout_ticks"):
        Config(1, election_timeout_ticks=election, heartbeat_interval_ticks=heartbeat)


def test_config_refuses_a_heartbeat_that_is_not_positive() -> None:
    with pytest.raises(ConfigError, match="heartbeat_interval_ticks"):
        Config(1, heartbeat_interval_ticks=0)


def test_config_refuses_a_negative_applied_index() -> None:
    with pytest.raises(ConfigError, match="applied_index"):
        Config(1, applied_index=-1)


LIMITS = [
    "append_bytes_max",
    "inflight_messages_max",
    "inflight_bytes_max",
    "uncommitted_bytes_max",
    "committed_bytes_max_per_ready",
]


@pytest.mark.parametrize("name", LIMITS)
@pytest.mark.parametrize("value", [0, -1])
def test_config_refuses_limits_that_are_not_positive(name: str, value: int) -> None:
    limit: dict[str, Any] = {name: value}
    with pytest.raises(ConfigError, match=name):
        Config(1, **limit)


@pytest.mark.parametrize("name", LIMITS)
def test_config_accepts_a_limit_of_one(name: str) -> None:
    limit: dict[str, Any] = {name: 1}
    assert getattr(Config(1, **limit), name) == 1


def test_config_refuses_lease_reads_without_check_quorum() -> None:
    with pytest.raises(ConfigError, match="check_quorum"):
        Config(1, read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=False)
    config = Config(1, read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=True)
    assert config.read_only_option is ReadOnlyOption.LEASE_BASED


def test_config_is_checked_again_when_copied() -> None:
    with pytest.raises(ConfigError, match="check_quorum"):
        replace(Config(1), read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=False)


# -- MemoryStorage ------------------------------------------------------------------


def entry(term: int, index: int, data: bytes = b"") -> Entry:
    return Entry(term, index, data=data)


def storage_with(*terms: int, payload: bytes = b"x") -> MemoryStorage:
    """A storage holding entries 1..len(terms) with the given terms."""
    storage = MemoryStorage(VOTERS)
    storage.append([entry(term, i, payload) for i, term in enumerate(terms, start=1)])
    return storage


def test_storage_starts_empty() -> None:
    storage = MemoryStorage(VOTERS)
    assert storage.first_index() == 1
    assert storage.last_index() == 0
    assert storage.term(0) == 0
    assert storage.initial_state() == (HardState(), VOTERS)
    assert storage.snapshot().is_empty()


def test_storage_answers_entries_terms_and_bounds() -> None:
    storage = storage_with(1, 1, 2, 3)
    assert storage.first_index() == 1
    assert storage.last_index() == 4
    assert [storage.term(i) for i in range(5)] == [0, 1, 1, 2, 3]
    assert storage.entries(2, 4, 1 << 20) == [entry(1, 2, b"x"), entry(2, 3, b"x")]
    assert storage.entries(3, 3, 1 << 20) == []


def test_storage_reports_unavailable_past_the_end() -> None:
    storage = storage_with(1, 1)
    with pytest.raises(UnavailableError):
        storage.term(3)
    with pytest.raises(UnavailableError):
        storage.entries(1, 4, 1 << 20)


def test_storage_reports_compacted_before_the_start() -> None:
    storage = storage_with(1, 1, 2, 2)
    storage.create_snapshot(2, VOTERS, b"state")
    storage.compact(2)
    assert storage.first_index() == 3
    assert storage.term(2) == 1, "the term just before the first index stays known"
    with pytest.raises(CompactedError):
        storage.term(1)
    with pytest.raises(CompactedError):
        storage.entries(2, 4, 1 << 20)
    assert storage.entries(3, 5, 1 << 20) == [entry(2, 3, b"x"), entry(2, 4, b"x")]


def test_storage_append_replaces_the_suffix_from_the_first_new_index() -> None:
    storage = storage_with(1, 1, 1, 1)
    storage.append([entry(2, 3, b"new"), entry(2, 4, b"new"), entry(2, 5, b"new")])
    assert storage.last_index() == 5
    assert [storage.term(i) for i in range(1, 6)] == [1, 1, 2, 2, 2]
    storage.append([entry(3, 2, b"newer")])
    assert storage.last_index() == 2, "a shorter append still drops everything after it"
    assert storage.entries(1, 3, 1 << 20) == [entry(1, 1, b"x"), entry(3, 2, b"newer")]


def test_storage_append_extends_at_the_end_and_refuses_gaps() -> None:
    storage = storage_with(1)
    storage.append([entry(1, 2)])
    assert storage.last_index() == 2
    with pytest.raises(AssertionError):
        storage.append([entry(1, 4)])


def test_storage_append_ignores_what_is_already_compacted() -> None:
    storage = storage_with(1, 1, 1)
    storage.create_snapshot(2, VOTERS, b"")
    storage.compact(2)
    storage.append([entry(1, 1), entry(1, 2)])
    assert (storage.first_index(), storage.last_index()) == (3, 3), "nothing changed"
    storage.append([entry(1, 2), entry(2, 3, b"y"), entry(2, 4, b"y")])
    assert (storage.first_index(), storage.last_index()) == (3, 4)
    assert storage.entries(3, 5, 1 << 20) == [entry(2, 3, b"y"), entry(2, 4, b"y")]


def test_storage_create_snapshot_records_index_term_and_configuration() -> None:
    storage = storage_with(1, 2, 2)
    snapshot = storage.create_snapshot(2, VOTERS, b"state@2")
    assert snapshot.metadata == SnapshotMetadata(2, 2, VOTERS)
    assert snapshot.data == b"state@2"
    assert storage.snapshot() == snapshot
    assert storage.first_index() == 1, "creating a snapshot does not compact by itself"
    with pytest.raises(SnapshotOutOfDate):
        storage.create_snapshot(2, VOTERS, b"again")
    with pytest.raises(SnapshotOutOfDate):
        storage.create_snapshot(1, VOTERS, b"older")


def test_storage_compacts_only_what_a_snapshot_covers() -> None:
    storage = storage_with(1, 1, 1, 1)
    storage.create_snapshot(2, VOTERS, b"")
    with pytest.raises(AssertionError):
        storage.compact(3)
    storage.compact(2)
    assert (storage.first_index(), storage.last_index()) == (3, 4)
    with pytest.raises(CompactedError):
        storage.compact(2)
    with pytest.raises(CompactedError):
        storage.compact(1)


def test_storage_apply_snapshot_replaces_the_log() -> None:
    storage = storage_with(1, 1, 1)
    metadata = SnapshotMetadata(10, 4, ConfState(voters=(1, 2, 3, 4)))
    storage.apply_snapshot(Snapshot(metadata, b"state@10"))
    assert storage.first_index() == 11
    assert storage.last_index() == 10
    assert storage.term(10) == 4
    assert storage.snapshot().data == b"state@10"
    assert storage.initial_state()[1] == ConfState(voters=(1, 2, 3, 4))
    with pytest.raises(CompactedError):
        storage.term(3)


def test_storage_apply_snapshot_refuses_one_that_is_not_newer() -> None:
    storage = MemoryStorage(VOTERS)
    storage.apply_snapshot(Snapshot(SnapshotMetadata(10, 4, VOTERS)))
    for index in (10, 9):
        with pytest.raises(SnapshotOutOfDate):
            storage.apply_snapshot(Snapshot(SnapshotMetadata(index, 5, VOTERS)))
    assert storage.snapshot().metadata.index == 10


def test_storage_entries_respect_bytes_max_but_return_at_least_one() -> None:
    storage = storage_with(1, 1, 1, 1, payload=b"abc")  # 3 payload bytes each
    assert len(storage.entries(1, 5, 1 << 20)) == 4
    assert len(storage.entries(1, 5, 9)) == 3
    assert len(storage.entries(1, 5, 8)) == 2
    assert len(storage.entries(1, 5, 6)) == 2
    assert len(storage.entries(1, 5, 3)) == 1
    assert storage.entries(1, 5, 1) == [entry(1, 1, b"abc")], "one entry even past the bound"
    assert storage.entries(1, 5, 0) == [entry(1, 1, b"abc")]


def test_storage_keeps_the_hard_state_it_is_given() -> None:
    storage = MemoryStorage(VOTERS)
    storage.set_hard_state(HardState(term=3, vote=2, commit=0))
    assert storage.hard_state() == HardState(3, 2, 0)
    assert storage.initial_state() == (HardState(3, 2, 0), VOTERS)


def test_storage_started_from_a_snapshot() -> None:
    storage = MemoryStorage(VOTERS, snapshot_index=5, snapshot_term=2)
    assert (storage.first_index(), storage.last_index()) == (6, 5)
    assert storage.term(5) == 2
    assert storage.initial_state() == (HardState(term=2, commit=5), VOTERS)


# -- Inflights ----------------------------------------------------------------------


def test_inflights_fill_up_by_count() -> None:
    inflights = Inflights(messages_max=3, bytes_max=1 << 20)
    for last_index in (2, 4, 5):
        assert not inflights.full()
        inflights.add(last_index, 10)
    assert inflights.full()
    assert inflights.count() == 3
    assert inflights.size_bytes() == 30
    with pytest.raises(AssertionError):
        inflights.add(6, 10)


def test_inflights_fill_up_by_bytes() -> None:
    inflights = Inflights(messages_max=100, bytes_max=100)
    inflights.add(1, 60)
    assert not inflights.full()
    inflights.add(2, 40)
    assert inflights.full(), "full once the bytes reach the bound"
    assert inflights.count() == 2


def test_inflights_take_one_append_past_the_byte_bound() -> None:
    inflights = Inflights(messages_max=100, bytes_max=100)
    inflights.add(1, 500)
    assert inflights.full()
    assert inflights.size_bytes() == 500


def test_inflights_free_to_frees_every_append_ending_at_or_before() -> None:
    inflights = Inflights(messages_max=10, bytes_max=1 << 20)
    for last_index, size in ((2, 1), (5, 2), (7, 4), (9, 8)):
        inflights.add(last_index, size)
    inflights.free_to(1)
    assert inflights.count() == 4, "an index before the first record frees nothing"
    inflights.free_to(6)
    assert (inflights.count(), inflights.size_bytes()) == (2, 12)
    inflights.free_to(7)
    assert (inflights.count(), inflights.size_bytes()) == (1, 8)
    inflights.free_to(100)
    assert (inflights.count(), inflights.size_bytes()) == (0, 0)
    inflights.free_to(100)
    assert inflights.count() == 0


def test_inflights_free_first_frees_the_oldest() -> None:
    inflights = Inflights(messages_max=2, bytes_max=1 << 20)
    inflights.add(3, 5)
    inflights.add(4, 7)
    assert inflights.full()
    inflights.free_first()
    assert not inflights.full()
    assert (inflights.count(), inflights.size_bytes()) == (1, 7)
    inflights.free_first()
    inflights.free_first()
    assert (inflights.count(), inflights.size_bytes()) == (0, 0)


def test_inflights_refuse_an_index_that_does_not_grow() -> None:
    inflights = Inflights(messages_max=10, bytes_max=1 << 20)
    inflights.add(5, 1)
    with pytest.raises(AssertionError):
        inflights.add(5, 1)
    with pytest.raises(AssertionError):
        inflights.add(4, 1)


def test_inflights_reset_forgets_everything() -> None:
    inflights = Inflights(messages_max=1, bytes_max=1 << 20)
    inflights.add(1, 9)
    inflights.reset()
    assert (inflights.count(), inflights.size_bytes(), inflights.full()) == (0, 0, False)
    inflights.add(1, 9)


# -- quorum -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("voter_count", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)]
)
def test_majority(voter_count: int, quorum: int) -> None:
    assert majority(voter_count) == quorum


@pytest.mark.parametrize(
    ("matches", "committed"),
    [
        ([7], 7),
        ([7, 3], 3),
        ([3, 7], 3),
        ([9, 5, 1], 5),
        ([1, 5, 9], 5),
        ([5, 5, 1], 5),
        ([8, 6, 4, 2], 4),
        ([2, 4, 6, 8], 4),
        ([10, 9, 3, 2, 1], 3),
        ([1, 2, 3, 9, 10], 3),
        ([4, 4, 4, 4, 4], 4),
        ([0, 0, 0, 5, 5], 0),
    ],
)
def test_committed_index_is_what_a_majority_holds(matches: list[int], committed: int) -> None:
    voters = list(range(1, len(matches) + 1))
    assert committed_index(voters, dict(zip(voters, matches, strict=True))) == committed


def test_committed_index_counts_only_voters() -> None:
    # 4 and 5 are learners (or strangers): their matches do not count.
    match_by_id = {1: 9, 2: 1, 3: 1, 4: 9, 5: 9}
    assert committed_index([1, 2, 3], match_by_id) == 1
    assert committed_index([1, 2, 3], {1: 9, 2: 8}) == 8, "a missing voter counts as 0"


@pytest.mark.parametrize(
    ("voters", "votes", "result"),
    [
        ([1], {}, VoteResult.PENDING),
        ([1], {1: True}, VoteResult.WON),
        ([1], {1: False}, VoteResult.LOST),
        ([1, 2], {1: True}, VoteResult.PENDING),
        ([1, 2], {1: True, 2: False}, VoteResult.LOST),
        ([1, 2], {1: True, 2: True}, VoteResult.WON),
        ([1, 2, 3], {1: True}, VoteResult.PENDING),
        ([1, 2, 3], {1: True, 2: True}, VoteResult.WON),
        ([1, 2, 3], {1: True, 2: False}, VoteResult.PENDING),
        ([1, 2, 3], {1: True, 2: False, 3: False}, VoteResult.LOST),
        ([1, 2, 3, 4], {1: True, 2: True}, VoteResult.PENDING),
        ([1, 2, 3, 4], {1: True, 2: False, 3: False}, VoteResult.LOST),
        ([1, 2, 3, 4, 5], {1: True, 2: True, 3: True}, VoteResult.WON),
        ([1, 2, 3, 4, 5], {1: True, 2: False, 3: False}, VoteResult.PENDING),
        ([1, 2, 3, 4, 5], {1: True, 2: False, 3: False, 4: False}, VoteResult.LOST),
    ],
)
def test_vote_result(voters: list[int], votes: dict[int, bool], result: VoteResult) -> None:
    assert vote_result(voters, votes) is result


def test_vote_result_ignores_votes_from_non_voters() -> None:
    assert vote_result([1, 2, 3], {1: True, 4: True, 5: True}) is VoteResult.PENDING
    assert vote_result([1, 2, 3], {1: True, 4: False, 5: False}) is VoteResult.PENDING


# -- ConfChange codec ---------------------------------------------------------------


@pytest.mark.parametrize("change_type", list(ConfChangeType))
@pytest.mark.parametrize("context", [b"", b"name=n4 peer=http://10.0.0.4:2380", bytes(range(256))])
def test_conf_change_round_trip(change_type: ConfChangeType, context: bytes) -> None:
    change = ConfChange(change_type, 2**64 - 1, context)
    assert ConfChange.decode(change.encode()) == change


def test_conf_change_encoding_is_type_then_id_then_context() -> None:
    encoded = ConfChange(ConfChangeType.ADD_LEARNER, 4, b"ctx").encode()
    assert encoded == b"\x01" + (4).to_bytes(8, "big") + b"ctx"


@pytest.mark.parametrize("length", range(9))
def test_conf_change_decode_refuses_a_short_payload(length: int) -> None:
    payload = ConfChange(ConfChangeType.ADD_VOTER, 2).encode()[:length]
    with pytest.raises(ValueError, match="too short"):
        ConfChange.decode(payload)


def test_conf_change_decode_refuses_an_unknown_type() -> None:
    payload = bytes([len(ConfChangeType)]) + (2).to_bytes(8, "big")
    with pytest.raises(ValueError):
        ConfChange.decode(payload)
