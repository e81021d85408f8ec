"""What every etcdctl-shaped command shares: its errors, etcdctl's global flags (declared once
here), and one way to run a request and print or fail.

etcdctl's global flags are persistent: they may stand before the command (on ``troika``),
on a group (``troika member --endpoints=X list``) or after the command, the nearest winning,
and each has an ``ETCDCTL_*`` variable read when no flag gives it. A command is written as a
plain function of :class:`GlobalOptions` and its own flags, and registered with
:func:`ctl_command`: the decorator adds the global flags to the signature Typer reads,
resolves them against the enclosing groups' (``ctx.obj``), and turns a :class:`CtlError`
into etcdctl's ``Error: <message>`` line and exit code. Groups take the same flags through
:func:`ctl_group`.

:func:`run_client` runs one action with a :class:`~net.v3.client.V3Client` made from the
options (endpoints, timeouts, TLS, the user) in its own Trio run and maps every failure to
etcdctl's error.
"""

from __future__ import annotations

import functools
import getpass
import inspect
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Annotated, Any, TypeVar

import trio
import typer

from net.client_tls import ClientTls, ClientTlsError
from net.http.errors import HttpConnectError, HttpError, HttpTimeout
from net.tcp import TcpNetwork
from net.v3.client import Credentials, V3Client
from net.v3.errors import RpcError, StatusCode

T = TypeVar("T")

# etcdctl's exit codes (etcdctl/ctlv3/command/error.go).
EXIT_ERROR = 1
EXIT_BAD_CONNECTION = 2
EXIT_INVALID_INPUT = 3
EXIT_BAD_FEATURE = 4
EXIT_BAD_ARGS = 128

DEFAULT_ENDPOINTS = "127.0.0.1:2379"
DEFAULT_DIAL_TIMEOUT = "2s"
DEFAULT_COMMAND_TIMEOUT = "5s"
DEADLINE_EXCEEDED = "context deadline exceeded"
"""What etcdctl prints when no endpoint answered in time (Go's context error)."""
CANNOT_CONNECT = "cannot connect"
"""How a gRPC stream's UNAVAILABLE begins when no endpoint could be reached."""
PASSWORD_PROMPT = "Password: "


class CtlError(Exception):
    """A command fails as etcdctl fails: ``Error: <message>`` and an exit code."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


_GO_QUOTE_ESCAPES = {0x07: "\\a", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r"}
_GO_QUOTE_ESCAPES |= {0x09: "\\t", 0x0B: "\\v", 0x5C: "\\\\", 0x22: '\\"'}


def go_quote(text: str) -> str:
    """``strconv.Quote``: how etcdctl's messages show a string (``%q``)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if code in _GO_QUOTE_ESCAPES:
            out.append(_GO_QUOTE_ESCAPES[code])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_DURATION_UNITS_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_DURATION_UNITS_SECONDS["h"] = 3600.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """A Go duration (``2s``, ``500ms``, ``1m30s``) in seconds.

    Raises:
        CtlError: not a duration (exit code 1, as a bad flag value is in etcdctl).
    """
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    position, total = 0, 0.0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None:
            break
        total += float(match.group(1)) * _DURATION_UNITS_SECONDS[match.group(2)]
        position = match.end()
    if body and position == 0 and body.replace(".", "").isdigit():
        raise CtlError(EXIT_ERROR, f"time: missing unit in duration {go_quote(text)}")
    if not body or position != len(body):
        raise CtlError(EXIT_ERROR, f"time: invalid duration {go_quote(text)}")
    return -total if text.startswith("-") else total


# -- the global flags ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GlobalOptions:
    """etcdctl's global flags, resolved (a TLS file is None when no flag gave it: etcdctl
    refuses one given as an empty string)."""

    endpoints: str = DEFAULT_ENDPOINTS
    dial_timeout: str = DEFAULT_DIAL_TIMEOUT
    command_timeout: str = DEFAULT_COMMAND_TIMEOUT
    write_out: str = "simple"
    hex: bool = False
    user: str = ""
    password: str = ""
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure_skip_tls_verify: bool = False
    insecure_transport: bool = True


_FLAG_HELP = {
    "endpoints": "gRPC endpoints (host:port or URLs, comma separated)",
    "dial_timeout": "dial timeout for client connections",
    "command_timeout": "timeout for short running command",
    "write_out": "set the output format (simple, json, table)",
    "hex": "print byte strings as hex encoded strings",
    "user": "username[:password] for authentication (prompt if password is not supplied)",
    "password": "password for authentication (if this option is used, --user option "
    "shouldn't include password)",
    "cacert": "verify certificates of TLS-enabled secure servers using this CA bundle",
    "cert": "identify secure client using this TLS certificate file",
    "key": "identify secure client using this TLS key file",
    "insecure_skip_tls_verify": "skip server certificate verification (CAUTION: this option "
    "should be enabled only for testing purposes)",
    "insecure_transport": "disable transport security for client connections",
}
_FLAG_NAMES = {"write_out": ("-w", "--write-out")}
GO_BOOL_FLAGS = frozenset(
    {"--hex", "--insecure-skip-tls-verify", "--insecure-transport", "--interactive"}
)
"""Boolean flags that etcdctl also takes as ``--flag=false`` (see :func:`go_bool_args`)."""
FLAGS_WITH_VALUES = frozenset(
    {
        "--endpoints",
        "--dial-timeout",
        "--command-timeout",
        "-w",
        "--write-out",
        "--user",
        "--password",
        "--cacert",
        "--cert",
        "--key",
    }
)
"""The global flags that take the next argument as their value."""


def _flag_parameter(name: str, *, root: bool) -> inspect.Parameter:
    """The Typer parameter of one global flag (``ETCDCTL_*`` variables only on the root)."""
    dashed = "--" + name.replace("_", "-")
    declarations = _FLAG_NAMES.get(name, (dashed,))
    is_bool = isinstance(getattr(GlobalOptions(), name), bool)
    if is_bool:
        declarations = (f"{dashed}/--no-{name.replace('_', '-')}",)
    envvar: list[str] | None = None
    if root:
        envvar = ["ETCDCTL_" + name.upper()]
        if name == "endpoints":
            envvar.insert(0, "TROIKA_ENDPOINTS")
    option = typer.Option(*declarations, envvar=envvar, help=_FLAG_HELP[name], show_default=False)
    kind: Any = bool if is_bool else str
    return inspect.Parameter(
        f"global_{name}",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[kind | None, option],
        default=None,
    )


def _resolve(ctx: typer.Context, given: Mapping[str, Any]) -> GlobalOptions:
    """The flags given here over the enclosing group's (``ctx.obj``), over the defaults."""
    outer = ctx.obj if isinstance(ctx.obj, GlobalOptions) else GlobalOptions()
    changes = {name: value for name, value in given.items() if value is not None}
    return replace(outer, **changes)


def _with_global_flags(body: Callable[..., Any], *, root: bool, keep: bool) -> Callable[..., Any]:
    """``body(options, **own)`` as a Typer callback taking ``ctx``, its own flags and the
    global flags; ``keep`` leaves the options in ``ctx.obj`` for the group's commands."""
    signature = inspect.signature(body, eval_str=True)
    own = list(signature.parameters.values())[1:]
    wants_ctx = any(parameter.name == "ctx" for parameter in own)
    own = [parameter for parameter in own if parameter.name != "ctx"]
    names = [field.name for field in fields(GlobalOptions)]
    context = inspect.Parameter(
        "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
    )
    flags = [_flag_parameter(name, root=root) for name in names]

    @functools.wraps(body)
    def command(ctx: typer.Context, **values: Any) -> Any:
        options = _resolve(ctx, {name: values.pop(f"global_{name}") for name in names})
        if keep:
            ctx.obj = options
        if wants_ctx:
            values["ctx"] = ctx
        try:
            return body(options, **values)
        except CtlError as error:
            raise fail(error) from None

    parameters = [context, *(_keyword(parameter) for parameter in own), *flags]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return command


def _keyword(parameter: inspect.Parameter) -> inspect.Parameter:
    return parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)


def ctl_command(
    app: typer.Typer, name: str, **settings: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``body(options: GlobalOptions, <its own flags>)`` as command ``name`` of
    ``app`` with etcdctl's global flags (a ``ctx`` parameter, if it has one, gets the
    context)."""

    def register(body: Callable[..., Any]) -> Callable[..., Any]:
        app.command(name, **settings)(_with_global_flags(body, root=False, keep=False))
        return body

    return register


def ctl_group(body: Callable[..., Any], *, root: bool = False) -> Callable[..., Any]:
    """A group's callback from ``body(options, ...)``: the global flags given on the group
    become its commands' defaults (``root``: the ``troika`` callback, which also reads the
    ``ETCDCTL_*`` variables)."""
    return _with_global_flags(body, root=root, keep=True)


def go_bool_args(argv: list[str]) -> list[str]:
    """``--flag=true`` and ``--flag=false`` (pflag's spelling) as ``--flag`` and
    ``--no-flag`` for the boolean flags in :data:`GO_BOOL_FLAGS`."""
    out: list[str] = []
    for arg in argv:
        name, equals, value = arg.partition("=")
        if equals and name in GO_BOOL_FLAGS and value in _GO_BOOLS:
            out.append(name if _GO_BOOLS[value] else "--no-" + name[2:])
        else:
            out.append(arg)
    return out


_GO_BOOLS = dict.fromkeys(("1", "t", "T", "true", "TRUE", "True"), True) | dict.fromkeys(
    ("0", "f", "F", "false", "FALSE", "False"), False
)
"""``strconv.ParseBool``'s spellings."""


# -- running one request -------------------------------------------------------------------------


def fail(error: CtlError) -> typer.Exit:
    """Print etcdctl's ``Error: <message>`` line; the exit to raise with its code."""
    typer.echo(f"Error: {error.message}", err=True)
    return typer.Exit(error.exit_code)


def emit(lines: list[bytes]) -> None:
    """Write output lines (bytes, as Go prints its strings) to stdout."""
    typer.echo(b"".join(line + b"\n" for line in lines), nl=False)


def client_tls(options: GlobalOptions) -> ClientTls:
    """The TLS flags as the client takes them.

    Raises:
        CtlError: a file flag given as an empty string (exit 128, etcdctl's words).
    """
    for flag in ("cert", "key", "cacert"):
        if getattr(options, flag) == "":
            raise CtlError(EXIT_BAD_ARGS, f"empty string is passed to --{flag} option")
    return ClientTls(
        ca_file=options.cacert or "",
        cert_file=options.cert or "",
        key_file=options.key or "",
        insecure_skip_verify=options.insecure_skip_tls_verify,
        insecure_transport=options.insecure_transport,
    )


def ask_terminal(prompt: str) -> str:
    """speakeasy's prompt, as etcdctl asks for a password: the prompt on stdout, the answer
    unechoed from a terminal (a line of stdin when stdin is not one), then a newline."""
    typer.echo(prompt, nl=False)
    if sys.stdin.isatty():
        return getpass.getpass("")
    answer = sys.stdin.readline().rstrip("\r\n")
    typer.echo("")
    return answer


def credentials(
    options: GlobalOptions, ask: Callable[[str], str] = ask_terminal
) -> Credentials | None:
    """``--user name[:password]`` and ``--password`` as etcdctl reads them: the password
    flag wins; else what follows the first colon; else it is asked for."""
    if not options.user:
        return None
    if options.password:
        return Credentials(options.user, options.password)
    name, colon, password = options.user.partition(":")
    if colon:
        return Credentials(name, password)
    return Credentials(options.user, ask(PASSWORD_PROMPT))


def make_client(options: GlobalOptions, *, endpoints: list[str] | None = None) -> V3Client:
    """A client of ``options``' endpoints (or of ``endpoints``).

    Raises:
        CtlError: an endpoint, a timeout or a TLS file that cannot be used.
    """
    chosen = endpoints
    if chosen is None:
        chosen = [part.strip() for part in options.endpoints.split(",") if part.strip()]
    tls = client_tls(options)
    try:
        return V3Client(
            TcpNetwork(),
            chosen,
            dial_timeout_s=parse_go_duration(options.dial_timeout),
            timeout_s=parse_go_duration(options.command_timeout),
            tls=tls,
            credentials=credentials(options),
        )
    except ValueError as error:
        raise CtlError(EXIT_ERROR, str(error)) from None
    except ClientTlsError as error:
        raise CtlError(EXIT_BAD_ARGS, str(error)) from None


def run_client(
    options: GlobalOptions,
    action: Callable[[V3Client], Awaitable[T]],
    *,
    exit_code: int = EXIT_ERROR,
    describe: Callable[[str], str] = str,
) -> T:
    """Run ``action`` with a client of the endpoints, in its own Trio run.

    Args:
        options: the global flags (endpoints, timeouts, TLS, user).
        action: what to do with the client.
        exit_code: the exit code of a failure (etcdctl's differs from command to command).
        describe: the error line's message from the error's (``failed to grant lease (%v)``).

    Raises:
        CtlError: the server's error (``Error: etcdserver: ...``), or no endpoint answered in
            time (``context deadline exceeded``).
    """
    client = make_client(options)
    dial_timeout_s = parse_go_duration(options.dial_timeout)

    async def main() -> T:
        try:
            await _authenticate(client, dial_timeout_s)
            return await action(client)
        finally:
            await client.aclose()

    try:
        return single_error(lambda: trio.run(main))
    except _NoClient as failure:
        raise CtlError(EXIT_BAD_CONNECTION, failure.message) from None
    except RpcError as error:
        unreachable = error.code is StatusCode.UNAVAILABLE and error.message.startswith(
            CANNOT_CONNECT
        )
        message = DEADLINE_EXCEEDED if unreachable else error.message
        raise CtlError(exit_code, describe(message)) from None
    except (HttpConnectError, HttpTimeout):
        raise CtlError(exit_code, describe(DEADLINE_EXCEEDED)) from None
    except HttpError as error:
        raise CtlError(exit_code, describe(str(error))) from None


class _NoClient(Exception):
    """clientv3.New failed: with a user, the client authenticates while it dials, and
    etcdctl exits 2 (ExitBadConnection) with the error, whatever the command."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def _authenticate(client: V3Client, dial_timeout_s: float) -> None:
    """Get the token within the dial timeout, as clientv3 does while it dials.

    Raises:
        _NoClient: the server refused the user, or gave no answer in time (an endpoint
            that cannot be reached or a TLS handshake refused: ``context deadline exceeded``).
    """
    if client.credentials is None:
        return
    try:
        with trio.fail_after(dial_timeout_s):
            await client.authenticate()
    except RpcError as error:
        unreachable = error.code is StatusCode.UNAVAILABLE
        raise _NoClient(DEADLINE_EXCEEDED if unreachable else error.message) from None
    except (HttpError, trio.TooSlowError):
        raise _NoClient(DEADLINE_EXCEEDED) from None


def single_error(run: Callable[[], T]) -> T:
    """``run()``, with an exception group of one error (what a Trio nursery raises when one
    task fails and the others are cancelled) raised as that error."""
    try:
        return run()
    except BaseExceptionGroup as group:
        errors: list[BaseException] = []
        pending: list[BaseException] = [group]
        while pending:
            error = pending.pop()
            if isinstance(error, BaseExceptionGroup):
                pending.extend(error.exceptions)
            elif not isinstance(error, trio.Cancelled):
                errors.append(error)
        if len(errors) == 1:
            raise errors[0] from None
        raise


def to_bytes(text: str) -> bytes:
    """A command-line or stdin string as the bytes it came from (Go's strings are bytes)."""
    return text.encode("utf-8", errors="surrogateescape")


def stdin_bytes() -> bytes:
    """All of stdin, as bytes."""
    stream = getattr(sys.stdin, "buffer", None)
    return stream.read() if stream is not None else to_bytes(sys.stdin.read())


def stdin_readline() -> str:
    """One line of stdin (bytes that are not UTF-8 kept as surrogates)."""
    stream = getattr(sys.stdin, "buffer", None)
    line = stream.readline() if stream is not None else to_bytes(sys.stdin.readline())
    return bytes(line).decode("utf-8", errors="surrogateescape")
