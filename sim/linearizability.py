"""Is a history of v2 keys or v3 KV requests linearizable? A Wing-Gong-Lowe search, as Porcupine
does it.

Theory of operation
===================

Linearizable means: every operation can be given a point in time between its invoke and its
completion such that, taken in the order of those points, the operations are a legal run of the
sequential specification of the store. The checker searches for such an order.

P-compositionality. Linearizability is local: a history is linearizable iff the sub-history of
every object is. v2 keys are independent objects, so the history is partitioned by key and each
key is searched on its own (Horn and Kroening, "Faster linearizability checking via
P-compositionality"; Porcupine's ``Partition``). The per-key searches are small even when the
whole history is long.

The search (Wing and Gong; Lowe's memoization; Porcupine's ``checkSingle``). The call and
return events of a key's operations with a known outcome form one list sorted by time (a call
before a return at the same instant, so touching intervals count as concurrent, the permissive
reading). At each step the candidates are the calls before the list's first return, then the
indeterminate operations (kept aside, they have no return) invoked before that return. A
candidate legal in the current model state is *linearized*: its call and return are lifted out
of the list and the search goes one level deeper; when no candidate is left it backtracks and
puts the last one back. A first return that cannot be passed (its operation not linearized, no
candidate left) at the top level means no order exists. Every configuration reached (known
outcomes linearized, indeterminate operations linearized, model state; the sets as integer
bitsets) is remembered, and one seen before, or dominated by one seen before (the same, with
fewer indeterminate operations used), is not entered again: whatever followed it then fails
again now. The search ends well as soon as every known outcome is linearized.

Indeterminate operations are what make the search explode (each may be placed anywhere after
its invoke), so three reductions keep them in check, each of which keeps at least one
linearization whenever there is one: known outcomes are tried before them at every step;
values that no operation left to linearize reads or compares are stored as one anonymous value
(so old unobserved writes stop making states differ); and of several indeterminate operations
that act alike from now on, only the first is tried, and never an indeterminate ``set`` right
after another indeterminate operation (the set hides it). Each key's search has a budget of
steps (and optionally of seconds); when it runs out the answer is "unknown", never a guess.

Outcomes. An ``ok`` operation must be legal with the output it returned. A ``failed`` operation
with one of the model's error codes (100 key not found, 101 compare failed, 105 key already
exists) must fail that way at its point and changes nothing. Any other failure (or none) says
nothing about the key: etcd wraps a timed out proposal as 300 and it may still commit, so such a
write is checked as indeterminate, and such a read is left out. An ``indeterminate`` write may
take effect at any point after its invoke, or never: its completion is +infinity and any output
is accepted; because every operation with unknown output is legal in every state, "never" is the
same as "after everything else", and the search stops as soon as every operation with a known
outcome is linearized. Indeterminate reads observe nothing and are left out.

The model of one key
====================

State: absent, or present with a value; plus what is known of modifiedIndex. Transitions
(etcd 3.4, ``v2store/store.go``; keys are plain files, no directories or TTLs):

===========  ==================================  =========================================
kind         absent                              present (value v, index i)
===========  ==================================  =========================================
read         fails 100                           ok, returns v (and i)
set          ok → present                        ok → present (a new node)
create       ok → present                        fails 105
update       fails 100                           ok → present
cas          fails 100                           compare holds: ok → present; else 101
delete       fails 100                           ok → absent
cad          fails 100                           compare holds: ok → absent; else 101
===========  ==================================  =========================================

A compare holds when ``prev_value`` (if given) equals v and ``prev_index`` (if given) equals i.

How returned indexes are used
=============================

etcd's index is global: every write to any key takes the next one, so a key's own writes do not
take consecutive indexes and the per-key model cannot predict them. The model uses them only in
ways that hold in every etcd execution, so the checker stays sound (a linearizable history is
never called a violation):

1. Equality. The index a successful write returns becomes the key's known index; a later read
   that returns an index, and a cas/cad on ``prev_index``, are checked against it. A write whose
   index is unknown (indeterminate, or ok without an index in the response) leaves the key's
   index unknown; a read that returns an index then *learns* it, and so does a successful
   compare on ``prev_index``.
2. Order on one key. Writes are applied in index order, so along the linearization the known
   indexes of one key's writes strictly increase. The state carries ``floor``, the highest index
   known so far on this key; a write returning an index not above it is illegal, a read
   returning an index not above it while the index is unknown is illegal, and a compare on a
   ``prev_index`` not above it while the index is unknown cannot hold.
3. Across keys (``check_index_order``): two successful writes never return the same index, and
   a write that completed before another was invoked returned the smaller index.

An error response's ``index`` (the store's index, not the key's) is not used.

v3 histories
============

A v3 key is the same object: absent, or present with a value and a ``mod_revision``; the
revision is global as the v2 index is (every write that changes something takes the next one,
on any key), so the rules above hold for revisions unchanged. Each v3 record is therefore
checked as the v2 operation that has exactly its semantics on one key (``model_view``; the
witness shows the original records):

==============================================  ================================================
v3 record                                       checked as
==============================================  ================================================
put → rev                                       set ok @rev
range: value v, mod_revision r / absent         read ok v@r / read failed 100
delete-range: deleted (rev) / deleted nothing   delete ok @rev / delete failed 100
txn value == p then put: succeeded (rev)        cas if =p ok @rev
txn mod_revision == r > 0 then put: succeeded   cas if @r ok @rev
txn mod_revision == 0 then put: succeeded       create ok @rev (etcd: an absent key's
                                                mod_revision is 0; a value compare fails)
txn, compare failed, else-range saw v@r/absent  read ok v@r / read failed 100 (the compare and
                                                the range see one state; that the compare does
                                                fail on what the range saw is checked apart)
indeterminate or failed (gRPC error)            the same kind, indeterminate
==============================================  ================================================

Serializable ranges are served from one member's state and are not linearizable; they are
left out of the search and only required to return a value that some put or txn on the key had
begun to write before the range completed, with the revision that write returned
(``check_local``), and an absent key is always accepted.

Txns on several keys
====================

A txn on several keys is one operation recorded as a group of per-key ``txn`` records
(``History.invoke_txn_group``). Each record goes into its key's search with the table above
(its key's compare held and its put took the txn's revision, or its else-range read the key),
and rule 3 lets a group's records share their revision. That alone would accept a txn whose
keys were seen or written at different moments, so ``check_txn_groups`` holds every group to
one revision, using what the whole history knows of each key's writes by revision (the
revisions that ok writes returned, and the mod_revisions that ok reads saw, with their
values):

- a group that succeeded at revision R: every key's compare held at R - 1, so no known write
  on the key falls after its compared mod_revision and before R (compared absent: the last
  known write before R is not a put, unless a delete of unknown revision may have followed);
- a group whose compares failed, read at revision H (its response header's): each key's
  else-range read the key as it was at H, so no known write on the key falls after the
  mod_revision read and at or before H (read absent: the last known write by H is not a put,
  unless a delete of unknown revision may have followed), the value read is the one its
  revision wrote, and not every compare holds on what was read.

Each rule follows from etcd's revisions (one a write, shared by a txn's keys, a read's header
is the revision it read at), and writes the history does not know of can only add to what a
rule already found, so a rule never calls a correct history a violation.

The failing sub-history
=======================

For a violation the checker also returns a small sub-history of that key that is still not
linearizable, built only with reductions that keep "not linearizable" true of the full history
(so the witness is a proof, not a coincidence of dropping a write a read depended on).

First, the direct case: an operation that saw a value (a read, or a compare on
``prev_value`` that succeeded) which no operation had begun to write before it completed. The
witness is that operation and every write of the value, since only those could explain it.
Otherwise:

1. The smallest prefix by completion time: the first k operations with a known outcome, in
   completion order, plus every operation invoked by the k-th completion, the ones completing
   later relaxed to indeterminate; found by bisection (when a prefix fails, so does every
   longer one).
2. Then, while the rest still fails: drop observations (reads, and failures that changed
   nothing), in halves, quarters, ... as delta debugging does; then drop writes that a later
   ``set`` overwrote before anything else could see them, and last writes that nothing could
   see (``_is_overwritten``, ``_is_last_write``). Finally drop indeterminate writes invoked
   after every known outcome.

A write is never dropped just because the rest still fails: dropping it can make a read of its
value inexplicable in a history that was fine. Relaxed operations appear in the witness as
indeterminate copies (``sim.history.relaxed``), so ``check_operations(witness)`` is again a
violation.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final, TypeAlias

from sim.history import (
    COMPARE_FAILED,
    KEY_EXISTS,
    KEY_NOT_FOUND,
    MODEL_ERROR_CODES,
    V3_KINDS,
    History,
    Operation,
    OpKind,
    Outcome,
    relaxed,
)

STEP_BUDGET_PER_KEY_DEFAULT: Final = 1_000_000
"""Search steps per key before its answer is "unknown"."""
MINIMIZE_CHECKS_MAX: Final = 400
"""Searches spent shrinking one violation's witness; the witness is as small as it got."""
_TIME_CHECK_EVERY_STEPS: Final = 4096


class Verdict(StrEnum):
    """The answer for a key or a history."""

    OK = "ok"
    VIOLATION = "violation"
    UNKNOWN = "unknown"


# ---------------------------------------------------------------------------------------------
# The model of one key

State: TypeAlias = tuple[bool, str | None, int | None, int]
"""(present, value, modifiedIndex if known, floor: the highest index known on this key)."""

INITIAL_STATE: Final[State] = (False, None, None, 0)
"""Every key starts absent; etcd's indexes start at 1."""


class _Expect(StrEnum):
    OK = "ok"
    FAIL = "fail"
    ANY = "any"


@dataclass(frozen=True, slots=True)
class _Prepared:
    """An operation as the search sees it."""

    op: Operation
    expect: _Expect
    invoke_s: float
    complete_s: float


def _prepare(op: Operation) -> _Prepared | None:
    """How the search treats ``op``; ``None`` when it is left out (it observes nothing)."""
    if op.outcome is Outcome.OK:
        return _Prepared(op, _Expect.OK, op.invoke_s, op.effective_complete_s)
    if op.outcome is Outcome.FAILED and op.error_code in MODEL_ERROR_CODES:
        return _Prepared(op, _Expect.FAIL, op.invoke_s, op.effective_complete_s)
    if op.kind is OpKind.READ:
        return None
    return _Prepared(op, _Expect.ANY, op.invoke_s, math.inf)


ANONYMOUS_VALUE: Final = "\x00anonymous"


class _Mentions:
    """Which values the operations not yet linearized can still tell apart.

    The model looks at a value only to compare it with a read's ``output_value`` or a
    compare's ``prev_value``. Once no operation left to linearize names a value, a state
    holding it behaves exactly like one holding any other such value, so the search stores
    them all as one anonymous value (a bisimulation given the operations left, which the memo
    key determines). The memo then merges states that differ only in values nobody will look
    at again: an old indeterminate write of such a value changes nothing it cares about.
    """

    __slots__ = ("anonymous", "left", "named")

    def __init__(self, prepared: Sequence[_Prepared]) -> None:
        self.named = [
            tuple(
                {value for value in (item.op.output_value, item.op.prev_value) if value is not None}
            )
            for item in prepared
        ]
        self.left: dict[str, int] = {}
        for values in self.named:
            for value in values:
                self.left[value] = self.left.get(value, 0) + 1
        anonymous = ANONYMOUS_VALUE
        while anonymous in self.left:
            anonymous += "\x00"
        self.anonymous = anonymous

    def canonical(self, state: State, number: int) -> State:
        """``state`` as stored once operation ``number`` is linearized."""
        value = state[1]
        if value is None or value == self.anonymous:
            return state
        left = self.left.get(value, 0) - (value in self.named[number])
        return state if left > 0 else (state[0], self.anonymous, state[2], state[3])

    def twin_class(self, item: _Prepared) -> tuple[object, ...]:
        """Indeterminate operations of one class act alike in every state from now on (same
        kind and compare, and the same value or two anonymous ones), so the search tries only
        the first of a class at each step: a linearization using another is one using the
        first, with the two swapped."""
        op = item.op
        value = op.value
        if value is not None and self.left.get(value, 0) == 0:
            value = self.anonymous
        return (op.kind, value, op.prev_value, op.prev_index)

    def linearized(self, number: int) -> None:
        for value in self.named[number]:
            self.left[value] -= 1

    def restored(self, number: int) -> None:
        for value in self.named[number]:
            self.left[value] += 1


def _compare(state: State, op: Operation) -> bool | None:
    """Does the cas/cad compare hold on a present key? ``None``: cannot tell (index unknown)."""
    _present, value, index, floor = state
    if op.prev_value is not None and op.prev_value != value:
        return False
    if op.prev_index is None:
        return True
    if index is not None:
        return index == op.prev_index
    # The unknown index belongs to a write after every index counted in floor.
    return None if op.prev_index > floor else False


def _success_state(state: State, prepared: _Prepared, learned: int | None) -> State | None:
    """The state after the operation succeeds, or ``None`` if its returned output rules that
    out."""
    op = prepared.op
    expect = prepared.expect
    present, value, index, floor = state
    if learned is not None:
        index = floor = learned
    if op.kind is OpKind.READ:
        if op.output_value != value:
            return None
        if op.index is not None:
            if index is not None:
                if op.index != index:
                    return None
            elif op.index <= floor:
                return None
            index = floor = op.index
        return (present, value, index, floor)
    new_index = op.index if expect is _Expect.OK else None
    if new_index is not None:
        if new_index <= floor:
            return None
        floor = new_index
    if op.kind is OpKind.DELETE or op.kind is OpKind.CAD:
        return (False, None, None, floor)
    return (True, op.value, new_index, floor)


def _step(state: State, prepared: _Prepared) -> tuple[State, ...]:
    """The states ``prepared`` may leave the key in from ``state``; empty when it is illegal.

    More than one state only for an indeterminate cas/cad on ``prev_index`` while the key's
    index is unknown: it may have matched, or not.
    """
    op = prepared.op
    expect = prepared.expect
    kind = op.kind
    present = state[0]
    learned: int | None = None
    can_succeed = True
    failure: int | None = None
    if kind is OpKind.SET:
        pass
    elif kind is OpKind.CREATE:
        if present:
            can_succeed, failure = False, KEY_EXISTS
    elif not present:
        can_succeed, failure = False, KEY_NOT_FOUND
    elif kind is OpKind.CAS or kind is OpKind.CAD:
        holds = _compare(state, op)
        if holds is None:
            learned, failure = op.prev_index, COMPARE_FAILED
        elif not holds:
            can_succeed, failure = False, COMPARE_FAILED
    results: list[State] = []
    if can_succeed and expect is not _Expect.FAIL:
        after = _success_state(state, prepared, learned)
        if after is not None:
            results.append(after)
    if failure is not None and (
        expect is _Expect.ANY or (expect is _Expect.FAIL and op.error_code == failure)
    ):
        results.append(state)
    return tuple(results)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The answer for one key.

    Attributes:
        key: the key.
        verdict: ok, violation or unknown.
        operations: how many of the key's operations the search considered.
        steps: search steps spent (the verdict's search; shrinking not counted).
        witness: for a violation, a small sub-history of the key that is itself not
            linearizable (relaxed operations as indeterminate copies); else empty.
        reason: for a violation, why the witness fails; for unknown, which budget ran out;
            else empty.
    """

    key: str
    verdict: Verdict
    operations: int
    steps: int
    witness: tuple[Operation, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LocalViolation:
    """A v3 record that is wrong whatever the order: a serializable range of a value never
    written, or a txn whose failure branch read a state its compare holds on."""

    op: Operation
    reason: str


@dataclass(frozen=True, slots=True)
class IndexOrderViolation:
    """Two successful writes whose returned indexes contradict real time or each other."""

    earlier: Operation
    later: Operation
    reason: str


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The answer for a history: violation if any key (or the index order) is violated, else
    unknown if any key is unknown, else ok."""

    verdict: Verdict
    keys: tuple[KeyResult, ...]
    index_order: IndexOrderViolation | None = None
    elapsed_s: float = field(default=0.0, compare=False)
    local: tuple[LocalViolation, ...] = ()
    """v3 records wrong on their own (``check_local``)."""

    @property
    def violations(self) -> tuple[KeyResult, ...]:
        """The violated keys, by key."""
        return tuple(result for result in self.keys if result.verdict is Verdict.VIOLATION)

    @property
    def unknown(self) -> tuple[KeyResult, ...]:
        """The keys whose search ran out of budget, by key."""
        return tuple(result for result in self.keys if result.verdict is Verdict.UNKNOWN)

    def failing_op_ids(self) -> frozenset[int]:
        """The ids of every witness operation, for highlighting."""
        ids = {op.op_id for result in self.violations for op in result.witness}
        if self.index_order is not None:
            ids.update((self.index_order.earlier.op_id, self.index_order.later.op_id))
        ids.update(item.op.op_id for item in self.local)
        return frozenset(ids)

    def summary(self) -> str:
        """A few lines for a report."""
        lines = [
            f"linearizability: {self.verdict} ({len(self.keys)} keys, "
            f"{len(self.violations)} violated, {len(self.unknown)} unknown)"
        ]
        if self.index_order is not None:
            lines.append(f"  index order: {self.index_order.reason}")
            lines.append(f"    {self.index_order.earlier.describe()}")
            lines.append(f"    {self.index_order.later.describe()}")
        for item in self.local:
            lines.append(f"  {item.reason}: {item.op.describe()}")
        for result in self.violations:
            lines.append(f"  key {result.key}: not linearizable: {result.reason}; witness:")
            lines.extend(f"    {op.describe()}" for op in result.witness)
        for result in self.unknown:
            lines.append(f"  key {result.key}: unknown ({result.reason})")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The search


@dataclass(frozen=True, slots=True)
class Budget:
    """What one key's search may spend. ``seconds`` reads the wall clock, so a result that hits
    it depends on the machine; leave it ``None`` for reproducible answers."""

    steps: int = STEP_BUDGET_PER_KEY_DEFAULT
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("the step budget must be positive")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError("the time budget must be positive")


@dataclass(slots=True)
class _Search:
    verdict: Verdict
    steps: int
    reason: str = ""


class _Frame:
    """One configuration of the depth-first search and where its enumeration of moves is."""

    __slots__ = ("alternative", "alternatives", "candidates", "cursor", "state_before", "via")

    def __init__(self, candidates: list[int], via: int, state_before: State) -> None:
        self.candidates = candidates
        self.cursor = 0
        self.alternatives: tuple[State, ...] | None = None
        self.alternative = 0
        self.via = via
        self.state_before = state_before


class _Memo:
    """Configurations already explored (or being explored), with dominance.

    A configuration is (known outcomes linearized, indeterminate ones linearized, state, whether
    the last move linearized an indeterminate operation). One that has linearized a superset of
    the indeterminate operations of a seen one, with the same known outcomes and state, and is
    no less restricted in its next move, can do nothing the seen one could not (those extra
    operations could as well have been left for the end), so it is pruned too.
    """

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: dict[tuple[int, State], list[tuple[int, bool]]] = {}

    def visit(self, known_bits: int, open_bits: int, state: State, after_open: bool) -> bool:
        """Record a configuration; ``False`` if it (or one dominating it) was seen."""
        seen = self.seen.setdefault((known_bits, state), [])
        for earlier_bits, earlier_after_open in seen:
            if earlier_bits & ~open_bits == 0 and (after_open or not earlier_after_open):
                return False
        seen.append((open_bits, after_open))
        return True


def _search(prepared: Sequence[_Prepared], budget: Budget) -> _Search:
    """Wing-Gong-Lowe over one key's operations (see the module docstring).

    The known-outcome operations live in the time-sorted event list; the indeterminate ones are
    kept aside and become candidates once invoked before the list's first return. At each
    configuration the known-outcome candidates are tried first, so a search for a linearizable
    history rarely touches the indeterminate ones, and the memo's dominance rule then prunes the
    configurations that linearized them needlessly.

    One more reduction: an indeterminate ``set`` never directly follows another indeterminate
    operation. The set overwrites the key whatever came before (leaving ``floor`` no higher,
    and a lower ``floor`` only permits more), and the earlier operation's output is unchecked,
    so any linearization with that pair is still one with the earlier operation moved to the
    end, where it observes nothing.
    """
    count = len(prepared)
    known = [item.expect is not _Expect.ANY for item in prepared]
    remaining = sum(known)
    if remaining == 0:
        return _Search(Verdict.OK, 0)
    events = sorted(
        [(item.invoke_s, 0, number) for number, item in enumerate(prepared) if known[number]]
        + [(item.complete_s, 1, number) for number, item in enumerate(prepared) if known[number]]
    )
    # Nodes: 0 is the head, 1..len(events) the events, the last one the tail.
    tail = len(events) + 1
    node_op = [-1] * (tail + 1)
    node_is_call = [False] * (tail + 1)
    node_time = [math.inf] * (tail + 1)
    call_node = [0] * count
    return_node = [0] * count
    for position, (time_s, is_return, number) in enumerate(events, start=1):
        node_op[position] = number
        node_is_call[position] = not is_return
        node_time[position] = time_s
        if is_return:
            return_node[number] = position
        else:
            call_node[number] = position
    following = [*range(1, tail + 1), tail]
    preceding = [0, *range(tail)]
    open_order = sorted(
        (number for number in range(count) if not known[number]),
        key=lambda number: (prepared[number].invoke_s, number),
    )
    open_done = [False] * count

    def candidates(after_open: bool) -> list[int]:
        found = []
        node = following[0]
        while node_is_call[node]:
            found.append(node_op[node])
            node = following[node]
        deadline_s = node_time[node]
        classes = set()
        for number in open_order:
            item = prepared[number]
            if item.invoke_s > deadline_s:
                break
            if open_done[number] or (after_open and item.op.kind is OpKind.SET):
                continue
            twin = mentions.twin_class(item)
            if twin in classes:
                continue
            classes.add(twin)
            found.append(number)
        return found

    memo = _Memo()
    mentions = _Mentions(prepared)
    state = INITIAL_STATE
    known_bits = 0
    open_bits = 0
    memo.visit(known_bits, open_bits, state, False)
    stack = [_Frame(candidates(False), -1, state)]
    steps = 0
    started_s = time.perf_counter() if budget.seconds is not None else 0.0  # nondeterminism-ok
    while stack:
        steps += 1
        if steps > budget.steps:
            return _Search(Verdict.UNKNOWN, steps - 1, f"step budget {budget.steps} spent")
        if (
            budget.seconds is not None
            and steps % _TIME_CHECK_EVERY_STEPS == 0
            and time.perf_counter() - started_s > budget.seconds  # nondeterminism-ok
        ):
            return _Search(Verdict.UNKNOWN, steps, f"time budget {budget.seconds} s spent")
        frame = stack[-1]
        chosen = -1
        after = state
        while frame.cursor < len(frame.candidates):
            number = frame.candidates[frame.cursor]
            if frame.alternatives is None:
                frame.alternatives = _step(state, prepared[number])
                frame.alternative = 0
            while frame.alternative < len(frame.alternatives):
                after = mentions.canonical(frame.alternatives[frame.alternative], number)
                frame.alternative += 1
                bit = 1 << number
                if known[number]:
                    fresh = memo.visit(known_bits | bit, open_bits, after, False)
                else:
                    fresh = memo.visit(known_bits, open_bits | bit, after, True)
                if fresh:
                    chosen = number
                    break
            if chosen >= 0:
                break
            frame.cursor += 1
            frame.alternatives = None
        if chosen < 0:
            # Every move from here fails: undo the move that led here.
            stack.pop()
            number = frame.via
            if number >= 0:
                state = frame.state_before
                mentions.restored(number)
                if known[number]:
                    for node in (return_node[number], call_node[number]):
                        following[preceding[node]] = node
                        preceding[following[node]] = node
                    known_bits ^= 1 << number
                    remaining += 1
                else:
                    open_done[number] = False
                    open_bits ^= 1 << number
            continue
        mentions.linearized(chosen)
        if known[chosen]:
            for node in (call_node[chosen], return_node[chosen]):
                following[preceding[node]] = following[node]
                preceding[following[node]] = preceding[node]
            known_bits |= 1 << chosen
            remaining -= 1
            if remaining == 0:
                return _Search(Verdict.OK, steps)
        else:
            open_done[chosen] = True
            open_bits |= 1 << chosen
        stack.append(_Frame(candidates(not known[chosen]), chosen, state))
        state = after
    return _Search(Verdict.VIOLATION, steps)


# ---------------------------------------------------------------------------------------------
# Shrinking a violation


def _is_violation(prepared: Sequence[_Prepared], budget: Budget) -> bool:
    return _search(prepared, budget).verdict is Verdict.VIOLATION


def _relax(item: _Prepared) -> _Prepared:
    return _Prepared(relaxed(item.op), _Expect.ANY, item.invoke_s, math.inf)


def _prefix(
    prepared: Sequence[_Prepared], known: Sequence[_Prepared], count: int
) -> list[_Prepared]:
    """The first ``count`` known outcomes (in completion order) and everything invoked by the
    last of them; writes completing later are relaxed, observations completing later dropped
    (relaxed, they would observe nothing)."""
    kept = {id(item) for item in known[:count]}
    cut_s = known[count - 1].complete_s
    chosen = []
    for item in prepared:
        if item.invoke_s > cut_s:
            continue
        if id(item) in kept or item.expect is _Expect.ANY:
            chosen.append(item)
        elif not _observes_only(item):
            chosen.append(_relax(item))
    return chosen


def _unwritten_value(prepared: Sequence[_Prepared]) -> tuple[list[_Prepared], str] | None:
    """The first operation (by completion) that saw a value no operation wrote before it
    completed, with every write of that value; and why that is a violation."""
    known = sorted(
        (item for item in prepared if item.expect is _Expect.OK),
        key=lambda item: (item.complete_s, item.op.op_id),
    )
    for item in known:
        op = item.op
        seen = op.output_value if op.kind is OpKind.READ else op.prev_value
        if seen is None:
            continue
        writers = [other for other in prepared if other.op.value == seen]
        if all(writer.invoke_s > item.complete_s for writer in writers):
            reason = (
                f"#{op.op_id} ({op.kind}) saw the value {seen!r}, which no operation had begun "
                "to write before it completed"
            )
            return [item, *writers], reason
    return None


def _witness(prepared: Sequence[_Prepared], budget: Budget) -> tuple[list[_Prepared], str]:
    """A small sub-history that is still not linearizable (see the module docstring), and
    why."""
    unwritten = _unwritten_value(prepared)
    if unwritten is not None and _is_violation(unwritten[0], budget):
        return unwritten
    return _shrunk(prepared, budget), "no order of these operations is a legal run of the key"


class _Checks:
    """The searches left for shrinking one witness."""

    __slots__ = ("budget", "left")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.left = MINIMIZE_CHECKS_MAX

    def fails(self, prepared: Sequence[_Prepared]) -> bool | None:
        """Whether ``prepared`` is not linearizable; ``None`` when no searches are left."""
        if self.left <= 0:
            return None
        self.left -= 1
        return _search(prepared, self.budget).verdict is Verdict.VIOLATION


def _shrunk(prepared: Sequence[_Prepared], budget: Budget) -> list[_Prepared]:
    checks = _Checks(budget)
    known = sorted(
        (item for item in prepared if item.expect is not _Expect.ANY),
        key=lambda item: (item.complete_s, item.op.op_id),
    )
    low, high = 1, len(known)
    while low < high:
        middle = (low + high) // 2
        fails = checks.fails(_prefix(prepared, known, middle))
        if fails is None:
            break
        if fails:
            high = middle
        else:
            low = middle + 1
    current = _drop_observations(_prefix(prepared, known, high), checks)
    dropped = True
    while dropped and checks.left > 0:
        # Dropping one write can clear another's window, so pass again until nothing drops.
        dropped = False
        position = len(current) - 1
        while position >= 0 and checks.left > 0:
            if _is_overwritten(current, position) or _is_last_write(current, position):
                trial = current[:position] + current[position + 1 :]
                if checks.fails(trial):
                    current = trial
                    dropped = True
            position -= 1
    last_known_s = max(
        (item.complete_s for item in current if item.expect is not _Expect.ANY),
        default=-math.inf,
    )
    return [
        item for item in current if item.expect is not _Expect.ANY or item.invoke_s <= last_known_s
    ]


def _observes_only(item: _Prepared) -> bool:
    """A read or a failure with a known outcome: it changed nothing, so without it every
    linearization stays one."""
    return item.expect is not _Expect.ANY and (
        item.op.kind is OpKind.READ or item.expect is _Expect.FAIL
    )


def _drop_observations(current: list[_Prepared], checks: _Checks) -> list[_Prepared]:
    """Drop observations while the rest still fails: in halves, then quarters, ... (as delta
    debugging does), latest first, since usually a few of many are needed."""
    chunk = max(1, sum(1 for item in current if _observes_only(item)) // 2)
    while True:
        candidates = [item for item in current if _observes_only(item)]
        candidates.reverse()
        for start in range(0, len(candidates), chunk):
            group = {id(item) for item in candidates[start : start + chunk]}
            trial = [item for item in current if id(item) not in group]
            fails = checks.fails(trial)
            if fails is None:
                return current
            if fails:
                current = trial
        if chunk == 1:
            return current
        chunk //= 2


def _is_overwritten(current: Sequence[_Prepared], position: int) -> bool:
    """A successful write whose effect nothing can see: a successful ``set`` comes after it,
    and every other operation with a known outcome comes before it or after the set. Dropping
    it keeps every linearization one: the set's result does not depend on the state before it
    (a lower ``floor`` only permits more), and indeterminate operations observe nothing.

    "Comes after" is by real time (invoked after the other completed) or by index (a write's
    index is higher, or a read returned an index at least the write's, since indexes grow along
    the linearization). A write whose value an operation names (a read, a ``prev_value``) is
    kept, for the reader."""
    item = current[position]
    if item.expect is not _Expect.OK or item.op.kind is OpKind.READ:
        return False
    named = {entry.op.output_value for entry in current} | {
        entry.op.prev_value for entry in current
    }
    if item.op.value is not None and item.op.value in named:
        return False
    for cover in current:
        if not (
            cover.expect is _Expect.OK and cover.op.kind is OpKind.SET and _comes_after(cover, item)
        ):
            continue
        if all(
            other is item
            or other is cover
            or other.expect is _Expect.ANY
            or _comes_after(item, other)
            or _comes_after(other, cover)
            for other in current
        ):
            return True
    return False


def _is_last_write(current: Sequence[_Prepared], position: int) -> bool:
    """A successful write that nothing can see: every other known outcome comes before it,
    except reads of values it did not write (with no write after it, they cannot come after
    it either), its value is named by no operation, and every indeterminate operation is a
    ``set`` (whose effect does not depend on the state). In every linearization it is then
    the last known outcome, and dropping it keeps the rest one."""
    item = current[position]
    if item.expect is not _Expect.OK or item.op.kind is OpKind.READ:
        return False
    value = item.op.value
    for other in current:
        if other is item:
            continue
        if value is not None and value in (other.op.output_value, other.op.prev_value):
            return False
        if other.expect is _Expect.ANY:
            if other.op.kind is not OpKind.SET:
                return False
        elif not (
            _comes_after(item, other)
            or (
                other.expect is _Expect.OK
                and other.op.kind is OpKind.READ
                and other.op.output_value != value
            )
        ):
            return False
    return True


def _comes_after(later: _Prepared, earlier: _Prepared) -> bool:
    """Whether ``later`` is linearized after the successful write ``earlier`` in every
    linearization (``earlier`` may also be any operation when ``later`` is such a write)."""
    if later.invoke_s > earlier.complete_s:
        return True
    if later.expect is not _Expect.OK or earlier.expect is not _Expect.OK:
        return False
    later_index, earlier_index = later.op.index, earlier.op.index
    if later_index is None or earlier_index is None:
        return False
    if later.op.kind is OpKind.READ:
        # A read returning the write's index or a higher one saw the write's state or later.
        return earlier.op.kind is not OpKind.READ and later_index >= earlier_index
    # ``later`` is a write: it took a higher index than anything before it.
    return later_index > earlier_index


# ---------------------------------------------------------------------------------------------
# v3 records in the model's vocabulary


def model_view(op: Operation) -> Operation | None:
    """``op`` as the key model checks it (the table in the module docstring): v2 records as
    they are, v3 records as the v2 operation with their semantics, with the same id and times;
    ``None`` for a serializable range, which is not linearizable (``check_local`` checks it)."""
    if op.kind not in V3_KINDS:
        return op
    observed = op.outcome is Outcome.OK

    def absent(kind: OpKind) -> Operation:
        return replace(op, kind=kind, outcome=Outcome.FAILED, error_code=KEY_NOT_FOUND,
                       value=None, prev_value=None, prev_index=None, output_value=None,
                       index=None, succeeded=None)  # fmt: skip

    match op.kind:
        case OpKind.SERIAL_RANGE:
            return None
        case OpKind.PUT:
            return replace(op, kind=OpKind.SET)
        case OpKind.RANGE:
            if observed and op.output_value is None:
                return absent(OpKind.READ)
            return replace(op, kind=OpKind.READ)
        case OpKind.DELETE_RANGE:
            if observed and not op.succeeded:
                return absent(OpKind.DELETE)
            return replace(op, kind=OpKind.DELETE, succeeded=None)
        case OpKind.TXN:
            if observed and not op.succeeded:
                if op.output_value is None:
                    return absent(OpKind.READ)
                return replace(op, kind=OpKind.READ, value=None, prev_value=None,
                               prev_index=None, succeeded=None)  # fmt: skip
            if op.prev_index == 0:
                return replace(op, kind=OpKind.CREATE, prev_index=None, succeeded=None)
            return replace(op, kind=OpKind.CAS, succeeded=None)
    raise AssertionError(op.kind)


def check_local(operations: Sequence[Operation]) -> tuple[LocalViolation, ...]:
    """What is wrong with v3 records on their own (see the module docstring)."""
    writers: dict[tuple[str, str], list[Operation]] = {}
    for op in operations:
        if op.kind in (OpKind.PUT, OpKind.TXN) and op.value is not None:
            writers.setdefault((op.key, op.value), []).append(op)
    found = []
    for op in sorted(operations, key=lambda op: op.op_id):
        if op.outcome is not Outcome.OK:
            continue
        if op.kind is OpKind.SERIAL_RANGE and op.output_value is not None:
            reason = _unexplained_read(op, writers.get((op.key, op.output_value), []))
            if reason:
                found.append(LocalViolation(op, reason))
        if op.kind is OpKind.TXN and op.succeeded is False and op.group is not None:
            continue  # its compare is one of several: check_txn_groups looks at them together
        if op.kind is OpKind.TXN and op.succeeded is False and _compare_holds_on_observed(op):
            found.append(
                LocalViolation(op, "the txn's compare failed on the state its else-range read")
            )
    return tuple(found)


def _unexplained_read(read: Operation, writers: Sequence[Operation]) -> str:
    """Why no write in ``writers`` explains the serializable ``read``, or ``""``."""
    assert read.complete_s is not None
    possible = [
        writer
        for writer in writers
        if writer.invoke_s <= read.complete_s
        and not (writer.outcome is Outcome.OK and writer.succeeded is False)
    ]
    if not possible:
        return "a serializable range returned a value no put or txn had begun to write"
    if read.index is None:
        return ""
    for writer in possible:
        if writer.outcome is not Outcome.OK or writer.index is None or writer.index == read.index:
            return ""
    return "a serializable range returned a value with another revision than its write's"


def _compare_holds_on_observed(op: Operation) -> bool:
    """Whether a failed txn's compare holds on the state its failure branch read."""
    if op.prev_value is not None:
        return op.output_value == op.prev_value
    if op.output_value is None:
        return op.prev_index == 0
    return op.index is not None and op.index == op.prev_index


def _recorded(op: Operation, by_id: dict[int, Operation]) -> Operation:
    """The recorded op behind a model op (relaxed as the model op was)."""
    original = by_id.get(op.op_id)
    if original is None or original.kind not in V3_KINDS:
        return op
    if op.outcome is Outcome.INDETERMINATE and original.outcome is not Outcome.INDETERMINATE:
        return relaxed(original)
    return original


def _as_recorded(result: KeyResult, originals: Sequence[Operation]) -> KeyResult:
    if not result.witness:
        return result
    by_id = {op.op_id: op for op in originals}
    return replace(result, witness=tuple(_recorded(op, by_id) for op in result.witness))


def _index_order_as_recorded(
    found: IndexOrderViolation, originals: Sequence[Operation]
) -> IndexOrderViolation:
    by_id = {op.op_id: op for op in originals}
    return replace(
        found, earlier=_recorded(found.earlier, by_id), later=_recorded(found.later, by_id)
    )


# ---------------------------------------------------------------------------------------------
# Txns on several keys


@dataclass(frozen=True, slots=True)
class _KnownWrite:
    """A write to one key at a known revision: a put of ``value`` or (``None``) a delete."""

    revision: int
    value: str | None


@dataclass
class _KnownWrites:
    """What a history knows of each key's writes by revision (module docstring)."""

    by_key: dict[str, list[_KnownWrite]] = field(default_factory=dict)
    revisions: dict[str, list[int]] = field(default_factory=dict)
    maybe_deleted: set[str] = field(default_factory=set)
    """Keys a delete of unknown revision (an indeterminate one) may have deleted."""

    @classmethod
    def of(cls, operations: Iterable[Operation]) -> _KnownWrites:
        found: dict[str, dict[int, str | None]] = {}
        known = cls()
        for op in operations:
            if op.kind is OpKind.DELETE_RANGE and op.outcome is Outcome.INDETERMINATE:
                known.maybe_deleted.add(op.key)
            if op.outcome is not Outcome.OK or op.index is None:
                continue
            wrote = op.kind is OpKind.PUT or (op.kind is OpKind.TXN and op.succeeded)
            if wrote or op.output_value is not None:  # a write, or a read of one
                value = op.value if wrote else op.output_value
                found.setdefault(op.key, {}).setdefault(op.index, value)
            elif op.kind is OpKind.DELETE_RANGE and op.succeeded:
                found.setdefault(op.key, {}).setdefault(op.index, None)
        for key, writes in found.items():
            known.revisions[key] = sorted(writes)
            known.by_key[key] = [
                _KnownWrite(revision, writes[revision]) for revision in sorted(writes)
            ]
        return known

    def after(self, key: str, low: int, high: int) -> _KnownWrite | None:
        """The first known write on ``key`` with ``low < revision <= high``."""
        revisions = self.revisions.get(key, [])
        position = bisect.bisect_right(revisions, low)
        if position < len(revisions) and revisions[position] <= high:
            return self.by_key[key][position]
        return None

    def at(self, key: str, revision: int) -> _KnownWrite | None:
        revisions = self.revisions.get(key, [])
        position = bisect.bisect_left(revisions, revision)
        if position < len(revisions) and revisions[position] == revision:
            return self.by_key[key][position]
        return None

    def surely_present(self, key: str, revision: int) -> _KnownWrite | None:
        """The put that leaves ``key`` present at ``revision`` whatever else happened, if any:
        the last known write by then, when it is a put and no delete of unknown revision on
        the key may have followed it."""
        revisions = self.revisions.get(key, [])
        position = bisect.bisect_right(revisions, revision)
        if position == 0 or key in self.maybe_deleted:
            return None
        last = self.by_key[key][position - 1]
        return last if last.value is not None else None


def check_txn_groups(operations: Sequence[Operation]) -> tuple[LocalViolation, ...]:
    """Txns on several keys held to one revision (module docstring, "Txns on several keys");
    a violation names the group's first record."""
    groups: dict[int, list[Operation]] = {}
    for op in operations:
        if op.group is not None and op.outcome is Outcome.OK:
            groups.setdefault(op.group, []).append(op)
    if not groups:
        return ()
    known = _KnownWrites.of(operations)
    found = []
    for group in sorted(groups):
        records = sorted(groups[group], key=lambda op: op.op_id)
        reason = _group_problem(records, known)
        if reason:
            found.append(LocalViolation(records[0], reason))
    return tuple(found)


def _group_problem(records: Sequence[Operation], known: _KnownWrites) -> str:
    """Why the ok txn group ``records`` cannot have happened at one revision, or ``""``."""
    answers = {(op.succeeded, op.index if op.succeeded else op.header_revision) for op in records}
    if len(answers) > 1:
        return "the txn's keys answered for different revisions or outcomes"
    if records[0].succeeded:
        return next(filter(None, (_held_before(op, known) for op in records)), "")
    if all(_compare_holds_on_observed(op) for op in records):
        return "the txn's compares failed though every one holds on what its else-ranges read"
    return next(filter(None, (_read_at(op, known) for op in records)), "")


def _held_before(op: Operation, known: _KnownWrites) -> str:
    """Why ``op``'s compare cannot have held just before its txn's revision, or ``""``."""
    assert op.index is not None and op.prev_index is not None
    revision, compared = op.index, op.prev_index
    if compared >= revision:
        return f"its compare on {op.key} named revision {compared}, not before its own {revision}"
    if compared == 0:
        present = known.surely_present(op.key, revision - 1)
        if present is not None:
            return (
                f"its compare held {op.key} absent at revision {revision}, but revision "
                f"{present.revision} had put {present.value!r} there"
            )
        return ""
    changed = known.after(op.key, compared, revision - 1)
    if changed is not None:
        return (
            f"its compare held {op.key} at mod_revision {compared} at revision {revision}, but "
            f"revision {changed.revision} had {_wrote(changed)} it"
        )
    return ""


def _read_at(op: Operation, known: _KnownWrites) -> str:
    """Why ``op``'s else-range cannot have read its key at its txn's header revision, or
    ``""``."""
    assert op.header_revision is not None
    at = op.header_revision
    if op.output_value is None:
        present = known.surely_present(op.key, at)
        if present is not None:
            return (
                f"its else-range read {op.key} absent at revision {at}, but revision "
                f"{present.revision} had put {present.value!r} there"
            )
        return ""
    assert op.index is not None
    newer = known.after(op.key, op.index, at)
    if newer is not None:
        return (
            f"its else-range read {op.key} at mod_revision {op.index} at revision {at}, but "
            f"revision {newer.revision} had {_wrote(newer)} it"
        )
    written = known.at(op.key, op.index)
    if written is not None and written.value != op.output_value:
        return (
            f"its else-range read {op.output_value!r} at mod_revision {op.index} of {op.key}, "
            f"but that revision {_wrote(written)} it"
        )
    return ""


def _wrote(write: _KnownWrite) -> str:
    return "deleted" if write.value is None else f"put {write.value!r} in"


# ---------------------------------------------------------------------------------------------
# Entry points


def check_key(
    key: str,
    operations: Iterable[Operation],
    *,
    budget: Budget | None = None,
    minimize: bool = True,
) -> KeyResult:
    """Check the operations of one key (every operation must be on ``key``)."""
    budget = budget or Budget()
    prepared = []
    for op in sorted(operations, key=lambda op: op.op_id):
        if op.key != key:
            raise ValueError(f"operation {op.op_id} is on {op.key!r}, not {key!r}")
        item = _prepare(op)
        if item is not None:
            prepared.append(item)
    found = _search(prepared, budget)
    witness: tuple[Operation, ...] = ()
    reason = found.reason
    if found.verdict is Verdict.VIOLATION:
        chosen = list(prepared)
        reason = "no order of the key's operations is a legal run of the key"
        if minimize:
            chosen, reason = _witness(prepared, budget)
        witness = tuple(item.op for item in chosen)
    return KeyResult(key, found.verdict, len(prepared), found.steps, witness, reason)


def check_index_order(operations: Iterable[Operation]) -> IndexOrderViolation | None:
    """Check the returned indexes of successful writes across all keys (rule 3 above): no two
    share an index, and real-time order is index order. Returns the first contradiction."""
    writes = sorted(
        (op for op in operations if op.is_write and op.ok and op.index is not None),
        key=lambda op: (op.invoke_s, op.op_id),
    )
    by_index: dict[int, Operation] = {}
    for op in sorted(writes, key=lambda op: op.op_id):
        assert op.index is not None
        other = by_index.setdefault(op.index, op)
        if other is not op and (op.group is None or other.group != op.group):
            return IndexOrderViolation(other, op, f"two writes returned index {op.index}")
    # Sweep in invoke order, folding in the writes that completed strictly before each invoke.
    completed = sorted(writes, key=lambda op: (op.effective_complete_s, op.op_id))
    complete_times = [op.effective_complete_s for op in completed]
    highest: Operation | None = None
    cursor = 0
    for op in writes:
        assert op.index is not None
        for earlier in completed[cursor : bisect.bisect_left(complete_times, op.invoke_s)]:
            assert earlier.index is not None
            if highest is None or earlier.index > (highest.index or 0):
                highest = earlier
            cursor += 1
        if highest is not None and highest.index is not None and highest.index >= op.index:
            return IndexOrderViolation(
                highest,
                op,
                f"write #{highest.op_id} completed before #{op.op_id} was invoked but "
                f"returned index {highest.index} >= {op.index}",
            )
    return None


def check_operations(
    operations: Iterable[Operation],
    *,
    budget: Budget | None = None,
    minimize: bool = True,
) -> CheckResult:
    """Check a history: each key on its own (P-compositionality), then the index order.

    Args:
        operations: the records; pending operations must have been closed (``History.finish``).
        budget: per key; the default spends up to ``STEP_BUDGET_PER_KEY_DEFAULT`` steps.
        minimize: shrink each violation's witness (costs extra searches on violated keys only).
    """
    started_s = time.perf_counter()  # nondeterminism-ok: reporting wall time only
    originals = list(operations)
    local = check_local(originals) + check_txn_groups(originals)
    listed = [view for view in map(model_view, originals) if view is not None]
    by_key: dict[str, list[Operation]] = {}
    for op in listed:
        by_key.setdefault(op.key, []).append(op)
    results = tuple(
        _as_recorded(check_key(key, by_key[key], budget=budget, minimize=minimize), originals)
        for key in sorted(by_key)
    )
    index_order = check_index_order(listed)
    if index_order is not None:
        index_order = _index_order_as_recorded(index_order, originals)
    verdicts = {result.verdict for result in results}
    if Verdict.VIOLATION in verdicts or index_order is not None or local:
        verdict = Verdict.VIOLATION
    elif Verdict.UNKNOWN in verdicts:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.OK
    elapsed_s = time.perf_counter() - started_s  # nondeterminism-ok
    return CheckResult(verdict, results, index_order, elapsed_s, local)


def check_history(
    history: History, *, budget: Budget | None = None, minimize: bool = True
) -> CheckResult:
    """``check_operations`` over a recorded history.

    Raises:
        ValueError: operations are still pending (call ``history.finish()`` first).
    """
    if history.pending_ids:
        raise ValueError(f"operations {history.pending_ids} are still pending")
    return check_operations(history.operations, budget=budget, minimize=minimize)
