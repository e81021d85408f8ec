"""bench.step_count: task steps and run-loop passes per operation, by member and task."""

from __future__ import annotations

import pytest
import trio

from bench.step_count import (
    StepCounter,
    _pass_tokens,
    count_simulated,
    count_workload,
    hop_cost_us,
    per_operation,
    report,
)


def _snapshot(
    io_waits: int, cpu_s: float, main_cpu_s: float, io_cpu_s: float, **steps: tuple[int, float]
) -> dict[str, object]:
    return {
        "io_waits": io_waits, "io_cpu_s": io_cpu_s, "cpu_s": cpu_s, "main_cpu_s": main_cpu_s,
        "steps": {task: count for task, (count, _) in steps.items()},
        "step_cpu_s": {task: cpu for task, (_, cpu) in steps.items()},
    }  # fmt: skip


def test_counts_between_two_snapshots_are_divided_by_the_operations() -> None:
    before = {
        "m1": _snapshot(100, 1.0, 0.9, 0.1, raft=(50, 0.2), storage=(10, 0.1)),
        "m2": _snapshot(7, 2.0, 1.5, 0.0, raft=(3, 0.01)),
    }
    after = {
        "m1": _snapshot(300, 1.5, 1.3, 0.12, raft=(90, 0.3), storage=(110, 0.25), http=(40, 0.05)),
        "m2": _snapshot(107, 2.1, 1.58, 0.02, raft=(3, 0.01), writer=(20, 0.04)),
    }
    m1, m2 = per_operation(before, after, operations=20)
    assert (m1.name, m1.passes, m1.steps) == ("m1", 10.0, 9.0)
    assert (m1.cpu_us, m1.main_cpu_us, m1.io_wait_cpu_us, m1.step_cpu_us) == pytest.approx(
        (25_000, 20_000, 1_000, 15_000)
    )
    assert m1.run_loop_cpu_us == pytest.approx(4_000)
    assert [(task, steps) for task, steps, _ in m1.by_task] == [
        ("storage", 5.0), ("raft", 2.0), ("http", 2.0)
    ]  # fmt: skip
    assert m1.by_task[0][2] == pytest.approx(7_500)
    assert (m2.passes, m2.steps, [task for task, _, _ in m2.by_task]) == (5.0, 1.0, ["writer"])
    text = report("put", 1, "m1", 20, [m1, m2])
    assert "m1 (leader), per operation: 10.0 run-loop passes, 9.0 task steps; CPU 25000 us" in text
    assert "task steps 15000, I/O waits 1000, run loop 4000" in text
    assert "m2 (member)" in text


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
    assert counter.step_cpu_s["sleeper"] > 0
    snapshot = counter.snapshot()
    assert snapshot["steps"] == dict(counter.steps) and float(snapshot["main_cpu_s"]) > 0  # type: ignore[arg-type]


def test_a_token_through_a_chain_of_tasks_costs_each_task_a_step() -> None:
    counter = StepCounter()
    cpu_s: list[float] = []
    trio.run(_pass_tokens, 3, 50, cpu_s, instruments=[counter])
    relays = counter.steps["bench.step_count._relay"]
    assert 3 * 50 <= relays <= 3 * 51 + 3  # one step a token each, and their starts and ends
    assert len(cpu_s) == 1 and hop_cost_us(3, 50, counted=False) > 0


def test_chains_side_by_side_take_a_step_a_task_a_token_under_either_run_loop() -> None:
    counter = StepCounter()
    cpu_s: list[float] = []
    trio.run(_pass_tokens, 3, 50, cpu_s, 4, instruments=[counter])
    relays = counter.steps["bench.step_count._relay"]
    assert 4 * 3 * 50 <= relays <= 4 * (3 * 51 + 3)
    assert hop_cost_us(3, 50, counted=False, width=4, simulated=True) > 0


@pytest.mark.process
def test_a_lone_put_crosses_the_raft_storage_and_apply_actors() -> None:
    text = count_workload("put", 1, size=1, duration_s=1.0, warmup_s=0.5)
    assert "m1 (leader)" in text
    for task in ("StorageActor.run", "RaftActor.run", "ApplyActor.run", "_run_handler"):
        assert task in text, text


def test_a_simulated_run_is_counted_step_for_step_as_its_watchdog_counts_it() -> None:
    from sim.runner import RunOptions, run  # noqa: PLC0415

    text = count_simulated(0, "leader-isolation", "v2", duration_s=1.0)
    steps = int(text.splitlines()[1].split()[0])
    options = RunOptions(seed=0, scenario="leader-isolation", duration_s=1.0)
    assert steps == run(options).task_steps
    assert "actors.raft_actor.RaftActor.run" in text
    assert "trace hash" in text
