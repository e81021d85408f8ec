"""The history model, the linearizability checker and the timeline (sim/history.py,
sim/linearizability.py, sim/timeline.py).

Hand-built histories name the claim they check; generated ones come from a sequential
simulation of one etcd v2 store (every operation takes effect at one instant inside its
interval), so they are linearizable by construction, and corrupting one read must be caught.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import re
import time
from dataclasses import dataclass
from random import Random
from xml.etree import ElementTree

import pytest

from sim.history import (
    COMPARE_FAILED,
    KEY_EXISTS,
    KEY_NOT_FOUND,
    V3_KINDS,
    History,
    HistoryError,
    Operation,
    OpKind,
    Outcome,
)
from sim.linearizability import (
    INITIAL_STATE,
    Budget,
    State,
    Verdict,
    _prepare,
    _step,
    check_history,
    check_index_order,
    check_key,
    check_operations,
)
from sim.timeline import FaultEvent, render_timeline
from tests.sim.helpers import HistoryBuilder as Builder

OK = Outcome.OK
FAILED = Outcome.FAILED
INDETERMINATE = Outcome.INDETERMINATE


# ---------------------------------------------------------------------------------------------
# Linearizable by hand


def test_sequential_set_then_read_is_linearizable() -> None:
    b = Builder()
    b.op(0, OpKind.SET, 0, 1, value="1", index=4)
    b.op(0, OpKind.READ, 2, 3, output_value="1", index=4)
    b.op(1, OpKind.DELETE, 4, 5, index=6)
    b.op(1, OpKind.READ, 6, 7, outcome=FAILED, error_code=KEY_NOT_FOUND)
    assert b.check() is Verdict.OK


def test_concurrent_overlapping_writes_and_reads_are_linearizable() -> None:
    # W1 and W2 overlap every read: the reads fix the order W1 < R1 < W2 < R2 < R3.
    b = Builder()
    b.op(0, OpKind.SET, 0, 10, value="1")
    b.op(1, OpKind.SET, 1, 9, value="2")
    b.op(2, OpKind.READ, 2, 3, output_value="1")
    b.op(3, OpKind.READ, 4, 5, output_value="2")
    b.op(2, OpKind.READ, 6, 11, output_value="2")
    assert b.check() is Verdict.OK


def test_reads_may_see_either_order_of_concurrent_writes() -> None:
    b = Builder()
    b.op(0, OpKind.SET, 0, 5, value="a")
    b.op(1, OpKind.SET, 0, 5, value="b")
    b.op(2, OpKind.READ, 6, 7, output_value="a")
    assert b.check() is Verdict.OK


def test_indeterminate_write_that_took_effect_late() -> None:
    # The client gave up at 1; the write took effect after a read that saw nothing.
    b = Builder()
    b.op(0, OpKind.SET, 0, 1, value="1", outcome=INDETERMINATE, note="timeout")
    b.op(1, OpKind.READ, 2, 3, outcome=FAILED, error_code=KEY_NOT_FOUND)
    b.op(1, OpKind.READ, 5, 6, output_value="1")
    assert b.check() is Verdict.OK


def test_indeterminate_write_that_never_took_effect() -> None:
    b = Builder()
    b.op(0, OpKind.CREATE, 0, None, value="1", outcome=INDETERMINATE)
    b.op(1, OpKind.READ, 5, 6, outcome=FAILED, error_code=KEY_NOT_FOUND)
    b.op(1, OpKind.CREATE, 7, 8, value="2", index=9)
    b.op(1, OpKind.READ, 9, 10, output_value="2", index=9)
    assert b.check() is Verdict.OK


def test_cas_chain_on_values_and_indexes() -> None:
    b = Builder()
    b.op(0, OpKind.CREATE, 0, 1, value="a", index=5)
    b.op(1, OpKind.CAS, 2, 3, value="b", prev_value="a", index=7)
    b.op(2, OpKind.CAS, 2.5, 4, value="z", prev_value="a", outcome=FAILED, error_code=101)
    b.op(0, OpKind.CAS, 5, 6, value="c", prev_value="b", index=9)
    b.op(1, OpKind.READ, 7, 8, output_value="c", index=9)
    b.op(2, OpKind.CAS, 9, 10, value="d", prev_index=9, index=12)
    b.op(0, OpKind.CAS, 11, 12, value="e", prev_index=9, outcome=FAILED, error_code=101)
    b.op(1, OpKind.CAD, 13, 14, prev_value="d", prev_index=12, index=13)
    b.op(2, OpKind.CAD, 15, 16, prev_value="d", outcome=FAILED, error_code=KEY_NOT_FOUND)
    b.op(0, OpKind.UPDATE, 17, 18, value="f", outcome=FAILED, error_code=KEY_NOT_FOUND)
    assert b.check() is Verdict.OK


def test_concurrent_creates_one_wins() -> None:
    b = Builder()
    b.op(0, OpKind.CREATE, 0, 3, value="a")
    b.op(1, OpKind.CREATE, 1, 2, value="b", outcome=FAILED, error_code=KEY_EXISTS)
    b.op(2, OpKind.READ, 4, 5, output_value="a")
    assert b.check() is Verdict.OK


def test_cas_on_prev_index_after_an_indeterminate_write_learns_the_index() -> None:
    # The set's index is unknown; the read learns it, and the CAS is held to it.
    b = Builder()
    b.op(0, OpKind.SET, 0, 1, value="a", outcome=INDETERMINATE)
    b.op(1, OpKind.READ, 2, 3, output_value="a", index=8)
    b.op(1, OpKind.CAS, 4, 5, value="b", prev_index=8, index=10)
    assert b.check() is Verdict.OK
    b.op(2, OpKind.CAS, 6, 7, value="c", prev_index=10, outcome=FAILED, error_code=101)
    assert b.check() is Verdict.VIOLATION


def test_indeterminate_cas_on_an_unknown_index_may_go_either_way() -> None:
    for observed in ("a", "b"):
        b = Builder()
        b.op(0, OpKind.SET, 0, 1, value="a", outcome=INDETERMINATE)
        b.op(1, OpKind.CAS, 2, 3, value="b", prev_index=7, outcome=INDETERMINATE)
        b.op(2, OpKind.READ, 4, 5, output_value=observed)
        assert b.check() is Verdict.OK, observed


def test_failures_with_codes_outside_the_model_are_indeterminate() -> None:
    # etcd answers a timed-out proposal with 300, and it may still commit.
    b = Builder()
    b.op(0, OpKind.SET, 0, 1, value="a", outcome=FAILED, error_code=300)
    b.op(1, OpKind.READ, 2, 3, output_value="a")
    b.op(1, OpKind.READ, 4, 5, outcome=FAILED, error_code=301)
    assert b.check() is Verdict.OK


def test_touching_intervals_count_as_concurrent() -> None:
    b = Builder()
    b.op(0, OpKind.READ, 0, 1, output_value="a")
    b.op(1, OpKind.SET, 1, 2, value="a")
    assert b.check() is Verdict.OK


# ---------------------------------------------------------------------------------------------
# Not linearizable by hand


def test_stale_read_after_a_completed_write() -> None:
    b = Builder()
    b.op(0, OpKind.SET, 0, 1, value="1")
    b.op(0, OpKind.SET, 2, 3, value="2")
    stale = b.op(1, OpKind.READ, 4, 5, output_value="1")
    result = check_operations(b.operations)
    assert result.verdict is Verdict.VIOLATION
    (violation,) = result.violations
    assert violation.key == "/x"
    assert stale.op_id in {op.op_id for op in violation.witness}


def test_a_read_after_overlapping_writes_cannot_go_back() -> None:
    b = Builder()
    b.op(0, OpKind.SET, 0, 10, value="1")
    b.op(1, OpKind.SET, 1, 9, value="2")
    b.op(2, OpKind.READ, 2, 3, output_value="1")
    b.op(3, OpKind.READ, 4, 5, output_value="2")
    b.op(2, OpKind.READ, 6, 7, output_value="1")
    assert b.check() is Verdict.VIOLATION


def test_two_successful_creates_of_one_key() -> None:
    b = Builder()
    b.op(0, OpKind.CREATE, 0, 2, value="a")
    b.op(1, OpKind.CREATE, 1, 3, value="b")
    assert b.check() is Verdict.VIOLATION


def test_cas_against_a_value_that_was_never_current() -> None:
    b = Builder()
    b.op(0, OpKind.SET, 0, 1, value="a")
    b.op(1, OpKind.CAS, 2, 3, value="b", prev_value="z")
    assert b.check() is Verdict.VIOLATION


def test_read_of_a_value_before_it_was_written() -> None:
    b = Builder()
    b.op(0, OpKind.READ, 0, 1, output_value="1")
    b.op(1, OpKind.SET, 2, 3, value="1")
    assert b.check() is Verdict.VIOLATION


def test_failure_codes_are_observations() -> None:
    absent_create_failed = Builder()
    absent_create_failed.op(0, OpKind.CREATE, 0, 1, value="a", outcome=FAILED, error_code=105)
    assert absent_create_failed.check() is Verdict.VIOLATION
    present_read_404 = Builder()
    present_read_404.op(0, OpKind.SET, 0, 1, value="a")
    present_read_404.op(0, OpKind.READ, 2, 3, outcome=FAILED, error_code=KEY_NOT_FOUND)
    assert present_read_404.check() is Verdict.VIOLATION
    matching_cas_failed = Builder()
    matching_cas_failed.op(0, OpKind.SET, 0, 1, value="a")
    matching_cas_failed.op(
        0, OpKind.CAS, 2, 3, value="b", prev_value="a", outcome=FAILED, error_code=COMPARE_FAILED
    )
    assert matching_cas_failed.check() is Verdict.VIOLATION


def test_a_read_must_return_the_index_its_value_was_written_at() -> None:
    b = Builder()
    b.op(0, OpKind.SET, 0, 1, value="a", index=4)
    b.op(1, OpKind.READ, 2, 3, output_value="a", index=5)
    assert b.check() is Verdict.VIOLATION


def test_indexes_of_one_key_increase_along_the_linearization() -> None:
    b = Builder()
    b.op(0, OpKind.SET, 0, 1, value="a", index=9)
    b.op(0, OpKind.SET, 2, 3, value="b", index=7)
    result = check_operations(b.operations)
    assert result.verdict is Verdict.VIOLATION
    assert result.violations  # caught per key, not only by the cross-key index order


def test_index_order_across_keys() -> None:
    b = Builder()
    b.op(0, OpKind.SET, 0, 1, key="/a", value="a", index=9)
    b.op(1, OpKind.SET, 2, 3, key="/b", value="b", index=7)
    result = check_operations(b.operations)
    assert [r.verdict for r in result.keys] == [Verdict.OK, Verdict.OK]
    assert result.verdict is Verdict.VIOLATION
    assert result.index_order is not None
    assert (result.index_order.earlier.op_id, result.index_order.later.op_id) == (0, 1)
    assert result.failing_op_ids() == {0, 1}

    duplicate = Builder()
    duplicate.op(0, OpKind.SET, 0, 2, key="/a", value="a", index=9)
    duplicate.op(1, OpKind.SET, 1, 3, key="/b", value="b", index=9)
    found = check_index_order(duplicate.operations)
    assert found is not None
    assert "two writes" in found.reason

    concurrent = Builder()
    concurrent.op(0, OpKind.SET, 0, 2, key="/a", value="a", index=9)
    concurrent.op(1, OpKind.SET, 1, 3, key="/b", value="b", index=7)
    assert check_index_order(concurrent.operations) is None


# ---------------------------------------------------------------------------------------------
# Budgets, partitioning, witnesses


def test_a_tiny_budget_gives_unknown_never_a_guess() -> None:
    b = Builder()
    for client in range(4):
        b.op(client, OpKind.SET, 0, 10, value=str(client))
    b.op(0, OpKind.READ, 11, 12, output_value="2")
    result = check_operations(b.operations, budget=Budget(steps=2))
    assert result.verdict is Verdict.UNKNOWN
    (unknown,) = result.unknown
    assert "step budget" in unknown.reason
    assert check_operations(b.operations).verdict is Verdict.OK


def test_a_violation_wins_over_unknown() -> None:
    b = Builder()
    for client in range(4):
        b.op(client, OpKind.SET, 0, 10, key="/slow", value=str(client))
    b.op(0, OpKind.READ, 11, 12, key="/slow", output_value="2")
    b.op(5, OpKind.READ, 0, 1, key="/bad", output_value="never written")
    result = check_operations(b.operations, budget=Budget(steps=3))
    assert result.verdict is Verdict.VIOLATION
    assert [r.key for r in result.violations] == ["/bad"]
    assert [r.key for r in result.unknown] == ["/slow"]


def test_a_time_budget_gives_unknown() -> None:
    # The clock is read every 4096 steps; one hot key of 800 operations needs more.
    history = generate_history(1, operations=800, keys=1, indeterminate_ratio=0.0)
    result = check_history(history, budget=Budget(seconds=1e-9))
    assert result.verdict is Verdict.UNKNOWN
    assert "time budget" in result.keys[0].reason


def test_budgets_are_validated() -> None:
    with pytest.raises(ValueError):
        Budget(steps=0)
    with pytest.raises(ValueError):
        Budget(seconds=0)


def test_each_key_is_checked_on_its_own() -> None:
    b = Builder()
    b.op(0, OpKind.SET, 0, 1, key="/a", value="1")
    b.op(1, OpKind.SET, 0, 1, key="/b", value="1")
    b.op(0, OpKind.READ, 2, 3, key="/a", output_value="1")
    b.op(1, OpKind.READ, 2, 3, key="/b", outcome=FAILED, error_code=KEY_NOT_FOUND)
    b.op(2, OpKind.READ, 2, 3, key="/c", outcome=FAILED, error_code=KEY_NOT_FOUND)
    result = check_operations(b.operations)
    assert [(r.key, r.verdict, r.operations) for r in result.keys] == [
        ("/a", Verdict.OK, 2),
        ("/b", Verdict.VIOLATION, 2),
        ("/c", Verdict.OK, 1),
    ]
    with pytest.raises(ValueError):
        check_key("/a", b.operations)


def test_the_witness_is_small_and_itself_a_violation() -> None:
    # A long linearizable run on the key, then a stale read: the witness keeps the read and the
    # writes that make it stale, not the whole history (nor the earlier rounds).
    b = Builder()
    for round_number in range(30):
        start = round_number * 10.0
        b.op(0, OpKind.SET, start, start + 1, value=f"v{round_number}")
        b.op(1, OpKind.READ, start + 2, start + 3, output_value=f"v{round_number}")
    b.op(2, OpKind.SET, 300, 301, value="last")
    stale = b.op(1, OpKind.READ, 302, 303, output_value="v29")
    b.op(1, OpKind.READ, 304, 305, output_value="last")
    result = check_operations(b.operations)
    (violation,) = result.violations
    ids = [op.op_id for op in violation.witness]
    # the write of the value read, the set that overwrote it, the read
    assert ids == [58, 60, stale.op_id], [op.describe() for op in violation.witness]
    assert check_operations(violation.witness).verdict is Verdict.VIOLATION
    unminimized = check_operations(b.operations, minimize=False)
    assert len(unminimized.violations[0].witness) == len(b.operations)


# ---------------------------------------------------------------------------------------------
# The history model and recorder


def test_recorder_pairs_invokes_and_completions() -> None:
    now = [0.0]
    history = History(clock=lambda: now[0])
    write = history.invoke(1, OpKind.SET, "/k", value="a")
    now[0] = 0.5
    read = history.invoke(2, OpKind.READ, "/k")
    now[0] = 1.0
    history.ok(write, index=4)
    history.ok(read, output_value="a", index=4, time_s=1.25)
    cas = history.invoke(1, OpKind.CAS, "/k", value="b", prev_index=3, time_s=2.0)
    history.fail(cas, error_code=COMPARE_FAILED, time_s=2.5)
    lost = history.invoke(2, OpKind.DELETE, "/k", time_s=3.0)
    history.indeterminate(lost, note="timeout", time_s=4.0)
    hanging = history.invoke(1, OpKind.UPDATE, "/k", value="c", time_s=5.0)
    assert history.pending_ids == (hanging,)
    with pytest.raises(ValueError):
        check_history(history)
    (closed,) = history.finish()
    assert closed.outcome is INDETERMINATE
    assert closed.complete_s is None
    assert [op.op_id for op in history] == [0, 1, 2, 3, 4]
    assert history.operations[1].complete_s == 1.25
    assert history.operations[1].ok
    assert history.operations[3].effective_complete_s == float("inf")
    assert check_history(history).verdict is Verdict.OK


def test_recorder_rejects_misuse() -> None:
    history = History()
    with pytest.raises(HistoryError, match="no clock"):
        history.invoke(1, OpKind.READ, "/k")
    first = history.invoke(1, OpKind.READ, "/k", time_s=0)
    with pytest.raises(HistoryError, match="pending"):
        history.invoke(1, OpKind.READ, "/k", time_s=1)
    with pytest.raises(HistoryError, match="needs"):
        history.invoke(2, OpKind.SET, "/k", time_s=1)
    with pytest.raises(HistoryError, match="prev_index"):
        history.invoke(2, OpKind.CAS, "/k", value="a", time_s=1)
    with pytest.raises(HistoryError, match="not before"):
        history.ok(first, output_value="a", time_s=-1)
    with pytest.raises(HistoryError, match="absent key fails"):
        history.ok(first, time_s=1)
    with pytest.raises(HistoryError, match="not pending"):
        history.ok(99, time_s=1)
    history.fail(first, error_code=KEY_NOT_FOUND, time_s=1)
    with pytest.raises(HistoryError, match="already"):
        history.add(history.operations[0])


def test_records_are_validated() -> None:
    base = {"op_id": 0, "client_id": 0, "key": "/k", "invoke_s": 0.0, "complete_s": 1.0}
    bad: list[dict[str, object]] = [
        {"kind": OpKind.READ, "outcome": OK},  # ok read without a value
        {"kind": OpKind.SET, "outcome": OK, "value": "a", "output_value": "a"},
        {"kind": OpKind.SET, "outcome": FAILED, "value": "a", "index": 3},
        {"kind": OpKind.SET, "outcome": OK, "value": "a", "error_code": 101},
        {"kind": OpKind.DELETE, "outcome": OK, "value": "a"},
        {"kind": OpKind.CAD, "outcome": OK, "prev_index": 0},
        {"kind": OpKind.READ, "outcome": OK, "output_value": "a", "complete_s": None},
        {"kind": OpKind.READ, "outcome": OK, "output_value": "a", "invoke_s": float("nan")},
    ]
    for fields in bad:
        with pytest.raises(HistoryError):
            Operation(**(base | fields))  # type: ignore[arg-type]


def test_json_round_trip_is_exact_and_deterministic() -> None:
    history = generate_history(seed=3, operations=300)
    text = history.to_json()
    again = History.from_json(text)
    assert again.operations == history.operations
    assert again.to_json() == text
    assert json.loads(text)["format"] == "troika-history/1"
    assert len(text.splitlines()) == len(history) + 2
    with pytest.raises(HistoryError):
        History.from_json('{"format": "other", "operations": []}')
    with pytest.raises(HistoryError):
        History.from_json('{"format": "troika-history/1", "operations": [{"id": 0}]}')
    with pytest.raises(HistoryError):
        History.from_json("[")
    pending = History()
    pending.invoke(0, OpKind.READ, "/k", time_s=0)
    with pytest.raises(HistoryError):
        pending.to_json()


# ---------------------------------------------------------------------------------------------
# Generated histories: linearizable by construction


@dataclass(frozen=True)
class _Request:
    client: int
    kind: OpKind
    key: str
    value: str | None = None
    prev_value: str | None = None
    prev_index: int | None = None


@dataclass
class _Store:
    """One etcd v2 store, sequential: the specification the generator runs."""

    values: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)
    index: int = 3

    def apply(self, request: _Request) -> tuple[str | None, int | None, int | None]:
        """(value read, index, error code) of ``request`` applied now."""
        current = self.values.get(request.key)
        kind = request.kind
        if kind is OpKind.READ:
            if current is None:
                return None, None, KEY_NOT_FOUND
            return current[0], current[1], None
        if kind is OpKind.CREATE and current is not None:
            return None, None, KEY_EXISTS
        if kind not in (OpKind.SET, OpKind.CREATE) and current is None:
            return None, None, KEY_NOT_FOUND
        if kind in (OpKind.CAS, OpKind.CAD):
            assert current is not None
            if (request.prev_value is not None and request.prev_value != current[0]) or (
                request.prev_index is not None and request.prev_index != current[1]
            ):
                return None, None, COMPARE_FAILED
        self.index += 1
        if kind in (OpKind.DELETE, OpKind.CAD):
            del self.values[request.key]
        else:
            assert request.value is not None
            self.values[request.key] = (request.value, self.index)
        return None, self.index, None


KIND_WEIGHTS = {
    OpKind.READ: 40,
    OpKind.SET: 20,
    OpKind.CREATE: 8,
    OpKind.UPDATE: 8,
    OpKind.CAS: 14,
    OpKind.DELETE: 4,
    OpKind.CAD: 6,
}


class _Generator:
    """Clients issuing random requests against one sequential store, in virtual time.

    Each request takes effect at one instant inside its interval; an indeterminate write took
    effect (possibly after its client gave up) or not, at random. Every written value is unique,
    so corruptions can be aimed.
    """

    def __init__(self, seed: int, keys: int, indeterminate_ratio: float) -> None:
        self.rng = Random(seed)
        self.keys = keys
        self.indeterminate_ratio = indeterminate_ratio
        self.store = _Store()
        self.history = History()
        self.events: list[tuple[float, int, str, int]] = []
        self.sequence = 0
        self.values_written = 0
        self.requests: dict[int, _Request] = {}
        self.complete_s: dict[int, float] = {}
        self.indeterminate: set[int] = set()

    def push(self, time_s: float, what: str, number: int) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (time_s, self.sequence, what, number))

    def request(self, client: int, key: str) -> _Request:
        kind = self.rng.choices(list(KIND_WEIGHTS), list(KIND_WEIGHTS.values()))[0]
        value = prev_value = prev_index = None
        if kind in (OpKind.SET, OpKind.CREATE, OpKind.UPDATE, OpKind.CAS):
            self.values_written += 1
            value = f"v{self.values_written}"
        if kind in (OpKind.CAS, OpKind.CAD):
            current = self.store.values.get(key)
            guess = self.rng.random()
            if current is not None and guess < 0.35:
                prev_value = current[0]
            elif current is not None and guess < 0.7:
                prev_index = current[1]
            else:
                prev_value = f"v{self.rng.randint(1, self.values_written + 1)}"
        return _Request(client, kind, key, value, prev_value, prev_index)

    def invoke(self, now_s: float, client: int) -> None:
        rng = self.rng
        request = self.request(client, f"/k{rng.randrange(self.keys)}")
        op_id = self.history.invoke(
            client,
            request.kind,
            request.key,
            value=request.value,
            prev_value=request.prev_value,
            prev_index=request.prev_index,
            time_s=now_s,
        )
        self.requests[op_id] = request
        apply_s = now_s + rng.uniform(0.0005, 0.02)
        self.complete_s[op_id] = apply_s + rng.uniform(0.0005, 0.02)
        takes_effect = True
        if request.kind is not OpKind.READ and rng.random() < self.indeterminate_ratio:
            self.indeterminate.add(op_id)
            takes_effect = rng.random() < 0.5
            # The client may give up before or after the write applies.
            self.push(now_s + rng.uniform(0.001, 0.03), "give-up", op_id)
        if takes_effect:
            self.push(apply_s, "apply", op_id)

    def run(self, clients: int, operations: int) -> History:
        for client in range(clients):
            self.push(self.rng.uniform(0, 0.01), "invoke", client)
        invoked = 0
        outputs: dict[int, tuple[str | None, int | None, int | None]] = {}
        while self.events:
            now_s, _sequence, what, number = heapq.heappop(self.events)
            if what == "invoke":
                if invoked < operations:
                    invoked += 1
                    self.invoke(now_s, number)
                continue
            request = self.requests[number]
            if what == "apply":
                value_read, index, error_code = self.store.apply(request)
                if number not in self.indeterminate:
                    outputs[number] = (value_read, index, error_code)
                    self.push(self.complete_s[number], "complete", number)
                continue
            if what == "give-up":
                self.history.indeterminate(number, note="timeout", time_s=now_s)
            else:
                value_read, index, error_code = outputs.pop(number)
                if error_code is None:
                    self.history.ok(number, output_value=value_read, index=index, time_s=now_s)
                else:
                    self.history.fail(number, error_code=error_code, time_s=now_s)
            self.push(now_s + self.rng.uniform(0, 0.005), "invoke", request.client)
        assert not self.history.pending_ids
        return self.history


def generate_history(
    seed: int,
    *,
    clients: int = 8,
    operations: int = 2000,
    keys: int = 20,
    indeterminate_ratio: float = 0.03,
) -> History:
    """A random history that is linearizable by construction (see ``_Generator``)."""
    return _Generator(seed, keys, indeterminate_ratio).run(clients, operations)


@pytest.mark.parametrize("seed", range(12))
def test_generated_histories_are_linearizable(seed: int) -> None:
    history = generate_history(seed, operations=600, keys=6, indeterminate_ratio=0.08)
    result = check_history(history)
    assert result.verdict is Verdict.OK, result.summary()


def test_a_realistic_history_checks_well_under_a_second() -> None:
    history = generate_history(2026, clients=8, operations=2000, keys=20)
    outcomes = dict.fromkeys(Outcome, 0)
    for op in history:
        outcomes[op.outcome] += 1
    assert len(history) == 2000
    assert outcomes[INDETERMINATE] > 0
    assert outcomes[FAILED] > 0
    started = time.perf_counter()
    result = check_history(history)
    elapsed = time.perf_counter() - started
    assert result.verdict is Verdict.OK, result.summary()
    assert len(result.keys) == 20
    assert elapsed < 1.0, f"{elapsed:.3f} s"


def _reads(history: History) -> list[Operation]:
    return [op for op in history if op.kind is OpKind.READ and op.ok]


def _replace(history: History, corrupted: Operation) -> list[Operation]:
    return [corrupted if op.op_id == corrupted.op_id else op for op in history]


def _assert_caught(history: History, corrupted: Operation) -> None:
    result = check_operations(_replace(history, corrupted))
    assert result.verdict is Verdict.VIOLATION, corrupted.describe()
    (violation,) = result.violations
    assert violation.key == corrupted.key
    witness_ids = {op.op_id for op in violation.witness}
    # Without the corrupted read the rest is linearizable, so every proof must contain it.
    assert corrupted.op_id in witness_ids
    assert check_operations(violation.witness).verdict is Verdict.VIOLATION


@pytest.mark.parametrize("seed", range(8))
def test_a_read_of_a_future_value_is_caught(seed: int) -> None:
    history = generate_history(seed, operations=800, keys=5)
    rng = Random(seed)
    writes = [op for op in history if op.value is not None and op.ok]
    candidates = []
    for read in _reads(history):
        assert read.complete_s is not None
        later = [w for w in writes if w.key == read.key and w.invoke_s > read.complete_s]
        if later:
            candidates.append((read, later[0]))
    read, future = rng.choice(candidates)
    _assert_caught(history, dataclasses.replace(read, output_value=future.value, index=None))


@pytest.mark.parametrize("seed", range(8))
def test_a_stale_read_is_caught(seed: int) -> None:
    history = generate_history(seed, operations=800, keys=5)
    rng = Random(seed)
    writes = [op for op in history if op.is_write and op.ok]
    candidates = []
    for read in _reads(history):
        # a value written, then overwritten (or deleted), before the read was invoked
        for older in writes:
            if older.key != read.key or older.value is None or older.value == read.output_value:
                continue
            assert older.complete_s is not None
            if any(
                newer.key == read.key
                and newer.invoke_s > older.complete_s
                and newer.complete_s is not None
                and newer.complete_s < read.invoke_s
                for newer in writes
            ):
                candidates.append((read, older))
                break
    read, older = rng.choice(candidates)
    _assert_caught(history, dataclasses.replace(read, output_value=older.value, index=None))


@pytest.mark.parametrize("seed", range(4))
def test_a_wrong_index_or_a_missing_key_is_caught(seed: int) -> None:
    history = generate_history(seed, operations=500, keys=4, indeterminate_ratio=0.0)
    rng = Random(seed)
    read = rng.choice(_reads(history))
    assert read.index is not None
    _assert_caught(history, dataclasses.replace(read, index=read.index + 1))
    _assert_caught(
        history,
        dataclasses.replace(
            read, outcome=FAILED, output_value=None, index=None, error_code=KEY_NOT_FOUND
        ),
    )


# ---------------------------------------------------------------------------------------------
# The timeline


def _svg_of(page: str) -> ElementTree.Element:
    match = re.search(r"<svg.*</svg>", page, re.DOTALL)
    assert match is not None
    return ElementTree.fromstring(match.group(0))


SVG = "{http://www.w3.org/2000/svg}"


def test_timeline_is_a_self_contained_page_with_every_client() -> None:
    history = generate_history(5, clients=6, operations=200, keys=3, indeterminate_ratio=0.1)
    faults = [FaultEvent(0.05, "partition {1} | {2,3}", end_s=0.15), FaultEvent(0.2, "crash n2")]
    page = render_timeline(history, faults=faults, title="seed <5>")
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    assert "<title>seed &lt;5&gt;</title>" in page
    assert "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    svg = _svg_of(page)
    rows = svg.findall(f"{SVG}g[@class='client']")
    assert [row.get("data-client") for row in rows] == [str(n) for n in range(6)]
    drawn = svg.findall(f".//{SVG}g[@data-op]")
    assert len(drawn) == len(history)
    assert len(svg.findall(f".//{SVG}line[@class='fault']")) == 2
    assert len(svg.findall(f".//{SVG}rect[@class='fault-band']")) == 1
    assert "crash n2" in page
    assert "failing" not in {c for g in drawn for c in (g.get("class") or "").split()}
    assert render_timeline(history, faults=faults, title="seed <5>") == page


def test_timeline_highlights_the_failing_operations() -> None:
    b = Builder()
    b.op(0, OpKind.SET, 0, 1, value="1")
    b.op(0, OpKind.SET, 2, 3, value="2")
    b.op(1, OpKind.READ, 4, 5, output_value="1")
    b.op(2, OpKind.SET, 0.5, None, value="3", outcome=INDETERMINATE)
    b.op(3, OpKind.SET, 0.5, 2, value="4", outcome=INDETERMINATE, note="reset")
    result = check_operations(b.operations)
    page = render_timeline(b.operations, result=result)
    svg = _svg_of(page)
    failing = {
        int(g.get("data-op") or -1)
        for g in svg.findall(f".//{SVG}g[@data-op]")
        if "failing" in (g.get("class") or "").split()
    }
    assert failing == set(result.failing_op_ids())
    assert 2 in failing
    assert "Failing operations" in page
    assert "not linearizable" in page
    highlighted = render_timeline(b.operations, highlight=[4])
    assert 'class="op indeterminate failing" data-op="4"' in highlighted


def test_timeline_of_an_empty_history() -> None:
    page = render_timeline([])
    _svg_of(page)
    assert "0 operations" in page


# ---------------------------------------------------------------------------------------------
# The search against brute force


def _brute_force(operations: list[Operation]) -> Verdict:
    """Every order of the operations that respects real time, each indeterminate one taken or
    not, through the same model (``step``); remembering only exact (done, state) pairs, with
    none of the search's reductions."""
    prepared = [item for item in map(_prepare, operations) if item is not None]
    known = frozenset(number for number, item in enumerate(prepared) if item.expect.value != "any")
    failed: set[tuple[frozenset[int], State]] = set()

    def extend(done: frozenset[int], state: State) -> bool:
        if known <= done or (done, state) in failed:
            return known <= done
        pending = [number for number in range(len(prepared)) if number not in done]
        deadline_s = min(prepared[number].complete_s for number in pending)
        for number in pending:
            if prepared[number].invoke_s > deadline_s:
                continue
            for after in _step(state, prepared[number]):
                if extend(done | {number}, after):
                    return True
        failed.add((done, state))
        return False

    return Verdict.OK if extend(frozenset(), INITIAL_STATE) else Verdict.VIOLATION


def _random_operation(rng: Random, op_id: int) -> Operation:
    kind = rng.choice([kind for kind in OpKind if kind not in V3_KINDS])
    values = ["a", "b", "c"]
    start = rng.uniform(0, 10)
    fields: dict[str, object] = {}
    if kind in (OpKind.SET, OpKind.CREATE, OpKind.UPDATE, OpKind.CAS):
        fields["value"] = rng.choice(values)
    if kind in (OpKind.CAS, OpKind.CAD):
        if rng.random() < 0.6:
            fields["prev_value"] = rng.choice(values)
        if rng.random() < 0.5 or "prev_value" not in fields:
            fields["prev_index"] = rng.randint(1, 6)
    outcome = rng.choice([OK, OK, FAILED, INDETERMINATE])
    end: float | None = start + rng.uniform(0, 6)
    if outcome is OK:
        if kind is OpKind.READ:
            fields["output_value"] = rng.choice(values)
        if rng.random() < 0.6:
            fields["index"] = rng.randint(1, 6)
    elif outcome is FAILED:
        fields["error_code"] = rng.choice([KEY_NOT_FOUND, COMPARE_FAILED, KEY_EXISTS, 300])
    elif rng.random() < 0.3:
        end = None
    return Operation(
        op_id,
        op_id,
        kind,
        "/x",
        start,
        outcome,
        end,
        **fields,  # type: ignore[arg-type]
    )


def test_the_search_agrees_with_brute_force() -> None:
    rng = Random(7)
    verdicts = {Verdict.OK: 0, Verdict.VIOLATION: 0}
    for _case in range(1500):
        operations = [_random_operation(rng, op_id) for op_id in range(rng.randint(1, 7))]
        expected = _brute_force(operations)
        result = check_operations(operations)
        assert result.verdict is expected, "\n".join(op.describe() for op in operations)
        verdicts[expected] += 1
        for violation in result.violations:
            assert _brute_force(list(violation.witness)) is Verdict.VIOLATION
    assert min(verdicts.values()) > 200, verdicts


def test_the_search_agrees_with_brute_force_on_nearly_linearizable_histories() -> None:
    rng = Random(11)
    verdicts = {Verdict.OK: 0, Verdict.VIOLATION: 0}
    for seed in range(300):
        history = generate_history(
            seed,
            clients=rng.randint(2, 5),
            operations=rng.randint(3, 30),
            keys=1,
            indeterminate_ratio=0.3,
        )
        operations = list(history)
        position = rng.randrange(len(operations))
        op = operations[position]
        if op.kind is OpKind.READ and op.ok:
            operations[position] = dataclasses.replace(
                op, output_value=rng.choice(["v1", "v2", op.output_value]), index=None
            )
        elif op.ok and op.index is not None:
            operations[position] = dataclasses.replace(op, index=rng.randint(1, 12))
        expected = _brute_force(operations)
        assert check_operations(operations).verdict is expected, seed
        verdicts[expected] += 1
    assert min(verdicts.values()) > 50, verdicts
