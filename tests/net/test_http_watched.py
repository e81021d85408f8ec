"""HttpServer's ``watched`` requests: a handler that may wait long (a v3 Lock or Campaign over
the gateway) is cancelled when its client leaves, as Go's net/http cancels the request's
context; every other request runs to its end as before."""

from __future__ import annotations

import trio
import trio.testing

from net.http import HttpServer, Request, Response
from net.v3.concurrency import waits_for_others
from tests.net.http_helpers import read_responses
from tests.net.memory_network import MemoryNetwork


class Waiter:
    """A handler that waits until released; it records how each call ended."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.ended: list[str] = []

    async def __call__(self, request: Request) -> Response:
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.ended.append(f"cancelled {request.path}")
            raise
        self.ended.append(f"answered {request.path}")
        return Response(200, (), request.path.encode())


def post(path: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{{}}".encode()


async def serve(handler: Waiter, network: MemoryNetwork, nursery: trio.Nursery) -> str:
    server = HttpServer(network, handler, watched=lambda r: waits_for_others(r.path))
    address: str = await nursery.start(server.serve, "server:0")
    return address


async def test_a_watched_request_is_cancelled_when_its_client_leaves() -> None:
    handler = Waiter()
    network = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        address = await serve(handler, network, nursery)
        for path in ("/v3/lock/lock", "/v3beta/election/campaign", "/v3/kv/range"):
            stream = await network.connect(address)
            await stream.send_all(post(path))
            await trio.testing.wait_all_tasks_blocked()
            await stream.aclose()
            await trio.testing.wait_all_tasks_blocked()
        assert handler.ended == ["cancelled /v3/lock/lock", "cancelled /v3beta/election/campaign"]
        handler.release.set()  # the unwatched one still runs to its end
        await trio.testing.wait_all_tasks_blocked()
        assert handler.ended[2:] == ["answered /v3/kv/range"]
        nursery.cancel_scope.cancel()


async def test_a_watched_request_answers_and_pipelining_goes_on() -> None:
    handler = Waiter()
    network = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        address = await serve(handler, network, nursery)
        stream = await network.connect(address)
        await stream.send_all(post("/v3/lock/lock") + post("/v3/lock/unlock"))
        await trio.testing.wait_all_tasks_blocked()
        handler.release.set()
        responses = await read_responses(stream, 2)
        assert [response.body for response in responses] == [b"/v3/lock/lock", b"/v3/lock/unlock"]
        assert handler.ended == ["answered /v3/lock/lock", "answered /v3/lock/unlock"]
        nursery.cancel_scope.cancel()


def test_which_gateway_paths_wait_for_others() -> None:
    assert waits_for_others("/v3/lock/lock") and waits_for_others("/v3beta/election/campaign")
    assert not waits_for_others("/v3/lock/unlock")
    assert not waits_for_others("/v3/election/observe")  # a stream: watched anyway
    assert not waits_for_others("/v2/keys/a")
