"""The v3 watch fan-out and memory workloads: placement, the order checks on responses, the
plan, table and results file; short real runs against etcd 3.4 (process tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from bench.clusters import EtcdCluster, ProcessCluster, TroikaCluster, etcd_available
from bench.memory import MemorySample, hold_and_measure
from bench.suite import BenchPlan, BenchReport, format_table, report_from_json, run_bench
from bench.watch_v3 import Tally, WatchHandler, WatchV3Spec, placement, run_watch_v3
from net.etcdpb import kv_pb2, rpc_pb2
from troika.bench_commands import expand_workloads

ENDPOINTS = ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"]


def spec(watchers: int, mode: str = "mux") -> WatchV3Spec:
    return WatchV3Spec(leader=ENDPOINTS[0], endpoints=ENDPOINTS, watchers=watchers, mode=mode)  # type: ignore[arg-type]


def test_watchers_are_spread_over_members_then_streams() -> None:
    assert placement(spec(1)) == [[[0]], [], []]
    assert placement(spec(5)) == [[[0, 3]], [[1, 4]], [[2]]]
    streams = placement(spec(250, "streams"))
    assert [len(connections) for connections in streams] == [1, 1, 1]  # 84, 83, 83 <= 100
    assert [len(c) for c in placement(spec(1000, "streams"))[0]] == [100, 100, 100, 34]
    every = sorted(w for member in streams for conn in member for w in conn)
    assert every == list(range(250))


def response(watch_id: int, *revisions: int, key: bytes = b"w/00000001") -> memoryview:
    events = [kv_pb2.Event(kv=kv_pb2.KeyValue(key=key, mod_revision=r)) for r in revisions]
    message = rpc_pb2.WatchResponse(watch_id=watch_id, events=events)
    return memoryview(message.SerializeToString())


def test_the_handler_counts_in_the_window_and_catches_gaps_and_repeats() -> None:
    tally = Tally(2, start_revision=10, window_start_ns=0, window_end_ns=2**62)
    tally.sent_ns = [0, 5]
    handler = WatchHandler(tally, prefix_bytes=2)
    for watcher in (0, 1):
        created = rpc_pb2.WatchResponse(watch_id=watcher, created=True).SerializeToString()
        handler.on_message(memoryview(created))
    assert tally.all_created.is_set() and tally.last_revision == [9, 9]
    handler.on_message(response(0, 10, 11))
    handler.on_message(response(1, 10))
    assert tally.errors == {} and tally.delivered == 3 and tally.last_revision == [11, 10]
    assert len(tally.latencies_ns) == 1  # watcher 0's response (1 is not sampled)
    handler.on_message(response(0, 13))  # 12 never came
    handler.on_message(response(1, 10))  # 10 again
    assert tally.errors == {"gap": 1, "repeat": 1}
    assert tally.behind(13) == 1


def test_watch_and_memory_workloads_in_the_plan_table_and_results_file() -> None:
    assert expand_workloads(("watch-v3",)) == ("v3-watch", "v3-watch-streams")
    assert expand_workloads(("memory",)) == ("mem-leases", "mem-watchers", "mem-keys")
    assert {"v3-watch", "mem-leases"} <= set(expand_workloads(("all-v3",)))
    plan = BenchPlan(workloads=("v3-watch", "mem-leases"), connections=(1, 100), runs=2)
    assert {step[0] for step in plan.steps(["etcd"])} == {"v3-watch"}
    assert plan.memory_steps(["troika", "etcd"])[:2] == [
        ("mem-leases", 0, "troika"), ("mem-leases", 0, "etcd"),
    ]  # fmt: skip
    assert not plan.needs_ceiling  # a fan-out is not compared with the HTTP client's ceiling
    with pytest.raises(ValueError):
        BenchPlan(workloads=("mem-leases",), memory_items=0)
    report = BenchReport(plan, {"cpus": 2})
    for run, held_mib in enumerate((60.0, 70.0)):
        sample = MemorySample(
            "etcd", "mem-leases", 10_000, run, "m1", 26.0, held_mib, held_mib + 1, 3.5,
            {"m1": held_mib + 1}, 10_000, 2.0, 0.5, 0,
        )  # fmt: skip
        report.memory.append(sample)
    table = format_table(report)
    assert "mem-leases       etcd      10000   10000 |       26.0     60.0" in table
    again = report_from_json(json.loads(json.dumps(report.to_json())))
    assert again.memory == report.memory and format_table(again) == table


@pytest.mark.process
@pytest.mark.parametrize("mode", ["mux", "streams"])
@pytest.mark.parametrize("kind", [TroikaCluster, EtcdCluster], ids=["troika", "etcd"])
def test_every_watcher_sees_every_put_in_order(
    tmp_path: Path, mode: str, kind: type[ProcessCluster]
) -> None:
    if kind is EtcdCluster and not etcd_available():
        pytest.skip("etcd is not installed")
    with kind(1, tmp_path) as cluster:
        url = cluster.client_urls[0]
        run = WatchV3Spec(
            leader=url, endpoints=[url], watchers=7, mode=mode, writers=4,  # type: ignore[arg-type]
            duration_s=0.5, warmup_s=0.1,
        )  # fmt: skip
        result = trio.run(run_watch_v3, run)
    assert result.errors == 0, result.error_kinds
    assert result.detail["events_total"] == 7 * result.detail["puts"] > 0
    assert result.requests > 0 and result.client_cpu_us_per_op > 0


@pytest.mark.process
@pytest.mark.skipif(not etcd_available(), reason="etcd is not installed")
def test_memory_samples_hold_every_item_on_etcd(tmp_path: Path) -> None:
    plan = BenchPlan(
        workloads=("mem-leases", "mem-watchers"), runs=1, systems=("etcd",), memory_items=200,
        cluster_size=1,
    )  # fmt: skip
    report = run_bench(plan, tmp_path, progress=lambda _: None)
    assert [(s.workload, s.held, s.errors) for s in report.memory] == [
        ("mem-leases", 200, 0), ("mem-watchers", 200, 0),
    ]  # fmt: skip
    assert all(s.rss_holding_mib > 0 and s.rss_peak_mib >= s.rss_holding_mib for s in report.memory)


def test_an_unknown_memory_workload_is_refused() -> None:
    with pytest.raises(ValueError):
        trio.run(hold_and_measure, ENDPOINTS[0], "mem-nothing", 1, lambda: None, lambda: None)
