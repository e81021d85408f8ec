"""``troika v2 put/get/del/ls/watch``: a person's client of the v2 keys API.

Output is meant to be read at a glance: values bare, listings one key a line.
Errors print as etcdctl prints them
(``Error:  100: Key not found (/x) [12]``) and exit non-zero.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import trio
import typer

from net.http.errors import HttpError
from net.tcp import TcpNetwork
from net.v2client import EtcdError, V2Client

T = TypeVar("T")

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"
Endpoints = Annotated[
    str,
    typer.Option(
        "--endpoints",
        envvar="TROIKA_ENDPOINTS",
        help="Comma-separated client URLs; the first that answers is used.",
    ),
]


def _run(endpoints: str, action: Callable[[V2Client], Awaitable[T]]) -> T:
    """Run ``action`` against the first endpoint that answers; exit 1 on errors."""

    async def main() -> T:
        last_error: Exception | None = None
        for endpoint in [url.strip() for url in endpoints.split(",") if url.strip()]:
            client = V2Client(TcpNetwork(), endpoint)
            try:
                return await action(client)
            except HttpError as error:
                last_error = error
            finally:
                await client.aclose()
        raise typer.Exit(_fail(f"no endpoint answered: {last_error}"))

    try:
        return trio.run(main)
    except EtcdError as error:
        raise typer.Exit(_fail(str(error))) from None


def _fail(message: str) -> int:
    typer.echo(f"Error:  {message}", err=True)
    return 1


def register(app: typer.Typer) -> None:
    """Add the client commands to ``app``."""

    @app.command("put")
    def put(
        key: str,
        value: str,
        ttl: Annotated[int | None, typer.Option(help="Time to live in seconds.")] = None,
        endpoints: Endpoints = DEFAULT_ENDPOINTS,
    ) -> None:
        """Set a key's value."""
        reply = _run(endpoints, lambda client: client.set(key, value, ttl_s=ttl))
        typer.echo(reply.node.get("value", ""))

    @app.command("get")
    def get(
        key: str,
        quorum: Annotated[bool, typer.Option(help="Linearizable read (ReadIndex).")] = True,
        endpoints: Endpoints = DEFAULT_ENDPOINTS,
    ) -> None:
        """Print a key's value."""
        reply = _run(endpoints, lambda client: client.get(key, quorum=quorum))
        if reply.node.get("dir"):
            raise typer.Exit(_fail(f"{key}: is a directory (use troika ls)"))
        typer.echo(reply.node.get("value", ""))

    @app.command("del")
    def delete(
        key: str,
        recursive: Annotated[
            bool, typer.Option(help="Delete a directory and everything in it.")
        ] = False,
        endpoints: Endpoints = DEFAULT_ENDPOINTS,
    ) -> None:
        """Delete a key (or, with --recursive, a directory)."""
        _run(endpoints, lambda client: client.delete(key, recursive=recursive))
        typer.echo("deleted")

    @app.command("ls")
    def ls(
        key: Annotated[str, typer.Argument()] = "/",
        recursive: Annotated[bool, typer.Option(help="List the whole subtree.")] = False,
        endpoints: Endpoints = DEFAULT_ENDPOINTS,
    ) -> None:
        """List a directory, one key a line (directories end in /)."""
        reply = _run(endpoints, lambda client: client.get(key, recursive=recursive, sorted_=True))
        for line in _listing(reply.node):
            typer.echo(line)

    @app.command("watch")
    def watch(
        key: str,
        recursive: Annotated[bool, typer.Option(help="Watch the whole subtree.")] = False,
        forever: Annotated[bool, typer.Option(help="Keep watching after the first event.")] = False,
        endpoints: Endpoints = DEFAULT_ENDPOINTS,
    ) -> None:
        """Print changes to a key as they happen."""

        async def follow(client: V2Client) -> None:
            async for event in client.watch(key, recursive=recursive):
                node = event.get("node", {})
                typer.echo(
                    f"{event.get('action')} {node.get('key')} {node.get('value', '')}".rstrip()
                )
                sys.stdout.flush()
                if not forever:
                    return

        _run(endpoints, follow)


def _listing(node: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for child in node.get("nodes", []):
        lines.append(child["key"] + ("/" if child.get("dir") else ""))
        lines.extend(_listing(child))
    return lines
