"""bench.compaction_p99: the preload's requests within etcd's limits, the retentions, the
compaction windows read from both systems' logs, and a tiny real run against troika."""

from __future__ import annotations

import datetime

import pytest

from bench.compaction_p99 import (
    KEYS,
    PRELOAD_VERSIONS,
    TXN_PUTS_MAX,
    adaptive_retention,
    batch_txn,
    compacting_seconds,
    compaction_windows,
    configurations,
    during,
    key_of,
    log_time_s,
    preload_batches,
    preload_revisions,
    run_one,
)

REQUEST_BYTES_MAX = 1536 * 1024
"""etcd's default ``--max-request-bytes``."""


def test_the_preload_covers_every_key_once_a_version_within_etcds_limits() -> None:
    for keys in (1, 127, 128, 129, KEYS, 100_000):
        batches = preload_batches(keys)
        assert [n for batch in batches for n in batch] == list(range(keys))
        assert all(0 < len(batch) <= TXN_PUTS_MAX for batch in batches)
    largest = batch_txn(preload_batches(100_000)[0], 1)
    assert len(largest.success) == TXN_PUTS_MAX
    assert largest.ByteSize() < REQUEST_BYTES_MAX
    assert {op.request_put.value for op in batch_txn(range(2), 0).success} != {
        op.request_put.value for op in batch_txn(range(2), 1).success
    }, "the second version must overwrite with another value"
    assert preload_revisions(100_000) == PRELOAD_VERSIONS * 782
    assert key_of(99_999) == b"/compaction/099999"


def test_the_adaptive_retention_covers_the_preload() -> None:
    assert adaptive_retention(KEYS) == 1000  # the 2,000-key default as before
    assert adaptive_retention(100_000) == 2000
    for keys in (KEYS, 100_000, 300_000):
        assert adaptive_retention(keys) >= preload_revisions(keys)
    assert [mode for _, mode, _ in configurations(100_000)] == ["adaptive", "periodic", "periodic"]


def _at(stamp: str) -> float:
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()


TROIKA_LOG = """\
2026-12-04 14:20:01,100 INFO    actors.compactor: auto adaptive compaction (quiet) at revision 200: 4 revisions/s (average 98), 1905 revisions kept (hard limit 8000)
2026-12-04 14:20:01,350 DEBUG   storage.mvcc.store: compaction at 200 finished
2026-12-04 14:20:02,000 INFO    actors.compactor: auto periodic compaction at revision 300 (retention 10 s)
2026-12-04 14:20:02,100 INFO    actors.compactor: auto adaptive compaction (forced) at revision 400: 150 revisions/s
2026-12-04 14:20:03,000 DEBUG   storage.mvcc.store: compaction at 400 finished
2026-12-04 14:20:04,000 INFO    actors.compactor: auto periodic compaction at revision 500 (retention 10 s)
"""  # noqa: E501
ETCD_LOG = """\
2026-12-04 14:20:01.000000 N | etcdserver/api/v3compactor: Starting auto-compaction at revision 1565 (retention: 10s)
2026-12-04 14:20:01.010000 N | etcdserver/api/v3compactor: Finished auto-compaction at revision 1565
2026-12-04 14:20:02.500000 I | mvcc: finished scheduled compaction at 1565 (took 1.49s)
raft2026/12/04 14:20:03 INFO: a line without the time in front
"""  # noqa: E501


def test_compaction_windows_from_troikas_and_etcds_logs() -> None:
    end = _at("2026-12-04 14:20:09.000")
    assert compaction_windows(TROIKA_LOG, end) == [
        (_at("2026-12-04 14:20:01.100"), _at("2026-12-04 14:20:01.350")),
        # overtaken by the compaction at 400: finished when that one finished
        (_at("2026-12-04 14:20:02.000"), _at("2026-12-04 14:20:03.000")),
        (_at("2026-12-04 14:20:02.100"), _at("2026-12-04 14:20:03.000")),
        (_at("2026-12-04 14:20:04.000"), end),  # still running when the load ended
    ]
    assert compaction_windows(ETCD_LOG, end) == [
        (_at("2026-12-04 14:20:01.000"), _at("2026-12-04 14:20:02.500"))
    ]
    assert log_time_s("raft2026/12/04 14:20:03 INFO: x") is None


def test_the_puts_in_flight_in_a_second_of_a_window_are_counted() -> None:
    windows = [(10.2, 10.4), (12.9, 13.1)]
    assert compacting_seconds(windows) == {10, 12, 13}
    samples = [
        (9.0, 500.0, True),  # 9.0-9.5: before
        (9.8, 300.0, True),  # 9.8-10.1: runs into second 10
        (10.5, 1.0, False),  # second 10, after the reclaim
        (11.2, 1.0, True),  # second 11: none ran
        (11.9, 200.0, True),  # into second 12
        (13.5, 1.0, True),  # second 13
        (14.0, 1.0, True),  # after
    ]
    assert during(samples, windows) == [300.0, 1.0, 200.0, 1.0]
    assert during(samples, []) == []


@pytest.mark.process
def test_a_tiny_run_against_troika_sees_its_compactions() -> None:
    """300 keys preloaded, a 2 s periodic retention, 6 s of load: compactions logged, with
    their windows, and puts measured during them."""
    row = run_one("troika", "periodic", "2s", 300, 6.0)
    assert row["puts"] > 100 and row["keys"] == 300
    assert row["compactions"] >= 2, row
    assert row["compaction_windows"] == row["compactions"], row
    # a compaction of 300 keys can start and finish within the log's millisecond: a window
    # may be 0 s long, but the load's 6 s cannot hold more than 6 s of them unless a finish
    # was missed (a window without its finish runs to the end of the load)
    assert 0 <= row["compacting_s"] < 6.0, row
    assert 0 < row["compacting_puts"] < row["puts"], row
