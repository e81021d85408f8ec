"""Disk faults (``sim.disk``, ``sim.faults_disk``): failing writes and fsyncs with Linux's
semantics, slow fsyncs, and a planted bug that retries a failed fsync, which the sweep must
catch."""

from __future__ import annotations

from random import Random

import pytest
import trio
import trio.testing

from sim.disk import SimDisk
from sim.report import failure_kind, summary_lines
from sim.runner import RunOptions, run
from storage.errors import StorageFailed
from storage.kv import KeyValueStore, WriteBatch

PLANTED_BUG_SEEDS_MAX = 200


def _batch(key: bytes, value: bytes) -> WriteBatch:
    batch = WriteBatch()
    batch.put(key, value)
    return batch


def test_a_bulk_commit_fails_as_a_write_or_an_fsync_would() -> None:
    async def main() -> None:
        disk = SimDisk("m1", Random(1))
        disk.fail_next("write", "EIO")
        writer = disk.store.bulk_writer()
        writer.put(b"chunk", b"v")
        with pytest.raises(StorageFailed, match="Input/output error"):
            await writer.commit()
        assert disk.store.get(b"chunk") is None
        disk.fail_next("fsync", "ENOSPC")
        writer = disk.store.bulk_writer()
        writer.put(b"chunk", b"v")
        with pytest.raises(StorageFailed, match="No space left on device"):
            await writer.commit()
        disk.crash()  # what the failed fsync covered is lost
        assert disk.store.get(b"chunk") is None

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_failed_write_changes_nothing_and_fails_once() -> None:
    async def main() -> None:
        disk = SimDisk("m1", Random(1))
        disk.fail_next("write", "ENOSPC")
        with pytest.raises(StorageFailed, match="No space left on device"):
            disk.store.apply(_batch(b"k", b"v"))
        assert disk.store.get(b"k") is None
        disk.store.apply(_batch(b"k", b"v"))
        assert disk.store.get(b"k") == b"v"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_failed_fsync_dooms_what_it_covered_even_after_a_later_fsync_succeeds() -> None:
    async def main() -> None:
        disk = SimDisk("m1", Random(1))
        store = disk.store
        store.apply(_batch(b"a", b"synced"))
        await store.sync()
        store.apply(_batch(b"a", b"doomed"))
        store.apply(_batch(b"b", b"doomed"))
        disk.fail_next("fsync", "EIO")
        with pytest.raises(StorageFailed, match="Input/output error"):
            await store.sync()
        assert store.get(b"a") == b"doomed"  # still in the page cache
        store.apply(_batch(b"c", b"later"))
        await store.sync()  # succeeds, but does not save what the failed one covered
        after = disk.crash()
        assert (after.get(b"a"), after.get(b"b"), after.get(b"c")) == (b"synced", None, b"later")
        assert "lost 2 a failed fsync doomed" in disk.trace[-1][1]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def _sync_outcome(store: KeyValueStore, outcomes: list[str]) -> None:
    try:
        await store.sync()
    except StorageFailed:
        outcomes.append("failed")
    else:
        outcomes.append("synced")


def test_a_sync_that_covered_a_batch_of_a_failed_fsync_fails_too() -> None:
    """Seed 395 of disk-faults: the snapshot's fsync failed while the storage actor's, begun
    at the same moment over some of the same batches, succeeded; the storage actor went on as
    if its log entries were durable, synced later ones, and the crash left a hole in the log
    ("log record 817 is missing")."""

    async def main() -> None:
        disk = SimDisk("m1", Random(1), fsync_latency_s=0.01)
        store = disk.store
        outcomes: list[str] = []
        store.apply(_batch(b"a", b"both cover it"))
        async with trio.open_nursery() as nursery:
            disk.fail_next("fsync", "EIO")
            nursery.start_soon(_sync_outcome, store, outcomes)
            nursery.start_soon(_sync_outcome, store, outcomes)
        assert outcomes == ["failed", "failed"]
        assert disk.crash().get(b"a") is None

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_concurrent_syncs_settle_only_the_batches_each_covered() -> None:
    """Two syncs in flight: each makes durable what was applied before it began, and a batch
    applied after both began stays unsynced (the store counted by position, so the second
    sync settled a batch it never covered and a crash kept it)."""

    async def main() -> None:
        disk = SimDisk("m1", Random(1), fsync_latency_s=0.01)
        store = disk.store
        outcomes: list[str] = []
        async with trio.open_nursery() as nursery:
            store.apply(_batch(b"a", b"first"))
            nursery.start_soon(_sync_outcome, store, outcomes)
            await trio.sleep(0.001)
            store.apply(_batch(b"b", b"second"))
            nursery.start_soon(_sync_outcome, store, outcomes)
            await trio.sleep(0.001)
            store.apply(_batch(b"c", b"after both began"))
        assert outcomes == ["synced", "synced"]
        after = disk.crash()
        assert (after.get(b"a"), after.get(b"b"), after.get(b"c")) == (b"first", b"second", None)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def _failing_sync(store: KeyValueStore) -> None:
    with pytest.raises(StorageFailed):
        await store.sync()


def test_a_crash_after_a_failed_fsync_keeps_nothing_written_after_it() -> None:
    """Torn writes keep a prefix of the unsynced batches, but the doomed batches end the log a
    store replays: a batch applied during the failed fsync must not come back without them
    (it left a member's v2 history with a hole, seed 109 of disk-faults)."""

    async def main() -> None:
        for seed in range(20):
            disk = SimDisk("m1", Random(seed), torn_writes=True)
            store = disk.store
            store.apply(_batch(b"a", b"doomed"))
            disk.fail_next("fsync", "EIO")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_failing_sync, store)
                await trio.sleep(0)
                store.apply(_batch(b"b", b"during the failed fsync"))
            after = disk.crash()
            assert (after.get(b"a"), after.get(b"b")) == (None, None), seed

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_slow_disk_takes_its_fsync_time_until_it_recovers() -> None:
    async def main() -> None:
        disk = SimDisk("m1", Random(1), fsync_latency_s=0.001)
        disk.slow_until(trio.current_time() + 1.0, 0.3)
        started = trio.current_time()
        disk.store.apply(_batch(b"k", b"v"))
        await disk.store.sync()
        assert trio.current_time() - started == pytest.approx(0.3)
        await trio.sleep(1.0)
        started = trio.current_time()
        await disk.store.sync()
        assert trio.current_time() - started == pytest.approx(0.001)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_members_stop_on_disk_failures_and_the_cluster_recovers() -> None:
    result = run(RunOptions(seed=1, scenario="disk-faults", duration_s=6))
    assert result.passed, "\n".join(summary_lines(result))
    stops = [text for _, text in result.events if " stopped: cannot " in text]
    assert stops, result.events


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bug", "scenario", "kind"),
    [("retry-failed-fsync", "disk-faults", "safety"), ("ack-before-sync", "slow-disk", "safety")],
)
def test_a_planted_disk_bug_is_caught_within_200_seeds(bug: str, scenario: str, kind: str) -> None:
    for seed in range(PLANTED_BUG_SEEDS_MAX):
        result = run(RunOptions(seed, scenario, planted_bug=bug, duration_s=6))
        if result.passed:
            continue
        assert failure_kind(result) == kind, "\n".join(summary_lines(result))
        clean = run(RunOptions(seed, scenario, duration_s=6))
        assert clean.passed, "\n".join(summary_lines(clean))
        return
    pytest.fail(f"{bug} went unnoticed for {PLANTED_BUG_SEEDS_MAX} seeds of {scenario}")
