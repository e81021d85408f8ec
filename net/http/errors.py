"""Errors the HTTP client raises; callers catch these, never bare exceptions."""

from __future__ import annotations


class HttpError(Exception):
    """Base of the HTTP client's errors."""


class HttpConnectError(HttpError):
    """The server could not be reached."""


class HttpTimeout(HttpError):
    """No complete response within the timeout."""


class HttpProtocolError(HttpError):
    """The server broke the protocol: malformed bytes, or the connection closed mid-response."""


class ResponseTooLarge(HttpProtocolError):
    """The response's headers or body passed the client's bound."""
