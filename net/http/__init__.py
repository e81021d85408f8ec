"""HTTP/1.1 over the Network interface: a server (httptools), a client, and their values."""

from net.http.messages import (
    Handler,
    Headers,
    Request,
    Response,
    StreamingResponse,
    plain_text,
    reason_phrase,
)
from net.http.server import HttpServer, ServerLimits

__all__ = [
    "Handler",
    "Headers",
    "HttpServer",
    "Request",
    "Response",
    "ServerLimits",
    "StreamingResponse",
    "plain_text",
    "reason_phrase",
]
