"""HTTP/1.1 over the Network interface: a server (httptools), a client, and their values."""

from net.http.client import ClientLimits, ClientResponse, HttpClient, StreamingClientResponse
from net.http.errors import (
    HttpConnectError,
    HttpError,
    HttpProtocolError,
    HttpTimeout,
    ResponseTooLarge,
)
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
    "ClientLimits",
    "ClientResponse",
    "Handler",
    "Headers",
    "HttpClient",
    "HttpConnectError",
    "HttpError",
    "HttpProtocolError",
    "HttpServer",
    "HttpTimeout",
    "Request",
    "Response",
    "ResponseTooLarge",
    "ServerLimits",
    "StreamingClientResponse",
    "StreamingResponse",
    "plain_text",
    "reason_phrase",
]
