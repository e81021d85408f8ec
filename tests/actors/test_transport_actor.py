"""The transport actor's inbound side: payloads to Raft messages, in batches, in order."""

from __future__ import annotations

from random import Random
from typing import Any

import trio
import trio.testing

from actors.codec import message_to_wire
from actors.leases import RELAY_KIND
from actors.raft import Message, MessageType
from actors.raft_actor import FromPeer, RaftInput
from actors.transport_actor import INBOUND_BATCH_MAX, TransportActor
from net.peers import PeerTransport
from sim.network import SimNetwork
from storage.kv import MemoryKeyValueStore
from storage.raft_store import RaftStore

ME = 1
PEER = 2
CLUSTER = 0xC1


def heartbeat(term: int, sender: int = PEER, recipient: int = ME) -> dict[str, Any]:
    return message_to_wire(
        Message(MessageType.HEARTBEAT, recipient=recipient, sender=sender, term=term)
    )


def actor_over(
    inbound: trio.MemoryReceiveChannel[tuple[int, dict[str, object]]],
    to_raft: trio.MemorySendChannel[RaftInput],
) -> TransportActor:
    unused_send, _ = trio.open_memory_channel[tuple[int, dict[str, Any]]](1)
    transport = PeerTransport(SimNetwork(Random(1)).host("m1"), ME, CLUSTER, unused_send, Random(1))
    raft_store = RaftStore(MemoryKeyValueStore())
    return TransportActor(ME, transport, inbound, to_raft, raft_store=raft_store)


async def test_a_burst_reaches_raft_in_order_through_a_full_inbox_and_bad_ones_are_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """More payloads than a batch, a raft inbox of one (every other send must wait), and
    among them a malformed payload, one claiming another sender and a lease relay."""
    terms = range(1, 2 * INBOUND_BATCH_MAX + 10)
    inbound_send, inbound_receive = trio.open_memory_channel[tuple[int, dict[str, object]]](
        len(terms) + 3
    )
    to_raft_send, to_raft_receive = trio.open_memory_channel[RaftInput](1)
    actor = actor_over(inbound_receive, to_raft_send)
    leases: list[tuple[int, dict[str, object]]] = []
    actor.on_lease_payload = lambda sender, payload: leases.append((sender, payload))
    for term in terms:
        inbound_send.send_nowait((PEER, heartbeat(term)))
        if term == 5:
            inbound_send.send_nowait((PEER, {"t": "not a type"}))
            inbound_send.send_nowait((PEER, heartbeat(99, sender=3)))
            inbound_send.send_nowait((PEER, {RELAY_KIND: "keepalive"}))
    await inbound_send.aclose()
    received: list[int] = []
    with trio.fail_after(60):  # virtual seconds: a lost payload fails, not hangs
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor._receive)
            async for item in to_raft_receive:
                assert isinstance(item, FromPeer)
                received.append(item.message.term)
                if len(received) == len(terms):
                    break
    assert received == list(terms)
    assert leases == [(PEER, {RELAY_KIND: "keepalive"})]


class StepCounter(trio.abc.Instrument):
    """Counts the task steps of tasks whose name holds ``name_part``."""

    def __init__(self, name_part: str) -> None:
        self.name_part = name_part
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.name_part in task.name:
            self.steps += 1


async def test_a_batch_is_handed_over_in_one_task_step() -> None:
    """Payloads already waiting reach an inbox with room without a task step per payload
    (the loop of ``async for`` and ``await send`` took two per payload)."""
    inbound_send, inbound_receive = trio.open_memory_channel[tuple[int, dict[str, object]]](100)
    to_raft_send, to_raft_receive = trio.open_memory_channel[RaftInput](100)
    actor = actor_over(inbound_receive, to_raft_send)
    for term in range(1, 51):
        inbound_send.send_nowait((PEER, heartbeat(term)))
    counter = StepCounter("TransportActor._receive")
    trio.lowlevel.add_instrument(counter)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor._receive)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert to_raft_receive.statistics().current_buffer_used == 50
    # Start, the receive's checkpoint, the park when the channel is empty, the cancellation
    # and the channel's close: a handful, where a step per payload would be 50 or more.
    assert 1 <= counter.steps <= 6
