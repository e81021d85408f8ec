"""`troika sim`'s options: both APIs spread over a sweep's seeds, and bad names and numbers
refused as usage errors before anything runs (a run with no clients would pass, checking
nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actors.bootstrap import KNOWN_PLANTED_BUGS
from sim.runner import APIS
from sim.scenarios import SCENARIOS
from sim.sweep import api_for, scenario_for
from troika.cli import app
from troika.sim_commands import _bug_names, sweep_run_options

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
