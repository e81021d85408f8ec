"""etcd 3.4's JSON gateway (grpc-gateway v1 in front of the v3 RPCs) as an HTTP handler.

:class:`JsonGateway` serves a :data:`~net.v3.methods.Methods` table on the client port the way
etcd 3.4.23 does (checked on loopback, ETCD_API.md sections 2 and 9):

- ``POST /v3/<route>`` for each route of ``net.etcdpb.routes`` the table serves;
  ``/v3beta/`` is an alias. Another method on a served route is ``405 Method Not Allowed``,
  anything else ``404 Not Found`` (both Go's ``http.Error`` text). ``OPTIONS`` is ``200``.
- Requests are read as golang/protobuf's ``jsonpb`` reads them (:func:`decode_message`):
  proto or lowerCamel field names (lowerCamel wins), int64 as numbers or strings (exactly),
  enums by name or number, bytes in standard base64, ``null`` as absent, unknown fields
  ignored, only the first JSON value of the body read, an empty body taken as ``{}``; and
  refused with Go's error text (``invalid character 'x' ...``, ``json: cannot unmarshal ...``,
  ``illegal base64 data at input byte N``).
- Responses are ``jsonpb`` with ``OrigName`` and no defaults (:func:`encode_message`): int64
  as strings, zero values left out, a present but empty message as ``{}``.
- Errors are ``{"error","message","code"}`` with grpc-gateway's HTTP status: those of the
  service chunked with a ``Trailer`` header; those of reading the input (400, or 500 code 2
  for the first message of a bidirectional stream, as grpc-gateway does) with a length.
- Streams answer newline-terminated ``{"result":...}`` messages, each its own chunk; a
  bidirectional stream's body may hold several request objects, read one after another
  (a bad one ends the requests, silently); an error mid-stream is grpc-gateway's
  ``{"error":{"grpc_code","http_code","message","http_status"}}``.
- HTTP headers reach the handler as metadata as grpc-gateway forwards them:
  ``authorization`` as is, ``Grpc-Metadata-<name>`` as ``<name>``, the other standard
  headers as ``grpcgateway-<name>``.

Where we differ: the HTTP trailer ``Grpc-Trailer-Content-Type`` is announced but not sent (the
HTTP server writes no trailers; clients ignore it); invalid UTF-8 in a body is replaced, not
refused; Go's error texts for a few malformed literals (``tru``, ``-``) are approximations.

The member routes ``/v3/`` and ``/v3beta/`` here (``actors.client_api.route_client_paths``).
"""

from __future__ import annotations

import base64
import binascii
import json
import json.decoder
import json.scanner
import logging
import string
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import trio
from google.protobuf import descriptor as _descriptor
from google.protobuf import json_format
from google.protobuf.message import Message

from net.etcdpb.routes import GATEWAY_ROUTES, grpc_path
from net.gocompat import encode_json
from net.grpc.framing import too_large_to_receive
from net.grpc.limits import RECEIVE_MESSAGE_BYTES_MAX
from net.http.messages import Request, Response, StreamingResponse, reason_phrase
from net.v2api import CORS_HEADERS
from net.v3.errors import RpcError, StatusCode, http_status
from net.v3.methods import CallContext, Methods, StreamMethod, UnaryMethod

logger = logging.getLogger(__name__)

V3_PREFIX = "/v3/"
V3BETA_PREFIX = "/v3beta/"

JSON_CONTENT_TYPE = ("Content-Type", "application/json")
GRPC_METADATA = ("Grpc-Metadata-Content-Type", "application/grpc")
ERROR_TRAILER = ("Trailer", "Grpc-Trailer-Content-Type")

STREAM_MESSAGES_BUFFERED_MAX = 16
"""Messages a stream handler may send ahead of the client reading them; then it waits."""

BIDI_STREAMS = frozenset({grpc_path("Watch", "Watch"), grpc_path("Lease", "LeaseKeepAlive")})
"""Streams whose client sends many messages (grpc-gateway reads their body as a sequence)."""

PERMANENT_HEADERS = frozenset(
    (
        *("accept", "accept-charset", "accept-language", "accept-ranges", "authorization"),
        *("cache-control", "content-type", "cookie", "date", "expect", "from", "host"),
        *("if-match", "if-modified-since", "if-none-match", "if-schedule-tag-match"),
        *("if-unmodified-since", "max-forwards", "origin", "pragma", "referer", "user-agent"),
        *("via", "warning"),
    )
)
"""The HTTP headers grpc-gateway forwards as ``grpcgateway-<name>`` metadata."""

METADATA_PREFIX = "grpc-metadata-"

# -- reading JSON as Go does ----------------------------------------------------------------


class InputError(ValueError):
    """A request body the gateway cannot read; ``str()`` is Go's error text."""


class _JsonText(str):
    """A JSON string value, with the text between its quotes as sent (``raw``): jsonpb reads
    enum names and quoted numbers from the raw text, unescaping nothing."""

    raw: str


class _JsonNumber(str):
    """A JSON number, as its literal text (Go parses it per target type)."""


_WHITESPACE = " \t\n\r"
_HEX = frozenset(string.hexdigits)


_SCANSTRING: Any = getattr(json.decoder, "scanstring")  # noqa: B009 (untyped in typeshed)


def _parse_string(text: str, end: int, strict: bool) -> tuple[_JsonText, int]:
    value, new_end = _SCANSTRING(text, end, strict)
    result = _JsonText(value)
    result.raw = text[end : new_end - 1]
    return result, new_end


def _refuse_constant(name: str) -> Any:
    raise InputError(f"invalid character {_go_char(name[0])} looking for beginning of value")


def _make_scanner() -> Any:
    decoder = json.JSONDecoder(
        parse_int=_JsonNumber, parse_float=_JsonNumber, parse_constant=_refuse_constant
    )
    decoder.parse_string = _parse_string  # type: ignore[attr-defined]
    # The pure-Python scanner, as it calls ``parse_string`` (the C one does not).
    return getattr(json.scanner, "py_make_scanner")(decoder)  # noqa: B009


_SCAN = _make_scanner()


def _go_char(char: str) -> str:
    """A character as Go's JSON scanner quotes it in errors."""
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    return "'" + _go_quote(char)[1:-1] + "'"


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_GO_ESCAPES |= {"\v": "\\v", "\\": "\\\\", '"': '\\"'}


def _go_quote(text: str) -> str:
    """``text`` as Go's ``%q`` writes it."""
    out = []
    for char in text:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def _container_at(text: str, pos: int) -> str:
    """The innermost open ``{`` or ``[`` before ``pos`` (the text is valid JSON up to it)."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _literal_error(text: str, pos: int) -> str | None:
    """Go's text for a broken ``true``/``false``/``null`` or number at ``pos``, if one is
    (``""``: it is cut off by the end of the input)."""
    char = text[pos]
    for literal in ("true", "false", "null"):
        if char != literal[0]:
            continue
        for offset in range(1, len(literal)):
            if pos + offset >= len(text):
                return ""
            if text[pos + offset] != literal[offset]:
                got = _go_char(text[pos + offset])
                return (
                    f"invalid character {got} in literal {literal} (expecting '{literal[offset]}')"
                )
    if char == "-":
        if pos + 1 == len(text):
            return ""
        return f"invalid character {_go_char(text[pos + 1])} in numeric literal"
    return None


def _syntax_error(text: str, error: json.JSONDecodeError, eof: str) -> InputError:
    """Go's error for the syntax error Python found (``eof``: Go's text for a cut-off value)."""
    pos = error.pos
    if error.msg.startswith("Unterminated string") or not text[pos:].strip(_WHITESPACE):
        return InputError(eof)
    char = _go_char(text[pos])
    if error.msg.startswith("Expecting value"):
        literal = _literal_error(text, pos)
        if literal == "":
            return InputError(eof)
        return InputError(literal or f"invalid character {char} looking for beginning of value")
    if error.msg.startswith("Expecting ':'"):
        return InputError(f"invalid character {char} after object key")
    if error.msg.startswith("Expecting ','"):
        where = "object key:value pair" if _container_at(text, pos) == "{" else "array element"
        return InputError(f"invalid character {char} after {where}")
    if error.msg.startswith("Expecting property name"):
        return InputError(f"invalid character {char} looking for beginning of object key string")
    if error.msg.startswith("Invalid control character"):
        return InputError(f"invalid character {char} in string literal")
    if error.msg.startswith("Invalid \\escape"):
        return InputError(f"invalid character {_go_char(text[pos + 1])} in string escape code")
    if error.msg.startswith("Invalid \\uXXXX"):
        bad = next((c for c in text[pos : pos + 4] if c not in _HEX), text[pos])
        return InputError(f"invalid character {_go_char(bad)} in \\u hexadecimal character escape")
    return InputError(f"invalid character {char} looking for beginning of value")


def _scan(text: str, pos: int, eof: str) -> tuple[Any, int]:
    try:
        value, end = _SCAN(text, pos)
    except StopIteration as stop:
        error = json.JSONDecodeError("Expecting value", text, stop.value)
        raise _syntax_error(text, error, eof) from None
    except json.JSONDecodeError as error:
        raise _syntax_error(text, error, eof) from None
    except RecursionError:
        raise InputError("exceeded max depth") from None
    return value, end


def json_values(text: str) -> Iterator[Any]:
    """The JSON values of ``text``, one after another, as Go's ``json.Decoder`` reads them.

    Raises:
        InputError: when reaching a value that is not valid JSON (the ones before it have
            been yielded).
    """
    pos = 0
    while True:
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= len(text):
            return
        value, pos = _scan(text, pos, "unexpected EOF")
        yield value


def _unmarshal(text: str) -> Any:
    """One whole JSON document, as Go's ``json.Unmarshal`` reads it."""
    eof = "unexpected end of JSON input"
    pos = len(text) - len(text.lstrip(_WHITESPACE))
    value, end = _scan(text, pos, eof)
    rest = text[end:].lstrip(_WHITESPACE)
    if rest:
        raise InputError(f"invalid character {_go_char(rest[0])} after top-level value")
    return value


# -- Go's base64 ------------------------------------------------------------------------------

_B64_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
_B64_VALUES = {ord(char): value for value, char in enumerate(_B64_ALPHABET)}
_NEWLINES = (0x0A, 0x0D)
_PAD = ord("=")


def go_base64(text: str) -> bytes:
    """Decode standard base64 (with padding) as Go's ``base64.StdEncoding`` does: newlines
    are skipped, the unused bits of the last quantum are not checked, and an error names the
    offset Go names.

    Raises:
        InputError: ``illegal base64 data at input byte N``.
    """
    if "\n" not in text and "\r" not in text:
        try:  # the common case, in C; what it refuses is decoded again for Go's error
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            pass
    data = text.encode("utf-8", "surrogatepass")
    out = bytearray()
    index = 0
    while True:
        sextets: list[int] = []
        while len(sextets) < 4:
            if index == len(data):
                if not sextets:
                    return bytes(out)
                raise _bad_base64(index - len(sextets))
            byte = data[index]
            index += 1
            if byte in _NEWLINES:
                continue
            value = _B64_VALUES.get(byte)
            if value is not None:
                sextets.append(value)
                continue
            if byte != _PAD or len(sextets) < 2:
                raise _bad_base64(index - 1)
            _check_padding(data, index, len(sextets))
            out += _quantum(sextets)
            return bytes(out)
        out += _quantum(sextets)


def _quantum(sextets: list[int]) -> bytes:
    """The bytes of 2 to 4 base64 digits."""
    value = 0
    for sextet in (*sextets, 0, 0, 0, 0)[:4]:
        value = value << 6 | sextet
    return value.to_bytes(3, "big")[: len(sextets) - 1]


def _check_padding(data: bytes, index: int, digits: int) -> None:
    """After the first ``=`` (just before ``index``) of a quantum of ``digits`` digits: the
    padding is complete and nothing but newlines follows."""
    if digits == 2:
        while index < len(data) and data[index] in _NEWLINES:
            index += 1
        if index == len(data):
            raise _bad_base64(len(data))
        if data[index] != _PAD:
            raise _bad_base64(index - 1)
        index += 1
    while index < len(data) and data[index] in _NEWLINES:
        index += 1
    if index < len(data):
        raise _bad_base64(index)


def _bad_base64(offset: int) -> InputError:
    return InputError(f"illegal base64 data at input byte {offset}")


# -- JSON to message (jsonpb) -------------------------------------------------------------------

FD = _descriptor.FieldDescriptor

_INT_RANGES: dict[int, tuple[str, int, int]] = {
    FD.TYPE_INT64: ("int64", -(2**63), 2**63 - 1),
    FD.TYPE_SINT64: ("int64", -(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: ("int64", -(2**63), 2**63 - 1),
    FD.TYPE_UINT64: ("uint64", 0, 2**64 - 1),
    FD.TYPE_FIXED64: ("uint64", 0, 2**64 - 1),
    FD.TYPE_INT32: ("int32", -(2**31), 2**31 - 1),
    FD.TYPE_SINT32: ("int32", -(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: ("int32", -(2**31), 2**31 - 1),
    FD.TYPE_UINT32: ("uint32", 0, 2**32 - 1),
    FD.TYPE_FIXED32: ("uint32", 0, 2**32 - 1),
}
_ENUM_RANGE = (-(2**31), 2**31 - 1)


def _kind(value: Any) -> str:
    """The JSON kind of a scanned value, as Go names it in ``cannot unmarshal`` errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, _JsonNumber):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null"


def _type_error(what: str, go_type: str) -> InputError:
    return InputError(f"json: cannot unmarshal {what} into Go value of type {go_type}")


def _go_enum_name(enum: _descriptor.EnumDescriptor) -> str:
    """The name gogo/golang protobuf registers an enum under: ``pkg.Outer_Inner``."""
    package = enum.file.package
    local = enum.full_name[len(package) + 1 :] if package else enum.full_name
    return f"{package}.{local.replace('.', '_')}" if package else local


def _parse_integer(literal: str, go_type: str, low: int, high: int) -> int:
    """A JSON number literal as Go's ``strconv.ParseInt``/``ParseUint`` takes it."""
    body = literal[1:] if literal.startswith("-") else literal
    # ASCII only: str.isdigit and int() take other scripts' digits, Go does not.
    if not body.isascii() or not body.isdigit() or (low == 0 and literal.startswith("-")):
        raise _type_error(f"number {literal}", go_type)
    number = int(literal)
    if not low <= number <= high:
        raise _type_error(f"number {literal}", go_type)
    return number


def _integer(value: Any, field: FD) -> int | None:
    go_type, low, high = _INT_RANGES[field.type]
    if isinstance(value, _JsonText):
        value = _unmarshal(value.raw)  # jsonpb unquotes numbers and reads the inside again
        if value is None:
            return 0
    if isinstance(value, _JsonNumber):
        return _parse_integer(value, go_type, low, high)
    raise _type_error(_kind(value), go_type)


def _enum(value: Any, field: FD) -> int:
    enum = field.enum_type
    assert enum is not None, field.full_name
    go_type = _go_enum_name(enum)
    if isinstance(value, _JsonText):
        name = value.raw.strip('"')
        found = enum.values_by_name.get(name)
        if found is None:
            raise InputError(f"unknown value {_go_quote(name)} for enum {go_type}")
        return int(found.number)
    if isinstance(value, _JsonNumber):
        return _parse_integer(value, go_type, *_ENUM_RANGE)
    raise _type_error(_kind(value), go_type)


def _float(value: Any, field: FD) -> float | None:
    go_type = "float32" if field.type == FD.TYPE_FLOAT else "float64"
    if isinstance(value, _JsonText):
        if value.raw in ("NaN", "Infinity", "-Infinity"):
            return float(value.raw.replace("Infinity", "inf"))
        value = _unmarshal(value.raw)
        if value is None:
            return None
    if isinstance(value, _JsonNumber):
        return float(value)
    raise _type_error(_kind(value), go_type)


def _scalar(value: Any, field: FD) -> Any:
    """A JSON value as the Python value of a scalar field (None: leave the default)."""
    if value is None:
        return None
    if field.type == FD.TYPE_ENUM:
        return _enum(value, field)
    if field.type in _INT_RANGES:
        return _integer(value, field)
    if field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return _float(value, field)
    if field.type == FD.TYPE_BOOL:
        if isinstance(value, bool):
            return value
        raise _type_error(_kind(value), "bool")
    if field.type == FD.TYPE_STRING:
        if isinstance(value, _JsonText):
            return str(value)
        raise _type_error(_kind(value), "string")
    if field.type == FD.TYPE_BYTES:
        if isinstance(value, _JsonText):
            return go_base64(str(value))
        if isinstance(value, list):
            return _byte_array(value)
        raise _type_error(_kind(value), "[]uint8")
    raise InputError(f"unsupported field type {field.type}")


def _byte_array(items: list[Any]) -> bytes:
    """A JSON array of numbers as bytes: Go's encoding/json takes ``[]byte`` this way too."""
    out = bytearray()
    for item in items:
        if not isinstance(item, _JsonNumber):
            raise _type_error(_kind(item), "uint8")
        out.append(_parse_integer(item, "uint8", 0, 255))
    return bytes(out)


def _fill(message: Message, value: Any) -> None:
    """Set the fields of ``message`` from a scanned JSON object (``None`` sets nothing)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise _type_error(_kind(value), "map[string]json.RawMessage")
    fields: list[FD] = list(message.DESCRIPTOR.fields)  # type: ignore[arg-type]
    for field in fields:
        camel, orig = field.json_name, field.name
        if camel in value:
            item = value[camel]
        elif orig in value:
            item = value[orig]
        else:
            continue
        if item is None:
            continue
        if field.is_repeated:
            _fill_repeated(message, field, item)
        elif field.type == FD.TYPE_MESSAGE:
            sub = getattr(message, field.name)
            sub.SetInParent()
            _fill(sub, item)
        else:
            scalar = _scalar(item, field)
            if scalar is not None:
                setattr(message, field.name, scalar)


def _fill_repeated(message: Message, field: FD, items: Any) -> None:
    if not isinstance(items, list):
        raise _type_error(_kind(items), "[]json.RawMessage")
    container = getattr(message, field.name)
    for item in items:
        if field.type == FD.TYPE_MESSAGE:
            _fill(container.add(), item)
        else:
            scalar = _scalar(item, field)
            container.append(scalar if scalar is not None else field.default_value)


def message_from_value(message_type: type[Message], value: Any) -> Message:
    """A message from one scanned JSON value (jsonpb's rules).

    Raises:
        InputError: a value of the wrong kind, a bad number, enum name or base64.
    """
    message = message_type()
    _fill(message, value)
    return message


def decode_message(message_type: type[Message], body: bytes) -> Message:
    """The first JSON value of ``body`` as a ``message_type`` (an empty body is ``{}``).

    Raises:
        InputError: with Go's error text.
    """
    for value in json_values(body.decode("utf-8", "replace")):
        return message_from_value(message_type, value)
    return message_type()


def encode_message(message: Message) -> dict[str, Any]:
    """``message`` as jsonpb writes it with ``OrigName`` and no defaults, as a dict."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


# -- HTTP -----------------------------------------------------------------------------------------


def _error_body(error: RpcError) -> bytes:
    return encode_json({"error": error.message, "message": error.message, "code": int(error.code)})


def _error_headers(error: RpcError) -> tuple[tuple[str, str], ...]:
    headers = (*CORS_HEADERS, JSON_CONTENT_TYPE)
    if error.code == StatusCode.UNAUTHENTICATED:
        headers = (*headers, ("WWW-Authenticate", error.message))
    return headers


def input_error_response(error: RpcError) -> Response:
    """An error found before the call: sent with a length and no trailer."""
    return Response(http_status(error.code), _error_headers(error), _error_body(error))


def rpc_error_response(error: RpcError) -> StreamingResponse:
    """An error of the call itself: chunked, announcing grpc-gateway's trailer."""
    return StreamingResponse(
        http_status(error.code),
        (*_error_headers(error), ERROR_TRAILER),
        _chunks_of(_error_body(error)),
    )


async def _chunks_of(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def stream_error_chunk(error: RpcError) -> bytes:
    """grpc-gateway v1's ``StreamError`` chunk, for an error after a stream has begun."""
    status = http_status(error.code)
    return encode_json(
        {
            "error": {
                "grpc_code": int(error.code),
                "http_code": status,
                "message": error.message,
                "http_status": reason_phrase(status),
            }
        }
    )


def result_chunk(message: Message) -> bytes:
    """One stream message: ``{"result":...}`` and a newline."""
    return encode_json({"result": encode_message(message)}, newline=True)


def _plain(status: int) -> Response:
    """Go's ``http.Error(w, http.StatusText(status), status)`` with etcd's CORS headers."""
    return Response(
        status,
        (
            *CORS_HEADERS,
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-Content-Type-Options", "nosniff"),
        ),
        (reason_phrase(status) + "\n").encode(),
    )


def call_metadata(request: Request) -> tuple[tuple[str, str], ...]:
    """The metadata grpc-gateway v1 makes of the HTTP headers."""
    metadata: list[tuple[str, str]] = []
    for name, value in request.headers:
        lower = name.lower()
        if lower == "authorization":
            metadata.append(("authorization", value))
        if lower in PERMANENT_HEADERS:
            metadata.append((f"grpcgateway-{lower}", value))
        elif lower.startswith(METADATA_PREFIX) and len(lower) > len(METADATA_PREFIX):
            metadata.append((lower[len(METADATA_PREFIX) :], value))
    return tuple(metadata)


@dataclass(frozen=True, slots=True)
class _Sent:
    chunk: bytes


@dataclass(frozen=True, slots=True)
class _Ended:
    error: RpcError | None


_StreamEvent = _Sent | _Ended


class JsonGateway:
    """The ``/v3/`` JSON gateway over a methods table (an HTTP ``Handler``).

    Stream handlers run as tasks in ``nursery`` (one that lives as long as the server), so
    that a stream can answer while its handler runs; a stream whose client leaves has its
    task cancelled.
    """

    def __init__(
        self,
        methods: Methods,
        nursery: trio.Nursery,
        *,
        receive_message_bytes_max: int = RECEIVE_MESSAGE_BYTES_MAX,
    ) -> None:
        self._methods = methods
        self._nursery = nursery
        self._receive_message_bytes_max = receive_message_bytes_max

    async def __call__(self, request: Request) -> Response | StreamingResponse:
        path = request.path
        if path.startswith(V3BETA_PREFIX):
            path = V3_PREFIX + path[len(V3BETA_PREFIX) :]
        route = GATEWAY_ROUTES.get(path)
        rpc = grpc_path(*route) if route is not None else None
        method = self._methods.get(rpc) if rpc is not None else None
        if request.method == "OPTIONS":
            return Response(200, CORS_HEADERS)
        if method is None or rpc is None:
            return _plain(404)
        verb = request.method
        override = request.headers.get("X-HTTP-Method-Override")
        if verb == "POST" and override:
            verb = override.upper()
        if verb != "POST":
            return _plain(405)
        context = CallContext(metadata=call_metadata(request))
        if isinstance(method, UnaryMethod):
            return await self._unary(method, request.body, context)
        return await self._stream(rpc, method, request.body, context)

    async def _unary(
        self, method: UnaryMethod, body: bytes, context: CallContext
    ) -> Response | StreamingResponse:
        try:
            message = decode_message(method.request_type, body)
        except InputError as error:
            return input_error_response(RpcError(StatusCode.INVALID_ARGUMENT, str(error)))
        size_bytes, limit = message.ByteSize(), self._receive_message_bytes_max
        if size_bytes > limit:
            # etcd's gateway hands the message to its own gRPC server, which refuses it.
            return rpc_error_response(too_large_to_receive(size_bytes, limit))
        try:
            reply = await method.handler(message, context)
        except RpcError as error:
            return rpc_error_response(error)
        return Response(
            200,
            (*CORS_HEADERS, JSON_CONTENT_TYPE, GRPC_METADATA),
            encode_json(encode_message(reply)),
        )

    async def _stream(
        self, rpc: str, method: StreamMethod, body: bytes, context: CallContext
    ) -> Response | StreamingResponse:
        values = json_values(body.decode("utf-8", "replace"))
        try:
            if rpc in BIDI_STREAMS:
                first = next(values, _NO_VALUE)
                if first is not _NO_VALUE:
                    first = message_from_value(method.request_type, first)
            else:
                first = decode_message(method.request_type, body)
        except InputError as error:
            code = StatusCode.UNKNOWN if rpc in BIDI_STREAMS else StatusCode.INVALID_ARGUMENT
            return input_error_response(RpcError(code, str(error)))
        requests = (
            _request_stream(method.request_type, first, values)
            if rpc in BIDI_STREAMS
            else _request_stream(method.request_type, first, iter(()))
        )
        send_events, receive_events = trio.open_memory_channel[_StreamEvent](
            STREAM_MESSAGES_BUFFERED_MAX
        )
        scope = trio.CancelScope()
        self._nursery.start_soon(_run_stream, method, requests, context, send_events, scope)
        try:
            event = await receive_events.receive()
        except trio.EndOfChannel:  # the handler was cancelled before it ended
            event = _Ended(None)
        except trio.Cancelled:
            scope.cancel()
            raise
        if isinstance(event, _Ended) and event.error is not None:
            status = http_status(event.error.code)
            headers = (*CORS_HEADERS, JSON_CONTENT_TYPE)
            return StreamingResponse(status, headers, _chunks_of(stream_error_chunk(event.error)))

        async def close() -> None:
            scope.cancel()
            await receive_events.aclose()

        return StreamingResponse(
            200,
            (*CORS_HEADERS, JSON_CONTENT_TYPE, GRPC_METADATA),
            _stream_chunks(event, receive_events),
            on_close=close,
        )


_NO_VALUE: Any = object()


async def _request_stream(
    request_type: type[Message], first: Any, rest: Iterator[Any]
) -> AsyncIterator[Message]:
    """The client's messages: the first (already read), then the rest until a bad one."""
    if first is _NO_VALUE:
        return
    yield first
    while True:
        try:
            value = next(rest)
            message = message_from_value(request_type, value)
        except StopIteration:
            return
        except InputError as error:
            logger.info("stream request not read: %s", error)
            return
        yield message


async def _run_stream(
    method: StreamMethod,
    requests: AsyncIterator[Message],
    context: CallContext,
    events: trio.MemorySendChannel[_StreamEvent],
    scope: trio.CancelScope,
) -> None:
    """Run one stream handler, turning what it sends and how it ends into events."""

    async def send(message: Message) -> None:
        await events.send(_Sent(result_chunk(message)))

    async with events:
        with scope:
            try:
                await method.handler(requests, send, context)
            except RpcError as error:
                await events.send(_Ended(error))
                return
            except trio.BrokenResourceError:  # the client left; nothing to tell it
                return
            await events.send(_Ended(None))


async def _stream_chunks(
    first: _StreamEvent, events: trio.MemoryReceiveChannel[_StreamEvent]
) -> AsyncIterator[bytes]:
    event = first
    while True:
        match event:
            case _Sent(chunk):
                yield chunk
            case _Ended(None):
                return
            case _Ended(error) if error is not None:
                yield stream_error_chunk(error)
                return
        try:
            event = await events.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return


__all__ = [
    "InputError",
    "JsonGateway",
    "decode_message",
    "encode_message",
    "go_base64",
    "json_values",
]
