"""The gRPC server of the client port: a :data:`~net.v3.methods.Methods` table over HTTP/2.

Theory of operation
-------------------

:meth:`GrpcServer.serve_connection` serves one connection that opened with the HTTP/2 client
preface (the HTTP/1.1 server sniffs it and hands the connection over with the bytes it has
read). It runs in the caller's task, in one nursery: a reader that feeds ``h2`` and handles its
events, the shell's writer (``net.grpc.transport``), and one task per call.

A call is a request HEADERS frame with ``:method`` POST and ``content-type: application/grpc``.
Its task finds the method (``UNIMPLEMENTED`` with grpc-go's words if there is none), reads and
decodes the request messages, runs the handler under the call's deadline (``grpc-timeout``, in
Trio's clock) and ends the stream with trailers: ``grpc-status`` and a percent-encoded
``grpc-message``. A call that fails before it sent a message gets a trailers-only response.
A RST_STREAM from the client cancels the call's task and nothing more is sent on it; a
passed deadline cancels it and answers ``DEADLINE_EXCEEDED``; a message too large, compressed
or undecodable ends the call with grpc-go's code and text.

Bounds: at most ``concurrent_streams_max`` calls (advertised as SETTINGS_MAX_CONCURRENT_STREAMS;
``h2`` refuses a peer that ignores it with a connection error), the header list, the bytes held
per stream and per connection (``net.grpc.transport``), the outbox, an idle timeout counted from
the end of the last call (pings and stray bytes do not reset it), and ``frame_timeout_s`` for
one frame or one header block to arrive whole (a slowloris trickle). Bad frames get ``h2``'s
GOAWAY and the connection closes; no exception of a connection or a call escapes into the
member. Cancelling the server sends GOAWAY.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import trio
from google.protobuf.message import DecodeError, Message

from net.grpc.framing import (
    CONTENT_TYPE,
    HTTP2_PREFACE,
    FrameGuard,
    encode_status_message,
    literal_header_block,
    parse_timeout,
    too_large_to_send,
)
from net.grpc.limits import GrpcLimits
from net.grpc.transport import H2Shell, Inbound, StreamClosed
from net.tls import verified_common_name
from net.v3.errors import RpcError, StatusCode
from net.v3.methods import CallContext, Method, Methods, UnaryMethod

logger = logging.getLogger(__name__)

_RESERVED_HEADERS = frozenset({b"content-type", b"te", b"user-agent"})
_RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", CONTENT_TYPE))
_OK_TRAILERS = ((b"grpc-status", b"0"),)


class _FixedBlocksEncoder(hpack.Encoder):
    """h2's HPACK encoder, with the header lists every call sends encoded once.

    HPACK-encoding the response headers and the OK trailers took a fifth of a unary call's
    CPU in the server (a search of the tables and Huffman coding, each time). Their blocks
    are made of literals without indexing (``literal_header_block``), which mean the same
    whatever the dynamic tables hold; any other list, and the first block after the peer
    resized its table (which must announce the new size), go to hpack's own encoder.
    """

    _BLOCKS = {
        headers: literal_header_block(headers) for headers in (_RESPONSE_HEADERS, _OK_TRAILERS)
    }

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        if isinstance(headers, list) and not self.header_table.resized:
            block = self._BLOCKS.get(tuple(headers))
            if block is not None:
                return block
        return super().encode(headers, huffman)


CLOSED_STREAMS_REMEMBERED = 1_024
"""Closed streams h2 remembers per connection (its default, 65,536, held about 7 MiB on a
connection that had made that many calls: issue 13's bounded memory). A frame for a stream
forgotten here is answered RST_STREAM instead of being ignored; the client has long moved on."""


class _Engine(h2.connection.H2Connection):
    """h2's connection state machine, remembering ``CLOSED_STREAMS_REMEMBERED`` closed streams."""

    MAX_CLOSED_STREAMS = CLOSED_STREAMS_REMEMBERED


class GrpcServer:
    """Serves a Methods table over gRPC on connections handed to it.

    Args:
        methods: the RPCs, by gRPC path.
        limits: the bounds; the defaults follow etcd where etcd has one.
    """

    def __init__(self, methods: Methods, limits: GrpcLimits | None = None) -> None:
        self._methods = methods
        self._services = frozenset(_service_of(path) for path in methods)
        self._limits = limits if limits is not None else GrpcLimits()
        self._connections = 0

    @property
    def connections(self) -> int:
        """HTTP/2 connections being served right now."""
        return self._connections

    async def serve_connection(self, stream: trio.abc.Stream, received: bytes = b"") -> None:
        """Serve gRPC on one stream until the client leaves, it fails, or we are cancelled.

        Args:
            stream: the connection; the caller closes it.
            received: bytes already read from it (the client preface, and maybe more).
        """
        self._connections += 1
        try:
            await _ServerConnection(stream, self, self._limits).run(received)
        finally:
            self._connections -= 1

    def find(self, path: str) -> Method | RpcError:
        """The method at ``path``, or the error grpc-go answers when there is none."""
        method = self._methods.get(path)
        if method is not None:
            return method
        name = path[1:] if path.startswith("/") else path
        service, separator, method_name = name.rpartition("/")
        if not separator:
            return RpcError(StatusCode.UNIMPLEMENTED, f"malformed method name: {path!r}")
        if service not in self._services:
            return RpcError(StatusCode.UNIMPLEMENTED, f"unknown service {service}")
        return RpcError(
            StatusCode.UNIMPLEMENTED, f"unknown method {method_name} for service {service}"
        )


def _service_of(path: str) -> str:
    return path.lstrip("/").rpartition("/")[0]


class _Call:
    """One call's state, owned by the connection."""

    def __init__(self, inbound: Inbound, context: CallContext) -> None:
        self.stream_id = inbound.stream_id
        self.inbound = inbound
        self.context = context
        self.scope = trio.CancelScope(deadline=context.deadline or math.inf)
        self.headers_sent = False


class _ServerConnection:
    def __init__(self, stream: trio.abc.Stream, server: GrpcServer, limits: GrpcLimits) -> None:
        self._peer_name = verified_common_name(stream)  # --client-cert-auth's user
        # Our own response headers are fixed, lower-case and valid: checking them again on
        # every send cost 12 % of a unary call's CPU (docs/benchmarks.md, "Levers"). What
        # clients send is still validated.
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        engine = _Engine(config)
        engine.encoder = _FixedBlocksEncoder()
        engine.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.concurrent_streams_max,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.header_list_bytes_max,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window_bytes,
            },
        )
        # Set by hand: h2 applies it only when the setting changes, and it was given as an
        # initial value.
        engine.decoder.max_header_list_size = limits.header_list_bytes_max
        self._engine = engine
        self._guard = FrameGuard(
            len(HTTP2_PREFACE), engine.max_inbound_frame_size, limits.header_list_bytes_max
        )
        self._shell = H2Shell(stream, engine, limits)
        self._server = server
        self._limits = limits
        self._calls: dict[int, _Call] = {}
        self._nursery: trio.Nursery | None = None
        self._idle_scope = trio.CancelScope()
        self._idle_deadline = math.inf
        self._frame_deadline = math.inf
        self._frame_number = 0
        self._header_block_deadline = math.inf

    async def run(self, received: bytes) -> None:
        engine = self._engine
        engine.initiate_connection()
        extra_window = self._limits.connection_window_bytes - engine.inbound_flow_control_window
        if extra_window > 0:
            engine.increment_flow_control_window(extra_window)
        self._shell.pull()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._shell.run_writer, nursery.cancel_scope)
                await self._read(received)
                nursery.cancel_scope.cancel()
        finally:
            self._say_goodbye()
            await self._shell.flush_last()

    def _say_goodbye(self) -> None:
        # Already closed when h2 sent its own GOAWAY, or the peer's ended the connection.
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._engine.close_connection(h2.errors.ErrorCodes.NO_ERROR)

    async def _read(self, data: bytes | None) -> None:
        self._set_idle_deadline()
        while True:
            if data:
                problem = self._guard.feed(data)
                if problem is not None:
                    logger.info("closing an HTTP/2 connection: %s", problem)
                    with contextlib.suppress(h2.exceptions.ProtocolError):
                        self._engine.close_connection(h2.errors.ErrorCodes.FRAME_SIZE_ERROR)
                    return
                try:
                    events = self._engine.receive_data(data)
                except h2.exceptions.ProtocolError as error:
                    logger.info("closing an HTTP/2 connection: %s", error)
                    return
                for event in events:
                    self._on_event(event)
                self._shell.pull()
                self._track_partial_frame()
            self._idle_scope = trio.CancelScope(deadline=self._read_deadline())
            with self._idle_scope:
                data = await self._shell.receive()
                if data is None:
                    return
                continue
            if self._too_slow():
                timeout_s = self._limits.frame_timeout_s
                logger.info("closing an HTTP/2 connection: a frame took over %.1f s", timeout_s)
            else:
                logger.debug("closing an idle HTTP/2 connection")
            return

    def _set_idle_deadline(self) -> None:
        """Idle time counts from the end of the last call; nothing else resets it."""
        if self._calls:
            self._idle_deadline = math.inf
        else:
            self._idle_deadline = trio.current_time() + self._limits.idle_timeout_s
        self._idle_scope.deadline = self._read_deadline()

    def _track_partial_frame(self) -> None:
        """Clocks for the frame the bytes end in (restarted when a new one begins) and for an
        open header block (CONTINUATION frames do not restart it)."""
        guard, now, timeout_s = self._guard, trio.current_time(), self._limits.frame_timeout_s
        if not guard.in_frame:
            self._frame_deadline = math.inf
        elif guard.frames != self._frame_number or self._frame_deadline == math.inf:
            self._frame_deadline = now + timeout_s
        self._frame_number = guard.frames
        if not guard.in_header_block:
            self._header_block_deadline = math.inf
        elif self._header_block_deadline == math.inf:
            self._header_block_deadline = now + timeout_s

    def _read_deadline(self) -> float:
        return min(self._idle_deadline, self._frame_deadline, self._header_block_deadline)

    def _too_slow(self) -> bool:
        return trio.current_time() >= min(self._frame_deadline, self._header_block_deadline)

    def _on_event(self, event: h2.events.Event) -> None:
        shell = self._shell
        match event:
            case h2.events.RequestReceived():
                self._start_call(event)
            case h2.events.DataReceived():
                shell.on_data(event)
                call = self._calls.get(event.stream_id or 0)
                if call is not None and call.inbound.failure is not None:
                    call.scope.cancel()
            case h2.events.StreamEnded():
                shell.on_end(event.stream_id or 0)
            case h2.events.StreamReset():
                shell.on_reset(event.stream_id or 0)
                call = self._calls.get(event.stream_id or 0)
                if call is not None:
                    call.scope.cancel()
            case h2.events.WindowUpdated() | h2.events.RemoteSettingsChanged():
                shell.windows_changed()
            case h2.events.ConnectionTerminated():
                logger.debug("client sent GOAWAY (%s)", event.error_code)
            case _:
                pass  # pings are answered by h2; settings acks, priorities: nothing to do

    def _start_call(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        assert stream_id is not None
        headers = [(bytes(name), bytes(value)) for name, value in event.headers or ()]
        fields = dict(headers)
        if fields.get(b":method") != b"POST":
            self._answer_http(stream_id, 405)
            return
        if not _is_grpc(fields.get(b"content-type", b"")):
            self._answer_http(stream_id, 415)
            return
        if len(self._calls) >= self._limits.concurrent_streams_max:
            self._reset(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        path = fields.get(b":path", b"").decode("latin-1")
        method = self._server.find(path)
        if isinstance(method, RpcError):
            self._send_status(stream_id, method, headers_sent=False)
            return
        timeout_text = fields.get(b"grpc-timeout")
        deadline = None
        if timeout_text is not None:
            timeout_s = parse_timeout(timeout_text.decode("latin-1"))
            if timeout_s is None:
                message = f"transport: malformed time-out: {timeout_text.decode('latin-1')!r}"
                self._send_status(stream_id, RpcError(StatusCode.INTERNAL, message), False)
                return
            deadline = trio.current_time() + timeout_s
        encoding = fields.get(b"grpc-encoding", b"").decode("latin-1")
        inbound = Inbound(stream_id, self._limits.receive_message_bytes_max, encoding)
        call = _Call(inbound, CallContext(_metadata(headers), deadline, self._peer_name))
        self._shell.inbound[stream_id] = inbound
        self._calls[stream_id] = call
        self._set_idle_deadline()
        assert self._nursery is not None
        self._nursery.start_soon(self._serve_call, call, method)

    async def _serve_call(self, call: _Call, method: Method) -> None:
        status: RpcError | None = None
        try:
            with call.scope:
                status = await self._run_handler(call, method)
            if call.scope.cancelled_caught and status is None and not call.inbound.reset:
                status = RpcError(StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded")
            if call.inbound.failure is not None:
                status = call.inbound.failure
            if not call.inbound.reset:
                self._shell.send_queued()  # what a cancelled call queued, as windows allow
                self._send_status(call.stream_id, status, call.headers_sent)
                if not call.inbound.ended:
                    self._reset(call.stream_id, h2.errors.ErrorCodes.NO_ERROR)
        finally:
            del self._calls[call.stream_id]
            self._shell.forget(call.inbound)
            self._set_idle_deadline()

    async def _run_handler(self, call: _Call, method: Method) -> RpcError | None:
        """Run the call; the status it ends with (None for OK, and for a stream gone)."""
        try:
            if isinstance(method, UnaryMethod):
                request = _decode(method.request_type, await self._receive_one(call), True)
                response = await method.handler(request, call.context)
                await self._send(call, response)
            else:
                requests = _Requests(self._shell, call.inbound, method.request_type)

                async def send(message: Message) -> None:
                    await self._send(call, message, queue=True)

                try:
                    await method.handler(requests, send, call.context)
                except RpcError:
                    await self._shell.flush(call.stream_id)  # the messages, then the status
                    raise
                await self._shell.flush(call.stream_id)
        except RpcError as error:
            return error
        except StreamClosed:
            return None
        except Exception as error:
            # The top of a call: a bug in a handler ends this call with UNKNOWN (as grpc-go
            # reports a plain error) instead of the connection; trio.Cancelled passes.
            logger.exception("gRPC handler failed on %s", call.stream_id)
            return RpcError(StatusCode.UNKNOWN, f"{type(error).__name__}: {error}")
        return None

    async def _receive_one(self, call: _Call) -> bytes:
        payload = await self._shell.next_message(call.inbound)
        if payload is None:
            raise RpcError(StatusCode.INTERNAL, "grpc: error while receiving request: EOF")
        return payload

    async def _send(self, call: _Call, message: Message, *, queue: bool = False) -> None:
        """Send one message (``queue``: leave it to the writer, ``H2Shell.queue_message``)."""
        payload = message.SerializeToString()
        if len(payload) > self._limits.send_message_bytes_max:
            raise too_large_to_send(len(payload), self._limits.send_message_bytes_max)
        if not call.headers_sent:
            call.headers_sent = True
            try:
                self._engine.send_headers(call.stream_id, list(_RESPONSE_HEADERS))
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as error:
                raise StreamClosed(f"stream {call.stream_id} closed") from error
        if queue:
            await self._shell.queue_message(call.stream_id, payload)
        else:
            await self._shell.send_message(call.stream_id, payload)

    def _send_status(self, stream_id: int, status: RpcError | None, headers_sent: bool) -> None:
        code = StatusCode.OK if status is None else status.code
        fields: list[tuple[bytes, bytes]] = []
        if not headers_sent:
            fields += _RESPONSE_HEADERS
        fields.append((b"grpc-status", str(int(code)).encode()))
        if status is not None and status.message:
            fields.append((b"grpc-message", encode_status_message(status.message).encode()))
        try:
            self._engine.send_headers(stream_id, fields, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._shell.pull()

    def _answer_http(self, stream_id: int, status: int) -> None:
        """A request that is not gRPC: a bare HTTP status, as grpc-go answers it."""
        try:
            self._engine.send_headers(
                stream_id, [(b":status", str(status).encode())], end_stream=True
            )
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._shell.pull()

    def _reset(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        try:
            self._engine.reset_stream(stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._shell.pull()


class _Requests:
    """The request messages of a streaming call, decoded as the handler asks for them."""

    def __init__(self, shell: H2Shell, inbound: Inbound, message_type: type[Message]) -> None:
        self._shell = shell
        self._inbound = inbound
        self._message_type = message_type

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> Message:
        payload = await self._shell.next_message(self._inbound)
        if payload is None:
            raise StopAsyncIteration
        return _decode(self._message_type, payload, False)


def _decode(message_type: type[Message], payload: bytes, unary: bool) -> Message:
    message = message_type()
    try:
        message.ParseFromString(payload)
    except DecodeError as error:
        if unary:
            text = f"grpc: error unmarshalling request: {error}"
        else:
            text = f"grpc: failed to unmarshal the received message {error}"
        raise RpcError(StatusCode.INTERNAL, text) from error
    return message


def _is_grpc(content_type: bytes) -> bool:
    if not content_type.startswith(CONTENT_TYPE):
        return False
    rest = content_type[len(CONTENT_TYPE) :]
    return not rest or rest[:1] in (b"+", b";")


def _metadata(headers: list[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    """Custom metadata: no pseudo-headers, no ``grpc-*``, none of gRPC's own fields."""
    return tuple(
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in headers
        if not name.startswith(b":")
        and not name.lower().startswith(b"grpc-")
        and name.lower() not in _RESERVED_HEADERS
    )
