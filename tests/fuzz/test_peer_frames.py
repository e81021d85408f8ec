"""Peer frames (length-prefixed CBOR) and the peer handshake against hostile bytes.

Properties: ``decode_payload`` returns a dict of plain values or raises ``MalformedFrame``;
``FrameReader`` returns payloads or raises a ``FrameError``/``EndOfFrames``; a
``PeerTransport`` serving a connection never raises, ends within its timeouts, delivers
payloads only after a valid handshake, and every refusal it sends is logged with its reason.
"""

from __future__ import annotations

import logging
import struct
from random import Random
from typing import Any

import cbor2
import trio
import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st

from net.errors import EndOfFrames, FrameError, MalformedFrame
from net.frames import FrameReader, Payload, decode_payload, encode_frame, encode_payload
from net.peers import PROTOCOL_VERSION, PeerLimits, PeerTransport
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.harness import LogRecords, converse, run_virtual
from tests.fuzz.mutations import mutated

CLUSTER = 0xC1
US = 2
THEM = 1
LIMITS = PeerLimits(handshake_timeout_seconds=5.0, pipeline_idle_timeout_seconds=30.0)

HELLO: Payload = {
    "troika": PROTOCOL_VERSION,
    "cluster": CLUSTER,
    "from": THEM,
    "to": US,
    "channel": "stream",
}
PAYLOADS: list[Payload] = [
    HELLO,
    {**HELLO, "channel": "pipeline"},
    {"troika": PROTOCOL_VERSION, "channel": "info"},
    {"t": 3, "term": 2, "entries": [[1, 2, 0, b"data"]], "ctx": None, "f": 1.5, "ok": True},
    {"bytes": 12},
    {"data": b"\xa1at\x03" * 3},
    {"nested": [[[{b"k": [1, -1, "x"]}]]]},
]
HOSTILE_BODIES = [
    bytes.fromhex(text)
    for text in (
        "a16161c11a00000001",  # {"a": tag 1 (a datetime)}
        "a16161d9010280",  # {"a": tag 258 (a set)}
        "a16161c24101",  # {"a": tag 2 (a bignum)}
        "a16161f7",  # {"a": undefined}
        "a161619f01ff",  # an indefinite-length array
        "a2616101616102",  # a duplicate key
        "a1616162ff00",  # text that is not UTF-8
    )
]
"""Bodies a receiver must refuse, as seeds for mutations (encode_payload refuses to make them)."""
BODIES = [encode_payload(payload) for payload in PAYLOADS] + HOSTILE_BODIES
FRAMES = [encode_frame(payload) for payload in PAYLOADS]


def _is_plain(value: Any, depth: int = 0) -> bool:
    if value is None or type(value) in (bool, int, float, str, bytes):
        return type(value) is not int or -(1 << 64) <= value < 1 << 64
    if type(value) is list:
        return all(_is_plain(item, depth + 1) for item in value)
    if type(value) is dict:
        return all(
            type(key) in (int, bytes, str) and _is_plain(item, depth + 1)
            for key, item in value.items()
        )
    return False


@fuzz_settings(fast=100, ci=5000)
@given(mutated(BODIES))
@example(bytes.fromhex("a1616181d81e820100"))  # a tag (a Fraction 1/0) inside
@example(bytes.fromhex("a16161" + "81" * 40 + "00"))  # deeper than FRAME_DEPTH_MAX
@example(bytes.fromhex("a161615bffffffffffffffff"))  # a byte string longer than the body
@example(HOSTILE_BODIES[0])
@example(HOSTILE_BODIES[2])
def test_frame_bodies_decode_to_plain_values_or_are_malformed(body: bytes) -> None:
    try:
        payload = decode_payload(body)
    except MalformedFrame:
        return
    assert type(payload) is dict
    assert all(type(key) is str for key in payload)
    assert _is_plain(payload)
    assert repr(cbor2.loads(body)) == repr(payload)  # (repr: NaN is not equal to itself)


@fuzz_settings(fast=50, ci=3000)
@given(
    st.lists(mutated(FRAMES), min_size=1, max_size=4),
    st.lists(st.integers(1, 64), min_size=1, max_size=6),
)
def test_the_frame_reader_returns_payloads_or_typed_errors(
    frames: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(frames)

    async def main() -> None:
        send, receive = trio.testing.memory_stream_one_way_pair()
        position = 0
        for cut in cuts:
            await send.send_all(data[position : position + cut])
            position += cut
        await send.send_all(data[position:])
        await send.aclose()
        reader = FrameReader(receive, frame_bytes_max=4096, items_max=64)
        for _ in range(len(frames) + 1):
            try:
                payload = await reader.receive()
            except (FrameError, EndOfFrames):
                return
            assert _is_plain(payload)
        raise AssertionError("more payloads than frames")

    run_virtual(main)


# -- the handshake and what follows it ------------------------------------------------------


@st.composite
def peer_sessions(draw: st.DrawFn) -> tuple[list[bytes], bool, list[float]]:
    """What a dialing peer sends: a (maybe mutated) handshake, then (maybe mutated) frames."""
    hello = dict(draw(st.sampled_from(PAYLOADS[:3])))
    if draw(st.booleans()):
        key = draw(st.sampled_from([*sorted(hello), "extra"]))
        hello[key] = draw(
            st.sampled_from([None, -1, 0, 1, 2, CLUSTER, (1 << 64) - 1, "stream", "info", b"x", []])
        )
    first = encode_frame(hello) if draw(st.booleans()) else draw(mutated([encode_frame(hello)]))
    rest = draw(st.lists(mutated(FRAMES), max_size=4))
    chunks = [first, *rest]
    if draw(st.booleans()):
        joined = b"".join(chunks)
        cut = draw(st.integers(0, len(joined)))
        chunks = [joined[:cut], joined[cut:]]
    pauses = draw(st.lists(st.sampled_from([0.0, 0.0, 1.0, 6.0, 40.0]), max_size=len(chunks)))
    return chunks, draw(st.booleans()), pauses


def _frames_in(data: bytes) -> list[Payload]:
    frames: list[Payload] = []
    while len(data) >= 4:
        (length,) = struct.unpack(">I", data[:4])
        frames.append(decode_payload(data[4 : 4 + length]))
        data = data[4 + length :]
    assert not data, "a partial frame from the server"
    return frames


@fuzz_settings(fast=60, ci=3000)
@given(peer_sessions())
@example(([encode_frame(HELLO), encode_frame({"t": 1})], True, []))
@example(([b"\x00\x00\x00\x05garbage"], False, []))
@example(([encode_frame({**HELLO, "cluster": -1})], True, []))
def test_a_peer_connection_is_served_or_refused_never_crashes(
    session: tuple[list[bytes], bool, list[float]],
) -> None:
    chunks, half_close, pauses = session
    delivered: list[tuple[int, Payload]] = []

    async def main() -> None:
        inbound_send, inbound_receive = trio.open_memory_channel[tuple[int, Payload]](100)
        transport = PeerTransport(
            _NoNetwork(),  # type: ignore[arg-type]
            US,
            CLUSTER,
            inbound_send,
            Random(0),
            limits=LIMITS,
            cluster_info=lambda: {"members": []},
        )
        with LogRecords("net.peers") as logs:
            conversation = await converse(
                transport.serve_connection,
                chunks,
                half_close=half_close,
                pauses_s=pauses,
                bound_s=sum(pauses) + 200.0,
            )
        inbound_send.close()
        async for item in inbound_receive:
            delivered.append(item)
        answers = _frames_in(conversation.received)
        if conversation.still_running:
            # Only an accepted stream channel lives on while its peer keeps it open.
            assert not half_close and answers == [{"ok": True}], answers
        refusals = [answer for answer in answers if "error" in answer]
        for refusal in refusals:
            assert type(refusal["error"]) is str
            assert any(refusal["error"] in line for line in logs.messages(logging.WARNING))
        if delivered:
            assert answers[0] == {"ok": True}, answers
        hello = _first_payload(b"".join(chunks))
        if delivered:
            assert hello is not None
            assert all(sender == hello["from"] for sender, _ in delivered)
        if hello is None or any(hello.get(key) != HELLO[key] for key in ("cluster", "to")):
            # Not a handshake for this member of this cluster: never accepted.
            assert {"ok": True} not in answers[:1] or hello == PAYLOADS[2], (hello, answers)
            assert not delivered

    run_virtual(main)


def _first_payload(data: bytes) -> Payload | None:
    try:
        return _frames_in(data[: 4 + struct.unpack(">I", data[:4])[0]])[0]
    except (struct.error, MalformedFrame, AssertionError, IndexError):
        return None


class _NoNetwork:
    """The transport never dials in these tests."""

    async def connect(self, address: str) -> trio.abc.Stream:
        raise AssertionError("dialed")
