"""Disk faults: writes and fsyncs that fail (EIO, ENOSPC), and slow disks.

A fault names one member and is carried out on its ``SimDisk`` (``sim.disk``, which says
what each failure does to the data):

- ``fail-write-EIO``, ``fail-write-ENOSPC``: the member's next write fails before changing
  anything;
- ``fail-fsync-EIO``, ``fail-fsync-ENOSPC``: its next fsync fails, and the batches it covered
  are doomed (Linux's semantics: lost at the next crash, whatever later fsyncs say);
- ``slow-disk``: for ``duration_s``, every fsync takes ``value_s`` (hundreds of ms);
- ``corrupt-read-bit``, ``corrupt-read-zero``: one of the member's next reads (the disk's
  generator picks which, up to ``CORRUPT_AFTER_READS_MAX``) comes back with a bit flipped or
  zeroed; the stored value stays whole.

What a member must do with a failure: stop (it cannot know what reached the disk), never
acknowledge what the failed fsync covered, and, once restarted, serve only what it can read
back whole. The simulator turns the stop into a crash, the scenario restarts members later,
and the liveness phase restarts every member and disarms every disk
(``sim.liveness.heal_and_restart``). The planted bug ``retry-failed-fsync`` (the storage
actor retries a failed fsync and acknowledges once it succeeds, as PostgreSQL did before
2018) loses acknowledged appends at the next crash; the Monitor's durability check, the
log's own checks on reopening, or the linearizability checker see it.

A damaged read must be noticed (the value's seal), never used or served, and the member must
stop (``StorageCorrupted``; the simulator turns the stop into a crash) or refuse to start if
it finds the damage while opening; it starts again once the read comes back whole. Planted
bug ``skip-seal-check`` (``storage.sealed``): the CRC is not checked, and the damaged value is
used as if good.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from sim.cluster import SimCluster

if TYPE_CHECKING:
    from sim.scenarios import Fault

FAIL_KINDS = (
    "fail-write-EIO",
    "fail-write-ENOSPC",
    "fail-fsync-EIO",
    "fail-fsync-ENOSPC",
)
SLOW_DISK = "slow-disk"
CORRUPT_KINDS = ("corrupt-read-bit", "corrupt-read-zero")
DISK_FAULT_KINDS = frozenset({*FAIL_KINDS, SLOW_DISK, *CORRUPT_KINDS})
CORRUPT_AFTER_READS_MAX = 400
"""The damaged read is one of the member's next this many (drawn per fault): a member opening
its data reads hundreds of values (its log, its state machines' records)."""
SLOW_FSYNC_S = (0.1, 0.3, 0.6)
"""How long an fsync of a slow disk takes (drawn per fault)."""


def fire_disk_fault(cluster: SimCluster, fault: Fault, names: list[str]) -> None:
    """Carry out a disk fault on the members ``names`` (resolved from ``fault.targets``)."""
    for name in names:
        if name not in cluster.up():
            continue  # armed while down, a failure would hit the restart's own writes
        disk = cluster.slots[name].disk
        if fault.kind == SLOW_DISK:
            disk.slow_until(trio.current_time() + fault.duration_s, fault.value_s)
            continue
        if fault.kind in CORRUPT_KINDS:
            disk.corrupt_read(disk.draw_read_count(CORRUPT_AFTER_READS_MAX), fault.kind[13:])
            continue
        _, operation, error = fault.kind.split("-")
        disk.fail_next(operation, error)


def disarm_all(cluster: SimCluster) -> None:
    """No disk fault pending or running on any member."""
    for name in cluster.names:
        cluster.slots[name].disk.disarm()
