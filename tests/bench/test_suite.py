"""troika bench: medians, pairwise ratios, the table, the chart, and short real runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import bench.suite
from bench.chart import draw
from bench.clusters import etcd_available
from bench.loadgen import LatencySummary, LoadResult
from bench.suite import (
    BenchPlan,
    BenchReport,
    Sample,
    format_simulated,
    format_table,
    pair_ratio,
    report_from_json,
    run_bench,
    run_simulated,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sample(system: str, run: int, ops_per_s: float, p99_ms: float = 3.0, connections: int = 1):
    latency = LatencySummary(10, 1.0, 2.0, p99_ms, 4.0, 1.5)
    load = LoadResult(
        "put", "http://x", connections, 1.0, int(ops_per_s), 0, {}, ops_per_s, latency, {}, 5.0,
        8, 256,
    )  # fmt: skip
    return Sample(
        system, "put", connections, run, load, "m1", False, {"m1": 0.5, "m2": 0.25},
        {"m1": 40.0, "m2": 60.0}, 1.0,
    )  # fmt: skip


def test_a_plan_refuses_what_it_cannot_measure() -> None:
    for bad in (
        {"workloads": ("put", "scan")},
        {"connections": (0,)},
        {"runs": 0},
        {"systems": ("consul",)},
    ):
        with pytest.raises(ValueError):
            BenchPlan(**bad)


def test_the_ratio_is_the_median_of_the_pairs_not_of_the_medians() -> None:
    troika = [sample("troika", 0, 100), sample("troika", 1, 200), sample("troika", 2, 300)]
    etcd = [sample("etcd", 0, 100), sample("etcd", 1, 400), sample("etcd", 2, 150)]
    # pairs: 1.0, 0.5, 2.0 -> median 1.0; the medians would give 200 / 150
    assert pair_ratio(troika, etcd) == 1.0
    assert pair_ratio(troika, []) is None


def test_cells_take_medians_and_the_largest_memory_peak() -> None:
    report = BenchReport(BenchPlan(workloads=("put",), connections=(1,), runs=3), {"cpus": 2})
    report.samples = [
        sample("troika", 0, 100, p99_ms=9.0),
        sample("troika", 1, 300, p99_ms=1.0),
        sample("troika", 2, 200, p99_ms=5.0),
    ]
    [cell] = report.cells()
    assert (cell.ops_per_s, cell.p99_ms, cell.rss_peak_mib, cell.runs) == (200, 5.0, 60.0, 3)
    assert cell.cpu_ms_per_op == pytest.approx(1000 * 0.75 / 200, abs=1e-3)
    row = format_table(report).splitlines()[2]
    assert row.split("|")[1].split()[0] == "200"
    assert row.split("|")[2].split() == ["-"]  # etcd did not run
    assert row.split("|")[3].strip() == "-"


def test_the_chart_is_a_png(tmp_path: Path) -> None:
    report = BenchReport(BenchPlan(workloads=("put",), connections=(1, 16), runs=1), {"cpus": 2})
    report.samples = [
        sample("troika", 0, 100, connections=1),
        sample("troika", 0, 500, connections=16),
        sample("etcd", 0, 300, connections=1),
        sample("etcd", 0, 900, connections=16),
    ]
    path = tmp_path / "bench.png"
    draw(report, path)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_the_sim_target_reports_simulated_throughput_and_speed() -> None:
    plan = BenchPlan(connections=(2,), runs=1, duration_s=1.0)
    level = logging.getLogger().level
    report = run_simulated(plan, progress=lambda _: None)
    [row] = report.simulated
    assert row["passed"] and row["operations"] > 0
    assert row["ops_per_simulated_s"] > 0 and row["simulated_s_per_wall_s"] > 0
    assert format_simulated(report).splitlines()[1].split("|")[0].strip() == "2"
    # the members' logs are quieted for the runs only: a test worker's next test (one that
    # reads the log, say) logs as before
    assert logging.getLogger().level == level


@pytest.mark.process
def test_without_etcd_troika_is_measured_alone_and_the_report_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench.suite, "etcd_available", lambda: False)
    plan = BenchPlan(
        workloads=("put", "watch"), connections=(2,), runs=1, duration_s=0.5, warmup_s=0.2,
        watch_writes=10, ceiling=False,
    )  # fmt: skip
    report = run_bench(plan, tmp_path, progress=lambda _: None)
    assert any("etcd is not installed" in note for note in report.notes)
    assert {s.system for s in report.samples} == {"troika"}
    put, watch = report.samples
    assert put.load.requests > 0 and put.load.errors == 0
    assert watch.load.requests == 2 * 10, watch.load.error_kinds  # every write, every watcher
    assert set(put.member_cpu_s) == {"m1", "m2", "m3"} and sum(put.member_cpu_s.values()) > 0
    assert min(put.member_rss_peak_mib.values()) > 10
    json.dumps(report.to_json())


@pytest.mark.process
@pytest.mark.skipif(not etcd_available(), reason="etcd is not installed")
def test_troika_and_etcd_are_measured_in_pairs(tmp_path: Path) -> None:
    plan = BenchPlan(
        workloads=("get-linearizable",), connections=(1,), runs=2, duration_s=0.4, warmup_s=0.1,
        ceiling=False,
    )  # fmt: skip
    report = run_bench(plan, tmp_path, progress=lambda _: None)
    assert [(s.system, s.run) for s in report.samples] == [
        ("troika", 0), ("etcd", 0), ("troika", 1), ("etcd", 1),
    ]  # fmt: skip
    assert all(s.load.requests > 0 and s.load.errors == 0 for s in report.samples)
    assert report.ratio("get-linearizable", 1) is not None


def test_a_results_file_reads_back_into_the_same_report() -> None:
    report = BenchReport(BenchPlan(workloads=("put",), connections=(1,), runs=2), {"cpus": 2})
    report.samples = [sample("troika", 0, 100), sample("etcd", 0, 300), sample("troika", 1, 90)]
    report.notes.append("a note")
    again = report_from_json(json.loads(json.dumps(report.to_json())))
    assert again.cells() == report.cells()
    assert again.plan == report.plan and again.notes == ["a note"]
    assert format_table(again) == format_table(report)
