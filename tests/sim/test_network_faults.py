"""SimNetwork semantics: latency, ordering, clogs, partitions (also one-way), resets, crashes."""

from __future__ import annotations

import logging
from random import Random

import pytest
import trio
import trio.testing

from net.network import ConnectionRefused
from sim.network import SimNetwork, SimStream
from tests.sim.helpers import start_pair_maker


async def receive_exactly(stream: SimStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, "EOF before all the bytes arrived"
        data += chunk
    return data


async def nothing_arrives(stream: SimStream, within_s: float) -> bool:
    with trio.move_on_after(within_s):
        await stream.receive_some()
        return False
    return True


async def test_a_write_arrives_after_the_link_latency(autojump_clock: object) -> None:
    network = SimNetwork(Random(1))
    network.set_latency("a", "b", 0.25)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery, client="a", server="b")
        client, server = await make()
        sent_at = trio.current_time()
        await client.send_all(b"hello")
        assert await server.receive_some() == b"hello"
        assert trio.current_time() - sent_at == pytest.approx(0.25)
        nursery.cancel_scope.cancel()


async def test_a_connect_takes_a_round_trip(autojump_clock: object) -> None:
    network = SimNetwork(Random(1))
    network.set_latency("a", "b", 0.1)
    network.set_latency("b", "a", 0.3, one_way=True)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery, client="a", server="b")
        started = trio.current_time()
        await make()
        assert trio.current_time() - started == pytest.approx(0.4)
        nursery.cancel_scope.cancel()


async def test_jitter_never_reorders_the_bytes_of_a_connection(autojump_clock: object) -> None:
    network = SimNetwork(Random(2), latency_s=0.01, jitter_s=0.5)
    expected = b"".join(number.to_bytes(2, "big") for number in range(200))
    arrivals: list[float] = []
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery)
        client, server = await make()

        async def send_all_numbers() -> None:
            for number in range(200):
                await client.send_all(number.to_bytes(2, "big"))
                await trio.sleep(0.001)

        nursery.start_soon(send_all_numbers)
        got = b""
        while len(got) < len(expected):
            got += await server.receive_some()
            arrivals.append(trio.current_time())
        assert got == expected
        nursery.cancel_scope.cancel()
    assert arrivals == sorted(arrivals)
    # Jitter held some writes back past later ones' own delay: those arrived together.
    assert len(arrivals) < 200


async def test_a_clog_holds_bytes_until_its_time_then_delivers_them_in_order(
    autojump_clock: object,
) -> None:
    network = SimNetwork(Random(3), latency_s=0.1)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery, client="a", server="b")
        client, server = await make()
        start = trio.current_time()
        network.clog("a", "b", until_s=start + 5.0, one_way=True)
        await client.send_all(b"one ")
        await client.send_all(b"two")
        await server.send_all(b"back")  # b->a is not clogged
        assert await client.receive_some() == b"back"
        assert trio.current_time() - start == pytest.approx(0.1)
        assert await receive_exactly(server, 7) == b"one two"
        assert trio.current_time() - start == pytest.approx(5.0)
        nursery.cancel_scope.cancel()


async def test_bytes_that_arrived_before_a_cut_stay_readable(autojump_clock: object) -> None:
    network = SimNetwork(Random(4), latency_s=0.1)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery, client="a", server="b")
        client, server = await make()
        await client.send_all(b"early")
        await trio.sleep(1.0)  # arrived, not read
        network.cut("a", "b")
        await client.send_all(b"late")
        assert await server.receive_some() == b"early"
        assert await nothing_arrives(server, 10.0)
        network.heal()
        healed_at = trio.current_time()
        assert await server.receive_some() == b"late"
        assert trio.current_time() == healed_at
        nursery.cancel_scope.cancel()


async def test_a_partition_holds_bytes_both_ways_and_refuses_new_connects(
    autojump_clock: object,
) -> None:
    network = SimNetwork(Random(5), latency_s=0.01, connect_timeout_s=2.0)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery, client="a", server="b")
        client, server = await make()
        network.partition(["a"], ["b", "c"])
        await client.send_all(b"ping")
        await server.send_all(b"pong")
        assert await nothing_arrives(server, 5.0)
        assert await nothing_arrives(client, 5.0)
        started = trio.current_time()
        with pytest.raises(ConnectionRefused):
            await make()
        assert trio.current_time() - started == pytest.approx(2.0)
        network.heal()
        assert await server.receive_some() == b"ping"
        assert await client.receive_some() == b"pong"
        await make()  # connects again
        nursery.cancel_scope.cancel()


async def test_a_host_named_in_no_group_reaches_every_group(autojump_clock: object) -> None:
    network = SimNetwork(Random(5))
    async with trio.open_nursery() as nursery:
        to_a = await start_pair_maker(network, nursery, client="client", server="a")
        to_b = await start_pair_maker(network, nursery, client="client", server="b")
        network.partition(["a"], ["b"])
        await to_a()
        await to_b()
        nursery.cancel_scope.cancel()


async def test_a_new_partition_replaces_the_old_one(autojump_clock: object) -> None:
    network = SimNetwork(Random(5), connect_timeout_s=1.0)
    async with trio.open_nursery() as nursery:
        a_to_b = await start_pair_maker(network, nursery, client="a", server="b")
        a_to_c = await start_pair_maker(network, nursery, client="a", server="c")
        network.partition(["a", "c"], ["b"])
        with pytest.raises(ConnectionRefused):
            await a_to_b()
        await a_to_c()
        network.partition(["a", "b"], ["c"])
        await a_to_b()
        with pytest.raises(ConnectionRefused):
            await a_to_c()
        nursery.cancel_scope.cancel()


async def test_a_one_way_cut_holds_one_direction_only(autojump_clock: object) -> None:
    network = SimNetwork(Random(6), latency_s=0.01, connect_timeout_s=1.0)
    async with trio.open_nursery() as nursery:
        a_to_b = await start_pair_maker(network, nursery, client="a", server="b")
        b_to_a = await start_pair_maker(network, nursery, client="b", server="a")
        client, server = await a_to_b()
        network.cut("a", "b", one_way=True)
        await client.send_all(b"held")
        await server.send_all(b"flows")
        assert await client.receive_some() == b"flows"
        assert await nothing_arrives(server, 5.0)
        # No handshake completes across a one-way cut, whichever end dials.
        with pytest.raises(ConnectionRefused):
            await a_to_b()
        with pytest.raises(ConnectionRefused):
            await b_to_a()
        network.heal()
        assert await server.receive_some() == b"held"
        nursery.cancel_scope.cancel()


async def test_a_connect_waits_out_a_clog_shorter_than_the_timeout(
    autojump_clock: object,
) -> None:
    network = SimNetwork(Random(6), connect_timeout_s=3.0)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery, client="a", server="b")
        network.clog("a", "b", until_s=trio.current_time() + 2.0)
        started = trio.current_time()
        await make()
        assert trio.current_time() - started == pytest.approx(2.0)
        network.clog("a", "b", until_s=trio.current_time() + 10.0)
        with pytest.raises(ConnectionRefused):
            await make()
        nursery.cancel_scope.cancel()


async def test_a_cut_heals_while_a_connect_waits(autojump_clock: object) -> None:
    network = SimNetwork(Random(6), connect_timeout_s=3.0)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery, client="a", server="b")
        network.cut("a", "b")

        async def heal_soon() -> None:
            await trio.sleep(1.0)
            network.heal()

        nursery.start_soon(heal_soon)
        started = trio.current_time()
        await make()
        assert trio.current_time() - started == pytest.approx(1.0)
        nursery.cancel_scope.cancel()


async def test_a_full_window_makes_the_writer_wait(autojump_clock: object) -> None:
    network = SimNetwork(Random(7), window_bytes=100)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery)
        client, server = await make()
        await client.send_all(b"x" * 150)  # admitted whole: the window was empty
        with trio.move_on_after(1.0) as waited:
            await client.send_all(b"y")
        assert waited.cancelled_caught
        assert await server.receive_some(100) == b"x" * 100
        with trio.move_on_after(1.0) as waited:
            await client.send_all(b"y")  # 50 bytes left queued: under the window
        assert not waited.cancelled_caught
        nursery.cancel_scope.cancel()


async def test_a_reset_breaks_both_ends(autojump_clock: object) -> None:
    network = SimNetwork(Random(8), latency_s=0.1)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery, client="a", server="b")
        client, server = await make()
        await client.send_all(b"lost")
        await trio.sleep(1.0)

        async def blocked_receive() -> None:
            with pytest.raises(trio.BrokenResourceError):
                await client.receive_some()

        nursery.start_soon(blocked_receive)
        await trio.testing.wait_all_tasks_blocked()
        network.reset("a")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_some()  # the unread "lost" is gone
        with pytest.raises(trio.BrokenResourceError):
            await server.send_all(b"x")
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"x")
        await client.aclose()
        await server.aclose()
        assert network.connection_count() == 0
        nursery.cancel_scope.cancel()


async def test_reset_link_breaks_only_the_connections_between_two_hosts(
    autojump_clock: object,
) -> None:
    network = SimNetwork(Random(9))
    async with trio.open_nursery() as nursery:
        a_to_b = await start_pair_maker(network, nursery, client="a", server="b")
        c_to_b = await start_pair_maker(network, nursery, client="c", server="b2")
        ab_client, _ = await a_to_b()
        cb_client, cb_server = await c_to_b()
        network.reset_link("b", "a")
        with pytest.raises(trio.BrokenResourceError):
            await ab_client.send_all(b"x")
        await cb_client.send_all(b"fine")
        assert await cb_server.receive_some() == b"fine"
        nursery.cancel_scope.cancel()


async def test_a_graceful_close_delivers_then_eof_and_breaks_the_peers_writes(
    autojump_clock: object,
) -> None:
    network = SimNetwork(Random(10), latency_s=0.2)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery)
        client, server = await make()
        await client.send_all(b"last words")
        await client.aclose()
        assert await receive_exactly(server, 10) == b"last words"
        assert await server.receive_some() == b""
        with pytest.raises(trio.BrokenResourceError):
            await server.send_all(b"anyone?")
        nursery.cancel_scope.cancel()


async def test_a_half_close_still_lets_the_peer_answer(autojump_clock: object) -> None:
    network = SimNetwork(Random(10), latency_s=0.2)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery)
        client, server = await make()
        await client.send_all(b"question")
        await client.send_eof()
        assert await receive_exactly(server, 8) == b"question"
        assert await server.receive_some() == b""
        await server.send_all(b"answer")
        assert await receive_exactly(client, 6) == b"answer"
        nursery.cancel_scope.cancel()


async def test_connect_and_serve_errors(autojump_clock: object) -> None:
    network = SimNetwork(Random(11), latency_s=0.05)
    host = network.host("a")
    started = trio.current_time()
    with pytest.raises(ConnectionRefused):
        await host.connect("b:80")
    assert trio.current_time() - started == pytest.approx(0.1)  # the RST comes back
    with pytest.raises(ValueError, match="host:port"):
        await host.connect("b")
    with pytest.raises(OSError, match="another host"):
        await host.serve("b:80", _echo)
    async with trio.open_nursery() as nursery:
        first = await nursery.start(host.serve, "a:0", _echo)
        second = await nursery.start(host.serve, "a:0", _echo)
        assert first != second
        assert first.startswith("a:")
        with pytest.raises(OSError, match="in use"):
            await host.serve(first, _echo)
        nursery.cancel_scope.cancel()
    with pytest.raises(ValueError, match="host name"):
        network.host("a:1")
    assert network.host("a") is host


async def _echo(stream: trio.abc.Stream) -> None:
    async for data in stream:
        await stream.send_all(data)


async def test_a_failing_handler_is_logged_and_the_server_goes_on(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    network = SimNetwork(Random(12))

    async def handler(stream: trio.abc.Stream) -> None:
        if await stream.receive_some() == b"boom":
            raise RuntimeError("boom")
        await stream.send_all(b"ok")

    async with trio.open_nursery() as nursery:
        address = await nursery.start(network.host("b").serve, "b:1", handler)
        with caplog.at_level(logging.ERROR, logger="sim.network"):
            first = await network.host("a").connect(address)
            await first.send_all(b"boom")
            assert await first.receive_some() == b""  # closed by the server
        second = await network.host("a").connect(address)
        await second.send_all(b"hello")
        assert await second.receive_some() == b"ok"
        nursery.cancel_scope.cancel()
    assert network.handler_failures == 1
    assert "a connection handler failed" in caplog.text


async def test_a_crashed_host_stops_serving_breaks_its_connections_and_restarts(
    autojump_clock: object,
) -> None:
    network = SimNetwork(Random(13), latency_s=0.01)
    served: list[str] = []

    async def handler(stream: trio.abc.Stream) -> None:
        try:
            await trio.sleep_forever()
        finally:
            served.append("handler ended")

    async def serve() -> None:
        await network.host("b").serve("b:1", handler)
        served.append("serve returned")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked()
        stream = await network.host("a").connect("b:1")
        await trio.testing.wait_all_tasks_blocked()
        network.crash_host("b")
        await trio.testing.wait_all_tasks_blocked()
        assert served == ["handler ended", "serve returned"]
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
        with pytest.raises(ConnectionRefused):
            await network.host("a").connect("b:1")
        with pytest.raises(ConnectionRefused, match="down"):
            await network.host("b").connect("a:1")
        with pytest.raises(OSError, match="down"):
            await network.host("b").serve("b:1", handler)
        network.restart_host("b")
        await nursery.start(network.host("b").serve, "b:1", handler)
        await network.host("a").connect("b:1")
        nursery.cancel_scope.cancel()
    events = [event for _, event in network.trace]
    assert "crash b" in events
    assert "stop serving b:1 (crash)" in events
    assert "restart b" in events


async def test_the_trace_lists_faults_and_connections_in_virtual_time(
    autojump_clock: object,
) -> None:
    network = SimNetwork(Random(14), trace_traffic=True)
    async with trio.open_nursery() as nursery:
        make = await start_pair_maker(network, nursery, client="a", server="b")
        await trio.sleep(1.0)
        client, _ = await make()
        await client.send_all(b"abc")
        network.cut("a", "b", one_way=True)
        nursery.cancel_scope.cancel()
    assert network.trace == [
        (0.0, "serve b:49152"),
        (1.0, "open c1 a->b:49152"),
        (1.0, "c1 a->b 3B arrives 1.0"),
        (1.0, "cut a->b"),
        (1.0, "stop serving b:49152"),
    ]
