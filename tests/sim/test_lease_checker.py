"""The lease checker on hand-made histories: leases that end properly pass; a key that
outlives its lease, a put after the revocation, a lease that ends while keep-alives were
acknowledged, one that ends without the leader-change extension, and one that comes back are
each caught."""

from __future__ import annotations

from sim.lease_checker import Election, LeaseFacts, check_leases
from sim.v3_records import (
    ChangeEvent,
    KeepAliveSent,
    LeaseAck,
    LeaseGone,
    LeaseRevoke,
    ReceivedEvent,
    V3Log,
    Version,
    WatchSegment,
    lease_key,
    lease_of_key,
)
from sim.watch_checker import MvccHistory, mvcc_history

LEASE = 7
TTL_S = 2
FACTS = LeaseFacts(final_leases=frozenset(), extension_s=1.0, election_seen_slack_s=0.05)


def key(number: int, lease: int = LEASE) -> bytes:
    return lease_key(lease, number).encode()


def put(number: int, revision: int, lease: int = LEASE) -> Version:
    return Version(key(number, lease), revision, revision, 1, b"v", lease)


def tombstone(number: int, revision: int, lease: int = LEASE) -> Version:
    return Version(key(number, lease), 0, revision, 0, b"", 0)


def store(*versions: tuple[int, int, Version]) -> MvccHistory:
    return mvcc_history(versions, 0, max(main for main, _, _ in versions))


REVOKED_TOGETHER = store((2, 0, put(0, 2)), (3, 0, put(1, 3)), (6, 0, tombstone(0, 6)),
                         (6, 1, tombstone(1, 6)))  # fmt: skip


def kept_alive(until_s: float, every_s: float = 0.5) -> V3Log:
    """A lease granted at 1.0 s and kept alive until ``until_s``."""
    log = V3Log(granted={LEASE})
    log.acks.append(LeaseAck(LEASE, 1.0, 1.01, TTL_S, "grant"))
    sent_s = 1.5
    while sent_s <= until_s:
        log.acks.append(LeaseAck(LEASE, sent_s, sent_s + 0.01, TTL_S))
        log.keep_alives.append(KeepAliveSent(LEASE, sent_s, sent_s + 0.01))
        sent_s += every_s
    return log


def test_lease_keys_are_named_for_their_lease() -> None:
    assert lease_of_key(b"lease/42/3") == 42
    assert lease_of_key(b"k1") is None and lease_of_key(b"lease/x/1") is None


def test_a_revoked_lease_and_an_expired_one_pass() -> None:
    log = kept_alive(3.0)
    log.revokes.append(LeaseRevoke(LEASE, 3.2, revision=6, completed_s=3.3))
    assert check_leases(log, REVOKED_TOGETHER, FACTS) == []
    expired = kept_alive(3.0)  # the last keep-alive was sent at 3.0 s: owed until 5.0 s
    expired.gone.append(LeaseGone(LEASE, 5.1, "keep-alive answered TTL 0"))
    assert check_leases(expired, REVOKED_TOGETHER, FACTS) == []


def test_a_key_that_outlives_its_lease_is_caught() -> None:
    log = kept_alive(3.0)
    log.revokes.append(LeaseRevoke(LEASE, 3.2, revision=6, completed_s=3.3))
    late = store((2, 0, put(0, 2)), (3, 0, put(1, 3)), (6, 0, tombstone(0, 6)),
                 (8, 0, tombstone(1, 8)))  # fmt: skip
    lines = check_leases(log, late, FACTS)
    assert any("outlived its lease's revocation at revision 6" in line for line in lines), lines
    never = store((2, 0, put(0, 2)), (3, 0, put(1, 3)), (6, 0, tombstone(0, 6)))
    lines = check_leases(log, never, FACTS)
    assert any("lived until the end" in line for line in lines), lines
    assert any("not in the members' lease table" in line for line in lines), lines


def test_a_put_after_the_revocation_and_a_revoked_lease_left_in_the_table_are_caught() -> None:
    log = kept_alive(3.0)
    log.revokes.append(LeaseRevoke(LEASE, 3.2, revision=6, completed_s=3.3))
    after = store((2, 0, put(0, 2)), (6, 0, tombstone(0, 6)), (7, 0, put(1, 7)))
    lines = check_leases(log, after, LeaseFacts(frozenset({LEASE}), 1.0, 0.05))
    assert any("after its revocation at revision 6" in line for line in lines), lines
    assert any("still in the members' lease table" in line for line in lines), lines


def test_a_lease_that_expires_while_kept_alive_is_caught() -> None:
    log = kept_alive(6.0)
    log.gone.append(LeaseGone(LEASE, 3.1, "keep-alive answered TTL 0"))
    lines = check_leases(log, REVOKED_TOGETHER, FACTS)
    assert any("expired by 3.100s" in line and "owed life until" in line for line in lines)
    assert any("was seen gone" in line for line in lines), lines  # acknowledged afterwards


def test_a_watcher_seeing_the_keys_deleted_dates_the_expiry() -> None:
    log = kept_alive(3.0)
    watcher = log.new_session(b"lease/", b"lease0", prev_kv=False)
    deleted = ChangeEvent(True, tombstone(0, 6))
    watcher.segments.append(WatchSegment("m1", 1, 0.0, 1, [ReceivedEvent(deleted, 4.0)]))
    lines = check_leases(log, REVOKED_TOGETHER, FACTS)
    assert any("expired by 4.000s (w1 received DELETE" in line for line in lines), lines


def test_a_revoke_sent_before_the_lease_ended_excuses_its_timing() -> None:
    log = kept_alive(6.0)
    log.revokes.append(LeaseRevoke(LEASE, 3.0))  # indeterminate: it may have taken effect
    log.gone.append(LeaseGone(LEASE, 3.1, "keep-alive answered TTL 0"))
    lines = check_leases(log, REVOKED_TOGETHER, FACTS)
    assert not any("expired by" in line for line in lines), lines


def test_a_new_leader_owes_every_kept_alive_lease_an_election_timeout_more() -> None:
    log = kept_alive(3.0)  # owed until 5.0 s by its last keep-alive
    elections = [Election(term=3, seen_s=3.5)]
    log.gone.append(LeaseGone(LEASE, 5.6, "keep-alive answered TTL 0"))
    lines = check_leases(log, REVOKED_TOGETHER, FACTS, elections)
    assert any("leader of term 3 took office by 3.500s" in line for line in lines), lines
    log.gone[0] = LeaseGone(LEASE, 6.5, "keep-alive answered TTL 0")  # after 3.45 + 2 + 1
    assert check_leases(log, REVOKED_TOGETHER, FACTS, elections) == []
    before_grant = [Election(term=2, seen_s=0.9)]
    log.gone[0] = LeaseGone(LEASE, 5.6, "keep-alive answered TTL 0")
    assert check_leases(log, REVOKED_TOGETHER, FACTS, before_grant) == []
    after_lapse = [Election(term=4, seen_s=5.2)]  # the lease was no longer protected then
    assert check_leases(log, REVOKED_TOGETHER, FACTS, after_lapse) == []


def test_a_keep_alive_that_may_reach_the_new_leader_late_shortens_its_extension() -> None:
    elections = [Election(term=3, seen_s=3.5)]
    for answered_s in (None, 3.6, 3.4):  # never, after the election, 0.5 s after sending
        log = kept_alive(3.0)
        log.keep_alives.append(KeepAliveSent(LEASE, 2.9, answered_s))
        log.gone.append(LeaseGone(LEASE, 5.6, "keep-alive answered TTL 0"))
        assert check_leases(log, REVOKED_TOGETHER, FACTS, elections) == [], answered_s
