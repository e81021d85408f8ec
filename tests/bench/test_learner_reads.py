"""bench.learner_reads' pure parts: the medians per learner count, the client's command line,
and the bounds checked before any process starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.learner_reads import ScalingPoint, Shape, medians, run_scaling


def point(learners: int, rate: float, cpu_us: float) -> ScalingPoint:
    return ScalingPoint(
        learners=learners,
        read="s",
        members=3 + learners,
        connections_per_member=8,
        reads_per_s=rate,
        reads_per_s_by_member={},
        errors=0,
        member_cpu_s={},
        server_cpu_us_per_read=cpu_us,
        client_cpu_percent=0.0,
    )


def test_medians_per_learner_count() -> None:
    points = [point(0, 100, 300), point(1, 150, 280), point(0, 300, 310), point(0, 200, 290)]
    assert medians(points) == {0: (200, 300), 1: (150, 280)}


def test_the_client_command_carries_the_shape(tmp_path: Path) -> None:
    argv = Shape(connections=4, duration_s=3.0, warmup_s=1.0, read="l").client_argv(
        "http://127.0.0.1:2379", tmp_path / "out.json"
    )
    assert argv[argv.index("--read") + 1] == "l"
    assert argv[argv.index("--connections") + 1] == "4"
    assert Shape(read="l").spec("http://127.0.0.1:2379").workload == "v3-range"
    assert Shape().spec("http://127.0.0.1:2379").workload == "v3-range-serializable"


@pytest.mark.parametrize(("counts", "rounds"), [([0, 3], 1), ([-1], 1), ([0], 0), ([0], 11)])
def test_out_of_bounds_runs_are_refused_before_starting(
    counts: list[int], rounds: int, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="learner counts"):
        run_scaling(counts, Shape(), tmp_path, rounds)
