"""bench.leader_profile: py-spy's raw stacks charged to what the work is for."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.leader_profile import (
    ACCOUNTING,
    API,
    GRPC,
    HTTP,
    HTTP2,
    OTHER,
    PEERS,
    RAFT,
    RUN_LOOP,
    STORAGE,
    classify,
    frame_module,
    main,
    shares_of,
    table,
)

ENTRY = (
    "_run_module_as_main (<frozen runpy>:198);<module> (troika/__main__.py:5);"
    "main (troika/cli.py:233);run (trio/_core/_run.py:2532);"
    "unrolled_run (trio/_core/_run.py:2866)"
)
GRPC_READ = (
    f"{ENTRY};serve_one (net/tcp.py:66);HttpServer.serve_stream (net/http/server.py:178);"
    "GrpcServer.serve_connection (net/grpc/server.py:130);_ServerConnection._read "
    "(net/grpc/server.py:238)"
)
FSYNC = (
    "_bootstrap (threading.py:1002);_work (trio/_core/_thread_cache.py:192);"
    "sync (storage/kv.py:310)"
)


def test_a_frame_is_named_by_its_module() -> None:
    assert frame_module("HttpServer.serve_stream (net/http/server.py:178)") == "net/http/server.py"
    site = "/venv/lib/python3.11/site-packages/h2/connection.py"
    assert frame_module(f"H2Connection.receive_data ({site}:1520)") == "lib:h2"
    assert frame_module("run (trio/_core/_run.py:2532)") == "lib:trio"
    assert frame_module("main (troika/cli.py:233)") == "other:troika"
    assert frame_module("_run_code (<frozen runpy>:88)") == "other:<frozen runpy>"


@pytest.mark.parametrize(
    ("tail", "group"),
    [
        ("", RUN_LOOP),  # nothing of ours between the sample and the run loop
        (";checkpoint (trio/_core/_run.py:2700)", RUN_LOOP),
        (";RaftActor.run (actors/member.py:90);wait (trio/_core/_run.py:10)", RUN_LOOP),
        (";RaftActor.run (actors/member.py:90);step (actors/raft/core.py:400)", RAFT),
        (";parse (net/http/server.py:500)", HTTP),
        (";apply (actors/kv_applier.py:40);get (storage/mvcc/store.py:7)", STORAGE),
        (";usage (storage/usage/meter.py:12)", ACCOUNTING),  # before storage/
        (";observe (prometheus_client/metrics.py:600)", ACCOUNTING),
        (";range (net/v3/kv.py:80)", API),
        (";send (net/peers.py:200)", PEERS),
        (";tick (actors/clock.py:20)", OTHER),
    ],
)
def test_a_stack_is_charged_to_the_troika_module_nearest_the_sample(tail: str, group: str) -> None:
    assert classify(f"{ENTRY}{tail}".split(";")) == group


def test_http2_library_frames_win_over_our_grpc_layer_and_worker_threads_are_left_out() -> None:
    h2 = ";H2Connection.receive_data (h2/connection.py:1520);__get__ (h2/config.py:24)"
    assert classify(f"{GRPC_READ}{h2}".split(";")) == HTTP2
    assert classify(GRPC_READ.split(";")) == GRPC
    assert classify(FSYNC.split(";")) is None
    # the main thread handing the fsync over is the main thread's work, charged to its caller
    hand_off = f"{ENTRY};save (storage/kv.py:300);to_thread_run_sync (trio/_threads.py:400)"
    assert classify(hand_off.split(";")) == STORAGE


def test_a_raw_profile_is_counted_by_group_with_the_left_out_samples_apart() -> None:
    raw = "\n".join([f"{GRPC_READ} 30", f"{ENTRY} 10", f"{FSYNC} 7", " 3", "garbage", ""])
    shares = shares_of(raw)
    assert shares.by_group == {GRPC: 30, RUN_LOOP: 10}
    assert (shares.main_thread_samples, shares.worker_thread_samples) == (40, 7)
    assert shares.empty_samples == 3
    assert shares.percent([GRPC]) == 75.0
    assert shares.percent([GRPC, RUN_LOOP]) == 100.0
    row = table([("v3-range", shares)]).splitlines()[2]
    assert row.startswith("| v3-range | 25 % | 0 % | 0 % | 75 % |")
    assert row.endswith("| 100 % | 0 % | 40, 7, 3 |")
    assert shares_of("").percent([GRPC]) == 0.0


def test_raw_profiles_are_grouped_again_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "put.raw"
    path.write_text(f"{ENTRY};parse (net/http/server.py:500) 4\n{ENTRY} 4\n")
    main(["--raw", str(path)])
    printed = capsys.readouterr().out.splitlines()
    assert printed[2].startswith("| put | 50 % | 50 % |")
