"""Linearizable reads share ReadIndex rounds, and never join one already in flight."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors.read_batcher import ReadBatcher
from actors.waiters import TooManyRequests


class Rounds:
    """A fake ReadIndex: each round returns its number, once released."""

    def __init__(self) -> None:
        self.started = 0
        self.release = trio.Event()
        self.error: Exception | None = None

    async def __call__(self, deadline: float) -> object:
        self.started += 1
        await self.release.wait()
        self.release = trio.Event()
        if self.error is not None:
            raise self.error
        return self.started


async def test_readers_queued_together_share_one_round() -> None:
    rounds = Rounds()
    batcher = ReadBatcher(rounds, round_timeout_s=5, readers_max=100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        waiters = [batcher.enqueue() for _ in range(10)]
        await trio.testing.wait_all_tasks_blocked()
        rounds.release.set()
        for waiter in waiters:
            await waiter.done.wait()
        assert rounds.started == 1
        assert [waiter.result for waiter in waiters] == [1] * 10
        nursery.cancel_scope.cancel()


async def test_a_reader_that_arrives_during_a_round_waits_for_the_next() -> None:
    rounds = Rounds()
    batcher = ReadBatcher(rounds, round_timeout_s=5, readers_max=100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        early = batcher.enqueue()
        await trio.testing.wait_all_tasks_blocked()  # round 1 is in flight
        late = batcher.enqueue()
        rounds.release.set()
        await early.done.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert not late.done.is_set() and rounds.started == 2
        rounds.release.set()
        await late.done.wait()
        assert (early.result, late.result) == (1, 2)
        nursery.cancel_scope.cancel()


async def test_a_failed_round_fails_its_readers_and_stopping_fails_the_rest() -> None:
    rounds = Rounds()
    rounds.error = RuntimeError("no leader")
    batcher = ReadBatcher(rounds, round_timeout_s=5, readers_max=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        first = batcher.enqueue()
        await trio.testing.wait_all_tasks_blocked()
        rounds.release.set()
        await first.done.wait()
        assert isinstance(first.error, RuntimeError)
        in_round = batcher.enqueue()
        await trio.testing.wait_all_tasks_blocked()
        queued = [batcher.enqueue(), batcher.enqueue()]
        with pytest.raises(TooManyRequests):
            batcher.enqueue()
        nursery.cancel_scope.cancel()
    batcher.fail_all(LookupError("stopping"))
    assert all(isinstance(w.error, LookupError) for w in (in_round, *queued))
