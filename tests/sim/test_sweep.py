"""The sweep harness: results appended per seed, and an interrupted sweep that resumes."""

from __future__ import annotations

from pathlib import Path

from sim.runner import RunOptions
from sim.sweep import SeedOutcome, append_result, earlier_outcomes, load_results, sweep


def _options(seed: int) -> RunOptions:
    return RunOptions(seed=seed, scenario="leader-isolation", duration_s=1.0)


def test_an_interrupted_sweep_resumes_without_running_finished_seeds(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    first = sweep([0], _options, workers=1, results_path=results)
    assert [o.seed for o in first.outcomes] == [0]
    assert first.outcomes[0].passed, first.outcomes[0].summary

    ran: list[int] = []
    second = sweep(
        range(2), _options, workers=1, results_path=results, on_outcome=lambda o: ran.append(o.seed)
    )
    assert ran == [1]
    assert sorted(o.seed for o in second.outcomes) == [0, 1]
    assert second.resumed == 1
    assert "1 seeds were read back from an earlier sweep's results" in second.lines()
    assert sorted(o.seed for o in load_results(results)) == [0, 1]


def test_results_from_other_options_or_a_cut_line_are_not_reused(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    sweep([0], _options, workers=1, results_path=results)
    with results.open("a") as file:
        file.write('{"seed": 1, "scenario": "leader-iso')  # a stop in the middle of a write

    def longer(seed: int) -> RunOptions:
        return RunOptions(seed=seed, scenario="leader-isolation", duration_s=2.0)

    assert [o.seed for o in earlier_outcomes(results, range(2), _options)] == [0]
    assert earlier_outcomes(results, range(2), longer) == []


def test_a_failed_seed_is_kept_as_failed(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    failed = SeedOutcome(
        seed=3, scenario="leader-isolation", passed=False, summary=["SEED=3", "FAILED: x"],
        simulated_s=1.0, wall_s=1.0, operations=5, replay=_options(3).replay_command(),
    )  # fmt: skip
    results.write_text("")
    append_result(results, failed)
    summary = sweep([3], _options, workers=1, results_path=results)
    assert [o.seed for o in summary.failures] == [3]
    assert any("FAILED seed 3" in line for line in summary.lines())
