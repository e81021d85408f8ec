"""Timeouts: one task fails each waiter whose deadline passes, in virtual time."""

from __future__ import annotations

import trio

from actors.waiters import TIMEOUTS_SLACK_ENTRIES, Timeouts, Waiter


class Expired(Exception):
    pass


async def test_a_waiter_fails_at_its_deadline_and_not_before(autojump_clock: object) -> None:
    timeouts = Timeouts(Expired)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timeouts.run)
        waiter = Waiter()
        started = trio.current_time()
        timeouts.watch(waiter, started + 5.0)
        await trio.sleep(4.9)
        assert not waiter.done.is_set()
        with trio.fail_after(60):
            await waiter.done.wait()
        assert trio.current_time() - started == 5.0
        assert isinstance(waiter.error, Expired)
        nursery.cancel_scope.cancel()


async def test_an_earlier_deadline_wakes_the_sleeping_task(autojump_clock: object) -> None:
    timeouts = Timeouts(Expired)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timeouts.run)
        late, early = Waiter(), Waiter()
        started = trio.current_time()
        timeouts.watch(late, started + 60.0)
        await trio.sleep(1.0)  # the task now sleeps until the late deadline
        timeouts.watch(early, started + 2.0)
        with trio.fail_after(30):
            await early.done.wait()
        assert trio.current_time() - started == 2.0
        assert not late.done.is_set()
        nursery.cancel_scope.cancel()


async def test_a_resolved_waiter_keeps_its_outcome(autojump_clock: object) -> None:
    timeouts = Timeouts(Expired)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timeouts.run)
        waiter = Waiter()
        timeouts.watch(waiter, trio.current_time() + 1.0)
        waiter.resolve("applied")
        await trio.sleep(2.0)
        assert (waiter.result, waiter.error) == ("applied", None)
        assert len(timeouts) == 0
        nursery.cancel_scope.cancel()


async def test_finished_waiters_do_not_pile_up() -> None:
    timeouts = Timeouts(Expired)
    live = Waiter()
    timeouts.watch(live, trio.current_time() + 1.0)  # at the top, never done: no pops
    for _ in range(10 * TIMEOUTS_SLACK_ENTRIES):
        waiter = Waiter()
        timeouts.watch(waiter, trio.current_time() + 100.0)
        waiter.resolve(None)
    assert len(timeouts) <= 2 + TIMEOUTS_SLACK_ENTRIES + 1
    timeouts.expire(trio.current_time() + 1.0)
    assert isinstance(live.error, Expired)
