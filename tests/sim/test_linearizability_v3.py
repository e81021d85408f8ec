"""The checker on v3 histories: put, range, delete-range, txn compare-and-put, serializable
ranges; hand-made histories with a known answer, and random ones against a brute-force
reference written from etcd's v3 semantics (not from the v2 model the checker maps them to)."""

from __future__ import annotations

import itertools
import math
from random import Random

import pytest

from sim.history import History, HistoryError, Operation, OpKind, Outcome
from sim.linearizability import Verdict, check_operations, model_view
from tests.sim.helpers import HistoryBuilder

OK, FAILED, INDETERMINATE = Outcome.OK, Outcome.FAILED, Outcome.INDETERMINATE


def test_a_sequential_v3_history_is_linearizable() -> None:
    b = HistoryBuilder("/k")
    b.op(0, OpKind.RANGE, 0, 1)  # absent
    b.op(0, OpKind.PUT, 2, 3, value="a", index=2)
    b.op(0, OpKind.RANGE, 4, 5, output_value="a", index=2)
    b.op(0, OpKind.TXN, 6, 7, value="b", prev_index=2, succeeded=True, index=3)
    b.op(0, OpKind.TXN, 8, 9, value="c", prev_value="a", succeeded=False, output_value="b", index=3)
    b.op(0, OpKind.TXN, 10, 11, value="c", prev_index=0, succeeded=False, output_value="b", index=3)
    b.op(0, OpKind.DELETE_RANGE, 12, 13, succeeded=True, index=4)
    b.op(0, OpKind.DELETE_RANGE, 14, 15, succeeded=False)
    b.op(0, OpKind.TXN, 16, 17, value="d", prev_index=0, succeeded=True, index=5)
    b.op(0, OpKind.SERIAL_RANGE, 18, 19, output_value="d", index=5)
    assert check_operations(b.operations).verdict is Verdict.OK


def test_a_stale_linearizable_range_is_a_violation() -> None:
    b = HistoryBuilder("/k")
    b.op(0, OpKind.PUT, 0, 1, value="a", index=2)
    b.op(1, OpKind.PUT, 2, 3, value="b", index=3)
    stale = b.op(2, OpKind.RANGE, 4, 5, output_value="a", index=2)
    result = check_operations(b.operations)
    assert result.verdict is Verdict.VIOLATION
    (key,) = result.violations
    assert stale in key.witness  # the recorded v3 record, not its model view
    assert all(op.kind in (OpKind.PUT, OpKind.RANGE) for op in key.witness)


def test_the_same_stale_range_serializable_is_allowed() -> None:
    b = HistoryBuilder("/k")
    b.op(0, OpKind.PUT, 0, 1, value="a", index=2)
    b.op(1, OpKind.PUT, 2, 3, value="b", index=3)
    b.op(2, OpKind.SERIAL_RANGE, 4, 5, output_value="a", index=2)
    assert check_operations(b.operations).verdict is Verdict.OK


@pytest.mark.parametrize(
    ("read", "reason"),
    [
        ({"output_value": "never"}, "no put or txn had begun"),
        ({"output_value": "late"}, "no put or txn had begun"),
        ({"output_value": "a", "index": 7}, "another revision"),
        ({"output_value": "refused"}, "no put or txn had begun"),
    ],
)
def test_a_serializable_range_must_return_a_value_that_was_written(
    read: dict[str, object], reason: str
) -> None:
    b = HistoryBuilder("/k")
    b.op(0, OpKind.PUT, 0, 1, value="a", index=2)
    b.op(1, OpKind.TXN, 0, 1, value="refused", prev_value="x", succeeded=False)
    b.op(1, OpKind.PUT, 9, 10, value="late", index=3)
    b.op(2, OpKind.SERIAL_RANGE, 4, 5, outcome=OK, **read)  # type: ignore[arg-type]
    result = check_operations(b.operations)
    assert result.verdict is Verdict.VIOLATION
    (local,) = result.local
    assert reason in local.reason
    assert local.op.op_id == 3


def test_a_txn_whose_else_branch_saw_a_matching_state_is_a_violation() -> None:
    b = HistoryBuilder("/k")
    b.op(0, OpKind.PUT, 0, 1, value="a", index=2)
    b.op(1, OpKind.TXN, 2, 3, value="b", prev_index=2, succeeded=False, output_value="a", index=2)
    result = check_operations(b.operations)
    assert result.verdict is Verdict.VIOLATION
    assert result.local and "compare failed" in result.local[0].reason


def test_two_creates_by_mod_revision_zero_cannot_both_succeed() -> None:
    b = HistoryBuilder("/k")
    b.op(0, OpKind.TXN, 0, 2, value="a", prev_index=0, succeeded=True, index=2)
    b.op(1, OpKind.TXN, 1, 3, value="b", prev_index=0, succeeded=True, index=3)
    assert check_operations(b.operations).verdict is Verdict.VIOLATION


def test_an_indeterminate_put_may_explain_a_later_read() -> None:
    b = HistoryBuilder("/k")
    b.op(0, OpKind.PUT, 0, 1, outcome=INDETERMINATE, value="a", note="UNAVAILABLE")
    b.op(1, OpKind.PUT, 0, 1, outcome=FAILED, value="b", note="RESOURCE_EXHAUSTED")
    b.op(2, OpKind.RANGE, 5, 6, output_value="a", index=9)
    b.op(2, OpKind.RANGE, 7, 8, output_value="b", index=10)
    b.op(2, OpKind.RANGE, 9, 10, output_value="a", index=9)
    result = check_operations(b.operations)
    assert result.verdict is Verdict.VIOLATION  # a@9 again after b@10: revisions went back


def test_a_delete_that_deleted_nothing_says_the_key_was_absent() -> None:
    b = HistoryBuilder("/k")
    b.op(0, OpKind.PUT, 0, 1, value="a", index=2)
    b.op(1, OpKind.DELETE_RANGE, 2, 3, succeeded=False)
    assert check_operations(b.operations).verdict is Verdict.VIOLATION


def test_v3_records_are_validated_and_survive_json() -> None:
    with pytest.raises(HistoryError, match="succeeded"):
        Operation(0, 0, OpKind.TXN, "/k", 0, OK, 1, value="a", prev_value="b")
    with pytest.raises(HistoryError, match="either the value or the mod_revision"):
        Operation(0, 0, OpKind.TXN, "/k", 0, OK, 1, value="a", prev_value="b", prev_index=2,
                  succeeded=True)  # fmt: skip
    with pytest.raises(HistoryError, match="no mod_revision"):
        Operation(0, 0, OpKind.RANGE, "/k", 0, OK, 1, index=3)
    b = HistoryBuilder("/k")
    b.op(0, OpKind.TXN, 0, 1, value="a", prev_index=0, succeeded=True, index=2)
    b.op(0, OpKind.RANGE, 2, 3)
    history = History.of(b.operations)
    assert History.from_json(history.to_json()).operations == history.operations
    assert b.operations[0].label() == "txn /k if @0 →a ok@2"
    assert b.operations[1].label() == "range /k ok absent"


def test_the_model_view_keeps_ids_and_times() -> None:
    b = HistoryBuilder("/k")
    op = b.op(3, OpKind.TXN, 1, 2, value="a", prev_value="z", succeeded=False)
    view = model_view(op)
    assert view is not None
    assert (view.kind, view.outcome, view.op_id, view.invoke_s) == (OpKind.READ, FAILED, 0, 1)
    assert model_view(b.op(3, OpKind.SERIAL_RANGE, 3, 4)) is None


# -- random histories against a brute-force reference of etcd's v3 semantics -----------------

VALUES = ("a", "b", "c")


def _random_v3_operation(rng: Random, op_id: int) -> Operation:
    """Revisions left out (the v2 brute-force test covers them): values only, and mod_revision
    compares with 0 (absent)."""
    kind = rng.choice([OpKind.PUT, OpKind.RANGE, OpKind.DELETE_RANGE, OpKind.TXN, OpKind.TXN])
    start = rng.uniform(0, 10)
    end: float | None = start + rng.uniform(0, 6)
    outcome = rng.choice([OK, OK, OK, FAILED, INDETERMINATE])
    fields: dict[str, object] = {}
    if kind in (OpKind.PUT, OpKind.TXN):
        fields["value"] = rng.choice(VALUES)
    if kind is OpKind.TXN:
        if rng.random() < 0.5:
            fields["prev_value"] = rng.choice(VALUES)
        else:
            fields["prev_index"] = 0
    if outcome is OK:
        seen = rng.choice((*VALUES, None))
        if kind is OpKind.RANGE:
            fields["output_value"] = seen
        if kind in (OpKind.DELETE_RANGE, OpKind.TXN):
            fields["succeeded"] = rng.random() < 0.5
        if kind is OpKind.TXN and not fields["succeeded"]:
            fields["output_value"] = seen
    elif outcome is INDETERMINATE and rng.random() < 0.3:
        end = None
    return Operation(op_id, op_id, kind, "/k", start, outcome, end, **fields)  # type: ignore[arg-type]


def _apply(state: str | None, op: Operation, determinate: bool) -> list[str | None]:
    """The states after ``op`` from ``state`` (etcd 3.4's semantics of one key); empty when its
    recorded outcome is impossible there. Not determinate: any outcome, or no effect."""
    holds = True
    if op.kind is OpKind.TXN:
        holds = (
            state is not None and state == op.prev_value
            if op.prev_value is not None
            else state is None
        )
    if not determinate:
        if op.kind is OpKind.RANGE:
            return [state]
        if op.kind is OpKind.DELETE_RANGE:
            return [state, None]
        return [state, op.value] if holds else [state]
    match op.kind:
        case OpKind.PUT:
            return [op.value]
        case OpKind.RANGE:
            return [state] if op.output_value == state else []
        case OpKind.DELETE_RANGE:
            return [None] if op.succeeded == (state is not None) else []
        case OpKind.TXN:
            if op.succeeded:
                return [op.value] if holds else []
            return [state] if not holds and op.output_value == state else []
    raise AssertionError(op.kind)


def _brute_force(operations: list[Operation]) -> Verdict:
    determinate = [op for op in operations if op.outcome is OK]
    optional = [op for op in operations if op.outcome is not OK and op.kind is not OpKind.RANGE]
    for count in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, count):
            for order in itertools.permutations([*determinate, *chosen]):
                if _legal(order):
                    return Verdict.OK
    return Verdict.VIOLATION


def _legal(order: tuple[Operation, ...]) -> bool:
    for position, op in enumerate(order):
        for later in order[position + 1 :]:
            end = later.effective_complete_s if later.outcome is OK else math.inf
            if end < op.invoke_s:
                return False
    states: set[str | None] = {None}
    for op in order:
        states = {after for state in states for after in _apply(state, op, op.outcome is OK)}
        if not states:
            return False
    return True


def test_the_checker_agrees_with_a_brute_force_v3_reference() -> None:
    rng = Random(3)
    verdicts = {Verdict.OK: 0, Verdict.VIOLATION: 0}
    for _case in range(800):
        operations = [_random_v3_operation(rng, op_id) for op_id in range(rng.randint(1, 5))]
        expected = _brute_force(operations)
        result = check_operations(operations)
        if not result.local:  # a self-contradicting txn is caught apart from the search
            assert result.verdict is expected, "\n".join(op.describe() for op in operations)
        else:
            assert result.verdict is Verdict.VIOLATION and expected is Verdict.VIOLATION
        verdicts[expected] += 1
    assert min(verdicts.values()) > 100, verdicts
