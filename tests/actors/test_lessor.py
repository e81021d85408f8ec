"""The lessor's pure core: expiry only while primary, renewals, the promotion's extension and
spreading, and bounded, retried reports of expired leases."""

from __future__ import annotations

import collections

from actors.lessor import EXPIRED_RETRY_S, EXPIRIES_PER_S_TARGET, Lessor


def test_a_lessor_that_is_not_primary_tracks_and_reports_nothing() -> None:
    lessor = Lessor()
    lessor.granted(1, 10, now_s=0.0)
    assert not lessor.tracks(1)
    assert lessor.expired(now_s=100.0, limit=10) == []


def test_promotion_gives_every_lease_its_ttl_plus_the_extension() -> None:
    lessor = Lessor()
    lessor.promote([(1, 10), (2, 5)], now_s=100.0, extend_s=1.0)
    assert lessor.remaining_s(1, 100.0) == 11.0
    assert lessor.remaining_s(2, 100.0) == 6.0
    assert lessor.expired(now_s=105.9, limit=10) == []
    assert lessor.expired(now_s=106.0, limit=10) == [2]


def test_renewal_restarts_the_ttl_and_demotion_forgets_everything() -> None:
    lessor = Lessor()
    lessor.promote([], now_s=0.0, extend_s=1.0)
    lessor.granted(1, 10, now_s=0.0)
    assert lessor.renew(1, now_s=8.0) == 10
    assert lessor.expired(now_s=17.9, limit=10) == []
    assert lessor.expired(now_s=18.0, limit=10) == [1]
    lessor.demote()
    assert not lessor.primary and not lessor.tracks(1)
    assert lessor.expired(now_s=1000.0, limit=10) == []


def test_expired_leases_are_reported_within_the_limit_and_again_after_the_retry_time() -> None:
    lessor = Lessor()
    lessor.promote([(lease_id, 5) for lease_id in range(1, 8)], now_s=0.0, extend_s=0.0)
    first = lessor.expired(now_s=10.0, limit=4)
    second = lessor.expired(now_s=10.0, limit=4)
    assert len(first) == 4 and len(second) == 3 and not set(first) & set(second)
    assert lessor.expired(now_s=10.0 + EXPIRED_RETRY_S - 0.1, limit=10) == []
    lessor.revoked(first[0])
    again = lessor.expired(now_s=10.0 + EXPIRED_RETRY_S, limit=10)
    assert sorted(again) == sorted(first[1:] + second)


def test_a_promotion_spreads_many_leases_due_together() -> None:
    lessor = Lessor()
    count = 3000
    lessor.promote([(lease_id, 10) for lease_id in range(1, count + 1)], 0.0, 1.0)
    per_second = collections.Counter(
        int(lessor.remaining_s(lease_id, 0.0)) for lease_id in range(1, count + 1)
    )
    assert max(per_second.values()) <= EXPIRIES_PER_S_TARGET
    assert min(lessor.remaining_s(lease_id, 0.0) for lease_id in range(1, count + 1)) == 11.0


def test_renewals_do_not_grow_the_heap_without_bound() -> None:
    lessor = Lessor()
    lessor.promote([(1, 10)], now_s=0.0, extend_s=0.0)
    for step in range(10_000):
        lessor.renew(1, now_s=float(step))
    assert len(lessor._due) <= 4 * 1 + 65
