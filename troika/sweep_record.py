"""What a sweep's results file says, summed up: ``troika sim summary FILE``.

A long sweep runs in pieces (docs/sweeps/), each piece's own summary covering only the seeds
it ran. This reads the whole record instead: how many seeds, which range, how many passed,
the simulated and worker time, and the cost of a seed by API and by scenario, so that a
piece's progress and the finished sweep are described from the file itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sim.sweep import SeedOutcome


def api_of(outcome: SeedOutcome) -> str:
    """The API a recorded seed's clients spoke: its replay command names v3; v2 names none."""
    return "v3" if outcome.replay.endswith("--api v3") or " --api v3 " in outcome.replay else "v2"


def seed_ranges(seeds: Sequence[int]) -> str:
    """``0..1541`` for a contiguous run of seeds, ``0..9, 12, 20..21`` with gaps."""
    ordered = sorted(set(seeds))
    if not ordered:
        return "none"
    runs = []
    start = previous = ordered[0]
    for seed in ordered[1:]:
        if seed != previous + 1:
            runs.append((start, previous))
            start = seed
        previous = seed
    runs.append((start, previous))
    return ", ".join(str(low) if low == high else f"{low}..{high}" for low, high in runs)


@dataclass
class _Tally:
    seeds: int = 0
    operations: int = 0
    simulated_s: float = 0.0
    wall_s: float = 0.0

    def add(self, outcome: SeedOutcome) -> None:
        self.seeds += 1
        self.operations += outcome.operations
        self.simulated_s += outcome.simulated_s
        self.wall_s += outcome.wall_s

    def line(self, name: str) -> str:
        return (
            f"  {name:<22} {self.seeds:6,d} seeds {self.operations:11,d} operations "
            f"{self.wall_s / max(self.seeds, 1):6.1f} s a seed "
            f"{self.simulated_s / max(self.wall_s, 1e-9):5.1f} simulated s per wall s"
        )


def summary_lines(outcomes: Sequence[SeedOutcome]) -> list[str]:
    """The record summed up: totals, then by API and by scenario (costliest first), then
    every failure with its replay command."""
    everything = _Tally()
    by_api: defaultdict[str, _Tally] = defaultdict(_Tally)
    by_scenario: defaultdict[str, _Tally] = defaultdict(_Tally)
    for outcome in outcomes:
        everything.add(outcome)
        by_api[api_of(outcome)].add(outcome)
        by_scenario[outcome.scenario].add(outcome)
    failures = [outcome for outcome in outcomes if not outcome.passed]
    lines = [
        f"{everything.seeds:,} seeds ({seed_ranges([o.seed for o in outcomes])}): "
        f"{everything.seeds - len(failures):,} passed, {len(failures)} failed, "
        f"{everything.operations:,} client operations",
        f"{everything.simulated_s:,.0f} s simulated in {everything.wall_s:,.0f} s of worker time: "
        f"{everything.simulated_s / max(everything.wall_s, 1e-9):.1f} simulated s per wall s "
        f"per worker, {everything.wall_s / max(everything.seeds, 1):.1f} s a seed",
        "by API:",
        *(by_api[api].line(api) for api in sorted(by_api)),
        "by scenario:",
        *(
            tally.line(name)
            for name, tally in sorted(
                by_scenario.items(), key=lambda item: -item[1].wall_s / item[1].seeds
            )
        ),
    ]
    for outcome in failures:
        kind = f" ({outcome.kind})" if outcome.kind else ""
        lines.append(f"FAILED seed {outcome.seed}{kind}: {outcome.replay}")
    return lines
