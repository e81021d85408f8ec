"""Shrinking a failing run to its essence: fewer faults, fewer operations.

Given a seed that fails, search for a smaller fault schedule (delta
debugging: drop chunks of faults, keep a smaller schedule whenever the run
still fails) and then for fewer operations per client (halving), each trial
being a whole deterministic run. The result is a run that still fails and a
command (with its fault schedule written to a file) that replays it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sim.runner import RunOptions, RunResult, run

TRIALS_MAX = 60
"""Runs the shrinker may spend."""


@dataclass
class Shrunk:
    """The smallest failing run found."""

    original: RunResult
    smallest: RunResult
    trials: int


def shrink(
    options: RunOptions,
    *,
    trials_max: int = TRIALS_MAX,
    on_trial: Callable[[RunResult], None] | None = None,
) -> Shrunk:
    """Shrink a failing run; raises ValueError if ``options`` does not fail."""
    original = run(options)
    if original.passed:
        raise ValueError(f"seed {options.seed} ({options.scenario}) passes: nothing to shrink")
    trials = 0
    best = original

    def fails(candidate: RunOptions) -> RunResult | None:
        nonlocal trials
        trials += 1
        result = run(candidate)
        if on_trial is not None:
            on_trial(result)
        return None if result.passed else result

    faults = list(best.faults)
    chunk = max(1, len(faults) // 2)
    while chunk >= 1 and trials < trials_max and faults:
        removed_any = False
        start = 0
        while start < len(faults) and trials < trials_max:
            candidate_faults = tuple(faults[:start] + faults[start + chunk :])
            result = fails(replace(best.options, faults=candidate_faults))
            if result is not None:
                faults, best, removed_any = list(candidate_faults), result, True
            else:
                start += chunk
        if not removed_any:
            chunk //= 2
    most = max((op.op_id for op in best.history or ()), default=0)
    operations = max(1, most // max(1, best.options.clients))
    while operations > 1 and trials < trials_max:
        operations //= 2
        result = fails(replace(best.options, faults=tuple(faults), operations_max=operations))
        if result is None:
            break
        best = result
    return Shrunk(original, best, trials)
