"""Frames: encoding, the structure check on hostile bodies, and FrameReader over a stream."""

from __future__ import annotations

import struct
import sys
from random import Random
from typing import Any

import cbor2
import pytest
import trio
import trio.testing

import net.frames as frames_module
from net.errors import EndOfFrames, FrameTooLarge, MalformedFrame, TruncatedFrame
from net.frames import (
    FRAME_DEPTH_MAX,
    FRAME_ITEMS_MAX,
    STREAM_FRAME_BYTES_MAX,
    FrameReader,
    check_structure,
    decode_payload,
    encode_frame,
    encode_payload,
)

PLAIN = {
    "int": 7,
    "negative": -(1 << 64),
    "largest": (1 << 64) - 1,
    "float": 1.5,
    "text": "héllo",
    "bytes": b"\x00\xff" * 100,
    "flags": [True, False, None],
    "nested": {"a": [1, [2, [3, {"b": b""}]]], 5: "int key", b"k": "bytes key"},
    "empty": {},
}


def header(length: int) -> bytes:
    return struct.pack(">I", length)


def test_cbor2_is_the_compiled_extension() -> None:
    assert "cbor2._cbor2" in sys.modules
    assert cbor2.loads.__module__ == "cbor2._cbor2"
    assert type(cbor2.loads).__name__ == "builtin_function_or_method"


def test_a_payload_round_trips() -> None:
    frame = encode_frame(PLAIN)
    assert frame[:4] == header(len(frame) - 4)
    assert decode_payload(frame[4:]) == PLAIN


def test_random_plain_payloads_round_trip_and_pass_the_check() -> None:
    random = Random(7)

    def value(depth: int) -> Any:
        kind = random.randrange(9 if depth < 6 else 6)
        if kind == 0:
            return random.randrange(-(1 << 64), 1 << 64)
        if kind == 1:
            return random.random() * 1e6
        if kind == 2:
            return random.randbytes(random.randrange(300))
        if kind == 3:
            return "".join(chr(random.randrange(32, 0x2FFF)) for _ in range(random.randrange(20)))
        if kind == 4:
            return random.choice([True, False, None])
        if kind == 5:
            return random.randrange(24)
        if kind in (6, 7):
            return [value(depth + 1) for _ in range(random.randrange(5))]
        return {random.randrange(1000): value(depth + 1) for _ in range(random.randrange(5))}

    for _ in range(300):
        payload = {f"k{index}": value(1) for index in range(random.randrange(6))}
        assert decode_payload(encode_payload(payload)) == payload


def test_encode_refuses_what_a_peer_would_refuse() -> None:
    for payload in ({"a": {1, 2}}, {1: "int top-level key"}, {"a": {(1,): 2}}, {"a": 1 << 64}):
        with pytest.raises(ValueError):
            encode_frame(payload)  # type: ignore[arg-type]
    deep: dict[str, Any] = {"a": []}
    inner = deep["a"]
    for _ in range(FRAME_DEPTH_MAX):
        inner.append([])
        inner = inner[0]
    with pytest.raises(ValueError, match="deeper"):
        encode_frame(deep)


def test_encode_refuses_a_frame_over_the_limit() -> None:
    with pytest.raises(FrameTooLarge) as caught:
        encode_frame({"a": b"x" * 100}, limit_bytes=50)
    assert caught.value.limit_bytes == 50
    assert caught.value.length_bytes > 100


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"\xff\x00\x13garbage", "not a CBOR map"),
        (cbor2.dumps([1, 2]), "not a CBOR map"),
        (cbor2.dumps("text"), "not a CBOR map"),
        (cbor2.dumps({"a": 1}) + b"\x00", "after the payload"),
        (cbor2.dumps({"a": cbor2.CBORTag(1, 0)}), "tag 1"),  # a datetime
        (bytes.fromhex("a16161c24101"), "tag 2"),  # a bignum
        (bytes.fromhex("a16161d9010280"), "tag 258"),  # a set
        (bytes.fromhex("a16161d81c80"), "tag 28"),  # a shared reference
        (bytes.fromhex("a16161d9d9f7a0"), "tag 55799"),  # self-described CBOR
        (bytes.fromhex("a16161f7"), "simple value 23"),  # undefined
        (bytes.fromhex("a16161f0"), "simple value 16"),
        (bytes.fromhex("a16161f8ff"), "simple value 255"),
        (bytes.fromhex("a161619f01ff"), "indefinite"),
        (bytes.fromhex("a161615f4101ff"), "indefinite"),
        (bytes.fromhex("bf616101ff"), "indefinite"),
        (bytes.fromhex("a16161fc"), "reserved"),
        (bytes.fromhex("a10101"), "top-level key"),
        (bytes.fromhex("a16161a180f6"), "map key"),  # an array as a key
        (bytes.fromhex("a16161a1f6f6"), "map key"),  # null as a key
        (bytes.fromhex("a161619b0000000100000000"), "announces more items"),
        (bytes.fromhex("a16161bb0000000100000000"), "announces more items"),
        (bytes.fromhex("a161615b0000000100000000"), "longer than the rest"),
        (bytes.fromhex("a1616119"), "inside an item header"),
        (bytes.fromhex("a16161828100"), "ends inside an item"),
        (bytes.fromhex("a2616101616102"), "duplicate"),  # {"a": 1, "a": 2}
        (bytes.fromhex("a1616162ffff"), "not valid CBOR"),  # bad UTF-8
    ],
)
def test_decode_refuses_hostile_bodies(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedFrame, match=f"(?i){reason}"):
        decode_payload(body)


def test_the_item_bound_is_checked_before_decoding() -> None:
    body = encode_payload({"a": list(range(10))})  # the map, the key, the list and 10 ints
    assert decode_payload(body, items_max=13)
    with pytest.raises(MalformedFrame, match="more than 12 CBOR items"):
        check_structure(body, items_max=12)
    # A frame of a million empty arrays would cost some 64 MB to build; it is refused unbuilt.
    hostile = bytes.fromhex("a16161") + b"\x9a" + struct.pack(">I", 1 << 20) + b"\x80" * (1 << 20)
    with pytest.raises(MalformedFrame, match="CBOR items"):
        check_structure(hostile)


def test_depth_is_bounded() -> None:
    shallow = bytes.fromhex("a16161") + b"\x81" * (FRAME_DEPTH_MAX - 2) + b"\x80"
    assert decode_payload(shallow)
    deep = bytes.fromhex("a16161") + b"\x81" * (FRAME_DEPTH_MAX - 1) + b"\x80"
    with pytest.raises(MalformedFrame, match="deeper"):
        decode_payload(deep)


def test_random_garbage_never_escapes_as_another_error() -> None:
    random = Random(11)
    valid = encode_payload(PLAIN)
    for _ in range(2000):
        body = bytearray(valid)
        for _ in range(random.randrange(1, 6)):
            body[random.randrange(len(body))] = random.randrange(256)
        body = body[: random.randrange(len(body) + 1)]
        try:
            payload = decode_payload(bytes(body))
        except MalformedFrame:
            continue
        assert type(payload) is dict


async def reader_over(*chunks: bytes, close: bool = True, **limits: int) -> FrameReader:
    """A FrameReader over a memory stream that has received these chunks."""
    send, receive = trio.testing.memory_stream_one_way_pair()
    for chunk in chunks:
        await send.send_all(chunk)
    if close:
        await send.aclose()
    return FrameReader(receive, **limits)


async def test_frames_are_read_whole_however_the_bytes_arrive() -> None:
    payloads = [{"n": index, "data": b"x" * index * 1000} for index in range(20)]
    stream = b"".join(encode_frame(payload) for payload in payloads)
    send, receive = trio.testing.memory_stream_one_way_pair()
    reader = FrameReader(receive, receive_bytes=7)

    async def trickle() -> None:
        random = Random(3)
        position = 0
        while position < len(stream):
            step = random.randrange(1, 5000)
            await send.send_all(stream[position : position + step])
            position += step
            await trio.lowlevel.checkpoint()
        await send.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        assert [await reader.receive() for _ in payloads] == payloads
        with pytest.raises(EndOfFrames):
            await reader.receive()


async def test_several_frames_in_one_receive() -> None:
    reader = await reader_over(encode_frame({"a": 1}) + encode_frame({"b": 2}))
    assert await reader.receive() == {"a": 1}
    assert await reader.receive() == {"b": 2}
    with pytest.raises(EndOfFrames):
        await reader.receive()


async def test_receive_buffered_takes_the_whole_frames_already_read_and_never_waits() -> None:
    last = encode_frame({"c": 3})
    reader = await reader_over(
        encode_frame({"a": 1}) + encode_frame({"b": 2}) + last[:3], close=False
    )
    assert reader.receive_buffered() is None  # nothing read from the stream yet
    assert await reader.receive() == {"a": 1}  # one receive brought all three pieces
    assert reader.receive_buffered() == {"b": 2}
    assert reader.receive_buffered() is None  # half a header of the third
    with trio.testing.assert_no_checkpoints():
        assert reader.receive_buffered() is None


async def test_receive_buffered_refuses_a_frame_too_large_by_its_header_alone() -> None:
    reader = await reader_over(encode_frame({"a": 1}) + header(1000), close=False)
    reader.frame_bytes_max = 100
    assert await reader.receive() == {"a": 1}
    with pytest.raises(FrameTooLarge):
        reader.receive_buffered()


async def test_receive_buffered_refuses_garbage() -> None:
    reader = await reader_over(encode_frame({"a": 1}) + header(5) + b"hello", close=False)
    assert await reader.receive() == {"a": 1}
    with pytest.raises(MalformedFrame):
        reader.receive_buffered()


async def test_too_large_is_raised_before_the_body_is_waited_for() -> None:
    # The stream stays open and the body never comes: reading it would hang.
    reader = await reader_over(header(STREAM_FRAME_BYTES_MAX + 1), close=False)
    with trio.fail_after(1), pytest.raises(FrameTooLarge) as caught:
        await reader.receive()
    assert caught.value.length_bytes == STREAM_FRAME_BYTES_MAX + 1
    assert caught.value.limit_bytes == STREAM_FRAME_BYTES_MAX


async def test_the_limit_can_be_lowered_between_frames() -> None:
    reader = await reader_over(encode_frame({"a": 1}), encode_frame({"b": b"x" * 100}))
    reader.frame_bytes_max = 50
    assert await reader.receive() == {"a": 1}
    with pytest.raises(FrameTooLarge):
        await reader.receive()


async def test_garbage_is_malformed() -> None:
    reader = await reader_over(header(5) + b"hello")
    with pytest.raises(MalformedFrame):
        await reader.receive()


async def test_an_http_request_is_too_large() -> None:
    reader = await reader_over(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", frame_bytes_max=1024)
    with pytest.raises(FrameTooLarge):
        await reader.receive()


async def test_a_half_frame_then_eof_is_truncated() -> None:
    frame = encode_frame({"a": b"x" * 100})
    reader = await reader_over(frame[:50])
    with pytest.raises(TruncatedFrame):
        await reader.receive()


async def test_half_a_header_then_eof_is_truncated() -> None:
    reader = await reader_over(encode_frame({"a": 1}) + b"\x00\x00")
    assert await reader.receive() == {"a": 1}
    with pytest.raises(TruncatedFrame):
        await reader.receive()


async def test_a_clean_close_ends_the_frames() -> None:
    reader = await reader_over()
    with pytest.raises(EndOfFrames):
        await reader.receive()


def _random_plain(random: Random, depth: int) -> Any:
    roll = random.random()
    if depth > 3 or roll < 0.4:
        leaves = [0, -1, 23, 24, 255, 256, 65536, 2**32, 2**63 - 1, -(2**63), 1.5, True, None]
        return random.choice([*leaves, False, "s", "ü", b"b" * random.randrange(30)])
    if roll < 0.7:
        return [_random_plain(random, depth + 1) for _ in range(random.randrange(4))]
    keys = ["a", "b", 1, -3, b"k"]
    return {random.choice(keys): _random_plain(random, depth + 1) for _ in range(3)}


def _walks_agree(body: bytes, items_max: int, depth_max: int) -> bool:
    """Assert that both walks decide alike on ``body``; whether they accept it."""
    try:
        frames_module._explain_refusal(body, items_max=items_max, depth_max=depth_max)
        explained = True
    except MalformedFrame:
        explained = False
    fast = frames_module._acceptable(body, items_max, depth_max)
    assert fast == explained, (body.hex(), items_max, depth_max)
    return fast


def test_the_fast_walk_and_the_explaining_walk_accept_exactly_the_same_bodies() -> None:
    """``check_structure`` (table-driven) and ``_explain_refusal`` (one branch per rule)
    agree: on every initial byte as a value and as a nested key; on random plain bodies at
    every item bound around their size and a tight depth; on mutations of them (a byte
    changed, cut, inserted)."""
    decisions = []
    for initial in range(256):
        for tail in range(10):
            after = bytes([initial]) + b"\x01" * tail
            for body in (
                bytes.fromhex("a16161") + after,
                bytes.fromhex("a16161a1") + after + b"\x01",
            ):
                decisions.append(_walks_agree(body, FRAME_ITEMS_MAX, FRAME_DEPTH_MAX))
    random = Random(5)
    bodies = [cbor2.dumps({"x": _random_plain(random, 0)}) for _ in range(300)]
    bodies += [cbor2.dumps({1: 2}), cbor2.dumps([1]), cbor2.dumps({"a": {1}})]
    bodies += [cbor2.dumps({"a": cbor2.undefined}), cbor2.dumps({"a": cbor2.CBORTag(5, 1)})]
    for body in bodies:
        for items_max in range(1, 16):
            decisions.append(_walks_agree(body, items_max, FRAME_DEPTH_MAX))
        decisions.append(_walks_agree(body, FRAME_ITEMS_MAX, 3))
        for _ in range(10):
            mutated = bytearray(body)
            position = random.randrange(len(mutated))
            match random.randrange(3):
                case 0:
                    mutated[position] = random.randrange(256)
                case 1:
                    del mutated[position:]
                case _:
                    mutated.insert(position, random.randrange(256))
            decisions.append(_walks_agree(bytes(mutated), FRAME_ITEMS_MAX, FRAME_DEPTH_MAX))
    assert decisions.count(True) > 1000 and decisions.count(False) > 1000
