"""The simulated network: in-memory TCP-like streams between named hosts, with faults.

Theory of operation
-------------------

A :class:`SimNetwork` joins *hosts*, named by plain strings (``"m1"``, ``"client-3"``).
``network.host("m1")`` is the :class:`net.network.Network` of host m1: the connections it opens
originate from m1, and it may serve only on its own name (``"m1:2380"``; port 0 picks a fresh
port). Member code, its peer transport and its HTTP server run on it unchanged.

Links. Every ordered pair of hosts ``(source, destination)`` is a *link* with its own state:
latency (a base plus a jitter drawn, per write, from the network's injected
``random.Random``), a cut flag, and a clog deadline. A connection between a and b uses two
links, one per direction, so a link fault may be one-way.

Streams. Each direction of a connection is a queue of *segments*: the bytes of one
``send_all`` travel together and arrive at ``now + delay``, but never before the segment
written ahead of them on the same connection (delays never reorder a connection's bytes).
Nothing arrives while the direction's link is cut or clogged; what was held arrives, in order,
as soon as the link opens again (like TCP retransmitting after a partition heals). Arrival is
computed lazily: a reader settles the queue against the clock, and the network settles every
affected direction before it changes a link, so a segment that had arrived before a cut is
never taken back. Each direction holds at most ``window_bytes`` in flight and unread (a
``send_all`` is admitted whole once the direction is under that bound): a stalled reader, a cut
or a clog make writers wait, as a full TCP window does.

Closing is TCP's: ``send_eof`` (a FIN) arrives after the bytes written before it, the reader
sees ``b""``; ``aclose`` sends the FIN and drops whatever still arrives, and the other end's
writes fail with ``trio.BrokenResourceError`` from then on (the RST it would get back). A
*reset* (``reset``, ``reset_link``, ``crash_host``) breaks a connection at both ends at once:
every later ``send_all``/``receive_some`` raises ``trio.BrokenResourceError`` and unread bytes
are lost.

Connecting takes a simulated round trip: the SYN crosses the link out, the answer crosses back
(each after its delay, each waiting while its link is cut or clogged). If either crossing is
not done ``connect_timeout_s`` after the call, or nobody serves the address when the SYN
arrives and the answer is back (a refused port, a down host), ``connect`` raises
:class:`net.network.ConnectionRefused`.

Crashes. ``crash_host(h)`` marks h down, resets all its connections and stops its listeners
(their ``serve`` calls return; the handlers of their connections are cancelled). While down, h
can neither connect nor serve, and connections to it are refused. ``restart_host(h)`` brings
it back up; nothing is restored (the member must serve again).

Determinism. All randomness comes from the injected generator, all time from Trio's clock; sets
are never iterated unsorted. ``trace`` lists what happened, as ``(virtual time, event)``, and
``digest()`` hashes it together with every byte written (so two runs that sent one differing
byte differ). ``trace_traffic=True`` also lists every write in the trace.

A handler that raises an ``Exception`` is logged, counted in ``handler_failures`` and its
stream closed; the server goes on (the Network contract).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import logging
import math
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from random import Random

import trio
import trio.lowlevel

from net.network import ConnectionRefused, StreamHandler, split_address
from sim.determinism import Timers, timers_of_current_clock

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0
"""A connect whose SYN or answer cannot cross in this long fails (TCP: the first SYN and two
retransmissions)."""
WINDOW_BYTES = 256 * 1024
"""Bytes one direction of a connection holds in flight and unread before writers wait."""
RECEIVE_BYTES_DEFAULT = 64 * 1024
"""What ``receive_some()`` returns at most when given no ``max_bytes``."""
EPHEMERAL_PORT_FIRST = 49152
"""The first port that ``serve`` on port 0 hands out, per host."""
STRAND_HOLD_S_MAX = 2.0
"""A stranded connection's held bytes arrive at the latest this long after its stall ends
(when no newer connection on its link ever carries bytes to release them earlier)."""


class _ConflictDetector:
    """Raises trio.BusyResourceError when two tasks use one side of a stream at once."""

    __slots__ = ("_held", "_message")

    def __init__(self, message: str) -> None:
        self._message = message
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self._message)
        self._held = True

    def __exit__(self, *exc_info: object) -> None:
        self._held = False


@dataclass(slots=True)
class _Link:
    """The state of one direction between two hosts."""

    source: str
    destination: str
    latency_s: float
    jitter_s: float
    cut: bool = False
    clogged_until_s: float = -math.inf
    directions: dict[int, _Direction] = field(default_factory=dict)
    """The live directions of connections that use this link, by connection id."""
    stranded: list[_Direction] = field(default_factory=list)
    """Stranded directions whose held bytes wait for a newer connection's first bytes."""

    def release_stranded(self, newer_id: int, arrive_at_s: float) -> None:
        """A newer connection's bytes arrive at ``arrive_at_s``: what the older stranded
        ones held follows each its ``release_delay_s`` later (never sooner than before)."""
        waiting = []
        for direction in self.stranded:
            if direction.connection_id >= newer_id:
                waiting.append(direction)
                continue
            release_s = arrive_at_s + direction.release_delay_s
            direction.held_until_s = min(direction.held_until_s, release_s)
            direction.keep_prefix()
            direction.changed.unpark_all()  # its readers wait for a new arrival time
        self.stranded = waiting

    def name(self) -> str:
        return f"{self.source}->{self.destination}"

    def open_from_s(self) -> float:
        """When bytes may next cross: now or later if clogged, never if cut."""
        return math.inf if self.cut else self.clogged_until_s


@dataclass(slots=True)
class _Segment:
    arrive_at_s: float
    data: bytes | None
    """None is the FIN."""


class _Direction:
    """The bytes of one connection going one way: in flight, then arrived and unread."""

    __slots__ = (
        "arrived",
        "changed",
        "connection_id",
        "eof_arrived",
        "eof_sent",
        "held_until_s",
        "in_flight",
        "last_arrival_s",
        "link",
        "network",
        "queued_bytes",
        "reader_closed",
        "release_delay_s",
        "reset",
        "stranded_at_s",
        "timer_at_s",
    )

    def __init__(self, network: SimNetwork, link: _Link, connection_id: int) -> None:
        self.network = network
        self.link = link
        self.connection_id = connection_id
        self.in_flight: collections.deque[_Segment] = collections.deque()
        self.arrived = bytearray()
        self.queued_bytes = 0
        """In flight plus arrived and unread."""
        self.last_arrival_s = -math.inf
        self.eof_sent = False
        self.eof_arrived = False
        self.reader_closed = False
        self.reset = False
        self.stranded_at_s = math.inf
        """When the writer gives up on it (``SimNetwork.strand``): its writes fail from then."""
        self.held_until_s = -math.inf
        """Nothing on it arrives before this (``SimNetwork.strand``)."""
        self.release_delay_s = 0.0
        """Stranded: how long after a newer connection's first bytes its held bytes arrive."""
        self.changed = trio.lowlevel.ParkingLot()
        """Every task waiting on this direction (reader or writer) parks here."""
        self.timer_at_s = math.inf
        """When the pending arrival timer fires (``inf``: none pending)."""

    def dead(self) -> bool:
        return self.reset or self.reader_closed

    def settle(self, now_s: float) -> None:
        """Move what has arrived by ``now_s`` from in flight to the reader's buffer."""
        if self.dead():
            return
        open_from_s = max(self.link.open_from_s(), self.held_until_s)
        moved = False
        while self.in_flight and max(self.in_flight[0].arrive_at_s, open_from_s) <= now_s:
            segment = self.in_flight.popleft()
            if segment.data is None:
                self.eof_arrived = True
            else:
                self.arrived += segment.data
            moved = True
        if moved:
            self.changed.unpark_all()

    def wake_at(self, timers: Timers, at_s: float) -> None:
        """Settle (and so wake the waiters) at ``at_s`` unless a timer fires no later."""
        if at_s < self.timer_at_s:
            self.timer_at_s = at_s
            timers.call_at(at_s, partial(self._on_timer, timers))

    def _on_timer(self, timers: Timers, at_s: float) -> None:
        if at_s == self.timer_at_s:
            self.timer_at_s = math.inf
        self.settle(trio.current_time())
        if self.changed:  # still waiting (a cut or clog came in between): the next arrival
            self.wake_at(timers, self.next_arrival_s())

    def next_arrival_s(self) -> float:
        if not self.in_flight or self.dead():
            return math.inf
        return max(self.in_flight[0].arrive_at_s, self.link.open_from_s(), self.held_until_s)

    def keep_prefix(self) -> None:
        """Of the writes still in flight, a seed-chosen prefix (one at least) arrives and
        then a FIN: the rest was lost with the path (a given-up connection ends there)."""
        writes = [segment for segment in self.in_flight if segment.data is not None]
        if not writes:
            return
        kept = writes[: self.network.draw_count(1, len(writes))]
        self.in_flight.clear()
        self.in_flight.extend(kept)
        self.in_flight.append(_Segment(kept[-1].arrive_at_s, None))
        self.queued_bytes = len(self.arrived) + sum(len(s.data or b"") for s in kept)

    def push(self, data: bytes | None) -> float:
        """Put a segment (or the FIN, None) in flight; when it arrives if the link stays open."""
        now_s = trio.current_time()
        arrive_at_s = max(now_s + self.network.draw_delay_s(self.link), self.last_arrival_s)
        self.last_arrival_s = arrive_at_s
        if self.link.stranded:
            self.link.release_stranded(self.connection_id, arrive_at_s)
        self.in_flight.append(_Segment(arrive_at_s, data))
        if data is not None:
            self.queued_bytes += len(data)
        if len(self.in_flight) == 1:
            self.changed.unpark_all()  # a reader waiting on an empty queue has no deadline
        return arrive_at_s

    def take(self, max_bytes: int) -> bytes:
        data = bytes(self.arrived[:max_bytes])
        del self.arrived[:max_bytes]
        self.queued_bytes -= len(data)
        self.changed.unpark_all()  # writers waiting for window
        return data

    def discard(self) -> None:
        self.in_flight.clear()
        self.arrived.clear()
        self.queued_bytes = 0
        self.link.directions.pop(self.connection_id, None)
        self.changed.unpark_all()


class SimStream(trio.abc.HalfCloseableStream):
    """One end of a simulated connection (a half-closeable stream, as a TCP socket)."""

    def __init__(
        self, connection: _Connection, outgoing: _Direction, incoming: _Direction, side: str
    ) -> None:
        self._connection = connection
        self._outgoing = outgoing
        self._incoming = incoming
        self.side = side
        """``"client"`` or ``"server"``."""
        self._closed = False
        self._send_guard = _ConflictDetector("another task is sending on this stream")
        self._receive_guard = _ConflictDetector("another task is receiving on this stream")

    @property
    def local_host(self) -> str:
        return self._outgoing.link.source

    @property
    def remote_host(self) -> str:
        return self._outgoing.link.destination

    def __repr__(self) -> str:
        connection_id = self._connection.connection_id
        return f"<SimStream c{connection_id} {self.side} {self._outgoing.link.name()}>"

    # -- sending

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._send_guard:
            self._check_can_send()
            await trio.lowlevel.checkpoint()
            await self._wait_for_window()
            if data:
                payload = bytes(data)
                arrive_at_s = self._outgoing.push(payload)
                self._connection.network.record_write(self._outgoing, payload, arrive_at_s)

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_guard:
            self._check_can_send()
            await trio.lowlevel.checkpoint()
            await self._wait_for_window()

    async def send_eof(self) -> None:
        with self._send_guard:
            if self._closed:
                raise trio.ClosedResourceError("the stream is closed")
            await trio.lowlevel.checkpoint()
            self._send_fin()

    def _check_can_send(self) -> None:
        if self._closed or self._outgoing.eof_sent:
            raise trio.ClosedResourceError("the stream is closed for sending")
        if self._outgoing.dead() or trio.current_time() >= self._outgoing.stranded_at_s:
            raise trio.BrokenResourceError("the connection was reset or closed by the peer")

    async def _wait_for_window(self) -> None:
        outgoing = self._outgoing
        while True:
            self._check_can_send()
            if outgoing.queued_bytes < self._connection.network.window_bytes:
                return
            await outgoing.changed.park()

    def _send_fin(self) -> None:
        if self._outgoing.eof_sent:
            return
        self._outgoing.eof_sent = True
        if not self._outgoing.dead():
            self._outgoing.push(None)

    # -- receiving

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = RECEIVE_BYTES_DEFAULT
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        with self._receive_guard:
            if self._closed:
                raise trio.ClosedResourceError("the stream is closed")
            incoming = self._incoming
            incoming.settle(trio.current_time())
            if incoming.arrived or incoming.eof_arrived or incoming.dead():
                await trio.lowlevel.checkpoint()
            # else the park below is the checkpoint (a task step fewer per wait)
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("the stream was closed while receiving")
                incoming.settle(trio.current_time())
                if incoming.reset:
                    raise trio.BrokenResourceError("the connection was reset")
                if incoming.arrived:
                    return incoming.take(max_bytes)
                if incoming.eof_arrived:
                    return b""
                timers = self._connection.network.timers()
                if timers is None:  # not a virtual_clock(): a cancel scope's deadline
                    with trio.move_on_at(incoming.next_arrival_s()):
                        await incoming.changed.park()
                else:
                    incoming.wake_at(timers, incoming.next_arrival_s())
                    await incoming.changed.park()

    # -- closing

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._send_fin()
            self._incoming.reader_closed = True
            self._incoming.discard()
            self._outgoing.changed.unpark_all()  # our own writers: ClosedResourceError
            self._connection.end_closed(self.side)
        await trio.lowlevel.checkpoint()


@dataclass(eq=False)
class _Connection:
    """Two directions and the two streams on them."""

    network: SimNetwork
    connection_id: int
    client_host: str
    server_address: str
    to_server: _Direction
    to_client: _Direction
    client_open: bool = True
    server_open: bool = True

    @property
    def server_host(self) -> str:
        return self.to_server.link.destination

    def label(self) -> str:
        return f"c{self.connection_id} {self.client_host}->{self.server_address}"

    def reset(self) -> None:
        for direction in (self.to_server, self.to_client):
            direction.reset = True
            direction.discard()

    def end_closed(self, side: str) -> None:
        if side == "client":
            self.client_open = False
        else:
            self.server_open = False
        if not (self.client_open or self.server_open):
            self.network.forget(self)


@dataclass(eq=False)
class _Listener:
    address: str
    handler: StreamHandler
    nursery: trio.Nursery


class SimHost:
    """The Network of one host of a SimNetwork."""

    def __init__(self, network: SimNetwork, name: str) -> None:
        self.network = network
        self.name = name

    def __repr__(self) -> str:
        return f"<SimHost {self.name}>"

    async def connect(self, address: str) -> trio.abc.Stream:
        """Open a stream from this host to ``address`` after a simulated round trip.

        Raises:
            ConnectionRefused: nothing serves there, this host or the other is down, or the
                path is cut or clogged for longer than the connect timeout.
            ValueError: ``address`` is not ``"host:port"``.
        """
        return await self.network.connect_from(self.name, address)

    async def serve(
        self,
        address: str,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections on ``address`` (``"<this host>:port"``) until cancelled, or until
        this host crashes (then it returns).

        Raises:
            OSError: the address is another host's, in use, or this host is down.
            ValueError: ``address`` is not ``"host:port"``.
        """
        await self.network.serve_on(self.name, address, handler, task_status=task_status)


class SimNetwork:
    """Simulated hosts, links and connections; every fault a scenario needs (see the module).

    Args:
        rng: the only source of randomness (delays).
        latency_s / jitter_s: every link's latency until ``set_latency`` changes it: a write
            arrives ``latency_s + jitter_s * rng.random()`` after it was made.
        connect_timeout_s: how long a connect waits for a path before it is refused.
        window_bytes: what one direction holds in flight and unread before writers wait.
        trace_traffic: list every write in the trace too (``digest`` always covers them).
    """

    def __init__(
        self,
        rng: Random,
        *,
        latency_s: float = 0.0,
        jitter_s: float = 0.0,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        window_bytes: int = WINDOW_BYTES,
        trace_traffic: bool = False,
    ) -> None:
        if latency_s < 0 or jitter_s < 0:
            raise ValueError("latency and jitter must be >= 0")
        if connect_timeout_s <= 0 or window_bytes < 1:
            raise ValueError("the connect timeout and the window must be positive")
        self._rng = rng
        self._latency_s = latency_s
        self._jitter_s = jitter_s
        self.connect_timeout_s = connect_timeout_s
        self.window_bytes = window_bytes
        self.trace_traffic = trace_traffic
        self.trace: list[tuple[float, str]] = []
        """``(virtual time, event)`` for every fault, connection and listener change."""
        self.handler_failures = 0
        """Handlers that raised (each logged)."""
        self._hosts: dict[str, SimHost] = {}
        self._down: set[str] = set()
        self._links: dict[tuple[str, str], _Link] = {}
        self._listeners: dict[str, _Listener] = {}
        self._connections: dict[int, _Connection] = {}
        self._connection_ids = itertools.count(1)
        self._ports: dict[str, Iterator[int]] = {}
        self._paths_changed = trio.lowlevel.ParkingLot()
        """Connects waiting for a cut or clogged link park here."""
        self._traffic = hashlib.blake2b(digest_size=16)
        self._timers: Timers | None = None
        self._timers_known = False
        """Whether ``_timers`` holds the run's (None: its clock has none)."""

    # -- hosts ---------------------------------------------------------------------------

    def host(self, name: str) -> SimHost:
        """The Network of host ``name`` (the same object on every call)."""
        if not name or ":" in name:
            raise ValueError(f"a host name is a non-empty string without ':', not {name!r}")
        host = self._hosts.get(name)
        if host is None:
            host = self._hosts[name] = SimHost(self, name)
        return host

    def is_up(self, host: str) -> bool:
        return host not in self._down

    def crash_host(self, host: str) -> None:
        """The machine dies: reset all its connections and stop its listeners; it stays down
        (refusing and unable to connect) until ``restart_host``."""
        self._record(f"crash {host}")
        self._down.add(host)
        self._reset_where(
            lambda connection: host in (connection.client_host, connection.server_host)
        )
        for address in sorted(self._listeners):
            if split_address(address)[0] == host:
                listener = self._listeners.pop(address)
                listener.nursery.cancel_scope.cancel()
                self._record(f"stop serving {address} (crash)")

    def restart_host(self, host: str) -> None:
        """The machine is back up (with no listeners and no connections)."""
        self._record(f"restart {host}")
        self._down.discard(host)

    # -- faults --------------------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the named hosts into groups that cannot reach each other (both ways).

        Replaces every earlier cut (clogs and latencies stay). A host named in no group keeps
        reaching every host.
        """
        listed = [sorted(set(group)) for group in groups]
        seen: set[str] = set()
        for group in listed:
            if seen.intersection(group):
                raise ValueError(f"a host is in two groups: {listed}")
            seen.update(group)
        self._record("partition " + " | ".join(",".join(group) for group in listed))
        self._uncut_all()
        for number, group in enumerate(listed):
            for other in listed[number + 1 :]:
                for a in group:
                    for b in other:
                        self._set_cut(a, b, True)
                        self._set_cut(b, a, True)
        self._paths_changed.unpark_all()

    def cut(self, a: str, b: str, *, one_way: bool = False) -> None:
        """Cut a->b (and b->a unless ``one_way``): nothing crosses until healed."""
        self._record(f"cut {a}->{b}" if one_way else f"cut {a}<->{b}")
        self._set_cut(a, b, True)
        if not one_way:
            self._set_cut(b, a, True)
        self._paths_changed.unpark_all()

    def heal(self) -> None:
        """Remove every cut and every clog; held bytes arrive now, in order."""
        self._record("heal")
        self._uncut_all()
        for key in sorted(self._links):
            link = self._links[key]
            if link.clogged_until_s > trio.current_time():
                self._change_link(link, clogged_until_s=-math.inf)
        self._paths_changed.unpark_all()

    def clog(self, a: str, b: str, until_s: float, *, one_way: bool = False) -> None:
        """Hold every byte on a->b (and b->a unless ``one_way``) until virtual time
        ``until_s`` (replacing an earlier clog of the link), then deliver them in order."""
        arrow = "->" if one_way else "<->"
        self._record(f"clog {a}{arrow}{b} until {until_s!r}")
        for source, destination in [(a, b)] if one_way else [(a, b), (b, a)]:
            self._change_link(self._link(source, destination), clogged_until_s=until_s)
        self._paths_changed.unpark_all()

    def set_latency(
        self, a: str, b: str, base_s: float, jitter_s: float = 0.0, *, one_way: bool = False
    ) -> None:
        """Writes on a->b (and b->a unless ``one_way``) made from now on take
        ``base_s + jitter_s * rng.random()`` to arrive (never overtaking earlier bytes)."""
        if base_s < 0 or jitter_s < 0:
            raise ValueError("latency and jitter must be >= 0")
        arrow = "->" if one_way else "<->"
        self._record(f"latency {a}{arrow}{b} {base_s!r}+{jitter_s!r}")
        for source, destination in [(a, b)] if one_way else [(a, b), (b, a)]:
            link = self._link(source, destination)
            link.latency_s, link.jitter_s = base_s, jitter_s

    def reset(self, host: str) -> None:
        """Abruptly break every connection of ``host``: both ends get BrokenResourceError."""
        self._record(f"reset {host}")
        self._reset_where(
            lambda connection: host in (connection.client_host, connection.server_host)
        )

    def reset_link(self, a: str, b: str) -> None:
        """Abruptly break every connection between ``a`` and ``b`` (either way)."""
        self._record(f"reset {a}<->{b}")
        hosts = {a, b}
        self._reset_where(
            lambda connection: {connection.client_host, connection.server_host} == hosts
        )

    def strand(self, a: str, b: str, delay_s: float, stall_s: float = 0.0) -> None:
        """Reorder across a reconnect: every live connection from ``a`` to ``b`` stalls for
        ``stall_s`` (what ``a`` writes is held), then ``a``'s writes on it fail
        (``BrokenResourceError``) so ``a`` redials, and what it held arrives ``delay_s``
        after the first bytes of a newer connection from ``a`` to ``b`` arrive (at the
        latest ``STRAND_HOLD_S_MAX`` after the stall): the stalled path recovers just behind
        the new one, so the receiver reads the new connection's first messages and then the
        old one's, before anything later on the new one tells it they are stale. Of what it
        held, a seed-chosen prefix of the writes arrives, then a FIN (the rest was lost with
        the path: what a connection the sender gave up on may deliver)."""
        self._record(f"strand {a}->{b} {stall_s!r}s +{delay_s!r}s")
        now_s = trio.current_time()
        link = self._link(a, b)
        for connection_id in sorted(link.directions):
            direction = link.directions[connection_id]
            if direction.dead() or direction.stranded_at_s < math.inf:
                continue
            direction.stranded_at_s = now_s + stall_s
            direction.held_until_s = now_s + stall_s + STRAND_HOLD_S_MAX
            direction.release_delay_s = delay_s
            link.stranded.append(direction)
            direction.changed.unpark_all()

    # -- observation ---------------------------------------------------------------------

    def connection_count(self) -> int:
        """Connections with at least one end open."""
        return len(self._connections)

    def digest(self) -> str:
        """A hash of the trace and of every byte written, in order: equal runs, equal digests."""
        hasher = hashlib.blake2b(digest_size=16)
        for time_s, event in self.trace:
            hasher.update(f"{time_s!r} {event}\n".encode())
        hasher.update(self._traffic.digest())
        return hasher.hexdigest()

    # -- for SimHost and the streams -------------------------------------------------------

    def timers(self) -> Timers | None:
        """The clock's timers (``sim.determinism.virtual_clock``), looked up once."""
        if not self._timers_known:
            self._timers, self._timers_known = timers_of_current_clock(), True
        return self._timers

    def draw_count(self, low: int, high: int) -> int:
        """A count in ``[low, high]`` from the network's generator."""
        return self._rng.randint(low, high)

    def draw_delay_s(self, link: _Link) -> float:
        if link.jitter_s > 0:
            return link.latency_s + link.jitter_s * self._rng.random()
        return link.latency_s

    def record_write(self, direction: _Direction, data: bytes, arrive_at_s: float) -> None:
        header = f"c{direction.connection_id} {direction.link.name()} {len(data)}B"
        self._traffic.update(f"{header} arrives {arrive_at_s!r}\n".encode())
        self._traffic.update(data)
        if self.trace_traffic:
            self._record(f"{header} arrives {arrive_at_s!r}")

    def forget(self, connection: _Connection) -> None:
        if self._connections.pop(connection.connection_id, None) is not None:
            self._record(f"closed {connection.label()}")
        for direction in (connection.to_server, connection.to_client):
            direction.link.directions.pop(direction.connection_id, None)

    async def connect_from(self, source: str, address: str) -> SimStream:
        destination, _ = split_address(address)
        await trio.lowlevel.checkpoint()
        if source in self._down:
            raise ConnectionRefused(f"{source} is down")
        deadline_s = trio.current_time() + self.connect_timeout_s
        if not await self._cross(source, destination, deadline_s) or not await self._cross(
            destination, source, deadline_s
        ):
            self._record(f"connect {source}->{address} timed out")
            raise ConnectionRefused(f"connecting {source} to {address} timed out")
        listener = self._listeners.get(address)
        if listener is None or source in self._down:
            self._record(f"connect {source}->{address} refused")
            raise ConnectionRefused(f"nothing serves {address}")
        connection = self._open_connection(source, address, destination)
        client = SimStream(connection, connection.to_server, connection.to_client, "client")
        server = SimStream(connection, connection.to_client, connection.to_server, "server")
        listener.nursery.start_soon(self._run_handler, listener, server)
        return client

    async def serve_on(
        self,
        host: str,
        address: str,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[str],
    ) -> None:
        wanted_host, port = split_address(address)
        if wanted_host != host:
            raise OSError(f"{host} cannot listen on another host's address {address}")
        if host in self._down:
            raise OSError(f"{host} is down")
        if port == 0:
            port = self._fresh_port(host)
        bound = f"{host}:{port}"
        if bound in self._listeners:
            raise OSError(f"{bound} is in use")
        async with trio.open_nursery() as nursery:
            listener = _Listener(bound, handler, nursery)
            self._listeners[bound] = listener
            self._record(f"serve {bound}")
            try:
                task_status.started(bound)
                await trio.sleep_forever()
            finally:
                if self._listeners.get(bound) is listener:
                    del self._listeners[bound]
                    self._record(f"stop serving {bound}")

    # -- internals -----------------------------------------------------------------------

    def _record(self, event: str) -> None:
        self.trace.append((trio.current_time(), event))

    def _link(self, source: str, destination: str) -> _Link:
        link = self._links.get((source, destination))
        if link is None:
            link = _Link(source, destination, self._latency_s, self._jitter_s)
            self._links[source, destination] = link
        return link

    def _change_link(
        self, link: _Link, *, cut: bool | None = None, clogged_until_s: float | None = None
    ) -> None:
        """Settle the link's directions at the old state, change it, wake their waiters."""
        now_s = trio.current_time()
        directions = [link.directions[key] for key in sorted(link.directions)]
        for direction in directions:
            direction.settle(now_s)
        if cut is not None:
            link.cut = cut
        if clogged_until_s is not None:
            link.clogged_until_s = clogged_until_s
        for direction in directions:
            direction.changed.unpark_all()

    def _set_cut(self, source: str, destination: str, cut: bool) -> None:
        self._change_link(self._link(source, destination), cut=cut)

    def _uncut_all(self) -> None:
        for key in sorted(self._links):
            if self._links[key].cut:
                self._change_link(self._links[key], cut=False)

    def _reset_where(self, chosen: Callable[[_Connection], bool]) -> None:
        for connection_id in sorted(self._connections):
            connection = self._connections[connection_id]
            if chosen(connection) and not connection.to_server.reset:
                self._record(f"reset {connection.label()}")
                connection.reset()

    async def _cross(self, source: str, destination: str, deadline_s: float) -> bool:
        """A packet goes source->destination: wait for the link to open, then its delay.
        False if that is not done by ``deadline_s``."""
        link = self._link(source, destination)
        with trio.move_on_at(deadline_s):
            while (open_from_s := link.open_from_s()) > trio.current_time():
                with trio.move_on_at(open_from_s):
                    await self._paths_changed.park()
            await trio.sleep(self.draw_delay_s(link))
            return True
        return False

    def _open_connection(self, source: str, address: str, destination: str) -> _Connection:
        connection_id = next(self._connection_ids)
        to_server_link = self._link(source, destination)
        to_client_link = self._link(destination, source)
        to_server = _Direction(self, to_server_link, connection_id)
        to_client = _Direction(self, to_client_link, connection_id)
        to_server_link.directions[connection_id] = to_server
        to_client_link.directions[connection_id] = to_client
        connection = _Connection(self, connection_id, source, address, to_server, to_client)
        self._connections[connection_id] = connection
        self._record(f"open {connection.label()}")
        return connection

    def _fresh_port(self, host: str) -> int:
        ports = self._ports.setdefault(host, itertools.count(EPHEMERAL_PORT_FIRST))
        while True:
            port = next(ports)
            if f"{host}:{port}" not in self._listeners:
                return port

    async def _run_handler(self, listener: _Listener, stream: SimStream) -> None:
        try:
            await listener.handler(stream)
        except Exception:
            # The top of a connection's task (as TcpNetwork): the server goes on serving the
            # others. trio.Cancelled is a BaseException and passes.
            self.handler_failures += 1
            self._record(f"handler failed on {listener.address}")
            logger.exception("%s: a connection handler failed", listener.address)
        finally:
            await trio.aclose_forcefully(stream)


__all__ = ["CONNECT_TIMEOUT_S", "WINDOW_BYTES", "SimHost", "SimNetwork", "SimStream"]
