"""Where a client request waits for its entry to be applied, or its read to be safe.

The API registers a waiter before it proposes; the apply actor resolves it
when the entry with that request id is applied (on the proposing member
only); the raft actor fails it at once when the core refuses the proposal.
Reads register a ReadIndex context and are released once the applied index
reaches the index the leader confirmed.

Everything here runs on the member's one Trio thread, so a plain shared
object is enough; it never blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from actors.envelope import RequestId

PENDING_REQUESTS_MAX = 10_000
"""Proposals and reads a member keeps waiting at once; more are refused (429-like)."""


APPLY_GAP_ENTRIES_MAX = 5_000
"""Committed entries a member may have left to apply before it refuses new proposals (etcd
3.4's ``maxGapBetweenApplyAndCommitIndex``): under overload the log then stops growing faster
than the state machine drains it, so the entries held in memory stay bounded."""


class TooManyRequests(Exception):
    """Too many requests are waiting already."""


def check_apply_gap(commit_index: int, applied_index: int) -> None:
    """Refuse a proposal while this member's apply lags its commit by more than
    ``APPLY_GAP_ENTRIES_MAX`` entries, as etcd does (before it proposes, so nothing changes).

    Raises:
        TooManyRequests: the apply is that far behind ("etcdserver: too many requests").
    """
    if commit_index > applied_index + APPLY_GAP_ENTRIES_MAX:
        raise TooManyRequests(
            f"applied index {applied_index} lags committed index {commit_index} by more "
            f"than {APPLY_GAP_ENTRIES_MAX}"
        )


@dataclass(eq=False)
class Waiter:
    """One request waiting for its outcome."""

    done: trio.Event = field(default_factory=trio.Event)
    result: object = None
    error: BaseException | None = None

    def resolve(self, result: object) -> None:
        """Hand over the outcome (the first one wins)."""
        if not self.done.is_set():
            self.result = result
            self.done.set()

    def fail(self, error: BaseException) -> None:
        """Hand over an error instead of an outcome."""
        if not self.done.is_set():
            self.error = error
            self.done.set()


class Waiters:
    """Requests waiting for an apply, and reads waiting for an index."""

    def __init__(self) -> None:
        self._by_request: dict[RequestId, Waiter] = {}
        self._reads_by_context: dict[bytes, Waiter] = {}
        self._reads_by_index: list[tuple[int, Waiter]] = []

    def __len__(self) -> int:
        return len(self._by_request) + len(self._reads_by_context) + len(self._reads_by_index)

    def proposals(self) -> int:
        """Proposals waiting for their entry to be applied (reads left out)."""
        return len(self._by_request)

    def _check_room(self) -> None:
        if len(self) >= PENDING_REQUESTS_MAX:
            raise TooManyRequests(f"{PENDING_REQUESTS_MAX} requests are already waiting")

    def register(self, request_id: RequestId) -> Waiter:
        """A waiter for the entry with ``request_id``.

        Raises:
            TooManyRequests: the member is saturated.
        """
        self._check_room()
        waiter = Waiter()
        self._by_request[request_id] = waiter
        return waiter

    def forget(self, request_id: RequestId) -> None:
        """The caller gave up (timeout, disconnect)."""
        self._by_request.pop(request_id, None)

    def resolve(self, request_id: RequestId, result: object) -> None:
        """The entry was applied with ``result`` (an event or an error value)."""
        waiter = self._by_request.pop(request_id, None)
        if waiter is not None:
            waiter.resolve(result)

    def fail(self, request_id: RequestId, error: BaseException) -> None:
        """The request will never be applied."""
        waiter = self._by_request.pop(request_id, None)
        if waiter is not None:
            waiter.fail(error)

    def register_read(self, context: bytes) -> Waiter:
        """A waiter for the ReadState with ``context``.

        Raises:
            TooManyRequests: the member is saturated.
        """
        self._check_room()
        waiter = Waiter()
        self._reads_by_context[context] = waiter
        return waiter

    def forget_read(self, context: bytes) -> None:
        """The reader gave up."""
        self._reads_by_context.pop(context, None)

    def fail_read(self, context: bytes, error: BaseException) -> None:
        """The read cannot be confirmed (no leader)."""
        waiter = self._reads_by_context.pop(context, None)
        if waiter is not None:
            waiter.fail(error)

    def read_confirmed(self, context: bytes, index: int, applied_index: int) -> None:
        """The leader confirmed ``index`` for the read; release it once applied."""
        waiter = self._reads_by_context.pop(context, None)
        if waiter is None:
            return
        if index <= applied_index:
            waiter.resolve(index)
        else:
            self._reads_by_index.append((index, waiter))

    def applied(self, applied_index: int) -> None:
        """The state machine reached ``applied_index``: release the reads it covers."""
        if not self._reads_by_index:
            return
        still_waiting = []
        for index, waiter in self._reads_by_index:
            if index <= applied_index:
                waiter.resolve(index)
            else:
                still_waiting.append((index, waiter))
        self._reads_by_index = still_waiting

    def fail_all(self, error: BaseException) -> None:
        """The member is stopping: nobody gets an answer."""
        for waiter in self._by_request.values():
            waiter.fail(error)
        for waiter in self._reads_by_context.values():
            waiter.fail(error)
        for _, waiter in self._reads_by_index:
            waiter.fail(error)
        self._by_request.clear()
        self._reads_by_context.clear()
        self._reads_by_index.clear()
