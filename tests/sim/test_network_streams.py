"""SimNetwork streams pass trio's stream contract checks, with and without latency."""

from __future__ import annotations

from random import Random

import pytest
import trio
import trio.testing

from sim.network import SimNetwork
from tests.sim.helpers import clogged, start_pair_maker

WINDOW_BYTES = 4096

LINKS = {
    "zero latency": (0.0, 0.0),
    "latency": (0.05, 0.0),
    "latency and jitter": (0.01, 0.04),
}


@pytest.mark.parametrize("link", LINKS.values(), ids=list(LINKS))
async def test_sim_streams_pass_the_half_closeable_stream_checks(
    autojump_clock: trio.testing.MockClock, link: tuple[float, float]
) -> None:
    network = SimNetwork(Random(7), latency_s=link[0], jitter_s=link[1], window_bytes=WINDOW_BYTES)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery)
        await trio.testing.check_half_closeable_stream(make, clogged(make, WINDOW_BYTES))
        nursery.cancel_scope.cancel()
    # With latency, the checks ran in virtual time; without, no time passed at all.
    assert (trio.current_time() > 0) == (link[0] > 0)


@pytest.mark.parametrize("link", LINKS.values(), ids=list(LINKS))
async def test_sim_streams_pass_the_two_way_stream_checks_with_the_default_window(
    autojump_clock: trio.testing.MockClock, link: tuple[float, float]
) -> None:
    network = SimNetwork(Random(8), latency_s=link[0], jitter_s=link[1])
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery)
        await trio.testing.check_two_way_stream(make, None)
        nursery.cancel_scope.cancel()
