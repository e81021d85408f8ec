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
from pathlib import Path
from typing import Annotated

import trio
import typer

from troika import (
    __version__,
    bench_commands,
    client_commands,
    sim_commands,
    v3_commands,
    v3_lease_commands,
    v3_watch_commands,
)

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


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_print_version_and_exit,
            is_eager=True,
        ),
    ] = False,
    endpoints: Annotated[
        str,
        typer.Option(
            "--endpoints",
            envvar=["TROIKA_ENDPOINTS", "ETCDCTL_ENDPOINTS"],
            help="Client commands: endpoints (host:port or URLs, comma separated).",
        ),
    ] = v3_commands.DEFAULT_ENDPOINTS,
    dial_timeout: Annotated[
        str, typer.Option("--dial-timeout", help="Client commands: dial timeout.")
    ] = v3_commands.DEFAULT_DIAL_TIMEOUT,
    command_timeout: Annotated[
        str, typer.Option("--command-timeout", help="Client commands: request timeout.")
    ] = v3_commands.DEFAULT_COMMAND_TIMEOUT,
    write_out: Annotated[
        str, typer.Option("-w", "--write-out", help="Client commands: simple or json.")
    ] = "simple",
    hex_: Annotated[
        bool, typer.Option("--hex", help="Client commands: print keys and values as hex.")
    ] = False,
) -> None:
    """troika: an etcd-compatible Raft key-value store on Trio, and its simulator.

    put/get/del/txn/compaction are etcdctl's v3 commands (ETCDCTL_API=3); `troika v2 ...`
    (or ETCDCTL_API=2 / TROIKA_API=2) runs the v2 ones. etcdctl's global flags may come
    before the command or after it.
    """
    v3_commands.store_global_options(
        ctx,
        endpoints=endpoints,
        dial_timeout=dial_timeout,
        command_timeout=command_timeout,
        write_out=write_out,
        hex_=hex_,
    )


@app.command("version")
def version_command() -> None:
    """Print the version."""
    typer.echo(_version_line())


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _urls(text: str) -> tuple[str, ...]:
    return tuple(url.strip() for url in text.split(",") if url.strip())


@app.command("serve")
def serve_command(
    name: Annotated[
        str, typer.Option("--name", help="Human-readable name for this member.")
    ] = "default",
    data_dir: Annotated[
        str, typer.Option("--data-dir", help="Path to the data directory (default NAME.etcd).")
    ] = "",
    listen_client_urls: Annotated[
        str, typer.Option("--listen-client-urls")
    ] = "http://localhost:2379",
    advertise_client_urls: Annotated[
        str, typer.Option("--advertise-client-urls")
    ] = "http://localhost:2379",
    listen_peer_urls: Annotated[str, typer.Option("--listen-peer-urls")] = "http://localhost:2380",
    initial_advertise_peer_urls: Annotated[
        str, typer.Option("--initial-advertise-peer-urls")
    ] = "http://localhost:2380",
    initial_cluster: Annotated[
        str, typer.Option("--initial-cluster", help="name=peerURL,... of every founding member.")
    ] = "",
    initial_cluster_state: Annotated[
        str, typer.Option("--initial-cluster-state", help="new or existing.")
    ] = "new",
    initial_cluster_token: Annotated[str, typer.Option("--initial-cluster-token")] = "etcd-cluster",
    heartbeat_interval: Annotated[int, typer.Option("--heartbeat-interval", help="ms")] = 100,
    election_timeout: Annotated[int, typer.Option("--election-timeout", help="ms")] = 1000,
    snapshot_count: Annotated[int, typer.Option("--snapshot-count")] = 10_000,
    max_txn_ops: Annotated[
        int, typer.Option("--max-txn-ops", help="Most operations in one v3 txn.")
    ] = 128,
    max_request_bytes: Annotated[
        int, typer.Option("--max-request-bytes", help="Largest v3 request proposed, in bytes.")
    ] = 1_572_864,
    watch_progress_notify_interval: Annotated[
        str,
        typer.Option(
            "--experimental-watch-progress-notify-interval",
            help="How often idle v3 watchers with progress_notify hear of the revision.",
        ),
    ] = "10m0s",
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Run one member (flags as etcd names them)."""
    from troika.serve import ServeOptions, serve_until_signalled
    from troika.v3_commands import CtlError, parse_go_duration

    _configure_logging(log_level)
    try:
        progress_interval_s = parse_go_duration(watch_progress_notify_interval)
    except CtlError as error:
        typer.echo(f"troika serve: {error}", err=True)
        raise typer.Exit(2) from None
    options = ServeOptions(
        name=name,
        data_dir=data_dir,
        listen_client_urls=_urls(listen_client_urls),
        advertise_client_urls=_urls(advertise_client_urls),
        listen_peer_urls=_urls(listen_peer_urls),
        initial_advertise_peer_urls=_urls(initial_advertise_peer_urls),
        initial_cluster=initial_cluster,
        initial_cluster_state=initial_cluster_state,
        initial_cluster_token=initial_cluster_token,
        heartbeat_interval_ms=heartbeat_interval,
        election_timeout_ms=election_timeout,
        snapshot_count=snapshot_count,
        max_txn_ops=max_txn_ops,
        max_request_bytes=max_request_bytes,
        watch_progress_notify_interval_s=progress_interval_s,
    )
    try:
        options.member_config()
        options.service_limits()
    except ValueError as error:
        typer.echo(f"troika serve: {error}", err=True)
        raise typer.Exit(2) from None
    trio.run(serve_until_signalled, options)


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
client_commands.register(v2_app)
client_commands.register_cluster_commands(member_app, endpoint_app)


def main() -> None:
    """Entry point of the `troika` console script (``ETCDCTL_API=2`` picks the v2 commands)."""
    try:
        argv = v3_watch_commands.mark_exec_args(v3_commands.select_api(sys.argv[1:], os.environ))
    except v3_commands.CtlError as error:
        typer.echo(error.message, err=True)
        sys.exit(error.exit_code)
    app(args=argv, prog_name="troika")
