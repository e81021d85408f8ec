"""Txns on several keys: recorded as a group of per-key records, checked as one operation at
one revision (``sim.linearizability.check_txn_groups``). Hand-made histories with a known
answer, among them ones every key's own search accepts and only the group check refuses."""

from __future__ import annotations

import pytest

from sim.history import History, HistoryError, Operation, OpKind, Outcome
from sim.linearizability import Verdict, check_key, check_operations, check_txn_groups, model_view
from tests.sim.helpers import HistoryBuilder

OK, INDETERMINATE = Outcome.OK, Outcome.INDETERMINATE


def txn_group(
    b: HistoryBuilder, client: int, start: float, end: float, parts: list[dict[str, object]]
) -> list[Operation]:
    """One txn on several keys: a record a part, the first one's id as the group."""
    first = len(b.operations)
    return [
        b.op(client, OpKind.TXN, start, end, group=first, **part)  # type: ignore[arg-type]
        for part in parts
    ]


def every_key_alone_is_linearizable(ops: list[Operation]) -> bool:
    views = [view for view in map(model_view, ops) if view is not None]
    keys = {op.key for op in views}
    return all(
        check_key(key, [op for op in views if op.key == key]).verdict is Verdict.OK for key in keys
    )


def test_the_recorder_keeps_a_group_as_the_clients_one_pending_operation() -> None:
    history = History()
    ids = history.invoke_txn_group(1, [("a", 0), ("b", 4)], ["x", "y"], time_s=1.0)
    with pytest.raises(HistoryError, match="already has operation"):
        history.invoke(1, OpKind.PUT, "c", value="z", time_s=1.5)
    history.ok(ids[0], index=7, succeeded=True, time_s=2.0)
    with pytest.raises(HistoryError, match="already has operation"):
        history.invoke(1, OpKind.PUT, "c", value="z", time_s=2.0)
    history.ok(ids[1], index=7, succeeded=True, time_s=2.0)
    history.invoke(1, OpKind.PUT, "c", value="z", time_s=2.5)
    history.finish()
    first, second = history.operations[:2]
    assert (first.group, second.group) == (ids[0], ids[0])
    assert (first.key, first.prev_index, second.key, second.prev_index) == ("a", 0, "b", 4)
    assert History.from_json(history.to_json()).operations == history.operations
    assert first.label() == f"txn a (txn #{ids[0]}) if @0 →x ok@7"


def test_group_records_are_validated() -> None:
    history = History()
    with pytest.raises(HistoryError, match="two or more distinct keys"):
        history.invoke_txn_group(1, [("a", 0), ("a", 0)], ["x", "y"], time_s=0.0)
    with pytest.raises(HistoryError, match="only a txn's records form a group"):
        Operation(0, 0, OpKind.PUT, "a", 0, OK, 1, value="x", index=2, group=0)
    with pytest.raises(HistoryError, match="the revision it read at"):
        Operation(0, 0, OpKind.TXN, "a", 0, OK, 1, value="x", prev_index=0, succeeded=False,
                  group=0)  # fmt: skip
    with pytest.raises(HistoryError, match="no later mod_revision"):
        Operation(0, 0, OpKind.TXN, "a", 0, OK, 1, value="x", prev_index=0, succeeded=False,
                  group=0, output_value="v", index=9, header_revision=8)  # fmt: skip


def test_a_txn_group_that_succeeded_shares_its_revision_and_passes() -> None:
    b = HistoryBuilder()
    b.op(0, OpKind.PUT, 0, 1, key="a", value="a1", index=2)
    txn_group(b, 1, 2, 3, [
        {"key": "a", "value": "a2", "prev_index": 2, "succeeded": True, "index": 3},
        {"key": "b", "value": "b2", "prev_index": 0, "succeeded": True, "index": 3},
    ])  # fmt: skip
    b.op(0, OpKind.RANGE, 4, 5, key="a", output_value="a2", index=3)
    b.op(0, OpKind.RANGE, 4, 5, key="b", output_value="b2", index=3)
    result = check_operations(b.operations)
    assert result.verdict is Verdict.OK, result.summary()


def test_two_writes_outside_a_group_still_cannot_share_a_revision() -> None:
    b = HistoryBuilder()
    b.op(0, OpKind.PUT, 0, 1, key="a", value="a1", index=2)
    b.op(1, OpKind.PUT, 0, 1, key="b", value="b1", index=2)
    result = check_operations(b.operations)
    assert (
        result.index_order is not None
        and "two writes returned index 2" in result.index_order.reason
    )


def test_an_else_read_of_two_keys_from_two_moments_is_caught_by_the_group_check_alone() -> None:
    # b is put at revision 3 while the txn runs; the txn's else-ranges read a as of revision 3
    # but b as still absent: each key alone has an order (the read of b before the put), yet
    # no one revision shows both.
    b = HistoryBuilder()
    b.op(0, OpKind.PUT, 0, 1, key="a", value="a1", index=2)
    b.op(1, OpKind.PUT, 2, 5, key="b", value="b1", index=3)
    txn_group(b, 2, 2, 5, [
        {"key": "a", "value": "x", "prev_index": 0, "succeeded": False, "output_value": "a1",
         "index": 2, "header_revision": 3},
        {"key": "b", "value": "y", "prev_index": 9, "succeeded": False, "header_revision": 3},
    ])  # fmt: skip
    assert every_key_alone_is_linearizable(b.operations)
    found = check_txn_groups(b.operations)
    assert [violation.reason for violation in found] == [
        "its else-range read b absent at revision 3, but revision 3 had put 'b1' there"
    ]
    assert check_operations(b.operations).verdict is Verdict.VIOLATION


def test_the_same_reads_at_the_revision_before_the_put_pass() -> None:
    b = HistoryBuilder()
    b.op(0, OpKind.PUT, 0, 1, key="a", value="a1", index=2)
    b.op(1, OpKind.PUT, 2, 5, key="b", value="b1", index=3)
    txn_group(b, 2, 2, 5, [
        {"key": "a", "value": "x", "prev_index": 0, "succeeded": False, "output_value": "a1",
         "index": 2, "header_revision": 2},
        {"key": "b", "value": "y", "prev_index": 9, "succeeded": False, "header_revision": 2},
    ])  # fmt: skip
    assert check_operations(b.operations).verdict is Verdict.OK


def test_a_success_whose_second_compare_no_longer_held_is_caught() -> None:
    # The txn compared b at revision 3, but b was put again at revision 4 before the txn's
    # revision 5 (what a txn deciding on its first compare alone does).
    b = HistoryBuilder()
    b.op(0, OpKind.PUT, 0, 1, key="b", value="b1", index=3)
    b.op(1, OpKind.PUT, 2, 3, key="b", value="b2", index=4)
    txn_group(b, 2, 2, 6, [
        {"key": "a", "value": "x", "prev_index": 0, "succeeded": True, "index": 5},
        {"key": "b", "value": "y", "prev_index": 3, "succeeded": True, "index": 5},
    ])  # fmt: skip
    reasons = [violation.reason for violation in check_txn_groups(b.operations)]
    assert reasons == [
        "its compare held b at mod_revision 3 at revision 5, but revision 4 had put 'b2' in it"
    ]


def test_a_compare_on_absence_fails_to_hold_after_a_put_unless_a_delete_may_have_followed() -> None:
    b = HistoryBuilder()
    b.op(0, OpKind.PUT, 0, 1, key="b", value="b1", index=2)
    txn_group(b, 1, 2, 3, [
        {"key": "a", "value": "x", "prev_index": 0, "succeeded": True, "index": 4},
        {"key": "b", "value": "y", "prev_index": 0, "succeeded": True, "index": 4},
    ])  # fmt: skip
    assert check_txn_groups(b.operations)
    b.op(2, OpKind.DELETE_RANGE, 1, None, key="b", outcome=INDETERMINATE, note="UNAVAILABLE")
    assert not check_txn_groups(b.operations)
    assert check_operations(b.operations).verdict is Verdict.OK


def test_a_group_whose_compares_all_hold_on_what_it_read_cannot_have_failed() -> None:
    b = HistoryBuilder()
    b.op(0, OpKind.PUT, 0, 1, key="a", value="a1", index=2)
    txn_group(b, 1, 2, 3, [
        {"key": "a", "value": "x", "prev_index": 2, "succeeded": False, "output_value": "a1",
         "index": 2, "header_revision": 2},
        {"key": "b", "value": "y", "prev_index": 0, "succeeded": False, "header_revision": 2},
    ])  # fmt: skip
    reasons = [violation.reason for violation in check_operations(b.operations).local]
    assert reasons == [
        "the txn's compares failed though every one holds on what its else-ranges read"
    ]


def test_one_compare_of_a_failed_group_may_hold_on_its_own() -> None:
    # a's compare held; b's did not: the group failed, and a's record alone must not be
    # held to "its compare failed".
    b = HistoryBuilder()
    b.op(0, OpKind.PUT, 0, 1, key="a", value="a1", index=2)
    b.op(0, OpKind.PUT, 1, 2, key="b", value="b1", index=3)
    txn_group(b, 1, 3, 4, [
        {"key": "a", "value": "x", "prev_index": 2, "succeeded": False, "output_value": "a1",
         "index": 2, "header_revision": 3},
        {"key": "b", "value": "y", "prev_index": 0, "succeeded": False, "output_value": "b1",
         "index": 3, "header_revision": 3},
    ])  # fmt: skip
    result = check_operations(b.operations)
    assert result.verdict is Verdict.OK, result.summary()


def test_a_read_of_another_value_at_a_known_revision_is_caught() -> None:
    b = HistoryBuilder()
    b.op(0, OpKind.PUT, 0, 1, key="a", value="a1", index=2)
    b.op(0, OpKind.PUT, 1, 2, key="b", value="b1", index=3)
    txn_group(b, 1, 3, 4, [
        {"key": "a", "value": "x", "prev_index": 9, "succeeded": False, "output_value": "zz",
         "index": 2, "header_revision": 3},
        {"key": "b", "value": "y", "prev_index": 0, "succeeded": False, "output_value": "b1",
         "index": 3, "header_revision": 3},
    ])  # fmt: skip
    reasons = [violation.reason for violation in check_txn_groups(b.operations)]
    assert reasons == [
        "its else-range read 'zz' at mod_revision 2 of a, but that revision put 'a1' in it"
    ]
