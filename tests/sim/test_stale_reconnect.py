"""``SimNetwork.strand``: reordering across a reconnect (the stale-reconnect scenario)."""

from __future__ import annotations

from random import Random

import pytest
import trio
import trio.testing

from sim.network import SimNetwork
from tests.sim.helpers import start_pair_maker
from tests.sim.test_network_faults import receive_exactly


async def test_a_stranded_connection_is_overtaken_by_the_new_one(autojump_clock: object) -> None:
    network = SimNetwork(Random(1))
    network.set_latency("a", "b", 0.01)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery, client="a", server="b")
        old_client, old_server = await make()
        await old_client.send_all(b"old1")
        stranded_s = trio.current_time()
        network.strand("a", "b", delay_s=1.0, stall_s=0.5)
        await old_client.send_all(b"old2")  # still writable while it stalls: held
        await trio.sleep(0.5)
        with pytest.raises(trio.BrokenResourceError):
            await old_client.send_all(b"old3")
        await old_client.aclose()
        new_client, new_server = await make()
        await new_client.send_all(b"new")
        assert await receive_exactly(new_server, 3) == b"new"
        new_arrived_s = trio.current_time()
        assert await receive_exactly(old_server, 8) == b"old1old2"
        assert trio.current_time() == pytest.approx(stranded_s + 1.5)
        assert trio.current_time() > new_arrived_s
        assert await old_server.receive_some() == b""  # the FIN of the given-up connection
        nursery.cancel_scope.cancel()
