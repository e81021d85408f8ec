"""The Trio shell around one ``h2`` connection, shared by the server and the client.

Theory of operation
-------------------

``h2`` is a protocol engine without I/O: bytes in, events out, and frames to send buffered
inside it. :class:`H2Shell` owns the stream and the engine. Whoever changes the engine (the
reader handling events, a call sending a message) calls :meth:`H2Shell.pull`, which moves the
engine's output to the *outbox* and wakes the writer task. The writer sends the whole outbox in
one ``send_all``; what piles up meanwhile goes in the next one, so frames from many calls and
events share TCP writes. The outbox is bounded: a sender waits while it (and the write in
flight) holds ``outbox_bytes_max``, and the reader stops reading while it is full, so a peer
that does not read stops us, it does not grow us. A write not taken in ``send_timeout_s``
ends the connection.

Receiving, per stream, an :class:`Inbound` turns DATA into messages. Bytes are acknowledged
(WINDOW_UPDATE, batched by ``h2``) while the stream's messages not yet taken by its reader
come to less than ``stream_buffer_bytes_max`` and everything the connection holds (those and
partial messages, each at most one message long) to less than ``connection_buffer_bytes_max``;
past that the acknowledgement waits until a message is taken, so the peer's windows close and
memory stays bounded by the buffers plus the windows we advertise.
Sending respects the peer's windows: a sender waits for WINDOW_UPDATE or SETTINGS.

A streaming call's messages may be *queued* (:meth:`H2Shell.queue_message`) instead of sent:
they gather per stream, and the writer turns each stream's queue into as few DATA frames as
the windows allow just before it writes, so a watch stream with many responses ready pays
``h2`` once for all of them, not once a response (at 1,000 watchers that was the largest
part of delivering an event). A queue past ``QUEUED_STREAM_BYTES_MAX`` is sent by its
caller at once, waiting for the windows as ``send_message`` does; ``flush`` sends a stream's
queue before its trailers.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque

import h2.connection
import h2.events
import h2.exceptions
import trio
import trio.lowlevel

from net.grpc.framing import MessageDecoder, encode_message
from net.grpc.limits import GrpcLimits
from net.v3.errors import RpcError, StatusCode

logger = logging.getLogger(__name__)

QUEUED_STREAM_BYTES_MAX = 16384
"""Queued message bytes of one stream past which its sender sends them itself (one DATA
frame of the default size)."""


class StreamClosed(Exception):
    """The HTTP/2 stream is closed (reset by the peer, or ended) and can carry nothing more."""


class Inbound:
    """What one stream received: whole messages, the end, or a failure."""

    def __init__(self, stream_id: int, message_bytes_max: int, encoding: str = "") -> None:
        self.stream_id = stream_id
        self.decoder = MessageDecoder(message_bytes_max, encoding)
        self.messages: deque[bytes] = deque()
        self.queued_bytes = 0
        self.unacknowledged_bytes = 0
        self.ended = False
        self.reset = False
        self.failure: RpcError | None = None
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.lot = trio.lowlevel.ParkingLot()

    @property
    def held_bytes(self) -> int:
        return self.queued_bytes + self.decoder.buffered_bytes


class H2Shell:
    """One HTTP/2 connection's I/O: the outbox and its writer, flow control both ways.

    Args:
        stream: the byte stream.
        engine: the ``h2`` connection (server or client side).
        limits: the bounds.
    """

    def __init__(
        self, stream: trio.abc.Stream, engine: h2.connection.H2Connection, limits: GrpcLimits
    ) -> None:
        self.stream = stream
        self.engine = engine
        self.limits = limits
        self.inbound: dict[int, Inbound] = {}
        self.broken = False
        self._outbox = bytearray()
        self._in_flight_bytes = 0
        self._outbox_lot = trio.lowlevel.ParkingLot()
        self._drained_lot = trio.lowlevel.ParkingLot()
        self._window_lot = trio.lowlevel.ParkingLot()
        self._held_bytes = 0
        self._withheld: dict[int, Inbound] = {}
        """Streams whose acknowledgement waits for the connection to hold less."""
        self._gone_scope: trio.CancelScope | None = None
        self._queued: dict[int, bytearray] = {}
        """Per stream, encoded messages not yet given to ``h2`` (``queue_message``)."""
        self._queued_bytes = 0
        self._queue_changed = False
        """A stream's queue began, or a window opened: the writer looks at the queues."""

    # -- sending ---------------------------------------------------------------------------

    def pull(self) -> None:
        """Move what the engine has to send into the outbox and wake the writer."""
        data = self.engine.data_to_send()
        if data:
            self._outbox += data
            self._outbox_lot.unpark_all()

    @property
    def unsent_bytes(self) -> int:
        return len(self._outbox) + self._in_flight_bytes + self._queued_bytes

    async def wait_for_outbox_room(self) -> None:
        """Return once the outbox holds less than its bound."""
        while self.unsent_bytes >= self.limits.outbox_bytes_max:
            await self._drained_lot.park()

    async def run_writer(self, gone_scope: trio.CancelScope) -> None:
        """Send the outbox as it fills; cancel ``gone_scope`` when the peer stops taking it."""
        self._gone_scope = gone_scope
        while True:
            while not self._outbox and not self._queue_changed:
                await self._outbox_lot.park()
            if self._queue_changed:
                self._queue_changed = False
                self.send_queued()
                if not self._outbox:
                    continue  # what is queued waits for a window
            if not await self._write_outbox():
                self.broken = True
                gone_scope.cancel()
                return

    async def _write_outbox(self) -> bool:
        data = bytes(self._outbox)
        self._outbox.clear()
        self._in_flight_bytes = len(data)
        try:
            with trio.move_on_after(self.limits.send_timeout_s):
                await self.stream.send_all(data)
                return True
            logger.info("peer did not take %d bytes in time", len(data))
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        finally:
            self._in_flight_bytes = 0
            self._drained_lot.unpark_all()

    async def flush_last(self) -> None:
        """Send what is left (a GOAWAY), briefly and even while cancelled; never raises."""
        self.pull()
        if not self._outbox or self.broken:
            return
        data = bytes(self._outbox)
        self._outbox.clear()
        with trio.CancelScope(shield=True), trio.move_on_after(self.limits.close_timeout_s):
            gone = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)
            with contextlib.suppress(*gone):
                await self.stream.send_all(data)

    async def send_message(self, stream_id: int, payload: bytes) -> None:
        """Send one message on a stream, as the peer's windows allow.

        Raises:
            StreamClosed: the stream was reset or closed before all of it was sent.
        """
        await self._send_data(stream_id, memoryview(encode_message(payload)))

    async def queue_message(self, stream_id: int, payload: bytes) -> None:
        """Queue one message on a stream for the writer (see the module docstring); past
        the bound, send the stream's queue now.

        Raises:
            StreamClosed: the stream is closed (found when the queue is sent here).
        """
        if self.broken:
            raise StreamClosed("connection closed")
        queued = self._queued.get(stream_id)
        if queued is None:
            queued = self._queued[stream_id] = bytearray()
            self._queue_changed = True
            self._outbox_lot.unpark_all()
        message = encode_message(payload)
        queued += message
        self._queued_bytes += len(message)
        if len(queued) >= QUEUED_STREAM_BYTES_MAX:
            await self.flush(stream_id)
        else:
            await self.wait_for_outbox_room()

    async def flush(self, stream_id: int) -> None:
        """Send what is queued on the stream, as the peer's windows allow.

        Raises:
            StreamClosed: the stream was reset or closed before all of it was sent.
        """
        queued = self._drop_queue(stream_id)
        if queued:
            await self._send_data(stream_id, memoryview(queued))

    def send_queued(self) -> None:
        """Give every stream's queue to ``h2`` as far as the windows allow, without waiting;
        what a window holds back stays queued. A closed stream's queue is dropped."""
        engine = self.engine
        for stream_id, queued in list(self._queued.items()):
            before = len(queued)
            try:
                while queued:
                    window = min(
                        engine.local_flow_control_window(stream_id),
                        engine.max_outbound_frame_size,
                    )
                    if window <= 0:
                        break
                    engine.send_data(stream_id, bytes(queued[:window]))
                    del queued[:window]
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                queued.clear()
            self._queued_bytes -= before - len(queued)
            if not queued:
                del self._queued[stream_id]
        self.pull()

    def _drop_queue(self, stream_id: int) -> bytearray | None:
        queued = self._queued.pop(stream_id, None)
        if queued is not None:
            self._queued_bytes -= len(queued)
            self._drained_lot.unpark_all()
        return queued

    async def _send_data(self, stream_id: int, data: memoryview) -> None:
        while data:
            try:
                window = min(
                    self.engine.local_flow_control_window(stream_id),
                    self.engine.max_outbound_frame_size,
                )
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as error:
                raise StreamClosed(f"stream {stream_id} closed") from error
            if self.broken:
                raise StreamClosed("connection closed")
            if window <= 0:
                await self._window_lot.park()
                continue
            chunk, data = data[:window], data[window:]
            try:
                self.engine.send_data(stream_id, bytes(chunk))
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as error:
                raise StreamClosed(f"stream {stream_id} closed") from error
            self.pull()
            await self.wait_for_outbox_room()

    def windows_changed(self) -> None:
        """A WINDOW_UPDATE, a SETTINGS change or a closed stream: senders look again."""
        self._window_lot.unpark_all()
        if self._queued:
            self._queue_changed = True
            self._outbox_lot.unpark_all()

    # -- receiving -------------------------------------------------------------------------

    async def receive(self) -> bytes | None:
        """The next bytes from the peer (after waiting for outbox room); None at the end."""
        await self.wait_for_outbox_room()
        try:
            data = await self.stream.receive_some(self.limits.receive_bytes_max)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        return bytes(data) if data else None

    def on_data(self, event: h2.events.DataReceived) -> None:
        """DATA for a stream: into its messages, acknowledged within the bounds."""
        assert event.stream_id is not None
        length = event.flow_controlled_length or 0
        inbound = self.inbound.get(event.stream_id)
        if inbound is None or inbound.failure is not None or inbound.reset:
            self._acknowledge(event.stream_id, length)
            return
        before = inbound.held_bytes
        try:
            messages = inbound.decoder.feed(event.data or b"")
        except RpcError as error:
            inbound.failure = error
            self._held_bytes -= before
            inbound.queued_bytes = 0
            inbound.messages.clear()
            inbound.decoder.clear()
            self._acknowledge(event.stream_id, length + inbound.unacknowledged_bytes)
            inbound.unacknowledged_bytes = 0
            inbound.lot.unpark_all()
            return
        for message in messages:
            inbound.messages.append(message)
            inbound.queued_bytes += len(message)
        self._held_bytes += inbound.held_bytes - before
        inbound.unacknowledged_bytes += length
        self._release(inbound)
        if messages:
            inbound.lot.unpark_all()

    def on_end(self, stream_id: int) -> None:
        inbound = self.inbound.get(stream_id)
        if inbound is not None:
            inbound.ended = True
            inbound.lot.unpark_all()

    def on_reset(self, stream_id: int) -> None:
        inbound = self.inbound.get(stream_id)
        if inbound is not None:
            inbound.reset = True
            inbound.lot.unpark_all()
        self.windows_changed()

    async def next_message(self, inbound: Inbound) -> bytes | None:
        """The stream's next whole message; None when the peer ended the stream.

        Raises:
            RpcError: the stream's input failed (too large, compressed, truncated).
            StreamClosed: the peer reset the stream.
        """
        while not inbound.messages:
            if inbound.failure is not None:
                raise inbound.failure
            if inbound.ended:
                if inbound.decoder.in_message:
                    raise RpcError(StatusCode.INTERNAL, "grpc: stream ended inside a message")
                return None
            if inbound.reset:
                raise StreamClosed(f"stream {inbound.stream_id} reset")
            await inbound.lot.park()
        message = inbound.messages.popleft()
        inbound.queued_bytes -= len(message)
        self._held_bytes -= len(message)
        self._release(inbound)
        if self._withheld and self._held_bytes < self.limits.connection_buffer_bytes_max:
            withheld = list(self._withheld.values())
            self._withheld.clear()
            for other in withheld:
                self._release(other)
        return message

    def forget(self, inbound: Inbound) -> None:
        """The stream is done: drop what it holds and give its window back."""
        self._withheld.pop(inbound.stream_id, None)
        self._drop_queue(inbound.stream_id)
        if self.inbound.pop(inbound.stream_id, None) is None:
            return
        self._held_bytes -= inbound.held_bytes
        inbound.messages.clear()
        inbound.queued_bytes = 0
        inbound.decoder.clear()
        if inbound.unacknowledged_bytes:
            self._acknowledge(inbound.stream_id, inbound.unacknowledged_bytes)
            inbound.unacknowledged_bytes = 0

    def _release(self, inbound: Inbound) -> None:
        if not inbound.unacknowledged_bytes:
            return
        if inbound.queued_bytes >= self.limits.stream_buffer_bytes_max:
            return
        if self._held_bytes >= self.limits.connection_buffer_bytes_max:
            self._withheld[inbound.stream_id] = inbound
            return
        self._acknowledge(inbound.stream_id, inbound.unacknowledged_bytes)
        inbound.unacknowledged_bytes = 0

    def _acknowledge(self, stream_id: int, length: int) -> None:
        """Give ``length`` bytes of window back (the stream's, if it is open, and the
        connection's); ``h2`` batches them into WINDOW_UPDATE frames."""
        if length <= 0:
            return
        self.engine.acknowledge_received_data(length, stream_id)
        self.pull()
