"""bench.second_process: its arithmetic (the connections' split, the CPU between two instants,
the summary's ratios); the clusters it loads are bench.clusters', tested there."""

from __future__ import annotations

import pytest

from bench.second_process import (
    CpuTrace,
    SpreadPlan,
    SpreadSample,
    load_specs,
    split_connections,
    summary,
)


def test_connections_are_split_evenly_and_never_to_nothing() -> None:
    assert split_connections(64, 2) == [32, 32]
    assert split_connections(7, 2) == [4, 3]
    assert split_connections(5, 1) == [5]
    with pytest.raises(ValueError, match="cannot load"):
        split_connections(1, 2)


def test_the_cpu_between_two_instants_is_read_between_samples() -> None:
    trace = CpuTrace([])
    trace.points = [(0.0, 10.0), (1.0, 10.5), (2.0, 12.5)]
    assert trace.cpu_s_between(0.0, 2.0) == pytest.approx(2.5)
    assert trace.cpu_s_between(0.5, 1.5) == pytest.approx(11.5 - 10.25)  # halfway in each
    assert trace.cpu_s_between(-1.0, 5.0) == pytest.approx(2.5)  # outside: the ends


def _sample(system: str, arrangement: str, run: int, ops_per_s: float) -> SpreadSample:
    return SpreadSample(system, arrangement, run, ops_per_s, 0, 150.0, 200.0, 0.0)  # type: ignore[arg-type]


def test_the_summary_compares_troika_with_etcds_one_and_two_processes() -> None:
    samples = [
        _sample("troika", "one", 0, 5_000), _sample("troika", "one", 1, 4_000),
        _sample("troika", "one", 2, 6_000), _sample("troika", "two", 0, 8_000),
        _sample("etcd", "one", 0, 10_000), _sample("etcd", "two", 0, 12_500),
    ]  # fmt: skip
    text = summary(samples)
    assert "| troika | 5,000 | 150 / 200 us | 8,000 | 150 / 200 us | 1.60 |" in text
    assert "| etcd | 10,000 | 150 / 200 us | 12,500 | 150 / 200 us | 1.25 |" in text
    assert "troika with one: 0.50x etcd's one process, 0.40x etcd's two" in text
    assert "troika with two: 0.80x etcd's one process, 0.64x etcd's two" in text


def test_readers_share_the_read_keys_and_writers_keep_apart() -> None:
    endpoints = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    reads = load_specs(SpreadPlan("v3-range-serializable-gw", 7, 1, 5.0, 1.0), endpoints, run=0)
    assert [(s.endpoint, s.connections, s.prefix) for s in reads] == [
        (endpoints[0], 4, "bench"), (endpoints[1], 3, "bench"),
    ]  # fmt: skip
    assert not any(s.preload for s in reads)  # written once before, so the windows line up
    writes = load_specs(SpreadPlan("v3-txn-gw", 8, 1, 5.0, 1.0), endpoints, run=2)
    assert [s.prefix for s in writes] == ["bench0", "bench1"]
    assert {s.seed for s in writes} == {3}
