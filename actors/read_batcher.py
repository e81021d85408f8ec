"""Linearizable reads that share ReadIndex round trips, as etcd's read loop does.

A ReadIndex costs the leader a heartbeat to every follower and their
answers. Instead of one per read, readers queue here, and one loop confirms
the whole queue with a single ReadIndex: every reader that was queued when
the round *started* gets its index (a ReadIndex taken after a read began is
a valid read point for it); readers that arrive while a round is in flight
wait for the next one. Under load that is one round trip for many reads; a
lone reader pays exactly what it paid before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from actors.waiters import TooManyRequests, Waiter

ReadRound = Callable[[float], Awaitable[object]]
"""One ReadIndex round with a deadline: the confirmed index, once applied here; or raises."""


class ReadBatcher:
    """Collects readers and confirms them a batch at a time."""

    def __init__(self, read_round: ReadRound, *, round_timeout_s: float, readers_max: int) -> None:
        self._read_round = read_round
        self._round_timeout_s = round_timeout_s
        self._readers_max = readers_max
        self._queue: list[Waiter] = []
        self._in_round: list[Waiter] = []
        self._wanted = trio.Event()

    def enqueue(self) -> Waiter:
        """A waiter that the next round to start resolves (with the index) or fails.

        Raises:
            TooManyRequests: too many readers are waiting already.
        """
        if len(self._queue) >= self._readers_max:
            raise TooManyRequests(f"{self._readers_max} reads are already waiting")
        waiter = Waiter()
        self._queue.append(waiter)
        self._wanted.set()
        return waiter

    async def run(self) -> None:
        """One round per batch, until cancelled (then ``fail_all`` answers who waits)."""
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            self._in_round, self._queue = self._queue, []
            await self._confirm(self._in_round)
            self._in_round = []

    async def _confirm(self, batch: list[Waiter]) -> None:
        deadline = trio.current_time() + self._round_timeout_s
        try:
            index = await self._read_round(deadline)
        except Exception as error:  # the readers get the round's error, whatever it is
            for waiter in batch:
                waiter.fail(error)
        else:
            for waiter in batch:
                waiter.resolve(index)

    def fail_all(self, error: BaseException) -> None:
        """Nobody waiting gets a read point: the member is stopping."""
        for waiter in (*self._in_round, *self._queue):
            waiter.fail(error)
        self._in_round = []
        self._queue = []
