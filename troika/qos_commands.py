"""``troika qos set|get|list|delete``: per-tenant QoS limits (issue 16 item 3).

A tenant is a key prefix. ``set`` replaces a tenant's limits (every limit not given is 0: no
limit), ``delete`` removes the tenant, both through the first endpoint that answers: the member
proposes a ``QOS`` entry, so every member enforces the same limits once it is applied. ``get``
and ``list`` show the limits and the space each quota tenant uses, as the first endpoint that
answers sees them (``/troika/v1/qos``, ``actors.qos``).

Written in the style of ``troika.inspect_commands`` with its own ``--endpoints`` option, so it
stands alone while the CLI's common flags are being refactored.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

import trio
import typer

from net.http.client import HttpClient
from net.http.errors import HttpError
from net.tcp import TcpNetwork
from net.v3.client import endpoint_url

qos_app = typer.Typer(
    help="Per-tenant QoS: request and byte rates, watches and space quotas by key prefix.",
    no_args_is_help=True,
)

TIMEOUT_S: Final = 5.0
LIMIT_FLAGS: Final = (
    ("read_requests_per_s", "read requests a second, per member serving them"),
    ("write_requests_per_s", "write requests a second, per member serving them"),
    ("read_bytes_per_s", "bytes read a second (response sizes), per member"),
    ("write_bytes_per_s", "bytes written a second (keys and values), per member"),
    ("watches_max", "watches open on keys of the tenant, per member"),
    ("keys_max", "live keys stored under the prefix (enforced at apply)"),
    ("stored_bytes_max", "bytes of live keys and values under the prefix (at apply)"),
)
COLUMNS: Final = ("PREFIX", *(name.upper() for name, _ in LIMIT_FLAGS), "KEYS", "STORED BYTES")


class QosCommandError(Exception):
    """No endpoint answered, or one refused the request (its message)."""


def call(endpoints: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """``method path`` on the first endpoint that answers; its JSON.

    Raises:
        QosCommandError: none answered, or the answer is an error.
    """
    urls = [endpoint_url(e.strip()) for e in endpoints.split(",") if e.strip()]
    data = json.dumps(body).encode() if body is not None else b""

    async def main() -> Any:
        failures = []
        http = HttpClient(TcpNetwork())
        try:
            for url in urls:
                try:
                    reply = await http.request(method, url + path, body=data, timeout=TIMEOUT_S)
                except HttpError as error:
                    failures.append(f"{url}: {error}")
                    continue
                if reply.status != 200:
                    raise QosCommandError(reply.json().get("error", reply.text))
                return reply.json()
        finally:
            await http.aclose()
        raise QosCommandError("no endpoint answered: " + "; ".join(failures))

    return trio.run(main)


def render(answer: dict[str, Any], prefix: str | None = None) -> str:
    """The tenants (or one) as a table, with the space each quota tenant uses."""
    rows = [
        [
            tenant["prefix"],
            *(str(tenant.get(name, "-")) for name, _ in LIMIT_FLAGS),
            str(answer["usage"].get(tenant["prefix"], {}).get("keys", "-")),
            str(answer["usage"].get(tenant["prefix"], {}).get("stored_bytes", "-")),
        ]
        for tenant in answer["tenants"]
        if prefix is None or tenant["prefix"] == prefix
    ]
    widths = [max(len(row[i]) for row in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]
    rule = "+" + "+".join("-" * (width + 2) for width in widths) + "+"

    def line(cells: list[str]) -> str:
        return "|" + "|".join(f" {c.ljust(w)} " for c, w in zip(cells, widths, strict=True)) + "|"

    return "\n".join([rule, line(list(COLUMNS)), rule, *(line(row) for row in rows), rule])


EndpointsOption = Annotated[
    str,
    typer.Option(
        "--endpoints", envvar=["TROIKA_ENDPOINTS", "ETCDCTL_ENDPOINTS"], help="Client endpoints."
    ),
]
WriteOutOption = Annotated[str, typer.Option("-w", "--write-out", help="table or json.")]
PrefixArgument = Annotated[str, typer.Argument(help="The tenant's key prefix.")]


def _done(answer: Any, write_out: str, prefix: str | None = None) -> None:
    typer.echo(json.dumps(answer) if write_out == "json" else render(answer, prefix))


@qos_app.command("set")
def set_command(  # noqa: PLR0917 (Typer takes every flag as a parameter)
    prefix: PrefixArgument,
    read_requests_per_s: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[0][1])] = 0,
    write_requests_per_s: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[1][1])] = 0,
    read_bytes_per_s: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[2][1])] = 0,
    write_bytes_per_s: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[3][1])] = 0,
    watches_max: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[4][1])] = 0,
    keys_max: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[5][1])] = 0,
    stored_bytes_max: Annotated[int, typer.Option(min=0, help=LIMIT_FLAGS[6][1])] = 0,
    endpoints: EndpointsOption = "127.0.0.1:2379",
    write_out: WriteOutOption = "table",
) -> None:
    """Set a tenant's limits (replacing them; a limit not given is none)."""
    limits = {
        "read_requests_per_s": read_requests_per_s,
        "write_requests_per_s": write_requests_per_s,
        "read_bytes_per_s": read_bytes_per_s,
        "write_bytes_per_s": write_bytes_per_s,
        "watches_max": watches_max,
        "keys_max": keys_max,
        "stored_bytes_max": stored_bytes_max,
    }
    _run(endpoints, "POST", "/troika/v1/qos/set", {"prefix": prefix, **limits}, write_out, prefix)


@qos_app.command("delete")
def delete_command(
    prefix: PrefixArgument,
    endpoints: EndpointsOption = "127.0.0.1:2379",
    write_out: WriteOutOption = "table",
) -> None:
    """Remove a tenant (its limits no longer apply)."""
    _run(endpoints, "POST", "/troika/v1/qos/delete", {"prefix": prefix}, write_out)


@qos_app.command("get")
def get_command(
    prefix: PrefixArgument,
    endpoints: EndpointsOption = "127.0.0.1:2379",
    write_out: WriteOutOption = "table",
) -> None:
    """One tenant's limits and space used."""
    _run(endpoints, "GET", "/troika/v1/qos", None, write_out, prefix)


@qos_app.command("list")
def list_command(
    endpoints: EndpointsOption = "127.0.0.1:2379",
    write_out: WriteOutOption = "table",
) -> None:
    """Every tenant's limits and space used."""
    _run(endpoints, "GET", "/troika/v1/qos", None, write_out)


def _run(  # noqa: PLR0917 (the four commands' common tail)
    endpoints: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    write_out: str,
    prefix: str | None = None,
) -> None:
    try:
        answer = call(endpoints, method, path, body)
    except QosCommandError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(1) from None
    if (
        prefix is not None
        and method == "GET"
        and prefix not in {tenant["prefix"] for tenant in answer["tenants"]}
    ):
        typer.echo(f"Error: no tenant {prefix!r}", err=True)
        raise typer.Exit(1)
    _done(answer, write_out, prefix)


def register(app: typer.Typer) -> None:
    """Add ``qos`` to ``app``."""
    app.add_typer(qos_app, name="qos")
