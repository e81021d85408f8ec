"""What the simulated v3 lease and watch clients saw, for ``sim.watch_checker`` and
``sim.lease_checker``.

The KV operations of ``sim.workload_v3`` go into ``sim.history`` (one pending operation per
client, checked for linearizability). Leases and watches do not fit that shape: a keep-alive
stream and a watch stream run for seconds and deliver many answers, and a key attached to a
lease disappears without any client deleting it (which the per-key linearizability model would
call a lost write). So they are recorded here, apart, and their keys live apart too: every key
attached to a lease is ``lease/<lease id>/<n>`` (``lease_key``), written only with that lease and
never deleted by a client, so a DELETE of it can only be its lease's revocation or expiry.

Theory of operation:

- Times are virtual seconds (``trio.current_time()``), passed in by the clients.
- ``Revision`` values are etcd's (the MVCC store's main revision), ``TTL`` values seconds.
- A watch *session* is one logical watcher: what a client asked to watch, and every stream
  (``WatchSegment``) it opened for it. After a stream breaks, the client opens the next one on
  any member from the revision after the last event it received: the concatenated events of the
  segments must read as one stream.
- A lease's *acknowledgements* (the grant and each keep-alive answered with a positive TTL) are
  what the lease checker holds the cluster to; its *gone observations* (a keep-alive answered
  with TTL 0, a put or revoke answered "lease not found", a watcher seeing one of its keys
  deleted) bound when it ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

LEASE_KEY_PREFIX: Final = "lease/"
"""Where keys attached to leases live; the KV workload's keys never start with it."""


def lease_key(lease_id: int, number: int) -> str:
    """The ``number``-th key a client attaches to ``lease_id``."""
    return f"{LEASE_KEY_PREFIX}{lease_id}/{number}"


def lease_of_key(key: bytes) -> int | None:
    """The lease a ``lease_key`` belongs to, or None for any other key."""
    text = key.decode(errors="replace")
    if not text.startswith(LEASE_KEY_PREFIX):
        return None
    number, _, _ = text[len(LEASE_KEY_PREFIX) :].partition("/")
    return int(number) if number.isdigit() else None


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a key, as a watch event or the MVCC store shows it (``mvccpb.KeyValue``).

    A tombstone (a DELETE event's ``kv``) has ``version == 0`` and no value or lease.
    """

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    value: bytes
    lease: int

    def describe(self) -> str:
        """``k1=v@12 (c10 v2 lease 7)``."""
        if self.version == 0:
            return f"{self.key.decode(errors='replace')} deleted@{self.mod_revision}"
        text = f"{self.key.decode(errors='replace')}={self.value.decode(errors='replace')}"
        text += f"@{self.mod_revision} (c{self.create_revision} v{self.version}"
        return text + (f" lease {self.lease})" if self.lease else ")")


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One event: a PUT or DELETE (``deleted``) of ``kv``, and what it replaced, if asked."""

    deleted: bool
    kv: Version
    prev_kv: Version | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision

    def describe(self) -> str:
        text = ("DELETE " if self.deleted else "PUT ") + self.kv.describe()
        if self.prev_kv is not None:
            text += f" prev {self.prev_kv.describe()}"
        return text


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """An event as a watcher received it, at ``received_s``."""

    event: ChangeEvent
    received_s: float


@dataclass
class WatchSegment:
    """One Watch stream of a session.

    Attributes:
        member: where it was opened.
        start_revision: the ``start_revision`` asked for (0: "from now").
        opened_s: when the create request was sent.
        created_revision: the header revision of the ``created`` answer (None: never created).
        events: what it delivered, in order.
        end: why it ended (``compacted at 7``, ``UNAVAILABLE: ...``, ``closed``, ``run ended``).
        compact_revision: the compact revision a ``canceled`` answer named, if any.
    """

    member: str
    start_revision: int
    opened_s: float
    created_revision: int | None = None
    events: list[ReceivedEvent] = field(default_factory=list)
    end: str = "run ended"
    compact_revision: int = 0

    @property
    def effective_start(self) -> int | None:
        """The first revision this stream owed: the one asked for, or after the current one
        at creation for a "from now" watch (None if it was never created)."""
        if self.start_revision > 0:
            return self.start_revision
        return None if self.created_revision is None else self.created_revision + 1


@dataclass
class WatchSession:
    """One logical watcher: a key range watched by one client across streams.

    Attributes:
        watcher_id: unique in the run.
        key / range_end: what is watched, as in ``WatchCreateRequest`` (``range_end`` empty:
            the key alone; ``b"\\0"``: every key from ``key`` on).
        prev_kv: whether events carry the version they replaced.
        segments: the streams, in the order opened.
    """

    watcher_id: int
    key: bytes
    range_end: bytes
    prev_kv: bool
    segments: list[WatchSegment] = field(default_factory=list)

    def covers(self, key: bytes) -> bool:
        """Whether ``key`` is in the watched range."""
        if not self.range_end:
            return key == self.key
        if self.range_end == b"\0":
            return key >= self.key
        return self.key <= key < self.range_end

    def describe(self) -> str:
        what = self.key.decode(errors="replace")
        if self.range_end == b"\0":
            what += "..."
        elif self.range_end:
            what += f"..{self.range_end.decode(errors='replace')}"
        return f"watcher w{self.watcher_id} [{what}{' prev_kv' if self.prev_kv else ''}]"


@dataclass(frozen=True, slots=True)
class LeaseAck:
    """The lease was alive at a leader some time after ``sent_s`` and given ``ttl_s`` from
    then: its grant, or a keep-alive answered with a positive TTL at ``answered_s``."""

    lease_id: int
    sent_s: float
    answered_s: float
    ttl_s: int
    what: str = "keep-alive"


@dataclass(frozen=True, slots=True)
class KeepAliveSent:
    """A keep-alive request sent at ``sent_s``; ``answered_s`` is when its answer came (None:
    it never did). Answered or not, it may have renewed the lease at the leader of the moment
    it got there."""

    lease_id: int
    sent_s: float
    answered_s: float | None


@dataclass(frozen=True, slots=True)
class LeaseGone:
    """The lease no longer existed when ``observed_s`` came: how the client learned it."""

    lease_id: int
    observed_s: float
    how: str


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    """A client's LeaseRevoke: sent at ``invoked_s``; ``revision`` is the answer's header
    revision when it succeeded (None: failed or unknown)."""

    lease_id: int
    invoked_s: float
    revision: int | None = None
    completed_s: float | None = None


@dataclass(frozen=True, slots=True)
class LeasePut:
    """A put of ``key`` with ``lease_id`` acknowledged at ``revision``."""

    lease_id: int
    key: bytes
    value: bytes
    revision: int
    completed_s: float


@dataclass
class V3Log:
    """Everything the lease and watch clients of one run recorded."""

    sessions: list[WatchSession] = field(default_factory=list)
    acks: list[LeaseAck] = field(default_factory=list)
    keep_alives: list[KeepAliveSent] = field(default_factory=list)
    gone: list[LeaseGone] = field(default_factory=list)
    revokes: list[LeaseRevoke] = field(default_factory=list)
    lease_puts: list[LeasePut] = field(default_factory=list)
    granted: set[int] = field(default_factory=set)
    """Leases whose grant was sent (whatever its outcome)."""

    def new_session(self, key: bytes, range_end: bytes, prev_kv: bool) -> WatchSession:
        """Start recording a logical watcher."""
        session = WatchSession(len(self.sessions) + 1, key, range_end, prev_kv)
        self.sessions.append(session)
        return session

    def counts(self) -> str:
        """One line for reports."""
        events = sum(len(s.events) for session in self.sessions for s in session.segments)
        streams = sum(len(session.segments) for session in self.sessions)
        return (
            f"{len(self.sessions)} watchers over {streams} streams received {events} events; "
            f"{len(self.granted)} leases, {len(self.acks)} acknowledgements, "
            f"{len(self.revokes)} revokes, {len(self.gone)} seen gone"
        )
