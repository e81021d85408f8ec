"""Length-prefixed cbor2 frames: the unit that peers exchange.

Theory of operation
-------------------

A frame is a 4-byte big-endian length followed by that many bytes of CBOR (RFC 8949) that
encode one map: the payload. Peer payloads are plain data, nothing else::

    +----------------+--------------------------------------------+
    | length: uint32 | CBOR map of plain values (length bytes)    |
    +----------------+--------------------------------------------+

Everything a frame reader gets is hostile until checked, so a body is decoded in two steps:

1. ``check_structure`` walks the CBOR item headers (no Python object is built) and refuses,
   before anything is allocated: tags (so no datetime, bignum, set, shared reference, string
   reference or any other type a tag builds), simple values other than false, true and null
   (``undefined`` too), indefinite lengths, map keys that are not an int, a byte string or a
   text string (text only at the top level, so a payload is a ``dict[str, Any]``), containers
   that announce more items than bytes remain, nesting deeper than ``FRAME_DEPTH_MAX``, more
   than ``items_max`` items in all, and bytes after the one item. What remains decodes only to
   ``dict``, ``list``, ``str``, ``bytes``, ``int`` (64-bit CBOR range), ``float``, ``bool`` and
   ``None``, and the memory it takes is bounded by the body size plus about 100 bytes per item.
2. ``cbor2.loads`` (the compiled extension, see below) builds the objects, with no tag hooks,
   indefinite lengths refused, duplicate keys refused and strict UTF-8. Its errors become
   ``MalformedFrame``.

The frame length is checked against the limit before the body is read, so a peer cannot make
us buffer more than ``frame_bytes_max`` bytes (plus one receive of ``RECEIVE_BYTES``).

cbor2 must be its compiled extension, ``cbor2._cbor2`` (written in C up to cbor2 5.x, in Rust
since 6.0; 6.1 added ``allow_duplicate_keys``, so pyproject.toml asks for cbor2 >= 6.1.1).
A pure-Python decoder would be far slower and was not written for hostile input: this module
refuses to import without the extension.

Encoding (``encode_frame``) runs the same structure check on what it produced, so a member
learns at once that it tried to send a value its peers would refuse (a set, a datetime, a
tuple key), instead of seeing the peer close the connection.
"""

from __future__ import annotations

import struct
import sys
import types
from typing import Any, Final

import cbor2
import trio

from net.errors import EndOfFrames, FrameTooLarge, MalformedFrame, TruncatedFrame

if "cbor2._cbor2" not in sys.modules or not isinstance(cbor2.loads, types.BuiltinFunctionType):
    raise ImportError("net.frames needs cbor2's compiled extension (cbor2._cbor2): cbor2 >= 6.1.1")

Payload = dict[str, Any]
"""What a frame carries: a CBOR map of plain values, text keys at the top."""

FRAME_HEADER_BYTES: Final = 4
"""The big-endian length prefix."""
FRAME_LENGTH_BYTES_MAX: Final = (1 << 32) - 1
"""The largest length the prefix can express."""
STREAM_FRAME_BYTES_MAX: Final = 4 * 1024 * 1024
"""The largest frame body on a peer "stream" connection (one or a batch of Raft messages)."""
PIPELINE_CHUNK_BYTES: Final = 1024 * 1024
"""How much of a large payload one "pipeline" frame carries."""
PIPELINE_FRAME_BYTES_MAX: Final = PIPELINE_CHUNK_BYTES + 1024
"""The largest frame body on a "pipeline" connection: a chunk and its small envelope."""
FRAME_ITEMS_MAX: Final = 1 << 18
"""Default bound on the CBOR items (containers, keys and values) in one frame body."""
FRAME_DEPTH_MAX: Final = 32
"""The deepest nesting of maps and arrays allowed in a frame body (the top map is depth 1)."""
RECEIVE_BYTES: Final = 64 * 1024
"""How much a frame reader asks its stream for at a time."""

_HEADER: Final = struct.Struct(">I")


def check_structure(
    body: bytes, *, items_max: int = FRAME_ITEMS_MAX, depth_max: int = FRAME_DEPTH_MAX
) -> None:
    """Check that ``body`` is exactly one CBOR map of plain values, without decoding it.

    One pass over the item headers; strings are skipped by their length, so the cost is in
    the number of items, not of bytes. Every peer message is checked twice (by its sender
    after encoding, by its receiver before decoding), so the walk is table-driven
    (``_acceptable``, about 0.4 microseconds an item); a refused body is walked again by
    ``_explain_refusal`` for the precise reason.

    Args:
        body: a frame body.
        items_max: the most CBOR items (each container, key and value counts one) allowed.
        depth_max: the deepest nesting of containers allowed; the top map is depth 1.

    Raises:
        MalformedFrame: anything listed in the module docstring.
    """
    if not _acceptable(body, items_max, depth_max):
        _explain_refusal(body, items_max=items_max, depth_max=depth_max)
        raise MalformedFrame("refused")  # the two walks disagree: refuse anyway


def _header_table() -> tuple[tuple[int, int, int, int], ...]:
    """Per initial byte: (kind, width of the argument that follows, inline argument, major
    type). Kinds: ``_DONE`` (an int below 24, false, true, null), ``_SKIP`` (an int or float
    whose ``width`` bytes follow), ``_STRING``, ``_CONTAINER``, ``_REFUSED`` (tags, other
    simple values, indefinite lengths, reserved headers)."""
    table = []
    for initial in range(256):
        major, info = initial >> 5, initial & 0x1F
        width = 1 << (info - 24) if 24 <= info <= 27 else 0
        if info > 27 or major == 6:
            kind = _REFUSED
        elif major <= 1:
            kind = _SKIP if width else _DONE
        elif major <= 3:
            kind = _STRING
        elif major <= 5:
            kind = _CONTAINER
        elif 20 <= info <= 22:
            kind = _DONE
        elif 25 <= info <= 27:
            kind = _SKIP
        else:
            kind = _REFUSED
        table.append((kind, width, 0 if width else info, major))
    return tuple(table)


_DONE, _SKIP, _STRING, _CONTAINER, _REFUSED = range(5)
_HEADERS: Final = _header_table()


def _acceptable(body: bytes, items_max: int, depth_max: int) -> bool:
    """Whether ``check_structure`` accepts ``body``: the rules of ``_explain_refusal``, with
    one table lookup per item header."""
    size = len(body)
    if size == 0 or body[0] >> 5 != 5:
        return False
    headers = _HEADERS
    items_left = items_max - 1
    position = 0
    outer: list[tuple[int, bool]] = []  # (items left, is a map) of the enclosing containers
    count = 1  # items left in the current container; the top level holds one item
    in_map = False
    depth = 0
    while True:
        if count == 0:
            if not outer:
                return position == size
            count, in_map = outer.pop()
            depth -= 1
            continue
        count -= 1
        if position >= size:
            return False
        kind, width, argument, major = headers[body[position]]
        position += 1
        # a key (keys and values alternate: an odd count left means a key) must be an int,
        # a byte string or a text string; a top-level key a text string
        if in_map and count & 1 and major != 3 and (depth == 1 or major > 3):
            return False
        if kind == _DONE:
            continue
        if width:
            if position + width > size:
                return False
            if kind == _SKIP:
                position += width
                continue
            argument = int.from_bytes(body[position : position + width], "big")
            position += width
        if kind == _STRING:
            position += argument
            if position > size:
                return False
            continue
        if kind != _CONTAINER or depth >= depth_max:
            return False
        if major == 5:
            argument *= 2
        if argument > size - position:  # every item takes at least one byte
            return False
        items_left -= argument
        if items_left < 0:
            return False
        outer.append((count, in_map))
        count = argument
        in_map = major == 5
        depth += 1


def _explain_refusal(
    body: bytes, *, items_max: int = FRAME_ITEMS_MAX, depth_max: int = FRAME_DEPTH_MAX
) -> None:
    """Raise the precise ``MalformedFrame`` for a body ``_acceptable`` refused.

    The reference walk: one branch per rule, in the order the module docstring lists them,
    each with its own message. ``check_structure`` runs the faster table walk and calls this
    only for a body it refuses (a test checks that both accept exactly the same bodies).
    """
    size = len(body)
    if size == 0:
        raise MalformedFrame("empty body")
    if body[0] >> 5 != 5:
        raise MalformedFrame("the payload is not a CBOR map")
    items_left = items_max - 1
    position = 0
    outer: list[tuple[int, bool]] = []  # (items left, is a map) of the enclosing containers
    count = 1  # items left in the current container; the top level holds one item
    in_map = False
    depth = 0
    while True:
        if count == 0:
            if not outer:
                break
            count, in_map = outer.pop()
            depth -= 1
            continue
        count -= 1
        if position >= size:
            raise MalformedFrame("the body ends inside an item")
        initial = body[position]
        position += 1
        major = initial >> 5
        argument = initial & 0x1F
        if argument >= 24:
            if argument > 27:
                raise MalformedFrame("indefinite lengths and reserved item headers are refused")
            width = 1 << (argument - 24)
            if position + width > size:
                raise MalformedFrame("the body ends inside an item header")
            argument = int.from_bytes(body[position : position + width], "big")
            position += width
        if in_map and count & 1:  # keys and values alternate: an odd count left means a key
            if depth == 1 and major != 3:
                raise MalformedFrame("a top-level key is not a text string")
            if major > 3:
                raise MalformedFrame("a map key is not an int, a byte string or a text string")
        if major <= 1:
            continue
        if major <= 3:
            position += argument
            if position > size:
                raise MalformedFrame("a string is longer than the rest of the body")
            continue
        if major <= 5:
            if depth >= depth_max:
                raise MalformedFrame(f"containers nested deeper than {depth_max}")
            if major == 5:
                argument *= 2
            if argument > size - position:  # every item takes at least one byte
                raise MalformedFrame("a container announces more items than bytes remain")
            items_left -= argument
            if items_left < 0:
                raise MalformedFrame(f"more than {items_max} CBOR items")
            outer.append((count, in_map))
            count = argument
            in_map = major == 5
            depth += 1
            continue
        if major == 6:
            raise MalformedFrame(f"CBOR tag {argument} is refused")
        # major 7, by the low 5 bits: 20 false, 21 true, 22 null, 25 to 27 floats
        info = initial & 0x1F
        if not (20 <= info <= 22 or 25 <= info <= 27):
            raise MalformedFrame(f"CBOR simple value {argument} is refused")
    if position != size:
        raise MalformedFrame(f"{size - position} bytes after the payload")


def decode_payload(
    body: bytes, *, items_max: int = FRAME_ITEMS_MAX, depth_max: int = FRAME_DEPTH_MAX
) -> Payload:
    """Decode a frame body into its payload.

    Args:
        body: the bytes after a frame's length prefix.
        items_max: see ``check_structure``.
        depth_max: see ``check_structure``.

    Returns:
        The payload, made only of plain values.

    Raises:
        MalformedFrame: the body is not exactly one CBOR map of plain values.
    """
    check_structure(body, items_max=items_max, depth_max=depth_max)
    try:
        payload = cbor2.loads(
            body,
            max_depth=depth_max + 1,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            str_errors="strict",
        )
    except (cbor2.CBORError, ValueError, TypeError) as error:
        # What is left after check_structure: bad UTF-8, a duplicate key. Only the first part
        # of cbor2's message is kept: the rest can quote the peer's bytes.
        text = str(error)
        summary = "a duplicate map key" if "uplicate" in text else text.split(":", 1)[0][:80]
        raise MalformedFrame(f"not valid CBOR: {summary}") from None
    if type(payload) is not dict:
        raise MalformedFrame("the payload is not a CBOR map")
    return payload


def encode_payload(payload: Payload, *, items_max: int = FRAME_ITEMS_MAX) -> bytes:
    """Encode a payload as a frame body (no length prefix), checked as a receiver would.

    Raises:
        ValueError: the payload holds a value a peer would refuse (the message says which).
    """
    try:
        body: bytes = cbor2.dumps(payload)
    except cbor2.CBOREncodeError as error:
        raise ValueError(f"payload cannot be encoded: {error}") from None
    try:
        check_structure(body, items_max=items_max)
    except MalformedFrame as error:
        raise ValueError(f"payload would be refused by a peer: {error}") from None
    return body


def encode_frame(
    payload: Payload, limit_bytes: int = STREAM_FRAME_BYTES_MAX, *, items_max: int = FRAME_ITEMS_MAX
) -> bytes:
    """Encode a payload as one frame: the length prefix, then the CBOR body.

    Args:
        payload: a dict of plain values with text keys.
        limit_bytes: the largest body allowed (the receiver's limit).
        items_max: the most CBOR items allowed (the receiver's limit).

    Raises:
        FrameTooLarge: the body is longer than ``limit_bytes``.
        ValueError: the payload holds a value a peer would refuse.
    """
    assert 0 <= limit_bytes <= FRAME_LENGTH_BYTES_MAX, limit_bytes
    body = encode_payload(payload, items_max=items_max)
    if len(body) > limit_bytes:
        raise FrameTooLarge(len(body), limit_bytes)
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Reads frames from a stream, with an internal buffer.

    The buffer never holds more than one frame plus one receive (``RECEIVE_BYTES``). The
    limits can be changed between frames (a handshake is read with small ones).
    """

    def __init__(
        self,
        stream: trio.abc.ReceiveStream,
        *,
        frame_bytes_max: int = STREAM_FRAME_BYTES_MAX,
        items_max: int = FRAME_ITEMS_MAX,
        receive_bytes: int = RECEIVE_BYTES,
    ) -> None:
        assert receive_bytes > 0, receive_bytes
        self._stream = stream
        self._buffer = bytearray()
        self._receive_bytes = receive_bytes
        self.frame_bytes_max = frame_bytes_max
        self.items_max = items_max

    @property
    def frame_bytes_max(self) -> int:
        """The largest frame body this reader accepts."""
        return self._frame_bytes_max

    @frame_bytes_max.setter
    def frame_bytes_max(self, value: int) -> None:
        assert 0 < value <= FRAME_LENGTH_BYTES_MAX, value
        self._frame_bytes_max = value

    @property
    def items_max(self) -> int:
        """The most CBOR items a frame body may hold."""
        return self._items_max

    @items_max.setter
    def items_max(self, value: int) -> None:
        assert value > 0, value
        self._items_max = value

    async def receive(self) -> Payload:
        """The next frame's payload.

        Raises:
            EndOfFrames: the stream ended cleanly before a new frame.
            TruncatedFrame: the stream ended inside a frame.
            FrameTooLarge: the frame's length is over ``frame_bytes_max`` (nothing of its body
                has been waited for).
            MalformedFrame: the body is not one CBOR map of plain values.
            trio.BrokenResourceError: the stream broke (its own errors pass through).
        """
        if not self._buffer and not await self._receive_more():
            raise EndOfFrames()
        await self._fill(FRAME_HEADER_BYTES)
        end = FRAME_HEADER_BYTES + self._checked_length()
        await self._fill(end)
        return self._take(end)

    def receive_buffered(self) -> Payload | None:
        """The next frame's payload if the buffer already holds all of it, else None; never
        waits (a batch of frames that arrived in one receive is read without a checkpoint
        per frame).

        Raises:
            FrameTooLarge, MalformedFrame: as ``receive``.
        """
        if len(self._buffer) < FRAME_HEADER_BYTES:
            return None
        end = FRAME_HEADER_BYTES + self._checked_length()
        if len(self._buffer) < end:
            return None
        return self._take(end)

    def _checked_length(self) -> int:
        """The buffered frame's body length, refused before any of the body is waited for."""
        (length,) = _HEADER.unpack_from(self._buffer)
        if length > self._frame_bytes_max:
            raise FrameTooLarge(length, self._frame_bytes_max)
        return int(length)

    def _take(self, end: int) -> Payload:
        body = bytes(self._buffer[FRAME_HEADER_BYTES:end])
        del self._buffer[:end]
        return decode_payload(body, items_max=self._items_max)

    async def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            if not await self._receive_more():
                raise TruncatedFrame(
                    f"the stream ended {len(self._buffer)} bytes into a frame of {size}"
                )

    async def _receive_more(self) -> bool:
        data = await self._stream.receive_some(self._receive_bytes)
        if not data:
            return False
        self._buffer += data
        return True
