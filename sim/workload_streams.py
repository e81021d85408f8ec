"""Simulated v3 lease holders and watchers over gRPC streams, recorded in ``sim.v3_records``.

They run beside the KV clients of ``sim.workload_v3`` in every v3 run, each on its own
simulated host with one ``GrpcChannel`` per member it has talked to, moving on to another
member when one stops answering:

- A *lease holder* grants a lease with an id of its own (``lease_id_for``: so an unanswered
  grant leaves no lease the checker cannot name), attaches one or two keys to it
  (``lease/<id>/<n>``), keeps it alive over a LeaseKeepAlive stream for a while, then either
  revokes it or abandons it, asking its time to live (which does not renew it) until it has
  expired, and starts the next. Every grant and keep-alive answered
  with a positive TTL is an acknowledgement, every answer that says the lease is gone a
  sighting (``sim.lease_checker``).
- A *watcher* watches a key range (every key, the KV keys, the lease keys, or one key), with
  or without ``prev_kv``, from "now" or from revision 1 (replaying history). A *slow* one
  watches every key over a channel with small HTTP/2 windows and stops reading now and then,
  so the member's bounded queue for its stream fills and the hub must catch it up later.
  Each stream lives a random while, or until its member fails; the watcher then resumes on a
  random member from the revision after the last event it received (``sim.watch_checker``).

A service a member does not serve (``UNIMPLEMENTED``) ends the client: the run goes on with
what the cluster offers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from random import Random
from typing import Final, TypeVar

import trio
from google.protobuf.message import Message

from net.etcdpb import kv_pb2, rpc_pb2
from net.etcdpb.routes import grpc_path
from net.grpc.client import CLIENT_LIMITS, CallStream, GrpcChannel
from net.grpc.limits import GrpcLimits
from net.v3.errors import RpcError, StatusCode
from sim.cluster import SimCluster
from sim.v3_records import (
    ChangeEvent,
    KeepAliveSent,
    LeaseAck,
    LeaseGone,
    LeasePut,
    LeaseRevoke,
    ReceivedEvent,
    V3Log,
    Version,
    WatchSegment,
    WatchSession,
    lease_key,
)
from sim.workload_v3 import member_address

GRANT_PATH: Final = grpc_path("Lease", "LeaseGrant")
REVOKE_PATH: Final = grpc_path("Lease", "LeaseRevoke")
TIME_TO_LIVE_PATH: Final = grpc_path("Lease", "LeaseTimeToLive")
KEEP_ALIVE_PATH: Final = grpc_path("Lease", "LeaseKeepAlive")
PUT_PATH: Final = grpc_path("KV", "Put")
WATCH_PATH: Final = grpc_path("Watch", "Watch")
ResponseT = TypeVar("ResponseT", bound=Message)
LEASE_IDS_PER_CLIENT: Final = 1_000_000
"""Lease ids of holder ``c`` are ``c * LEASE_IDS_PER_CLIENT + n``."""
SLOW_READER_LIMITS: Final = replace(
    CLIENT_LIMITS,
    stream_window_bytes=1024,
    connection_window_bytes=65_535,
    stream_buffer_bytes_max=1024,
    receive_message_bytes_max=1 << 20,
    connection_buffer_bytes_max=2 << 20,
)
"""A slow watcher's channel: small windows and buffers, so that while it does not read, the
member's sender soon blocks and the watch hub's bounded queue for the stream fills."""
SLOW_STREAM_LIFE_FACTOR: Final = 3
"""A slow watcher's streams live this much longer, so its stalls add up on one stream."""
STALL_TAIL_S: Final = 1.5
"""A slow watcher's stall ends this long before its stream does, so it reads what piled up."""
EXPIRY_WAIT_S_MAX: Final = 4.0
"""An abandoned lease is asked after until its TTL plus this has passed."""
WATCHED_RANGES: Final = (
    (b"\0", b"\0"),  # every key
    (b"k", b"l"),  # the KV workload's keys
    (b"lease/", b"lease0"),  # the lease keys
    (b"k0", b""),  # one key
)


@dataclass(frozen=True)
class StreamOptions:
    """How the lease holders and watchers behave.

    Attributes:
        lease_holders / watchers: how many of each.
        lease_ttls_s: the TTLs asked for (a member raises one below its minimum).
        hold_s_max: a lease is kept alive for a time drawn in [0, max).
        revoke_fraction: of the leases, how many are revoked (the rest expire).
        keys_per_lease_max: keys attached to each lease, 1 to this many.
        keep_alive_every_s: the pause between keep-alives.
        answer_timeout_s: a keep-alive not answered within this is given up (the stream too).
        request_timeout_s: grant, put and revoke time out after this.
        stream_life_s_max: a watch stream is closed after a time drawn in [0.2, max).
        pause_s_max: pause between leases.
        slow_watchers: of the watchers, how many read slowly (watcher 2 on): after a response
            each stops reading, now and then, for up to ``stall_s_max``.
        stall_fraction / stall_s_max: how often a slow watcher stalls, and for how long.
    """

    lease_holders: int = 3
    watchers: int = 4
    slow_watchers: int = 1
    stall_fraction: float = 0.1
    stall_s_max: float = 6.0
    lease_ttls_s: tuple[int, ...] = (2, 3)
    hold_s_max: float = 6.0
    revoke_fraction: float = 0.5
    keys_per_lease_max: int = 2
    keep_alive_every_s: float = 0.3
    answer_timeout_s: float = 1.0
    request_timeout_s: float = 3.0
    stream_life_s_max: float = 4.0
    pause_s_max: float = 0.3


def lease_id_for(holder: int, number: int) -> int:
    """The id of holder ``holder``'s ``number``-th lease."""
    assert 0 < number < LEASE_IDS_PER_CLIENT, number
    return holder * LEASE_IDS_PER_CLIENT + number


def version_of(kv: kv_pb2.KeyValue) -> Version:
    """A ``mvccpb.KeyValue`` as the checkers compare it."""
    return Version(kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease)


def change_of(event: kv_pb2.Event) -> ChangeEvent:
    """A ``mvccpb.Event`` as the checkers compare it (``prev_kv`` absent when unset)."""
    prev = version_of(event.prev_kv) if event.HasField("prev_kv") else None
    return ChangeEvent(event.type == kv_pb2.Event.DELETE, version_of(event.kv), prev)


class Unserved(Exception):
    """The member does not serve this service: the client stops."""


@dataclass
class _Channels:
    """One channel per member, opened on first use, closed with the client."""

    cluster: SimCluster
    host_name: str
    stack: contextlib.AsyncExitStack
    open: dict[str, GrpcChannel] = field(default_factory=dict)

    limits: GrpcLimits = CLIENT_LIMITS

    async def to(self, member: str) -> GrpcChannel:
        if member not in self.open:
            host = self.cluster.network.host(self.host_name)
            channel = GrpcChannel(host, member_address(member), self.limits)
            self.open[member] = await self.stack.enter_async_context(channel)
        return self.open[member]


@dataclass
class LeaseHolder:
    """One lease holder (see the module docstring)."""

    holder: int
    cluster: SimCluster
    log: V3Log
    options: StreamOptions
    rng: Random
    leases: int = 0
    target: str = ""

    async def run(self, stop_at_s: float) -> None:
        """Grant, use, keep alive and end leases until ``stop_at_s``."""
        self.target = self.rng.choice(self.cluster.names)
        async with contextlib.AsyncExitStack() as stack:
            channels = _Channels(self.cluster, f"l{self.holder}", stack)
            with contextlib.suppress(Unserved):
                while trio.current_time() < stop_at_s:
                    self.leases += 1
                    await self._one_lease(channels, stop_at_s)
                    await trio.sleep(self.rng.random() * self.options.pause_s_max)

    def _move_on(self) -> None:
        self.target = self.rng.choice(self.cluster.names)

    async def _unary(
        self, channels: _Channels, path: str, request: Message, response_type: type[ResponseT]
    ) -> ResponseT:
        """One call to the current target; ``Unserved`` for UNIMPLEMENTED; a failed member
        is left for another."""
        channel = await channels.to(self.target)
        try:
            return await channel.unary(
                path, request, response_type, timeout_s=self.options.request_timeout_s
            )
        except RpcError as error:
            if error.code is StatusCode.UNIMPLEMENTED:
                raise Unserved() from error
            if error.code is not StatusCode.NOT_FOUND:
                self._move_on()
            raise

    async def _one_lease(self, channels: _Channels, stop_at_s: float) -> None:
        lease_id = lease_id_for(self.holder, self.leases)
        ttl_s = self.rng.choice(self.options.lease_ttls_s)
        self.log.granted.add(lease_id)
        sent_s = trio.current_time()
        try:
            request = rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=ttl_s)
            granted = await self._unary(channels, GRANT_PATH, request, rpc_pb2.LeaseGrantResponse)
        except RpcError:
            return
        if granted.error or granted.TTL <= 0:
            return
        now_s = trio.current_time()
        self.log.acks.append(LeaseAck(lease_id, sent_s, now_s, granted.TTL, "grant"))
        for number in range(self.rng.randint(1, self.options.keys_per_lease_max)):
            if not await self._put(channels, lease_id, number):
                return
        hold_until_s = min(stop_at_s, now_s + self.rng.random() * self.options.hold_s_max)
        if not await self._keep_alive(channels, lease_id, hold_until_s):
            return
        if trio.current_time() >= stop_at_s:
            return
        if self.rng.random() < self.options.revoke_fraction:
            await self._revoke(channels, lease_id)
        else:
            await self._await_expiry(channels, lease_id, granted.TTL, stop_at_s)

    async def _put(self, channels: _Channels, lease_id: int, number: int) -> bool:
        """Attach a key; False once the lease is seen gone."""
        key = lease_key(lease_id, number).encode()
        value = f"l{self.holder}-{self.leases}-{number}".encode()
        request = rpc_pb2.PutRequest(key=key, value=value, lease=lease_id)
        try:
            response = await self._unary(channels, PUT_PATH, request, rpc_pb2.PutResponse)
        except RpcError as error:
            if error.code is StatusCode.NOT_FOUND:
                self._gone(lease_id, f"a put of {key.decode()} was refused: {error.message}")
                return False
            return True
        put = LeasePut(lease_id, key, value, response.header.revision, trio.current_time())
        self.log.lease_puts.append(put)
        return True

    async def _revoke(self, channels: _Channels, lease_id: int) -> None:
        """Revoke, recorded when sent (the run may end before the answer comes, and the lease
        may be gone by then all the same), and completed with the answer's revision."""
        invoked_s = trio.current_time()
        position = len(self.log.revokes)
        self.log.revokes.append(LeaseRevoke(lease_id, invoked_s))
        request = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        try:
            response = await self._unary(
                channels, REVOKE_PATH, request, rpc_pb2.LeaseRevokeResponse
            )
        except RpcError as error:
            if error.code is StatusCode.NOT_FOUND:
                self._gone(lease_id, f"a revoke was refused: {error.message}")
            return
        revision = response.header.revision
        answered = LeaseRevoke(lease_id, invoked_s, revision, trio.current_time())
        self.log.revokes[position] = answered

    async def _await_expiry(
        self, channels: _Channels, lease_id: int, ttl_s: int, stop_at_s: float
    ) -> None:
        """Ask the lease's time to live (which does not renew it) until it is gone, for a
        bounded while: the sighting dates its expiry."""
        until_s = min(stop_at_s, trio.current_time() + ttl_s + EXPIRY_WAIT_S_MAX)
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id)
        while trio.current_time() < until_s:
            await trio.sleep(self.options.keep_alive_every_s)
            try:
                response_type = rpc_pb2.LeaseTimeToLiveResponse
                answer = await self._unary(channels, TIME_TO_LIVE_PATH, request, response_type)
            except RpcError:
                continue
            if answer.TTL == -1:
                self._gone(lease_id, "its time to live was answered -1")
                return

    def _gone(self, lease_id: int, how: str) -> None:
        self.log.gone.append(LeaseGone(lease_id, trio.current_time(), how))

    async def _keep_alive(self, channels: _Channels, lease_id: int, until_s: float) -> bool:
        """Keep the lease alive until ``until_s``, moving member on failures; False once the
        lease is seen gone."""
        while trio.current_time() < until_s:
            channel = await channels.to(self.target)
            try:
                async with channel.stream(KEEP_ALIVE_PATH, rpc_pb2.LeaseKeepAliveResponse) as call:
                    if not await self._keep_alive_on(call, lease_id, until_s):
                        return False
            except (RpcError, trio.TooSlowError) as error:
                if isinstance(error, RpcError) and error.code is StatusCode.UNIMPLEMENTED:
                    raise Unserved() from error
                self._move_on()
                await trio.sleep(self.rng.random() * self.options.keep_alive_every_s)
        return True

    async def _keep_alive_on(
        self, call: CallStream[rpc_pb2.LeaseKeepAliveResponse], lease_id: int, until_s: float
    ) -> bool:
        """Keep-alives on one stream until ``until_s``; False once the lease is seen gone.

        Raises:
            RpcError, trio.TooSlowError: the stream failed or an answer did not come.
        """
        while trio.current_time() < until_s:
            sent_s = trio.current_time()
            try:
                await call.send(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
                with trio.fail_after(self.options.answer_timeout_s):
                    answer = await call.__anext__()
            except BaseException:
                self.log.keep_alives.append(KeepAliveSent(lease_id, sent_s, None))
                raise
            self.log.keep_alives.append(KeepAliveSent(lease_id, sent_s, trio.current_time()))
            if answer.TTL <= 0:
                self._gone(lease_id, f"a keep-alive sent at {sent_s:.3f}s was answered TTL 0")
                return False
            self.log.acks.append(LeaseAck(lease_id, sent_s, trio.current_time(), answer.TTL))
            await trio.sleep(self.options.keep_alive_every_s)
        return True


@dataclass
class Watcher:
    """One logical watcher (see the module docstring)."""

    number: int
    cluster: SimCluster
    log: V3Log
    options: StreamOptions
    rng: Random
    session: WatchSession | None = None

    async def run(self, stop_at_s: float) -> None:
        """Watch until ``stop_at_s``, resuming after every stream that ends."""
        slow = 2 <= self.number < 2 + self.options.slow_watchers
        if self.number == 1 or slow:
            key, range_end, prev_kv = b"\0", b"\0", self.number == 1
        else:
            key, range_end = self.rng.choice(WATCHED_RANGES)
            prev_kv = self.rng.random() < 0.5
        session = self.session = self.log.new_session(key, range_end, prev_kv)
        next_revision = self.rng.choice((0, 1))
        async with contextlib.AsyncExitStack() as stack:
            channels = _Channels(self.cluster, f"w{self.number}", stack)
            if slow:
                channels.limits = SLOW_READER_LIMITS
            while trio.current_time() < stop_at_s:
                member = self.rng.choice(self.cluster.names)
                segment = WatchSegment(member, next_revision, trio.current_time())
                session.segments.append(segment)
                life_s = 0.2 + self.rng.random() * (self.options.stream_life_s_max - 0.2)
                if slow:
                    life_s *= SLOW_STREAM_LIFE_FACTOR
                channel = await channels.to(member)  # outside the scope: it opens a nursery
                deadline_s = min(stop_at_s, trio.current_time() + life_s)
                with trio.move_on_at(deadline_s):
                    try:
                        await self._stream(channel, session, segment, deadline_s if slow else None)
                    except RpcError as error:
                        segment.end = f"{error.code.name}: {error.message}"
                        if error.code is StatusCode.UNIMPLEMENTED:
                            return
                if segment.compact_revision:
                    return  # the history it wanted is gone: this watcher cannot go on
                next_revision = _resume_at(session, next_revision)
                await trio.sleep(self.rng.random() * self.options.pause_s_max)

    async def _stream(
        self,
        channel: GrpcChannel,
        session: WatchSession,
        segment: WatchSegment,
        stalls_until_s: float | None,
    ) -> None:
        """One Watch stream, recorded into ``segment``; a slow watcher (``stalls_until_s``:
        the stream's end) stalls now and then, and reads on for ``STALL_TAIL_S`` after each
        stall, so what the member queued meanwhile reaches it on this same stream."""
        create = rpc_pb2.WatchCreateRequest(
            key=session.key,
            range_end=session.range_end,
            start_revision=segment.start_revision,
            prev_kv=session.prev_kv,
        )
        async with channel.stream(WATCH_PATH, rpc_pb2.WatchResponse) as call:
            await call.send(rpc_pb2.WatchRequest(create_request=create))
            async for response in call:
                if response.created and segment.created_revision is None:
                    segment.created_revision = response.header.revision
                now_s = trio.current_time()
                for event in response.events:
                    segment.events.append(ReceivedEvent(change_of(event), now_s))
                if response.canceled:
                    segment.end = f"canceled: {response.cancel_reason}"
                    segment.compact_revision = response.compact_revision
                    return
                if stalls_until_s is not None and self.rng.random() < self.options.stall_fraction:
                    stall_s = self.rng.random() * self.options.stall_s_max
                    room_s = stalls_until_s - STALL_TAIL_S - trio.current_time()
                    await trio.sleep(max(0.0, min(stall_s, room_s)))
            segment.end = "the server ended the stream"


def _resume_at(session: WatchSession, asked: int) -> int:
    """Where the next stream starts: after the last event received, else where the first
    created stream started, else what was asked before."""
    for segment in reversed(session.segments):
        if segment.events:
            return segment.events[-1].event.revision + 1
    for segment in session.segments:
        start = segment.effective_start
        if start is not None:
            return start
    return asked


async def run_stream_clients(
    cluster: SimCluster, log: V3Log, *, options: StreamOptions, rng: Random, stop_at_s: float
) -> None:
    """Run every lease holder and watcher until ``stop_at_s``."""
    holders = [
        LeaseHolder(number, cluster, log, options, Random(rng.getrandbits(64)))
        for number in range(1, options.lease_holders + 1)
    ]
    watchers = [
        Watcher(number, cluster, log, options, Random(rng.getrandbits(64)))
        for number in range(1, options.watchers + 1)
    ]
    async with trio.open_nursery() as nursery:
        for holder in holders:
            nursery.start_soon(holder.run, stop_at_s)
        for watcher in watchers:
            nursery.start_soon(watcher.run, stop_at_s)
