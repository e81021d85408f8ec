"""The simulated disk: a member's MemoryKeyValueStore that loses unsynced writes on a crash.

Theory of operation
-------------------

The simulator gives each member a :class:`SimDisk`; ``disk.store`` is the store the member
opens (a :class:`SimKeyValueStore`, which is a ``storage.kv.MemoryKeyValueStore``). A clean
stop is ``disk.restart()``: nothing is lost. A power loss is ``disk.crash()``: every batch
applied since the last completed ``sync()`` is lost (``MemoryKeyValueStore.crash``), and the
store the member finds on restart is the new ``disk.store``. The old store is closed, so a task
of the crashed incarnation that still holds it can no longer write.

Torn writes. A ``WriteBatch`` is atomic (RocksDB's promise, and ``storage.kv``'s): after a
crash a batch is there whole or not at all, and RocksDB's point-in-time WAL recovery keeps a
*prefix* of the unsynced batches, never a later batch without an earlier one. So with
``torn_writes=True`` a crash keeps a prefix of the unsynced batches whose length the seed
picks (uniformly from none to all), each batch whole: with one batch in flight (the common
case: a crash between ``apply`` and the fsync of ``write(..., sync=True)``), that batch is kept
whole or lost whole. Synced data always survives. This is the strongest tearing that cannot
break the store's own atomicity promise; the default (``torn_writes=False``) loses every
unsynced batch.

fsync latency. With ``fsync_latency_s``/``fsync_jitter_s`` every fsync (every ``sync()``)
sleeps ``fsync_latency_s + fsync_jitter_s * rng.random()`` of virtual time, so group commit,
backpressure and timeouts see a disk that takes time. A batch applied while an fsync is under
way is not covered by it (the store's rule), and a crash during the sleep loses what the fsync
would have made durable (the ``sync()`` raises ``StorageClosed``).

Failing writes and fsyncs. ``disk.fail_next("write" | "fsync", "EIO" | "ENOSPC")`` arms one
failure: the next ``apply`` raises ``StorageFailed`` before changing anything, or the next fsync
raises it after its delay; a sync in flight that covered a batch of the failed fsync fails too
(``SimKeyValueStore``: the member's ``RocksKeyValueStore`` promises that much). A failed fsync
behaves as Linux's does (the "fsyncgate" semantics): the kernel marks the pages it could not
write clean and forgets them, so the batches it covered are *doomed*: they stay readable until a
crash, a later fsync that succeeds does not save them, and a crash takes them back even though
later batches survive. A crash after a failed fsync keeps no unsynced batch (torn writes are a
prefix of what follows the durable data, and the doomed batches end it: RocksDB's WAL replay
stops at such a hole). A member must therefore stop at the first ``StorageFailed`` (never retry
the fsync and acknowledge), and the simulator then crashes it (``sim.cluster``): everything
unsynced or doomed is lost, and a restart opens what the disk kept.

Slow disks. ``disk.slow_until(until_s, fsync_s)`` makes every fsync take ``fsync_s`` (hundreds
of ms: a disk that stalls) until virtual time ``until_s``.

Corrupted reads. ``disk.corrupt_read(after_reads, damage)`` arms one damaged read: the value
of the ``after_reads``-th value read from now on (``get`` or a scan's item, whatever the key)
comes back with one seed-chosen bit flipped (``damage="bit"``) or as zeros of its length
(``"zero"``: a block that reads back blank). What is stored stays intact: this is an error on
the way back (a controller, a cable, memory), so a restarted member reads the value whole. The
arming outlives a crash (it belongs to the hardware, not to an incarnation); ``disarm`` ends
it. A member must notice (every value is sealed: ``storage.sealed``'s CRC-32 and version),
never use or serve the damaged value, and stop (``StorageCorrupted``); a member that finds it
while opening refuses to start, and starts once the read comes back whole.
``damaged_reads`` counts the damaged values handed out, so the simulator can tell a stop or
refusal this fault caused from one a bug caused. Reads made inside ``unobserved()`` (the
simulator's own checkers reading a member's store) are neither counted nor damaged.

Everything random comes from the injected generator; ``trace`` lists crashes, restarts and
failures as ``(virtual time, event)``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator
from random import Random

import trio

from storage.errors import StorageFailed
from storage.kv import MemoryKeyValueStore, WriteBatch

logger = logging.getLogger(__name__)


class SimKeyValueStore(MemoryKeyValueStore):
    """A MemoryKeyValueStore whose fsyncs take simulated time (drawn by its disk) and fail as
    its disk is told. A sync in flight that covered a batch a failed fsync doomed fails too:
    the member's RocksKeyValueStore runs one fsync at a time and fails those waiting behind a
    failed one, where Linux alone would report the error to one caller and let a concurrent
    fsync of the same file succeed. Unlike RocksKeyValueStore, later writes and syncs are
    still taken, as Linux takes them: so the member's own rule (stop at the first failure,
    never retry) is what is tested, by the planted bug ``retry-failed-fsync``."""

    def __init__(self, disk: SimDisk) -> None:
        super().__init__()
        self._disk = disk
        self._doomed_ranges: list[tuple[int, int]] = []
        """The batch numbers ``[first, end)`` each failed fsync doomed."""

    async def _wait_for_fsync(self) -> None:
        delay_s = self._disk.draw_fsync_delay_s()
        self._disk.fsyncs += 1
        if delay_s > 0:
            await trio.sleep(delay_s)
        else:
            await trio.lowlevel.checkpoint()
        self._disk.check_armed("fsync")

    def get(self, key: bytes) -> bytes | None:
        value = super().get(key)
        return value if value is None else self._disk.read_back(key, value)

    def scan(
        self, start: bytes, end: bytes, *, bulk: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return self._disk.read_items(super().scan(start, end, bulk=bulk))

    def scan_reverse(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self._disk.read_items(super().scan_reverse(start, end))

    def apply(self, batch: WriteBatch) -> None:
        self._check_open()
        if len(batch):
            self._disk.check_armed("write")
        super().apply(batch)

    async def _commit_bulk(self, records: list[tuple[bytes, bytes]]) -> None:
        """A bulk commit is a write and an fsync: either may fail as the disk is told."""
        self._check_open()
        if records:
            self._disk.check_armed("write")
        await super()._commit_bulk(records)

    async def sync(self) -> None:
        """As the memory store's, but a failed fsync dooms the batches it covered, and so
        fails every sync in flight that covered one of them."""
        self._check_open()
        first, target = self._first_unsynced, self._applied_batches
        try:
            await self._wait_for_fsync()
        except StorageFailed:
            if not self._closed:
                self._doom(target)
            raise
        self._check_open()
        if any(low < target and first < end for low, end in self._doomed_ranges):
            raise StorageFailed(
                f"cannot fsync on {self._disk.name}: a failed fsync doomed batches it covered"
            )
        del self._unsynced[: self._unsynced_before(target)]

    def _doom(self, target: int) -> None:
        """A failed fsync begun at batch ``target``: what it covered is lost at the next crash."""
        covered = self._unsynced_before(target)
        self._doomed_ranges.append((self._first_unsynced, self._first_unsynced + covered))
        self._disk.doomed.extend(self._unsynced[:covered])
        del self._unsynced[:covered]

    def _hand_on(self) -> MemoryKeyValueStore:
        """The next incarnation is a SimKeyValueStore of the same disk, with this one's data."""
        plain = super()._hand_on()
        store = SimKeyValueStore(self._disk)
        store._values, store._keys = plain._values, plain._keys
        return store


class SimDisk:
    """One member's disk across its crashes and restarts.

    Args:
        name: for the trace (usually the member's host name).
        rng: the only source of randomness (fsync delays, torn writes).
        fsync_latency_s / fsync_jitter_s: each fsync sleeps ``latency + jitter * rng.random()``.
        torn_writes: a crash keeps a seed-chosen prefix of the unsynced batches (each whole)
            instead of losing them all.
    """

    def __init__(
        self,
        name: str,
        rng: Random,
        *,
        fsync_latency_s: float = 0.0,
        fsync_jitter_s: float = 0.0,
        torn_writes: bool = False,
    ) -> None:
        if fsync_latency_s < 0 or fsync_jitter_s < 0:
            raise ValueError("fsync latency and jitter must be >= 0")
        self.name = name
        self._rng = rng
        self.fsync_latency_s = fsync_latency_s
        self.fsync_jitter_s = fsync_jitter_s
        self.torn_writes = torn_writes
        self.store = SimKeyValueStore(self)
        """The store of the current incarnation."""
        self.fsyncs = 0
        self.trace: list[tuple[float, str]] = []
        self.armed: dict[str, str] = {}
        """One pending failure per operation ("write", "fsync"): the errno name it fails with."""
        self.doomed: list[list[tuple[bytes, bytes | None]]] = []
        """Undo records of batches a failed fsync covered: lost at the next crash."""
        self.slow_until_s = 0.0
        self.slow_fsync_s = 0.0
        self.corrupt_after_reads: int | None = None
        """Reads still to pass whole before the armed damaged one (None: none armed)."""
        self.corrupt_damage = "bit"
        self.damaged_reads = 0
        self._unobserved = 0

    def draw_fsync_delay_s(self) -> float:
        """How long the next fsync takes."""
        if trio.current_time() < self.slow_until_s:
            return self.slow_fsync_s
        if self.fsync_jitter_s > 0:
            return self.fsync_latency_s + self.fsync_jitter_s * self._rng.random()
        return self.fsync_latency_s

    def fail_next(self, operation: str, error: str) -> None:
        """Arm one failure: the next ``operation`` ("write" or "fsync") fails with ``error``
        ("EIO" or "ENOSPC")."""
        if operation not in FAILING_OPERATIONS or error not in FAILURE_ERRNOS:
            raise ValueError(f"cannot fail {operation!r} with {error!r}")
        self.armed[operation] = error
        self._record(f"arm {self.name}: the next {operation} fails with {error}")

    def disarm(self) -> None:
        """No pending failure, no slow fsyncs, no damaged read (the faults are over)."""
        self.armed.clear()
        self.slow_until_s = 0.0
        self.corrupt_after_reads = None

    def corrupt_read(self, after_reads: int, damage: str) -> None:
        """Arm one damaged read: the value of the ``after_reads``-th read from now (0: the
        next) comes back with a bit flipped (``damage="bit"``) or zeroed (``"zero"``)."""
        if after_reads < 0 or damage not in READ_DAMAGES:
            raise ValueError(f"cannot damage read {after_reads} with {damage!r}")
        self.corrupt_after_reads, self.corrupt_damage = after_reads, damage
        self._record(f"arm {self.name}: read {after_reads} from now comes back {damage}-damaged")

    def draw_read_count(self, limit: int) -> int:
        """A number of reads in ``[0, limit)``, from this disk's generator."""
        return self._rng.randrange(limit)

    @contextlib.contextmanager
    def unobserved(self) -> Iterator[None]:
        """Reads inside are the simulator's own (a checker's): never counted nor damaged."""
        self._unobserved += 1
        try:
            yield
        finally:
            self._unobserved -= 1

    def read_back(self, key: bytes, value: bytes) -> bytes:
        """``value`` as the read returns it: damaged if this is the armed read."""
        if self.corrupt_after_reads is None or self._unobserved:
            return value
        if self.corrupt_after_reads > 0:
            self.corrupt_after_reads -= 1
            return value
        self.corrupt_after_reads = None
        self.damaged_reads += 1
        damaged = damage_value(value, self.corrupt_damage, self._rng)
        self._record(f"read of {key!r} on {self.name} came back {self.corrupt_damage}-damaged")
        return damaged

    def read_items(self, items: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        """A scan's items as the reads return them (lazily: only what is consumed is read)."""
        if self.corrupt_after_reads is None:
            return items  # the common case costs nothing per item
        return ((key, self.read_back(key, value)) for key, value in items)

    def slow_until(self, until_s: float, fsync_s: float) -> None:
        """Every fsync takes ``fsync_s`` until virtual time ``until_s``."""
        self.slow_until_s, self.slow_fsync_s = until_s, fsync_s
        self._record(f"slow {self.name}: fsyncs of {fsync_s * 1000:.0f}ms until {until_s:.3f}s")

    def check_armed(self, operation: str) -> None:
        """Raise the armed failure of ``operation``, once.

        Raises:
            StorageFailed: a failure was armed for it.
        """
        error = self.armed.pop(operation, None)
        if error is None:
            return
        code = FAILURE_ERRNOS[error]
        self._record(f"{operation} on {self.name} failed: {error}")
        raise StorageFailed(
            f"cannot {operation} on {self.name}: [Errno {code}] {os.strerror(code)}"
        )

    def crash(self) -> SimKeyValueStore:
        """Lose power: unsynced batches are lost (or a seed-chosen prefix of them kept, each
        whole, with ``torn_writes``). Returns the new ``store``; the old one is closed.

        Raises:
            storage.errors.StorageClosed: the current store was closed already (restart it).
        """
        unsynced = self.store.unsynced_batch_count
        kept = self._rng.randint(0, unsynced) if self.torn_writes and unsynced else 0
        if self.doomed:
            # The log a real store replays ends at the hole a failed fsync left (RocksDB stops
            # its WAL replay there): nothing written after the doomed batches comes back.
            kept = 0
        store = self.store.crash(keep_unsynced_batches=kept)
        assert isinstance(store, SimKeyValueStore)
        self.armed.clear()  # a failure armed for this incarnation dies with it
        doomed, self.doomed = self.doomed, []
        for undo in reversed(doomed):
            store._take_back(undo)
        self.store = store
        lost = f", lost {len(doomed)} a failed fsync doomed" if doomed else ""
        self._record(f"crash {self.name}: kept {kept} of {unsynced} unsynced batches{lost}")
        return store

    def restart(self) -> SimKeyValueStore:
        """A clean stop and start: close the store (everything durable) and reopen it."""
        self.store.close()
        store = self.store.reopen()
        assert isinstance(store, SimKeyValueStore)
        self.store = store
        self._record(f"restart {self.name}")
        return store

    def _record(self, event: str) -> None:
        logger.debug("%s", event)
        self.trace.append((trio.current_time(), event))


def damage_value(value: bytes, damage: str, rng: Random) -> bytes:
    """``value`` with one ``rng``-chosen bit flipped (``"bit"``) or as zeros (``"zero"``)."""
    if damage == "zero" or not value:
        return bytes(len(value))
    bit = rng.randrange(len(value) * 8)
    damaged = bytearray(value)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


FAILING_OPERATIONS = ("write", "fsync")
FAILURE_ERRNOS = {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC}
READ_DAMAGES = ("bit", "zero")

__all__ = [
    "FAILING_OPERATIONS",
    "FAILURE_ERRNOS",
    "READ_DAMAGES",
    "SimDisk",
    "SimKeyValueStore",
    "damage_value",
]
