"""The `troika` command line: one Typer app, with a sub-app per area as each becomes real.

Only commands that work are registered here. The planned sub-apps (see docs/architecture.md)
are `serve` (run one member), `cluster` (a local multi-process cluster, `troika cluster up`),
`sim` (deterministic simulations from a seed) and `bench` (benchmarks); each is added with
`app.add_typer(...)` when the issue that builds it lands.
"""

import contextlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import trio
import typer

from troika import (
    __version__,
    auth_commands,
    bench_commands,
    client_commands,
    inspect_commands,
    qos_commands,
    sim_commands,
    snapshot_commands,
    v3_commands,
    v3_lease_commands,
    v3_ops_commands,
    v3_watch_commands,
)
from troika.ctl import GlobalOptions, ctl_group, go_bool_args

app = typer.Typer(
    name="troika",
    help="troika: an etcd-compatible Raft key-value store on Trio, and its simulator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_line() -> str:
    return f"troika {__version__}"


def _print_version_and_exit(requested: bool) -> None:
    if requested:
        typer.echo(_version_line())
        raise typer.Exit()


def _root(
    options: GlobalOptions,
    *,
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
    """troika: an etcd-compatible Raft key-value store on Trio, and its simulator.

    put/get/del/txn/compaction are etcdctl's v3 commands (ETCDCTL_API=3); `troika v2 ...`
    (or ETCDCTL_API=2 / TROIKA_API=2) runs the v2 ones. etcdctl's global flags (and their
    ETCDCTL_* variables) may come before the command or after it.
    """


app.callback()(ctl_group(_root, root=True))


@app.command("version")
def version_command() -> None:
    """Print the version."""
    typer.echo(_version_line())


LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
"""etcd's --log-level names and the logging levels they become."""


def _configure_logging(level: str, output: str = "default") -> None:
    logging.basicConfig(
        level=LOG_LEVELS.get(level, logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stdout if output == "stdout" else sys.stderr,
    )


@app.command(
    "serve",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def serve_command(ctx: typer.Context) -> None:
    """Run one member; etcd 3.4's flags and ETCD_* variables (troika serve --help)."""
    run_serve(list(ctx.args), os.environ)


def run_serve(
    argv: list[str], environment: Mapping[str, str], instruments: Sequence[trio.abc.Instrument] = ()
) -> None:
    """Parse etcd's flags from ``argv`` and ``environment`` and run a member until signalled;
    exits as etcd does on a refused command line (2) or configuration (1). ``instruments``
    watch the member's run loop (``bench.step_count`` counts its task steps with one)."""
    from actors.bootstrap import BootstrapError
    from net.tls import TlsConfigError
    from troika import serve_flags
    from troika.serve import ServeOptions, serve_until_signalled

    try:
        flags = serve_flags.parse(argv, environment)
    except serve_flags.FlagError as error:
        _serve_exit(error)
    if flags.help_requested:
        typer.echo(serve_flags.help_text(), nl=False)
        raise typer.Exit()
    if flags.flag("version"):
        typer.echo(_version_line())
        raise typer.Exit()
    level = "debug" if flags.flag("debug") else flags.text("log-level")
    output = flags.text("log-outputs")
    _configure_logging(level, output if output != "default" else flags.text("log-output"))
    for note in flags.notes:
        logging.getLogger("troika.serve").info("%s", note)
    options = ServeOptions.from_flags(flags)
    try:
        options.member_config()
        options.service_limits()
        options.network()
    except ValueError as error:
        _serve_exit(serve_flags.FlagError(str(error), serve_flags.EXIT_USAGE))
    except (TlsConfigError, BootstrapError) as error:
        _serve_exit(serve_flags.FlagError(str(error)))
    trio.run(serve_until_signalled, options, instruments=instruments)


def _serve_exit(error: Exception) -> NoReturn:
    from troika.serve_flags import FlagError

    assert isinstance(error, FlagError)
    prefix = "error verifying flags, " if error.exit_code == 1 else ""
    suffix = ". See 'troika serve --help'." if error.exit_code == 1 else ""
    typer.echo(f"troika serve: {prefix}{error.message}{suffix}", err=True)
    raise typer.Exit(error.exit_code)


cluster_app = typer.Typer(help="A local cluster of member processes.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("up")
def cluster_up(
    size: Annotated[int, typer.Option("--size", min=1, max=9, help="How many members.")] = 3,
    base_port: Annotated[
        int,
        typer.Option(
            "--base-port", help="Member i serves clients on BASE+10i, peers on BASE+10i+1."
        ),
    ] = 2379,
    data_dir: Annotated[
        str, typer.Option("--data-dir", help="Where the members keep their data.")
    ] = "troika-data",
    fresh: Annotated[
        bool, typer.Option("--fresh/--keep", help="Wipe earlier data first, or keep it.")
    ] = False,
) -> None:
    """Start SIZE members on loopback and stop them all on Ctrl-C."""
    from troika.cluster import ClusterLayout, run_cluster

    layout = ClusterLayout(size=size, base_port=base_port, data_dir=Path(data_dir))
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run_cluster, layout, fresh)


app.add_typer(sim_commands.sim_app, name="sim")
app.command("bench")(bench_commands.bench_command)

member_app = typer.Typer(help="Cluster membership.", no_args_is_help=True)
endpoint_app = typer.Typer(help="Endpoint health and status.", no_args_is_help=True)
v2_app = typer.Typer(
    help="The v2 keys API's commands (what ETCDCTL_API=2 or TROIKA_API=2 selects).",
    no_args_is_help=True,
)
app.add_typer(member_app, name="member")
app.add_typer(endpoint_app, name="endpoint")
app.add_typer(v2_app, name="v2")
v3_commands.register(app)
v3_lease_commands.register(app)
v3_watch_commands.register(app)
snapshot_commands.register(app)
inspect_commands.register(app)  # issue 16: inspect hot/usage, del-prefix
qos_commands.register(app)  # issue 16: per-tenant QoS limits
client_commands.register(v2_app)
v3_ops_commands.register(app, member_app, endpoint_app)  # issue 12 item 8
auth_commands.register(app)  # issue 12 items 4, 8: user, role, auth


def ctl_argv(argv: list[str], environ: Mapping[str, str]) -> list[str]:
    """The arguments as the Typer app takes them: the API version's commands, watch's exec
    command marked, and pflag's ``--flag=false`` spelled as Typer's ``--no-flag``.

    Raises:
        CtlError: an unsupported ETCDCTL_API.
    """
    selected = v3_commands.select_api(argv, environ)
    if selected[:1] == ["serve"]:
        return selected
    return go_bool_args(v3_watch_commands.mark_exec_args(selected))


def main() -> None:
    """Entry point of the `troika` console script (``ETCDCTL_API=2`` picks the v2 commands)."""
    try:
        argv = ctl_argv(sys.argv[1:], os.environ)
    except v3_commands.CtlError as error:
        typer.echo(error.message, err=True)
        sys.exit(error.exit_code)
    if argv[:1] == ["serve"]:
        # etcd's flags exactly as given (Click would take a "--" for itself)
        try:
            run_serve(argv[1:], os.environ)
        except typer.Exit as done:
            sys.exit(done.exit_code)
        return
    app(args=argv, prog_name="troika")
