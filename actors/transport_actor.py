"""The transport actor: Raft messages to and from peer frames.

Outbound, a message becomes a dict and goes on the peer's queue without
waiting (a full queue drops it; Raft retransmits). Snapshots take the
pipeline channel, and their outcome is reported back to the core, which
sends that follower nothing else until it hears. Inbound, every payload is
checked (``actors.codec``) before the raft actor sees it; a malformed one is
logged and dropped, and the member keeps serving. The payloads waiting are taken
and handed on in one task step (up to ``INBOUND_BATCH_MAX``), not one each: a
peer message used to cost this actor two steps of its own.

A snapshot message carries only the metadata and a manifest (``SnapshotManifest``);
its state travels as the chunks the manifest names in the RaftStore, read one at
a time from a scan made when the message is sent. On the receiving side,
``RaftStoreSnapshotSink`` checks each chunk as it arrives and writes it into the
RaftStore under the received snapshot's own key set (unsynced; the storage
actor's save of the snapshot fsyncs it and makes it the current one, atomically).
Only a snapshot message whose chunks were all written that way reaches the raft
actor; one from anywhere else (the stream channel) is dropped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import trio

from actors.codec import SnapshotManifest, WireError, message_from_wire, message_to_wire
from actors.leases import RELAY_KIND as LEASE_RELAY_KIND
from actors.raft import Message, MessageType
from actors.raft_actor import FromPeer, RaftInput, SnapshotReport
from actors.rates import RateMeter
from net.frames import Payload
from net.peers import PeerTransport, SnapshotRefused, SnapshotWriter
from storage.errors import InvalidWrite, StorageCorrupted, StorageFailed
from storage.raft_store import RaftStore, SnapshotChunkWriter

log = logging.getLogger(__name__)

REPORTS_QUEUE_LENGTH_MAX = 1024
"""Snapshot outcomes waiting to reach the raft actor."""
INBOUND_BATCH_MAX = 256
"""Inbound payloads taken in one task step before the actor lets others run."""


class RaftStoreSnapshotSink:
    """Writes incoming snapshots' chunks into the RaftStore as they arrive (``SnapshotSink``).

    The writes run in the peer transport's connection tasks, where a failed write would end
    only that connection; a member must stop at its store's first failure (DESIGN.md), so the
    sink refuses the snapshot and keeps the failure for the transport actor to raise
    (``storage_failure``), as the storage actor raises its own.
    """

    def __init__(self, member_id: int, raft_store: RaftStore) -> None:
        self.member_id = member_id
        self.raft_store = raft_store
        self.written: dict[tuple[int, int], SnapshotManifest] = {}
        """(sender, index) of each snapshot whose chunks are all written, not yet delivered."""
        self.storage_failure: StorageFailed | None = None
        self.storage_failed = trio.Event()

    def failed(self, error: StorageFailed) -> SnapshotRefused:
        """Keep the store's first failure for the transport actor; the refusal to answer."""
        if self.storage_failure is None:
            self.storage_failure = error
            self.storage_failed.set()
        return SnapshotRefused(f"the store failed: {error}")

    def begin(self, sender: int, payload: Payload, chunks: int, size_bytes: int) -> SnapshotWriter:
        """A writer for the snapshot ``payload`` announces, if it is newer than ours; if it is
        at or below ours, a writer that keeps nothing and hands Raft ours (``_HeldSnapshot``).

        Raises:
            SnapshotRefused: malformed, not for us, at index 0, or counts that disagree.
        """
        try:
            message = message_from_wire(payload)
        except WireError as error:
            raise SnapshotRefused(f"a malformed snapshot message: {error}") from None
        snapshot = message.snapshot
        if message.type is not MessageType.SNAPSHOT or snapshot is None:
            raise SnapshotRefused("not a snapshot message")
        if message.sender != sender or message.recipient != self.member_id:
            raise SnapshotRefused("a snapshot message from or to another member")
        index = snapshot.metadata.index
        manifest = SnapshotManifest.decode(snapshot.data)  # checked by message_from_wire
        if (manifest.chunks, manifest.size_bytes) != (chunks, size_bytes):
            raise SnapshotRefused("the snapshot's manifest and its announced size disagree")
        if index == 0:
            raise SnapshotRefused("a snapshot at index 0")
        stored = self.raft_store.snapshot()
        self.written.pop((sender, index), None)
        if stored is not None and stored.index >= index:
            held = SnapshotManifest(stored.chunks, stored.size_bytes, stored.received)
            return _HeldSnapshot(self, sender, index, held)
        try:
            self.raft_store.clear_snapshot_chunks(index, received=True)
            writer = self.raft_store.snapshot_chunk_writer(index, received=True)
        except StorageFailed as error:
            raise self.failed(error) from None
        manifest = SnapshotManifest(chunks, size_bytes, True)
        return _ReceivedSnapshot(self, sender, index, manifest, writer)

    def take_written(self, sender: int, index: int) -> SnapshotManifest | None:
        """The manifest of ``sender``'s snapshot at ``index`` if all its chunks are written
        here (once)."""
        return self.written.pop((sender, index), None)


class _ReceivedSnapshot:
    """One incoming snapshot's chunks into the RaftStore (``SnapshotWriter``), as one bulk
    write committed when the last has come."""

    def __init__(
        self,
        sink: RaftStoreSnapshotSink,
        sender: int,
        index: int,
        manifest: SnapshotManifest,
        writer: SnapshotChunkWriter,
    ) -> None:
        self.sink = sink
        self.sender = sender
        self.index = index
        self.manifest = manifest
        self.writer = writer

    async def chunk(self, seq: int, data: bytes) -> None:
        try:
            self.writer.put(seq, data)
        except (StorageCorrupted, InvalidWrite) as error:
            raise SnapshotRefused(f"snapshot chunk {seq}: {error}") from None
        except StorageFailed as error:
            raise self.sink.failed(error) from None
        await trio.lowlevel.checkpoint()

    async def finish(self) -> None:
        try:
            await self.writer.commit()
        except InvalidWrite as error:  # a snapshot at that index came in another way meanwhile
            raise SnapshotRefused(f"snapshot {self.index}: {error}") from None
        except StorageFailed as error:
            raise self.sink.failed(error) from None
        self.sink.written[(self.sender, self.index)] = self.manifest

    def abort(self) -> None:
        self.writer.abort()


class _HeldSnapshot:
    """An incoming snapshot at or below the index of the one we hold: its chunks are not kept
    (ours hold that state or a later one), and Raft gets the message with ours.

    Why not refuse it: a leader whose log is compacted past what it last heard of us sends
    its snapshot until our Raft answers it; Raft, whose commit index is at least our
    snapshot's, never adopts it and answers with that commit index (as etcd's does), and the
    leader goes on from there with entries. Refused, it never heard, and sent the same
    snapshot again and again: a follower stuck at its own snapshot's index until the run's
    liveness bound (the simulator's seed 85 of corrupt-reads, v3, 6 s, with the snapshot we
    hold; seed 2784 of swarm, v2, in the sweep on 7081ad1). A leader's snapshot may also be
    older than ours (it snapshots on its own schedule), the same loop.
    """

    def __init__(
        self, sink: RaftStoreSnapshotSink, sender: int, index: int, held: SnapshotManifest
    ) -> None:
        self.sink = sink
        self.sender = sender
        self.index = index
        self.held = held

    async def chunk(self, seq: int, data: bytes) -> None:
        await trio.lowlevel.checkpoint()

    async def finish(self) -> None:
        self.sink.written[(self.sender, self.index)] = self.held
        await trio.lowlevel.checkpoint()

    def abort(self) -> None:
        pass


class TransportActor:
    """Moves Raft messages between the raft actor and the peer transport."""

    def __init__(
        self,
        member_id: int,
        transport: PeerTransport,
        inbound: trio.MemoryReceiveChannel[tuple[int, dict[str, object]]],
        to_raft: trio.MemorySendChannel[RaftInput],
        *,
        raft_store: RaftStore,
    ) -> None:
        self.member_id = member_id
        self.transport = transport
        self.raft_store = raft_store
        self.snapshot_sink = RaftStoreSnapshotSink(member_id, raft_store)
        transport.set_snapshot_sink(self.snapshot_sink)
        self.inbound = inbound
        self.to_raft = to_raft
        self.reports_send, self.reports_receive = trio.open_memory_channel[RaftInput](
            REPORTS_QUEUE_LENGTH_MAX
        )
        self.dropped_messages = 0
        self.on_lease_payload: Callable[[int, Payload], None] | None = None
        """Takes the lease requests and answers peers send (``actors.leases``)."""
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

            self._send_snapshot(message, wire, report)
        elif not self.transport.send(message.recipient, wire):
            self.dropped_messages += 1

    def _send_snapshot(
        self, message: Message, wire: dict[str, object], report: Callable[[bool], None]
    ) -> None:
        """The message and the chunks its manifest names, from a scan of them made now."""
        snapshot = message.snapshot
        assert snapshot is not None
        manifest = SnapshotManifest.decode(snapshot.data)
        if not manifest.chunks:
            log.error("%x: snapshot at %d has no chunks", self.member_id, snapshot.metadata.index)
            self.transport.send_snapshot(
                message.recipient, wire, iter(()), report, chunk_count=1, size_bytes=1
            )
            return
        chunks = self.raft_store.snapshot_chunks(
            snapshot.metadata.index, manifest.received, manifest.chunks
        )
        self.transport.send_snapshot(
            message.recipient,
            wire,
            (value for _, _, value in chunks),
            report,
            chunk_count=manifest.chunks,
            size_bytes=manifest.size_bytes,
        )

    async def run(self) -> None:
        """Forward inbound messages and snapshot reports until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._forward_reports)
            nursery.start_soon(self._stop_on_storage_failure)
            await self._receive()

    async def _stop_on_storage_failure(self) -> None:
        """Raise the failure a snapshot's write met (``RaftStoreSnapshotSink``)."""
        sink = self.snapshot_sink
        await sink.storage_failed.wait()
        assert sink.storage_failure is not None
        raise sink.storage_failure

    async def _receive(self) -> None:
        """Take the inbound payloads waiting (up to ``INBOUND_BATCH_MAX``) in one task step
        and hand the raft actor their messages without a step per message (waiting only
        while its inbox is full)."""
        async with self.inbound:
            while True:
                try:
                    item = await self.inbound.receive()
                except trio.EndOfChannel:
                    return
                taken = 1
                while True:
                    message = self._message_from(*item)
                    if message is not None:
                        try:
                            self.to_raft.send_nowait(FromPeer(message))
                        except trio.WouldBlock:
                            await self.to_raft.send(FromPeer(message))
                    if taken == INBOUND_BATCH_MAX:
                        break
                    try:
                        item = self.inbound.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    taken += 1

    def _message_from(self, sender: int, payload: Payload) -> Message | None:
        """The checked Raft message a payload carries; None (logged) for a lease relay
        payload (handed to ``on_lease_payload``) or one the raft actor must not see."""
        if LEASE_RELAY_KIND in payload:
            if self.on_lease_payload is not None:
                self.on_lease_payload(sender, payload)
            return None
        try:
            message = message_from_wire(payload)
        except WireError as error:
            log.warning("%x: malformed message from %x: %s", self.member_id, sender, error)
            return None
        if message.sender != sender or message.recipient != self.member_id:
            log.warning(
                "%x: message from %x claims to be from %x to %x; dropped",
                self.member_id,
                sender,
                message.sender,
                message.recipient,
            )
            return None
        if message.type is MessageType.APPEND:
            self.appends_received.record(sum(len(e.data) for e in message.entries))
        if message.type is MessageType.SNAPSHOT:
            return self._with_written_chunks(message)
        return message

    def _with_written_chunks(self, message: Message) -> Message | None:
        """A snapshot message whose chunks are all written here, its manifest naming them;
        None (logged) for one that did not come with its chunks."""
        snapshot = message.snapshot
        assert snapshot is not None
        manifest = self.snapshot_sink.take_written(message.sender, snapshot.metadata.index)
        if manifest is None:
            log.warning(
                "%x: snapshot message from %x without its chunks; dropped",
                self.member_id,
                message.sender,
            )
            return None
        return dataclasses.replace(
            message, snapshot=dataclasses.replace(snapshot, data=manifest.encode())
        )

    async def _forward_reports(self) -> None:
        async with self.reports_receive:
            async for report in self.reports_receive:
                await self.to_raft.send(report)
