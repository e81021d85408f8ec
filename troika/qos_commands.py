"""``troika qos set|get|list|delete``: per-tenant QoS limits (issue 16 item 3).

A tenant is a key prefix or, with auth on, a user (``--tenant-user NAME``) or a role
(``--tenant-role NAME``; rates and ``--watches-max`` only). ``set`` replaces a tenant's limits
(every limit not given is 0: no limit), ``delete`` removes the tenant, both through the first
endpoint that answers: the member proposes a ``QOS`` entry, so every member enforces the same
limits once it is applied. ``get`` and ``list`` show the limits and the space (keys, bytes,
leases) each quota tenant uses, as the first endpoint that answers sees them
(``/troika/v1/qos``, ``actors.qos``).

The commands take etcdctl's global flags (``troika.ctl``: ``--endpoints``, ``--user`` and
``--password``, TLS, timeouts, ``-w``): the client authenticates as the user and sends its token
as the ``Authorization`` header, which a change needs under auth (a root user). The tenant
flags are ``--tenant-user``/``--tenant-role`` because ``--user`` is the caller's.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

import typer

from net.http.errors import HttpError
from net.v3.client import TOKEN_METADATA, V3Client
from troika.ctl import (
    EXIT_BAD_ARGS,
    EXIT_BAD_CONNECTION,
    EXIT_ERROR,
    CtlError,
    GlobalOptions,
    ctl_command,
    run_client,
)

qos_app = typer.Typer(
    help="Per-tenant QoS: rates, watches, space and lease quotas by key prefix, user or role.",
    no_args_is_help=True,
)

LIMIT_FLAGS: Final = (
    ("read_requests_per_s", "read requests a second, per member serving them"),
    ("write_requests_per_s", "write requests a second, per member serving them"),
    ("read_bytes_per_s", "bytes read a second (response sizes), per member"),
    ("write_bytes_per_s", "bytes written a second (keys and values), per member"),
    ("watches_max", "watches open per member: on keys of a prefix, or by a user's/role's callers"),
    ("keys_max", "live keys stored under the prefix (enforced at apply; prefixes only)"),
    ("stored_bytes_max", "bytes of live keys and values under the prefix (prefixes only)"),
    ("leases_max", "distinct leases attached to live keys under the prefix (prefixes only)"),
)
USAGE_COLUMNS: Final = (("keys", "KEYS"), ("stored_bytes", "STORED BYTES"), ("leases", "LEASES"))
COLUMNS: Final = (
    "TENANT",
    *(name.upper() for name, _ in LIMIT_FLAGS),
    *(title for _, title in USAGE_COLUMNS),
)
KINDS: Final = ("prefix", "user", "role")
QOS_PATH: Final = "/troika/v1/qos"


def tenant_body(prefix: str | None, tenant_user: str, tenant_role: str) -> dict[str, str]:
    """The tenant a command names, as the endpoints' JSON names it.

    Raises:
        CtlError: none or more than one named (exit 128, a bad argument).
    """
    named = {
        kind: name
        for kind, name in zip(KINDS, (prefix, tenant_user, tenant_role), strict=True)
        if name
    }
    if len(named) != 1:
        raise CtlError(EXIT_BAD_ARGS, "name one tenant: a prefix, --tenant-user or --tenant-role")
    return named


def label(tenant: dict[str, Any]) -> str:
    """How a tenant is shown: its prefix, or ``user:NAME`` / ``role:NAME``."""
    if "prefix" in tenant:
        return str(tenant["prefix"])
    kind = "user" if "user" in tenant else "role"
    return f"{kind}:{tenant[kind]}"


async def call(client: V3Client, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """``method path`` on the first of the client's endpoints that answers, with its token
    (if it has one) as the ``Authorization`` header; the answer's JSON.

    Raises:
        CtlError: none answered, or the answer is an error.
    """
    headers = tuple(
        ("Authorization", token) for name, token in client.grpc_metadata() if name == TOKEN_METADATA
    )
    data = json.dumps(body).encode() if body is not None else b""
    failures = []
    for url in client.endpoints:
        try:
            reply = await client.http.request(
                method, url + path, headers=headers, body=data, timeout=client.timeout_s
            )
        except HttpError as error:
            failures.append(f"{url}: {error}")
            continue
        if reply.status != 200:
            raise CtlError(EXIT_ERROR, str(reply.json().get("error", reply.text)))
        return reply.json()
    raise CtlError(EXIT_BAD_CONNECTION, "no endpoint answered: " + "; ".join(failures))


def render(answer: dict[str, Any], wanted: str | None = None) -> str:
    """The tenants (or one, by its label) as a table, with the space each quota tenant uses."""
    usage = answer["usage"]
    rows = [
        [
            label(tenant),
            *(str(tenant.get(name, "-")) for name, _ in LIMIT_FLAGS),
            *(str(usage.get(tenant.get("prefix"), {}).get(name, "-")) for name, _ in USAGE_COLUMNS),
        ]
        for tenant in answer["tenants"]
        if wanted is None or label(tenant) == wanted
    ]
    widths = [max(len(row[i]) for row in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]
    rule = "+" + "+".join("-" * (width + 2) for width in widths) + "+"

    def line(cells: list[str]) -> str:
        return "|" + "|".join(f" {c.ljust(w)} " for c, w in zip(cells, widths, strict=True)) + "|"

    return "\n".join([rule, line(list(COLUMNS)), rule, *(line(row) for row in rows), rule])


PrefixArgument = Annotated[
    str | None, typer.Argument(help="The tenant's key prefix (or --tenant-user/--tenant-role).")
]
TenantUserOption = Annotated[
    str, typer.Option("--tenant-user", help="The tenant is this user (auth on; rates, watches).")
]
TenantRoleOption = Annotated[
    str, typer.Option("--tenant-role", help="The tenant is this role (auth on; rates, watches).")
]


def _run(
    options: GlobalOptions,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    wanted: str | None = None,
) -> None:
    """Send, then print the answer (``-w json``: as it came; else a table)."""
    answer = run_client(options, lambda client: call(client, method, path, body))
    known = {label(tenant) for tenant in answer["tenants"]}
    if wanted is not None and method == "GET" and wanted not in known:
        raise CtlError(EXIT_ERROR, f"no tenant {wanted!r}")
    typer.echo(json.dumps(answer) if options.write_out == "json" else render(answer, wanted))


def _label_of(named: dict[str, str]) -> str:
    ((kind, name),) = named.items()
    return name if kind == "prefix" else f"{kind}:{name}"


@ctl_command(qos_app, "set")
def set_command(
    options: GlobalOptions,
    *,
    prefix: PrefixArgument = None,
    tenant_user: TenantUserOption = "",
    tenant_role: TenantRoleOption = "",
    read_requests_per_s: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[0][1])] = 0,
    write_requests_per_s: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[1][1])] = 0,
    read_bytes_per_s: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[2][1])] = 0,
    write_bytes_per_s: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[3][1])] = 0,
    watches_max: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[4][1])] = 0,
    keys_max: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[5][1])] = 0,
    stored_bytes_max: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[6][1])] = 0,
    leases_max: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[7][1])] = 0,
) -> None:
    """Set a tenant's limits (replacing them; a limit not given is none)."""
    named = tenant_body(prefix, tenant_user, tenant_role)
    limits = {
        "read_requests_per_s": read_requests_per_s,
        "write_requests_per_s": write_requests_per_s,
        "read_bytes_per_s": read_bytes_per_s,
        "write_bytes_per_s": write_bytes_per_s,
        "watches_max": watches_max,
        "keys_max": keys_max,
        "stored_bytes_max": stored_bytes_max,
        "leases_max": leases_max,
    }
    _run(options, "POST", QOS_PATH + "/set", {**named, **limits}, _label_of(named))


@ctl_command(qos_app, "delete")
def delete_command(
    options: GlobalOptions,
    *,
    prefix: PrefixArgument = None,
    tenant_user: TenantUserOption = "",
    tenant_role: TenantRoleOption = "",
) -> None:
    """Remove a tenant (its limits no longer apply)."""
    _run(options, "POST", QOS_PATH + "/delete", tenant_body(prefix, tenant_user, tenant_role))


@ctl_command(qos_app, "get")
def get_command(
    options: GlobalOptions,
    *,
    prefix: PrefixArgument = None,
    tenant_user: TenantUserOption = "",
    tenant_role: TenantRoleOption = "",
) -> None:
    """One tenant's limits and space used."""
    named = tenant_body(prefix, tenant_user, tenant_role)
    _run(options, "GET", QOS_PATH, None, _label_of(named))


@ctl_command(qos_app, "list")
def list_command(options: GlobalOptions) -> None:
    """Every tenant's limits and space used."""
    _run(options, "GET", QOS_PATH, None)


def register(app: typer.Typer) -> None:
    """Add ``qos`` to ``app``."""
    app.add_typer(qos_app, name="qos")
