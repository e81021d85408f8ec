"""A simulated run leaves nothing of itself behind in the process that ran it.

A sweep worker runs thousands of seeds in one process. A member that outlives its run keeps
its stores, logs and histories: before this was checked, a module-level registry whose
values held their weak keys strongly (``actors.qos._LIMITERS``) kept every member of every
run, and a 2-worker sweep's workers grew by about 4.5 MB a seed (1.5 GB each after some 330
seeds each).
"""

from __future__ import annotations

import gc

from actors.member import Member
from sim.runner import RunOptions, run

OBJECTS_PER_RUN_MAX = 1_000
"""What a run may leave (interned strings, caches filled once); a run's members, stores and
histories are tens of thousands of objects."""


def _quick_run() -> None:
    result = run(RunOptions(seed=2, scenario="crash-during-commit", duration_s=2.0, api="v3"))
    assert result.passed, result.violations


def _alive_after_collection() -> tuple[int, int]:
    gc.collect()
    objects = gc.get_objects()
    return len(objects), sum(1 for thing in objects if isinstance(thing, Member))


def test_no_member_and_no_run_state_outlives_its_run() -> None:
    _quick_run()  # the first run fills what is filled once per process
    before, members_before = _alive_after_collection()  # other tests' may be alive too
    _quick_run()
    _quick_run()
    after, members_after = _alive_after_collection()
    assert members_after - members_before == 0
    assert after - before < 2 * OBJECTS_PER_RUN_MAX, f"{after - before} objects left by 2 runs"
