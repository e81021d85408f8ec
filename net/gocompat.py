"""The parts of Go's standard library whose exact behaviour etcd's clients see.

etcd answers HTTP through Go's ``net/http``, ``net/url``, ``strconv`` and
``encoding/json``; clients (and people comparing bytes) notice their quirks.
These functions reproduce them (Go 1.19, which built etcd 3.4.23):

- ``parse_bool``/``parse_uint64``: ``strconv.ParseBool``/``ParseUint(s, 10, 64)``.
- ``parse_query``: ``url.ParseQuery`` (``&``-separated, ``;`` refused, ``+`` is a
  space, bad escapes refused with Go's message), plus one rule of ours: every
  name and value must be UTF-8 after unescaping.
- ``unescape_path``: ``url.PathUnescape`` into UTF-8 text.
- ``clean_path``/``mux_clean_path``: ``path.Clean`` and ``ServeMux``'s cleanPath.
- ``escape_path``/``html_escape``: for the ``Location`` of ServeMux redirects.
- ``encode_json``: ``encoding/json`` bytes: compact, ``<``, ``>``, ``&``,
  U+2028 and U+2029 escaped, control characters as ``\\u00XX`` except
  ``\\n``, ``\\r``, ``\\t``; non-ASCII text left as UTF-8; floats as Go writes them.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any, Final
from urllib.parse import quote

from storage.v2store.store import clean_path

UINT64_MAX = 2**64 - 1

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``.

    Raises:
        ValueError: not one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False.
    """
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def parse_uint64(text: str) -> int:
    """Go's ``strconv.ParseUint(text, 10, 64)``: ASCII digits only, no sign, no spaces.

    Raises:
        ValueError: empty, not all digits, or above 2**64 - 1.
    """
    if not text or not text.isascii() or not text.isdigit():
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    value = int(text)
    if value > UINT64_MAX:
        raise ValueError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return value


class FormError(ValueError):
    """A query string or form body Go would refuse (or that is not UTF-8); ``str()`` is the
    message etcd puts in the cause of its 210 error."""


_HEX = frozenset(b"0123456789abcdefABCDEF")


def _unescape(text: str, *, plus_is_space: bool) -> bytes:
    """Percent-decode ``text`` (whose characters are taken as Latin-1 bytes) like Go's
    ``url.unescape``.

    Raises:
        FormError: a ``%`` not followed by two hex digits (Go's message).
    """
    raw = text.encode("latin-1", errors="surrogateescape")
    if b"%" not in raw and not (plus_is_space and b"+" in raw):
        return raw
    out = bytearray()
    index = 0
    while index < len(raw):
        byte = raw[index]
        if byte == 0x25:  # %
            escape = raw[index + 1 : index + 3]
            if len(escape) < 2 or escape[0] not in _HEX or escape[1] not in _HEX:
                shown = raw[index : index + 3].decode("latin-1")
                raise FormError(f'invalid URL escape "{shown}"')
            out.append(int(escape, 16))
            index += 3
            continue
        out.append(0x20 if byte == 0x2B and plus_is_space else byte)
        index += 1
    return bytes(out)


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormError(f"invalid UTF-8 in {what}") from None


def unescape_path(path: str) -> str:
    """A request path (percent-encoded, Latin-1 characters for bytes) as UTF-8 text.

    Raises:
        FormError: a bad escape, or bytes that are not UTF-8.
    """
    return _utf8(_unescape(path, plus_is_space=False), "the path")


def parse_query(query: str, into: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Go's ``url.ParseQuery``, appending to ``into`` (Go's ``copyValues`` order).

    Go goes on after an error and returns the first one; etcd then refuses the request, so
    here the first error is raised and the values are lost.

    Raises:
        FormError: ``;`` in a pair, a bad escape, or a name or value that is not UTF-8.
    """
    values: dict[str, list[str]] = {} if into is None else into
    error: FormError | None = None
    for pair in query.split("&"):
        if ";" in pair:
            error = error or FormError("invalid semicolon separator in query")
            continue
        if not pair:
            continue
        name_text, _, value_text = pair.partition("=")
        try:
            name = _utf8(_unescape(name_text, plus_is_space=True), "a form name")
            value = _utf8(_unescape(value_text, plus_is_space=True), f"form value {name!r}")
        except FormError as problem:
            error = error or problem
            continue
        values.setdefault(name, []).append(value)
    if error is not None:
        raise error
    return values


def mux_clean_path(path: str) -> str:
    """``net/http``'s cleanPath: rooted, cleaned, a trailing slash kept."""
    if path == "":
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    cleaned = clean_path(path)  # rooted, so Go's path.Clean(path.Join("/", path)) is the same
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def escape_path(path: str) -> str:
    """``(&url.URL{Path: path}).EscapedPath()`` for a path of UTF-8 text."""
    return quote(path, safe="/$&+,:;=@")


def html_escape(text: str) -> str:
    """Go's ``html.EscapeString`` as ``http.Redirect`` uses it."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&#34;")
        .replace("'", "&#39;")
    )


_ESCAPES = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")
_GO_SHORT = {"b": "\\u0008", "f": "\\u000c"}
_HTML_UNSAFE = re.compile("[<>&\u2028\u2029]")
_COMPACT_JSON: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""Made once: ``json.dumps`` with options makes an encoder a call (0.8 us of 3.2 for a v2
event)."""
_HTML_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def encode_json(value: Any, *, newline: bool = False) -> bytes:
    """``value`` as Go's ``json.Marshal`` writes it (``newline``: as ``json.Encoder`` does).

    ``value`` holds dicts (written in insertion order), lists, tuples, str, int, float,
    bool and None.

    Raises:
        ValueError: a float that is not finite (Go refuses those too).
    """
    if _has_float(value):
        text = _dump_with_go_floats(value)
    else:
        text = _COMPACT_JSON.encode(value)
    if "\\" in text:
        text = _ESCAPES.sub(_go_escape, text)
    # Five ``in`` tests: a tenth of a generator over the characters or a regex search.
    if "<" in text or ">" in text or "&" in text or "\u2028" in text or "\u2029" in text:
        text = _HTML_UNSAFE.sub(lambda match: _HTML_ESCAPES[match.group()], text)
    if newline:
        text += "\n"
    return text.encode()


def _go_escape(match: re.Match[str]) -> str:
    return _GO_SHORT.get(match.group(1), match.group())


def _has_float(value: Any) -> bool:
    """Whether a float is anywhere in ``value``: a walk without recursion or generators, as
    every JSON answer takes it (a third of a v2 get's JSON encoding before; issue 13)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False


def _dump_with_go_floats(value: Any) -> str:
    """The slow path, for the few documents with floats (stats): Go's float text."""
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, dict):
        items = (
            f"{_dump_with_go_floats(str(key))}:{_dump_with_go_floats(item)}"
            for key, item in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dump_with_go_floats(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def go_float(value: float) -> str:
    """A float64 as ``encoding/json`` writes it: the shortest digits that round-trip, in
    plain notation for magnitudes in [1e-6, 1e21), else in exponent notation (``1e-7``).

    Raises:
        ValueError: NaN or an infinity.
    """
    if not math.isfinite(value):
        raise ValueError(f"json: unsupported value: {value}")
    shortest = repr(value)
    magnitude = abs(value)
    if magnitude == 0 or 1e-6 <= magnitude < 1e21:
        text = format(Decimal(shortest), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text if text != "-0" else "-0"
    mantissa, _, exponent = format(Decimal(shortest), "e").partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    sign = exponent[0]
    digits = exponent[1:].lstrip("0").rjust(2, "0")
    if sign == "-" and digits.startswith("0"):
        digits = digits[1:]
    return f"{mantissa}e{sign}{digits}"
