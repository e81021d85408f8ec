"""The lease checker: no key outlives its lease, and no lease dies while it was kept alive.

Two promises etcd's lessor makes, checked on every simulated v3 run from what the lease and
watch clients recorded (``sim.v3_records.V3Log``), the agreed MVCC history
(``sim.watch_checker.MvccHistory``), the lease table the members agree on at the end, and the
times leaders were elected (``sim.cluster.Monitor``).

**No key attached to a lease outlives the lease's revocation**, by a client's LeaseRevoke or by
expiry. Every key of a lease is ``lease/<id>/<n>``, written only with that lease and never
deleted by a client, so a DELETE of one is its lease's end. The lease's *revocation revision*
is the earliest of its acknowledged revokes' revisions and its keys' deletions. Then, in the
agreed history: every version carrying the lease was written before that revision and
replaced (deleted) at it, all in that one revision (a revoke deletes every attached key in
one write); and at the end no live key carries a lease that the final lease table lacks or a
client saw end, and no lease a client revoked is still in the table.

**No lease expires while its keep-alives kept reaching a live leader in time.** "In time" is
defined from what a client can see:

- An *acknowledgement* is the grant, or a keep-alive answered with a positive TTL: some leader
  held the lease at a moment after the request was sent (``sent_s``) and set its expiry to
  that moment plus the TTL. Rule 1: the lease cannot have expired before ``sent_s + ttl_s``.
  (A keep-alive answered by a deposed leader that has not yet noticed counts too: the new
  leader's extension below is there to cover it, and CheckQuorum bounds how long a deposed
  leader goes on answering.)
- A leader that took office at ``e`` gives every lease a full TTL plus an election timeout
  (``extension_s``) from when it starts deciding expiry, which is after ``e``: a failover never
  expires a lease whose holder was kept from renewing by the failover. Rule 2: if the lease
  was granted before ``e`` and still protected by Rule 1 at ``e`` (so it was alive then, and is
  expired by ``e``'s leader or a later one), it cannot have expired before ``e + ttl_s +
  extension_s`` -- unless a keep-alive renewed it at that leader, which sets its expiry to the
  renewal plus the TTL (etcd does the same), possibly sooner. Any keep-alive not surely handled
  before ``e`` may have: one never answered, answered after ``e``, or answered so late
  (``relay_retry_s`` or more) that a member forwarding it to the leader may have sent it again.
  Each such one sent at ``s`` lowers the bound to ``max(s, e) + ttl_s``. Election times come
  from the Monitor's samples, late by up to ``election_seen_slack_s``; the rule uses the
  earliest ``e`` could have been.
- When it expired is known only from above: the first moment a client saw it gone (a
  keep-alive answered with TTL 0, a put or revoke refused "lease not found", a watcher
  receiving the DELETE of one of its keys). A lease whose client sent a revoke before that
  moment may have been revoked, not expired: neither rule applies. A violation is a lease
  seen gone before the time a rule owed it.

**Clocks that drift** (``sim.clock_faults``): a leader measures a TTL on its own monotonic
clock, so one running at rate ``r`` (1.05: 5 % fast) ends a TTL after ``ttl_s / r`` of true
time. Every duration above is a duration on some leader's clock, so each is divided by the
fastest rate any clock ran at (``clock_rate_max``); and a deposed leader whose clock runs slow
(``clock_rate_min``) notices it lost its quorum late, answering keep-alives for up to
``extension_s * (1 / clock_rate_min - 1)`` longer, which Rule 2's extension loses. That is
all troika promises under drift, however large: lease lifetimes scale with the leader's rate;
it cannot know the rate, and etcd assumes it is close to 1. A wall-clock jump changes nothing.

And a lease does not come back: no acknowledgement of a keep-alive sent after it was seen gone.

Pure: values in, violation texts out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from sim.v3_records import KeepAliveSent, LeaseAck, LeaseGone, V3Log, Version, lease_of_key
from sim.watch_checker import MvccHistory

REPORTED_MAX: Final = 12
"""Violation lines kept; the rest are counted."""


@dataclass(frozen=True, slots=True)
class Election:
    """A leader of ``term`` was first seen at ``seen_s``."""

    term: int
    seen_s: float


@dataclass(frozen=True, slots=True)
class LeaseFacts:
    """What the end of the run says of leases: the lease table the members agree on
    (``None``: unknown) and the timing constants of the cluster."""

    final_leases: frozenset[int] | None
    extension_s: float
    election_seen_slack_s: float
    relay_retry_s: float = 0.5
    clock_rate_max: float = 1.0
    clock_rate_min: float = 1.0

    def on_leader_clock(self, duration_s: float) -> float:
        """The least true time a leader's clock can take to measure ``duration_s``."""
        return duration_s / self.clock_rate_max

    def extension_true_s(self) -> float:
        """What Rule 2's extension is sure to add in true time, less what a slow deposed
        leader may overhang it by (not below 0)."""
        overhang_s = self.extension_s * (1 / self.clock_rate_min - 1)
        return max(0.0, self.on_leader_clock(self.extension_s) - overhang_s)


def check_leases(
    log: V3Log,
    reference: MvccHistory,
    facts: LeaseFacts,
    elections: Sequence[Election] = (),
) -> list[str]:
    """Every violation of the lease rules (the module docstring)."""
    lines: list[str] = []
    lines += _keys_outlive_revocation(log, reference)
    lines += _final_state(log, reference, facts.final_leases)
    gone = observed_gone(log)
    lines += _premature_expiry(log, gone, facts, elections)
    lines += _resurrection(log.acks, gone)
    if len(lines) > REPORTED_MAX:
        return [*lines[:REPORTED_MAX], f"lease: ... and {len(lines) - REPORTED_MAX} more"]
    return lines


def observed_gone(log: V3Log) -> dict[int, LeaseGone]:
    """For each lease seen gone, the earliest sighting: the clients' own, and each watcher's
    DELETE of one of its keys."""
    sightings: list[LeaseGone] = list(log.gone)
    for session in log.sessions:
        for segment in session.segments:
            for item in segment.events:
                lease_id = lease_of_key(item.event.kv.key)
                if item.event.deleted and lease_id is not None:
                    how = f"w{session.watcher_id} received {item.event.describe()}"
                    sightings.append(LeaseGone(lease_id, item.received_s, how))
    earliest: dict[int, LeaseGone] = {}
    for sighting in sightings:
        known = earliest.get(sighting.lease_id)
        if known is None or sighting.observed_s < known.observed_s:
            earliest[sighting.lease_id] = sighting
    return earliest


def revocation_revisions(log: V3Log, reference: MvccHistory) -> dict[int, int]:
    """Each lease's revocation revision: its earliest acknowledged revoke or key deletion."""
    revisions: dict[int, int] = {}

    def note(lease_id: int, revision: int) -> None:
        revisions[lease_id] = min(revision, revisions.get(lease_id, revision))

    for revoke in log.revokes:
        if revoke.revision is not None:
            note(revoke.lease_id, revoke.revision)
    for revision, _, event in reference.events:
        lease_id = lease_of_key(event.kv.key)
        if event.deleted and lease_id is not None:
            note(lease_id, revision)
    return revisions


def _lifetimes(reference: MvccHistory) -> Iterable[tuple[Version, int | None]]:
    """Each live version with a lease, and the revision that replaced it (None: live at the
    end)."""
    by_key: dict[bytes, list[tuple[int, Version]]] = defaultdict(list)
    for revision, _, event in reference.events:
        by_key[event.kv.key].append((revision, event.kv))
    for versions in by_key.values():
        for position, (_, version) in enumerate(versions):
            if version.version == 0 or version.lease == 0:
                continue
            following = versions[position + 1][0] if position + 1 < len(versions) else None
            yield version, following


def _keys_outlive_revocation(log: V3Log, reference: MvccHistory) -> list[str]:
    revoked_at = revocation_revisions(log, reference)
    lines = []
    for version, replaced_at in _lifetimes(reference):
        revision = revoked_at.get(version.lease)
        if revision is None or version.mod_revision <= reference.compact_revision:
            continue
        if version.mod_revision >= revision:
            lines.append(
                f"lease: {version.describe()} was written with lease {version.lease} after its "
                f"revocation at revision {revision}"
            )
        elif replaced_at != revision:
            until = "the end" if replaced_at is None else f"revision {replaced_at}"
            lines.append(
                f"lease: {version.describe()} outlived its lease's revocation at revision "
                f"{revision} (it lived until {until})"
            )
    return lines


def _final_state(
    log: V3Log, reference: MvccHistory, final_leases: frozenset[int] | None
) -> list[str]:
    gone = set(observed_gone(log))
    lines = []
    for version, replaced_at in _lifetimes(reference):
        if replaced_at is not None:
            continue
        if final_leases is not None and version.lease not in final_leases:
            lines.append(
                f"lease: {version.describe()} is live at the end, but lease {version.lease} "
                "is not in the members' lease table"
            )
        elif version.lease in gone:
            lines.append(
                f"lease: {version.describe()} is live at the end, but a client saw lease "
                f"{version.lease} gone"
            )
    if final_leases is not None:
        for revoke in log.revokes:
            if revoke.revision is not None and revoke.lease_id in final_leases:
                lines.append(
                    f"lease: lease {revoke.lease_id} was revoked at revision {revoke.revision} "
                    "but is still in the members' lease table at the end"
                )
    return lines


def _premature_expiry(
    log: V3Log, gone: dict[int, LeaseGone], facts: LeaseFacts, elections: Sequence[Election]
) -> list[str]:
    acks: dict[int, list[LeaseAck]] = defaultdict(list)
    for ack in log.acks:
        acks[ack.lease_id].append(ack)
    revoked_from: dict[int, float] = {}
    for revoke in log.revokes:
        revoked_from[revoke.lease_id] = min(
            revoke.invoked_s, revoked_from.get(revoke.lease_id, revoke.invoked_s)
        )
    lines = []
    for lease_id, sighting in sorted(gone.items()):
        end_s = sighting.observed_s
        if revoked_from.get(lease_id, end_s + 1) <= end_s:
            continue
        sent = [item for item in log.keep_alives if item.lease_id == lease_id]
        owed = _owed(acks[lease_id], sent, end_s, facts, elections)
        if owed is not None:
            until_s, why = owed
            lines.append(
                f"lease: lease {lease_id} expired by {end_s:.3f}s ({sighting.how}), but {why}: "
                f"it was owed life until {until_s:.3f}s"
            )
    return lines


def _owed(
    acks: Sequence[LeaseAck],
    sent: Sequence[KeepAliveSent],
    end_s: float,
    facts: LeaseFacts,
    elections: Sequence[Election],
) -> tuple[float, str] | None:
    """The latest time a rule owed the lease past ``end_s``, and why; None if none did."""
    best: tuple[float, str] | None = None
    for ack in acks:
        until_s = ack.sent_s + facts.on_leader_clock(ack.ttl_s)
        if until_s > end_s and (best is None or until_s > best[0]):
            why = (
                f"its {ack.what} sent at {ack.sent_s:.3f}s was answered at "
                f"{ack.answered_s:.3f}s with TTL {ack.ttl_s}"
            )
            best = (until_s, why)
    grants = [ack for ack in acks if ack.what == "grant"]
    if not grants:
        return best
    grant = grants[0]
    for election in elections:
        earliest_s = election.seen_s - facts.election_seen_slack_s
        if grant.answered_s > earliest_s:
            continue
        protected = [
            ack for ack in acks if ack.sent_s + facts.on_leader_clock(ack.ttl_s) > election.seen_s
        ]
        if not protected:
            continue
        ttl_true_s = facts.on_leader_clock(grant.ttl_s)
        until_s = earliest_s + ttl_true_s + facts.extension_true_s()
        for item in sent:
            answered_s = item.answered_s
            if (
                answered_s is None
                or answered_s >= earliest_s
                or (answered_s - item.sent_s >= facts.relay_retry_s)
            ):
                until_s = min(until_s, max(item.sent_s, earliest_s) + ttl_true_s)
        if until_s > end_s and (best is None or until_s > best[0]):
            why = (
                f"a leader of term {election.term} took office by {election.seen_s:.3f}s while "
                f"the lease was kept alive (its {protected[0].what} sent at "
                f"{protected[0].sent_s:.3f}s, TTL {protected[0].ttl_s}), and a new leader adds "
                f"an election timeout ({facts.extension_s:g}s) to every lease's TTL"
            )
            best = (until_s, why)
    return best


def _resurrection(acks: Sequence[LeaseAck], gone: dict[int, LeaseGone]) -> list[str]:
    lines = []
    for ack in acks:
        sighting = gone.get(ack.lease_id)
        if sighting is not None and ack.sent_s > sighting.observed_s:
            lines.append(
                f"lease: lease {ack.lease_id} was seen gone at {sighting.observed_s:.3f}s "
                f"({sighting.how}), but its {ack.what} sent at {ack.sent_s:.3f}s was answered "
                f"with TTL {ack.ttl_s}"
            )
    return lines
