"""The member-to-member transport: etcd's "stream" and "pipeline" channels over a Network.

Theory of operation
-------------------

``net`` knows nothing of Raft: a payload is a dict of plain values (see ``net.frames``); the
actors turn Raft messages into payloads and back.

Every connection starts the same way. The dialing member sends a handshake frame::

    {"troika": PROTOCOL_VERSION, "cluster": cluster_id, "from": its id, "to": our id,
     "channel": "stream" | "pipeline"}

and the accepting member answers ``{"ok": True}``, or ``{"error": reason}`` and closes. It
refuses, with a logged reason, a handshake from another cluster, for another member, of an
unknown protocol version, a malformed or oversized first frame, garbage bytes, and silence
(``handshake_timeout_seconds``). A refusal is sent, the write side shut, and what the peer
still sends is read and dropped for up to ``REFUSAL_TIMEOUT_SECONDS`` (closing on unread bytes
would reset the connection, and the reset can overtake the refusal). A refused connection
never takes the member down. Any member id of our cluster may connect, not only the peers of
``set_peers``: membership changes reach members at different times, and Raft itself decides
what to do with a message from a stranger.

Stream channel. Each member keeps one long-lived connection to each peer, which it dials and
then only writes to: payloads to that peer travel there, in order. ``send`` never waits: it
encodes the payload into a frame and puts it on the peer's bounded outbox (``False`` when full
or the peer unknown: the caller counts a drop, Raft retries). A sender task per peer dials
(with exponential backoff and jitter from the injected ``random.Random``), then writes the
queued frames, as many as fit in ``write_bytes_max`` in one write, with no cancel scope per
write: a watchdog task per connection ends it when one write has made no progress for
``write_timeout_seconds``. The accepting side reads frames and puts ``(sender id, payload)``
on the inbound channel, every frame that came in one receive without a task step of its own;
it waits when that channel is full (backpressure reaches the sender's socket, then its
outbox, which drops). The accepting side writes nothing after its answer except a refusal
before closing, so the dialing side reads its stream only to notice the close. When a peer
redials, its older inbound connection is closed. While a peer cannot be reached, what is
queued for it is dropped at each failed dial, and ``on_unreachable(member_id)`` is called
(Raft's ``report_unreachable``).

Pipeline channel. ``send_snapshot`` sends a small payload and a sequence of chunks on a
connection of its own, never holding more than one chunk: after the handshake,
``{"snapshot": payload, "chunks": n, "bytes": total}``, then n frames of ``{"chunk": <at most
SNAPSHOT_CHUNK_BYTES_MAX>}`` read lazily from the sender's iterator. The receiver refuses a
total over its ``snapshot_bytes_max`` before reading any chunk, then hands the payload and each
chunk as it arrives to its ``SnapshotSink`` (which checks and stores it, and may refuse), never
past the announced count and total; after the last one it finishes the sink's writer, delivers
the payload as one inbound item and answers ``{"ok": True}``; only then does the sender call
``on_done(True)``. A transfer that fails on the receiving side aborts the writer. Every failure
calls ``on_done(False)``; ``on_done`` is called exactly once per ``send_snapshot``, never from
inside it.

Nothing waits for a slow or dead peer but that peer's own tasks: every dial, handshake, write
and snapshot step has a deadline, and outboxes are per peer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from random import Random
from typing import Final, Protocol

import trio

from net.errors import EndOfFrames, FrameError, HandshakeRefused, MalformedFrame
from net.frames import (
    FRAME_ITEMS_MAX,
    PIPELINE_FRAME_BYTES_MAX,
    RECEIVE_BYTES,
    STREAM_FRAME_BYTES_MAX,
    FrameReader,
    Payload,
    encode_frame,
)
from net.network import ConnectionRefused, Network, split_address

logger = logging.getLogger(__name__)

PROTOCOL_VERSION: Final = 1
"""The handshake's "troika" field; a member refuses any other."""
CHANNEL_STREAM: Final = "stream"
CHANNEL_PIPELINE: Final = "pipeline"
CHANNEL_INFO: Final = "info"
"""A one-shot exchange for a member about to join: who is the cluster?"""
MEMBER_ID_MAX: Final = (1 << 64) - 1
"""Member and cluster ids are unsigned 64-bit, as in etcd."""

HANDSHAKE_FRAME_BYTES_MAX: Final = 1024
"""The largest handshake, answer or refusal frame."""
HANDSHAKE_ITEMS_MAX: Final = 16
PIPELINE_ITEMS_MAX: Final = 8
"""A pipeline chunk frame is ``{"chunk": bytes}``."""
SNAPSHOT_CHUNK_BYTES_MAX: Final = 4 * 1024 * 1024 + 1024
"""The largest snapshot chunk on a pipeline connection (a stored chunk, sealed)."""
SNAPSHOT_CHUNK_FRAME_BYTES_MAX: Final = SNAPSHOT_CHUNK_BYTES_MAX + 64
"""The largest chunk frame body: a chunk and its small envelope."""
REASON_CHARS_MAX: Final = 200
"""A refusal's reason is cut to this many characters."""

OUTBOX_PAYLOADS_MAX: Final = 4096
"""Payloads queued for one peer (etcd's stream buffer holds 4096 messages)."""
OUTBOX_BYTES_MAX: Final = 64 * 1024 * 1024
"""Encoded bytes queued for one peer."""
WRITE_BYTES_MAX: Final = 1024 * 1024
"""Queued frames are joined into one write until it holds this many bytes."""
SNAPSHOT_BYTES_MAX: Final = 512 * 1024 * 1024
"""The largest snapshot (the sum of its chunks) sent or accepted on a pipeline connection."""
SNAPSHOTS_OUTBOUND_MAX: Final = 2
"""Snapshots this member sends at once (each holds one chunk in memory at a time)."""
SNAPSHOTS_INBOUND_MAX: Final = 1
"""Snapshots this member receives at once (each holds one chunk in memory at a time)."""
CONNECTIONS_INBOUND_MAX: Final = 256
"""Accepted peer connections open at once; more are closed unanswered."""

BACKOFF_INITIAL_SECONDS: Final = 0.1
BACKOFF_MAX_SECONDS: Final = 5.0
"""The delay between dials doubles from the initial one up to this cap; each delay is drawn
uniformly from its upper half (jitter)."""
DIAL_TIMEOUT_SECONDS: Final = 5.0
"""Connecting and the handshake answer, together."""
HANDSHAKE_TIMEOUT_SECONDS: Final = 5.0
"""How long an accepted connection may take to send its handshake."""
WRITE_TIMEOUT_SECONDS: Final = 10.0
"""A write (of up to ``WRITE_BYTES_MAX`` and a frame) that takes longer means the connection
is dead or the peer does not read (noticed within twice this: see ``_watch_writes``)."""
PIPELINE_IDLE_TIMEOUT_SECONDS: Final = 30.0
"""The longest wait for one pipeline frame to be written or read."""
SNAPSHOT_ANSWER_TIMEOUT_SECONDS: Final = 60.0
"""How long a sender waits for the receiver to deliver a snapshot and answer."""
REFUSAL_TIMEOUT_SECONDS: Final = 1.0
"""How long writing a refusal may take before the connection is just closed."""


@dataclass(frozen=True, slots=True)
class PeerLimits:
    """Every bound of a PeerTransport; the defaults are the module constants."""

    outbox_payloads_max: int = OUTBOX_PAYLOADS_MAX
    outbox_bytes_max: int = OUTBOX_BYTES_MAX
    frame_bytes_max: int = STREAM_FRAME_BYTES_MAX
    frame_items_max: int = FRAME_ITEMS_MAX
    write_bytes_max: int = WRITE_BYTES_MAX
    snapshot_bytes_max: int = SNAPSHOT_BYTES_MAX
    snapshots_outbound_max: int = SNAPSHOTS_OUTBOUND_MAX
    snapshots_inbound_max: int = SNAPSHOTS_INBOUND_MAX
    connections_inbound_max: int = CONNECTIONS_INBOUND_MAX
    backoff_initial_seconds: float = BACKOFF_INITIAL_SECONDS
    backoff_max_seconds: float = BACKOFF_MAX_SECONDS
    dial_timeout_seconds: float = DIAL_TIMEOUT_SECONDS
    handshake_timeout_seconds: float = HANDSHAKE_TIMEOUT_SECONDS
    write_timeout_seconds: float = WRITE_TIMEOUT_SECONDS
    pipeline_idle_timeout_seconds: float = PIPELINE_IDLE_TIMEOUT_SECONDS
    snapshot_answer_timeout_seconds: float = SNAPSHOT_ANSWER_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        """Refuse limits that cannot work.

        Raises:
            ValueError: a limit is out of range, or two contradict.
        """
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value <= 0:
                raise ValueError(f"PeerLimits.{field.name} must be positive, not {value}")
        if self.frame_bytes_max >= 1 << 32:
            raise ValueError("PeerLimits.frame_bytes_max must fit the 4-byte length prefix")
        if self.outbox_bytes_max < self.frame_bytes_max:
            raise ValueError("PeerLimits.outbox_bytes_max must hold at least one whole frame")
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError("PeerLimits.backoff_max_seconds is below backoff_initial_seconds")


@dataclass(frozen=True, slots=True)
class PeerStats:
    """What a PeerTransport knows of one peer, for metrics and tests."""

    address: str
    reachable: bool | None
    """None until the first dial ends."""
    queued_payloads: int
    queued_bytes: int
    dropped_payloads: int
    """Refused by ``send`` (outbox full) or dropped undelivered after a failed dial."""


class ExponentialBackoff:
    """Delays between retries: doubling from ``initial_seconds`` up to ``max_seconds``.

    Each delay is drawn uniformly from the upper half of the current step, with the injected
    generator, so members that lost a peer together do not redial it in lockstep.
    """

    def __init__(self, random: Random, initial_seconds: float, max_seconds: float) -> None:
        assert 0 < initial_seconds <= max_seconds, (initial_seconds, max_seconds)
        self._random = random
        self._initial_seconds = initial_seconds
        self._max_seconds = max_seconds
        self._step_seconds = initial_seconds

    def next_delay_seconds(self) -> float:
        """The delay before the next retry; the one after will be about twice as long."""
        step = self._step_seconds
        self._step_seconds = min(step * 2, self._max_seconds)
        jitter = self._random.random()  # nondeterminism-ok: the injected, seeded Random
        return step / 2 + jitter * step / 2

    def reset(self) -> None:
        """After a success: the next delay is short again."""
        self._step_seconds = self._initial_seconds


class _Refused(Exception):
    """The accepting side refuses a connection for this reason."""


class SnapshotRefused(Exception):
    """A ``SnapshotSink`` or its writer refuses a snapshot, for this reason."""


class SnapshotWriter(Protocol):
    """Where the chunks of one incoming snapshot go, as they arrive."""

    async def chunk(self, seq: int, data: bytes) -> None:
        """Check and keep chunk ``seq`` (0, 1, ... in order).

        Raises:
            SnapshotRefused: the chunk is bad; the transfer is refused.
        """
        ...

    async def finish(self) -> None:
        """All chunks are in; called before the payload is delivered.

        Raises:
            SnapshotRefused: the snapshot cannot be kept.
        """
        ...

    def abort(self) -> None:
        """The transfer failed after ``SnapshotSink.begin``; drop what was kept."""
        ...


class SnapshotSink(Protocol):
    """The receiving side's store for snapshots (the member's RaftStore, in ``actors``)."""

    def begin(self, sender: int, payload: Payload, chunks: int, size_bytes: int) -> SnapshotWriter:
        """A writer for a snapshot ``sender`` announces with ``payload``.

        Raises:
            SnapshotRefused: it is not wanted (out of date, malformed, ...).
        """
        ...


@dataclass(slots=True)
class _Connection:
    """A dialed connection whose handshake was accepted."""

    stream: trio.abc.Stream
    reader: FrameReader


class _Peer:
    """The sending side's state for one peer."""

    def __init__(self, member_id: int, address: str, outbox_payloads_max: int) -> None:
        self.member_id = member_id
        self.address = address
        self.outbox_send, self.outbox_receive = trio.open_memory_channel[bytes](outbox_payloads_max)
        self.outbox_bytes = 0
        self.dropped_payloads = 0
        self.reachable: bool | None = None
        self.removed = False
        self.scope: trio.CancelScope | None = None
        """The sender task's scope; cancelled when the peer is removed."""
        self.connection_scope: trio.CancelScope | None = None
        """The current stream connection's; cancelled when the peer's address changes."""
        self.snapshot_scopes: dict[int, trio.CancelScope] = {}


_DIAL_ERRORS = (
    ConnectionRefused,
    HandshakeRefused,
    FrameError,
    EndOfFrames,
    trio.BrokenResourceError,
    trio.TooSlowError,
)
_CONNECTION_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


class PeerTransport:
    """Sends payloads to the other members and delivers theirs, as etcd's rafthttp does.

    Serve ``serve_connection`` on this member's peer address (``network.serve``) and run
    ``run`` in the member's nursery.
    """

    def __init__(
        self,
        network: Network,
        member_id: int,
        cluster_id: int,
        inbound: trio.MemorySendChannel[tuple[int, Payload]],
        random: Random,
        *,
        limits: PeerLimits | None = None,
        on_unreachable: Callable[[int], None] | None = None,
        cluster_info: Callable[[], Payload] | None = None,
        snapshot_sink: SnapshotSink | None = None,
    ) -> None:
        """Create a transport with no peers (see ``set_peers``).

        Args:
            network: how to dial peers.
            member_id: this member's id.
            cluster_id: the cluster's id; connections from other clusters are refused.
            inbound: where ``(sender id, payload)`` of every received payload goes.
            random: the generator for backoff jitter.
            limits: every bound; the module constants by default.
            on_unreachable: called with a peer's id when a dial to it or a connection with it
                fails, and when a snapshot to it fails.
            cluster_info: answers an "info" handshake (see ``fetch_cluster_info``) with what a
                joining member needs: the cluster id and the member list.
            snapshot_sink: keeps incoming snapshots' chunks (``set_snapshot_sink`` later is
                fine); without one, snapshots are refused.
        """
        if not 0 < member_id <= MEMBER_ID_MAX:
            raise ValueError(f"member id {member_id} is not an unsigned 64-bit id above zero")
        if not 0 <= cluster_id <= MEMBER_ID_MAX:
            raise ValueError(f"cluster id {cluster_id} is not an unsigned 64-bit id")
        self._network = network
        self._member_id = member_id
        self._cluster_id = cluster_id
        self._inbound = inbound
        self._random = random
        self._limits = limits if limits is not None else PeerLimits()
        self._on_unreachable = on_unreachable
        self._cluster_info = cluster_info
        self._snapshot_sink = snapshot_sink
        self._peers: dict[int, _Peer] = {}
        self._nursery: trio.Nursery | None = None
        self._inbound_streams: dict[int, trio.CancelScope] = {}
        self._connections_inbound = 0
        self._snapshots_inbound = 0
        self._snapshots_outbound = 0
        self._snapshot_numbers = itertools.count()
        self.planted_no_redial = False
        """A planted bug (``actors.bootstrap.PEER_NO_REDIAL``), test only: a sender whose
        connection failed never dials that peer again, so the peer stops hearing from this
        member for good; only the simulator's liveness phase can see it."""
        self.planted_keep_stale_streams = False
        """A planted bug (``actors.bootstrap.PEER_KEEP_STALE_STREAMS``), test only: a new stream
        from a peer does not end the older one, so what the older one still delivers reaches
        Raft after newer messages (reordered across a reconnect)."""

    # -- the sending side ------------------------------------------------------------------

    def set_peers(self, addresses: Mapping[int, str]) -> None:
        """Make the peers exactly these ``{member id: "host:port"}``; this member is skipped.

        New peers get a sender task, removed ones lose theirs (and their queued payloads and
        snapshots in flight), and a peer whose address changed redials.

        Raises:
            ValueError: an address is not ``"host:port"``.
        """
        for address in addresses.values():
            split_address(address)
        for member_id in sorted(self._peers):
            if member_id not in addresses:
                self._remove_peer(self._peers.pop(member_id))
        for member_id, address in sorted(addresses.items()):
            if member_id == self._member_id:
                continue
            peer = self._peers.get(member_id)
            if peer is None:
                peer = _Peer(member_id, address, self._limits.outbox_payloads_max)
                self._peers[member_id] = peer
                if self._nursery is not None:
                    self._nursery.start_soon(self._run_peer, peer)
            elif peer.address != address:
                logger.info("member %x: peer %x moves to %s", self._member_id, member_id, address)
                peer.address = address
                if peer.connection_scope is not None:
                    peer.connection_scope.cancel()

    def send(self, member_id: int, payload: Payload) -> bool:
        """Queue a payload for a peer; never waits.

        Returns:
            True if queued; False if the peer is unknown or its outbox is full (a drop).

        Raises:
            FrameTooLarge: the encoded payload is over ``frame_bytes_max``.
            ValueError: the payload holds a value a peer would refuse.
        """
        peer = self._peers.get(member_id)
        if peer is None:
            return False
        frame = encode_frame(
            payload, self._limits.frame_bytes_max, items_max=self._limits.frame_items_max
        )
        if peer.outbox_bytes + len(frame) > self._limits.outbox_bytes_max:
            peer.dropped_payloads += 1
            return False
        try:
            peer.outbox_send.send_nowait(frame)
        except trio.WouldBlock:
            peer.dropped_payloads += 1
            return False
        peer.outbox_bytes += len(frame)
        return True

    def set_snapshot_sink(self, sink: SnapshotSink) -> None:
        """Where incoming snapshots' chunks go from now on."""
        self._snapshot_sink = sink

    def send_snapshot(
        self,
        member_id: int,
        payload: Payload,
        chunks: Iterator[bytes],
        on_done: Callable[[bool], None],
        *,
        chunk_count: int,
        size_bytes: int,
    ) -> None:
        """Send a small payload and ``chunk_count`` chunks (``size_bytes`` in all, read
        lazily from ``chunks``, one at a time) on a pipeline connection of their own.

        ``on_done(True)`` once the peer has them all, ``on_done(False)`` on any failure
        (unknown peer, too many snapshots in flight, too large, peer down, refused, timed
        out); exactly once, and never before this method has returned.

        Raises:
            RuntimeError: ``run`` is not running.
            ValueError: the payload holds a value a peer would refuse, or the counts are not
                positive.
        """
        if self._nursery is None:
            raise RuntimeError("PeerTransport.send_snapshot needs run() to be running")
        if chunk_count <= 0 or size_bytes < chunk_count:
            raise ValueError(f"a snapshot of {chunk_count} chunks and {size_bytes} bytes")
        header = encode_frame(
            {"snapshot": payload, "chunks": chunk_count, "bytes": size_bytes},
            PIPELINE_FRAME_BYTES_MAX,
            items_max=self._limits.frame_items_max,
        )
        peer = self._peers.get(member_id)
        refusal = None
        if peer is None:
            refusal = "it is not a peer"
        elif self._snapshots_outbound >= self._limits.snapshots_outbound_max:
            refusal = f"{self._snapshots_outbound} snapshots are already in flight"
        elif size_bytes > self._limits.snapshot_bytes_max:
            refusal = f"{size_bytes} bytes is over the limit of {self._limits.snapshot_bytes_max}"
        if peer is None or refusal is not None:
            logger.warning(
                "member %x: snapshot to %x not sent: %s", self._member_id, member_id, refusal
            )
            self._nursery.start_soon(_call_later, on_done, False)
            return
        self._snapshots_outbound += 1
        transfer = _Transfer(header, chunks, chunk_count, size_bytes)
        self._nursery.start_soon(self._run_snapshot, peer, transfer, on_done)

    def stats(self, member_id: int) -> PeerStats | None:
        """What is known of a peer, or None if it is not one."""
        peer = self._peers.get(member_id)
        if peer is None:
            return None
        return PeerStats(
            address=peer.address,
            reachable=peer.reachable,
            queued_payloads=peer.outbox_send.statistics().current_buffer_used,
            queued_bytes=peer.outbox_bytes,
            dropped_payloads=peer.dropped_payloads,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the peers' sender tasks and the snapshot transfers until cancelled."""
        if self._nursery is not None:
            raise RuntimeError("PeerTransport.run is already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for member_id in sorted(self._peers):
                    nursery.start_soon(self._run_peer, self._peers[member_id])
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def _remove_peer(self, peer: _Peer) -> None:
        logger.info("member %x: peer %x removed", self._member_id, peer.member_id)
        peer.removed = True
        if peer.scope is not None:
            peer.scope.cancel()
        for scope in peer.snapshot_scopes.values():
            scope.cancel()

    async def _run_peer(self, peer: _Peer) -> None:
        """Dial the peer, write its outbox, and redial after a failure, until it is removed."""
        peer.scope = trio.CancelScope()
        if peer.removed:
            peer.scope.cancel()
        backoff = ExponentialBackoff(
            self._random, self._limits.backoff_initial_seconds, self._limits.backoff_max_seconds
        )
        with peer.scope:
            while True:
                address = peer.address
                try:
                    connection = await self._dial(peer.member_id, address, CHANNEL_STREAM)
                except _DIAL_ERRORS as error:
                    self._mark_unreachable(peer, f"cannot connect to {address}: {_describe(error)}")
                    self._drop_outbox(peer)
                else:
                    backoff.reset()
                    self._mark_reachable(peer, address)
                    reason = await self._pump(peer, address, connection)
                    if reason is None:
                        continue  # the address changed: redial at once
                    self._mark_unreachable(peer, reason)
                    if self.planted_no_redial:
                        await trio.sleep_forever()
                await trio.sleep(backoff.next_delay_seconds())

    async def _dial(self, member_id: int, address: str, channel: str) -> _Connection:
        """Connect and shake hands.

        Raises:
            ConnectionRefused, HandshakeRefused, FrameError, EndOfFrames,
            trio.BrokenResourceError, trio.TooSlowError: the dial failed.
        """
        hello = {
            "troika": PROTOCOL_VERSION,
            "cluster": self._cluster_id,
            "from": self._member_id,
            "to": member_id,
            "channel": channel,
        }
        with trio.fail_after(self._limits.dial_timeout_seconds):
            stream = await self._network.connect(address)
            try:
                await stream.send_all(encode_frame(hello, HANDSHAKE_FRAME_BYTES_MAX))
                reader = FrameReader(
                    stream, frame_bytes_max=HANDSHAKE_FRAME_BYTES_MAX, items_max=HANDSHAKE_ITEMS_MAX
                )
                _check_answer(await reader.receive())
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        return _Connection(stream, reader)

    async def _pump(self, peer: _Peer, address: str, connection: _Connection) -> str | None:
        """Write the outbox until the connection fails (returns why) or the peer's address
        changes (returns None)."""
        reasons: list[str] = []
        scope = trio.CancelScope()
        if peer.address != address:  # it changed while we were dialing
            scope.cancel()
        peer.connection_scope = scope
        try:
            with scope:
                progress = _WriteProgress()
                async with trio.open_nursery() as nursery:

                    async def write() -> None:
                        reasons.append(await self._write_outbox(peer, connection.stream, progress))
                        nursery.cancel_scope.cancel()

                    async def watch_writes() -> None:
                        timeout_seconds = self._limits.write_timeout_seconds
                        reasons.append(await _watch_writes(progress, timeout_seconds))
                        nursery.cancel_scope.cancel()

                    async def watch() -> None:
                        reasons.append(await _watch_for_close(connection.reader))
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(write)
                    nursery.start_soon(watch)
                    nursery.start_soon(watch_writes)
        finally:
            peer.connection_scope = None
            await trio.aclose_forcefully(connection.stream)
        return reasons[0] if reasons else None

    async def _write_outbox(
        self, peer: _Peer, stream: trio.abc.SendStream, progress: _WriteProgress
    ) -> str:
        """Write queued frames, joined into writes of up to ``write_bytes_max``; returns why
        the connection failed.

        A write has no deadline of its own (a cancel scope per write was the largest cost of
        the peer path); ``_watch_writes`` ends the connection when one stops making progress.
        """
        try:
            while True:
                frame = await peer.outbox_receive.receive()
                batch = [frame]
                batch_bytes = len(frame)
                while batch_bytes < self._limits.write_bytes_max:
                    try:
                        frame = peer.outbox_receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    batch.append(frame)
                    batch_bytes += len(frame)
                peer.outbox_bytes -= batch_bytes
                progress.writing = True
                await stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
                progress.writing = False
                progress.writes_done += 1
        except _CONNECTION_ERRORS as error:
            return f"the connection broke: {_describe(error)}"

    def _drop_outbox(self, peer: _Peer) -> None:
        while True:
            try:
                frame = peer.outbox_receive.receive_nowait()
            except trio.WouldBlock:
                return
            peer.outbox_bytes -= len(frame)
            peer.dropped_payloads += 1

    def _mark_reachable(self, peer: _Peer, address: str) -> None:
        if peer.reachable is not True:
            logger.info(
                "member %x: peer %x connected at %s", self._member_id, peer.member_id, address
            )
        peer.reachable = True

    def _mark_unreachable(self, peer: _Peer, reason: str) -> None:
        if peer.reachable is not False:
            logger.warning(
                "member %x: peer %x unreachable: %s", self._member_id, peer.member_id, reason
            )
        else:
            logger.debug(
                "member %x: peer %x still unreachable: %s", self._member_id, peer.member_id, reason
            )
        peer.reachable = False
        if self._on_unreachable is not None:
            self._on_unreachable(peer.member_id)

    # -- snapshots out ---------------------------------------------------------------------

    async def _run_snapshot(
        self, peer: _Peer, transfer: _Transfer, on_done: Callable[[bool], None]
    ) -> None:
        number = next(self._snapshot_numbers)
        scope = trio.CancelScope()
        peer.snapshot_scopes[number] = scope
        if peer.removed:
            scope.cancel()
        delivered = False
        try:
            with scope:
                delivered = await self._transfer_snapshot(peer, transfer)
        finally:
            del peer.snapshot_scopes[number]
            self._snapshots_outbound -= 1
            if not delivered and self._on_unreachable is not None:
                self._on_unreachable(peer.member_id)
            on_done(delivered)

    async def _transfer_snapshot(self, peer: _Peer, transfer: _Transfer) -> bool:
        address = peer.address
        try:
            connection = await self._dial(peer.member_id, address, CHANNEL_PIPELINE)
        except _DIAL_ERRORS as error:
            self._snapshot_failed(peer, f"cannot connect to {address}: {_describe(error)}")
            return False
        try:
            failure = await self._stream_snapshot(connection, transfer)
        finally:
            await trio.aclose_forcefully(connection.stream)
        if failure is not None:
            self._snapshot_failed(peer, failure)
            return False
        logger.info(
            "member %x: snapshot of %d bytes delivered to %x",
            self._member_id,
            transfer.size_bytes,
            peer.member_id,
        )
        return True

    async def _stream_snapshot(self, connection: _Connection, transfer: _Transfer) -> str | None:
        """Write the size and the chunks while listening for the answer (a receiver can
        refuse early); returns why the transfer failed, or None once the receiver has it."""
        answer_scope = trio.CancelScope()
        write_failure: str | None = None
        written = False

        async def write() -> None:
            nonlocal write_failure, written
            try:
                await self._write_snapshot(connection.stream, transfer)
                written = True
                wait_seconds = self._limits.snapshot_answer_timeout_seconds
            except trio.TooSlowError:
                write_failure = "a write made no progress in time"
                wait_seconds = REFUSAL_TIMEOUT_SECONDS
            except _CONNECTION_ERRORS as error:
                write_failure = f"the connection broke: {_describe(error)}"
                wait_seconds = REFUSAL_TIMEOUT_SECONDS
            answer_scope.deadline = trio.current_time() + wait_seconds

        answer_failure: str | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            with answer_scope:
                try:
                    _check_answer(await connection.reader.receive())
                except HandshakeRefused as error:
                    answer_failure = f"refused: {error.reason}"
                except (FrameError, EndOfFrames, *_CONNECTION_ERRORS) as error:
                    answer_failure = _describe(error)
            nursery.cancel_scope.cancel()
        if answer_scope.cancelled_caught:
            return write_failure or "no answer in time"
        if answer_failure is not None:
            is_refusal = answer_failure.startswith("refused")
            return answer_failure if is_refusal or write_failure is None else write_failure
        if not written:
            return "the receiver answered before it had the whole snapshot"
        return None

    async def _write_snapshot(self, stream: trio.abc.SendStream, transfer: _Transfer) -> None:
        """The header, then the chunks as the iterator yields them, each write with a deadline.

        Raises:
            trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError.
            ValueError: the iterator yields another count or size than announced (a bug).
        """
        idle_seconds = self._limits.pipeline_idle_timeout_seconds
        with trio.fail_after(idle_seconds):
            await stream.send_all(transfer.header)
        count = size_bytes = 0
        for chunk in transfer.chunks:
            count += 1
            size_bytes += len(chunk)
            if count > transfer.chunk_count or size_bytes > transfer.size_bytes:
                raise ValueError("the snapshot's chunks go past what was announced")
            frame = encode_frame({"chunk": chunk}, SNAPSHOT_CHUNK_FRAME_BYTES_MAX)
            with trio.fail_after(idle_seconds):
                await stream.send_all(frame)
            del frame, chunk
        if (count, size_bytes) != (transfer.chunk_count, transfer.size_bytes):
            raise ValueError("the snapshot's chunks fall short of what was announced")

    def _snapshot_failed(self, peer: _Peer, reason: str) -> None:
        logger.warning(
            "member %x: snapshot to %x failed: %s", self._member_id, peer.member_id, reason
        )

    # -- the accepting side ----------------------------------------------------------------

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        """Serve one accepted connection (stream or pipeline); pass this to ``network.serve``.

        Never raises for anything the peer did: bad input is refused, logged and the stream
        closed.
        """
        if self._connections_inbound >= self._limits.connections_inbound_max:
            logger.warning(
                "member %x: refused a connection: %d connections are open",
                self._member_id,
                self._connections_inbound,
            )
            await trio.aclose_forcefully(stream)
            return
        self._connections_inbound += 1
        try:
            await self._serve(stream)
        finally:
            self._connections_inbound -= 1
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.abc.Stream) -> None:
        reader = FrameReader(
            stream, frame_bytes_max=HANDSHAKE_FRAME_BYTES_MAX, items_max=HANDSHAKE_ITEMS_MAX
        )
        try:
            with trio.fail_after(self._limits.handshake_timeout_seconds):
                hello = await reader.receive()
            if hello == {"troika": PROTOCOL_VERSION, "channel": CHANNEL_INFO}:
                await self._answer_info(stream)
                return
            sender, channel = self._check_hello(hello)
            if (
                channel == CHANNEL_PIPELINE
                and self._snapshots_inbound >= self._limits.snapshots_inbound_max
            ):
                raise _Refused(f"{self._snapshots_inbound} snapshots are already coming in")
        except trio.TooSlowError:
            await self._refuse(stream, None, "no handshake in time")
            return
        except (FrameError, _Refused) as error:
            await self._refuse(stream, None, _describe(error))
            return
        except (EndOfFrames, *_CONNECTION_ERRORS) as error:
            logger.debug(
                "member %x: a connection closed before its handshake: %s",
                self._member_id,
                _describe(error),
            )
            return
        try:
            with trio.fail_after(REFUSAL_TIMEOUT_SECONDS):
                await stream.send_all(encode_frame({"ok": True}, HANDSHAKE_FRAME_BYTES_MAX))
        except (trio.TooSlowError, *_CONNECTION_ERRORS):
            return
        if channel == CHANNEL_STREAM:
            await self._receive_stream(sender, stream, reader)
        else:
            await self._receive_snapshot(sender, stream, reader)

    async def _answer_info(self, stream: trio.abc.Stream) -> None:
        """Tell a member about to join who we are (the cluster id and the members)."""
        if self._cluster_info is None:
            raise _Refused("this member does not answer info requests")
        answer = {"ok": True, "cluster": self._cluster_id, "info": self._cluster_info()}
        with trio.fail_after(REFUSAL_TIMEOUT_SECONDS):
            await stream.send_all(encode_frame(answer, self._limits.frame_bytes_max))

    def _check_hello(self, hello: Payload) -> tuple[int, str]:
        """The sender and channel of a handshake meant for us.

        Raises:
            _Refused: why not.
        """
        version = hello.get("troika")
        if type(version) is not int:
            raise _Refused("not a troika handshake")
        if version != PROTOCOL_VERSION:
            raise _Refused(f"protocol version {version} is not ours ({PROTOCOL_VERSION})")
        if sorted(hello) != ["channel", "cluster", "from", "to", "troika"]:
            raise _Refused("a handshake with missing or unknown fields")
        cluster, sender, recipient = hello["cluster"], hello["from"], hello["to"]
        channel = hello["channel"]
        if not all(type(value) is int for value in (cluster, sender, recipient)):
            raise _Refused("a handshake whose ids are not integers")
        if cluster != self._cluster_id:
            raise _Refused(f"cluster {cluster:x} is not ours ({self._cluster_id:x})")
        if recipient != self._member_id:
            raise _Refused(f"addressed to member {recipient:x}, not to us")
        if not 0 < sender <= MEMBER_ID_MAX or sender == self._member_id:
            raise _Refused(f"member id {sender:x} cannot be a peer")
        if channel not in (CHANNEL_STREAM, CHANNEL_PIPELINE):
            raise _Refused("an unknown channel")
        return sender, channel

    async def _refuse(self, stream: trio.abc.Stream, sender: int | None, reason: str) -> None:
        """Log why, tell the peer (best effort, within ``REFUSAL_TIMEOUT_SECONDS``), and let the
        caller close."""
        reason = reason[:REASON_CHARS_MAX]
        source = "" if sender is None else f" from {sender:x}"
        logger.warning("member %x: refused a connection%s: %s", self._member_id, source, reason)
        refusal = encode_frame({"error": reason}, HANDSHAKE_FRAME_BYTES_MAX)
        with trio.move_on_after(REFUSAL_TIMEOUT_SECONDS), contextlib.suppress(*_CONNECTION_ERRORS):
            await stream.send_all(refusal)
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            # Drop what the peer is still sending until it has read the refusal and closed:
            # closing with unread bytes would reset the connection, and the reset can
            # overtake the refusal.
            while await stream.receive_some(RECEIVE_BYTES):
                pass

    async def _receive_stream(
        self, sender: int, stream: trio.abc.Stream, reader: FrameReader
    ) -> None:
        """Deliver the sender's payloads until it closes; a newer connection replaces this."""
        reader.frame_bytes_max = self._limits.frame_bytes_max
        reader.items_max = self._limits.frame_items_max
        scope = trio.CancelScope()
        older = self._inbound_streams.get(sender)
        if older is not None and not self.planted_keep_stale_streams:
            older.cancel()
        self._inbound_streams[sender] = scope
        try:
            with scope:
                while True:
                    payload: Payload | None = await reader.receive()
                    while payload is not None:
                        await self._deliver(sender, payload)
                        payload = reader.receive_buffered()
        except FrameError as error:
            await self._refuse(stream, sender, _describe(error))
        except (EndOfFrames, *_CONNECTION_ERRORS) as error:
            logger.debug(
                "member %x: stream from %x closed: %s", self._member_id, sender, _describe(error)
            )
        finally:
            if self._inbound_streams.get(sender) is scope:
                del self._inbound_streams[sender]

    async def _deliver(self, sender: int, payload: Payload) -> None:
        """Put a payload on the inbound channel, waiting only while it is full: a frame
        delivered costs no task step of its own (the reader's receive is the checkpoint)."""
        try:
            self._inbound.send_nowait((sender, payload))
        except trio.WouldBlock:
            await self._inbound.send((sender, payload))

    # -- snapshots in ----------------------------------------------------------------------

    async def _receive_snapshot(
        self, sender: int, stream: trio.abc.Stream, reader: FrameReader
    ) -> None:
        self._snapshots_inbound += 1
        writer: SnapshotWriter | None = None
        finished = False
        try:
            payload, chunks, size_bytes = await self._receive_snapshot_header(reader)
            if self._snapshot_sink is None:
                raise _Refused("this member takes no snapshots")
            writer = self._snapshot_sink.begin(sender, payload, chunks, size_bytes)
            await self._receive_chunks(reader, writer, chunks, size_bytes)
            await writer.finish()
            finished = True
            with trio.fail_after(self._limits.snapshot_answer_timeout_seconds):
                await self._inbound.send((sender, payload))
            with trio.fail_after(REFUSAL_TIMEOUT_SECONDS):
                await stream.send_all(encode_frame({"ok": True}, HANDSHAKE_FRAME_BYTES_MAX))
        except trio.TooSlowError:
            await self._refuse(stream, sender, "snapshot timed out")
        except (FrameError, _Refused, SnapshotRefused) as error:
            await self._refuse(stream, sender, _describe(error))
        except (EndOfFrames, *_CONNECTION_ERRORS) as error:
            logger.warning(
                "member %x: snapshot from %x cut off: %s", self._member_id, sender, _describe(error)
            )
        else:
            logger.info("member %x: snapshot from %x received", self._member_id, sender)
        finally:
            self._snapshots_inbound -= 1
            if writer is not None and not finished:
                writer.abort()

    async def _receive_snapshot_header(self, reader: FrameReader) -> tuple[Payload, int, int]:
        """The payload, chunk count and size a pipeline announces.

        Raises:
            _Refused, FrameError, EndOfFrames, trio.TooSlowError: as they come.
        """
        reader.frame_bytes_max = PIPELINE_FRAME_BYTES_MAX
        reader.items_max = self._limits.frame_items_max
        with trio.fail_after(self._limits.pipeline_idle_timeout_seconds):
            header = await reader.receive()
        payload, chunks, total = header.get("snapshot"), header.get("chunks"), header.get("bytes")
        if (
            sorted(header) != ["bytes", "chunks", "snapshot"]
            or not isinstance(payload, dict)
            or type(chunks) is not int
            or type(total) is not int
            or not 0 < chunks <= total
        ):
            raise MalformedFrame("not a snapshot header")
        limit_bytes = self._limits.snapshot_bytes_max
        if total > limit_bytes:
            raise _Refused(f"a snapshot of {total} bytes is over the limit of {limit_bytes}")
        return payload, chunks, total

    async def _receive_chunks(
        self, reader: FrameReader, writer: SnapshotWriter, chunks: int, total: int
    ) -> None:
        """Hand each chunk to the writer as it arrives, one in memory at a time.

        Raises:
            SnapshotRefused, FrameError, EndOfFrames, trio.TooSlowError: as they come.
        """
        reader.frame_bytes_max = SNAPSHOT_CHUNK_FRAME_BYTES_MAX
        reader.items_max = PIPELINE_ITEMS_MAX
        idle_seconds = self._limits.pipeline_idle_timeout_seconds
        received = 0
        for seq in range(chunks):
            with trio.fail_after(idle_seconds):
                frame = await reader.receive()
            data = frame.get("chunk")
            if sorted(frame) != ["chunk"] or type(data) is not bytes or not data:
                raise MalformedFrame("not a snapshot chunk")
            received += len(data)
            if len(data) > SNAPSHOT_CHUNK_BYTES_MAX or received > total:
                raise MalformedFrame("a snapshot chunk goes past the announced size")
            await writer.chunk(seq, data)
            del frame, data
        if received != total:
            raise MalformedFrame("the snapshot's chunks fall short of the announced size")


@dataclass(frozen=True, slots=True)
class _Transfer:
    """One outgoing snapshot: its encoded header frame and its chunks, read lazily."""

    header: bytes
    chunks: Iterator[bytes]
    chunk_count: int
    size_bytes: int


async def fetch_cluster_info(
    network: Network, address: str, timeout_seconds: float = HANDSHAKE_TIMEOUT_SECONDS
) -> tuple[int, Payload]:
    """Ask the member at ``address`` for the cluster id and its member list.

    A member that is about to join a cluster knows its peers' addresses but not the
    cluster id the handshake needs; this one exchange tells it (as etcd's new members
    ask a peer's ``/members``).

    Raises:
        HandshakeRefused: the member refused or answered nonsense.
        ConnectionRefused: nothing listens there.
        trio.TooSlowError: no answer in time.
    """
    with trio.fail_after(timeout_seconds):
        stream = await network.connect(address)
        async with stream:
            hello = {"troika": PROTOCOL_VERSION, "channel": CHANNEL_INFO}
            await stream.send_all(encode_frame(hello, HANDSHAKE_FRAME_BYTES_MAX))
            answer = await FrameReader(stream, frame_bytes_max=STREAM_FRAME_BYTES_MAX).receive()
    if answer.get("ok") is not True:
        _check_answer(answer)
    cluster, info = answer.get("cluster"), answer.get("info")
    if type(cluster) is not int or not isinstance(info, dict):
        raise HandshakeRefused("the info answer has no cluster id or no info")
    return cluster, info


def _check_answer(answer: Payload) -> None:
    """Accept ``{"ok": True}``.

    Raises:
        HandshakeRefused: the answer is a refusal.
        MalformedFrame: it is neither.
    """
    if answer == {"ok": True}:
        return
    reason = answer.get("error")
    if sorted(answer) == ["error"] and type(reason) is str:
        raise HandshakeRefused(reason[:REASON_CHARS_MAX])
    raise MalformedFrame("an answer that is neither ok nor an error")


async def _watch_for_close(reader: FrameReader) -> str:
    """Wait for the accepting side to close (or refuse); returns why it ended."""
    try:
        answer = await reader.receive()
        _check_answer(answer)
    except HandshakeRefused as error:
        return f"the peer refused: {error.reason}"
    except EndOfFrames:
        return "the peer closed the connection"
    except FrameError as error:
        return f"the peer sent a bad frame: {_describe(error)}"
    except _CONNECTION_ERRORS as error:
        return f"the connection broke: {_describe(error)}"
    return "the peer sent an unexpected frame"


@dataclass(slots=True)
class _WriteProgress:
    """What a stream connection's writer is doing, for ``_watch_writes``."""

    writing: bool = False
    writes_done: int = 0


async def _watch_writes(progress: _WriteProgress, timeout_seconds: float) -> str:
    """Return once one write has been in progress through a whole ``timeout_seconds``.

    Checks every ``timeout_seconds``: a write seen in progress at two checks in a row, with
    no write finished between them, took at least that long (and is caught within twice
    it). One timer per connection and period instead of a cancel scope per write.
    """
    stuck_after: int | None = None
    while True:
        await trio.sleep(timeout_seconds)
        if progress.writing and progress.writes_done == stuck_after:
            return f"a write took longer than {timeout_seconds} s"
        stuck_after = progress.writes_done if progress.writing else None


async def _call_later(on_done: Callable[[bool], None], delivered: bool) -> None:
    on_done(delivered)


def _describe(error: BaseException) -> str:
    """An error as a log phrase: its message, or its type when it has none."""
    text = str(error)
    return text if text else type(error).__name__
