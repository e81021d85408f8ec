"""bench.step_count: task steps and run-loop passes per operation, by member and task."""

from __future__ import annotations

import pytest
import trio

from bench.step_count import StepCounter, count_workload, per_operation, report


def _snapshot(io_waits: int, cpu_s: float, **steps: int) -> dict[str, object]:
    return {"io_waits": io_waits, "cpu_s": cpu_s, "steps": steps}


def test_counts_between_two_snapshots_are_divided_by_the_operations() -> None:
    before = {"m1": _snapshot(100, 1.0, raft=50, storage=10), "m2": _snapshot(7, 2.0, raft=3)}
    after = {
        "m1": _snapshot(300, 1.5, raft=90, storage=110, http=40),
        "m2": _snapshot(107, 2.1, raft=3, writer=20),
    }
    m1, m2 = per_operation(before, after, operations=20)
    assert (m1.name, m1.passes, m1.steps, m1.cpu_ms) == ("m1", 10.0, 9.0, 25.0)
    assert m1.by_task == [("storage", 5.0), ("raft", 2.0), ("http", 2.0)]
    assert (m2.passes, m2.steps, m2.by_task) == (5.0, 1.0, [("writer", 1.0)])
    text = report("put", 1, "m1", 20, [m1, m2])
    assert "m1 (leader): 10.0 run-loop passes, 9.0 task steps, 25.00 ms CPU" in text
    assert "m2 (member): 5.0 run-loop passes" in text


def test_the_counter_sees_every_step_of_a_task_and_the_passes_between() -> None:
    counter = StepCounter()

    async def sleeper() -> None:
        for _ in range(3):
            await trio.sleep(0)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper, name="sleeper")

    trio.run(main, instruments=[counter])
    assert counter.steps["sleeper"] == 4  # the start and one step after each sleep
    assert counter.io_waits >= 4


@pytest.mark.process
def test_a_lone_put_crosses_the_raft_storage_and_apply_actors() -> None:
    text = count_workload("put", 1, size=1, duration_s=1.0, warmup_s=0.5)
    assert "m1 (leader)" in text
    for task in ("StorageActor.run", "RaftActor.run", "ApplyActor.run", "_run_handler"):
        assert task in text, text
