"""The v3 RPCs as both transports see them: a table from gRPC path to a typed handler.

One implementation of each RPC serves gRPC (``net.grpc``) and the JSON gateway
(``net.v3.gateway``): a service builds a :data:`Methods` table, and each
transport decodes the request message, calls the handler and encodes what it
returns (or the :class:`~net.v3.errors.RpcError` it raises). Keys are gRPC
paths such as ``/etcdserverpb.KV/Range`` (``net.etcdpb.routes.grpc_path``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a handler may know of the call besides its request.

    Attributes:
        metadata: request metadata as (lower-case name, value) pairs: gRPC's custom
            headers, or the gateway's HTTP headers (``authorization`` carries an auth
            token on both).
        deadline: when the client stops waiting, in Trio's clock (``grpc-timeout``);
            None when it set none.
        peer_common_name: the CommonName of the client certificate the TLS handshake
            verified (gRPC only; never from a header), for ``--client-cert-auth``.
    """

    metadata: tuple[tuple[str, str], ...] = ()
    deadline: float | None = None
    peer_common_name: str | None = None

    def get(self, name: str) -> str | None:
        """The first metadata value named ``name`` (lower case), or None."""
        for key, value in self.metadata:
            if key == name:
                return value
        return None


UnaryHandler = Callable[[Message, CallContext], Awaitable[Message]]
"""One request in, one response out (or an ``RpcError`` raised)."""

SendMessage = Callable[[Message], Awaitable[None]]
StreamHandler = Callable[[AsyncIterator[Message], SendMessage, CallContext], Awaitable[None]]
"""A streaming call: the client's messages in (one, for a server-streaming RPC), any number
sent back with ``send``; returning ends the call with OK, raising ``RpcError`` with that
status."""


@dataclass(frozen=True, slots=True)
class UnaryMethod:
    """A unary RPC: its request type and handler."""

    request_type: type[Message]
    handler: UnaryHandler = field(repr=False)


@dataclass(frozen=True, slots=True)
class StreamMethod:
    """A streaming RPC (client, server or bidirectional): its request type and handler."""

    request_type: type[Message]
    handler: StreamHandler = field(repr=False)


Method = UnaryMethod | StreamMethod
Methods = Mapping[str, Method]
"""Every RPC a server serves, by gRPC path."""


_Request = TypeVar("_Request", bound=Message)


def unary_method(
    request_type: type[_Request], handler: Callable[[_Request, CallContext], Awaitable[Message]]
) -> UnaryMethod:
    """A table entry for a handler typed with its own request type: the transports decode
    ``request_type`` for it."""

    async def call(request: Message, context: CallContext) -> Message:
        assert isinstance(request, request_type), type(request)
        return await handler(request, context)

    return UnaryMethod(request_type, call)
