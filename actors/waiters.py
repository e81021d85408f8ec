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

import heapq
import itertools
import math
from collections.abc import Callable
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

    def abandon(self) -> None:
        """Nobody waits any more (the request was cancelled): done, with no outcome."""
        self.done.set()


TIMEOUTS_SLACK_ENTRIES = 4096
"""Deadlines of finished waiters :class:`Timeouts` may hold past twice the live ones before
it sweeps them out."""


class Timeouts:
    """Fails every waiter whose deadline passes, from one task.

    A request could wait for its waiter inside a cancel scope of its own
    (``trio.move_on_at``), but entering and leaving one costs some 6 us, a twentieth of a
    v2 get. Here a wait costs a heap push; the one task sleeps until the earliest deadline
    of a waiter still waiting. Finished waiters stay in the heap until they reach its top or
    a sweep (when the heap outgrows twice the live waiters by ``TIMEOUTS_SLACK_ENTRIES``)
    drops them, so it stays bounded by the waiters the member admits.

    Args:
        expired: the error a waiter gets at its deadline.
    """

    def __init__(self, expired: Callable[[], BaseException]) -> None:
        self._expired = expired
        self._heap: list[tuple[float, int, Waiter]] = []
        self._order = itertools.count()
        self._sweep_at = TIMEOUTS_SLACK_ENTRIES
        self._sleep = trio.CancelScope()
        self._sleeping_until = math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def watch(self, waiter: Waiter, deadline: float) -> None:
        """Fail ``waiter`` at ``deadline`` (Trio's clock) unless it is done by then."""
        heapq.heappush(self._heap, (deadline, next(self._order), waiter))
        if deadline < self._sleeping_until:
            self._sleeping_until = deadline
            self._sleep.deadline = deadline
        if len(self._heap) > self._sweep_at:
            self._sweep()

    def _sweep(self) -> None:
        self._heap = [entry for entry in self._heap if not entry[2].done.is_set()]
        heapq.heapify(self._heap)
        self._sweep_at = 2 * len(self._heap) + TIMEOUTS_SLACK_ENTRIES

    def expire(self, now: float) -> None:
        """Fail the waiters whose deadline is ``now`` or earlier; drop finished ones from
        the top."""
        heap = self._heap
        while heap and (heap[0][0] <= now or heap[0][2].done.is_set()):
            _, _, waiter = heapq.heappop(heap)
            if not waiter.done.is_set():
                waiter.fail(self._expired())

    async def run(self) -> None:
        """Until cancelled: sleep until the earliest deadline of a waiter still waiting."""
        while True:
            self.expire(trio.current_time())
            self._sleeping_until = self._heap[0][0] if self._heap else math.inf
            with trio.CancelScope(deadline=self._sleeping_until) as self._sleep:
                await trio.sleep_forever()


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
