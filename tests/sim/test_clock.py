"""Per-member clocks (``sim.clock``) and clock faults: a drifting monotonic clock's sleeps
end when *its* reading reaches the deadline (so they run fast or slow in true time, and follow
a rate change mid-sleep); a wall-clock jump moves no timer; the lessor expires leases on the
monotonic clock (on the wall clock only under the planted bug); the lease checker's bounds
scale with the rates clocks ran at; and one short clock-faults seed passes and replays.

The planted bug's 200-seed catch is in ``test_clock_faults.py`` (slow)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from actors.clock import TrioClock
from actors.leases import MemberLeases
from actors.raft import Role
from actors.raft_actor import RaftStatus
from sim.clock import SimClock
from sim.lease_checker import LeaseFacts, check_leases
from sim.report import summary_lines
from sim.runner import RunOptions, run
from sim.scenarios import SCENARIOS
from sim.v3_records import LeaseAck, LeaseGone, V3Log
from sim.watch_checker import mvcc_history
from storage.lease import LeaseTable

BOOT_S = 5000.0


def in_virtual_time(test: Callable[[], Awaitable[None]]) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_drifting_clock_sleeps_its_own_seconds() -> None:
    async def main() -> None:
        clock = SimClock(0, BOOT_S, trio.current_time())
        assert clock.monotonic_s() == pytest.approx(BOOT_S)
        clock.set_rate(2.0)
        start = trio.current_time()
        await clock.sleep(1.0)  # 2x fast: one of its seconds is half a true one
        assert trio.current_time() - start == pytest.approx(0.5)
        assert clock.monotonic_s() == pytest.approx(BOOT_S + 1.0)
        clock.set_rate(0.5)
        start = trio.current_time()
        await clock.sleep(1.0)
        assert trio.current_time() - start == pytest.approx(2.0)

    in_virtual_time(main)


def test_a_rate_change_mid_sleep_moves_the_wake_up() -> None:
    async def main() -> None:
        clock = SimClock(0, BOOT_S, trio.current_time())
        start = trio.current_time()
        woke: list[float] = []

        async def sleeper() -> None:
            await clock.sleep(2.0)
            woke.append(trio.current_time() - start)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper)
            await trio.sleep(1.0)  # one of its seconds gone, one left
            clock.set_rate(4.0)  # the second left now takes a quarter of a true second
        assert woke == [pytest.approx(1.25)]
        with pytest.raises(ValueError):
            clock.set_rate(0.0)

    in_virtual_time(main)


def test_a_wall_clock_jump_moves_no_monotonic_time() -> None:
    async def main() -> None:
        clock = SimClock(10**18, BOOT_S, trio.current_time())
        wall, mono = clock.now_ns(), clock.monotonic_s()
        clock.jump(-120.0)
        assert clock.now_ns() - wall == -120 * 10**9
        assert clock.monotonic_s() == mono
        production = TrioClock(10**18)
        assert production.monotonic_s() == trio.current_time()
        assert production.true_at(3.5) == 3.5

    in_virtual_time(main)


def leader_leases(clock: SimClock, *, planted: bool) -> MemberLeases:
    """A leading member's lease shell on ``clock``, promoted, holding lease 7 (TTL 10 s)."""
    table = LeaseTable()
    status = RaftStatus(1, term=2, leader_id=1)
    status.role = Role.LEADER

    async def no_revoke(request: object) -> object:
        return None

    async def leads(_timeout_s: float) -> None:
        return None

    leases = MemberLeases(
        table,
        status,
        member_id=1,
        send=lambda recipient, payload: True,
        propose_revoke=no_revoke,
        confirm_read=leads,
        extend_s=0.0,
        tick_s=0.1,
        request_timeout_s=1.0,
        clock=clock,
        planted_wall_clock=planted,
    )
    leases.leader_entry_applied()
    leases.granted(7, 10)
    return leases


@pytest.mark.parametrize("planted", [False, True])
def test_leases_expire_on_the_monotonic_clock_never_the_wall_clock(planted: bool) -> None:
    async def main() -> None:
        clock = SimClock(10**18, BOOT_S, trio.current_time())
        leases = leader_leases(clock, planted=planted)
        clock.jump(300.0)  # five minutes forward on the wall clock
        expired = leases.lessor.expired(leases._now_s(), 10)
        assert expired == ([7] if planted else [])
        if not planted:  # drift does move expiry: 2x fast, 10 s of TTL in 5 true seconds
            clock.set_rate(2.0)
            await trio.sleep(4.9)
            assert leases.lessor.expired(leases._now_s(), 10) == []
            await trio.sleep(0.2)
            assert leases.lessor.expired(leases._now_s(), 10) == [7]

    in_virtual_time(main)


def test_the_lease_checker_scales_its_bounds_with_the_clock_rates() -> None:
    log = V3Log(granted={7})
    log.acks.append(LeaseAck(7, 1.0, 1.01, 2, "grant"))
    log.gone.append(LeaseGone(7, 2.2, "keep-alive answered TTL 0"))  # 1.2 s after a TTL of 2
    reference = mvcc_history((), 0, 0)
    exact = LeaseFacts(final_leases=frozenset(), extension_s=1.0, election_seen_slack_s=0.05)
    fast = LeaseFacts(
        final_leases=frozenset(), extension_s=1.0, election_seen_slack_s=0.05, clock_rate_max=2.0
    )
    assert any("owed life until 3.000s" in line for line in check_leases(log, reference, exact))
    assert check_leases(log, reference, fast) == []  # at 2x, a TTL of 2 s lasts 1 true second
    slow = LeaseFacts(
        final_leases=frozenset(), extension_s=1.0, election_seen_slack_s=0.05, clock_rate_min=0.5
    )
    assert slow.extension_true_s() == 0.0  # a deposed leader at half speed overhangs it all


def test_a_short_clock_faults_seed_passes_and_replays() -> None:
    options = RunOptions(seed=3, scenario="clock-faults", duration_s=4, api="v3")
    first, second = run(options), run(options)
    assert first.passed, "\n".join(summary_lines(first))
    assert first.trace_hash == second.trace_hash
    kinds = {fault.kind for fault in first.faults}
    assert kinds == {"clock-jump", "clock-drift"}
    assert any("clock-drift" in text for _, text in first.events)
    assert "clock-faults" in SCENARIOS
