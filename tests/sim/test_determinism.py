"""Same seed, same trace; and proof that sim.determinism is what makes it so."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from random import Random

import pytest
import trio
import trio._core._run as trio_run
import trio.testing

from sim.determinism import (
    TRIO_VERSION_PINNED,
    TaskSteps,
    UnsupportedTrioVersion,
    check_trio_version,
    deterministic_scheduling,
    run_deterministic,
)
from sim.network import SimNetwork

SLEEPERS = 8
WRITERS = 6
CLIENTS = 4


async def racing_workload(network_seed: int) -> list[str]:
    """Tasks that race: sleeps with equal deadlines, writers to one shared list, and jittered
    traffic from several clients to one echo server. Returns what happened, in order."""
    trace: list[str] = []
    network = SimNetwork(Random(network_seed), latency_s=0.01, jitter_s=0.02, trace_traffic=True)

    async def sleeper(number: int) -> None:
        for _ in range(5):
            await trio.sleep(0.1)  # all sleepers share every deadline
            trace.append(f"sleeper {number} woke at {trio.current_time()!r}")

    async def writer(number: int) -> None:
        for step in range(5):
            trace.append(f"writer {number} step {step}")
            await trio.lowlevel.checkpoint()

    async def echo(stream: trio.abc.Stream) -> None:
        async for data in stream:
            await stream.send_all(data)

    async def client(number: int, address: str) -> None:
        stream = await network.host(f"client-{number}").connect(address)
        for step in range(5):
            await stream.send_all(f"{number}:{step};".encode())
            reply = await stream.receive_some()
            trace.append(f"client {number} got {reply!r} at {trio.current_time()!r}")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        address = await nursery.start(network.host("server").serve, "server:7", echo)
        async with trio.open_nursery() as racers:
            for number in range(SLEEPERS):
                racers.start_soon(sleeper, number)
            for number in range(WRITERS):
                racers.start_soon(writer, number)
            for number in range(CLIENTS):
                racers.start_soon(client, number, address)
        nursery.cancel_scope.cancel()
    return trace + [f"{time_s!r} {event}" for time_s, event in network.trace]


def test_the_same_seed_gives_the_same_trace() -> None:
    first = run_deterministic(racing_workload, 1234, 99)
    second = run_deterministic(racing_workload, 1234, 99)
    assert first == second
    assert len(first) > 100


def test_another_seed_gives_another_trace() -> None:
    assert run_deterministic(racing_workload, 1, 99) != run_deterministic(racing_workload, 2, 99)


def test_without_the_helper_runs_of_one_workload_differ() -> None:
    """Trio's scheduler is randomized from the OS: unseeded, the same program interleaves its
    tasks differently from run to run (even with a fixed network seed and a MockClock)."""
    traces = {
        tuple(trio.run(racing_workload, 99, clock=trio.testing.MockClock(autojump_threshold=0)))
        for _ in range(5)
    }
    assert len(traces) > 1
    seeded = {tuple(run_deterministic(racing_workload, 7, 99)) for _ in range(5)}
    assert len(seeded) == 1


def scheduling_flag() -> bool:
    flag = getattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING")  # noqa: B009 (Final to mypy)
    assert isinstance(flag, bool)
    return flag


def test_the_helper_seeds_trios_generator_and_restores_it() -> None:
    flag_before = scheduling_flag()
    state_before = trio_run._r.getstate()
    with deterministic_scheduling(5):
        assert scheduling_flag() is True
        inside = [trio_run._r.random() for _ in range(3)]
    with deterministic_scheduling(5):
        assert [trio_run._r.random() for _ in range(3)] == inside
    assert scheduling_flag() == flag_before
    assert trio_run._r.getstate() == state_before


def test_another_trio_is_refused_loudly() -> None:
    check_trio_version()
    assert trio.__version__ == TRIO_VERSION_PINNED
    with pytest.raises(UnsupportedTrioVersion, match=r"trio==0\.35\.0"):
        check_trio_version("0.36.0")


def test_a_run_gets_a_fresh_virtual_clock_by_default() -> None:
    async def sleep_and_tell() -> float:
        await trio.sleep(3600)
        return trio.current_time()

    assert run_deterministic(sleep_and_tell, 1) == 3600.0
    assert run_deterministic(sleep_and_tell, 1) == 3600.0


async def finalized_at_tick(ticks: int) -> int:
    """Drop an unfinished async generator inside a reference cycle at tick 5 and report the
    tick at which its ``finally`` ran (the garbage collector decides when)."""
    tick = 0
    finalized: list[int] = []
    kept: list[object] = []

    async def generator() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            finalized.append(tick)

    for tick in range(ticks):
        if tick == 5:
            iterator = generator()
            await iterator.__anext__()
            cycle: list[object] = [iterator]
            cycle.append(cycle)
            del iterator, cycle
        kept.extend([] for _ in range(5))  # state that grows, as real code's does
        await trio.sleep(0.01)
    return finalized[0] if finalized else -1


def run_after_allocating(objects: int, run: Callable[[], int]) -> int:
    """``run()`` after allocating ``objects`` lists (which moves the collector's counters)."""
    gc.collect()
    kept: list[list[object]] = [[] for _ in range(objects)]
    result = run()
    del kept
    return result


def test_garbage_is_collected_at_the_same_points_whatever_ran_before() -> None:
    threshold = gc.get_threshold()[0]
    allocations = [0, threshold // 3, 2 * threshold // 3]

    def deterministic() -> int:
        return run_deterministic(finalized_at_tick, 3, 200, collect_every_iterations=50)

    def seeded_only() -> int:
        with deterministic_scheduling(3):
            return trio.run(finalized_at_tick, 200, clock=trio.testing.MockClock(0, 0))

    with_helper = {run_after_allocating(objects, deterministic) for objects in allocations}
    assert len(with_helper) == 1
    assert with_helper != {-1}
    without = {run_after_allocating(objects, seeded_only) for objects in allocations}
    assert len(without) > 1, "automatic collection did not depend on earlier allocations"


class _StepHook(trio.abc.Instrument):
    """The plain way to count task steps: a hook on every step."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


def test_task_steps_counts_every_step_as_a_hook_per_step_does() -> None:
    counted, hooked = TaskSteps(), _StepHook()
    during: list[tuple[int, int]] = []

    async def workload() -> list[str]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(racing_workload, 7)
            for _ in range(20):
                await trio.sleep(0.05)
                during.append((counted.count(), hooked.steps))
        return []

    run_deterministic(workload, 7, instruments=[counted, hooked])
    assert hooked.steps > 200
    assert counted.count() == hooked.steps
    # Inside a task, the step in progress is not counted yet (the hook counted it already).
    assert all(steps == hook_steps - 1 for steps, hook_steps in during)


async def sleep_often_then_queue_a_job() -> None:
    for _ in range(100):
        await trio.sleep(0.01)
    trio.lowlevel.current_trio_token().run_sync_soon(lambda: None)
    await trio.sleep(0.01)


def test_the_simulated_path_polls_the_os_only_when_trio_queued_a_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    polls: list[float] = []
    io_manager = getattr(trio_run, "TheIOManager")  # noqa: B009 (Trio's, not exported)
    real_get_events = io_manager.get_events

    def get_events(self: object, timeout: float) -> object:
        polls.append(timeout)
        return real_get_events(self, timeout)

    monkeypatch.setattr(io_manager, "get_events", get_events)
    run_deterministic(sleep_often_then_queue_a_job, 1)
    assert 1 <= len(polls) <= 2  # the queued job's wakeup, and nothing else
    polls.clear()
    trio.run(sleep_often_then_queue_a_job, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(polls) > 100  # a plain run polls on every pass
