"""bench.put_vs_etcd: a short run against a real troika cluster, and the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.loadgen import LatencySummary, LoadResult
from bench.put_vs_etcd import SystemRun, format_table, main


def run(system: str, connections: int, ops_per_s: float) -> SystemRun:
    latency = LatencySummary(10, 1.0, 2.0, 3.0, 4.0, 1.5)
    load = LoadResult(
        "put", "http://x", connections, 1.0, 10, 0, {}, ops_per_s, latency, {}, 5.0, 8, 256
    )
    return SystemRun(system, load, "m1", False, {"m1": 50.0}, 1.0, 2.0)


def test_the_table_gives_the_ratio_and_says_when_etcd_did_not_run() -> None:
    table = format_table([run("troika", 1, 500), run("troika", 16, 900)], [run("etcd", 1, 1000)])
    lines = table.splitlines()
    assert lines[2].split("|")[3].strip() == "0.50"
    assert lines[2].split("|")[4].split() == ["1.000", "1.000"]
    assert "(etcd not run)" in lines[3]


@pytest.mark.process
def test_a_short_troika_run_writes_its_json(tmp_path: Path) -> None:
    output = tmp_path / "put.json"
    arguments = ["-c", "2", "-d", "0.5", "--warmup", "0.2", "--no-ceiling", "--troika-only"]
    assert main([*arguments, "--json", str(output), "--data-root", str(tmp_path)]) == 0
    report = json.loads(output.read_text())
    assert report["etcd"] == [] and "etcd skipped (--troika-only)" in report["notes"]
    [troika] = report["troika"]
    assert troika["load"]["connections"] == 2
    assert troika["load"]["requests"] > 0
    assert troika["load"]["errors"] == 0
    assert set(troika["member_cpu_percent"]) == {"m1", "m2", "m3"}
    assert troika["cluster_cpu_ms_per_op"] >= troika["leader_cpu_ms_per_op"] > 0
