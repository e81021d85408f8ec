"""``troika member|endpoint|alarm|defrag|move-leader``: etcdctl 3.4's cluster and maintenance
commands, over the JSON gateway (HashKV over gRPC, which the 3.4 gateway does not route).

Output is etcdctl's: the simple format by default (comma-separated rows, ``Member ... added
to cluster ...``), ``-w json`` (Go's ``encoding/json`` of the response, or of etcdctl's
per-endpoint records for ``endpoint``), and ``-w table`` where etcdctl draws one (member list,
endpoint status/health/hashkv; elsewhere ``table not supported as output format``, exit 4).
Errors and exit codes are etcdctl's (bad arguments 128, server errors 1).

Pure core: the request parsing and the renderers (:func:`member_lines`, :func:`go_table`,
:func:`status_rows` ...), tested directly. Shell: :func:`register`'s Typer commands.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any

import typer

from net.etcdpb import rpc_pb2
from net.etcdpb.routes import grpc_path
from net.v3.client import V3Client
from troika.ctl import (
    EXIT_BAD_ARGS,
    EXIT_BAD_FEATURE,
    EXIT_ERROR,
    CtlError,
    GlobalOptions,
    ctl_command,
    ctl_group,
    emit,
    go_quote,
    run_client,
)
from troika.v3_commands import go_json, go_struct

UINT64_MAX = 2**64 - 1
HASH_KV_GRPC_PATH = grpc_path("Maintenance", "HashKV")
ALARM_NAMES = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}
SI_SUFFIXES = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
TABLE_FORMATS = ("simple", "json", "table")
PLAIN_FORMATS = ("simple", "json")

# -- pure core: arguments -----------------------------------------------------------------------


def parse_member_id(text: str, *, bad_arg: bool = True) -> int:
    """A member ID as etcdctl takes one (hex, ``strconv.ParseUint(s, 16, 64)``).

    Raises:
        CtlError: exit 128, ``bad member ID arg (...)`` (or Go's bare error for move-leader).
    """
    try:
        value = int(text, 16) if text and all(c in "0123456789abcdefABCDEF" for c in text) else -1
    except ValueError:
        value = -1
    if value < 0:
        cause = f'strconv.ParseUint: parsing "{text}": invalid syntax'
    elif value > UINT64_MAX:
        cause = f'strconv.ParseUint: parsing "{text}": value out of range'
    else:
        return value
    message = f"bad member ID arg ({cause}), expecting ID in Hex" if bad_arg else cause
    raise CtlError(EXIT_BAD_ARGS, message)


def one_member_id(args: Sequence[str]) -> int:
    """The single ``<memberID>`` of remove/update/promote."""
    if len(args) != 1:
        raise CtlError(EXIT_BAD_ARGS, "member ID is not provided")
    return parse_member_id(args[0])


def member_add_request(
    args: Sequence[str], peer_urls: str, learner: bool
) -> rpc_pb2.MemberAddRequest:
    """``member add <name> --peer-urls=... [--learner]``'s request."""
    if not args:
        raise CtlError(EXIT_BAD_ARGS, "member name not provided")
    if len(args) > 1:
        message = "too many arguments"
        for arg in args:
            if arg.lower().startswith("http"):
                message += f", did you mean --peer-urls={arg}"
        raise CtlError(EXIT_BAD_ARGS, message)
    if not peer_urls:
        raise CtlError(EXIT_BAD_ARGS, "member peer urls not provided")
    return rpc_pb2.MemberAddRequest(peerURLs=peer_urls.split(","), isLearner=learner)


def check_format(write_out: str, supported: Sequence[str]) -> None:
    """etcdctl's printers: a format the command does not print exits 4 (after the request:
    etcdctl prints, and so fails, only once the server has answered)."""
    if write_out not in supported:
        raise CtlError(EXIT_BAD_FEATURE, f"{write_out} not supported as output format")


# -- pure core: output ----------------------------------------------------------------------------


def go_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A table as etcdctl's tablewriter draws it: headers upper-cased and centred, cells
    right-aligned, one space of padding, ``+---+`` rules."""
    titles = [header.upper() for header in headers]
    widths = [max(len(cell) for cell in column) for column in zip(titles, *rows, strict=True)]
    rule = "+" + "+".join("-" * (width + 2) for width in widths) + "+"

    def centred(text: str, width: int) -> str:
        gap = width - len(text)
        return " " * (gap // 2) + text + " " * (gap - gap // 2)

    head = "|" + "|".join(f" {centred(t, w)} " for t, w in zip(titles, widths, strict=True)) + "|"
    lines = [rule, head, rule]
    for row in rows:
        lines.append("|" + "|".join(f" {c:>{w}} " for c, w in zip(row, widths, strict=True)) + "|")
    lines.append(rule)
    return lines


def si_bytes(size: int) -> str:
    """``humanize.Bytes``: SI units, one decimal below 10 (``20 kB``, ``1.2 MB``, ``9 B``)."""
    if size < 10:
        return f"{size} B"
    exponent = min(math.floor(math.log(size) / math.log(1000)), len(SI_SUFFIXES) - 1)
    value = math.floor(size / 1000**exponent * 10 + 0.5) / 10
    pattern = "{:.1f} {}" if value < 10 else "{:.0f} {}"
    return pattern.format(value, SI_SUFFIXES[exponent])


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String`` for a short duration (``2.89521ms``, ``1.5s``)."""
    nanos = round(seconds * 1e9)
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("µs", 10**3)):
        if nanos >= scale:
            whole, fraction = divmod(nanos, scale)
            digits = f"{fraction:0{len(str(scale)) - 1}d}".rstrip("0")
            return f"{whole}.{digits}{unit}" if digits else f"{whole}{unit}"
    return f"{nanos}ns"


def member_rows(response: rpc_pb2.MemberListResponse) -> list[list[str]]:
    """``member list``'s rows (a member with no name yet has not started)."""
    return [
        [
            f"{m.ID:x}",
            "started" if m.name else "unstarted",
            m.name,
            ",".join(m.peerURLs),
            ",".join(m.clientURLs),
            str(m.isLearner).lower(),
        ]
        for m in response.members
    ]


MEMBER_HEADERS = ("ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner")
STATUS_HEADERS = (
    "endpoint",
    "ID",
    "version",
    "db size",
    "is leader",
    "is learner",
    "raft term",
    "raft index",
    "raft applied index",
    "errors",
)
HEALTH_HEADERS = ("endpoint", "health", "took", "error")
HASH_HEADERS = ("endpoint", "hash")


def status_rows(statuses: Sequence[tuple[str, rpc_pb2.StatusResponse]]) -> list[list[str]]:
    """``endpoint status``'s rows."""
    return [
        [
            endpoint,
            f"{s.header.member_id:x}",
            s.version,
            si_bytes(s.dbSize),
            str(s.leader == s.header.member_id).lower(),
            str(s.isLearner).lower(),
            str(s.raftTerm),
            str(s.raftIndex),
            str(s.raftAppliedIndex),
            ", ".join(s.errors),
        ]
        for endpoint, s in statuses
    ]


@dataclass(frozen=True, slots=True)
class Health:
    """One endpoint's answer to ``endpoint health`` (etcdctl's ``epHealth``)."""

    endpoint: str
    health: bool
    took: str
    error: str = ""

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"endpoint": self.endpoint, "health": self.health, "took": self.took}
        return out | ({"error": self.error} if self.error else {})


def rows_output(
    write_out: str, headers: Sequence[str], rows: list[list[str]], records: list[Any]
) -> list[str]:
    """The simple (``, ``-joined rows), table or json (``records``) output of a listing."""
    if write_out == "json":
        return [json.dumps(records, separators=(",", ":"), ensure_ascii=False)]
    if write_out == "table":
        return go_table(headers, rows)
    return [", ".join(row) for row in rows]


def alarm_lines(response: rpc_pb2.AlarmResponse, write_out: str) -> list[str]:
    """``alarm list|disarm``'s output: each alarm in protobuf's compact text (``%+v``)."""
    if write_out == "json":
        return [go_json(response).decode()]
    return [
        f"memberID:{a.memberID} alarm:{ALARM_NAMES.get(a.alarm, a.alarm)} " for a in response.alarms
    ]


def member_change_line(verb: str, member_id: int, header: rpc_pb2.ResponseHeader) -> str:
    """``Member <id> removed from|updated in|promoted in cluster <id>`` (``%16x``)."""
    return f"Member {member_id:16x} {verb} cluster {header.cluster_id:16x}"


def member_add_lines(
    response: rpc_pb2.MemberAddResponse, name: str, peer_urls: str, write_out: str
) -> list[str]:
    """``member add``'s output; the simple one ends with the new member's etcd variables."""
    if write_out == "json":
        return [go_json(response).decode()]
    new_id = response.member.ID
    conf = [
        f"{name if new_id == m.ID else m.name}={url}"
        for m in response.members
        for url in m.peerURLs
    ]
    return [
        f"Member {new_id:16x} added to cluster {response.header.cluster_id:16x}",
        "",
        f"ETCD_NAME={go_quote(name)}",
        f"ETCD_INITIAL_CLUSTER={go_quote(','.join(conf))}",
        f"ETCD_INITIAL_ADVERTISE_PEER_URLS={go_quote(peer_urls)}",
        'ETCD_INITIAL_CLUSTER_STATE="existing"',
    ]


# -- the shell ----------------------------------------------------------------------------------


def _endpoints(options: GlobalOptions) -> list[str]:
    return [part.strip() for part in options.endpoints.split(",") if part.strip()]


def _one(options: GlobalOptions, endpoint: str) -> GlobalOptions:
    return replace(options, endpoints=endpoint)


def cluster_endpoints(options: GlobalOptions, cluster: bool) -> list[str]:
    """The endpoints to visit: ``--endpoints``, or with ``--cluster`` every member's client
    URLs from the member list."""
    if not cluster:
        return _endpoints(options)

    def describe(message: str) -> str:
        return f"failed to fetch endpoints from etcd cluster member list: {message}"

    listed = run_client(options, lambda client: client.member_list(), describe=describe)
    return [url for member in listed.members for url in member.clientURLs]


async def _hash_kv(client: V3Client, revision: int) -> rpc_pb2.HashKVResponse:
    return await client.grpc_unary(
        client.endpoints[0],
        HASH_KV_GRPC_PATH,
        rpc_pb2.HashKVRequest(revision=revision),
        rpc_pb2.HashKVResponse,
    )


def _each(
    options: GlobalOptions,
    endpoints: Sequence[str],
    action: Callable[[V3Client], Any],
    failure: str,
) -> tuple[list[tuple[str, Any]], CtlError | None]:
    """``action`` on each endpoint alone; failures reported on stderr as etcdctl words them."""
    answers: list[tuple[str, Any]] = []
    last: CtlError | None = None
    for endpoint in endpoints:
        try:
            answers.append((endpoint, run_client(_one(options, endpoint), action)))
        except CtlError as error:
            typer.echo(failure.format(endpoint=endpoint, error=error.message), err=True)
            last = error
    return answers, last


def _lines(lines: list[str]) -> None:
    emit([line.encode() for line in lines])


ClusterOption = Annotated[
    bool, typer.Option("--cluster", help="use all endpoints from the cluster member list")
]


CLUSTER_META = "troika.v3_ops.cluster"
"""Where ``troika endpoint --cluster <command>`` leaves the group's --cluster (ctx.meta)."""


def _member_group(options: GlobalOptions) -> None:
    """Membership related commands."""


def _endpoint_group(
    options: GlobalOptions, *, ctx: typer.Context, cluster: ClusterOption = False
) -> None:
    """Endpoint related commands."""
    ctx.meta[CLUSTER_META] = cluster


def _alarm_group(options: GlobalOptions) -> None:
    """Alarm related commands."""


def register(app: typer.Typer, member_app: typer.Typer, endpoint_app: typer.Typer) -> None:
    """Add ``member ...``, ``endpoint ...``, ``alarm ...``, ``defrag`` and ``move-leader``."""
    member_app.callback()(ctl_group(_member_group))
    endpoint_app.callback()(ctl_group(_endpoint_group))
    _register_member(member_app)
    _register_endpoint(endpoint_app)
    alarm_app = typer.Typer(no_args_is_help=True, callback=ctl_group(_alarm_group))
    app.add_typer(alarm_app, name="alarm")
    _register_alarm(alarm_app)
    _register_maintenance(app)


def _register_member(member_app: typer.Typer) -> None:
    @ctl_command(member_app, "list")
    def member_list(
        options: GlobalOptions,
    ) -> None:
        """Lists all members in the cluster."""
        check_format(options.write_out, TABLE_FORMATS)
        response = run_client(options, lambda client: client.member_list())
        if options.write_out == "json":
            _lines([go_json(response).decode()])
        else:
            _lines(rows_output(options.write_out, MEMBER_HEADERS, member_rows(response), []))

    @ctl_command(member_app, "add")
    def member_add(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(help="<memberName>")] = None,
        peer_urls: Annotated[
            str, typer.Option("--peer-urls", help="comma separated peer URLs for the new member.")
        ] = "",
        learner: Annotated[
            bool, typer.Option("--learner", help="indicates if the new member is raft learner")
        ] = False,
    ) -> None:
        """Adds a member into the cluster."""
        request = member_add_request(args or [], peer_urls, learner)
        response = run_client(options, lambda client: client.member_add(request))
        check_format(options.write_out, PLAIN_FORMATS)
        _lines(member_add_lines(response, (args or [""])[0], peer_urls, options.write_out))

    def change(
        options: GlobalOptions,
        args: list[str] | None,
        verb: str,
        send: Callable[[V3Client, int], Any],
    ) -> None:
        member_id = one_member_id(args or [])
        response = run_client(options, lambda client: send(client, member_id))
        check_format(options.write_out, PLAIN_FORMATS)
        if options.write_out == "json":
            _lines([go_json(response).decode()])
        else:
            _lines([member_change_line(verb, member_id, response.header)])

    @ctl_command(member_app, "remove")
    def member_remove(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(help="<memberID>")] = None,
    ) -> None:
        """Removes a member from the cluster."""
        change(
            options,
            args,
            "removed from",
            lambda client, member_id: client.member_remove(
                rpc_pb2.MemberRemoveRequest(ID=member_id)
            ),
        )

    @ctl_command(member_app, "update")
    def member_update(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(help="<memberID>")] = None,
        peer_urls: Annotated[
            str, typer.Option("--peer-urls", help="comma separated peer URLs for the member.")
        ] = "",
    ) -> None:
        """Updates a member in the cluster."""
        if args is not None and len(args) == 1 and not peer_urls:
            one_member_id(args)
            raise CtlError(EXIT_BAD_ARGS, "member peer urls not provided")
        change(
            options,
            args,
            "updated in",
            lambda client, member_id: client.member_update(
                rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=peer_urls.split(","))
            ),
        )

    @ctl_command(member_app, "promote")
    def member_promote(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(help="<memberID>")] = None,
    ) -> None:
        """Promotes a non-voting member in the cluster."""
        change(
            options,
            args,
            "promoted in",
            lambda client, member_id: client.member_promote(
                rpc_pb2.MemberPromoteRequest(ID=member_id)
            ),
        )


def _register_endpoint(endpoint_app: typer.Typer) -> None:
    @ctl_command(endpoint_app, "status")
    def endpoint_status(
        options: GlobalOptions,
        *,
        ctx: typer.Context,
        cluster: ClusterOption = False,
    ) -> None:
        """Prints out the status of endpoints specified in `--endpoints` flag."""
        check_format(options.write_out, TABLE_FORMATS)
        cluster = cluster or bool(ctx.meta.get(CLUSTER_META))
        targets = cluster_endpoints(options, cluster)
        failure = "Failed to get the status of endpoint {endpoint} ({error})"
        answers, last = _each(options, targets, lambda client: client.status(), failure)
        records = [{"Endpoint": e, "Status": go_struct(s)} for e, s in answers]
        _lines(rows_output(options.write_out, STATUS_HEADERS, status_rows(answers), records))
        if last is not None:
            raise typer.Exit(EXIT_ERROR)

    @ctl_command(endpoint_app, "hashkv")
    def endpoint_hashkv(
        options: GlobalOptions,
        *,
        ctx: typer.Context,
        rev: Annotated[
            int, typer.Option("--rev", help="maximum revision to hash (default: all revisions)")
        ] = 0,
        cluster: ClusterOption = False,
    ) -> None:
        """Prints the KV history hash for each endpoint in --endpoints."""
        check_format(options.write_out, TABLE_FORMATS)
        cluster = cluster or bool(ctx.meta.get(CLUSTER_META))
        targets = cluster_endpoints(options, cluster)
        failure = "Failed to get the hash of endpoint {endpoint} ({error})"
        answers, last = _each(options, targets, lambda client: _hash_kv(client, rev), failure)
        records = [{"Endpoint": e, "HashKV": go_struct(h)} for e, h in answers]
        rows = [[endpoint, str(answer.hash)] for endpoint, answer in answers]
        _lines(rows_output(options.write_out, HASH_HEADERS, rows, records))
        if last is not None:
            raise last

    @ctl_command(endpoint_app, "health")
    def endpoint_health(
        options: GlobalOptions,
        *,
        ctx: typer.Context,
        cluster: ClusterOption = False,
    ) -> None:
        """Checks the healthiness of endpoints specified in `--endpoints` flag."""
        check_format(options.write_out, TABLE_FORMATS)
        cluster = cluster or bool(ctx.meta.get(CLUSTER_META))
        targets = cluster_endpoints(options, cluster)
        checks = [_health(_one(options, endpoint), endpoint) for endpoint in targets]
        if options.write_out == "simple":
            for check in checks:
                typer.echo(health_line(check), err=True)
        else:
            rows = [[c.endpoint, str(c.health).lower(), c.took, c.error] for c in checks]
            records = [check.record() for check in checks]
            _lines(rows_output(options.write_out, HEALTH_HEADERS, rows, records))
        if any(check.error for check in checks):
            raise CtlError(EXIT_ERROR, "unhealthy cluster")


def health_line(check: Health) -> str:
    """``endpoint health``'s simple line (etcdctl writes it to stderr)."""
    if not check.error:
        return f"{check.endpoint} is healthy: successfully committed proposal: took = {check.took}"
    return f"{check.endpoint} is unhealthy: failed to commit proposal: {check.error}"


def _health(options: GlobalOptions, endpoint: str) -> Health:
    """etcdctl's check: a linearizable get of ``health`` (permission denied counts as healthy)."""
    start = time.monotonic()
    request = rpc_pb2.RangeRequest(key=b"health")
    try:
        run_client(options, lambda client: client.range(request))
    except CtlError as error:
        took = go_duration(time.monotonic() - start)
        if "permission denied" in error.message:
            return Health(endpoint, True, took)
        return Health(endpoint, False, took, error.message)
    return Health(endpoint, True, go_duration(time.monotonic() - start))


def _register_alarm(alarm_app: typer.Typer) -> None:
    @ctl_command(alarm_app, "list")
    def alarm_list(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(hidden=True)] = None,
    ) -> None:
        """Lists all alarms."""
        if args:
            raise CtlError(EXIT_BAD_ARGS, "alarm list command accepts no arguments")
        request = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET)
        response = run_client(options, lambda client: client.alarm(request))
        check_format(options.write_out, PLAIN_FORMATS)
        _lines(alarm_lines(response, options.write_out))

    @ctl_command(alarm_app, "disarm")
    def alarm_disarm(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(hidden=True)] = None,
    ) -> None:
        """Disarms all alarms."""
        if args:
            raise CtlError(EXIT_BAD_ARGS, "alarm disarm command accepts no arguments")
        response = run_client(options, disarm_all)
        check_format(options.write_out, PLAIN_FORMATS)
        _lines(alarm_lines(response, options.write_out))


async def disarm_all(client: V3Client) -> rpc_pb2.AlarmResponse:
    """clientv3's ``AlarmDisarm`` of no alarm in particular: list the alarms, deactivate each,
    and answer the deactivated ones (without a header, as clientv3 builds that answer)."""
    listed = await client.alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET))
    disarmed = rpc_pb2.AlarmResponse()
    for alarm in listed.alarms:
        request = rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=alarm.memberID, alarm=alarm.alarm
        )
        disarmed.alarms.extend((await client.alarm(request)).alarms)
    return disarmed


def _register_maintenance(app: typer.Typer) -> None:
    @ctl_command(app, "defrag")
    def defrag(
        options: GlobalOptions,
        *,
        ctx: typer.Context,
        cluster: ClusterOption = False,
    ) -> None:
        """Defragments the storage of the etcd members with given endpoints."""
        cluster = cluster or bool(ctx.meta.get(CLUSTER_META))
        targets = cluster_endpoints(options, cluster)
        failure = "Failed to defragment etcd member[{endpoint}] ({error})"
        failures = 0
        for endpoint in targets:
            _answers, last = _each(options, [endpoint], lambda c: c.defragment(), failure)
            if last is None:
                _lines([f"Finished defragmenting etcd member[{endpoint}]"])
            failures += last is not None
        if failures:
            raise typer.Exit(EXIT_ERROR)

    @ctl_command(app, "move-leader")
    def move_leader(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(help="<transferee-member-id>")] = None,
    ) -> None:
        """Transfers leadership to another etcd cluster member."""
        if len(args or []) != 1:
            raise CtlError(EXIT_BAD_ARGS, "move-leader command needs 1 argument")
        target = parse_member_id((args or [""])[0], bad_arg=False)
        leader_id, response = _move_leader(options, target)
        check_format(options.write_out, PLAIN_FORMATS)
        if options.write_out == "json":
            _lines([go_json(response).decode()])
        else:
            _lines([f"Leadership transferred from {leader_id:x} to {target:x}"])


def _move_leader(options: GlobalOptions, target: int) -> tuple[int, rpc_pb2.MoveLeaderResponse]:
    """Find the leader among the endpoints (by each one's status), and ask it to transfer."""
    endpoints = _endpoints(options)

    async def transfer(client: V3Client) -> rpc_pb2.MoveLeaderResponse:
        return await client.move_leader(rpc_pb2.MoveLeaderRequest(targetID=target))

    for endpoint in endpoints:
        single = _one(options, endpoint)
        status = run_client(single, lambda client: client.status())
        if status.header.member_id == status.leader:
            response = run_client(single, transfer)
            return status.leader, response
    raise CtlError(EXIT_BAD_ARGS, f"no leader endpoint given at [{' '.join(endpoints)}]")


__all__ = [
    "Health",
    "alarm_lines",
    "go_duration",
    "go_table",
    "member_add_lines",
    "member_add_request",
    "member_rows",
    "parse_member_id",
    "register",
    "si_bytes",
    "status_rows",
]
