"""Sweeps on a Dask cluster: a LocalCluster of 2 worker processes stands in for machines.

The seeds stream into the same resumable results file as a local sweep, a failure keeps its
replay command and its report (written here, not on the worker), and a worker killed
mid-seed loses nothing: the seed runs again on a worker that lives.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from sim.runner import RunOptions
from sim.sweep import SeedOutcome, load_results, sweep

pytestmark = pytest.mark.slow

SEEDS = 6


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        memory_limit=None, silence_logs=40,
    ) as local:  # fmt: skip
        yield local


def _options(seed: int) -> RunOptions:
    return RunOptions(seed=seed, scenario="leader-isolation", duration_s=2.0)


def _pid_of_a_busy_worker(client: Client) -> int | None:
    """The process of a worker that is running a seed now (None if none is)."""
    busy = [address for address, keys in client.processing().items() if keys]
    if not busy:
        return None
    pids: dict[str, int] = client.run(os.getpid, workers=busy[:1])
    return next(iter(pids.values()))


def test_a_dask_sweep_streams_results_and_survives_a_killed_worker(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    results = tmp_path / "results.jsonl"
    killed: list[int] = []
    with Client(cluster, set_as_default=False) as watcher:

        def kill_one_worker_mid_seed(outcome: SeedOutcome) -> None:
            if killed:
                return
            pid = _pid_of_a_busy_worker(watcher)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        summary = sweep(
            range(SEEDS), _options, workers=0, results_path=results,
            scheduler=cluster.scheduler_address, on_outcome=kill_one_worker_mid_seed,
            report_dir=str(tmp_path / "reports"),
        )  # fmt: skip
    assert killed, "no worker was busy when the first seed came back"
    assert sorted(o.seed for o in summary.outcomes) == list(range(SEEDS))
    assert not summary.failures, "\n".join(summary.lines())
    assert summary.rechecked == [0]
    assert sorted(o.seed for o in load_results(results)) == list(range(SEEDS))
    assert all(o.replay.startswith("troika sim run --seed") for o in summary.outcomes)


def test_a_dask_sweep_failure_keeps_its_replay_and_report_and_resumes(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    def buggy(seed: int) -> RunOptions:
        return RunOptions(seed=seed, scenario="split-brain", duration_s=12,
                          planted_bug="quorum-read-without-read-index")  # fmt: skip

    results = tmp_path / "results.jsonl"
    reports = tmp_path / "reports"
    first = sweep([2], buggy, workers=0, results_path=results, recheck_every=0,
                  scheduler=cluster.scheduler_address, report_dir=str(reports))  # fmt: skip
    [failed] = first.failures
    assert failed.kind == "linearizability"
    assert failed.replay == buggy(2).replay_command()
    assert Path(failed.report_dir) == reports / "seed-2-split-brain"
    assert (reports / "seed-2-split-brain" / "timeline.html").exists()
    again = sweep([2], buggy, workers=0, results_path=results, recheck_every=0,
                  scheduler=cluster.scheduler_address)  # fmt: skip
    assert again.resumed == 1 and [o.seed for o in again.failures] == [2]
