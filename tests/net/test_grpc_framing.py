"""The pure parts of gRPC's wire format: messages, timeouts, status text, frame checks."""

from __future__ import annotations

import struct
from random import Random

import hpack
import pytest

from net.grpc.framing import (
    FrameGuard,
    MessageDecoder,
    decode_status_message,
    encode_message,
    encode_status_message,
    format_timeout,
    literal_header_block,
    parse_timeout,
)
from net.v3.errors import RpcError, StatusCode


@pytest.mark.parametrize("seed", range(20))
def test_messages_come_out_whole_however_the_bytes_are_split(seed: int) -> None:
    rng = Random(seed)
    messages = [rng.randbytes(rng.randrange(300)) for _ in range(rng.randrange(10))]
    step = rng.randrange(1, 50)
    wire = b"".join(encode_message(message) for message in messages)
    decoder = MessageDecoder(1000)
    out: list[bytes] = []
    for start in range(0, len(wire), step):
        out += decoder.feed(wire[start : start + step])
    assert out == messages
    assert not decoder.in_message


def test_an_oversized_message_is_refused_from_its_prefix_alone() -> None:
    decoder = MessageDecoder(10)
    with pytest.raises(RpcError) as caught:
        decoder.feed(struct.pack(">BI", 0, 11))
    assert caught.value == RpcError(
        StatusCode.RESOURCE_EXHAUSTED, "grpc: received message larger than max (11 vs. 10)"
    )
    assert MessageDecoder(10).feed(encode_message(b"x" * 10)) == [b"x" * 10]


def test_unknown_payload_format_is_internal() -> None:
    with pytest.raises(RpcError) as caught:
        MessageDecoder(10).feed(b"\x02\x00\x00\x00\x00")
    assert caught.value == RpcError(
        StatusCode.INTERNAL, "grpc: received unexpected payload format 2"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1S", 1.0), ("100m", 0.1), ("5M", 300.0), ("2H", 7200.0), ("250u", 250e-6), ("7n", 7e-9)],
)
def test_timeouts_parse(text: str, seconds: float) -> None:
    assert parse_timeout(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "S", "1", "1x", "-1S", "123456789S", "1.5S", "\u0661S"])
def test_malformed_timeouts_are_none(text: str) -> None:
    assert parse_timeout(text) is None


@pytest.mark.parametrize("seconds", [1e-9, 3.3e-7, 0.0015, 0.1, 1.0, 59.99, 1234.5, 1e6, 1e7])
def test_formatted_timeouts_round_up_and_fit(seconds: float) -> None:
    text = format_timeout(seconds)
    parsed = parse_timeout(text)
    assert parsed is not None
    assert parsed >= seconds * (1 - 1e-9)
    assert parsed <= seconds * 1.01 + 1e-9


@pytest.mark.parametrize(
    "message", ["", "plain", "100%", "%41 is not decoded twice", "é ✓ 𝄞", "\x00\r\n\x7f", "%"]
)
def test_status_messages_round_trip_through_printable_ascii(message: str) -> None:
    encoded = encode_status_message(message)
    assert all(0x20 <= ord(char) <= 0x7E for char in encoded)
    assert decode_status_message(encoded) == message


def test_status_message_encoding_is_grpcs() -> None:
    assert encode_status_message("50% ok ✓\n") == "50%25 ok %E2%9C%93%0A"
    assert decode_status_message("bad %zz escape %") == "bad %zz escape %"


def frame(length: int, kind: int, flags: int = 0, stream_id: int = 1) -> bytes:
    return length.to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big")


def test_the_frame_guard_skips_payloads_and_stops_oversized_frames() -> None:
    guard = FrameGuard(4, 100, 250)
    wire = b"PRI " + frame(100, 0) + b"x" * 100 + frame(3, 0) + b"abc"
    for byte in wire:
        assert guard.feed(bytes([byte])) is None
    assert guard.feed(frame(101, 0)) == "frame of 101 bytes over the 100 allowed"


def test_the_frame_guard_bounds_a_header_block_over_continuations() -> None:
    guard = FrameGuard(0, 100, 250)
    wire = frame(100, 1) + b"h" * 100 + frame(100, 9) + b"c" * 100
    assert guard.feed(wire) is None
    assert guard.feed(frame(100, 9)) == "header block over 250 bytes"
    ended = FrameGuard(0, 100, 250)
    wire = frame(100, 1) + b"h" * 100 + frame(100, 9, 0x4) + b"c" * 100
    assert ended.feed(wire + frame(100, 1, 0x4) + b"h" * 100) is None


@pytest.mark.parametrize("table_bytes", [4096, 0])
def test_a_literal_header_block_decodes_alike_whatever_the_table_holds(table_bytes: int) -> None:
    """hpack's own decoder reads it back, before and after indexed blocks changed its table
    (or with a table of 0 bytes), and it adds nothing to the table."""
    headers = (
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"x-long", b"v" * 300),  # lengths over 127: a multi-byte integer
        (b"grpc-status", b"0"),
    )
    block = literal_header_block(headers)
    decoder = hpack.Decoder()
    encoder = hpack.Encoder()
    decoder.header_table_size = encoder.header_table_size = table_bytes
    for round_number in range(3):
        assert tuple(decoder.decode(block, raw=True)) == headers
        indexed = encoder.encode([(b"grpc-status", b"%d" % round_number), (b"x-other", b"o")])
        assert decoder.decode(indexed, raw=True) == [
            (b"grpc-status", b"%d" % round_number),
            (b"x-other", b"o"),
        ]
    table_before = len(decoder.header_table.dynamic_entries)
    decoder.decode(block, raw=True)
    assert len(decoder.header_table.dynamic_entries) == table_before
