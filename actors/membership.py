"""The cluster's members: ids, names and URLs, replicated through the log.

Raft's configuration knows only ids; clients need names and URLs. The table
here is part of the state machine: a conf-change entry carries the member's
name and peer URLs in its context, and a member publishes its name and
client URLs through an ordinary entry once it has started, as etcd does.

Ids follow etcd's formulas (facts of its API): a member id is the first 8
bytes of SHA-1 over its peer URLs, the cluster token, and for members added
at runtime the time of the addition; the cluster id is the first 8 bytes of
SHA-1 over the sorted member ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import cbor2

NAME_LENGTH_MAX = 256
URLS_PER_MEMBER_MAX = 16
URL_LENGTH_MAX = 2048


@dataclass(frozen=True, slots=True)
class Member:
    """One member as the cluster knows it."""

    member_id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False

    def to_plain(self) -> list[Any]:
        """For snapshots and conf-change contexts."""
        return [
            self.member_id,
            self.name,
            list(self.peer_urls),
            list(self.client_urls),
            self.is_learner,
        ]

    @classmethod
    def from_plain(cls, item: object) -> Member:
        """Parse what ``to_plain`` made.

        Raises:
            ValueError: malformed.
        """
        if not isinstance(item, list) or len(item) != 5:
            raise ValueError("a member must be a 5-item list")
        member_id, name, peer_urls, client_urls, is_learner = item
        if type(member_id) is not int or not 0 < member_id < 1 << 64:
            raise ValueError("member id must be a positive 64-bit integer")
        if not isinstance(name, str) or len(name) > NAME_LENGTH_MAX:
            raise ValueError("member name must be a short string")
        if type(is_learner) is not bool:
            raise ValueError("is_learner must be a boolean")
        return cls(member_id, name, _urls(peer_urls), _urls(client_urls), is_learner)


def _urls(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > URLS_PER_MEMBER_MAX:
        raise ValueError("URLs must be a short list")
    if any(not isinstance(url, str) or len(url) > URL_LENGTH_MAX for url in value):
        raise ValueError("URLs must be short strings")
    return tuple(value)


def member_id_for(
    peer_urls: list[str] | tuple[str, ...], token: str, added_at_s: int | None = None
) -> int:
    """etcd's member id: SHA-1 over the sorted peer URLs, the token, and the add time."""
    material = "".join(sorted(peer_urls)) + token
    if added_at_s is not None:
        material += str(added_at_s)
    digest = hashlib.sha1(material.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") or 1


def cluster_id_for(member_ids: list[int]) -> int:
    """etcd's cluster id: SHA-1 over the sorted member ids, 8 bytes each."""
    material = b"".join(member_id.to_bytes(8, "big") for member_id in sorted(member_ids))
    digest = hashlib.sha1(material, usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") or 1


def parse_initial_cluster(text: str) -> dict[str, list[str]]:
    """``"n1=http://a:2380,n2=http://b:2380"`` into names and their peer URLs.

    Raises:
        ValueError: an item without ``=``, an empty name, or no items.
    """
    cluster: dict[str, list[str]] = {}
    for item in text.split(","):
        name, separator, url = item.strip().partition("=")
        if not separator or not name or not url:
            raise ValueError(f"--initial-cluster item {item!r} is not name=url")
        cluster.setdefault(name, []).append(url)
    if not cluster:
        raise ValueError("--initial-cluster is empty")
    return cluster


class Membership:
    """The member table, changed only by applying entries."""

    def __init__(self, members: dict[int, Member] | None = None) -> None:
        self.members: dict[int, Member] = dict(members or {})
        self.removed: set[int] = set()

    def sorted_members(self) -> list[Member]:
        """Members in id order."""
        return [self.members[member_id] for member_id in sorted(self.members)]

    def add(self, member: Member) -> None:
        """A conf change added ``member`` (or promoted it)."""
        self.members[member.member_id] = member

    def remove(self, member_id: int) -> None:
        """A conf change removed ``member_id``; its id can never come back."""
        self.members.pop(member_id, None)
        self.removed.add(member_id)

    def publish(self, member_id: int, name: str, client_urls: tuple[str, ...]) -> None:
        """A member announced its name and client URLs."""
        member = self.members.get(member_id)
        if member is not None:
            self.members[member_id] = replace(member, name=name, client_urls=client_urls)

    def update_peer_urls(self, member_id: int, peer_urls: tuple[str, ...]) -> None:
        """A member's peer URLs changed."""
        member = self.members.get(member_id)
        if member is not None:
            self.members[member_id] = replace(member, peer_urls=peer_urls)

    def peer_url_in_use(self, peer_urls: list[str]) -> bool:
        """Does any member already use one of ``peer_urls``?"""
        wanted = set(peer_urls)
        return any(wanted & set(member.peer_urls) for member in self.members.values())

    def encode(self) -> bytes:
        """For snapshots and the applied state."""
        members = [member.to_plain() for member in self.sorted_members()]
        return cbor2.dumps([members, sorted(self.removed)])

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        """Parse what ``encode`` made.

        Raises:
            ValueError: malformed.
        """
        try:
            item = cbor2.loads(data)
        except (cbor2.CBORDecodeError, ValueError, TypeError) as error:
            raise ValueError(f"membership is not cbor: {error}") from None
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError("membership must be [members, removed]")
        members_plain, removed = item
        if not isinstance(members_plain, list) or not isinstance(removed, list):
            raise ValueError("membership must hold two lists")
        membership = cls({m.member_id: m for m in map(Member.from_plain, members_plain)})
        membership.removed = {member_id for member_id in removed if type(member_id) is int}
        return membership
