"""A V2Backend made of the real V2Store and nothing else: no Raft, one member, a settable clock.

It numbers like the etcd session of ETCD_API.md section 1.4: the store starts at index 3 (etcd's
own first writes; here three hidden keys) and the Raft index runs two ahead of the store's.
"""

from __future__ import annotations

from typing import Any

import trio

from net.backend import (
    BackendError,
    MemberInfo,
    MemberNotFound,
    PeerUrlExists,
)
from storage.v2store.model import Event, V2Request
from storage.v2store.store import V2Store
from storage.v2store.watch import Watcher

CLUSTER_ID = 0xDDCDF4F4FBBA999B
MEMBER_ID = 0x628ED94AD692E8A1
# 2026-11-20T22:54:56.459540957Z, so that ttl=20 expires at the instant the reference shows
START_NS = 1_795_215_296_459_540_957

SELF = MemberInfo(
    MEMBER_ID, "n1", ("http://127.0.0.1:23800",), ("http://127.0.0.1:23790",), is_learner=False
)


class FakeBackend:
    """The store behind a one-member cluster that is always the leader."""

    def __init__(self) -> None:
        self.store = V2Store()
        self.clock_ns = START_NS
        self.raft_term_value = 2
        self.raft_index_value = 2
        self.members_list = [SELF]
        self.leader_member: MemberInfo | None = SELF
        self.failure: BackendError | None = None
        self.healthy = True
        self.proposed: list[V2Request] = []
        self.next_member_id = 0x91406527CEFE73C
        for name in ("_a", "_b", "_c"):
            self._commit(V2Request("PUT", f"/_etcd/{name}", value="x", time_ns=self.clock_ns))

    @property
    def cluster_id(self) -> int:
        return CLUSTER_ID

    @property
    def member_id(self) -> int:
        return MEMBER_ID

    def now_ns(self) -> int:
        return self.clock_ns

    def store_index(self) -> int:
        return self.store.index

    def advance(self, seconds: float) -> None:
        self.clock_ns += int(seconds * 1e9)

    def _commit(self, request: V2Request) -> Event | None:
        self.raft_index_value += 1
        return self.store.apply(request)

    async def propose(self, request: V2Request) -> Event:
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise self.failure
        self.proposed.append(request)
        event = self._commit(request)
        assert event is not None
        return event

    async def read(self, request: V2Request) -> Event:
        await trio.lowlevel.checkpoint()
        if request.method == "QGET" and self.failure is not None:
            raise self.failure
        event = self.store.apply(request)
        assert event is not None
        return event

    def expire(self) -> None:
        """Commit a SYNC at the current time: keys past their TTL expire."""
        self._commit(V2Request("SYNC", "/", time_ns=self.clock_ns))

    def watch(self, path: str, recursive: bool, stream: bool, since_index: int) -> Watcher:
        return self.store.watch(path, recursive=recursive, stream=stream, since_index=since_index)

    def raft_index(self) -> int:
        return self.raft_index_value

    def raft_term(self) -> int:
        return self.raft_term_value

    def members(self) -> list[MemberInfo]:
        return list(self.members_list)

    def leader(self) -> MemberInfo | None:
        return self.leader_member

    async def add_member(self, peer_urls: tuple[str, ...], is_learner: bool = False) -> MemberInfo:
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise self.failure
        taken = {url for member in self.members_list for url in member.peer_urls}
        if taken & set(peer_urls):
            raise PeerUrlExists
        member = MemberInfo(self.next_member_id, "", peer_urls, (), is_learner)
        self.next_member_id += 1
        self.members_list.append(member)
        return member

    async def remove_member(self, member_id: int) -> None:
        await trio.lowlevel.checkpoint()
        kept = [member for member in self.members_list if member.id != member_id]
        if len(kept) == len(self.members_list):
            raise MemberNotFound
        self.members_list = kept

    async def update_member(self, member_id: int, peer_urls: tuple[str, ...]) -> None:
        await trio.lowlevel.checkpoint()
        for index, member in enumerate(self.members_list):
            if member.id == member_id:
                self.members_list[index] = MemberInfo(
                    member.id, member.name, peer_urls, member.client_urls, member.is_learner
                )
                return
        raise MemberNotFound

    def stats_self(self) -> dict[str, Any]:
        return {
            "name": "n1",
            "id": f"{MEMBER_ID:x}",
            "state": "StateLeader",
            "startTime": "2026-11-20T22:50:00.5Z",
            "leaderInfo": {
                "leader": f"{MEMBER_ID:x}",
                "uptime": "4.0194894s",
                "startTime": "2026-11-20T22:50:01Z",
            },
            "recvAppendRequestCnt": 0,
            "sendAppendRequestCnt": 0,
        }

    def stats_leader(self) -> dict[str, Any] | None:
        if self.leader_member is None or self.leader_member.id != MEMBER_ID:
            return None
        return {"leader": f"{MEMBER_ID:x}", "followers": {}}

    def stats_store(self) -> dict[str, Any]:
        return self.store.stats_json()

    async def health(self, excluded_alarms: frozenset[str] = frozenset()) -> bool:
        await trio.lowlevel.checkpoint()
        return self.healthy

    def version(self) -> tuple[str, str]:
        return ("3.4.23", "3.4.0")
