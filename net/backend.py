"""What the client-facing APIs need to know about the member behind them, as values and errors.

The member (in ``actors/``) implements the backends the HTTP APIs define (``V2Backend`` in
``net.v2api``); these are the values and errors those protocols speak in, so that ``net``
never imports ``actors``.

Errors of the member, not of the request (the request may well succeed when retried):

- ``BackendTimeout``: the proposal or read was not done in time (etcd: "etcdserver: request
  timed out").
- ``NoLeader``: there is no leader to take it (etcd: "etcdserver: no leader").

The v2 keys API answers both as etcd does: ``500 {"errorCode":300,"message":"Raft Internal
Error","cause":<the message>,...}``.

Membership errors are etcd's ``membership.Err*``; their ``str()`` is etcd's message.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One member of the cluster as the APIs show it.

    Attributes:
        id: the member id (shown in hex in v2, in decimal in v3).
        name: ``--name``; empty for a member added but not started yet.
        peer_urls: where peers reach it.
        client_urls: where clients reach it; empty until it has started.
        is_learner: a non-voting member.
    """

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.id < 2**64:
            raise ValueError(f"member id {self.id} is not a non-zero uint64")


class BackendError(Exception):
    """The member could not serve a request now; ``str()`` is etcd's error text."""


class BackendTimeout(BackendError):
    """A proposal or a linearizable read did not finish in time."""

    def __init__(self, message: str = "etcdserver: request timed out") -> None:
        super().__init__(message)


class NoLeader(BackendError):
    """No leader is known, so nothing can be proposed or read linearizably."""

    def __init__(self, message: str = "etcdserver: no leader") -> None:
        super().__init__(message)


class BackendBusy(BackendError):
    """Too many requests are waiting, or too much of the log is uncommitted."""

    def __init__(self, message: str = "etcdserver: too many requests") -> None:
        super().__init__(message)


class MembershipError(Exception):
    """A membership change the cluster refuses; ``str()`` is etcd's message."""


class PeerUrlExists(MembershipError):
    def __init__(self) -> None:
        super().__init__("membership: peerURL exists")


class MemberIdExists(MembershipError):
    def __init__(self) -> None:
        super().__init__("membership: ID exists")


class MemberNotFound(MembershipError):
    def __init__(self) -> None:
        super().__init__("membership: member not found")


class MemberRemoved(MembershipError):
    """The id belonged to a member that was removed; ids are never reused."""

    def __init__(self) -> None:
        super().__init__("membership: ID removed")
