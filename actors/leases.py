"""The member's lease shell: expiry at the leader, renewals forwarded to it.

``actors.lessor`` is the pure core that knows when leases expire; this is the actor around
it (docs/leases.md):

- It listens to the state machine (``LeaseListener``): grants and revokes as they are
  applied, and the new leader's first entry, at which a leading member promotes its lessor
  (every lease gets its TTL again plus an election timeout).
- ``run`` checks every ``EXPIRY_CHECK_INTERVAL_S`` (etcd: 500 ms) whether this member still
  leads (demoting the lessor at once if not), and proposes a revoke for each lease whose time
  is up, at most ``REVOKES_PER_ROUND`` a round (etcd's rate of 1,000 a second). A revoke is an
  ordinary log entry: every member deletes the lease's keys at the same revision.
- ``renew`` and ``time_to_live`` need the leader's expiry times. On the leader they are
  answered from its lessor; on any other member they are forwarded to the leader over the
  peer transport (a small ``{"lease": ...}`` payload and its answer), as etcd forwards them
  over its peer URLs, and asked again every ``RELAY_RETRY_S`` until the request timeout (the
  leader may change meanwhile). A leader that cannot answer yet (not yet promoted, or the
  lease expired and its revoke on its way) answers "retry".
- "No such lease" is said only after a ReadIndex round (``confirm_read``) has confirmed that
  this member still leads and has applied everything committed by then. A leader deposed
  without knowing it yet (a slow disk, a failed write, a partition) never saw the grants its
  successor committed; answering from its own table, it told clients that a lease granted a
  moment earlier was gone (found by the 10,000-seed sweep with v3 clients, slow-disk seed 246
  and disk-faults seed 549). etcd 3.4 answers from the leader's lessor without that round.

Time: every expiry, renewal and wait here is measured on the member's monotonic clock
(``actors.clock.MemberClock``), never the wall clock: a wall-clock jump changes nothing, and in
the simulator a member whose monotonic clock drifts expires leases early (fast) or late (slow)
in true time, by its rate (docs/simulator.md, Clock faults).

Everything is bounded: forwarded requests waiting for an answer (``RELAY_PENDING_MAX``),
requests queued at the leader (``RELAY_INBOX_MAX``), revokes in flight.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import trio

from actors.clock import MemberClock, TrioClock
from actors.lessor import Lessor
from actors.raft_actor import RaftStatus
from net.etcdpb.raft_internal_pb2 import InternalRaftRequest
from net.etcdpb.rpc_pb2 import LeaseRevokeRequest
from net.v3.errors import RpcError
from storage.lease import LeaseTable

log = logging.getLogger(__name__)

EXPIRY_CHECK_INTERVAL_S: Final = 0.5
"""How often the leader looks for expired leases (etcd's lessor loop)."""
REVOKES_PER_ROUND: Final = 500
"""Expired leases revoked per check, at most (etcd: 1,000 a second)."""
RELAY_RETRY_S: Final = 0.5
"""A forwarded request not answered in this long is sent again (perhaps to a new leader)."""
RELAY_PENDING_MAX: Final = 4096
"""Forwarded requests waiting for the leader's answer on this member."""
RELAY_INBOX_MAX: Final = 4096
"""Requests from other members queued at the leader; more are dropped (their senders ask
again)."""
RELAY_KIND: Final = "lease"
"""The peer payload key that marks a lease request or answer (Raft messages never have it)."""
LESSOR_WALL_CLOCK: Final = "lessor-wall-clock"
"""A planted bug: the lessor measures lease expiry on the wall clock, not the monotonic one, so
a forward jump of the leader's wall clock expires leases early (the simulator's clock-faults
scenario and lease checker must catch it)."""
INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1


class LeaseRetry(Exception):
    """The leader cannot answer yet; ask again shortly, passing ``after`` back."""

    def __init__(self, after: int = 0) -> None:
        super().__init__(after)
        self.after = after


class LeaseNotHere(Exception):
    """The leader's table has no such lease: true only once ``confirm_read`` has shown that
    this member still leads and has applied everything committed (module docstring)."""


class LeaseTimeout(Exception):
    """No leader answered within the request timeout."""


class LeaseNoLeader(Exception):
    """There was no leader to ask within the request timeout."""


@dataclass(frozen=True, slots=True)
class TimeToLive:
    """What the leader knows of a lease: seconds left (truncated, as etcd) and its TTL."""

    remaining_s: int
    granted_s: int


@dataclass(slots=True)
class _Pending:
    done: trio.Event
    answer: dict[str, object] | None = None


SendPayload = Callable[[int, dict[str, object]], bool]
ProposeRevoke = Callable[[InternalRaftRequest], Awaitable[object]]
ConfirmRead = Callable[[float], Awaitable[None]]
"""A ReadIndex round and the apply up to its index, within so many seconds; raises if this
member cannot confirm that it leads (``Member.confirm_read_within``)."""


class MemberLeases:
    """The lessor of one member and the paths to the leader's; see the module docstring.

    Args:
        table: the applied lease table (read only here).
        status: the raft actor's published status (role, term, leader).
        member_id: this member.
        send: puts a payload on a peer's queue without waiting (False when dropped).
        propose_revoke: proposes a revoke entry and waits for it to apply (an async callable).
        confirm_read: confirms, by a ReadIndex round, that this member leads and has applied
            what was committed, before it says "no such lease".
        extend_s: what a promotion adds to every lease (an election timeout).
        planted_expire_on_followers: a planted bug, test only: every member's lessor decides
            expiry, not only the leader's.
        clock: the member's clocks (Trio's own by default); only the monotonic one is read,
            unless ``planted_wall_clock``.
        planted_wall_clock: a planted bug, test only (``LESSOR_WALL_CLOCK``).
        tick_s: how long to wait before asking again.
        request_timeout_s: how long a renewal may take in all.
        applied_index: this member's applied index (a leader answers "no such lease" only
            once it has applied every entry committed when it was asked, as etcd's
            ``waitAppliedIndex``: the grant may be committed but not yet applied here).
    """

    def __init__(
        self,
        table: LeaseTable,
        status: RaftStatus,
        *,
        member_id: int,
        send: SendPayload,
        propose_revoke: ProposeRevoke,
        confirm_read: ConfirmRead,
        extend_s: float,
        tick_s: float,
        request_timeout_s: float,
        applied_index: Callable[[], int] = lambda: 0,
        planted_expire_on_followers: bool = False,
        clock: MemberClock | None = None,
        planted_wall_clock: bool = False,
    ) -> None:
        self.table = table
        self.clock: MemberClock = clock if clock is not None else TrioClock(0, started_s=0.0)
        self.planted_wall_clock = planted_wall_clock
        self._applied_index = applied_index
        self.planted_expire_on_followers = planted_expire_on_followers
        """A planted bug (``actors.bootstrap.LESSOR_EXPIRES_ON_FOLLOWERS``), test only."""
        self.status = status
        self.member_id = member_id
        self.lessor = Lessor()
        self._send = send
        self._propose_revoke = propose_revoke
        self._confirm_read = confirm_read
        self.extend_s = extend_s
        self.tick_s = tick_s
        self.request_timeout_s = request_timeout_s
        self._promoted_term = 0
        self._sequence = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._inbox_send, self._inbox_receive = trio.open_memory_channel[
            tuple[int, dict[str, object]]
        ](RELAY_INBOX_MAX)
        self.revokes_proposed = 0
        self.relay_dropped = 0

    # -- the state machine's listener ---------------------------------------------------------

    def granted(self, lease_id: int, ttl_s: int) -> None:
        self._check_role()
        self.lessor.granted(lease_id, ttl_s, self._now_s())

    def revoked(self, lease_id: int) -> None:
        self.lessor.revoked(lease_id)

    def leader_entry_applied(self) -> None:
        if self.status.is_leader() or self.planted_expire_on_followers:
            self._promote()

    def reset(self) -> None:
        self.lessor.demote()
        if self.status.is_leader():
            self._promote()

    def _promote(self) -> None:
        self.lessor.promote(self.table.ttls(), self._now_s(), self.extend_s)
        self._promoted_term = self.status.term
        log.info("%x: lessor promoted at term %d", self.member_id, self._promoted_term)

    def _now_s(self) -> float:
        """Now, for expiry: the monotonic clock (the wall clock under the planted bug)."""
        if self.planted_wall_clock:
            return self.clock.now_ns() / 1e9
        return self.clock.monotonic_s()

    def _check_role(self) -> None:
        """Demote the lessor the moment this member is seen not to lead the term it was
        promoted in."""
        if self.planted_expire_on_followers:
            return
        if self.lessor.primary and (
            not self.status.is_leader() or self.status.term != self._promoted_term
        ):
            self.lessor.demote()
            log.info("%x: lessor demoted", self.member_id)

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Revoke expired leases while leading, and answer other members' requests."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._answer_relayed)
            while True:
                await self.clock.sleep(EXPIRY_CHECK_INTERVAL_S)
                self._check_role()
                if not self.lessor.primary:
                    continue
                for lease_id in self.lessor.expired(self._now_s(), REVOKES_PER_ROUND):
                    nursery.start_soon(self._revoke_expired, lease_id)

    async def _revoke_expired(self, lease_id: int) -> None:
        self.revokes_proposed += 1
        request = InternalRaftRequest(lease_revoke=LeaseRevokeRequest(ID=lease_id))
        try:
            await self._propose_revoke(request)
        except RpcError:
            pass  # revoked meanwhile by its holder
        except Exception as error:  # timeouts, no leader: asked again after the retry time
            log.debug("%x: revoke of expired lease %x failed: %s", self.member_id, lease_id, error)

    # -- serving ------------------------------------------------------------------------------

    def renew_here(self, lease_id: int, after: int = 0, *, confirmed: bool = False) -> int:
        """Renew on the leader: the TTL, or 0 for a lease that does not exist (``confirmed``:
        a ReadIndex round since the request came has confirmed that this member leads).

        Raises:
            LeaseRetry: not promoted yet, the lease expired and its revoke is on its way, or
                it is not here and entries up to ``LeaseRetry.after`` are not applied yet.
            LeaseNotHere: it is not here and that is not confirmed yet.
        """
        self._check_role()
        if not self.lessor.primary:
            raise LeaseRetry(after)
        lease = self.table.get(lease_id)
        if lease is None:
            self._check_applied(after)
            if not confirmed:
                raise LeaseNotHere()
            return 0
        now_s = self._now_s()
        if not self.lessor.tracks(lease_id):
            self.lessor.granted(lease_id, lease.ttl_s, now_s)
        if self.lessor.is_expired(lease_id, now_s):
            raise LeaseRetry(after)
        return self.lessor.renew(lease_id, now_s)

    def time_to_live_here(
        self, lease_id: int, after: int = 0, *, confirmed: bool = False
    ) -> TimeToLive | None:
        """The leader's view of a lease; None if it does not exist. An expired lease whose
        revoke is not applied yet answers 0, not etcd's negative remainder: that reaches -1
        a second after expiry, which clients read as "gone", though a leader deposed in a
        minority may never get the revoke committed and the lease lives on under the next.

        Raises:
            LeaseRetry, LeaseNotHere: as ``renew_here``.
        """
        self._check_role()
        if not self.lessor.primary:
            raise LeaseRetry(after)
        lease = self.table.get(lease_id)
        if lease is None:
            self._check_applied(after)
            if not confirmed:
                raise LeaseNotHere()
            return None
        now_s = self._now_s()
        if not self.lessor.tracks(lease_id):
            self.lessor.granted(lease_id, lease.ttl_s, now_s)
        remaining_s = max(0, int(self.lessor.remaining_s(lease_id, now_s)))
        return TimeToLive(remaining_s, lease.ttl_s)

    async def renew(self, lease_id: int) -> int:
        """Renew a lease at the leader, wherever it is: the TTL, or 0 if it does not exist.

        Raises:
            LeaseTimeout, LeaseNoLeader: no answer within the request timeout.
        """
        answer = await self._ask("renew", lease_id)
        ttl_s = answer.get("ttl")
        assert type(ttl_s) is int
        return ttl_s

    async def time_to_live(self, lease_id: int) -> TimeToLive | None:
        """``time_to_live_here`` at the leader, wherever it is.

        Raises:
            LeaseTimeout, LeaseNoLeader: no answer within the request timeout.
        """
        answer = await self._ask("ttl", lease_id)
        if not answer.get("found"):
            return None
        remaining_s, granted_s = answer.get("ttl"), answer.get("granted")
        assert type(remaining_s) is int and type(granted_s) is int
        return TimeToLive(remaining_s, granted_s)

    def _check_applied(self, after: int) -> None:
        """Before saying "no such lease": the entries committed when first asked (``after``,
        or now) must be applied here.

        Raises:
            LeaseRetry: they are not.
        """
        needed = after or self.status.commit_index
        if self._applied_index() < needed:
            raise LeaseRetry(needed)

    async def _answer_here(self, op: str, lease_id: int, after: int) -> dict[str, object]:
        """The leader's answer; "no such lease" only once a ReadIndex round confirms it.

        Raises:
            LeaseRetry: the leader cannot answer yet, or could not confirm within
                ``RELAY_RETRY_S`` that it still leads.
        """
        try:
            return self._answer_from_table(op, lease_id, after, confirmed=False)
        except LeaseNotHere:
            pass
        with trio.move_on_after(RELAY_RETRY_S):
            try:
                await self._confirm_read(RELAY_RETRY_S)
            except Exception as error:  # not the leader, no quorum: the asker retries
                log.debug("%x: lease %x not confirmed: %s", self.member_id, lease_id, error)
                raise LeaseRetry(after) from None
            self._check_role()
            if self.status.is_leader():
                return self._answer_from_table(op, lease_id, after, confirmed=True)
        raise LeaseRetry(after)

    def _answer_from_table(
        self, op: str, lease_id: int, after: int, *, confirmed: bool
    ) -> dict[str, object]:
        """Raises LeaseRetry, LeaseNotHere."""
        if op == "renew":
            return {"found": True, "ttl": self.renew_here(lease_id, after, confirmed=confirmed)}
        ttl = self.time_to_live_here(lease_id, after, confirmed=confirmed)
        if ttl is None:
            return {"found": False, "ttl": -1, "granted": 0}
        return {"found": True, "ttl": ttl.remaining_s, "granted": ttl.granted_s}

    async def _ask(self, op: str, lease_id: int) -> dict[str, object]:
        deadline = self.clock.monotonic_s() + self.request_timeout_s
        saw_leader = False
        after = 0
        while self.clock.monotonic_s() < deadline:
            leader = self.status.leader_id
            if leader == self.member_id and self.status.is_leader():
                saw_leader = True
                try:
                    return await self._answer_here(op, lease_id, after)
                except LeaseRetry as retry:
                    after = retry.after
            elif leader != 0:
                saw_leader = True
                answer = await self._forward(leader, op, lease_id, after, deadline)
                if answer is not None and not answer.get("retry"):
                    return answer
                if answer is not None and type(answer.get("after")) is int:
                    after = answer["after"]  # type: ignore[assignment]
            await self.clock.sleep(self.tick_s)
        if not saw_leader:
            raise LeaseNoLeader()
        raise LeaseTimeout()

    # -- forwarding ---------------------------------------------------------------------------

    async def _forward(
        self, leader: int, op: str, lease_id: int, after: int, deadline: float
    ) -> dict[str, object] | None:
        """One attempt at the leader; its answer, or None when none came in time (``deadline``:
        on the monotonic clock)."""
        if len(self._pending) >= RELAY_PENDING_MAX:
            return None
        sequence = next(self._sequence)
        pending = _Pending(trio.Event())
        self._pending[sequence] = pending
        try:
            payload: dict[str, object] = {
                RELAY_KIND: op,
                "id": lease_id,
                "seq": sequence,
                "after": after,
            }
            if not self._send(leader, payload):
                return None
            until_s = min(deadline, self.clock.monotonic_s() + RELAY_RETRY_S)
            with trio.move_on_at(self.clock.true_at(until_s)):
                await pending.done.wait()
            return pending.answer
        finally:
            del self._pending[sequence]

    def on_peer_payload(self, sender: int, payload: dict[str, object]) -> None:
        """A lease payload from a peer (the transport actor's receive loop: never blocks).
        Malformed ones are logged and dropped."""
        op = payload.get(RELAY_KIND)
        sequence = payload.get("seq")
        if type(sequence) is not int or not 0 < sequence <= INT64_MAX:
            log.warning("%x: lease payload from %x without a sequence", self.member_id, sender)
            return
        if op == "answer":
            self._on_answer(sequence, payload)
            return
        lease_id, after = payload.get("id"), payload.get("after", 0)
        if op not in ("renew", "ttl") or type(lease_id) is not int or type(after) is not int:
            log.warning("%x: malformed lease payload from %x", self.member_id, sender)
            return
        if not INT64_MIN <= lease_id <= INT64_MAX or not 0 <= after <= INT64_MAX:
            log.warning("%x: lease id out of range from %x", self.member_id, sender)
            return
        try:
            self._inbox_send.send_nowait((sender, payload))
        except trio.WouldBlock:
            self.relay_dropped += 1

    def _on_answer(self, sequence: int, payload: dict[str, object]) -> None:
        pending = self._pending.get(sequence)
        if pending is None:
            return  # answered too late: the asker moved on
        if payload.get("retry") is True:
            after = payload.get("after", 0)
            pending.answer = {"retry": True, "after": after if type(after) is int else 0}
        else:
            found, ttl_s, granted_s = (
                payload.get("found"),
                payload.get("ttl"),
                payload.get("granted"),
            )
            if type(found) is not bool or type(ttl_s) is not int or type(granted_s) is not int:
                log.warning("%x: malformed lease answer", self.member_id)
                return
            pending.answer = {"found": found, "ttl": ttl_s, "granted": granted_s}
        pending.done.set()

    async def _answer_relayed(self) -> None:
        async for sender, payload in self._inbox_receive:
            op, lease_id, sequence = payload[RELAY_KIND], payload["id"], payload["seq"]
            after = payload.get("after", 0)
            assert isinstance(op, str) and type(lease_id) is int and type(after) is int
            answer: dict[str, object] = {RELAY_KIND: "answer", "seq": sequence}
            if self.status.is_leader():
                try:
                    answer["granted"] = 0
                    answer.update(await self._answer_here(op, lease_id, after))
                except LeaseRetry as retry:
                    answer = {RELAY_KIND: "answer", "seq": sequence, "retry": True}
                    answer["after"] = retry.after
            else:
                answer["retry"] = True
            if not self._send(sender, answer):
                self.relay_dropped += 1
            await trio.lowlevel.checkpoint()
