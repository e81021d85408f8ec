"""A lean gRPC client for the load generator: raw HTTP/2 frames, no h2 state machine.

Why not ``net.grpc.client``: that client runs every frame through the ``h2`` library's
state machine and HPACK in Python, about half a millisecond of CPU per call, so a watch
fan-out of tens of thousands of events per second would measure the client, not the server.
This one does only what a benchmark needs, with as little Python per frame as possible:

- Requests carry one pre-encoded header block per method (HPACK literals without indexing,
  no Huffman: the same bytes every time, no encoder state). We announce a header table of 0
  bytes (``SETTINGS_HEADER_TABLE_SIZE``), so the server's blocks never refer to a dynamic
  table and need no decoder state either: they are skipped, and decoded (with a fresh
  ``hpack.Decoder``) only when a call ends without a message, to read its ``grpc-status``.
- Frames are cut from one receive buffer with ``struct``; a DATA frame's gRPC messages are
  handed to the stream's callback as ``memoryview`` slices (no copy when a frame holds whole
  messages, as it usually does).
- Flow control: we grant the largest window HTTP/2 allows and top it up in large steps, so
  the server never waits on us; what we send respects the server's windows (a create of
  10,000 watchers on one stream is hundreds of KiB).
- Everything written goes through one outgoing buffer flushed by one task, so many frames
  (the puts of many workers, acknowledgements) leave in one ``send``.

Failures are ``LiteRpcError`` (a status and a message, as gRPC's); a broken connection fails
every open call, and every later one, with ``UNAVAILABLE`` (it is not dialled again: a
benchmark sample then counts errors to its end).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import hpack
import trio

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER: Final = struct.Struct(">I B I")
"""Length (24 bits, packed with the type in the first word), flags, stream id."""
MESSAGE_PREFIX: Final = struct.Struct(">BI")
"""gRPC's length prefix: compressed flag, length."""

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 5, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
CANCEL_ERROR: Final = 0x8

SETTING_HEADER_TABLE_SIZE, SETTING_ENABLE_PUSH = 0x1, 0x2
SETTING_INITIAL_WINDOW_SIZE, SETTING_MAX_FRAME_SIZE = 0x4, 0x5
WINDOW_MAX: Final = 2**31 - 1
DEFAULT_WINDOW: Final = 65_535
DEFAULT_FRAME_BYTES: Final = 16_384
WINDOW_TOP_UP_BYTES: Final = 1 << 28
"""Received bytes after which a window is topped up again (far below what it grants)."""
RECEIVE_BYTES: Final = 1 << 18
FLUSH_BYTES_MAX: Final = 1 << 20
UNAVAILABLE: Final = 14
UNKNOWN: Final = 2
DEADLINE_EXCEEDED: Final = 4


class LiteRpcError(Exception):
    """A call failed: gRPC's status code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"grpc status {code}: {message}")
        self.code = code
        self.message = message


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """HPACK's integer: ``value`` in a ``prefix_bits`` prefix of ``first``, then 7-bit groups."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header field as a literal without indexing, new name, no Huffman."""
    return b"\x00" + _hpack_int(len(name), 7, 0) + name + _hpack_int(len(value), 7, 0) + value


def request_header_block(path: str, authority: str) -> bytes:
    """The header block of a gRPC request: identical bytes on every call (no table state)."""
    return b"".join(
        (
            b"\x83",  # :method POST (static index 3)
            b"\x86",  # :scheme http (static index 6)
            b"\x04" + _hpack_int(len(path), 7, 0) + path.encode(),  # :path, literal value
            b"\x01" + _hpack_int(len(authority), 7, 0) + authority.encode(),  # :authority
            _literal(b"content-type", b"application/grpc"),
            _literal(b"te", b"trailers"),
        )
    )


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    return FRAME_HEADER.pack((len(payload) << 8) | kind, flags, stream_id) + payload


def grpc_message(payload: bytes) -> bytes:
    """``payload`` with gRPC's 5-byte length prefix (uncompressed)."""
    return MESSAGE_PREFIX.pack(0, len(payload)) + payload


def status_of(block: bytes) -> tuple[int, str]:
    """``grpc-status`` and ``grpc-message`` of a header block (decoded without table state)."""
    try:
        fields = hpack.Decoder().decode(block, raw=True)
    except Exception as error:  # any undecodable block is an unknown status
        return UNKNOWN, f"trailers not readable: {type(error).__name__}"
    found = {bytes(name): bytes(value) for name, value in fields}
    code = found.get(b"grpc-status")
    message = found.get(b"grpc-message", b"").decode(errors="replace")
    if code is None:
        return UNKNOWN, f"no grpc-status (http status {found.get(b':status', b'?').decode()})"
    return int(code), message


MessageHandler = Callable[[memoryview], None]
"""Told each whole message of a stream (a view valid only during the call)."""
EndHandler = Callable[[LiteRpcError | None], None]
"""Told once when a stream ends: None for status OK."""


@dataclass
class _Stream:
    on_message: MessageHandler
    on_end: EndHandler
    send_window: int
    partial: bytearray = field(default_factory=bytearray)
    received_bytes: int = 0
    messages: int = 0
    block: bytearray = field(default_factory=bytearray)
    """Header block fragments until END_HEADERS."""
    block_ends_stream: bool = False


class LiteConnection:
    """One HTTP/2 connection carrying gRPC calls; ``run`` in a nursery, then call.

    Usage::

        connection = LiteConnection("127.0.0.1", 2379)
        await nursery.start(connection.run)
        response = await connection.unary(PUT_PATH, request.SerializeToString())
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.authority = f"{host}:{port}"
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1
        self._outgoing = bytearray()
        self._wake_sender = trio.Event()
        self._window_opened = trio.Event()
        self._send_window = DEFAULT_WINDOW
        self._initial_send_window = DEFAULT_WINDOW
        self._max_frame_bytes = DEFAULT_FRAME_BYTES
        self._received_unacknowledged = 0
        self._blocks: dict[str, bytes] = {}
        self._closed: LiteRpcError | None = None
        self.bytes_received = 0

    # -- running -----------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dial, greet, then read and write until cancelled or the connection breaks (then
        every open call fails with UNAVAILABLE; the connection is not dialled again).

        Raises:
            OSError: the connection could not be opened.
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await sock.connect((self.host, self.port))
        except OSError as error:
            sock.close()
            self._fail_all(LiteRpcError(UNAVAILABLE, f"connection: {error!r}"))
            raise
        settings = struct.pack(
            ">HIHIHI",
            SETTING_HEADER_TABLE_SIZE, 0,
            SETTING_ENABLE_PUSH, 0,
            SETTING_INITIAL_WINDOW_SIZE, WINDOW_MAX,
        )  # fmt: skip
        self._queue(
            PREFACE
            + frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW_MAX - DEFAULT_WINDOW))
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, sock, nursery.cancel_scope)
                task_status.started()
                await self._read_loop(sock)
                nursery.cancel_scope.cancel()
        finally:
            self._fail_all(LiteRpcError(UNAVAILABLE, "connection closed"))
            sock.close()

    def _queue(self, data: bytes) -> None:
        self._outgoing += data
        self._wake_sender.set()

    async def _send_loop(self, sock: trio.socket.SocketType, scope: trio.CancelScope) -> None:
        while True:
            await self._wake_sender.wait()
            self._wake_sender = trio.Event()
            while self._outgoing:
                chunk = bytes(self._outgoing[:FLUSH_BYTES_MAX])
                del self._outgoing[: len(chunk)]
                view = memoryview(chunk)
                while view:
                    try:
                        sent = await sock.send(view)
                    except OSError as error:
                        self._closed = LiteRpcError(UNAVAILABLE, f"connection: {error!r}")
                        scope.cancel()
                        return
                    view = view[sent:]

    async def _read_loop(self, sock: trio.socket.SocketType) -> None:
        buffer = bytearray()
        unpack = FRAME_HEADER.unpack_from
        while True:
            try:
                data = await sock.recv(RECEIVE_BYTES)
            except OSError as error:
                self._closed = LiteRpcError(UNAVAILABLE, f"connection: {error!r}")
                return
            if not data:
                return
            self.bytes_received += len(data)
            buffer += data
            offset = 0
            end = len(buffer)
            view = memoryview(buffer)
            try:
                while end - offset >= 9:
                    word, flags, stream_id = unpack(buffer, offset)
                    length = word >> 8
                    if end - offset - 9 < length:
                        break
                    start = offset + 9
                    offset = start + length
                    kind = word & 0xFF
                    if kind or flags or not self._one_message(stream_id, view, start, length):
                        self._on_frame(kind, flags, stream_id & 0x7FFFFFFF, view[start:offset])
            finally:
                view.release()
            del buffer[:offset]
            if self._closed is not None:
                return

    # -- frames received ---------------------------------------------------------------------

    def _one_message(self, stream_id: int, view: memoryview, start: int, length: int) -> bool:
        """The fast path of a plain DATA frame (no flags) holding exactly one whole message
        of a stream with nothing pending, as most watch events arrive: whether it was taken."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.partial or length < 5:
            return False
        if MESSAGE_PREFIX.unpack_from(view, start)[1] != length - 5:
            return False
        self._received_unacknowledged += length
        stream.received_bytes += length
        if (
            self._received_unacknowledged >= WINDOW_TOP_UP_BYTES
            or stream.received_bytes >= WINDOW_TOP_UP_BYTES
        ):
            self._top_up(stream_id, stream)
        stream.messages += 1
        stream.on_message(view[start + 5 : start + length])
        return True

    def _top_up(self, stream_id: int, stream: _Stream) -> None:
        """Give back what was received, on the connection and on the stream."""
        if self._received_unacknowledged >= WINDOW_TOP_UP_BYTES:
            self._queue(
                frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._received_unacknowledged))
            )
            self._received_unacknowledged = 0
        if stream.received_bytes >= WINDOW_TOP_UP_BYTES:
            self._queue(
                frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", stream.received_bytes))
            )
            stream.received_bytes = 0

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: memoryview) -> None:
        if kind == DATA:
            self._on_data(flags, stream_id, payload)
        elif kind in (HEADERS, CONTINUATION):
            self._on_headers(kind, flags, stream_id, payload)
        elif kind == SETTINGS:
            if not flags & ACK:
                self._on_settings(payload)
        elif kind == WINDOW_UPDATE:
            (increment,) = struct.unpack_from(">I", payload)
            if stream_id == 0:
                self._send_window += increment & 0x7FFFFFFF
            elif (stream := self._streams.get(stream_id)) is not None:
                stream.send_window += increment & 0x7FFFFFFF
            self._window_opened.set()
        elif kind == PING:
            if not flags & ACK:
                self._queue(frame(PING, ACK, 0, bytes(payload)))
        elif kind == RST_STREAM:
            (code,) = struct.unpack_from(">I", payload)
            self._end(stream_id, LiteRpcError(UNAVAILABLE, f"stream reset (http/2 error {code})"))
        elif kind == GOAWAY:
            _, code = struct.unpack_from(">II", payload)
            self._closed = LiteRpcError(UNAVAILABLE, f"GOAWAY (http/2 error {code})")

    def _on_settings(self, payload: memoryview) -> None:
        for offset in range(0, len(payload) - 5, 6):
            code, value = struct.unpack_from(">HI", payload, offset)
            if code == SETTING_INITIAL_WINDOW_SIZE:
                delta = value - self._initial_send_window
                self._initial_send_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif code == SETTING_MAX_FRAME_SIZE:
                self._max_frame_bytes = value
        self._queue(frame(SETTINGS, ACK, 0))
        self._window_opened.set()

    def _on_data(self, flags: int, stream_id: int, payload: memoryview) -> None:
        size = len(payload)
        if flags & PADDED:
            payload = payload[1 : size - payload[0]]
        self._received_unacknowledged += size
        stream = self._streams.get(stream_id)
        if stream is None:
            if self._received_unacknowledged >= WINDOW_TOP_UP_BYTES:
                self._queue(
                    frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._received_unacknowledged))
                )
                self._received_unacknowledged = 0
            return
        stream.received_bytes += size
        self._top_up(stream_id, stream)
        if stream.partial:
            stream.partial += payload
            view = memoryview(stream.partial)
            try:
                whole = self._deliver(stream, view)
            finally:
                view.release()
            del stream.partial[:whole]
        else:
            whole = self._deliver(stream, payload)
            if whole < len(payload):
                stream.partial += payload[whole:]
        if flags & END_STREAM:
            self._end(stream_id, None if stream.messages else LiteRpcError(UNKNOWN, "no message"))

    @staticmethod
    def _deliver(stream: _Stream, data: memoryview) -> int:
        """Hand every whole message in ``data`` to the stream; the bytes used."""
        offset = 0
        size = len(data)
        on_message = stream.on_message
        unpack = MESSAGE_PREFIX.unpack_from
        while size - offset >= 5:
            _, length = unpack(data, offset)
            if size - offset - 5 < length:
                break
            start = offset + 5
            stream.messages += 1
            on_message(data[start : start + length])
            offset = start + length
        return offset

    def _on_headers(self, kind: int, flags: int, stream_id: int, payload: memoryview) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if kind == HEADERS:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            stream.block = bytearray()
            stream.block_ends_stream = bool(flags & END_STREAM)
        stream.block += payload
        if not flags & END_HEADERS or not stream.block_ends_stream:
            return
        if stream.messages:
            self._end(stream_id, None)
            return
        code, message = status_of(bytes(stream.block))
        self._end(stream_id, LiteRpcError(code, message) if code else None)

    def _end(self, stream_id: int, error: LiteRpcError | None) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.on_end(error)

    def _fail_all(self, error: LiteRpcError) -> None:
        self._closed = self._closed or error
        for stream_id in list(self._streams):
            self._end(stream_id, error)

    # -- calls -------------------------------------------------------------------------------

    def open_stream(self, path: str, on_message: MessageHandler, on_end: EndHandler) -> int:
        """Start a call on ``path`` (its headers are queued); its stream id.

        Raises:
            LiteRpcError: the connection is closed.
        """
        if self._closed is not None:
            raise self._closed
        block = self._blocks.get(path)
        if block is None:
            block = self._blocks[path] = request_header_block(path, self.authority)
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        self._streams[stream_id] = _Stream(on_message, on_end, self._initial_send_window)
        self._queue(frame(HEADERS, END_HEADERS, stream_id, block))
        return stream_id

    async def send(self, stream_id: int, message: bytes, *, end_stream: bool = False) -> None:
        """Send one message on an open stream, within the server's windows.

        Raises:
            LiteRpcError: the connection or the stream is closed.
        """
        data = grpc_message(message)
        offset = 0
        while True:
            stream = self._streams.get(stream_id)
            if self._closed is not None:
                raise self._closed
            if stream is None:
                raise LiteRpcError(UNAVAILABLE, "stream closed")
            room = min(self._send_window, stream.send_window, self._max_frame_bytes)
            remaining = len(data) - offset
            if room <= 0 and remaining:
                self._window_opened = trio.Event()
                await self._window_opened.wait()
                continue
            chunk = data[offset : offset + room]
            offset += len(chunk)
            self._send_window -= len(chunk)
            stream.send_window -= len(chunk)
            last = offset >= len(data)
            self._queue(frame(DATA, END_STREAM if last and end_stream else 0, stream_id, chunk))
            if last:
                return

    def cancel(self, stream_id: int) -> None:
        """Abandon a call (RST_STREAM CANCEL); its end handler is not told."""
        if self._streams.pop(stream_id, None) is not None and self._closed is None:
            self._queue(frame(RST_STREAM, 0, stream_id, struct.pack(">I", CANCEL_ERROR)))

    async def unary(self, path: str, request: bytes, timeout_s: float | None = 10.0) -> bytes:
        """One request, one response: the response message's bytes. With ``timeout_s`` None
        there is no deadline of its own (a cancel scope per call costs more than the rest of
        it): the caller bounds a loop of calls instead.

        Raises:
            LiteRpcError: the call failed, or took longer than ``timeout_s``.
        """
        done = trio.Event()
        outcome: list[bytes | LiteRpcError] = []

        def on_message(message: memoryview) -> None:
            outcome.append(bytes(message))

        def on_end(error: LiteRpcError | None) -> None:
            if error is not None:
                outcome.insert(0, error)
            done.set()

        stream_id = self.open_stream(path, on_message, on_end)
        try:
            if timeout_s is None:
                await self.send(stream_id, request, end_stream=True)
                await done.wait()
            else:
                with trio.move_on_after(timeout_s):
                    await self.send(stream_id, request, end_stream=True)
                    await done.wait()
                if not done.is_set():
                    raise LiteRpcError(DEADLINE_EXCEEDED, f"no answer in {timeout_s} s")
        finally:
            if not done.is_set():
                self.cancel(stream_id)
        first = outcome[0]
        if isinstance(first, LiteRpcError):
            raise first
        return first
