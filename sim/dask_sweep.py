"""Sweeps on a Dask distributed cluster: ``troika sim sweep --scheduler tcp://HOST:8786``.

Each seed is one Dask task (``sim.sweep.run_one_remote``): a run is deterministic, so the
machine it lands on does not matter, and Dask brings what a job queue of our own would have
to: placement, a worker lost mid-seed (its process killed, its machine gone) has the seed run
again on another worker (the scheduler reschedules the tasks a dead worker held, up to its
``distributed.scheduler.allowed-failures``; past that the seed is reported as a worker
failure, with its replay command), and workers can join or leave during a sweep.

Outcomes come back as they finish and go through the same path as local ones (the resumable
JSON-lines file, the progress bar, the summary). A failed seed's report files are made on
the worker and sent back, and written here under the sweep's report directory, so a sweep
across machines leaves every report on the machine that started it.

Workers must run the same troika (the same commit, installed with its ``test`` extra, which
brings ``distributed``); a worker may run several threads, but runs one seed at a time
(``run_one_remote`` holds a lock: Trio's scheduler generator is module-level), so start
workers with ``--nthreads 1`` and as many worker processes as cores.
"""

from __future__ import annotations

from collections.abc import Iterator

from distributed import Client, as_completed

from sim.runner import RunOptions
from sim.sweep import (
    OutcomeSource,
    SeedOutcome,
    run_one_remote,
    worker_failed_outcome,
    write_remote_report,
)

CONNECT_TIMEOUT_S = 30.0
"""How long the sweep waits to reach the scheduler before giving up."""


def dask_outcomes(scheduler: str, report_dir: str) -> OutcomeSource:
    """Seeds as tasks on the Dask cluster whose scheduler is at ``scheduler``."""

    def outcomes(options_list: list[RunOptions]) -> Iterator[SeedOutcome]:
        if not options_list:
            return
        client = Client(  # type: ignore[no-untyped-call]
            scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False
        )
        with client:
            futures = {
                client.submit(run_one_remote, options, pure=False): options
                for options in options_list
            }
            for future in as_completed(futures, loop=client.loop):  # type: ignore[no-untyped-call]
                options = futures[future]
                try:
                    outcome, files = future.result()
                except Exception as error:  # KilledWorker after repeated losses, or a raise
                    yield worker_failed_outcome(options, error)
                else:
                    yield write_remote_report(outcome, files, report_dir)
                future.release()

    return outcomes
