"""``troika user|role|auth ...``: etcdctl 3.4's auth commands, over the Auth service.

What they print is etcdctl's: ``User u created``, ``Role r updated``, ``Password updated``,
``Authentication Enabled``; ``user get`` as ``User: u`` and ``Roles: a b``; ``role get`` as
the ``KV Read:`` and ``KV Write:`` lists (a single key alone, a range as ``[key, end)``, an
open range as ``[key, <open ended>``, and ``(prefix key)`` after a range that is exactly a
prefix); ``-w json`` prints Go's ``encoding/json`` of the response. Errors are etcdctl's
lines and exit codes: 128 for bad arguments, 1 for the server's refusal.

Passwords come as etcdctl takes them: ``user add name:password``, ``--new-user-password``,
or asked for twice (``Password of u:``, then ``Type password of u again for confirmation:``,
each prompt on stdout); with ``--interactive=false`` the first word of stdin is the
password. ``auth enable`` adds the root role and grants it to root when the server says the
root user lacks it, as etcdctl does.

Pure core (arguments to requests, responses to lines) and a thin shell (:func:`register`).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, TypeVar

import typer
from google.protobuf.message import Message

from net.etcdpb import auth_pb2, rpc_pb2
from net.v3.client import V3Client
from net.v3.errors import RpcError
from troika.ctl import (
    EXIT_BAD_ARGS,
    EXIT_BAD_FEATURE,
    CtlError,
    GlobalOptions,
    ask_terminal,
    ctl_command,
    ctl_group,
    emit,
    run_client,
    to_bytes,
)
from troika.v3_commands import go_json, prefix_range_end

OPEN_END = b"\x00"
"""A range end of one zero byte: every key from the start key on."""
PRINTED_FORMATS = ("simple", "json")
KNOWN_FORMATS = ("simple", "json", "table", "fields", "protobuf")
"""etcdctl's -w values; the ones besides simple and json fail after the request."""
ROOT_ROLE_MISSING = "etcdserver: root user does not have root role"
ROOT = "root"
PERMISSION_TYPES = {"READ": auth_pb2.Permission.READ, "WRITE": auth_pb2.Permission.WRITE}
PERMISSION_TYPES["READWRITE"] = auth_pb2.Permission.READWRITE


# -- the pure core ---------------------------------------------------------------------------------


def check_known_format(write_out: str) -> None:
    """etcdctl's refusal of an output format it does not know, before any request.

    Raises:
        CtlError: exit 4.
    """
    if write_out not in KNOWN_FORMATS:
        raise CtlError(EXIT_BAD_FEATURE, "unsupported output format")


def check_printed_format(write_out: str) -> None:
    """etcdctl's refusal of a known format its auth printers lack, after the request.

    Raises:
        CtlError: exit 4.
    """
    if write_out not in PRINTED_FORMATS:
        raise CtlError(EXIT_BAD_FEATURE, f"{write_out} not supported as output format")


def one_argument(args: Sequence[str], message: str, count: int = 1) -> list[str]:
    """``args`` when there are exactly ``count`` of them.

    Raises:
        CtlError: exit 128 with etcdctl's ``message``.
    """
    if len(args) != count:
        raise CtlError(EXIT_BAD_ARGS, message)
    return list(args)


def first_word(line: str) -> str:
    """What Go's ``fmt.Scanf("%s")`` reads from a line: its first word ("" for none)."""
    words = line.split()
    return words[0] if words else ""


def ask_new_password(name: str, ask: Callable[[str], str]) -> str:
    """etcdctl's interactive password: asked twice, refused if empty or different.

    Raises:
        CtlError: exit 128 (``empty password``, ``given passwords are different``).
    """
    first = ask(f"Password of {name}: ")
    if not first:
        raise CtlError(EXIT_BAD_ARGS, "empty password")
    second = ask(f"Type password of {name} again for confirmation: ")
    if first != second:
        raise CtlError(EXIT_BAD_ARGS, "given passwords are different")
    return first


def user_add_request(
    args: Sequence[str],
    *,
    new_user_password: str,
    no_password: bool,
    interactive: bool,
    read_line: Callable[[], str],
    ask: Callable[[str], str],
) -> rpc_pb2.AuthUserAddRequest:
    """``user add``'s request from its argument and flags.

    Raises:
        CtlError: exit 128 (no name, an empty name before the colon, a password refused).
    """
    (given,) = one_argument(args, "user add command requires user name as its argument")
    options = auth_pb2.UserAddOptions(no_password=no_password)
    if no_password:
        return rpc_pb2.AuthUserAddRequest(name=given, options=options)
    if new_user_password:
        return rpc_pb2.AuthUserAddRequest(name=given, password=new_user_password, options=options)
    name, colon, password = given.partition(":")
    if colon and not name:
        raise CtlError(EXIT_BAD_ARGS, "empty user name is not allowed")
    if not colon:
        password = ask_new_password(name, ask) if interactive else first_word(read_line())
    return rpc_pb2.AuthUserAddRequest(name=name, password=password, options=options)


def permission_type(text: str) -> auth_pb2.Permission.Type.ValueType:
    """``read``, ``write`` or ``readwrite`` in any case.

    Raises:
        CtlError: exit 128, ``invalid permission type: <text>``.
    """
    found = PERMISSION_TYPES.get(text.upper())
    if found is None:
        raise CtlError(EXIT_BAD_ARGS, f"invalid permission type: {text}")
    return found


def permission_range(args: Sequence[str], prefix: bool, from_key: bool) -> tuple[bytes, bytes]:
    """The key and range end of ``<key> [endkey]`` with ``--prefix`` or ``--from-key``: an
    empty key means every key (``\\x00``, open ended with either flag).

    Raises:
        CtlError: exit 128, both flags, or an end key with either.
    """
    if prefix and from_key:
        raise CtlError(EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive")
    key = to_bytes(args[0])
    if not key:
        return OPEN_END, OPEN_END if prefix or from_key else b""
    if len(args) == 1:
        if prefix:
            return key, prefix_range_end(key)
        return key, OPEN_END if from_key else b""
    if prefix or from_key:
        flag = "--prefix" if prefix else "--from-key"
        raise CtlError(EXIT_BAD_ARGS, f"unexpected endkey argument with {flag} flag")
    return key, to_bytes(args[1])


def grant_permission_request(
    args: Sequence[str], prefix: bool, from_key: bool
) -> rpc_pb2.AuthRoleGrantPermissionRequest:
    """``role grant-permission <role> <type> <key> [endkey]``'s request.

    Raises:
        CtlError: exit 128.
    """
    if len(args) < 3:
        raise CtlError(
            EXIT_BAD_ARGS,
            "role grant command requires role name, permission type, and key [endkey] as its "
            "argument",
        )
    kind = permission_type(args[1])
    key, range_end = permission_range(args[2:], prefix, from_key)
    permission = auth_pb2.Permission(permType=kind, key=key, range_end=range_end)
    return rpc_pb2.AuthRoleGrantPermissionRequest(name=args[0], perm=permission)


def revoke_permission_request(
    args: Sequence[str], prefix: bool, from_key: bool
) -> rpc_pb2.AuthRoleRevokePermissionRequest:
    """``role revoke-permission <role> <key> [endkey]``'s request.

    Raises:
        CtlError: exit 128.
    """
    if len(args) < 2:
        raise CtlError(
            EXIT_BAD_ARGS,
            "role revoke-permission command requires role name and key [endkey] as its argument",
        )
    key, range_end = permission_range(args[1:], prefix, from_key)
    return rpc_pb2.AuthRoleRevokePermissionRequest(role=args[0], key=key, range_end=range_end)


def _range_line(permission: auth_pb2.Permission) -> bytes:
    key, end = permission.key, permission.range_end
    if not end:
        return b"\t" + key
    line = b"\t[" + key + (b", " + end + b")" if end != OPEN_END else b", <open ended>")
    if prefix_range_end(key) == end:
        line += b" (prefix " + key + b")"
    return line


def role_get_lines(role: str, response: rpc_pb2.AuthRoleGetResponse) -> list[bytes]:
    """``role get``'s simple output."""
    readable = (auth_pb2.Permission.READ, auth_pb2.Permission.READWRITE)
    writable = (auth_pb2.Permission.WRITE, auth_pb2.Permission.READWRITE)
    lines = [b"Role " + to_bytes(role), b"KV Read:"]
    lines += [_range_line(p) for p in response.perm if p.permType in readable]
    lines.append(b"KV Write:")
    lines += [_range_line(p) for p in response.perm if p.permType in writable]
    return lines


def user_get_lines(name: str, response: rpc_pb2.AuthUserGetResponse) -> list[bytes]:
    """``user get``'s simple output."""
    roles = "".join(f" {role}" for role in response.roles)
    return [f"User: {name}".encode(), f"Roles:{roles}".encode()]


def revoked_line(role: str, key: bytes, end: bytes) -> bytes:
    """``role revoke-permission``'s simple output."""
    name = to_bytes(role)
    if not end:
        return b"Permission of key " + key + b" is revoked from role " + name
    shown = b", " + end + b")" if end != OPEN_END else b", <open ended>"
    return b"Permission of range [" + key + shown + b" is revoked from role " + name


def printed(write_out: str, response: Message, simple: list[bytes]) -> list[bytes]:
    """``simple`` or the response's JSON, as ``-w`` asks.

    Raises:
        CtlError: exit 4 for a format the auth printers lack.
    """
    check_printed_format(write_out)
    return [go_json(response)] if write_out == "json" else simple


async def enable_auth(client: V3Client) -> None:
    """``auth enable``: when the server answers that root lacks the root role, add the role,
    grant it, and ask again (as etcdctl does).

    Raises:
        RpcError: the server's refusal (``etcdserver: root user does not exist``, ...).
    """
    while True:
        try:
            await client.auth_enable()
        except RpcError as error:
            if error.message != ROOT_ROLE_MISSING:
                raise
            await client.role_add(rpc_pb2.AuthRoleAddRequest(name=ROOT))
            await client.user_grant_role(rpc_pb2.AuthUserGrantRoleRequest(user=ROOT, role=ROOT))
            continue
        return


# -- the shell -------------------------------------------------------------------------------------


ArgsArgument = Annotated[list[str] | None, typer.Argument(help="the arguments")]
InteractiveOption = Annotated[
    bool,
    typer.Option(
        "--interactive/--no-interactive",
        help="Read password from stdin instead of interactive terminal",
    ),
]
PrefixOption = Annotated[bool, typer.Option("--prefix", help="a prefix permission")]
FromKeyOption = Annotated[
    bool, typer.Option("--from-key", help="keys greater than or equal to the given key")
]


ResponseT = TypeVar("ResponseT", bound=Message)


def _run_and_print(
    options: GlobalOptions,
    action: Callable[[V3Client], Awaitable[ResponseT]],
    lines: Callable[[ResponseT], list[bytes]],
) -> None:
    """Check -w, run one request, print etcdctl's lines (or the JSON)."""
    check_known_format(options.write_out)
    response = run_client(options, action)
    emit(printed(options.write_out, response, lines(response)))


def _user_group(options: GlobalOptions) -> None:
    """User related commands."""


def _role_group(options: GlobalOptions) -> None:
    """Role related commands."""


def _auth_group(options: GlobalOptions) -> None:
    """Enable or disable authentication."""


def register(app: typer.Typer) -> None:
    """Add ``user ...``, ``role ...`` and ``auth enable|disable`` to ``app``."""
    user_app = typer.Typer(no_args_is_help=True, callback=ctl_group(_user_group))
    role_app = typer.Typer(no_args_is_help=True, callback=ctl_group(_role_group))
    auth_app = typer.Typer(no_args_is_help=True, callback=ctl_group(_auth_group))
    app.add_typer(user_app, name="user")
    app.add_typer(role_app, name="role")
    app.add_typer(auth_app, name="auth")
    _register_user(user_app)
    _register_role(role_app)
    _register_plain(user_app, role_app)
    _register_auth(auth_app)


def _plain_command(  # noqa: PLR0917 (one row of the table below)
    app: typer.Typer,
    command: str,
    doc: str,
    usage: str,
    count: int,
    call: Callable[[V3Client, list[str]], Awaitable[ResponseT]],
    lines: Callable[[list[str], ResponseT], list[bytes]],
) -> None:
    """Register a command of ``count`` plain arguments (``usage`` when they are not), one
    request and etcdctl's lines."""

    def body(options: GlobalOptions, *, args: ArgsArgument = None) -> None:
        given = one_argument(args or [], usage, count)
        _run_and_print(
            options, lambda client: call(client, given), lambda response: lines(given, response)
        )

    body.__doc__ = doc
    ctl_command(app, command)(body)


def _register_plain(user_app: typer.Typer, role_app: typer.Typer) -> None:
    """The commands that are one request and a fixed line (or a list), as table rows."""
    needs_user = "command requires user name as its argument"
    needs_role = "command requires role name as its argument"
    pair = "user name and role name as its argument"
    # fmt: off
    _plain_command(user_app, "list", "Lists all users.", "user list command requires no arguments",
        0, lambda client, _: client.user_list(),
        lambda _, response: [to_bytes(user) for user in response.users])
    _plain_command(user_app, "delete", "Deletes a user.", f"user delete {needs_user}",
        1, lambda client, args: client.user_delete(rpc_pb2.AuthUserDeleteRequest(name=args[0])),
        lambda args, _: [f"User {args[0]} deleted".encode()])
    _plain_command(user_app, "grant-role", "Grants a role to a user.",
        f"user grant command requires {pair}",
        2, lambda client, args: client.user_grant_role(
            rpc_pb2.AuthUserGrantRoleRequest(user=args[0], role=args[1])),
        lambda args, _: [f"Role {args[1]} is granted to user {args[0]}".encode()])
    _plain_command(user_app, "revoke-role", "Revokes a role from a user.",
        f"user revoke-role requires {pair}",
        2, lambda client, args: client.user_revoke_role(
            rpc_pb2.AuthUserRevokeRoleRequest(name=args[0], role=args[1])),
        lambda args, _: [f"Role {args[1]} is revoked from user {args[0]}".encode()])
    _plain_command(role_app, "add", "Adds a new role.", f"role add {needs_role}",
        1, lambda client, args: client.role_add(rpc_pb2.AuthRoleAddRequest(name=args[0])),
        lambda args, _: [f"Role {args[0]} created".encode()])
    _plain_command(role_app, "get", "Gets detailed information of a role.",
        f"role get {needs_role}",
        1, lambda client, args: client.role_get(rpc_pb2.AuthRoleGetRequest(role=args[0])),
        lambda args, response: role_get_lines(args[0], response))
    _plain_command(role_app, "list", "Lists all roles.", "role list command requires no arguments",
        0, lambda client, _: client.role_list(),
        lambda _, response: [to_bytes(role) for role in response.roles])
    _plain_command(role_app, "delete", "Deletes a role.", f"role delete {needs_role}",
        1, lambda client, args: client.role_delete(rpc_pb2.AuthRoleDeleteRequest(role=args[0])),
        lambda args, _: [f"Role {args[0]} deleted".encode()])
    # fmt: on


def _register_user(user_app: typer.Typer) -> None:
    @ctl_command(user_app, "add")
    def user_add(
        options: GlobalOptions,
        *,
        args: ArgsArgument = None,
        interactive: InteractiveOption = True,
        new_user_password: Annotated[
            str,
            typer.Option("--new-user-password", help="Supply password from the command line flag"),
        ] = "",
        no_password: Annotated[
            bool,
            typer.Option(
                "--no-password", help="Create a user without password (CN based auth only)"
            ),
        ] = False,
    ) -> None:
        """Adds a new user."""
        request = user_add_request(
            args or [],
            new_user_password=new_user_password,
            no_password=no_password,
            interactive=interactive,
            read_line=sys.stdin.readline,
            ask=ask_terminal,
        )
        simple = [f"User {request.name} created".encode()]
        _run_and_print(options, lambda client: client.user_add(request), lambda _: simple)

    @ctl_command(user_app, "get")
    def user_get(
        options: GlobalOptions,
        *,
        args: ArgsArgument = None,
        detail: Annotated[
            bool, typer.Option("--detail", help="Show permissions of roles granted to the user")
        ] = False,
    ) -> None:
        """Gets detailed information of a user."""
        (name,) = one_argument(args or [], "user get command requires user name as its argument")
        check_known_format(options.write_out)
        request = rpc_pb2.AuthUserGetRequest(name=name)
        if not detail:
            _run_and_print(
                options,
                lambda client: client.user_get(request),
                lambda response: user_get_lines(name, response),
            )
            return
        roles = run_client(options, lambda client: _roles_of(client, request))
        emit([f"User: {name}".encode()])
        for role, response in roles:
            emit([b""])
            emit(printed(options.write_out, response, role_get_lines(role, response)))

    @ctl_command(user_app, "passwd")
    def user_passwd(
        options: GlobalOptions, *, args: ArgsArgument = None, interactive: InteractiveOption = True
    ) -> None:
        """Changes password of user."""
        message = "user passwd command requires user name as its argument"
        (name,) = one_argument(args or [], message)
        password = (
            ask_new_password(name, ask_terminal)
            if interactive
            else first_word(sys.stdin.readline())
        )
        request = rpc_pb2.AuthUserChangePasswordRequest(name=name, password=password)
        _run_and_print(
            options,
            lambda client: client.user_change_password(request),
            lambda _: [b"Password updated"],
        )


async def _roles_of(
    client: V3Client, request: rpc_pb2.AuthUserGetRequest
) -> list[tuple[str, rpc_pb2.AuthRoleGetResponse]]:
    """``user get --detail``: the user's roles, each with its permissions."""
    user = await client.user_get(request)
    roles = []
    for role in user.roles:
        roles.append((role, await client.role_get(rpc_pb2.AuthRoleGetRequest(role=role))))
    return roles


def _register_role(role_app: typer.Typer) -> None:
    @ctl_command(role_app, "grant-permission")
    def role_grant_permission(
        options: GlobalOptions,
        *,
        args: ArgsArgument = None,
        prefix: PrefixOption = False,
        from_key: FromKeyOption = False,
    ) -> None:
        """Grants a key to a role."""
        request = grant_permission_request(args or [], prefix, from_key)
        simple = [f"Role {request.name} updated".encode()]
        _run_and_print(
            options, lambda client: client.role_grant_permission(request), lambda _: simple
        )

    @ctl_command(role_app, "revoke-permission")
    def role_revoke_permission(
        options: GlobalOptions,
        *,
        args: ArgsArgument = None,
        prefix: PrefixOption = False,
        from_key: FromKeyOption = False,
    ) -> None:
        """Revokes a key from a role."""
        request = revoke_permission_request(args or [], prefix, from_key)
        simple = [revoked_line(request.role, to_bytes((args or ["", ""])[1]), request.range_end)]
        _run_and_print(
            options, lambda client: client.role_revoke_permission(request), lambda _: simple
        )


def _register_auth(auth_app: typer.Typer) -> None:
    @ctl_command(auth_app, "enable")
    def auth_enable(options: GlobalOptions, *, args: ArgsArgument = None) -> None:
        """Enables authentication."""
        message = "auth enable command does not accept any arguments"
        one_argument(args or [], message, count=0)
        check_known_format(options.write_out)
        run_client(options, enable_auth)
        typer.echo("Authentication Enabled")

    @ctl_command(auth_app, "disable")
    def auth_disable(options: GlobalOptions, *, args: ArgsArgument = None) -> None:
        """Disables authentication."""
        message = "auth disable command does not accept any arguments"
        one_argument(args or [], message, count=0)
        check_known_format(options.write_out)
        run_client(options, lambda client: client.auth_disable())
        typer.echo("Authentication Disabled")
