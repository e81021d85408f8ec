"""ReadIndex bookkeeping on the leader.

A read request records the commit index at arrival; the leader then sends a
heartbeat round carrying the request's context. Once a quorum answers that
round, no newer leader can have existed when the request arrived, so the
recorded index is safe to read at. Requests are answered in arrival order;
an acknowledged request also confirms every request queued before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.raft.messages import Message


@dataclass(slots=True)
class ReadIndexRequest:
    """One pending read: the request, the index to read at, who confirmed it."""

    message: Message
    index: int
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    """The pending ReadIndex requests of a leader, oldest first."""

    def __init__(self, pending_max: int) -> None:
        self.pending_max = pending_max
        self._requests: dict[bytes, ReadIndexRequest] = {}

    def __len__(self) -> int:
        return len(self._requests)

    def add_request(self, index: int, message: Message) -> bool:
        """Queue a request to read at ``index``.

        Returns:
            False when a request with the same context is already queued or
            the queue is full (the caller retries later).
        """
        if message.context in self._requests or len(self._requests) >= self.pending_max:
            return False
        self._requests[message.context] = ReadIndexRequest(message, index)
        return True

    def receive_ack(self, node: int, context: bytes) -> set[int] | None:
        """Record that ``node`` answered the heartbeat round for ``context``.

        Returns:
            Everyone who has confirmed that request so far, or None if unknown.
        """
        request = self._requests.get(context)
        if request is None:
            return None
        request.acks.add(node)
        return request.acks

    def release_through(self, context: bytes) -> list[ReadIndexRequest]:
        """Remove and return every request up to and including ``context``."""
        released: list[ReadIndexRequest] = []
        for key in list(self._requests):
            released.append(self._requests.pop(key))
            if key == context:
                return released
        raise AssertionError("released a read request that was not pending")

    def last_pending_context(self) -> bytes:
        """The newest request's context, carried by the next heartbeat round."""
        if not self._requests:
            return b""
        return next(reversed(self._requests))

    def clear(self) -> None:
        """Drop every pending request (leadership was lost)."""
        self._requests.clear()
