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

Everything random comes from the injected generator; ``trace`` lists crashes and restarts as
``(virtual time, event)``.
"""

from __future__ import annotations

import logging
from random import Random

import trio

from storage.kv import MemoryKeyValueStore

logger = logging.getLogger(__name__)


class SimKeyValueStore(MemoryKeyValueStore):
    """A MemoryKeyValueStore whose fsyncs take simulated time (drawn by its disk)."""

    def __init__(self, disk: SimDisk) -> None:
        super().__init__()
        self._disk = disk

    async def _wait_for_fsync(self) -> None:
        delay_s = self._disk.draw_fsync_delay_s()
        self._disk.fsyncs += 1
        if delay_s > 0:
            await trio.sleep(delay_s)
        else:
            await trio.lowlevel.checkpoint()

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

    def draw_fsync_delay_s(self) -> float:
        """How long the next fsync takes."""
        if self.fsync_jitter_s > 0:
            return self.fsync_latency_s + self.fsync_jitter_s * self._rng.random()
        return self.fsync_latency_s

    def crash(self) -> SimKeyValueStore:
        """Lose power: unsynced batches are lost (or a seed-chosen prefix of them kept, each
        whole, with ``torn_writes``). Returns the new ``store``; the old one is closed.

        Raises:
            storage.errors.StorageClosed: the current store was closed already (restart it).
        """
        unsynced = self.store.unsynced_batch_count
        kept = self._rng.randint(0, unsynced) if self.torn_writes and unsynced else 0
        store = self.store.crash(keep_unsynced_batches=kept)
        assert isinstance(store, SimKeyValueStore)
        self.store = store
        self._record(f"crash {self.name}: kept {kept} of {unsynced} unsynced batches")
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


__all__ = ["SimDisk", "SimKeyValueStore"]
