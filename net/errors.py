"""Errors that callers of ``net.frames`` and ``net.peers`` handle.

A ``FrameError`` means the other side sent bytes that are not a valid frame: the connection is
refused (with a logged reason) and closed, and the member goes on. ``EndOfFrames`` is not an
error of the peer: it closed the stream cleanly, between two frames.

The errors of the Network seam itself (``ConnectionRefused``) live in ``net.network``.
"""

from __future__ import annotations


class FrameError(Exception):
    """Base of the errors a frame reader raises for bad input."""


class FrameTooLarge(FrameError):
    """A frame's length prefix is over the limit (checked before its body is read).

    Attributes:
        length_bytes: the length the frame announced (or would have, when encoding).
        limit_bytes: the largest length allowed.
    """

    def __init__(self, length_bytes: int, limit_bytes: int) -> None:
        self.length_bytes = length_bytes
        self.limit_bytes = limit_bytes
        super().__init__(f"frame of {length_bytes} bytes is over the limit of {limit_bytes}")


class MalformedFrame(FrameError):
    """A frame's body is not one CBOR map of plain values, or breaks a structural limit."""


class TruncatedFrame(FrameError):
    """The stream ended in the middle of a frame."""


class EndOfFrames(Exception):
    """The stream ended cleanly, at a frame boundary."""


class HandshakeRefused(Exception):
    """The member we dialed refused our handshake.

    Attributes:
        reason: the reason it gave.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"handshake refused: {reason}")
