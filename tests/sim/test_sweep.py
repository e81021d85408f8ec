"""The sweep harness: results appended per seed, an interrupted sweep that resumes, the
determinism self-check, and a remote seed's report files."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sim.cluster
from sim.runner import RunOptions
from sim.sweep import (
    SeedOutcome,
    append_result,
    earlier_outcomes,
    load_results,
    recheck_sample,
    run_one_remote,
    sweep,
    write_remote_report,
)


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


def test_the_determinism_self_check_reruns_a_sample_and_passes_on_equal_hashes() -> None:
    summary = sweep(range(2), _options, workers=1, recheck_every=50)
    assert summary.rechecked == [0]
    assert not summary.failures, summary.lines()
    assert all(o.trace_hash for o in summary.outcomes)
    assert any("determinism self-check: 1 seeds run again (0)" in line for line in summary.lines())


def test_the_determinism_self_check_catches_a_member_that_draws_from_the_os(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A planted source of nondeterminism: every generator the cluster hands its members is
    seeded from the OS, as ``Random()`` or ``uuid4`` in member code would be."""

    def unseeded(seed: int | None = None) -> random.Random:
        return random.Random()

    monkeypatch.setattr(sim.cluster, "Random", unseeded)
    summary = sweep([0], _options, workers=1, recheck_every=50)
    assert [o.kind for o in summary.nondeterministic] == ["determinism"]
    assert [o.seed for o in summary.failures] == [0]
    text = "\n".join(summary.lines())
    assert "trace hashes DIFFERENT" in text and "FAILED (determinism)" in text


def test_the_sample_is_one_seed_in_n_and_never_empty() -> None:
    outcomes = [
        SeedOutcome(seed, "swarm", True, [], 1.0, 1.0, 1, trace_hash=f"h{seed}")
        for seed in range(120)
    ]
    assert [o.seed for o in recheck_sample(outcomes, 50)] == [0, 50, 100]
    assert [o.seed for o in recheck_sample(outcomes[7:8], 50)] == [7]
    assert recheck_sample([dataclasses.replace(outcomes[0], trace_hash="")], 50) == []


def test_a_remote_seed_sends_its_report_files_back(tmp_path: Path) -> None:
    options = RunOptions(
        seed=2, scenario="split-brain", planted_bug="quorum-read-without-read-index", duration_s=12
    )
    outcome, files = run_one_remote(options)
    assert not outcome.passed and outcome.kind == "linearizability"
    assert {"report.txt", "faults.json", "history.json", "timeline.html"} <= set(files)
    written = write_remote_report(outcome, files, str(tmp_path))
    assert Path(written.report_dir) == tmp_path / "seed-2-split-brain"
    assert (tmp_path / "seed-2-split-brain" / "report.txt").read_text().startswith("SEED=2 ")


WORKER_PID_SCRIPT = """
import os, time
from sim.sweep import worker_pool
pool = worker_pool(1)
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 120)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal")
def test_a_killed_sweeps_workers_end_with_it() -> None:
    """Killed with SIGTERM, a sweep cannot shut its pool down; its workers must not go on
    running seeds nobody will read (found when they ran on beside a measurement)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", WORKER_PID_SCRIPT],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    worker = 0
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), f"worker {worker} outlived its sweep"
    finally:
        parent.kill()
        parent.wait()
        if worker and _alive(worker):  # the failure's orphan: not left to sleep on
            os.kill(worker, signal.SIGKILL)
