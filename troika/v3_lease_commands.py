"""``troika lease grant|revoke|timetolive|list|keep-alive``: etcdctl 3.4's lease commands.

Output, error lines and exit codes are etcdctl's (``lease 694d7b4b3d2bd50b granted with
TTL(60s)``; ``Error: failed to revoke lease (etcdserver: requested lease not found)``, exit 1;
a bad ID is exit 128). With ``-w json`` etcdctl prints Go's ``encoding/json`` of clientv3's
response structs, which embed the header: its fields come first at the top level, then the
struct's own (``ID``/``TTL``/``Error`` for a grant, ``id``/``ttl``/``granted-ttl``/``keys`` for
timetolive). The renderers here write exactly that.

Pure core (request building, rendering) and a thin shell (:func:`register`): the unary calls
go through the JSON gateway like the KV commands, keep-alive over a gRPC stream
(:func:`troika.v3_concurrency.keep_alive`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from net.etcdpb import rpc_pb2
from net.v3.client import V3Client
from troika.ctl import (
    EXIT_BAD_ARGS,
    EXIT_BAD_CONNECTION,
    EXIT_BAD_FEATURE,
    CtlError,
    GlobalOptions,
    ctl_command,
    emit,
    run_client,
)
from troika.v3_commands import OUTPUT_FORMATS_SUPPORTED, go_struct, parse_go_int
from troika.v3_concurrency import keep_alive

# -- requests --------------------------------------------------------------------------------------


def parse_lease_id(text: str) -> int:
    """A lease ID argument, in hexadecimal as etcdctl takes it.

    Raises:
        CtlError: not a hexadecimal int64 (exit 128).
    """
    try:
        return parse_go_int(text, 16)
    except CtlError as error:
        raise CtlError(
            EXIT_BAD_ARGS, f"bad lease ID arg ({error.message}), expecting ID in Hex"
        ) from None


def one_lease_id(args: Sequence[str], usage: str) -> int:
    """The one lease ID argument of revoke, timetolive and keep-alive.

    Raises:
        CtlError: not exactly one argument (``usage``, exit 128), or a bad ID.
    """
    if len(args) != 1:
        raise CtlError(EXIT_BAD_ARGS, usage)
    return parse_lease_id(args[0])


def grant_request(args: Sequence[str]) -> rpc_pb2.LeaseGrantRequest:
    """The LeaseGrantRequest of ``lease grant <ttl>`` (the server picks the ID).

    Raises:
        CtlError: not one argument, or not a decimal int64 (exit 128).
    """
    if len(args) != 1:
        raise CtlError(EXIT_BAD_ARGS, "lease grant command needs TTL argument")
    try:
        ttl = parse_go_int(args[0])
    except CtlError as error:
        raise CtlError(EXIT_BAD_ARGS, f"bad TTL ({error.message})") from None
    return rpc_pb2.LeaseGrantRequest(TTL=ttl)


# -- output ----------------------------------------------------------------------------------------


def check_format(write_out: str) -> None:
    """Refuse the formats troika does not print, as etcdctl refuses its unsupported ones.

    Raises:
        CtlError: exit 4.
    """
    if write_out not in OUTPUT_FORMATS_SUPPORTED:
        raise CtlError(EXIT_BAD_FEATURE, f"{write_out} not supported as output format")


def flat_json(header: rpc_pb2.ResponseHeader, fields: Sequence[tuple[str, Any]]) -> bytes:
    """A clientv3 struct that embeds ``*pb.ResponseHeader``: the header's fields (zero ones
    left out) at the top level, then the struct's own fields, every one of them."""
    document = go_struct(header)
    document.update(fields)
    return json.dumps(document, separators=(",", ":")).encode()


def lease_hex(lease_id: int) -> str:
    """``%016x``."""
    return f"{lease_id:016x}" if lease_id >= 0 else f"-{-lease_id:016x}"


def render_grant(response: rpc_pb2.LeaseGrantResponse, write_out: str) -> list[bytes]:
    """``lease grant``'s output."""
    check_format(write_out)
    if write_out == "json":
        fields = [("ID", response.ID), ("TTL", response.TTL), ("Error", response.error)]
        return [flat_json(response.header, fields)]
    return [f"lease {lease_hex(response.ID)} granted with TTL({response.TTL}s)".encode()]


def render_revoke(
    lease_id: int, response: rpc_pb2.LeaseRevokeResponse, write_out: str
) -> list[bytes]:
    """``lease revoke``'s output (json: the protobuf response, ``{"header":...}``)."""
    check_format(write_out)
    if write_out == "json":
        return [json.dumps(go_struct(response), separators=(",", ":")).encode()]
    return [f"lease {lease_hex(lease_id)} revoked".encode()]


def render_keep_alive(response: rpc_pb2.LeaseKeepAliveResponse, write_out: str) -> list[bytes]:
    """One line of ``lease keep-alive``."""
    check_format(write_out)
    if write_out == "json":
        return [flat_json(response.header, [("ID", response.ID), ("TTL", response.TTL)])]
    return [f"lease {lease_hex(response.ID)} keepalived with TTL({response.TTL})".encode()]


def render_time_to_live(
    response: rpc_pb2.LeaseTimeToLiveResponse, keys: bool, write_out: str
) -> list[bytes]:
    """``lease timetolive``'s output (``already expired`` for a lease that is gone)."""
    check_format(write_out)
    if write_out == "json":
        encoded = [_base64(key) for key in response.keys] if response.keys else None
        fields = [
            ("id", response.ID),
            ("ttl", response.TTL),
            ("granted-ttl", response.grantedTTL),
            ("keys", encoded),
        ]
        return [flat_json(response.header, fields)]
    if response.grantedTTL == 0 and response.TTL == -1:
        return [f"lease {lease_hex(response.ID)} already expired".encode()]
    line = (
        f"lease {lease_hex(response.ID)} granted with TTL({response.grantedTTL}s), "
        f"remaining({response.TTL}s)"
    ).encode()
    if keys:
        line += b", attached keys([" + b" ".join(response.keys) + b"])"
    return [line]


def render_leases(response: rpc_pb2.LeaseLeasesResponse, write_out: str) -> list[bytes]:
    """``lease list``'s output: the count, then each ID."""
    check_format(write_out)
    if write_out == "json":
        leases = [{"id": lease.ID} for lease in response.leases]
        return [flat_json(response.header, [("leases", leases)])]
    lines = [f"found {len(response.leases)} leases".encode()]
    lines += [lease_hex(lease.ID).encode() for lease in response.leases]
    return lines


def expired_line(lease_id: int, write_out: str) -> list[bytes]:
    """What ``lease keep-alive`` prints when the lease ends (simple output only)."""
    return (
        [f"lease {lease_hex(lease_id)} expired or revoked.".encode()]
        if write_out == "simple"
        else []
    )


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- the shell -------------------------------------------------------------------------------------


ArgsArgument = Annotated[list[str] | None, typer.Argument(help="<leaseID> (hexadecimal)")]


def register(app: typer.Typer) -> None:
    """Add ``lease`` and its subcommands to ``app``."""
    lease_app = typer.Typer(help="Lease related commands", no_args_is_help=True)
    app.add_typer(lease_app, name="lease")

    @ctl_command(lease_app, "grant")
    def grant(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(help="<ttl> in seconds")] = None,
    ) -> None:
        """Creates leases."""
        request = grant_request(args or [])
        response = run_client(
            options,
            lambda client: client.lease_grant(request),
            describe=lambda message: f"failed to grant lease ({message})",
        )
        emit(render_grant(response, options.write_out))

    @ctl_command(lease_app, "revoke")
    def revoke(
        options: GlobalOptions,
        *,
        args: ArgsArgument = None,
    ) -> None:
        """Revokes leases."""
        lease_id = one_lease_id(args or [], "lease revoke command needs 1 argument")
        response = run_client(
            options,
            lambda client: client.lease_revoke(rpc_pb2.LeaseRevokeRequest(ID=lease_id)),
            describe=lambda message: f"failed to revoke lease ({message})",
        )
        emit(render_revoke(lease_id, response, options.write_out))

    @ctl_command(lease_app, "timetolive")
    def time_to_live(
        options: GlobalOptions,
        *,
        args: ArgsArgument = None,
        keys: Annotated[
            bool, typer.Option("--keys", help="Get keys attached to this lease")
        ] = False,
    ) -> None:
        """Get lease information."""
        lease_id = one_lease_id(args or [], "lease timetolive command needs lease ID as argument")
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)
        response = run_client(
            options,
            lambda client: client.lease_time_to_live(request),
            exit_code=EXIT_BAD_CONNECTION,
        )
        emit(render_time_to_live(response, keys, options.write_out))

    @ctl_command(lease_app, "list")
    def leases(
        options: GlobalOptions,
    ) -> None:
        """List all active leases."""
        response = run_client(
            options,
            lambda client: client.lease_leases(rpc_pb2.LeaseLeasesRequest()),
            exit_code=EXIT_BAD_CONNECTION,
        )
        emit(render_leases(response, options.write_out))

    @ctl_command(lease_app, "keep-alive")
    def keep_alive_command(
        options: GlobalOptions,
        *,
        args: ArgsArgument = None,
        once: Annotated[
            bool,
            typer.Option(
                "--once",
                help="Resets the keep-alive time to its original value and exits immediately",
            ),
        ] = False,
    ) -> None:
        """Keeps leases alive (renew)."""
        lease_id = one_lease_id(args or [], "lease keep-alive command needs lease ID as argument")
        check_format(options.write_out)
        run_client(
            options,
            lambda client: _keep_alive(client, lease_id, once, options.write_out),
            exit_code=EXIT_BAD_CONNECTION,
        )


async def _keep_alive(client: V3Client, lease_id: int, once: bool, write_out: str) -> None:
    """Print each answer; at the end, etcdctl's last line (or, with ``--once``, its error).

    Raises:
        CtlError: ``--once`` on a lease that is gone (``etcdserver: requested lease not
            found``, exit 2, as clientv3's KeepAliveOnce).
    """
    ended = await keep_alive(
        client, lease_id, lambda response: emit(render_keep_alive(response, write_out)), once=once
    )
    if once:
        if ended is None or ended.TTL <= 0:
            raise CtlError(EXIT_BAD_CONNECTION, "etcdserver: requested lease not found")
        return
    emit(expired_line(lease_id, write_out))
