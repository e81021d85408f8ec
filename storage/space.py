"""Room to write: refuse new client writes before the disk or the quota runs out.

Why
---

A member whose disk fills up cannot append to its Raft log: RocksDB fails the write with
``No space left on device``, the store refuses every later write (``StorageFailed``) and the
member stops. etcd avoids that state with a quota: once its database passes
``--quota-backend-bytes`` (2 GiB by default) it raises the NOSPACE alarm and refuses puts,
transactions that put and lease grants with ``etcdserver: mvcc: database space exceeded``,
while reads, deletes and compactions go on so an operator can make room.

troika refuses the same writes in the same words when either

- the store's size (``KeyValueStore.size_bytes``) passes ``quota_bytes`` (etcd's quota), or
- the file system holding the store has less than ``reserve_bytes`` free (``os.statvfs``):
  something else may fill the disk, and the writes already accepted (proposals in flight,
  entries replicated from the leader, RocksDB's own flushes and compactions) still need room.

The check is made when a client write arrives at a member, before it is proposed; while
both limits are more than ``SKIP_HEADROOM_BYTES`` away, only every ``CHECK_EVERY_WRITES``-th
write looks (the look costs 1 % of a leader's CPU under puts). It is
live: once space is freed (files deleted, keys deleted and compacted) writes are accepted
again, with no alarm to disarm (etcd needs ``etcdctl alarm disarm``). Entries already in the
log are always written: a refusal never leaves a replica behind.

The environment variables ``TROIKA_DISK_RESERVE_BYTES`` and ``TROIKA_QUOTA_BACKEND_BYTES``
override the defaults (tests on a small tmpfs use them). Only ``RocksKeyValueStore`` carries a
guard; the in-memory stores of the simulator have none, so the simulator never refuses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

QUOTA_BACKEND_BYTES_DEFAULT: Final = 2 * 1024**3
"""etcd's default ``--quota-backend-bytes``."""
DISK_RESERVE_BYTES_DEFAULT: Final = 128 * 1024**2
"""Free space kept back: two of RocksDB's 64 MiB memtables (a flush writes one out while its
log is still on disk) or many largest requests in flight (1.5 MiB each)."""
RESERVE_ENVIRONMENT: Final = "TROIKA_DISK_RESERVE_BYTES"
QUOTA_ENVIRONMENT: Final = "TROIKA_QUOTA_BACKEND_BYTES"

CHECK_EVERY_WRITES: Final = 64
"""While far from both limits, the guard looks at the disk and the store once per this many
writes: ``statvfs`` and three RocksDB properties cost 3-10 us, 1 % of a leader's CPU under puts
(issue 13)."""
SKIP_HEADROOM_BYTES: Final = 256 * 1024**2
"""The room, above the reserve and under the quota, that lets the guard skip checks: more
than ``CHECK_EVERY_WRITES`` of the largest requests (1.5 MiB each) take. Closer to either
limit every write is checked."""

NO_SPACE_MESSAGE: Final = "etcdserver: mvcc: database space exceeded"
"""etcd's words for a write refused under the NOSPACE alarm (``ErrNoSpace``)."""


@dataclass(slots=True)
class SpaceGuard:
    """Says whether the store at ``path`` may take new client writes."""

    path: Path
    reserve_bytes: int = DISK_RESERVE_BYTES_DEFAULT
    quota_bytes: int = QUOTA_BACKEND_BYTES_DEFAULT
    refusing: bool = False
    """Whether the last check refused (so the log says when that starts and ends)."""
    checks_skippable: int = 0
    """Writes that may still pass unchecked: the last check found more than
    ``SKIP_HEADROOM_BYTES`` of room under these limits (``checked_limits``)."""
    checked_limits: tuple[int, int] = (0, 0)
    """(reserve, quota) at the last check: a change of either ends the skipping."""

    def __post_init__(self) -> None:
        if self.reserve_bytes < 0 or self.quota_bytes <= 0:
            raise ValueError(f"a space guard needs a reserve >= 0 and a quota > 0: {self}")

    @classmethod
    def from_environment(
        cls, path: Path, environment: Mapping[str, str] | None = None
    ) -> SpaceGuard:
        """The defaults, with ``TROIKA_DISK_RESERVE_BYTES`` and ``TROIKA_QUOTA_BACKEND_BYTES``
        applied when set.

        Raises:
            ValueError: a variable is not a whole number of bytes in range.
        """
        source = os.environ if environment is None else environment
        reserve = _bytes_from(source, RESERVE_ENVIRONMENT, DISK_RESERVE_BYTES_DEFAULT)
        quota = _bytes_from(source, QUOTA_ENVIRONMENT, QUOTA_BACKEND_BYTES_DEFAULT)
        return cls(path, reserve, quota)

    def free_bytes(self) -> int | None:
        """Bytes an unprivileged writer may still use on the store's file system; None when
        the file system cannot say."""
        try:
            stats = os.statvfs(self.path)
        except OSError:
            return None
        return stats.f_bavail * stats.f_frsize

    def problem(self, store_bytes: int) -> str | None:
        """Why a new write must be refused (``store_bytes`` is the store's size now), or
        None."""
        if store_bytes > self.quota_bytes:
            return f"the store holds {store_bytes} bytes, over the quota of {self.quota_bytes}"
        free = self.free_bytes()
        if free is not None and free < self.reserve_bytes:
            return (
                f"{free} bytes free on the file system of {self.path}, under the "
                f"{self.reserve_bytes} kept in reserve"
            )
        return None

    def may_skip_check(self) -> bool:
        """Whether this write may pass without looking (and counts it), because the last
        check found plenty of room under the same limits."""
        if self.checks_skippable <= 0 or self.checked_limits != (
            self.reserve_bytes,
            self.quota_bytes,
        ):
            return False
        self.checks_skippable -= 1
        return True

    def note_room(self, store_bytes: int) -> None:
        """After a check that passed: how many writes may skip the next checks."""
        free = self.free_bytes()
        room = self.quota_bytes - store_bytes
        if free is not None:
            room = min(room, free - self.reserve_bytes)
        self.checked_limits = (self.reserve_bytes, self.quota_bytes)
        self.checks_skippable = CHECK_EVERY_WRITES - 1 if room > SKIP_HEADROOM_BYTES else 0

    def check(self, store_bytes: int) -> str | None:
        """``problem``, logging when refusals start and when they end."""
        problem = self.problem(store_bytes)
        if problem is not None and not self.refusing:
            logger.warning("refusing writes (NOSPACE) until there is room: %s", problem)
        elif problem is None and self.refusing:
            logger.warning("taking writes again: there is room in %s", self.path)
        self.refusing = problem is not None
        return problem


def _bytes_from(source: Mapping[str, str], name: str, default: int) -> int:
    text = source.get(name)
    if text is None or not text.strip():
        return default
    if not text.strip().isdigit():
        raise ValueError(f"{name} must be a whole number of bytes, not {text!r}")
    return int(text.strip())


def write_refusal(store: object) -> str | None:
    """Why ``store`` should take no new client write now, or None (also for a store without
    a guard). The guard logs when refusals start and when writes are taken again."""
    space = getattr(store, "space", None)
    size_bytes = getattr(store, "size_bytes", None)
    if not isinstance(space, SpaceGuard) or size_bytes is None:
        return None
    if space.may_skip_check():
        return None
    store_bytes = size_bytes()[0]
    problem = space.check(store_bytes)
    if problem is None:
        space.note_room(store_bytes)
    return problem
