"""Client histories of the v2 keys API and the v3 KV API: what each client asked, when, and
what it was told.

A workload client records every request twice: when it sends it (``History.invoke``) and when
it learns how it ended (``History.ok``, ``History.fail`` or ``History.indeterminate``). The
result is a list of :class:`Operation` records that :mod:`sim.linearizability` checks and
:mod:`sim.timeline` draws.

Theory of operation:

- A client is sequential: it has at most one operation pending at a time (as Jepsen's and
  Porcupine's "process"). A workload that runs several requests concurrently uses one client id
  per task.
- Times are virtual seconds (``trio.current_time()`` under the simulator's clock), passed in by
  the caller or read from the ``clock`` callable given to :class:`History`; nothing here reads a
  real clock.
- Every request ends in one of three outcomes:

  * ``ok``: it took effect (a write) or it observed the state (a read), and the response says
    how: the value read, the ``modifiedIndex`` of the node in the response.
  * ``failed``: it definitely did not change anything. With one of the key model's error codes
    (100 key not found, 101 compare failed, 105 key already exists) the failure is also an
    observation ("the key was absent") that the checker holds the history to. With any other
    code (or none) it is an etcd failure that says nothing about the key (see
    ``sim.linearizability`` for how those are treated).
  * ``indeterminate``: the client does not know (a timeout, a reset connection, a 5xx): the
    write may have taken effect, or not, at any time after it was invoked. Its ``complete_s``
    is when the client gave up (``None`` if the history ended first); the checker treats its
    completion as +infinity.

- A read that finds no key is ``failed`` with error code 100, exactly as etcd answers it (404).
- Reads are linearizable (quorum) reads. Serializable reads are not linearizable and must not be
  recorded as ``read``.

v3 operations (``sim.workload_v3``) are recorded in their own kinds, as the client saw them:

- ``put``, ``range`` (linearizable), ``range-serializable``, ``delete-range`` (of one key) and
  ``txn``: compare the key's value (``prev_value``) or its ``mod_revision`` (``prev_index``,
  where 0 means "absent", as in etcd) and put ``value`` if it holds, else range the key.
- A v3 request that the key model answers "no" is still ``ok``: a range of an absent key
  (``output_value`` ``None``), a delete that deleted nothing (``succeeded=False``), a txn whose
  compare failed (``succeeded=False``; ``output_value``/``index`` are what its failure branch
  read, ``None`` for an absent key). ``index`` is a revision: the write's own (its response
  header's revision) or the ``mod_revision`` read.
- ``failed`` is a definite gRPC error (the request was refused before it could take effect);
  ``indeterminate`` is a timeout, ``UNAVAILABLE``, a reset: anything that may have committed.
- A txn on several keys (``History.invoke_txn_group``) is recorded as one ``txn`` record per
  key, each with that key's compare, value and else-range, sharing ``group`` (the first
  record's id), the interval and the outcome: one operation, seen key by key. A group's
  records all hold the txn's revision when it succeeded; when it failed, each holds what its
  key's else-range read and ``header_revision``, the one revision all of them were read at.
  A client's group is its one pending operation.
- A history holds one API: v2 indexes and v3 revisions are different counters.

The JSON form (``History.to_json``) is one object with a format tag and one operation per line;
``History.from_json`` reads it back into equal records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

HISTORY_FORMAT: Final = "troika-history/1"

KEY_NOT_FOUND: Final = 100
"""etcd's ``EcodeKeyNotFound``: the key is absent (HTTP 404)."""
COMPARE_FAILED: Final = 101
"""etcd's ``EcodeTestFailed``: prevValue/prevIndex did not match (HTTP 412)."""
KEY_EXISTS: Final = 105
"""etcd's ``EcodeNodeExist``: create (``prevExist=false``) on a present key (HTTP 412)."""
MODEL_ERROR_CODES: Final = frozenset({KEY_NOT_FOUND, COMPARE_FAILED, KEY_EXISTS})
"""The failures that the key model produces, and so the only ones that observe the key."""


class OpKind(StrEnum):
    """A v2 keys request on one key."""

    READ = "read"
    """``GET ?quorum=true``."""
    SET = "set"
    """``PUT value=v``: always succeeds, (re)creating the key."""
    CREATE = "create"
    """``PUT prevExist=false``: only if the key is absent."""
    UPDATE = "update"
    """``PUT prevExist=true``: only if the key is present."""
    CAS = "cas"
    """``PUT prevValue=..&/|prevIndex=..``: compare-and-swap."""
    DELETE = "delete"
    """``DELETE``."""
    CAD = "cad"
    """``DELETE prevValue=..&/|prevIndex=..``: compare-and-delete."""
    PUT = "put"
    """v3 ``Put``: always succeeds."""
    RANGE = "range"
    """v3 linearizable ``Range`` of one key: ok with its value, or ok and absent."""
    SERIAL_RANGE = "range-serializable"
    """v3 serializable ``Range``: a member's local state, not linearizable; checked only as
    "a value that was written"."""
    DELETE_RANGE = "delete-range"
    """v3 ``DeleteRange`` of one key: ok, ``succeeded`` when it deleted the key."""
    TXN = "txn"
    """v3 ``Txn``: if value (``prev_value``) or mod_revision (``prev_index``, 0: absent)
    matches, put ``value``, else range the key."""


V3_KINDS: Final = frozenset(
    {OpKind.PUT, OpKind.RANGE, OpKind.SERIAL_RANGE, OpKind.DELETE_RANGE, OpKind.TXN}
)
WRITE_KINDS: Final = frozenset(
    {OpKind.SET, OpKind.CREATE, OpKind.UPDATE, OpKind.CAS, OpKind.DELETE, OpKind.CAD}
    | {OpKind.PUT, OpKind.DELETE_RANGE, OpKind.TXN}
)
KINDS_WITH_VALUE: Final = frozenset(
    {OpKind.SET, OpKind.CREATE, OpKind.UPDATE, OpKind.CAS, OpKind.PUT, OpKind.TXN}
)
KINDS_WITH_COMPARE: Final = frozenset({OpKind.CAS, OpKind.CAD, OpKind.TXN})
KINDS_WITH_OUTPUT: Final = frozenset({OpKind.READ, OpKind.RANGE, OpKind.SERIAL_RANGE, OpKind.TXN})
"""Kinds that may return a value read (a txn: from its failure branch)."""
KINDS_WITH_SUCCEEDED: Final = frozenset({OpKind.DELETE_RANGE, OpKind.TXN})
"""v3 kinds whose ok response says whether their conditional part took effect."""


class Outcome(StrEnum):
    """How a request ended, as far as its client knows."""

    OK = "ok"
    FAILED = "failed"
    INDETERMINATE = "indeterminate"


class HistoryError(ValueError):
    """A record or a recorder call that breaks the history's rules."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One request of one client: its input, its output and its interval in virtual time.

    Attributes:
        op_id: unique in its history; the recorder numbers operations from 0 in invoke order.
        client_id: the sequential client that issued it.
        kind: what was asked.
        key: the key (a v2 path such as ``/k3``).
        value: the value written (set, create, update, cas), else ``None``.
        prev_value: the compared value (cas, cad), or ``None`` when not compared.
        prev_index: the compared ``modifiedIndex`` (cas, cad), or ``None`` when not compared.
        invoke_s: when the request was sent (virtual seconds).
        outcome: ok, failed or indeterminate.
        complete_s: when the client learned the outcome or gave up; ``None`` only for an
            indeterminate operation that the history ended before.
        output_value: the value a successful read returned, else ``None``.
        index: the ``modifiedIndex`` of the node in a successful response, when known: for a
            write the index it created, for a delete the delete's index, for a read the
            index of the value read. ``None`` when unknown or not ok.
        error_code: etcd's ``errorCode`` of a failed request, if it had one.
        note: free text for reports (for example why the client gave up).
        succeeded: v3 only, for an ok txn (the compare held) or delete-range (a key was
            deleted); else ``None``.
        group: a v3 txn on several keys: the id of its first record, on each of its records.
        header_revision: an ok grouped txn whose compares failed: the revision its
            else-ranges read at (the response header's).
    """

    op_id: int
    client_id: int
    kind: OpKind
    key: str
    invoke_s: float
    outcome: Outcome
    complete_s: float | None
    value: str | None = None
    prev_value: str | None = None
    prev_index: int | None = None
    output_value: str | None = None
    index: int | None = None
    error_code: int | None = None
    note: str = ""
    succeeded: bool | None = None
    group: int | None = None
    header_revision: int | None = None

    def __post_init__(self) -> None:
        problem = _operation_problem(self)
        if problem:
            raise HistoryError(f"operation {self.op_id}: {problem}")

    @property
    def ok(self) -> bool:
        """The success flag: the request took effect or observed the key."""
        return self.outcome is Outcome.OK

    @property
    def is_write(self) -> bool:
        """The request may change the key (every kind but read)."""
        return self.kind in WRITE_KINDS

    @property
    def effective_complete_s(self) -> float:
        """The completion time the checker uses: +infinity for an indeterminate operation."""
        if self.outcome is Outcome.INDETERMINATE or self.complete_s is None:
            return math.inf
        return self.complete_s

    def describe(self) -> str:
        """One line for reports: ``c3 #17 cas /k1 [v2→v5] ok @42 [1.2000, 1.3500]``."""
        return f"c{self.client_id} #{self.op_id} {self.label()} [{self.interval_text()}]"

    def label(self) -> str:
        """The request and its result, without client or times: ``cas /k1 [v2→v5] ok @42``."""
        parts = [self.kind.value, self.key]
        if self.group is not None:
            parts.append(f"(txn #{self.group})")
        compare = []
        if self.prev_value is not None:
            compare.append(f"={self.prev_value}")
        if self.prev_index is not None:
            compare.append(f"@{self.prev_index}")
        if compare:
            parts.append(f"if {' '.join(compare)}")
        if self.value is not None:
            parts.append(f"→{self.value}")
        parts.append(self.result_text())
        return " ".join(parts)

    def result_text(self) -> str:
        """The outcome: ``ok``, ``ok v3@12``, ``ok else v3@12``, ``failed 101``,
        ``indeterminate``."""
        if self.outcome is Outcome.OK:
            shown = "ok"
            if self.succeeded is False:
                shown += " else" if self.kind is OpKind.TXN else " none"
            if self.kind in (OpKind.RANGE, OpKind.SERIAL_RANGE) and self.output_value is None:
                shown += " absent"
            if self.output_value is not None:
                shown += f" {self.output_value}"
            if self.index is not None:
                shown += f"@{self.index}"
            if self.header_revision is not None:
                shown += f" read at {self.header_revision}"
            return shown
        if self.outcome is Outcome.FAILED:
            return "failed" if self.error_code is None else f"failed {self.error_code}"
        return "indeterminate"

    def interval_text(self) -> str:
        """``invoke, complete`` with four decimals; an open end is ``…``."""
        end = "…" if self.complete_s is None else f"{self.complete_s:.4f}"
        return f"{self.invoke_s:.4f}, {end}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this record; fields at their default are left out."""
        record: dict[str, Any] = {
            "id": self.op_id,
            "client": self.client_id,
            "kind": self.kind.value,
            "key": self.key,
            "invoke_s": self.invoke_s,
            "outcome": self.outcome.value,
            "complete_s": self.complete_s,
        }
        optional: dict[str, Any] = {
            "value": self.value,
            "prev_value": self.prev_value,
            "prev_index": self.prev_index,
            "output_value": self.output_value,
            "index": self.index,
            "error_code": self.error_code,
            "succeeded": self.succeeded,
            "group": self.group,
            "header_revision": self.header_revision,
        }
        record.update((name, item) for name, item in optional.items() if item is not None)
        if self.note:
            record["note"] = self.note
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Operation:
        """The record of a ``to_dict`` object.

        Raises:
            HistoryError: a field is missing, of the wrong type, or breaks the record's rules.
        """
        try:
            return cls(
                op_id=_integer(record["id"]),
                client_id=_integer(record["client"]),
                kind=OpKind(record["kind"]),
                key=_text(record["key"]),
                invoke_s=_number(record["invoke_s"]),
                outcome=Outcome(record["outcome"]),
                complete_s=_optional_number(record.get("complete_s")),
                value=_optional_text(record.get("value")),
                prev_value=_optional_text(record.get("prev_value")),
                prev_index=_optional_integer(record.get("prev_index")),
                output_value=_optional_text(record.get("output_value")),
                index=_optional_integer(record.get("index")),
                error_code=_optional_integer(record.get("error_code")),
                note=_text(record.get("note", "")),
                succeeded=_optional_boolean(record.get("succeeded")),
                group=_optional_integer(record.get("group")),
                header_revision=_optional_integer(record.get("header_revision")),
            )
        except (KeyError, ValueError, TypeError) as error:
            if isinstance(error, HistoryError):
                raise
            raise HistoryError(f"bad operation record {dict(record)!r}: {error!r}") from None


def _operation_problem(op: Operation) -> str:
    """Why ``op`` is not a valid record, or ``""``."""
    if not math.isfinite(op.invoke_s):
        return "invoke time must be finite"
    if op.complete_s is not None and not (
        math.isfinite(op.complete_s) and op.complete_s >= op.invoke_s
    ):
        return "complete time must be finite and not before the invoke time"
    if op.complete_s is None and op.outcome is not Outcome.INDETERMINATE:
        return "only an indeterminate operation may lack a complete time"
    if (op.value is not None) != (op.kind in KINDS_WITH_VALUE):
        return f"a {op.kind} {'needs' if op.kind in KINDS_WITH_VALUE else 'takes no'} value"
    compares = op.prev_value is not None or op.prev_index is not None
    if compares != (op.kind in KINDS_WITH_COMPARE):
        what = "needs prev_value and/or" if op.kind in KINDS_WITH_COMPARE else "takes no"
        return f"a {op.kind} {what} prev_index"
    if op.outcome is not Outcome.OK and (op.output_value is not None or op.index is not None):
        return "only an ok operation has an output value or index"
    if op.output_value is not None and op.kind not in KINDS_WITH_OUTPUT:
        return "only a read has an output value"
    if op.kind is OpKind.READ and op.outcome is Outcome.OK and op.output_value is None:
        return "an ok read returns a value (a read of an absent key fails with 100)"
    if op.error_code is not None and op.outcome is not Outcome.FAILED:
        return "only a failed operation has an error code"
    if op.kind in V3_KINDS:
        return _v3_problem(op)
    if (op.prev_index is not None and op.prev_index < 1) or (op.index is not None and op.index < 1):
        return "etcd indexes are positive (prevIndex=0 means no compare)"
    if op.succeeded is not None:
        return "only an ok v3 txn or delete-range has a succeeded flag"
    return ""


def _v3_problem(op: Operation) -> str:
    """Why the v3 record ``op`` is not valid, or ``""`` (the rules shared with v2 hold)."""
    if op.succeeded is not None and not (op.ok and op.kind in KINDS_WITH_SUCCEEDED):
        return "only an ok v3 txn or delete-range has a succeeded flag"
    if op.ok and op.kind in KINDS_WITH_SUCCEEDED and op.succeeded is None:
        return f"an ok {op.kind} says whether it succeeded"
    if op.kind is OpKind.TXN:
        if (op.prev_value is None) == (op.prev_index is None):
            return "a txn compares either the value or the mod_revision"
        if op.succeeded and op.output_value is not None:
            return "a txn whose compare held reads nothing"
    if op.group is not None and op.kind is not OpKind.TXN:
        return "only a txn's records form a group"
    read_at = op.ok and op.group is not None and op.succeeded is False
    if (op.header_revision is not None) != read_at:
        return "a grouped txn whose compares failed, and only it, has the revision it read at"
    if op.header_revision is not None and op.index is not None and op.index > op.header_revision:
        return "a read at a revision returns no later mod_revision"
    reads_absent = op.kind in (OpKind.RANGE, OpKind.SERIAL_RANGE) or op.succeeded is False
    if reads_absent and op.output_value is None and op.index is not None:
        return "an absent key has no mod_revision"
    if (op.prev_index is not None and op.prev_index < 0) or (op.index is not None and op.index < 1):
        return "revisions are positive (a mod_revision compare with 0 means absent)"
    return ""


def _optional_boolean(item: Any) -> bool | None:
    if item is None or isinstance(item, bool):
        return item
    raise HistoryError(f"expected a boolean, got {item!r}")


def _integer(item: Any) -> int:
    if isinstance(item, bool) or not isinstance(item, int):
        raise HistoryError(f"expected an integer, got {item!r}")
    return item


def _optional_integer(item: Any) -> int | None:
    return None if item is None else _integer(item)


def _number(item: Any) -> float:
    if isinstance(item, bool) or not isinstance(item, int | float):
        raise HistoryError(f"expected a number, got {item!r}")
    return float(item)


def _optional_number(item: Any) -> float | None:
    return None if item is None else _number(item)


def _text(item: Any) -> str:
    if not isinstance(item, str):
        raise HistoryError(f"expected a string, got {item!r}")
    return item


def _optional_text(item: Any) -> str | None:
    return None if item is None else _text(item)


@dataclass(frozen=True, slots=True)
class _Pending:
    op_id: int
    client_id: int
    kind: OpKind
    key: str
    invoke_s: float
    value: str | None
    prev_value: str | None
    prev_index: int | None
    group: int | None = None


class History:
    """The recorder workload clients call, and the list of operations it collects.

    Args:
        clock: where ``time_s=None`` calls read the time (for example ``trio.current_time``);
            without one every call must pass ``time_s``.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        self._operations: dict[int, Operation] = {}
        self._pending: dict[int, _Pending] = {}
        self._pending_by_client: dict[int, int] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._operations)

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations)

    @property
    def operations(self) -> tuple[Operation, ...]:
        """The completed operations (indeterminate ones included), by id."""
        return tuple(self._operations[op_id] for op_id in sorted(self._operations))

    @property
    def pending_ids(self) -> tuple[int, ...]:
        """The operations invoked and not yet completed, by id."""
        return tuple(sorted(self._pending))

    def invoke(
        self,
        client_id: int,
        kind: OpKind,
        key: str,
        *,
        value: str | None = None,
        prev_value: str | None = None,
        prev_index: int | None = None,
        time_s: float | None = None,
    ) -> int:
        """Record that ``client_id`` sent a request; returns the operation's id.

        Raises:
            HistoryError: the client already has a pending operation, or the input does not fit
                the kind.
        """
        if client_id in self._pending_by_client:
            pending = self._pending_by_client[client_id]
            raise HistoryError(f"client {client_id} already has operation {pending} pending")
        op_id = self._next_id
        now_s = self._time(time_s)
        # Validate the input now, with a provisional outcome, rather than at completion.
        Operation(
            op_id,
            client_id,
            kind,
            key,
            now_s,
            Outcome.INDETERMINATE,
            None,
            value=value,
            prev_value=prev_value,
            prev_index=prev_index,
        )
        self._next_id += 1
        self._pending[op_id] = _Pending(
            op_id, client_id, kind, key, now_s, value, prev_value, prev_index
        )
        self._pending_by_client[client_id] = op_id
        return op_id

    def invoke_txn_group(
        self,
        client_id: int,
        compares: Sequence[tuple[str, int]],
        values: Sequence[str],
        *,
        time_s: float | None = None,
    ) -> tuple[int, ...]:
        """Record a v3 txn on several keys: ``If(mod_revision(key) == revision)`` for every
        ``(key, revision)`` of ``compares``, then put each key its value of ``values``, else
        range every key; the ids of its records, one a key (complete each of them).

        Raises:
            HistoryError: the client already has a pending operation, fewer than two keys, a
                key twice, or a value or revision that does not fit.
        """
        keys = [key for key, _ in compares]
        if len(keys) < 2 or len(set(keys)) != len(keys) or len(values) != len(keys):
            raise HistoryError("a txn group has two or more distinct keys, a value each")
        first = self.invoke(
            client_id, OpKind.TXN, keys[0], value=values[0], prev_index=compares[0][1],
            time_s=time_s,
        )  # fmt: skip
        invoked_s = self._pending[first].invoke_s
        self._pending[first] = replace(self._pending[first], group=first)
        ids = [first]
        for (key, revision), value in zip(compares[1:], values[1:], strict=True):
            Operation(
                self._next_id, client_id, OpKind.TXN, key, invoked_s, Outcome.INDETERMINATE,
                None, value=value, prev_index=revision, group=first,
            )  # fmt: skip
            self._pending[self._next_id] = _Pending(
                self._next_id, client_id, OpKind.TXN, key, invoked_s, value, None, revision, first
            )
            ids.append(self._next_id)
            self._next_id += 1
        return tuple(ids)

    def ok(
        self,
        op_id: int,
        *,
        output_value: str | None = None,
        index: int | None = None,
        succeeded: bool | None = None,
        header_revision: int | None = None,
        time_s: float | None = None,
    ) -> Operation:
        """The request succeeded: a read returned ``output_value``; ``index`` is the node's
        ``modifiedIndex`` (v3: the revision) in the response, when the client saw it;
        ``succeeded`` is a v3 txn's or delete-range's flag; ``header_revision`` the revision
        a failed txn group read at."""
        return self._complete(
            op_id, Outcome.OK, time_s, output_value=output_value, index=index,
            succeeded=succeeded, header_revision=header_revision,
        )  # fmt: skip

    def fail(
        self, op_id: int, *, error_code: int | None, note: str = "", time_s: float | None = None
    ) -> Operation:
        """The request definitely failed with etcd's ``error_code`` (None: no code)."""
        return self._complete(op_id, Outcome.FAILED, time_s, error_code=error_code, note=note)

    def indeterminate(
        self, op_id: int, *, note: str = "", time_s: float | None = None
    ) -> Operation:
        """The client gave up without knowing whether the request took effect."""
        return self._complete(op_id, Outcome.INDETERMINATE, time_s, note=note)

    def finish(self, *, note: str = "history ended") -> tuple[Operation, ...]:
        """Close the history: every pending operation becomes indeterminate with no end."""
        closed = []
        for op_id in sorted(self._pending):
            pending = self._pending.pop(op_id)
            self._pending_by_client.pop(pending.client_id, None)
            closed.append(self._store(pending, Outcome.INDETERMINATE, None, note=note))
        return tuple(closed)

    def add(self, operation: Operation) -> None:
        """Add a finished record (for histories built by hand or read back).

        Raises:
            HistoryError: the id is already taken.
        """
        if operation.op_id in self._operations or operation.op_id in self._pending:
            raise HistoryError(f"operation id {operation.op_id} is already in the history")
        self._operations[operation.op_id] = operation
        self._next_id = max(self._next_id, operation.op_id + 1)

    @classmethod
    def of(cls, operations: Iterable[Operation]) -> History:
        """A history holding ``operations``."""
        history = cls()
        for operation in operations:
            history.add(operation)
        return history

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: a format tag and the operations by id.

        Raises:
            HistoryError: operations are still pending (call ``finish`` first).
        """
        if self._pending:
            raise HistoryError(f"operations {self.pending_ids} are still pending")
        return {
            "format": HISTORY_FORMAT,
            "operations": [operation.to_dict() for operation in self.operations],
        }

    def to_json(self) -> str:
        """The history as JSON text, one operation per line; the same history gives the same
        text."""
        records = [
            json.dumps(record, ensure_ascii=False, allow_nan=False)
            for record in self.to_dict()["operations"]
        ]
        body = ",\n".join(records)
        return f'{{"format": "{HISTORY_FORMAT}", "operations": [\n{body}\n]}}\n'

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> History:
        """The history of a ``to_dict`` object.

        Raises:
            HistoryError: wrong format tag, or a bad record.
        """
        if document.get("format") != HISTORY_FORMAT:
            raise HistoryError(f"not a {HISTORY_FORMAT} document: {document.get('format')!r}")
        records = document.get("operations")
        if not isinstance(records, list):
            raise HistoryError("operations must be a list")
        history = cls()
        for record in records:
            if not isinstance(record, dict):
                raise HistoryError(f"an operation must be an object, got {record!r}")
            history.add(Operation.from_dict(record))
        return history

    @classmethod
    def from_json(cls, text: str) -> History:
        """The history of ``to_json`` text.

        Raises:
            HistoryError: not JSON, or not a history.
        """
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise HistoryError(f"not JSON: {error}") from None
        if not isinstance(document, dict):
            raise HistoryError("a history is a JSON object")
        return cls.from_dict(document)

    def _time(self, time_s: float | None) -> float:
        if time_s is not None:
            return time_s
        if self._clock is None:
            raise HistoryError("no time given and the history has no clock")
        return self._clock()

    def _complete(
        self,
        op_id: int,
        outcome: Outcome,
        time_s: float | None,
        *,
        output_value: str | None = None,
        index: int | None = None,
        error_code: int | None = None,
        note: str = "",
        succeeded: bool | None = None,
        header_revision: int | None = None,
    ) -> Operation:
        pending = self._pending.get(op_id)
        if pending is None:
            raise HistoryError(f"operation {op_id} is not pending")
        operation = self._store(
            pending,
            outcome,
            self._time(time_s),
            output_value=output_value,
            index=index,
            error_code=error_code,
            note=note,
            succeeded=succeeded,
            header_revision=header_revision,
        )
        del self._pending[op_id]
        if not any(other.client_id == pending.client_id for other in self._pending.values()):
            del self._pending_by_client[pending.client_id]  # the last record of its group
        return operation

    def _store(
        self,
        pending: _Pending,
        outcome: Outcome,
        complete_s: float | None,
        *,
        output_value: str | None = None,
        index: int | None = None,
        error_code: int | None = None,
        note: str = "",
        succeeded: bool | None = None,
        header_revision: int | None = None,
    ) -> Operation:
        operation = Operation(
            op_id=pending.op_id,
            client_id=pending.client_id,
            kind=pending.kind,
            key=pending.key,
            invoke_s=pending.invoke_s,
            outcome=outcome,
            complete_s=complete_s,
            value=pending.value,
            prev_value=pending.prev_value,
            prev_index=pending.prev_index,
            output_value=output_value,
            index=index,
            error_code=error_code,
            note=note,
            succeeded=succeeded,
            group=pending.group,
            header_revision=header_revision,
        )
        self._operations[operation.op_id] = operation
        return operation


def relaxed(operation: Operation) -> Operation:
    """``operation`` with its outcome forgotten: indeterminate, no output, no end.

    Any linearization of a history is also one of the history with an operation relaxed, so
    relaxing never turns a linearizable history into a non-linearizable one.
    """
    return replace(
        operation,
        outcome=Outcome.INDETERMINATE,
        complete_s=None,
        output_value=None,
        index=None,
        error_code=None,
        succeeded=None,
        header_revision=None,
    )
