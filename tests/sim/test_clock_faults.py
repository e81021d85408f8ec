"""Clock faults' planted bug, caught by the sweep (slow): the lessor measures lease expiry on
the wall clock (``lessor-wall-clock``), so a forward jump of the leader's wall clock expires
leases whose keep-alives were acknowledged; the lease checker must catch it within 200 seeds of
``clock-faults`` (v3 clients), and the same seed must pass without the bug.

The fast tests of the clocks themselves are in ``test_clock.py``."""

from __future__ import annotations

import pytest

from actors.leases import LESSOR_WALL_CLOCK
from sim.report import failure_kind, summary_lines
from sim.runner import RunOptions, run

PLANTED_BUG_SEEDS_MAX = 200
DURATION_S = 6.0


@pytest.mark.slow
def test_lease_expiry_on_the_wall_clock_is_caught_within_200_seeds() -> None:
    for seed in range(PLANTED_BUG_SEEDS_MAX):
        options = RunOptions(
            seed, "clock-faults", planted_bug=LESSOR_WALL_CLOCK, duration_s=DURATION_S, api="v3"
        )
        result = run(options)
        if result.passed:
            continue
        report = "\n".join(summary_lines(result))
        assert failure_kind(result) == "safety", report
        assert any(line.startswith("lease: ") for line in result.violations), report
        clean = run(RunOptions(seed, "clock-faults", duration_s=DURATION_S, api="v3"))
        assert clean.passed, "\n".join(summary_lines(clean))
        return
    pytest.fail(f"{LESSOR_WALL_CLOCK} went unnoticed for {PLANTED_BUG_SEEDS_MAX} seeds")
