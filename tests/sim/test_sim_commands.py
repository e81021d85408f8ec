"""`troika sim`'s options: both APIs spread over a sweep's seeds, and bad names and numbers
refused as usage errors before anything runs (a run with no clients would pass, checking
nothing)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actors.bootstrap import KNOWN_PLANTED_BUGS
from sim.runner import APIS
from sim.scenarios import SCENARIOS
from sim.sweep import SeedOutcome, api_for, scenario_for
from troika.cli import app
from troika.sim_commands import _bug_names, sweep_run_options
from troika.sweep_record import api_of, seed_ranges, summary_lines

runner = CliRunner()


def test_all_gives_every_scenario_both_apis_over_two_rounds_of_seeds() -> None:
    seeds = range(2 * len(SCENARIOS))
    pairs = {(scenario_for(seed, "all"), api_for(seed, "all", "all")) for seed in seeds}
    assert pairs == {(scenario, api) for scenario in SCENARIOS for api in APIS}


def test_with_one_scenario_all_alternates_the_api_seed_by_seed() -> None:
    assert [api_for(seed, "all", "split-brain") for seed in range(4)] == ["v2", "v3", "v2", "v3"]


@pytest.mark.parametrize("api", APIS)
def test_a_named_api_is_every_seed_s(api: str) -> None:
    assert {
        api_for(seed, api, scenario) for seed in range(40) for scenario in ("all", "swarm")
    } == {api}


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["run", "--seed", "1", "--api", "v4"], "'v4' is not one of v2, v3"),
        (["run", "--seed", "1", "--api", "all"], "'all' is not one of v2, v3"),
        (["sweep", "--seeds", "0..1", "--api", "v4"], "'v4' is not one of v2, v3, all"),
        (["run", "--seed", "1", "--scenario", "nope"], "'nope' is not a scenario"),
        (["shrink", "--seed", "1", "--scenario", "all"], "'all' is not a scenario"),
        (["sweep", "--seeds", "0..1", "--scenario", "nope"], "'nope' is not a scenario"),
        (["run", "--seed", "1", "--bug", "ack-before-sync,nope"], "unknown planted bugs: nope"),
        (["sweep", "--seeds", "5..1"], "'5..1' is an empty range"),
        (["sweep", "--seeds", "0..1", "--workers", "0"], "greater than or equal to 1"),
        (["sweep", "--seeds", "0..1", "--recheck-every", "-1"], "greater than or equal to 0"),
        (["run", "--seed", "1", "--duration", "-1"], "greater than or equal to 0"),
        (["run", "--seed", "1", "--clients", "0"], "greater than or equal to 1"),
        (["run", "--seed", "1", "--operations-max", "0"], "greater than or equal to 1"),
        (["shrink", "--seed", "1", "--trials", "0"], "greater than or equal to 1"),
    ],
)
def test_a_bad_name_or_number_is_a_usage_error_before_any_run(
    arguments: list[str], complaint: str, tmp_path: Path
) -> None:
    results = tmp_path / "results.jsonl"
    extra = ["--results", str(results)] if arguments[0] == "sweep" else []
    result = runner.invoke(app, ["sim", *arguments, *extra])
    assert result.exit_code == 2
    assert complaint in " ".join(result.output.split()).replace("│ ", "").replace(" │", "")
    assert not results.exists()


def test_a_sweep_speaks_both_apis_by_default(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    arguments = ["sim", "sweep", "--seeds", "0..1", "--scenario", "leader-isolation",
                 "--duration", "1", "--workers", "1", "--recheck-every", "0",
                 "--results", str(results), "--report-dir", str(tmp_path / "reports")]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    replays = {
        row["seed"]: row["replay"] for row in map(json.loads, results.read_text().splitlines())
    }
    assert replays == {
        0: "troika sim run --seed 0 --scenario leader-isolation --duration 1",
        1: "troika sim run --seed 1 --scenario leader-isolation --duration 1 --api v3",
    }


def test_bugs_lists_every_bug_a_run_accepts() -> None:
    result = runner.invoke(app, ["sim", "bugs"])
    assert result.exit_code == 0, result.output
    listed = result.output.split()
    assert listed == sorted(KNOWN_PLANTED_BUGS)
    assert _bug_names(",".join(listed)) == ",".join(listed)


def test_a_sweep_gives_a_seed_the_options_its_record_is_checked_against() -> None:
    options = sweep_run_options(5, "all", "all", "ack-before-sync", 3.0)
    assert (options.scenario, options.api) == (scenario_for(5, "all"), api_for(5, "all", "all"))
    assert (options.planted_bug, options.duration_s) == ("ack-before-sync", 3.0)
    named = sweep_run_options(5, "split-brain", "v3")
    assert (named.scenario, named.api, named.planted_bug) == ("split-brain", "v3", None)


def test_seed_ranges_name_runs_and_gaps() -> None:
    assert seed_ranges([]) == "none"
    assert seed_ranges([3, 0, 1, 2]) == "0..3"
    assert seed_ranges([0, 1, 2, 5, 9, 10, 9]) == "0..2, 5, 9..10"


def _outcome(seed: int, scenario: str, passed: bool, wall_s: float, api: str) -> SeedOutcome:
    replay = f"troika sim run --seed {seed} --scenario {scenario}" + (
        " --api v3" if api == "v3" else ""
    )
    return SeedOutcome(seed, scenario, passed, [], 2 * wall_s, wall_s, 100, "", replay, "h")


def test_a_record_is_summed_up_by_api_and_scenario_with_its_failures() -> None:
    outcomes = [
        _outcome(0, "swarm", True, 4.0, "v2"),
        _outcome(1, "split-brain", True, 8.0, "v3"),
        _outcome(2, "swarm", False, 6.0, "v3"),
        _outcome(4, "swarm", True, 2.0, "v2"),
    ]
    assert [api_of(outcome) for outcome in outcomes] == ["v2", "v3", "v3", "v2"]
    lines = summary_lines(outcomes)
    assert lines[0] == "4 seeds (0..2, 4): 3 passed, 1 failed, 400 client operations"
    assert lines[1] == (
        "40 s simulated in 20 s of worker time: 2.0 simulated s per wall s per worker, 5.0 s a seed"
    )
    assert lines[2] == "by API:" and lines[3].split()[:2] == ["v2", "2"]
    assert lines[4].split()[:2] == ["v3", "2"] and "7.0 s a seed" in lines[4]
    assert [line.split()[0] for line in lines[6:8]] == ["split-brain", "swarm"]
    assert lines[-1] == "FAILED seed 2: troika sim run --seed 2 --scenario swarm --api v3"


def test_summary_of_a_record_with_a_failure_exits_1(tmp_path: Path) -> None:
    record = tmp_path / "results.jsonl"
    good, bad = _outcome(0, "swarm", True, 1.0, "v2"), _outcome(1, "swarm", False, 1.0, "v2")
    record.write_text("".join(json.dumps(dataclasses.asdict(o)) + "\n" for o in (good, bad)))
    result = runner.invoke(app, ["sim", "summary", str(record)])
    assert result.exit_code == 1 and "FAILED seed 1" in result.output
    record.write_text(json.dumps(dataclasses.asdict(good)) + "\n")
    assert runner.invoke(app, ["sim", "summary", str(record)]).exit_code == 0
    missing = runner.invoke(app, ["sim", "summary", "no-such-results.jsonl"])
    said = " ".join(missing.output.split()).replace("│ ", "").replace(" │", "")
    assert missing.exit_code == 2 and "no-such-results.jsonl is not a file" in said
