"""bench.overload (many writers, members' RSS per second, acknowledged puts read back) and
bench.memory's ``mem-keys``: the pure parts, and tiny real runs against troika."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.clusters import TroikaCluster
from bench.overload import (
    Ledger,
    OverloadSpec,
    _missing,
    format_samples,
    key_of,
    measure_overload,
    value_of,
)
from bench.suite import KINDS, BenchPlan, measure_memory


def test_a_spec_refuses_what_it_cannot_run() -> None:
    with pytest.raises(ValueError, match="api"):
        OverloadSpec(api="v4")
    with pytest.raises(ValueError, match="connections"):
        OverloadSpec(connections=0)


def test_values_are_checkable_and_a_lost_put_is_counted() -> None:
    spec = OverloadSpec(value_bytes=40, prefix="p")
    key = key_of("p", 3, 7)
    assert key == "p/c3/7" and len(value_of(key, 40)) == 40 and value_of(key, 40).startswith(key)
    stored = {key_of("p", 3, n): value_of(key_of("p", 3, n), 40) for n in range(5)}
    assert _missing(spec, 3, [0, 1, 2, 3, 4], stored) == 0
    del stored[key_of("p", 3, 2)]  # a planted loss
    stored[key_of("p", 3, 4)] = "other"  # and a put read back with another value
    assert _missing(spec, 3, [0, 1, 2, 3, 4], stored) == 2


def test_refusals_are_the_too_many_requests_errors() -> None:
    ledger = Ledger([[]])
    ledger.error("grpc 8: etcdserver: too many requests")
    ledger.error("grpc 8: etcdserver: too many requests")
    ledger.error("v2 500: 300 etcdserver: too many requests")
    ledger.error("grpc 4: etcdserver: request timed out")
    assert ledger.refusals() == 3 and sum(ledger.errors.values()) == 4


@pytest.mark.process
@pytest.mark.parametrize("api", ["grpc", "v2"])
def test_a_tiny_overload_loses_nothing(tmp_path: Path, api: str) -> None:
    spec = OverloadSpec(api=api, connections=6, duration_s=1.5, value_bytes=32)
    sample = measure_overload(TroikaCluster, spec, tmp_path, size=1)
    assert sample.acknowledged > 0, sample.error_kinds
    assert sample.lost == 0
    assert len(sample.rss_series_mib["m1"]) >= 2 and sample.rss_max_mib["m1"] > 10
    # VmHWM is the kernel's peak kept lazily (raised on some of the paths that shrink the
    # resident set, and to the current one when read), and VmRSS is read from approximate
    # per-CPU counters, so a sample may pass the peak read after it by a little: one run
    # sampled 58.7 MiB against a VmHWM of 58.5.
    assert sample.rss_peak_mib["m1"] >= sample.rss_max_mib["m1"] - 1.0
    assert format_samples([sample]).splitlines()[1].split()[:2] == ["troika", api]


@pytest.mark.process
def test_mem_keys_holds_every_key(tmp_path: Path) -> None:
    plan = BenchPlan(workloads=("mem-keys",), runs=1, cluster_size=1, memory_items=300)
    sample = measure_memory(plan, KINDS["troika"], "mem-keys", 0, tmp_path)
    assert (sample.held, sample.errors) == (300, 0), sample.error_kinds
    assert sample.rss_holding_mib > 10 and set(sample.members_rss_peak_mib) == {"m1"}
