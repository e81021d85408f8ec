"""The transport actor: Raft messages to and from peer frames.

Outbound, a message becomes a dict and goes on the peer's queue without
waiting (a full queue drops it; Raft retransmits). Snapshots take the
pipeline channel, and their outcome is reported back to the core, which
sends that follower nothing else until it hears. Inbound, every payload is
checked (``actors.codec``) before the raft actor sees it; a malformed one is
logged and dropped, and the member keeps serving.
"""

from __future__ import annotations

import logging

import trio

from actors.codec import WireError, message_from_wire, message_to_wire
from actors.raft import Message, MessageType
from actors.raft_actor import FromPeer, RaftInput, SnapshotReport
from actors.rates import RateMeter
from net.peers import PeerTransport

log = logging.getLogger(__name__)

REPORTS_QUEUE_LENGTH_MAX = 1024
"""Snapshot outcomes waiting to reach the raft actor."""


class TransportActor:
    """Moves Raft messages between the raft actor and the peer transport."""

    def __init__(
        self,
        member_id: int,
        transport: PeerTransport,
        inbound: trio.MemoryReceiveChannel[tuple[int, dict[str, object]]],
        to_raft: trio.MemorySendChannel[RaftInput],
    ) -> None:
        self.member_id = member_id
        self.transport = transport
        self.inbound = inbound
        self.to_raft = to_raft
        self.reports_send, self.reports_receive = trio.open_memory_channel[RaftInput](
            REPORTS_QUEUE_LENGTH_MAX
        )
        self.dropped_messages = 0
        self.appends_sent = RateMeter()
        self.appends_received = RateMeter()

    def send(self, message: Message) -> None:
        """Queue a message for its recipient (never waits)."""
        wire = message_to_wire(message)
        if message.type is MessageType.APPEND:
            self.appends_sent.record(sum(len(entry.data) for entry in message.entries))
        if message.type is MessageType.SNAPSHOT:
            recipient = message.recipient

            def report(succeeded: bool) -> None:
                try:
                    self.reports_send.send_nowait(SnapshotReport(recipient, succeeded))
                except trio.WouldBlock:
                    log.error(
                        "%x: snapshot report for %x lost: queue full", self.member_id, recipient
                    )
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the member is stopping; nobody waits for the report

            self.transport.send_snapshot(recipient, wire, report)
        elif not self.transport.send(message.recipient, wire):
            self.dropped_messages += 1

    async def run(self) -> None:
        """Forward inbound messages and snapshot reports until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._forward_reports)
            await self._receive()

    async def _receive(self) -> None:
        async with self.inbound:
            async for sender, payload in self.inbound:
                try:
                    message = message_from_wire(payload)
                except WireError as error:
                    log.warning("%x: malformed message from %x: %s", self.member_id, sender, error)
                    continue
                if message.sender != sender or message.recipient != self.member_id:
                    log.warning(
                        "%x: message from %x claims to be from %x to %x; dropped",
                        self.member_id,
                        sender,
                        message.sender,
                        message.recipient,
                    )
                    continue
                if message.type is MessageType.APPEND:
                    self.appends_received.record(sum(len(e.data) for e in message.entries))
                await self.to_raft.send(FromPeer(message))

    async def _forward_reports(self) -> None:
        async with self.reports_receive:
            async for report in self.reports_receive:
                await self.to_raft.send(report)
