"""A small gRPC client on Trio over the Network seam (the simulator and troika's tools use it).

One :class:`GrpcChannel` keeps one HTTP/2 connection to one address, opened on the first call
and opened again after it fails; its reader runs in the channel's nursery, so a channel is an
async context manager::

    async with GrpcChannel(network, "127.0.0.1:2379") as channel:
        response = await channel.unary(path, request, rpc_pb2.RangeResponse, timeout_s=5)
        async with channel.stream(watch_path, rpc_pb2.WatchResponse) as call:
            await call.send(request)
            async for response in call:
                ...

Every failure is an :class:`~net.v3.errors.RpcError`: the status of the trailers, a
``DEADLINE_EXCEEDED`` when ``timeout_s`` passes (the server is told with ``grpc-timeout`` and,
if it is still running, RST_STREAM), ``UNAVAILABLE`` when the connection cannot be opened or
breaks.

Over TLS (``ssl_context``), the connection is wrapped before HTTP/2 starts and the context
should offer ALPN ``h2`` only (``net.client_tls``), as gRPC clients do; ``:scheme`` is then
``https``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Generic, TypeVar

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import trio
import trio.lowlevel
from google.protobuf.message import DecodeError, Message

from net.client_tls import tls_connect
from net.grpc.framing import (
    CONTENT_TYPE,
    decode_status_message,
    format_timeout,
    status_from_http,
    too_large_to_send,
)
from net.grpc.limits import GrpcLimits
from net.grpc.transport import H2Shell, Inbound, StreamClosed
from net.network import Network, NetworkError
from net.v3.errors import RpcError, StatusCode

logger = logging.getLogger(__name__)

CLIENT_RECEIVE_MESSAGE_BYTES_MAX = 64 << 20
"""Largest response message (etcd's clientv3 takes any; a snapshot comes in chunks)."""
CLIENT_SEND_MESSAGE_BYTES_MAX = 2 << 20
"""Largest request message, clientv3's default ``MaxCallSendMsgSize``."""

CLIENT_LIMITS = GrpcLimits(
    receive_message_bytes_max=CLIENT_RECEIVE_MESSAGE_BYTES_MAX,
    send_message_bytes_max=CLIENT_SEND_MESSAGE_BYTES_MAX,
    stream_buffer_bytes_max=CLIENT_RECEIVE_MESSAGE_BYTES_MAX,
    connection_buffer_bytes_max=2 * CLIENT_RECEIVE_MESSAGE_BYTES_MAX,
)

ResponseT = TypeVar("ResponseT", bound=Message)


class _ClientConnection:
    """One HTTP/2 connection of a channel: its shell and its reader."""

    def __init__(self, stream: trio.abc.Stream, limits: GrpcLimits) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.engine = h2.connection.H2Connection(config)
        # Given as initial values: set one by one, h2 would send the old value and apply
        # the new one when acknowledged, and the two ends would disagree on the window.
        self.engine.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window_bytes,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.header_list_bytes_max,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.engine.decoder.max_header_list_size = limits.header_list_bytes_max
        self.shell = H2Shell(stream, self.engine, limits)
        self.closed = False
        self.going_away = False
        self.slots = trio.lowlevel.ParkingLot()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        engine = self.engine
        engine.initiate_connection()
        extra = self.shell.limits.connection_window_bytes - engine.inbound_flow_control_window
        if extra > 0:
            engine.increment_flow_control_window(extra)
        self.shell.pull()
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.shell.run_writer, nursery.cancel_scope)
                await self._read()
                nursery.cancel_scope.cancel()
        finally:
            self._fail_all()
            with contextlib.suppress(h2.exceptions.ProtocolError):
                engine.close_connection(h2.errors.ErrorCodes.NO_ERROR)
            await self.shell.flush_last()
            await trio.aclose_forcefully(self.shell.stream)

    def _fail_all(self) -> None:
        self.closed = True
        self.shell.broken = True
        for inbound in self.shell.inbound.values():
            if not inbound.ended and inbound.failure is None:
                inbound.failure = RpcError(StatusCode.UNAVAILABLE, "connection closed")
            inbound.lot.unpark_all()
        self.shell.windows_changed()
        self.slots.unpark_all()

    async def _read(self) -> None:
        shell = self.shell
        while True:
            data = await shell.receive()
            if data is None:
                return
            try:
                events = self.engine.receive_data(data)
            except h2.exceptions.ProtocolError as error:
                logger.info("closing an HTTP/2 connection to the server: %s", error)
                return
            for event in events:
                self._on_event(event)
            shell.pull()

    def _on_event(self, event: h2.events.Event) -> None:
        shell = self.shell
        stream_id = getattr(event, "stream_id", None) or 0
        inbound = shell.inbound.get(stream_id)
        match event:
            case h2.events.ResponseReceived():
                if inbound is not None:
                    inbound.headers = [(bytes(n), bytes(v)) for n, v in event.headers or ()]
                    inbound.lot.unpark_all()
            case h2.events.TrailersReceived():
                if inbound is not None:
                    inbound.trailers = [(bytes(n), bytes(v)) for n, v in event.headers or ()]
            case h2.events.DataReceived():
                shell.on_data(event)
            case h2.events.StreamEnded():
                shell.on_end(stream_id)
                self.slots.unpark_all()
            case h2.events.StreamReset():
                shell.on_reset(stream_id)
                self.slots.unpark_all()
            case h2.events.WindowUpdated() | h2.events.RemoteSettingsChanged():
                shell.windows_changed()
                self.slots.unpark_all()
            case h2.events.ConnectionTerminated():
                self.going_away = True
            case _:
                pass

    async def open_stream(self, headers: list[tuple[bytes, bytes]], inbound_max: int) -> Inbound:
        """Start a call: wait for a stream slot, send the request headers."""
        engine = self.engine
        while engine.open_outbound_streams >= engine.remote_settings.max_concurrent_streams:
            if self.closed:
                break
            await self.slots.park()
        if self.closed or self.going_away:
            raise RpcError(StatusCode.UNAVAILABLE, "connection closed")
        stream_id = engine.get_next_available_stream_id()
        engine.send_headers(stream_id, headers)
        inbound = Inbound(stream_id, inbound_max)
        self.shell.inbound[stream_id] = inbound
        self.shell.pull()
        return inbound


class CallStream(Generic[ResponseT]):
    """One call in progress: send requests, iterate responses; the status ends the iteration."""

    def __init__(
        self, connection: _ClientConnection, inbound: Inbound, response_type: type[ResponseT]
    ) -> None:
        self._connection = connection
        self._inbound = inbound
        self._response_type = response_type
        self._done_writing = False
        self.finished = False

    @property
    def stream_id(self) -> int:
        return self._inbound.stream_id

    async def send(self, message: Message) -> None:
        """Send one request message.

        Raises:
            RpcError: the call ended already (its status), or the connection broke.
        """
        payload = message.SerializeToString()
        limit = self._connection.shell.limits.send_message_bytes_max
        if len(payload) > limit:
            raise too_large_to_send(len(payload), limit)
        if self._done_writing:
            raise RpcError(StatusCode.INTERNAL, "send after done_writing")
        try:
            await self._connection.shell.send_message(self.stream_id, payload)
        except StreamClosed:
            raise self._status() or RpcError(StatusCode.UNAVAILABLE, "stream closed") from None

    async def done_writing(self) -> None:
        """Half-close: the server sees the end of the requests."""
        if self._done_writing:
            return
        self._done_writing = True
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._connection.engine.end_stream(self.stream_id)
        self._connection.shell.pull()

    def __aiter__(self) -> AsyncIterator[ResponseT]:
        return self

    async def __anext__(self) -> ResponseT:
        inbound = self._inbound
        try:
            payload = await self._connection.shell.next_message(inbound)
        except StreamClosed:
            self.finished = True
            if inbound.headers is not None:
                status = self._status()
                if status is not None:
                    raise status from None
            raise RpcError(StatusCode.CANCELLED, "stream reset by the server") from None
        except RpcError:
            self.finished = True
            raise
        if payload is None:
            self.finished = True
            status = self._status()
            if status is not None:
                raise status
            raise StopAsyncIteration
        response = self._response_type()
        try:
            response.ParseFromString(payload)
        except DecodeError as error:
            raise RpcError(
                StatusCode.INTERNAL, f"grpc: failed to unmarshal the received message {error}"
            ) from error
        return response

    def _status(self) -> RpcError | None:
        """The call's outcome once it ended: None for OK."""
        inbound = self._inbound
        headers = dict(inbound.headers or ())
        fields = dict(inbound.trailers or ()) if inbound.trailers is not None else headers
        status_text = fields.get(b"grpc-status")
        http_status = headers.get(b":status", b"")
        if status_text is not None and http_status == b"200":
            try:
                code = StatusCode(int(status_text))
            except ValueError:
                code = StatusCode.UNKNOWN
            if code is StatusCode.OK:
                return None
            message = decode_status_message(fields.get(b"grpc-message", b"").decode("latin-1"))
            return RpcError(code, message)
        if http_status and http_status != b"200":
            status = int(http_status) if http_status.isdigit() else 0
            return RpcError(status_from_http(status), f"unexpected HTTP status code {status}")
        return RpcError(StatusCode.INTERNAL, "server closed the stream without sending trailers")

    def close(self) -> None:
        """Cancel the call if it is still running (RST_STREAM CANCEL) and drop its state."""
        connection = self._connection
        if not self._inbound.ended and not self._inbound.reset and not connection.closed:
            with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                connection.engine.reset_stream(self.stream_id, h2.errors.ErrorCodes.CANCEL)
        connection.shell.forget(self._inbound)
        connection.shell.pull()
        connection.slots.unpark_all()


class GrpcChannel:
    """gRPC calls to one address over one HTTP/2 connection.

    Args:
        network: how to reach the server.
        address: ``"host:port"``.
        limits: the bounds; the defaults take responses up to 64 MiB.
        ssl_context: TLS for the connection (None: in the clear).
    """

    def __init__(
        self,
        network: Network,
        address: str,
        limits: GrpcLimits | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._network = network
        self._address = address
        self._limits = limits if limits is not None else CLIENT_LIMITS
        self._ssl_context = ssl_context
        self._connection: _ClientConnection | None = None
        self._connect_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._exit_stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> GrpcChannel:
        self._nursery = await self._exit_stack.enter_async_context(trio.open_nursery())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        # The body's own exception goes on as it is, not wrapped in the nursery's group.
        await self._exit_stack.__aexit__(None, None, None)
        return None

    async def unary(
        self,
        path: str,
        request: Message,
        response_type: type[ResponseT],
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> ResponseT:
        """One request, one response.

        Raises:
            RpcError: the server's status, DEADLINE_EXCEEDED, or UNAVAILABLE.
        """
        async with self.stream(path, response_type, timeout_s=timeout_s, metadata=metadata) as call:
            await call.send(request)
            await call.done_writing()
            responses = [response async for response in call]
        if len(responses) != 1:
            raise RpcError(StatusCode.INTERNAL, f"expected one response, got {len(responses)}")
        return responses[0]

    @contextlib.asynccontextmanager
    async def stream(
        self,
        path: str,
        response_type: type[ResponseT],
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> AsyncIterator[CallStream[ResponseT]]:
        """A streaming call (any kind); leaving the block cancels it if it is still running.

        Raises:
            RpcError: the server's status, DEADLINE_EXCEEDED, or UNAVAILABLE.
        """
        deadline = math.inf if timeout_s is None else trio.current_time() + timeout_s
        call: CallStream[ResponseT] | None = None
        with trio.move_on_at(deadline) as scope:
            connection = await self._connected()
            headers = self._headers(path, timeout_s, metadata)
            inbound = await connection.open_stream(headers, self._limits.receive_message_bytes_max)
            call = CallStream(connection, inbound, response_type)
            try:
                yield call
            finally:
                call.close()
        if scope.cancelled_caught:
            raise RpcError(StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded")

    def _headers(
        self, path: str, timeout_s: float | None, metadata: Sequence[tuple[str, str]]
    ) -> list[tuple[bytes, bytes]]:
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"http" if self._ssl_context is None else b"https"),
            (b":path", path.encode("ascii")),
            (b":authority", self._address.encode("ascii")),
            (b"content-type", CONTENT_TYPE),
            (b"te", b"trailers"),
        ]
        if timeout_s is not None:
            headers.append((b"grpc-timeout", format_timeout(timeout_s).encode()))
        for name, value in metadata:
            headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        return headers

    async def _connected(self) -> _ClientConnection:
        async with self._connect_lock:
            connection = self._connection
            if connection is not None and not connection.closed and not connection.going_away:
                return connection
            if self._nursery is None:
                raise RuntimeError("use GrpcChannel as `async with GrpcChannel(...) as channel`")
            try:
                stream = await self._network.connect(self._address)
                if self._ssl_context is not None:
                    stream = await tls_connect(stream, self._ssl_context, self._address)
            except NetworkError as error:
                raise RpcError(StatusCode.UNAVAILABLE, f"cannot connect: {error}") from error
            connection = _ClientConnection(stream, self._limits)
            await self._nursery.start(connection.run)
            self._connection = connection
            return connection
