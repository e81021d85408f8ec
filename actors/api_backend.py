"""The member as the HTTP APIs see it: ``net.v2api.V2Backend`` over ``actors.member``.

``net`` defines what it needs (values and errors in ``net.backend``); this
adapter answers from the member: writes go through Raft, linearizable reads
wait for ReadIndex, local reads and watches go straight to the applied
store, and the member's errors become the ones etcd clients expect.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Final

import bcrypt
import trio

from actors.auth_backend import BCRYPT_PASSWORD_BYTES, bcrypt_salt
from actors.bootstrap import QUORUM_READ_WITHOUT_READ_INDEX
from actors.member import Member, NoLeader, RequestTimeout
from actors.membership import Member as MemberRecord
from actors.raft import DropReason
from actors.raft_actor import NotLeader
from actors.state_machine import V2Reader
from actors.waiters import TooManyRequests
from net.backend import (
    BackendBusy,
    BackendError,
    BackendTimeout,
    MemberInfo,
    MemberNotFound,
    MemberRemoved,
    PeerUrlExists,
)
from net.backend import NoLeader as BackendNoLeader
from net.etcdpb import rpc_pb2
from net.http.messages import Handler, Request, Response, StreamingResponse, plain_text
from net.v2json import format_rfc3339_nano
from storage.space import NO_SPACE_MESSAGE, write_refusal
from storage.v2store.model import Event, V2Request
from storage.v2store.watch import Watcher

SERVER_VERSION = "3.4.23"
"""The etcd version we answer to: clients pick their API by it (etcd3gw uses /v3/ from 3.4)."""
CLUSTER_VERSION = "3.4.0"
HEALTH_TIMEOUT_S = 1.0
"""etcd's /health gives a linearizable read one second."""
V2_BCRYPT_COST: Final = 10
"""etcd 3.4's v2 auth hashes with bcrypt's default cost, whatever ``--bcrypt-cost`` says
(that flag is v3's)."""


MemberErrors = (RequestTimeout, NoLeader, NotLeader, TooManyRequests)
"""What the member's request paths raise when it cannot serve a request now."""


def translate(error: Exception) -> Exception:
    """The member's errors as the APIs' (``net.backend``), for both v2 and v3."""
    if isinstance(error, RequestTimeout):
        return BackendTimeout()
    if isinstance(error, NoLeader):
        return BackendNoLeader()
    if isinstance(error, NotLeader):
        if error.reason is DropReason.UNCOMMITTED_LIMIT:
            return BackendBusy()
        return BackendError(f"etcdserver: {error}")
    if isinstance(error, TooManyRequests):
        return BackendBusy()
    return error


def member_info(record: MemberRecord) -> MemberInfo:
    """A member table row as the API shows it."""
    return MemberInfo(
        record.member_id, record.name, record.peer_urls, record.client_urls, record.is_learner
    )


class MemberView:
    """What both APIs show of the member: ids, Raft position, the member table, versions.

    ``MemberV2Backend`` and ``actors.v3_backend.MemberV3Backend`` share it: ``net``'s v2 and
    v3 backend protocols name these the same way on purpose.
    """

    def __init__(self, member: Member) -> None:
        self.member = member

    @property
    def cluster_id(self) -> int:
        return self.member.cluster_id

    @property
    def member_id(self) -> int:
        return self.member.member_id

    def raft_index(self) -> int:
        return max(self.member.status.commit_index, self.member.applied_index())

    def raft_term(self) -> int:
        return self.member.status.term

    def members(self) -> list[MemberInfo]:
        return [member_info(record) for record in self.member.membership.sorted_members()]

    def leader(self) -> MemberInfo | None:
        record = self.member.membership.members.get(self.member.leader_id())
        return None if record is None else member_info(record)

    def version(self) -> tuple[str, str]:
        return SERVER_VERSION, CLUSTER_VERSION


class MemberV2Backend(MemberView):
    """Implements ``net.v2api.V2Backend`` for one member."""

    @property
    def reader(self) -> V2Reader:
        """The state machine's v2 store, read-only."""
        return self.member.machine.v2_reader()

    def now_ns(self) -> int:
        return self.member.clock.now_ns()

    async def propose(self, request: V2Request) -> Event:
        if request.method in ("PUT", "POST") and write_refusal(self.member.kv) is not None:
            # etcd's NOSPACE words; the v2 API answers them as error 300 (storage.space).
            raise BackendError(NO_SPACE_MESSAGE)
        try:
            return await self.member.propose_v2(request)
        except MemberErrors as error:
            raise translate(error) from None

    async def read(self, request: V2Request) -> Event:
        bugs = self.member.config.planted_bugs
        if request.method == "QGET" and QUORUM_READ_WITHOUT_READ_INDEX not in bugs:
            try:
                await self.member.confirm_read()
            except MemberErrors as error:
                raise translate(error) from None
        return self.reader.get(
            request.path, recursive=request.recursive, sorted=request.sorted, now_ns=self.now_ns()
        )

    def watch(self, path: str, recursive: bool, stream: bool, since_index: int) -> Watcher:
        return self.reader.watch(path, recursive=recursive, stream=stream, since_index=since_index)

    def store_index(self) -> int:
        return self.reader.index

    async def add_member(self, peer_urls: tuple[str, ...], is_learner: bool = False) -> MemberInfo:
        if self.member.membership.peer_url_in_use(list(peer_urls)):
            raise PeerUrlExists()
        try:
            record = await self.member.add_member(list(peer_urls), is_learner)
        except MemberErrors as error:
            raise translate(error) from None
        return member_info(record)

    async def remove_member(self, member_id: int) -> None:
        membership = self.member.membership
        if member_id in membership.removed:
            raise MemberRemoved()
        if member_id not in membership.members:
            raise MemberNotFound()
        try:
            await self.member.remove_member(member_id)
        except MemberErrors as error:
            raise translate(error) from None

    async def update_member(self, member_id: int, peer_urls: tuple[str, ...]) -> None:
        membership = self.member.membership
        if member_id not in membership.members:
            raise MemberNotFound()
        others = [m for m in membership.sorted_members() if m.member_id != member_id]
        if any(set(peer_urls) & set(m.peer_urls) for m in others):
            raise PeerUrlExists()
        try:
            await self.member.update_member(member_id, list(peer_urls))
        except MemberErrors as error:
            raise translate(error) from None

    def stats_self(self) -> dict[str, Any]:
        member = self.member
        started = format_rfc3339_nano(member.started_at_ns)
        leader = member.leader_id()
        uptime_s = (member.clock.now_ns() - member.started_at_ns) / 1e9
        transport = member.transport_actor
        stats: dict[str, Any] = {
            "name": member.config.name,
            "id": f"{member.member_id:x}",
            "state": "StateLeader" if member.is_leader() else "StateFollower",
            "startTime": started,
            "leaderInfo": {
                "leader": f"{leader:x}" if leader else "",
                "uptime": f"{uptime_s:.3f}s",
                "startTime": started,
            },
            "recvAppendRequestCnt": transport.appends_received.count,
            "sendAppendRequestCnt": transport.appends_sent.count,
        }
        # etcd leaves rates out when they are zero (omitempty).
        for prefix, meter in (
            ("recv", transport.appends_received),
            ("send", transport.appends_sent),
        ):
            packages_per_s, bytes_per_s = meter.rates()
            if packages_per_s:
                stats[f"{prefix}PkgRate"] = packages_per_s
                stats[f"{prefix}BandwidthRate"] = bytes_per_s
        return stats

    def stats_leader(self) -> dict[str, Any] | None:
        member = self.member
        if not member.is_leader():
            return None
        followers = {
            f"{record.member_id:x}": {
                "latency": {
                    "current": 0,
                    "average": 0,
                    "standardDeviation": 0,
                    "minimum": 0,
                    "maximum": 0,
                },
                "counts": {"fail": 0, "success": 0},
            }
            for record in member.membership.sorted_members()
            if record.member_id != member.member_id
        }
        return {"leader": f"{member.member_id:x}", "followers": followers}

    def stats_store(self) -> dict[str, Any]:
        return dict(self.reader.stats_json())

    async def health(self, excluded_alarms: frozenset[str] = frozenset()) -> bool:
        alarms = self.member.machine.alarms.active()
        names = [rpc_pb2.AlarmType.Name(rpc_pb2.AlarmType.ValueType(kind)) for _, kind in alarms]
        if any(name not in excluded_alarms for name in names):
            return False  # etcd 3.4: any alarm not excluded (?exclude=NOSPACE) is unhealthy
        if not self.member.leader_id():
            return False
        with trio.move_on_after(HEALTH_TIMEOUT_S):
            try:
                await self.member.confirm_read()
            except MemberErrors:
                return False
            return True
        return False


class MemberPasswords:
    """``net.v2auth.Passwords`` of a member: salts from its seeded random source, bcrypt
    through its hasher (inline under the simulator, a worker thread in production), both
    read at each call since the composition root may replace them after start."""

    def __init__(self, member: Member) -> None:
        self._member = member

    async def hash(self, password: str) -> str:
        auth = self._member.auth
        salt = bcrypt_salt(auth.rng, V2_BCRYPT_COST)
        secret = password.encode()[:BCRYPT_PASSWORD_BYTES]  # as Go's bcrypt reads it
        hashed = await auth.hasher(partial(bcrypt.hashpw, secret, salt))
        return hashed.decode()

    async def check(self, hashed: str, password: str) -> bool:
        matched = await self._member.auth.hasher(partial(_matches, password, hashed))
        return matched == b"1"


def _matches(password: str, hashed: str) -> bytes:
    """b"1" when ``password`` has the hash ``hashed`` (a hasher's call gives bytes)."""
    secret = password.encode()[:BCRYPT_PASSWORD_BYTES]  # as Go's bcrypt reads it
    try:
        return b"1" if bcrypt.checkpw(secret, hashed.encode()) else b""
    except ValueError:  # a malformed hash
        return b""


def gate_until_published(member: Member, handler: Handler) -> Handler:
    """Hold requests until the member has published its client URLs (as etcd serves
    clients only once it is ready); answer 503 if that takes longer than a request may."""

    async def gated(request: Request) -> Response | StreamingResponse:
        if not member.published.is_set():
            with trio.move_on_after(member.config.request_timeout_s):
                await member.published.wait()
            if not member.published.is_set():
                return plain_text(503, "etcdserver: not ready to serve client requests")
        return await handler(request)

    return gated
