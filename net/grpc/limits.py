"""The bounds of a gRPC connection, shared by the server and the client."""

from __future__ import annotations

from dataclasses import dataclass

GRPC_OVERHEAD_BYTES = 512 * 1024
"""etcd adds this to ``--max-request-bytes`` for gRPC's own framing (v3rpc/grpc.go)."""

RECEIVE_MESSAGE_BYTES_MAX = 1_572_864 + GRPC_OVERHEAD_BYTES
"""etcd's default receive limit: ``--max-request-bytes`` (1.5 MiB) plus the overhead."""

SEND_MESSAGE_BYTES_MAX = 2**31 - 1
"""etcd sends messages of any size gRPC can frame (``math.MaxInt32``)."""

CONCURRENT_STREAMS_MAX = 1000
"""SETTINGS_MAX_CONCURRENT_STREAMS we advertise: calls served at once on one connection. etcd
advertises ``math.MaxUint32``, which bounds nothing; 1000 leaves room for many watchers."""

HEADER_LIST_BYTES_MAX = 1 << 20
"""SETTINGS_MAX_HEADER_LIST_SIZE: a request's decoded header fields (as the HTTP/1.1 server)."""

STREAM_WINDOW_BYTES = 1 << 20
"""SETTINGS_INITIAL_WINDOW_SIZE: bytes a peer may send on one stream before we acknowledge."""

CONNECTION_WINDOW_BYTES = 16 << 20
"""The connection's receive window: bytes in flight to us over all streams."""

STREAM_BUFFER_BYTES_MAX = 4 << 20
"""Whole messages received for one call and not yet taken by its handler above which we stop
acknowledging, so the peer's stream window closes."""

CONNECTION_BUFFER_BYTES_MAX = 32 << 20
"""Received bytes held over all calls of a connection (whole messages and partial ones) above
which we stop acknowledging; more than one largest message, so one always gets through."""

OUTBOX_BYTES_MAX = 1 << 20
"""Encoded frames waiting for the socket; a sender past it waits (the peer reads slowly)."""

RECEIVE_BYTES_MAX = 65536
"""One read from the stream."""

IDLE_TIMEOUT_S = 300.0
"""A connection with no call for this long gets GOAWAY and is closed, whatever else the client
sends (pings, settings, a trickle of bytes): grpc-go's ``MaxConnectionIdle`` counts the same."""

FRAME_TIMEOUT_S = 10.0
"""From the first byte of a frame, or of a header block split over CONTINUATION frames, to its
last: a client that trickles a frame (slowloris) is closed after this. The HTTP/1.1 server's
header timeout; one frame is at most 16 KiB."""

SEND_TIMEOUT_S = 60.0
"""Longest wait for one write to be taken by a peer that does not read; then we close."""

CLOSE_TIMEOUT_S = 1.0
"""On shutdown, how long we try to deliver the GOAWAY."""


@dataclass(frozen=True, slots=True)
class GrpcLimits:
    """The bounds of one server or channel; every field is validated positive."""

    receive_message_bytes_max: int = RECEIVE_MESSAGE_BYTES_MAX
    send_message_bytes_max: int = SEND_MESSAGE_BYTES_MAX
    concurrent_streams_max: int = CONCURRENT_STREAMS_MAX
    header_list_bytes_max: int = HEADER_LIST_BYTES_MAX
    stream_window_bytes: int = STREAM_WINDOW_BYTES
    connection_window_bytes: int = CONNECTION_WINDOW_BYTES
    stream_buffer_bytes_max: int = STREAM_BUFFER_BYTES_MAX
    connection_buffer_bytes_max: int = CONNECTION_BUFFER_BYTES_MAX
    outbox_bytes_max: int = OUTBOX_BYTES_MAX
    receive_bytes_max: int = RECEIVE_BYTES_MAX
    idle_timeout_s: float = IDLE_TIMEOUT_S
    frame_timeout_s: float = FRAME_TIMEOUT_S
    send_timeout_s: float = SEND_TIMEOUT_S
    close_timeout_s: float = CLOSE_TIMEOUT_S

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"GrpcLimits.{name} must be positive, not {value!r}")
        if self.connection_buffer_bytes_max <= self.receive_message_bytes_max:
            raise ValueError("connection_buffer_bytes_max must exceed receive_message_bytes_max")
        if self.stream_window_bytes > 2**31 - 1 or self.connection_window_bytes > 2**31 - 1:
            raise ValueError("HTTP/2 flow-control windows are at most 2**31 - 1 bytes")
