"""``troika put/get/del/txn/compaction``: etcdctl 3.4's v3 commands, over the JSON gateway.

Flags, output and errors are etcdctl's, so a script written for ``etcdctl`` (with
``ETCDCTL_API=3``, its default) runs unchanged against ``troika``: ``OK`` after a put,
key and value lines after a get, the number deleted after a del, ``SUCCESS``/``FAILURE``
and each response after a txn, ``compacted revision N``; errors as ``Error: <message>``
on stderr with etcdctl's exit codes. ``-w json`` prints what etcdctl prints, Go's
``encoding/json`` of the response structs (numbers for integers, base64 for bytes).

The module is a pure core and a thin shell. The core turns arguments and option records
into ``net.etcdpb`` requests, parses etcdctl's txn syntax, and renders responses as bytes;
it never touches the network or the terminal, and the unit tests call it directly. The
shell (:func:`register`) is the Typer commands, which read stdin, run one request through
:class:`~net.v3.client.V3Client` and write the rendered bytes.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer
from google.protobuf.message import Message

from net.etcdpb import kv_pb2, rpc_pb2
from troika.ctl import (
    EXIT_BAD_ARGS,
    EXIT_BAD_FEATURE,
    EXIT_ERROR,
    EXIT_INVALID_INPUT,
    FLAGS_WITH_VALUES,
    CtlError,
    GlobalOptions,
    ctl_command,
    emit,
    go_quote,
    parse_go_duration,
    run_client,
    stdin_bytes,
    stdin_readline,
    to_bytes,
)

__all__ = [
    "EXIT_BAD_ARGS",
    "EXIT_BAD_FEATURE",
    "EXIT_ERROR",
    "EXIT_INVALID_INPUT",
    "CtlError",
    "go_quote",
    "parse_go_duration",
    "to_bytes",
]

T = TypeVar("T")

OUTPUT_FORMATS_SUPPORTED = ("simple", "json")
V2_COMMANDS = frozenset({"put", "get", "del", "ls", "watch"})
"""The commands ``ETCDCTL_API=2`` (or ``TROIKA_API=2``) sends to ``troika v2``."""
V3_COMMANDS = frozenset(
    {"put", "get", "del", "txn", "compaction", "lease", "watch", "lock", "elect"}
)
ROOT_OPTIONS_WITH_VALUES = FLAGS_WITH_VALUES


# -- Go's string syntax ------------------------------------------------------------------------

_GO_SIMPLE_ESCAPES = {
    "a": 0x07,
    "b": 0x08,
    "f": 0x0C,
    "n": 0x0A,
    "r": 0x0D,
    "t": 0x09,
    "v": 0x0B,
    "\\": 0x5C,
    '"': 0x22,
}


def scan_go_quoted(text: str, start: int) -> tuple[bytes, int] | None:
    """Scan one Go string literal (``"..."`` with escapes, or a backquoted raw string).

    As ``fmt.Sscanf``'s ``%q`` does, leading spaces are skipped first.

    Returns:
        The string's bytes and the index after its closing quote; None if there is no valid
        literal at ``start``.
    """
    index = start
    while index < len(text) and text[index] in " \t\r":
        index += 1
    if index >= len(text) or text[index] not in '"`':
        return None
    if text[index] == "`":
        end = text.find("`", index + 1)
        return None if end < 0 else (to_bytes(text[index + 1 : end]), end + 1)
    out = bytearray()
    index += 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return bytes(out), index + 1
        if char == "\n":
            return None
        if char != "\\":
            out += to_bytes(char)
            index += 1
            continue
        decoded = _go_escape(text, index + 1)
        if decoded is None:
            return None
        piece, index = decoded
        out += piece
    return None


def _go_escape(text: str, index: int) -> tuple[bytes, int] | None:
    """The escape after a backslash at ``index - 1``: its bytes and the index after it."""
    if index >= len(text):
        return None
    char = text[index]
    if char in _GO_SIMPLE_ESCAPES:
        return bytes([_GO_SIMPLE_ESCAPES[char]]), index + 1
    widths = {"x": 2, "u": 4, "U": 8}
    if char in widths:
        digits = text[index + 1 : index + 1 + widths[char]]
        if len(digits) != widths[char] or not all(d in "0123456789abcdefABCDEF" for d in digits):
            return None
        value = int(digits, 16)
        if char == "x":
            return bytes([value]), index + 1 + widths[char]
        if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            return None
        return chr(value).encode(), index + 1 + widths[char]
    digits = text[index : index + 3]
    if len(digits) == 3 and all(d in "01234567" for d in digits) and int(digits, 8) <= 0xFF:
        return bytes([int(digits, 8)]), index + 3
    return None


def parse_go_int(text: str, base: int = 10) -> int:
    """``strconv.ParseInt(text, base, 64)``.

    Raises:
        CtlError: with Go's message (the exit code is the caller's; 1 here).
    """
    digits = text[1:] if text[:1] in "+-" else text
    valid = "0123456789abcdef"[:base]
    if not digits or not all(d in valid for d in digits.lower()):
        raise CtlError(EXIT_ERROR, f"strconv.ParseInt: parsing {go_quote(text)}: invalid syntax")
    value = int(text, base)
    if not -(1 << 63) <= value < (1 << 63):
        raise CtlError(
            EXIT_ERROR, f"strconv.ParseInt: parsing {go_quote(text)}: value out of range"
        )
    return value


# -- requests ------------------------------------------------------------------------------------


def prefix_range_end(key: bytes) -> bytes:
    """The range end that covers every key starting with ``key`` (clientv3's GetPrefixRangeEnd)."""
    for index in range(len(key) - 1, -1, -1):
        if key[index] < 0xFF:
            return key[:index] + bytes([key[index] + 1])
    return b"\x00"  # all 0xff: no upper bound


@dataclass(frozen=True, slots=True)
class GetOptions:
    """``get``'s flags."""

    consistency: str = "l"
    order: str = ""
    sort_by: str = ""
    limit: int = 0
    prefix: bool = False
    from_key: bool = False
    rev: int = 0
    keys_only: bool = False
    count_only: bool = False
    print_value_only: bool = False


@dataclass(frozen=True, slots=True)
class PutOptions:
    """``put``'s flags (``lease`` in hexadecimal, as etcdctl takes it)."""

    lease: str = "0"
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class DelOptions:
    """``del``'s flags."""

    prefix: bool = False
    prev_kv: bool = False
    from_key: bool = False


_SORT_ORDERS = {"ASCEND": rpc_pb2.RangeRequest.ASCEND, "DESCEND": rpc_pb2.RangeRequest.DESCEND}
_SORT_TARGETS = {
    "CREATE": rpc_pb2.RangeRequest.CREATE,
    "KEY": rpc_pb2.RangeRequest.KEY,
    "MODIFY": rpc_pb2.RangeRequest.MOD,
    "VALUE": rpc_pb2.RangeRequest.VALUE,
    "VERSION": rpc_pb2.RangeRequest.VERSION,
}


def _key_range(
    key: bytes, range_end: bytes | None, prefix: bool, from_key: bool
) -> tuple[bytes, bytes]:
    """``[key, range_end)`` from a get's or a del's positional arguments and flags."""
    if prefix and from_key:
        raise CtlError(
            EXIT_BAD_ARGS,
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        )
    if range_end is not None and (prefix or from_key):
        raise CtlError(
            EXIT_BAD_ARGS,
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
        )
    end = range_end or b""
    if prefix:
        key, end = (b"\x00", b"\x00") if not key else (key, prefix_range_end(key))
    if from_key:
        key, end = key or b"\x00", b"\x00"
    return key, end


def range_request(args: Sequence[bytes], options: GetOptions) -> rpc_pb2.RangeRequest:
    """The RangeRequest ``etcdctl get <args> <options>`` sends.

    Raises:
        CtlError: the arguments or flags etcdctl refuses, with its message and exit code.
    """
    if not args:
        raise CtlError(
            EXIT_BAD_ARGS,
            "get command needs one argument as key and an optional argument as range_end",
        )
    if options.keys_only and options.count_only:
        raise CtlError(
            EXIT_BAD_ARGS,
            "`--keys-only` and `--count-only` cannot be set at the same time, choose one",
        )
    if options.consistency not in ("l", "s"):
        raise CtlError(
            EXIT_BAD_FEATURE, f"unknown consistency flag {go_quote(options.consistency)}"
        )
    key, end = _key_range(
        args[0], args[1] if len(args) > 1 else None, options.prefix, options.from_key
    )
    order_name, target_name = options.order.upper(), options.sort_by.upper()
    if order_name and order_name not in _SORT_ORDERS:
        raise CtlError(EXIT_BAD_FEATURE, f"bad sort order {options.order}")
    if target_name and target_name not in _SORT_TARGETS:
        raise CtlError(EXIT_BAD_FEATURE, f"bad sort target {options.sort_by}")
    order = _SORT_ORDERS.get(order_name, rpc_pb2.RangeRequest.NONE)
    target = _SORT_TARGETS.get(target_name, rpc_pb2.RangeRequest.KEY)
    if target == rpc_pb2.RangeRequest.KEY and order == rpc_pb2.RangeRequest.ASCEND:
        order = rpc_pb2.RangeRequest.NONE  # keys come ascending anyway (clientv3's WithSort)
    return rpc_pb2.RangeRequest(
        key=key,
        range_end=end,
        limit=options.limit,
        revision=max(options.rev, 0),
        sort_order=order,
        sort_target=target,
        serializable=options.consistency == "s",
        keys_only=options.keys_only,
        count_only=options.count_only,
    )


def put_request(
    args: Sequence[bytes], options: PutOptions, stdin: Callable[[], bytes] | None
) -> rpc_pb2.PutRequest:
    """The PutRequest ``etcdctl put <args> <options>`` sends.

    Args:
        args: the key and, unless the value comes from stdin, the value.
        options: the flags.
        stdin: reads the value when ``args`` has none (None: there is no stdin to read).

    Raises:
        CtlError: as etcdctl refuses the arguments.
    """
    usage = "put command needs 1 argument and input from stdin or 2 arguments"
    if not args:
        raise CtlError(EXIT_BAD_ARGS, usage)
    if options.ignore_value and len(args) > 1:
        raise CtlError(
            EXIT_BAD_ARGS, "put command needs only 1 argument when 'ignore-value' is set"
        )
    value = b""
    if not options.ignore_value:
        value = args[1] if len(args) > 1 else (stdin() if stdin is not None else b"")
        if len(args) < 2 and not value:
            raise CtlError(EXIT_BAD_ARGS, usage)
    try:
        lease = parse_go_int(options.lease, 16)
    except CtlError as error:
        raise CtlError(
            EXIT_BAD_ARGS, f"bad lease ID ({error.message}), expecting ID in Hex"
        ) from None
    return rpc_pb2.PutRequest(
        key=args[0],
        value=value,
        lease=lease,
        prev_kv=options.prev_kv,
        ignore_value=options.ignore_value,
        ignore_lease=options.ignore_lease,
    )


def delete_request(args: Sequence[bytes], options: DelOptions) -> rpc_pb2.DeleteRangeRequest:
    """The DeleteRangeRequest ``etcdctl del <args> <options>`` sends.

    Raises:
        CtlError: as etcdctl refuses the arguments.
    """
    if not 1 <= len(args) <= 2:
        raise CtlError(
            EXIT_BAD_ARGS,
            "del command needs one argument as key and an optional argument as range_end",
        )
    key, end = _key_range(
        args[0], args[1] if len(args) > 1 else None, options.prefix, options.from_key
    )
    return rpc_pb2.DeleteRangeRequest(key=key, range_end=end, prev_kv=options.prev_kv)


def compaction_request(args: Sequence[str], physical: bool) -> rpc_pb2.CompactionRequest:
    """The CompactionRequest ``etcdctl compaction <revision>`` sends.

    Raises:
        CtlError: not exactly one argument (exit 128), or not a number (exit 1, as etcdctl).
    """
    if len(args) != 1:
        raise CtlError(EXIT_BAD_ARGS, "compaction command needs 1 argument")
    return rpc_pb2.CompactionRequest(revision=parse_go_int(args[0]), physical=physical)


# -- txn's input syntax ------------------------------------------------------------------------

_COMPARE_RESULTS = {
    "=": rpc_pb2.Compare.EQUAL,
    "!=": rpc_pb2.Compare.NOT_EQUAL,
    ">": rpc_pb2.Compare.GREATER,
    "<": rpc_pb2.Compare.LESS,
}
_INTEGER_TARGETS = {
    "ver": "version",
    "version": "version",
    "c": "create_revision",
    "create": "create_revision",
    "m": "mod_revision",
    "mod": "mod_revision",
}
_TARGET_ENUMS = {
    "version": rpc_pb2.Compare.VERSION,
    "create_revision": rpc_pb2.Compare.CREATE,
    "mod_revision": rpc_pb2.Compare.MOD,
}


def _scan_token(text: str, index: int) -> tuple[str, int] | None:
    """``%s``: skip spaces, then the run of non-space characters (None if empty)."""
    while index < len(text) and text[index].isspace():
        index += 1
    end = index
    while end < len(text) and not text[end].isspace():
        end += 1
    return (text[index:end], end) if end > index else None


def _format_space(text: str, index: int) -> int | None:
    """A space in a Sscanf format: at least one space in the input, unless the input ended."""
    if index >= len(text):
        return index
    if not text[index].isspace():
        return None
    while index < len(text) and text[index].isspace():
        index += 1
    return index


def _scan_compare(rest: str) -> tuple[list[Any], bool]:
    """``fmt.Sscanf(rest, "%q) %s %q")``: the values scanned before the first failure."""
    scanned: list[Any] = []
    key = scan_go_quoted(rest, 0)
    if key is None:
        return scanned, False
    scanned.append(key[0])
    index = key[1]
    if not rest.startswith(")", index):
        return scanned, False
    after = _format_space(rest, index + 1)
    operator = _scan_token(rest, after) if after is not None else None
    if operator is None:
        return scanned, False
    scanned.append(operator[0])
    after = _format_space(rest, operator[1])
    value = scan_go_quoted(rest, after) if after is not None else None
    if value is None:
        return scanned, False
    scanned.append(value[0])
    return scanned, True


def parse_compare(line: str) -> rpc_pb2.Compare:
    """One compare line of ``etcdctl txn``: ``<target>("<key>") <op> "<value>"``.

    Targets are ``ver``/``version``, ``c``/``create``, ``m``/``mod``, ``val``/``value`` and
    ``lease`` (a hexadecimal lease ID, as ``put --lease`` takes it); operators ``=``, ``!=``,
    ``<``, ``>``.

    Raises:
        CtlError: a malformed line, with etcdctl's message (exit code 3).
    """
    target, paren, rest = line.partition("(")
    if not paren:
        raise CtlError(EXIT_INVALID_INPUT, f"malformed comparison: {line}")
    scanned, complete = _scan_compare(rest)
    if not complete:
        key = scanned[0] if scanned else b""
        operator = scanned[1] if len(scanned) > 1 else ""
        value = b""  # an incomplete scan never reaches the value
        raise CtlError(
            EXIT_INVALID_INPUT,
            f"malformed comparison: {line}; got {target}({go_quote(_text(key))}) "
            f"{operator} {go_quote(_text(value))}",
        )
    key, operator, value = scanned
    result = _COMPARE_RESULTS.get(operator)
    if result is None:
        raise CtlError(
            EXIT_INVALID_INPUT, f"malformed comparison: {line} (unknown operator {operator})"
        )
    compare = rpc_pb2.Compare(key=key, result=result)
    invalid = CtlError(EXIT_INVALID_INPUT, f"invalid txn compare request: {line}")
    try:
        if target in _INTEGER_TARGETS:
            field = _INTEGER_TARGETS[target]
            compare.target = _TARGET_ENUMS[field]
            setattr(compare, field, parse_go_int(_text(value)))
        elif target in ("val", "value"):
            compare.target = rpc_pb2.Compare.VALUE
            compare.value = value
        elif target == "lease":
            compare.target = rpc_pb2.Compare.LEASE
            compare.lease = parse_go_int(_text(value), 16)
        else:
            raise CtlError(
                EXIT_INVALID_INPUT, f"malformed comparison: {line} (unknown target {target})"
            )
    except CtlError as error:
        raise (invalid if error.exit_code == EXIT_ERROR else error) from None
    return compare


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="surrogateescape") if isinstance(value, bytes) else value


_ARG_PATTERN = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?""")


def argify(line: str) -> list[str]:
    """Split a txn request line into arguments: words, "Go-quoted" or 'single-quoted' strings."""
    args = []
    for word in _ARG_PATTERN.findall(line):
        if word.startswith("'"):
            word = word[1:-1]
        elif word.startswith('"'):
            scanned = scan_go_quoted(word, 0)
            if scanned is None:
                raise CtlError(EXIT_INVALID_INPUT, f"bad quoted string {word}")
            word = scanned[0].decode("utf-8", errors="surrogateescape")
        args.append(word)
    return args


_FLAG_TYPES: dict[str, dict[str, type]] = {
    "get": {
        "consistency": str,
        "order": str,
        "sort-by": str,
        "limit": int,
        "prefix": bool,
        "from-key": bool,
        "rev": int,
        "keys-only": bool,
        "count-only": bool,
        "print-value-only": bool,
    },
    "put": {"lease": str, "prev-kv": bool, "ignore-value": bool, "ignore-lease": bool},
    "del": {"prefix": bool, "prev-kv": bool, "from-key": bool},
}
_GO_BOOLS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}


def parse_flags(args: Sequence[str], types: Mapping[str, type]) -> tuple[list[str], dict[str, Any]]:
    """Split arguments into positionals and ``--flag``/``--flag=value`` values, as pflag does.

    Raises:
        ValueError: an unknown flag, a missing value or a value of the wrong type.
    """
    positionals: list[str] = []
    values: dict[str, Any] = {}
    pending = list(args)
    while pending:
        arg = pending.pop(0)
        if arg == "--":
            positionals.extend(pending)
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        name, equals, text = arg.lstrip("-").partition("=")
        if not arg.startswith("--") or name not in types:
            raise ValueError(f"unknown flag: {arg}")
        kind = types[name]
        if kind is bool:
            if equals and text.lower() not in _GO_BOOLS:
                raise ValueError(f"invalid argument {text!r} for {arg}")
            values[name] = _GO_BOOLS[text.lower()] if equals else True
            continue
        if not equals:
            if not pending:
                raise ValueError(f"flag needs an argument: {arg}")
            text = pending.pop(0)
        values[name] = int(text, 0) if kind is int else text
    return positionals, values


def _options(values: Mapping[str, Any], record: type[T]) -> T:
    return record(**{name.replace("-", "_"): value for name, value in values.items()})


def parse_request_op(line: str) -> rpc_pb2.RequestOp:
    """One request line of ``etcdctl txn``: ``get``, ``put`` or ``del`` with their flags.

    Raises:
        CtlError: exit 3 for a line etcdctl cannot parse; the command's own message and exit
            code for arguments it refuses (as ``get --prefix --from-key k``).
    """
    args = argify(line)
    if len(args) < 2:
        raise CtlError(EXIT_INVALID_INPUT, f"invalid txn compare request: {line}")
    command = args[0]
    if command not in _FLAG_TYPES:
        raise CtlError(EXIT_INVALID_INPUT, f"invalid txn request: {line}")
    try:
        positionals, values = parse_flags(args[1:], _FLAG_TYPES[command])
    except ValueError:
        raise CtlError(EXIT_INVALID_INPUT, f"invalid txn request: {line}") from None
    keys = [to_bytes(arg) for arg in positionals]
    if command == "get":
        return rpc_pb2.RequestOp(request_range=range_request(keys, _options(values, GetOptions)))
    if command == "put":
        return rpc_pb2.RequestOp(
            request_put=put_request(keys, _options(values, PutOptions), stdin=None)
        )
    return rpc_pb2.RequestOp(
        request_delete_range=delete_request(keys, _options(values, DelOptions))
    )


TXN_PROMPTS = (
    "compares:",
    "success requests (get, put, del):",
    "failure requests (get, put, del):",
)


def read_txn(readline: Callable[[], str], prompt: Callable[[str], None]) -> rpc_pb2.TxnRequest:
    """Read etcdctl's txn syntax: compares, a blank line, success requests, a blank line,
    failure requests, a blank line.

    Args:
        readline: the next line with its ``\\n``; without one at the end of input.
        prompt: shows a section's prompt (``-i``), or does nothing.

    Raises:
        CtlError: ``EOF`` when the input ends before a section's blank line, or a bad line
            (exit code 3, as etcdctl).
    """
    prompt(TXN_PROMPTS[0])
    compares = [parse_compare(line) for line in _section(readline)]
    prompt(TXN_PROMPTS[1])
    success = [parse_request_op(line) for line in _section(readline)]
    prompt(TXN_PROMPTS[2])
    failure = [parse_request_op(line) for line in _section(readline)]
    return rpc_pb2.TxnRequest(compare=compares, success=success, failure=failure)


def _section(readline: Callable[[], str]) -> Iterator[str]:
    """A section's lines up to its blank line, each stripped, as they are read (so a bad line
    fails before the input runs out, as in etcdctl).

    Raises:
        CtlError: ``EOF`` when the input ends first.
    """
    while True:
        line = readline()
        if not line.endswith("\n"):
            raise CtlError(EXIT_INVALID_INPUT, "EOF")
        if not line.strip():
            return
        yield line.strip()


# -- output ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Display:
    """How to print: ``-w``, ``--hex`` and ``get --print-value-only``."""

    write_out: str = "simple"
    hex: bool = False
    value_only: bool = False


def _hex_bytes(data: bytes) -> bytes:
    return "".join(f"\\x{byte:02x}" for byte in data).encode()


def simple_kv(kv: kv_pb2.KeyValue, display: Display) -> list[bytes]:
    """A key-value pair as etcdctl prints one: the key's line, then the value's."""
    key, value = kv.key, kv.value
    if display.hex:
        key, value = _hex_bytes(key), _hex_bytes(value)
    return [value] if display.value_only else [key, value]


def simple_range(
    response: rpc_pb2.RangeResponse, display: Display, count_only: bool
) -> list[bytes]:
    """``get``'s lines (with ``--count-only``, the count alone)."""
    if count_only:
        return [str(response.count).encode()]
    return [line for kv in response.kvs for line in simple_kv(kv, display)]


def simple_put(response: rpc_pb2.PutResponse, display: Display) -> list[bytes]:
    """``put``'s lines: OK, then the previous pair if asked for and there was one."""
    previous = simple_kv(response.prev_kv, display) if response.HasField("prev_kv") else []
    return [b"OK", *previous]


def simple_delete(response: rpc_pb2.DeleteRangeResponse, display: Display) -> list[bytes]:
    """``del``'s lines: how many were deleted, then the deleted pairs if asked for."""
    previous = [line for kv in response.prev_kvs for line in simple_kv(kv, display)]
    return [str(response.deleted).encode(), *previous]


def simple_txn(response: rpc_pb2.TxnResponse, display: Display) -> list[bytes]:
    """``txn``'s lines: SUCCESS or FAILURE, then a blank line before each response."""
    lines = [b"SUCCESS" if response.succeeded else b"FAILURE"]
    for op in response.responses:
        lines.append(b"")
        kind = op.WhichOneof("response")
        if kind == "response_range":
            lines += simple_range(op.response_range, display, count_only=False)
        elif kind == "response_put":
            lines += simple_put(op.response_put, display)
        elif kind == "response_delete_range":
            lines += simple_delete(op.response_delete_range, display)
        else:
            lines.append(f"unexpected response {kind}".encode())
    return lines


def _go_name(proto_name: str) -> str:
    """The Go field name protoc gives a proto field: ``response_range`` -> ``ResponseRange``."""
    return "".join(part[:1].upper() + part[1:] for part in proto_name.split("_"))


def _go_value(field: Any, value: Any) -> Any:
    if field.type == field.TYPE_MESSAGE:
        return go_struct(value)
    if field.type == field.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


def go_struct(message: Message) -> dict[str, Any]:
    """A message as Go's ``encoding/json`` renders etcd's generated struct.

    Fields in declaration order under their proto names, zero values left out
    (``omitempty``), integers as numbers, enums as their numbers, bytes as base64, and a
    oneof as ``{"<Oneof>": {"<Field>": ...}}`` (the Go interface field and its wrapper).
    """
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None:
            chosen = message.WhichOneof(oneof.name)
            if chosen == field.name:
                out[_go_name(oneof.name)] = {
                    _go_name(field.name): _go_value(field, getattr(message, field.name))
                }
            elif chosen is None and field.index == oneof.fields[0].index:
                out[_go_name(oneof.name)] = None
            continue
        value = getattr(message, field.name)
        if field.is_repeated:
            if len(value):
                out[field.name] = [_go_value(field, item) for item in value]
        elif field.type == field.TYPE_MESSAGE:
            if message.HasField(field.name):
                out[field.name] = go_struct(value)
        elif value:
            out[field.name] = _go_value(field, value)
    return out


def go_json(message: Message) -> bytes:
    """``json.Marshal`` of a response, as ``etcdctl -w json`` prints it (one line)."""
    return json.dumps(go_struct(message), separators=(",", ":")).encode()


def render(response: Message, display: Display, *, count_only: bool = False) -> list[bytes]:
    """A response's output lines in the chosen format.

    Raises:
        CtlError: an output format troika does not print (exit 4, as etcdctl's unsupported
            formats), or ``--print-value-only`` with a format other than simple (exit 128).
    """
    if display.write_out not in OUTPUT_FORMATS_SUPPORTED:
        raise CtlError(EXIT_BAD_FEATURE, f"{display.write_out} not supported as output format")
    if display.value_only and display.write_out != "simple":
        raise CtlError(EXIT_BAD_ARGS, "print-value-only is only for `--write-out=simple`")
    if display.write_out == "json":
        return [go_json(response)]
    match response:
        case rpc_pb2.RangeResponse():
            return simple_range(response, display, count_only)
        case rpc_pb2.PutResponse():
            return simple_put(response, display)
        case rpc_pb2.DeleteRangeResponse():
            return simple_delete(response, display)
        case rpc_pb2.TxnResponse():
            return simple_txn(response, display)
    raise TypeError(f"no simple output for {type(response).__name__}")


# -- which API: etcdctl's ETCDCTL_API --------------------------------------------------------------


def select_api(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The arguments to run: with ``TROIKA_API=2`` (or else ``ETCDCTL_API=2``), a v2 command
    (``put``, ``get``, ``del``, ``ls``, ``watch``) named first is run from ``troika v2``.

    Only the key commands consult the variables, so ``troika serve`` or ``troika sim`` run
    whatever an environment set up for etcdctl says.

    Raises:
        CtlError: a key command with an API version other than 2 or 3 (etcdctl's
            ``unsupported API version``).
    """
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        takes_value = argv[index] in ROOT_OPTIONS_WITH_VALUES
        index += 2 if takes_value else 1
    if index >= len(argv) or argv[index] not in V2_COMMANDS | V3_COMMANDS:
        return list(argv)
    version = environ.get("TROIKA_API") or environ.get("ETCDCTL_API") or "3"
    if version not in ("2", "3"):
        raise CtlError(EXIT_ERROR, f"unsupported API version {version}")
    if version == "2" and argv[index] in V2_COMMANDS:
        return [*argv[:index], "v2", *argv[index:]]
    return list(argv)


# -- the shell: Typer commands ------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add ``put``, ``get``, ``del``, ``txn`` and ``compaction`` to ``app``."""

    @ctl_command(app, "put")
    def put(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(help="<key> [<value>]")] = None,
        lease: Annotated[
            str, typer.Option("--lease", help="lease ID (in hexadecimal) to attach to the key")
        ] = "0",
        prev_kv: Annotated[
            bool,
            typer.Option(
                "--prev-kv", help="return the previous key-value pair before modification"
            ),
        ] = False,
        ignore_value: Annotated[
            bool, typer.Option("--ignore-value", help="updates the key using its current value")
        ] = False,
        ignore_lease: Annotated[
            bool, typer.Option("--ignore-lease", help="updates the key using its current lease")
        ] = False,
    ) -> None:
        """Puts the given key into the store (<value> can also be given from stdin)."""
        request = put_request(
            [to_bytes(arg) for arg in args or []],
            PutOptions(lease, prev_kv, ignore_value, ignore_lease),
            stdin_bytes,
        )
        response = run_client(options, lambda client: client.put(request))
        emit(render(response, Display(options.write_out, options.hex)))

    @ctl_command(app, "get")
    def get(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(help="<key> [range_end]")] = None,
        consistency: Annotated[
            str, typer.Option("--consistency", help="Linearizable(l) or Serializable(s)")
        ] = "l",
        order: Annotated[
            str, typer.Option("--order", help="Order of results; ASCEND or DESCEND")
        ] = "",
        sort_by: Annotated[
            str,
            typer.Option("--sort-by", help="Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION"),
        ] = "",
        limit: Annotated[int, typer.Option("--limit", help="Maximum number of results")] = 0,
        prefix: Annotated[
            bool, typer.Option("--prefix", help="Get keys with matching prefix")
        ] = False,
        from_key: Annotated[
            bool, typer.Option("--from-key", help="Get keys that are >= the given key")
        ] = False,
        rev: Annotated[int, typer.Option("--rev", help="Specify the kv revision")] = 0,
        keys_only: Annotated[bool, typer.Option("--keys-only", help="Get only the keys")] = False,
        count_only: Annotated[
            bool, typer.Option("--count-only", help="Get only the count")
        ] = False,
        print_value_only: Annotated[
            bool,
            typer.Option("--print-value-only", help="Only write values (simple output only)"),
        ] = False,
    ) -> None:
        """Gets the key or a range of keys."""
        get_options = GetOptions(
            consistency,
            order,
            sort_by,
            limit,
            prefix,
            from_key,
            rev,
            keys_only,
            count_only,
            print_value_only,
        )
        request = range_request([to_bytes(arg) for arg in args or []], get_options)
        response = run_client(options, lambda client: client.range(request))
        display = Display(options.write_out, options.hex, print_value_only)
        emit(render(response, display, count_only=count_only))

    @ctl_command(app, "del")
    def delete(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(help="<key> [range_end]")] = None,
        prefix: Annotated[
            bool, typer.Option("--prefix", help="delete keys with matching prefix")
        ] = False,
        prev_kv: Annotated[
            bool, typer.Option("--prev-kv", help="return deleted key-value pairs")
        ] = False,
        from_key: Annotated[
            bool, typer.Option("--from-key", help="delete keys that are >= the given key")
        ] = False,
    ) -> None:
        """Removes the specified key or range of keys [key, range_end)."""
        request = delete_request(
            [to_bytes(arg) for arg in args or []], DelOptions(prefix, prev_kv, from_key)
        )
        response = run_client(options, lambda client: client.delete_range(request))
        emit(render(response, Display(options.write_out, options.hex)))

    @ctl_command(app, "txn")
    def txn(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(hidden=True)] = None,
        interactive: Annotated[
            bool,
            typer.Option(
                "-i", "--interactive/--no-interactive", help="Input transaction in interactive mode"
            ),
        ] = False,
    ) -> None:
        """Txn processes all the requests in one transaction (read from stdin).

        Compares one a line (val("k") = "v", ver/c/m/lease("k") > "N"), a blank line,
        success requests (get, put, del with their flags), a blank line, failure
        requests, a blank line.
        """

        def prompt(title: str) -> None:
            if interactive:
                typer.echo(title)

        if args:
            raise CtlError(EXIT_BAD_ARGS, "txn command does not accept argument")
        request = read_txn(stdin_readline, prompt)
        response = run_client(options, lambda client: client.txn(request))
        emit(render(response, Display(options.write_out, options.hex)))

    @ctl_command(app, "compaction")
    def compaction(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(help="<revision>")] = None,
        physical: Annotated[
            bool,
            typer.Option(
                "--physical",
                help="'true' to wait for compaction to physically remove all old revisions",
            ),
        ] = False,
    ) -> None:
        """Compacts the event history in etcd."""
        request = compaction_request(args or [], physical)
        run_client(options, lambda client: client.compact(request))
        typer.echo(f"compacted revision {request.revision}")
