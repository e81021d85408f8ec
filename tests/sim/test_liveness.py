"""The liveness phase: after healing, a leader, a commit everywhere and an answer from every
member, each within its bound; a cluster that stays stuck fails with a ``liveness`` report.

Proven by a planted bug that breaks no safety property: ``peer-no-redial`` (a peer sender
whose connection broke never dials again), so a crashed and restarted member never hears
from the others again.
"""

from __future__ import annotations

import pytest

from sim.report import failure_kind, summary_lines
from sim.runner import RunOptions, run

PLANTED_BUG_SEEDS_MAX = 200


@pytest.mark.parametrize(
    ("scenario", "duration_s"),
    [("rolling-restart", 6.0), pytest.param("swarm", 6.0, marks=pytest.mark.slow)],
)
def test_a_member_that_never_redials_fails_the_liveness_phase(
    scenario: str, duration_s: float
) -> None:
    for seed in range(PLANTED_BUG_SEEDS_MAX):
        options = RunOptions(seed, scenario, planted_bug="peer-no-redial", duration_s=duration_s)
        result = run(options)
        if result.passed:
            continue
        report = "\n".join(summary_lines(result))
        assert failure_kind(result) == "liveness", report
        assert all(v.startswith("liveness: ") for v in result.violations), report
        assert "FAILED (liveness)" in report
        clean = run(RunOptions(seed, scenario, duration_s=duration_s))
        assert clean.passed, "\n".join(summary_lines(clean))
        return
    pytest.fail(f"peer-no-redial went unnoticed for {PLANTED_BUG_SEEDS_MAX} seeds of {scenario}")
