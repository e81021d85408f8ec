"""The stream writer's deadline: a connection-level watchdog instead of a cancel scope per write.

Run on the SimNetwork in virtual time (a peer that stops reading fills the window and the
writer parks), so the times asserted are exact and the tests take milliseconds.
"""

from __future__ import annotations

from random import Random

import pytest
import trio
import trio.testing

import net.peers as peers_module
from net.frames import FrameReader, Payload, encode_frame
from net.peers import PROTOCOL_VERSION, PeerLimits, PeerTransport
from sim.network import SimNetwork

CLUSTER = 0xC1
SENDER = 1
RECEIVER = 2
TIMEOUT_SECONDS = 1.0
WINDOW_BYTES = 64 * 1024
PAYLOAD_BYTES = 30 * 1024
LIMITS = PeerLimits(
    write_timeout_seconds=TIMEOUT_SECONDS,
    write_bytes_max=WINDOW_BYTES,
    backoff_initial_seconds=100.0,  # no redial during a test
    backoff_max_seconds=100.0,
)


class Receiver:
    """A peer that accepts the stream handshake, then reads ``read_bytes`` every
    ``pause_seconds`` (never, when ``read_bytes`` is 0), counting the frames."""

    def __init__(self, read_bytes: int, pause_seconds: float) -> None:
        self.read_bytes = read_bytes
        self.pause_seconds = pause_seconds
        self.frames = 0

    async def serve(self, stream: trio.abc.Stream) -> None:
        reader = FrameReader(stream)
        hello = await reader.receive()
        assert hello["channel"] == "stream" and hello["troika"] == PROTOCOL_VERSION
        await stream.send_all(encode_frame({"ok": True}))
        if self.read_bytes == 0:
            await trio.sleep_forever()
        reader = FrameReader(stream, receive_bytes=self.read_bytes)
        while True:
            await trio.sleep(self.pause_seconds)
            await reader.receive()
            self.frames += 1
            while reader.receive_buffered() is not None:
                self.frames += 1


async def unreachable_after(receiver: Receiver, payloads: int, run_seconds: float) -> list[float]:
    """Send ``payloads`` to ``receiver``; the virtual times at which the peer was reported
    unreachable within ``run_seconds``."""
    network = SimNetwork(Random(1), latency_s=0.001, window_bytes=WINDOW_BYTES)
    inbound_send, _ = trio.open_memory_channel[tuple[int, Payload]](1)
    reported: list[float] = []
    transport = PeerTransport(
        network.host("m1"),
        SENDER,
        CLUSTER,
        inbound_send,
        Random(1),
        limits=LIMITS,
        on_unreachable=lambda _: reported.append(trio.current_time()),
    )
    transport.set_peers({RECEIVER: "m2:2380"})
    async with trio.open_nursery() as nursery:
        await nursery.start(network.host("m2").serve, "m2:2380", receiver.serve)
        await nursery.start(transport.run)
        for number in range(payloads):
            assert transport.send(RECEIVER, {"n": number, "data": b"x" * PAYLOAD_BYTES})
        await trio.sleep(run_seconds)
        nursery.cancel_scope.cancel()
    return reported


async def test_a_peer_that_stops_reading_is_given_up_within_twice_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = trio.current_time()
    reported = await unreachable_after(Receiver(0, 0.0), payloads=20, run_seconds=10.0)
    assert len(reported) == 1  # and no redial within the run (the backoff is long)
    assert TIMEOUT_SECONDS <= reported[0] - started <= 2 * TIMEOUT_SECONDS + 0.01


async def test_without_the_watchdog_the_stuck_write_is_never_noticed(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planted bug the first test catches: no watchdog, no deadline on the write."""

    async def never(progress: object, timeout_seconds: float) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    monkeypatch.setattr(peers_module, "_watch_writes", never)
    assert await unreachable_after(Receiver(0, 0.0), payloads=20, run_seconds=10.0) == []


async def test_a_slow_reader_that_keeps_reading_is_not_given_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Each write waits for window about a third of the timeout; all of them take 15 times it.
    receiver = Receiver(read_bytes=8 * 1024, pause_seconds=TIMEOUT_SECONDS / 25)
    payloads = 60
    assert await unreachable_after(receiver, payloads, run_seconds=30.0) == []
    assert receiver.frames == payloads


async def test_watch_writes_ignores_idle_periods_and_writes_that_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    progress = peers_module._WriteProgress()
    with trio.move_on_after(0.05) as scope:
        await peers_module._watch_writes(progress, 0.01)
    assert scope.cancelled_caught  # idle: never returns

    async def keep_writing() -> None:
        while True:
            progress.writing = True
            await trio.sleep(0.004)
            progress.writing = False
            progress.writes_done += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_writing)
        with trio.move_on_after(0.1) as scope:
            await peers_module._watch_writes(progress, 0.01)
        assert scope.cancelled_caught  # every write is shorter than the timeout
        nursery.cancel_scope.cancel()
