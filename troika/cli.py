"""The `troika` command line: one Typer app, with a sub-app per area as each becomes real.

Only commands that work are registered here. The planned sub-apps (see docs/architecture.md)
are `serve` (run one member), `cluster` (a local multi-process cluster, `troika cluster up`),
`sim` (deterministic simulations from a seed) and `bench` (benchmarks); each is added with
`app.add_typer(...)` when the issue that builds it lands.
"""

from typing import Annotated

import typer

from troika import __version__

app = typer.Typer(
    name="troika",
    help="troika: an etcd-compatible Raft key-value store on Trio, and its simulator.",
    no_args_is_help=True,
    add_completion=False,
)


def _version_line() -> str:
    return f"troika {__version__}"


def _print_version_and_exit(requested: bool) -> None:
    if requested:
        typer.echo(_version_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_print_version_and_exit,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """troika: an etcd-compatible Raft key-value store on Trio, and its simulator."""


@app.command("version")
def version_command() -> None:
    """Print the version."""
    typer.echo(_version_line())


def main() -> None:
    """Entry point of the `troika` console script."""
    app(prog_name="troika")
