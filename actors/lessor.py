"""When leases expire: the leader's own, unreplicated half of etcd's lessor.

The lease table (``storage.lease``) says which leases exist; only the leader decides when one
has expired, and it carries the decision out through the log (a revoke entry), so every member
deletes the same keys at the same revision and a follower never deletes on its own clock.

This is a pure core: every call takes ``now_s`` (the Trio clock: virtual in the simulator),
nothing here reads a clock or schedules anything. ``actors.leases`` is its shell.

- A lessor is *primary* between ``promote`` and ``demote``. Only a primary one tracks expiry
  times, renews, and reports expired leases. A member promotes it when it applies the first
  entry of its own term as leader (then it has applied everything earlier leaders committed),
  and demotes it as soon as it sees it is no longer leader.
- ``promote`` gives every lease its full TTL plus ``extend_s`` (an election timeout): a new
  leader never expires a lease whose holder was kept from renewing it by the failover itself.
  With many leases due at once it spreads their expiry so that no more than
  ``EXPIRIES_PER_S_TARGET`` fall due in any second, as etcd does, so a failover never turns
  into a storm of revokes.
- ``expired(now_s, limit)`` hands out at most ``limit`` expired leases, and looks at each again
  only after ``EXPIRED_RETRY_S`` (its revoke is on its way; if that fails it is reported again).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Final

EXPIRED_RETRY_S: Final = 3.0
"""How long after reporting an expired lease it is reported again (etcd's
``expiredLeaseRetryInterval``), in case its revoke was lost."""
EXPIRIES_PER_S_TARGET: Final = 750
"""At a promotion, at most this many leases fall due in any one second (3/4 of etcd's revoke
rate of 1,000 a second)."""
SPREAD_FROM_LEASES: Final = 1000
"""Leases below this count are not spread at a promotion (etcd's ``leaseRevokeRate``)."""


class Lessor:
    """Expiry times of the leases, while this member leads; see the module docstring."""

    def __init__(self) -> None:
        self._primary = False
        self._expiry_s: dict[int, float] = {}
        self._ttl_s: dict[int, int] = {}
        self._check_at_s: dict[int, float] = {}
        self._due: list[tuple[float, int]] = []  # (check time, id); stale entries skipped

    @property
    def primary(self) -> bool:
        """Whether this lessor decides expiry (its member leads, and has promoted it)."""
        return self._primary

    def promote(self, leases: Iterable[tuple[int, int]], now_s: float, extend_s: float) -> None:
        """Start deciding expiry for ``(id, ttl)`` leases: each expires a full TTL plus
        ``extend_s`` from now, spread when many fall due together."""
        self._primary = True
        self._expiry_s.clear()
        self._ttl_s.clear()
        self._check_at_s.clear()
        self._due.clear()
        by_expiry = sorted(
            ((now_s + ttl_s + extend_s, lease_id, ttl_s) for lease_id, ttl_s in leases),
        )
        spread = len(by_expiry) >= SPREAD_FROM_LEASES
        for position, (expiry_s, lease_id, ttl_s) in enumerate(by_expiry):
            if spread:
                earliest_s = by_expiry[0][0] + position / EXPIRIES_PER_S_TARGET
                expiry_s = max(expiry_s, earliest_s)
            self._ttl_s[lease_id] = ttl_s
            self._set_expiry(lease_id, expiry_s)

    def demote(self) -> None:
        """Stop deciding expiry (another member leads, or nobody): forget every time."""
        self._primary = False
        self._expiry_s.clear()
        self._ttl_s.clear()
        self._check_at_s.clear()
        self._due.clear()

    def granted(self, lease_id: int, ttl_s: int, now_s: float) -> None:
        """A grant was applied: a primary lessor starts its TTL now."""
        if self._primary:
            self._ttl_s[lease_id] = ttl_s
            self._set_expiry(lease_id, now_s + ttl_s)

    def revoked(self, lease_id: int) -> None:
        """A revoke was applied: forget the lease."""
        self._expiry_s.pop(lease_id, None)
        self._ttl_s.pop(lease_id, None)
        self._check_at_s.pop(lease_id, None)

    def tracks(self, lease_id: int) -> bool:
        """Whether a primary lessor knows this lease (granted and not revoked)."""
        return lease_id in self._expiry_s

    def is_expired(self, lease_id: int, now_s: float) -> bool:
        """Whether the lease's time is up (a primary lessor's tracked lease)."""
        return self._expiry_s[lease_id] <= now_s

    def renew(self, lease_id: int, now_s: float) -> int:
        """Give a tracked, unexpired lease its full TTL again; the TTL."""
        assert self._primary and lease_id in self._expiry_s, lease_id
        ttl_s = self._ttl_s[lease_id]
        self._set_expiry(lease_id, now_s + ttl_s)
        return ttl_s

    def remaining_s(self, lease_id: int, now_s: float) -> float:
        """Seconds until a tracked lease expires (negative once expired)."""
        return self._expiry_s[lease_id] - now_s

    def expired(self, now_s: float, limit: int) -> list[int]:
        """At most ``limit`` tracked leases whose time is up, in order of expiry; each is
        reported again only after ``EXPIRED_RETRY_S`` if it is still there."""
        assert limit > 0, limit
        found: list[int] = []
        due = self._due
        while due and len(found) < limit and due[0][0] <= now_s:
            check_at_s, lease_id = heapq.heappop(due)
            if self._check_at_s.get(lease_id) != check_at_s:
                continue  # renewed or revoked since this entry was pushed
            if self._expiry_s[lease_id] > now_s:
                self._schedule(lease_id, self._expiry_s[lease_id])
                continue
            found.append(lease_id)
            self._schedule(lease_id, now_s + EXPIRED_RETRY_S)
        return found

    def _set_expiry(self, lease_id: int, expiry_s: float) -> None:
        self._expiry_s[lease_id] = expiry_s
        self._schedule(lease_id, expiry_s)

    def _schedule(self, lease_id: int, check_at_s: float) -> None:
        self._check_at_s[lease_id] = check_at_s
        heapq.heappush(self._due, (check_at_s, lease_id))
        if len(self._due) > 4 * len(self._check_at_s) + 64:
            self._compact_heap()

    def _compact_heap(self) -> None:
        """Drop the stale entries renewals leave behind (bounds the heap by the leases)."""
        self._due = [(at_s, lease_id) for lease_id, at_s in self._check_at_s.items()]
        heapq.heapify(self._due)
