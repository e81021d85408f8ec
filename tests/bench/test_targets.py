"""bench.targets: a results file read against issue 13's targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.loadgen import LatencySummary, LoadResult
from bench.suite import BenchPlan, BenchReport, Sample
from bench.targets import TargetTables, cores_of, main


def sample(
    system: str,
    workload: str,
    connections: int,
    run: int,
    ops_per_s: float,
    *,
    p50_ms: float = 1.0,
    p99_ms: float = 3.0,
    cpu_s: dict[str, float] | None = None,
    leader: str = "m1",
) -> Sample:
    latency = LatencySummary(10, p50_ms, 2.0, p99_ms, 4.0, 1.5)
    load = LoadResult(
        workload, "http://x", connections, 1.0, int(ops_per_s), 0, {}, ops_per_s, latency, {},
        5.0, 8, 256,
    )  # fmt: skip
    members = cpu_s if cpu_s is not None else {"m1": 0.5, "m2": 0.25, "m3": 0.25}
    return Sample(system, workload, connections, run, load, leader, False, members, {}, 1.0)


def report() -> BenchReport:
    """put meets its target at 16 and not at 64; mixed has no target."""
    plan = BenchPlan(workloads=("put", "mixed"), connections=(1, 16, 64), runs=3)
    result = BenchReport(plan, {})
    rates = {16: (100, 110, 120), 64: (50, 60, 70)}
    for count, troika in rates.items():
        for run, ops in enumerate(troika):
            result.samples.append(sample("troika", "put", count, run, ops))
            result.samples.append(sample("etcd", "put", count, run, 100))
            result.samples.append(sample("troika", "mixed", count, run, 10))
            result.samples.append(sample("etcd", "mixed", count, run, 40))
    for run in range(3):
        result.samples.append(sample("troika", "put", 1, run, 300, p50_ms=3.0, p99_ms=4.0))
        result.samples.append(sample("etcd", "put", 1, run, 1000, p50_ms=1.0, p99_ms=2.5))
        result.samples.append(sample("troika", "mixed", 1, run, 300))
        result.samples.append(sample("etcd", "mixed", 1, run, 300))
    return result


def row(lines: list[str], first: str) -> list[str]:
    [found] = [line for line in lines if line.startswith(f"| {first} |")]
    return [cell.strip() for cell in found.strip("|").split("|")]


def test_a_ratio_is_bold_only_where_it_meets_its_target() -> None:
    tables = TargetTables(report())
    put = row(tables.rates(), "put")
    assert put[:5] == ["put", "v2", "1.0", "**1.10**", "0.60"]
    mixed = row(tables.rates(), "mixed")
    assert mixed[2:5] == ["-", "0.25", "0.25"]
    markdown = tables.markdown()
    assert "- put at 64: 0.60 (pairs 0.50, 0.60, 0.70)" in markdown
    assert "put at 16" not in markdown.split("Below target:")[1]


def test_cpu_per_operation_is_marked_over_its_target() -> None:
    tables = TargetTables(report())
    # Every sample used 1 CPU second; 5 s at the load's rate: troika's put at 16 does
    # 100-120 ops/s against etcd's 100, so its CPU per operation is below etcd's.
    assert row(tables.rates(), "put")[5].endswith("(0.9x)")
    assert row(tables.rates(), "mixed")[5].endswith("(4.0x over)")


def test_one_connection_latency_against_the_puts_targets() -> None:
    put = row(TargetTables(report()).one_connection(), "put")
    assert put[1:3] == ["3.00 / 1.00 (3.0x)", "4.00 / 2.50 (1.6x)"]


def test_cores_split_the_member_the_load_talks_to_from_the_others() -> None:
    samples = [
        sample("troika", "put", 16, 0, 1, cpu_s={"m1": 0.2, "m2": 0.9, "m3": 0.3}, leader="m2"),
        sample("troika", "put", 16, 1, 1, cpu_s={"m1": 0.4, "m2": 0.8, "m3": 0.1}, leader="m2"),
        sample("troika", "put", 16, 2, 1, cpu_s={"m1": 0.1, "m2": 0.7, "m3": 0.1}, leader="m2"),
    ]
    cores = cores_of(samples)
    assert cores is not None
    assert (cores.leader, round(cores.others, 3)) == (0.8, 0.5)
    assert cores_of([sample("etcd", "put", 16, 0, 1, cpu_s={})]) is None


def test_main_reads_a_results_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(report().to_json()))
    main([str(path)])
    out = capsys.readouterr().out
    assert "| put | v2 | 1.0 | **1.10** | 0.60 |" in out
    assert "| put | 0.50 + 0.50 | 0.50 + 0.50 | 0.50 + 0.50 | 0.50 + 0.50 |" in out
    with pytest.raises(SystemExit, match="usage"):
        main([])
