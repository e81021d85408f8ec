"""gRPC's wire format on top of HTTP/2, with no I/O: messages, timeouts, status text.

A gRPC message on an HTTP/2 stream is a 5-byte prefix (a compressed flag and a big-endian
length) and the protobuf bytes. :class:`MessageDecoder` turns the DATA of one stream into
whole messages, refusing an oversized one as soon as its prefix announces it (so no more than
the prefix of it is ever buffered). The error texts are grpc-go's, which etcd's clients see.
"""

from __future__ import annotations

import struct

from net.v3.errors import RpcError, StatusCode

PREFIX_BYTES = 5
_PREFIX = struct.Struct(">BI")

CONTENT_TYPE = b"application/grpc"
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TIMEOUT_DIGITS_MAX = 8
"""A grpc-timeout value has at most 8 digits (the gRPC HTTP/2 spec)."""

_TIMEOUT_UNITS_S = {
    "H": 3600.0,
    "M": 60.0,
    "S": 1.0,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
}


def encode_message(payload: bytes) -> bytes:
    """One uncompressed message with its length prefix."""
    return _PREFIX.pack(0, len(payload)) + payload


_HPACK_STATUS_200 = b"\x88"
"""``:status: 200``, entry 8 of HPACK's static table."""
_HPACK_LITERAL_NEW_NAME = b"\x00"
"""A literal field without indexing, its name a literal too (RFC 7541, 6.2.2)."""
_HPACK_STRING_PREFIX_BITS = 7


def _hpack_integer(value: int, prefix_bits: int) -> bytes:
    """RFC 7541, 5.1 (the byte's other bits zero: a string that is not Huffman-coded)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    encoded = bytearray([limit])
    value -= limit
    while value >= 0x80:
        encoded.append((value & 0x7F) | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def literal_header_block(headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """An HPACK block that neither side's dynamic table takes part in: ``:status: 200`` by
    its static index, every other field a literal without indexing. Such a block means the
    same whatever the tables hold, so it can be encoded once and sent on every call."""
    block = bytearray()
    for name, value in headers:
        if (name, value) == (b":status", b"200"):
            block += _HPACK_STATUS_200
            continue
        block += _HPACK_LITERAL_NEW_NAME
        block += _hpack_integer(len(name), _HPACK_STRING_PREFIX_BITS) + name
        block += _hpack_integer(len(value), _HPACK_STRING_PREFIX_BITS) + value
    return bytes(block)


def too_large_to_receive(length: int, limit: int) -> RpcError:
    return RpcError(
        StatusCode.RESOURCE_EXHAUSTED,
        f"grpc: received message larger than max ({length} vs. {limit})",
    )


def too_large_to_send(length: int, limit: int) -> RpcError:
    return RpcError(
        StatusCode.RESOURCE_EXHAUSTED,
        f"grpc: trying to send message larger than max ({length} vs. {limit})",
    )


class MessageDecoder:
    """The messages of one stream's DATA, in order; bounded by the largest message allowed.

    Args:
        message_bytes_max: a message announcing more is refused at once.
        encoding: the stream's ``grpc-encoding`` ("" when absent); we decompress nothing.
    """

    def __init__(self, message_bytes_max: int, encoding: str = "") -> None:
        self._message_bytes_max = message_bytes_max
        self._encoding = encoding
        self._buffer = bytearray()

    @property
    def buffered_bytes(self) -> int:
        """Bytes of a message not yet complete."""
        return len(self._buffer)

    @property
    def in_message(self) -> bool:
        """Whether the bytes so far end inside a message (a stream ending here is truncated)."""
        return bool(self._buffer)

    def clear(self) -> None:
        """Drop a partial message (the stream failed or ended)."""
        self._buffer.clear()

    def feed(self, data: bytes) -> list[bytes]:
        """Take ``data``; return the messages it completes.

        Raises:
            RpcError: a message is compressed, has an unknown flag or is too large (grpc-go's
                code and text); the stream is unusable after this.
        """
        self._buffer += data
        messages: list[bytes] = []
        while len(self._buffer) >= PREFIX_BYTES:
            flag, length = _PREFIX.unpack_from(self._buffer)
            self._check(flag, length)
            end = PREFIX_BYTES + length
            if len(self._buffer) < end:
                break
            messages.append(bytes(self._buffer[PREFIX_BYTES:end]))
            del self._buffer[:end]
        return messages

    def _check(self, flag: int, length: int) -> None:
        if flag == 1:
            if self._encoding in ("", "identity"):
                raise RpcError(
                    StatusCode.INTERNAL, "grpc: compressed flag set with identity or empty encoding"
                )
            raise RpcError(
                StatusCode.UNIMPLEMENTED,
                f'grpc: Decompressor is not installed for grpc-encoding "{self._encoding}"',
            )
        if flag != 0:
            raise RpcError(StatusCode.INTERNAL, f"grpc: received unexpected payload format {flag}")
        if length > self._message_bytes_max:
            raise too_large_to_receive(length, self._message_bytes_max)


_FRAME_HEADER_BYTES = 9
_HEADERS, _PUSH_PROMISE, _CONTINUATION = 0x1, 0x5, 0x9
_END_HEADERS = 0x4


class FrameGuard:
    """Checks the lengths of incoming HTTP/2 frames before ``h2`` buffers them.

    ``h2`` keeps a frame's bytes until the whole frame has arrived, however long its header
    says it is (up to 16 MiB), and only then checks it against SETTINGS_MAX_FRAME_SIZE; a
    header block split over CONTINUATION frames it gathers without a bound. This scanner
    walks the frame headers of the byte stream (skipping payloads) and says no at the first
    frame over ``frame_bytes_max`` or header block over ``header_block_bytes_max``.

    Args:
        skip_bytes: bytes before the first frame (the client preface, on a server).
        frame_bytes_max: our SETTINGS_MAX_FRAME_SIZE.
        header_block_bytes_max: the encoded header fields of one request.
    """

    def __init__(self, skip_bytes: int, frame_bytes_max: int, header_block_bytes_max: int) -> None:
        self._skip = skip_bytes
        self._frame_bytes_max = frame_bytes_max
        self._header_block_bytes_max = header_block_bytes_max
        self._header = bytearray()
        self._header_block_bytes: int | None = None
        self.frames = 0
        """Frames begun so far (their first byte read): a new frame began when it moves."""

    def feed(self, data: bytes) -> str | None:
        """Scan ``data``; None if all is well, else why the peer must be refused."""
        view = memoryview(data)
        while view:
            if self._skip:
                taken = min(self._skip, len(view))
                self._skip -= taken
                view = view[taken:]
                continue
            if not self._header:
                self.frames += 1
            needed = _FRAME_HEADER_BYTES - len(self._header)
            self._header += view[:needed]
            view = view[needed:]
            if len(self._header) < _FRAME_HEADER_BYTES:
                break
            problem = self._check(bytes(self._header))
            self._header.clear()
            if problem is not None:
                return problem
        return None

    @property
    def in_frame(self) -> bool:
        """Whether the bytes so far end inside a frame (its header or its payload)."""
        return self._skip > 0 or bool(self._header)

    @property
    def in_header_block(self) -> bool:
        """Whether a request's header block is open: a HEADERS frame came whose CONTINUATION
        frames have not all come."""
        return self._header_block_bytes is not None

    def _check(self, header: bytes) -> str | None:
        length = int.from_bytes(header[:3], "big")
        kind, flags = header[3], header[4]
        if length > self._frame_bytes_max:
            return f"frame of {length} bytes over the {self._frame_bytes_max} allowed"
        if kind in (_HEADERS, _PUSH_PROMISE) and not flags & _END_HEADERS:
            self._header_block_bytes = length
        elif kind == _CONTINUATION and self._header_block_bytes is not None:
            self._header_block_bytes += length
            if self._header_block_bytes > self._header_block_bytes_max:
                return f"header block over {self._header_block_bytes_max} bytes"
            if flags & _END_HEADERS:
                self._header_block_bytes = None
        self._skip = length
        return None


def parse_timeout(text: str) -> float | None:
    """Seconds of a ``grpc-timeout`` value (``"100m"``), or None if it is malformed."""
    value, unit = text[:-1], text[-1:]
    if not value.isdigit() or not value.isascii() or len(value) > TIMEOUT_DIGITS_MAX:
        return None
    scale = _TIMEOUT_UNITS_S.get(unit)
    if scale is None:
        return None
    return int(value) * scale


def format_timeout(seconds: float) -> str:
    """A ``grpc-timeout`` value for ``seconds`` (rounded up, at least 1 ns, at most 8 digits)."""
    for unit, scale in (("n", 1e-9), ("u", 1e-6), ("m", 1e-3), ("S", 1.0), ("M", 60.0)):
        count = -(-max(seconds, 0.0) // scale)
        if count < 10**TIMEOUT_DIGITS_MAX:
            return f"{max(int(count), 1)}{unit}"
    return f"{min(int(-(-seconds // 3600.0)), 10**TIMEOUT_DIGITS_MAX - 1)}H"


def encode_status_message(message: str) -> str:
    """``grpc-message``: UTF-8, then every byte outside printable ASCII and ``%`` as %XX."""
    out = []
    for byte in message.encode("utf-8"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def decode_status_message(text: str) -> str:
    """The inverse of :func:`encode_status_message`; a malformed escape is kept as it is."""
    raw = text.encode("latin-1", errors="replace")
    out = bytearray()
    index = 0
    while index < len(raw):
        byte = raw[index]
        if byte == 0x25 and _is_hex(raw[index + 1 : index + 3]):
            out.append(int(raw[index + 1 : index + 3], 16))
            index += 3
        else:
            out.append(byte)
            index += 1
    return out.decode("utf-8", errors="replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(chr(c) in "0123456789abcdefABCDEF" for c in pair)


_HTTP_TO_CODE = {
    400: StatusCode.INTERNAL,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.UNIMPLEMENTED,
    429: StatusCode.UNAVAILABLE,
    502: StatusCode.UNAVAILABLE,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.UNAVAILABLE,
}


def status_from_http(status: int) -> StatusCode:
    """The gRPC code of a response that is not HTTP 200 (gRPC's http-grpc-status-mapping)."""
    return _HTTP_TO_CODE.get(status, StatusCode.UNKNOWN)
