"""The gRPC server (HTTP/2) against random frame sequences after the client preface.

The client's frames are built with ``hyperframe`` (what ``h2`` itself uses) and ``hpack``:
calls to every method of ``net.v3.service``'s table (and unknown ones) with valid, mutated
and random protobuf payloads, bad length prefixes and compression flags, bad SETTINGS,
WINDOW_UPDATE overflows, RST_STREAM mid-call, PING, PRIORITY, GOAWAY and raw bytes.

Properties: ``serve_connection`` never raises and no handler fails (no "handler failed" log);
everything the server sends parses as HTTP/2 frames whose header blocks decode; every
stream it ends with HEADERS carries a ``grpc-status`` (or is a bare HTTP error); after the
client half-closes, the server ends; with the client's side open it ends too (idle timeout)
unless a call it accepted is still open.
"""

from __future__ import annotations

import logging
import struct

import hpack
from hyperframe.frame import (
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import example, given
from hypothesis import strategies as st

from net.etcdpb import rpc_pb2
from net.grpc import GrpcLimits, GrpcServer
from net.http.server import HTTP2_PREFACE
from net.v3.service import v3_methods
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.harness import LogRecords, converse, run_virtual
from tests.fuzz.mutations import mutated
from tests.net.test_v3_service import FakeV3Backend

METHODS = v3_methods(FakeV3Backend())
PATHS = sorted(METHODS)
LIMITS = GrpcLimits(idle_timeout_s=30.0)
BOUND_S = 300.0

SAMPLE_REQUESTS = [
    rpc_pb2.RangeRequest(key=b"a", range_end=b"z", limit=3).SerializeToString(),
    rpc_pb2.PutRequest(key=b"a", value=b"v", prev_kv=True).SerializeToString(),
    rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(key=b"a", target=rpc_pb2.Compare.VERSION, version=1)],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"a", value=b"w"))],
    ).SerializeToString(),
    rpc_pb2.DeleteRangeRequest(key=b"a").SerializeToString(),
    rpc_pb2.CompactionRequest(revision=1).SerializeToString(),
    b"",
]


@st.composite
def grpc_message(draw: st.DrawFn) -> bytes:
    payload = draw(mutated(SAMPLE_REQUESTS))
    flag = draw(st.sampled_from([0, 0, 0, 1, 2]))
    length = len(payload) if draw(st.integers(0, 4)) else draw(st.integers(0, 1 << 32 - 1))
    return bytes([flag]) + struct.pack(">I", length) + payload


@st.composite
def call_headers(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    path = draw(st.sampled_from([*PATHS, "/etcdserverpb.KV/Nope", "/x", ""]))
    fields = [
        (b":method", draw(st.sampled_from([b"POST", b"POST", b"GET"]))),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"server"),
        (
            b"content-type",
            draw(st.sampled_from([b"application/grpc", b"application/grpc+proto", b"text/plain"])),
        ),
        (b"te", b"trailers"),
    ]
    extra = draw(
        st.lists(
            st.sampled_from(
                [
                    (b"grpc-timeout", b"1S"),
                    (b"grpc-timeout", b"99999999H"),
                    (b"grpc-timeout", b"xyz"),
                    (b"grpc-encoding", b"gzip"),
                    (b"hasleader", b"true"),
                    (b"authorization", b"token"),
                ]
            ),
            max_size=2,
        )
    )
    if draw(st.integers(0, 5)) == 0:
        fields = draw(st.permutations(fields))[: draw(st.integers(0, len(fields)))]
    return fields + extra


SETTINGS_VALUES = st.sampled_from(
    [0, 1, 100, 16383, 16384, 65535, (1 << 24) - 1, 1 << 24, (1 << 31) - 1, 1 << 31, (1 << 32) - 1]
)


def _raw_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    header = struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
    return header + struct.pack(">I", stream_id) + payload


@st.composite
def client_frames(draw: st.DrawFn) -> tuple[list[bytes], bool]:
    """The frames a client sends after the preface (encoded), and whether any call stays open."""
    encoder = hpack.Encoder()
    out: list[bytes] = []
    if draw(st.integers(0, 4)):
        out.append(SettingsFrame(0).serialize())
    opened: dict[int, bool] = {}
    next_stream = 1
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(
            st.sampled_from(
                [
                    "call",
                    "call",
                    "call",
                    "data",
                    "settings",
                    "window",
                    "rst",
                    "ping",
                    "priority",
                    "goaway",
                    "raw",
                ]
            )
        )
        stream_id = draw(st.sampled_from([*opened, next_stream, 0, 2])) if opened else next_stream
        frame: Frame | None = None
        if kind == "call":
            stream_id = next_stream if draw(st.integers(0, 5)) else stream_id
            next_stream += 2
            block = encoder.encode(draw(call_headers()))
            message = draw(grpc_message())
            end = draw(st.integers(0, 5)) > 0
            out.append(_raw_frame(0x1, 0x4, stream_id, block))  # HEADERS, END_HEADERS
            out.append(_raw_frame(0x0, 0x1 if end else 0x0, stream_id, message))
            opened[stream_id] = not end
            continue
        if kind == "data":
            # By hand: hyperframe refuses to build a DATA frame on stream 0.
            end = draw(st.booleans())
            out.append(_raw_frame(0x0, 0x1 if end else 0x0, stream_id, draw(grpc_message())))
            opened[stream_id] = opened.get(stream_id, False) and not end
            continue
        if kind == "settings":
            settings = {draw(st.sampled_from([1, 2, 3, 4, 5, 6, 8, 0x99])): draw(SETTINGS_VALUES)}
            frame = SettingsFrame(0, settings)
            if draw(st.integers(0, 5)) == 0:
                frame = SettingsFrame(0)
                frame.flags.add("ACK")
        elif kind == "window":
            frame = WindowUpdateFrame(
                draw(st.sampled_from([0, stream_id])),
                draw(st.sampled_from([0, 1, 65535, (1 << 31) - 1])),
            )
        elif kind == "rst":
            code = draw(st.integers(0, 14))
            out.append(_raw_frame(0x3, 0, stream_id, struct.pack(">I", code)))
            opened[stream_id] = False
            continue
        elif kind == "ping":
            frame = PingFrame(0, b"12345678")
        elif kind == "priority":
            depends_on = draw(st.sampled_from([0, stream_id]))
            out.append(_raw_frame(0x2, 0, stream_id, struct.pack(">IB", depends_on, 15)))
            continue
        elif kind == "goaway":
            frame = GoAwayFrame(0, last_stream_id=0, error_code=draw(st.integers(0, 2)))
        if frame is not None:
            out.append(frame.serialize())
        else:
            out.append(draw(st.binary(min_size=1, max_size=30)))
    if draw(st.integers(0, 9)) == 0:
        out = [draw(mutated([b"".join(out)]))]
    return out, any(opened.values())


class _ServerFrames:
    """Reads what the server sent: frames, header blocks, which streams ended how."""

    def __init__(self, data: bytes) -> None:
        self.frames: list[Frame] = []
        decoder = hpack.Decoder()
        decoder.max_header_list_size = 1 << 20
        decoder.max_allowed_table_size = 1 << 32  # the client's SETTINGS may have raised it
        position = 0
        while position + 9 <= len(data):
            frame, length = Frame.parse_frame_header(memoryview(data[position : position + 9]))
            body = data[position + 9 : position + 9 + length]
            assert len(body) == length, "a partial frame from the server"
            frame.parse_body(memoryview(body))
            self.frames.append(frame)
            position += 9 + length
        assert position == len(data), "bytes after the last frame"
        self.ended: dict[int, dict[bytes, bytes]] = {}
        for frame in self.frames:
            if isinstance(frame, HeadersFrame):
                assert "END_HEADERS" in frame.flags  # no CONTINUATION from our server
                fields = {
                    bytes(name): bytes(value)
                    for name, value in decoder.decode(frame.data, raw=True)
                }
                if "END_STREAM" in frame.flags:
                    self.ended[frame.stream_id] = fields


@fuzz_settings(fast=60, ci=3000)
@given(client_frames(), st.booleans())
@example(([], True), True)
def test_the_grpc_server_answers_with_a_status_or_goaway(
    session: tuple[list[bytes], bool], half_close: bool
) -> None:
    frames, call_left_open = session
    server = GrpcServer(v3_methods(FakeV3Backend()), LIMITS)

    async def main() -> None:
        with LogRecords("net.grpc") as logs:
            conversation = await converse(
                server.serve_connection,
                [HTTP2_PREFACE, *frames],
                half_close=half_close,
                bound_s=BOUND_S,
            )
        failures = [
            record.getMessage() for record in logs.records if record.levelno >= logging.ERROR
        ]
        assert not failures, failures
        answer = _ServerFrames(conversation.received)
        assert answer.frames and isinstance(answer.frames[0], SettingsFrame)
        for stream_id, fields in answer.ended.items():
            status = fields.get(b":status", b"200")
            assert b"grpc-status" in fields or status != b"200", (stream_id, fields)
            if b"grpc-status" in fields:
                assert 0 <= int(fields[b"grpc-status"]) <= 16, fields
        if conversation.still_running:
            assert not half_close and call_left_open, "the server hung"

    run_virtual(main)


def test_every_v3_method_is_called() -> None:
    assert len(PATHS) >= 7, PATHS
