"""``troika watch``, ``troika lock`` and ``troika elect``: etcdctl 3.4's long-running commands.

- ``watch [--prefix] [--rev N] [--prev-kv] <key> [range_end]`` prints each event as etcdctl
  does (``PUT``/``DELETE``, the previous pair with ``--prev-kv``, then the pair); ``-w json``
  prints Go's ``encoding/json`` of clientv3's WatchResponse (``{"Header":...,"Events":[...],
  "CompactRevision":0,"Canceled":false,"Created":false}``). A watch the server cancels (a
  compacted revision) prints ``watch was canceled (<reason>)`` on stderr and ends with
  ``Error: watch is canceled by the server``, exit 5. ``watch -i`` reads ``watch ...`` and
  ``progress`` lines from stdin, as etcdctl's interactive mode.
- ``lock [--ttl N] <name> [command ...]`` takes etcdctl's lock (the concurrency package's
  mutex, see :mod:`troika.v3_concurrency`), prints the lock's key (a ``get`` of it) and holds
  it until SIGINT or SIGTERM; with a command, runs it holding the lock (``ETCD_LOCK_KEY`` and
  ``ETCD_LOCK_REV`` in its environment) and releases the lock when it exits.
- ``elect <name> <proposal>`` campaigns, prints the leader key once elected and resigns on
  SIGINT or SIGTERM; ``elect -l <name>`` prints each leader and proclamation in order.

The pure parts (requests, renderers) are functions; the shells run one Trio run each.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar

import trio
import typer

from net.etcdpb import kv_pb2, rpc_pb2
from net.v3.client import WATCH_GRPC_PATH, V3Client
from net.v3.errors import RpcError
from troika.ctl import (
    EXIT_BAD_ARGS,
    EXIT_ERROR,
    EXIT_INVALID_INPUT,
    CtlError,
    GlobalOptions,
    ctl_command,
    emit,
    go_quote,
    run_client,
    to_bytes,
)
from troika.v3_commands import (
    Display,
    argify,
    go_struct,
    parse_flags,
    prefix_range_end,
    render,
    simple_kv,
)
from troika.v3_concurrency import (
    Held,
    LostWatcher,
    Session,
    campaign,
    is_progress_notify,
    lock,
    observe,
    open_session,
    resign,
    unlock,
    watch,
    watch_error,
)
from troika.v3_lease_commands import check_format

T = TypeVar("T")

EXIT_INTERRUPTED = 5
"""etcdctl's ExitInterrupted: a watch the server cancelled."""
LOCK_TTL_SECONDS = 10
"""``lock --ttl``'s default."""
CONTEXT_CANCELED = "context canceled"
"""What etcdctl prints when a signal interrupts a lock or a campaign still waiting."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# -- watch -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """``watch``'s flags."""

    prefix: bool = False
    rev: int = 0
    prev_kv: bool = False


def watch_request(args: Sequence[bytes], options: WatchOptions) -> rpc_pb2.WatchCreateRequest:
    """The WatchCreateRequest of ``etcdctl watch <args>``.

    As etcdctl, a third argument and beyond are ignored (only two make a range).

    Raises:
        CtlError: no key, or a range end with ``--prefix`` (exit 128).
    """
    if not args:
        raise CtlError(EXIT_BAD_ARGS, "bad number of arguments")
    key, end = args[0], b""
    if len(args) == 2:
        if options.prefix:
            raise CtlError(EXIT_BAD_ARGS, "`range_end` and `--prefix` are mutually exclusive")
        end = args[1]
    if options.prefix:
        key, end = (b"\x00", b"\x00") if not key else (key, prefix_range_end(key))
    return rpc_pb2.WatchCreateRequest(
        key=key, range_end=end, start_revision=options.rev, prev_kv=options.prev_kv
    )


def render_watch(response: rpc_pb2.WatchResponse, display: Display) -> list[bytes]:
    """A watch response's lines: each event's type, previous pair and pair (simple), or
    clientv3's WatchResponse struct (json; every field, events as ``[]`` when none)."""
    check_format(display.write_out)
    if display.write_out == "json":
        document = {
            "Header": go_struct(response.header),
            "Events": [go_struct(event) for event in response.events],
            "CompactRevision": response.compact_revision,
            "Canceled": response.canceled,
            "Created": response.created,
        }
        return [json.dumps(document, separators=(",", ":")).encode()]
    lines: list[bytes] = []
    for event in response.events:
        lines.append(b"DELETE" if event.type == event.DELETE else b"PUT")
        if event.HasField("prev_kv"):
            lines += simple_kv(event.prev_kv, display)
        lines += simple_kv(event.kv, display)
    return lines


def _print_watch(
    display: Display, command: Sequence[str] = ()
) -> Callable[[rpc_pb2.WatchResponse], Awaitable[bool]]:
    """etcdctl's ``printWatchCh`` for one watcher (never stops it): print each response,
    then run ``command`` once per event, if there is one.

    Raises:
        CtlError: the command failed (etcdctl prints ``command [...] error (...)`` and exits
            1).
    """

    async def on_response(response: rpc_pb2.WatchResponse) -> bool:
        if response.canceled:
            typer.echo(f"watch was canceled ({watch_error(response)})", err=True)
        if is_progress_notify(response):
            typer.echo(f"progress notify: {response.header.revision}")
        emit(render_watch(response, display))
        for event in response.events if command else ():
            failure = await run_holding(
                command, {**os.environ, **event_environment(response, event)}
            )
            if failure is not None:
                listed = " ".join(go_quote(arg) for arg in command)
                typer.echo(f"command [{listed}] error ({failure})", err=True)
                raise typer.Exit(EXIT_ERROR)
        return False

    return on_response


def event_environment(response: rpc_pb2.WatchResponse, event: kv_pb2.Event) -> dict[str, str]:
    """What ``watch ... -- <command>`` adds to the command's environment for one event (Go's
    ``%q`` of the type, key and value)."""
    return {
        "ETCD_WATCH_REVISION": str(response.header.revision),
        "ETCD_WATCH_EVENT_TYPE": go_quote("DELETE" if event.type == event.DELETE else "PUT"),
        "ETCD_WATCH_KEY": go_quote(event.kv.key.decode("utf-8", errors="surrogateescape")),
        "ETCD_WATCH_VALUE": go_quote(event.kv.value.decode("utf-8", errors="surrogateescape")),
    }


async def _watch_once(
    client: V3Client,
    request: rpc_pb2.WatchCreateRequest,
    display: Display,
    command: Sequence[str] = (),
) -> None:
    """Print a watch until the server cancels it.

    Raises:
        CtlError: ``watch is canceled by the server`` (exit 5) at the end.
    """
    await watch(client, request, _print_watch(display, command))
    raise CtlError(EXIT_INTERRUPTED, "watch is canceled by the server")


EXEC_COUNT_OPTION = "--exec-args-count"
"""Hidden: how many of ``watch``'s arguments came after ``--`` (Click drops the ``--``)."""


def mark_exec_args(argv: Sequence[str]) -> list[str]:
    """``troika watch k -- cmd a`` as ``troika watch k --exec-args-count 2 -- cmd a``: what
    follows ``--`` is the command to run per event, as etcdctl reads it from ``os.Args``."""
    if "watch" not in argv:
        return list(argv)
    start = argv.index("watch")
    if "--" not in argv[start:]:
        return list(argv)
    separator = argv.index("--", start)
    count = len(argv) - separator - 1
    return [*argv[:separator], EXEC_COUNT_OPTION, str(count), *argv[separator:]]


def split_exec_args(
    args: Sequence[str], exec_count: int | None, environ: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """``watch``'s key arguments and command, with ``ETCDCTL_WATCH_KEY`` and
    ``ETCDCTL_WATCH_RANGE_END`` taken as the key and range end, as etcdctl does.

    Raises:
        CtlError: exit 128 with etcdctl's message for ``--`` without a command, a key given
            both ways, or a range end without a key.
    """
    env_key = environ.get("ETCDCTL_WATCH_KEY", "")
    env_range = environ.get("ETCDCTL_WATCH_RANGE_END", "")
    if not env_key and env_range:
        raise CtlError(
            EXIT_BAD_ARGS,
            f"ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={go_quote(env_range)}",
        )
    if exec_count == 0:
        raise CtlError(
            EXIT_BAD_ARGS, "bad number of arguments (found separator --, but no commands)"
        )
    count = exec_count or 0
    keys, command = list(args[: len(args) - count]), list(args[len(args) - count :])
    if env_key:
        if keys:
            raise CtlError(
                EXIT_BAD_ARGS, "bad number of arguments (found conflicting environment key)"
            )
        keys = [env_key, env_range] if env_range else [env_key]
    return keys, command


WATCH_FLAG_TYPES = {"prefix": bool, "rev": int, "prev-kv": bool, "interactive": bool}


def interactive_watch_request(line: str) -> rpc_pb2.WatchCreateRequest | str:
    """One line of ``watch -i``: the request of a ``watch ...`` line, or the message etcdctl
    prints on stderr for a line it skips.

    Raises:
        CtlError: flags it cannot parse (exit 128, as etcdctl).
    """
    args = argify(line)
    if not args:
        return f"Invalid command: {line} (watch and progress supported)"
    if args[0] != "watch":
        return f"Invalid command {line} (only support watch)"
    if len(args) < 2:
        return f"Invalid command {line} (command type or key is not provided)"
    try:
        positionals, values = parse_flags(args[1:], WATCH_FLAG_TYPES)
    except ValueError as error:
        raise CtlError(EXIT_BAD_ARGS, str(error)) from None
    options = WatchOptions(
        bool(values.get("prefix")), int(values.get("rev", 0)), bool(values.get("prev-kv"))
    )
    try:
        return watch_request([to_bytes(arg) for arg in positionals], options)
    except CtlError as error:
        return f"Invalid command {line} ({error.message})"


async def _watch_interactive(client: V3Client, display: Display) -> None:
    """``watch -i``: a watcher per ``watch`` line, ``progress`` asks every watcher's stream
    for a progress notification; the end of stdin ends the command (exit 3, as etcdctl).

    Raises:
        CtlError: the end of the input, or a bad ``watch`` line.
    """
    progress_requests: list[trio.MemorySendChannel[None]] = []
    async with trio.open_nursery() as nursery:
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline)
            if not line.endswith("\n"):
                raise CtlError(EXIT_INVALID_INPUT, "Error reading watch request line: EOF")
            line = line.removesuffix("\n")
            if argify(line)[:1] == ["progress"]:
                for channel in progress_requests:
                    channel.send_nowait(None)
                continue
            parsed = interactive_watch_request(line)
            if isinstance(parsed, str):
                typer.echo(parsed, err=True)
                continue
            send, receive = trio.open_memory_channel[None](1)
            progress_requests.append(send)
            nursery.start_soon(_interactive_watcher, client, parsed, display, receive)


async def _interactive_watcher(
    client: V3Client,
    request: rpc_pb2.WatchCreateRequest,
    display: Display,
    progress: trio.MemoryReceiveChannel[None],
) -> None:
    """One watcher of ``watch -i`` on its own stream, sending progress requests when asked."""
    printer = _print_watch(display)
    async with client.stream(WATCH_GRPC_PATH, rpc_pb2.WatchResponse) as call:
        await call.send(rpc_pb2.WatchRequest(create_request=request))

        async def ask() -> None:
            async for _ in progress:
                progress_request = rpc_pb2.WatchProgressRequest()
                await call.send(rpc_pb2.WatchRequest(progress_request=progress_request))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            async for response in call:
                if response.created and not response.canceled:
                    continue
                await printer(response)
                if response.canceled:
                    break
            nursery.cancel_scope.cancel()


# -- signals ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class StopSignals:
    """SIGINT and SIGTERM, caught for a whole command (as etcdctl's ``signal.Notify``): one
    that arrives between two waits is kept for the next."""

    receiver: AsyncIterator[int]
    received: bool = False


@contextlib.contextmanager
def stop_signals() -> Iterator[StopSignals]:
    """Catch SIGINT and SIGTERM until the block ends."""
    with trio.open_signal_receiver(*STOP_SIGNALS) as receiver:
        yield StopSignals(receiver)


async def until_signalled(
    work: Callable[[], Awaitable[T]], signals: StopSignals
) -> tuple[T] | None:
    """Run ``work`` until it returns (its result, in a tuple) or SIGINT/SIGTERM arrives
    (None; ``work`` is cancelled, or not started if a signal came already)."""
    if signals.received:
        return None
    outcome: tuple[T] | None = None
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            async for _ in signals.receiver:
                signals.received = True
                nursery.cancel_scope.cancel()
                return

        nursery.start_soon(stop_on_signal)
        outcome = (await work(),)
        nursery.cancel_scope.cancel()
    return outcome


# -- lock ------------------------------------------------------------------------------------------


def go_exec_error(command: Sequence[str], returncode: int | None) -> str:
    """Go's ``exec.Cmd.Run`` error as etcdctl prints it."""
    name = command[0]
    if returncode is not None:
        return f"exit status {returncode}"
    if "/" in name:
        return f"fork/exec {name}: no such file or directory"
    return f'exec: "{name}": executable file not found in $PATH'


async def run_holding(command: Sequence[str], environment: dict[str, str]) -> str | None:
    """Run ``command`` with the terminal's stdout and stderr; None if it succeeded, else
    Go's error text."""
    if "/" not in command[0] and shutil.which(command[0]) is None:
        return go_exec_error(command, None)
    try:
        done = await trio.run_process(list(command), env=environment, check=False)
    except (FileNotFoundError, PermissionError):
        return go_exec_error(command, None)
    return None if done.returncode == 0 else go_exec_error(command, done.returncode)


async def _lock(
    client: V3Client, name: bytes, ttl: int, command: Sequence[str], display: Display
) -> None:
    """etcdctl's ``lockUntilSignal``.

    Raises:
        CtlError: interrupted while waiting (``context canceled``), the command failed,
            the session expired, or a request failed.
    """
    with stop_signals() as signals:
        await _lock_with(client, name, ttl, command, display, signals)


async def _lock_with(  # noqa: PLR0917 (the command's arguments, and its signals)
    client: V3Client,
    name: bytes,
    ttl: int,
    command: Sequence[str],
    display: Display,
    signals: StopSignals,
) -> None:
    """:func:`_lock` with its signals caught."""
    async with trio.open_nursery() as nursery:
        session = await open_session(client, ttl, nursery)
        held = await until_signalled(lambda: lock(client, session, name), signals)
        if held is None:
            raise CtlError(EXIT_ERROR, CONTEXT_CANCELED)
        key = held[0].key
        if command:
            environment = {
                "ETCD_LOCK_KEY": key.decode("utf-8", errors="surrogateescape"),
                "ETCD_LOCK_REV": str(held[0].header.revision),
                **os.environ,
            }
            failure = await run_holding(command, environment)
            await unlock(client, key)
            if failure is not None:
                raise CtlError(EXIT_ERROR, failure)
        else:
            await _hold(client, session, key, display, signals)
        nursery.cancel_scope.cancel()


async def _hold(
    client: V3Client, session: Session, key: bytes, display: Display, signals: StopSignals
) -> None:
    """Print the lock's key and hold it until a signal (then unlock) or the session ends."""
    found = await client.range(rpc_pb2.RangeRequest(key=key))
    if not found.kvs:
        raise CtlError(EXIT_ERROR, "lock lost on init")
    emit(render(found, display))
    ended = await until_signalled(session.done.wait, signals)
    if ended is not None:
        raise CtlError(EXIT_ERROR, "session expired")
    await unlock(client, key)


# -- elect -----------------------------------------------------------------------------------------


def elect_mode(args: Sequence[str], listen: bool) -> None:
    """Check ``elect``'s arguments as etcdctl does.

    Raises:
        CtlError: exit 128 with etcdctl's message.
    """
    if len(args) not in (1, 2):
        raise CtlError(
            EXIT_BAD_ARGS,
            "elect takes one election name argument and an optional proposal argument",
        )
    if len(args) == 1 and not listen:
        raise CtlError(EXIT_BAD_ARGS, "no proposal argument but -l not set")
    if len(args) == 2 and listen:
        raise CtlError(EXIT_BAD_ARGS, "proposal given but -l is set")


async def _campaign(client: V3Client, name: bytes, proposal: bytes, display: Display) -> None:
    """etcdctl's ``campaign``: elected, print the key; resign on a signal.

    Raises:
        CtlError: interrupted before being elected, or the session expired.
    """
    with stop_signals() as signals:
        async with trio.open_nursery() as nursery:
            session = await open_session(client, 0, nursery)
            elected = await until_signalled(
                lambda: campaign(client, session, name, proposal), signals
            )
            if elected is None:
                raise CtlError(EXIT_ERROR, CONTEXT_CANCELED)
            held: Held = elected[0]
            found = await client.range(rpc_pb2.RangeRequest(key=held.key))
            emit(render(found, display))
            if await until_signalled(session.done.wait, signals) is not None:
                raise CtlError(EXIT_ERROR, "elect: session expired")
            await resign(client, held)
            nursery.cancel_scope.cancel()


async def _observe(client: V3Client, name: bytes, display: Display) -> None:
    """etcdctl's ``observe``: print each leader until a signal.

    Raises:
        CtlError: the observation ended by itself (``elect: observer lost``).
    """
    with stop_signals() as signals:
        async with trio.open_nursery() as nursery:
            await open_session(client, 0, nursery)

            async def show(response: rpc_pb2.RangeResponse) -> None:
                emit(render(response, display))

            try:
                ended = await until_signalled(lambda: observe(client, name, show), signals)
            except (RpcError, LostWatcher):
                ended = (None,)
            if ended is not None:
                raise CtlError(EXIT_ERROR, "elect: observer lost")
            nursery.cancel_scope.cancel()


# -- the shell -------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add ``watch``, ``lock`` and ``elect`` to ``app``."""

    @ctl_command(app, "watch")
    def watch_command(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(help="<key> [range_end]")] = None,
        interactive: Annotated[
            bool, typer.Option("-i", "--interactive/--no-interactive", help="Interactive mode")
        ] = False,
        prefix: Annotated[
            bool, typer.Option("--prefix", help="Watch on a prefix if prefix is set")
        ] = False,
        rev: Annotated[int, typer.Option("--rev", help="Revision to start watching")] = 0,
        prev_kv: Annotated[
            bool,
            typer.Option(
                "--prev-kv", help="get the previous key-value pair before the event happens"
            ),
        ] = False,
        exec_count: Annotated[int | None, typer.Option(EXEC_COUNT_OPTION, hidden=True)] = None,
    ) -> None:
        """Watches events stream on keys or prefixes.

        ``watch [options] <key> [range_end] [-- <command> [args...]]``: with a command, it
        runs once per event with ETCD_WATCH_REVISION, ETCD_WATCH_EVENT_TYPE, ETCD_WATCH_KEY
        and ETCD_WATCH_VALUE set. ETCDCTL_WATCH_KEY and ETCDCTL_WATCH_RANGE_END may give the
        key and range end instead of arguments.
        """
        display = Display(options.write_out, options.hex)
        if interactive:
            run_client(options, lambda client: _watch_interactive(client, display))
            return
        keys, command = split_exec_args(args or [], exec_count, os.environ)
        request = watch_request([to_bytes(arg) for arg in keys], WatchOptions(prefix, rev, prev_kv))
        run_client(options, lambda client: _watch_once(client, request, display, command))

    @ctl_command(app, "lock")
    def lock_command(
        options: GlobalOptions,
        *,
        args: Annotated[
            list[str] | None, typer.Argument(help="<lockname> [exec-command arg1 arg2 ...]")
        ] = None,
        ttl: Annotated[int, typer.Option("--ttl", help="timeout for session")] = LOCK_TTL_SECONDS,
    ) -> None:
        """Acquires a named lock."""
        display = Display(options.write_out, options.hex)
        if not args:
            raise CtlError(
                EXIT_BAD_ARGS,
                "lock takes a lock name argument and an optional command to execute",
            )
        name, command = to_bytes(args[0]), args[1:]
        run_client(options, lambda client: _lock(client, name, ttl, command, display))

    @ctl_command(app, "elect")
    def elect_command(
        options: GlobalOptions,
        *,
        args: Annotated[list[str] | None, typer.Argument(help="<election-name> [proposal]")] = None,
        listen: Annotated[bool, typer.Option("-l", "--listen", help="observation mode")] = False,
    ) -> None:
        """Observes and participates in leader election."""
        display = Display(options.write_out, options.hex)
        elect_mode(args or [], listen)
        assert args is not None
        name = to_bytes(args[0])
        if listen:
            run_client(options, lambda client: _observe(client, name, display))
        else:
            proposal = to_bytes(args[1])
            run_client(options, lambda client: _campaign(client, name, proposal, display))
