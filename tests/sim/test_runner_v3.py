"""Whole simulations with v3 clients (KV over gRPC): replay, a planted bug caught, the MVCC
agreement check; and the v3 workload's request and response mapping.

The default run keeps to a few seeds; ``-m slow`` sweeps v3 seeds over every scenario.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from net.etcdpb import kv_pb2, rpc_pb2
from sim.history import OpKind, Outcome
from sim.mvcc_agreement import MvccDigest, disagreement
from sim.report import summary_lines
from sim.runner import RunOptions, run
from sim.sweep import scenario_for
from sim.workload_v3 import build_request, read_delete, read_range, read_txn

PLANTED_BUG_SEEDS_MAX = 20
"""The v3 stale-read bug is caught on the first seed or two of split-brain; 20 is the bound."""
STREAM_BUG_SEEDS_MAX = 200
"""The watch and lease planted bugs must each be caught within this many seeds."""
STREAM_BUG_DURATION_S = 6.0
V3_SWEEP_SEEDS = 40
V3_SWEEP_DURATION_S = 6.0


def test_a_v3_seed_replays_bit_for_bit_and_passes() -> None:
    first = run(RunOptions(seed=7, scenario="swarm", duration_s=3, api="v3"))
    second = run(RunOptions(seed=7, scenario="swarm", duration_s=3, api="v3"))
    assert first.passed, "\n".join(summary_lines(first))
    assert first.trace_hash == second.trace_hash
    assert first.history is not None
    kinds = {(op.kind, op.outcome, op.succeeded) for op in first.history.operations}
    for expected in [
        (OpKind.PUT, Outcome.OK, None),
        (OpKind.RANGE, Outcome.OK, None),
        (OpKind.SERIAL_RANGE, Outcome.OK, None),
        (OpKind.TXN, Outcome.OK, True),
        (OpKind.TXN, Outcome.OK, False),
        (OpKind.DELETE_RANGE, Outcome.OK, True),
    ]:
        assert expected in kinds
    assert "--api v3" in first.options.replay_command()
    log = first.v3_log
    assert log is not None
    assert any(segment.events for session in log.sessions for segment in session.segments)
    assert any(ack.what == "keep-alive" for ack in log.acks) and log.lease_puts


# Slow: .ci/run's longer simulator step runs it; the fast suite keeps the v2 read's twin.
@pytest.mark.slow
def test_a_linearizable_range_without_read_index_is_caught_and_the_seed_passes_without() -> None:
    for seed in range(PLANTED_BUG_SEEDS_MAX):
        options = RunOptions(
            seed=seed,
            scenario="split-brain",
            planted_bug="quorum-read-without-read-index",
            duration_s=12,
            api="v3",
        )
        result = run(options)
        if not result.passed:
            assert result.linearizability == "violation", "\n".join(summary_lines(result))
            assert result.check is not None
            witness = [op for key in result.check.violations for op in key.witness]
            assert any(op.kind is OpKind.RANGE for op in witness)
            clean = run(RunOptions(seed=seed, scenario="split-brain", duration_s=12, api="v3"))
            assert clean.passed, "\n".join(summary_lines(clean))
            return
    pytest.fail(f"the v3 stale read went unnoticed for {PLANTED_BUG_SEEDS_MAX} seeds")


def test_a_txn_deciding_on_its_first_compare_alone_is_caught_by_the_txn_group_check() -> None:
    for seed in range(PLANTED_BUG_SEEDS_MAX):
        options = RunOptions(
            seed=seed, scenario="leader-isolation", planted_bug="txn-first-compare-only",
            duration_s=4, api="v3",
        )  # fmt: skip
        result = run(options)
        if not result.passed:
            assert result.check is not None, "\n".join(summary_lines(result))
            reasons = [violation.reason for violation in result.check.local]
            assert any(reason.startswith("its compare held") for reason in reasons), reasons
            clean = run(replace(options, planted_bug=None))
            assert clean.passed, "\n".join(summary_lines(clean))
            assert clean.history is not None
            assert any(op.group is not None for op in clean.history.operations)
            return
    pytest.fail(f"txn-first-compare-only went unnoticed for {PLANTED_BUG_SEEDS_MAX} seeds")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bug", "checker"),
    [
        ("watch-skip-event-when-full", "watch: "),
        ("lessor-expires-on-followers", "lease: "),
        ("lessor-no-promotion-extension", "lease: "),
    ],
)
def test_a_planted_watch_or_lease_bug_is_caught_and_the_seed_passes_without(
    bug: str, checker: str
) -> None:
    for seed in range(STREAM_BUG_SEEDS_MAX):
        scenario = scenario_for(seed, "all")
        options = RunOptions(
            seed=seed, scenario=scenario, planted_bug=bug, duration_s=STREAM_BUG_DURATION_S,
            api="v3",
        )  # fmt: skip
        result = run(options)
        caught = any(line.startswith(checker) for line in result.violations)
        if not result.passed:
            assert caught, "\n".join(summary_lines(result))
            clean = run(replace(options, planted_bug=None))
            assert clean.passed, "\n".join(summary_lines(clean))
            return
    pytest.fail(f"{bug} went unnoticed for {STREAM_BUG_SEEDS_MAX} seeds")


def test_mvcc_disagreement_names_the_members_at_one_applied_index() -> None:
    same = MvccDigest(40, 21, 1, 0xABC)
    assert disagreement({"m1": same, "m2": same, "m3": MvccDigest(39, 20, 1, 0x123)}) == ""
    text = disagreement({"m1": same, "m2": MvccDigest(40, 21, 1, 0xABD)})
    assert "applied index 40" in text and "m1" in text and "m2" in text


def test_the_txn_is_a_compare_and_put_with_an_else_range() -> None:
    by_revision = build_request(OpKind.TXN, "k1", "v", None, 0)
    assert isinstance(by_revision, rpc_pb2.TxnRequest)
    (compare,) = by_revision.compare
    assert (compare.target, compare.mod_revision, compare.key) == (rpc_pb2.Compare.MOD, 0, b"k1")
    assert by_revision.success[0].request_put.value == b"v"
    assert by_revision.failure[0].request_range.key == b"k1"
    by_value = build_request(OpKind.TXN, "k1", "v", "old", None)
    assert isinstance(by_value, rpc_pb2.TxnRequest)
    assert by_value.compare[0].target == rpc_pb2.Compare.VALUE
    serializable = build_request(OpKind.SERIAL_RANGE, "k1", None, None, None)
    assert isinstance(serializable, rpc_pb2.RangeRequest) and serializable.serializable


def test_responses_become_history_outcomes() -> None:
    present = kv_pb2.KeyValue(key=b"k", value=b"x", mod_revision=9)
    assert read_range(rpc_pb2.RangeResponse(kvs=[present])).output_value == "x"
    assert read_range(rpc_pb2.RangeResponse()).index is None
    failed = rpc_pb2.TxnResponse(
        succeeded=False,
        responses=[rpc_pb2.ResponseOp(response_range=rpc_pb2.RangeResponse(kvs=[present]))],
    )
    outcome = read_txn(failed)
    assert (outcome.succeeded, outcome.output_value, outcome.index) == (False, "x", 9)
    header = rpc_pb2.ResponseHeader(revision=12)
    assert read_txn(rpc_pb2.TxnResponse(header=header, succeeded=True)).index == 12
    assert read_delete(rpc_pb2.DeleteRangeResponse(header=header, deleted=0)).index is None


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(V3_SWEEP_SEEDS))
def test_v3_sweep_every_scenario(seed: int) -> None:
    options = RunOptions(
        seed=seed, scenario=scenario_for(seed, "all"), duration_s=V3_SWEEP_DURATION_S, api="v3"
    )
    result = run(options)
    assert result.passed, "\n".join(summary_lines(result))
