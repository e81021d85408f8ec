"""``troika lease|watch|lock|elect`` against etcdctl 3.4, and their pure cores.

The differential half follows tests/test_cli_v3.py: a fresh etcd 3.4 member is the
reference, run with the real ``etcdctl``; troika's commands run against a second fresh etcd
(``server=etcd``: the commands alone) or a fresh troika member (``server=troika``: the commands
and troika's lease, watch and KV services). Both see the same history, so revisions line up;
lease IDs (server-chosen) are written as ``<lease N>`` in order of appearance, cluster and
member ids and terms as ``set``, and a lease's remaining TTL as ``<n>``. The long-running
commands (keep-alive, watch, lock, elect) run as processes and are stopped with SIGTERM, as
a person stops them with Ctrl-C; their stdout, error line and exit code must be equal too.

The unit half checks the renderers and request builders directly.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.clusters import EtcdCluster, TroikaCluster, etcd_available
from net.etcdpb import kv_pb2, rpc_pb2
from tests.test_cli_v3 import COMMAND_SECONDS_MAX, Etcd, Outcome, _error_line, etcdctl, runner
from troika.cli import app
from troika.v3_commands import CtlError, Display
from troika.v3_lease_commands import (
    grant_request,
    parse_lease_id,
    render_grant,
    render_keep_alive,
    render_leases,
    render_revoke,
    render_time_to_live,
)
from troika.v3_watch_commands import (
    WatchOptions,
    elect_mode,
    event_environment,
    go_exec_error,
    interactive_watch_request,
    mark_exec_args,
    render_watch,
    split_exec_args,
    watch_request,
)

POLL_SECONDS = 0.1
PIPE_READ_BYTES = 4096
SETTLE_SECONDS = 1.5
"""How long a waiting lock command gets to take a lock it must not take."""
EXIT_WAIT_SECONDS = 15.0
"""The longest a background command gets to print what it must, or to exit."""
SESSION_KEEP_ALIVE_SECONDS = 20.0
"""A third of ``elect``'s 60 s session TTL: how often its lease is kept alive."""

SHELL_PATH = "/usr/bin:/bin:/usr/local/bin"
EXEC = 'echo "event $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE"'
"""The command ``watch -- sh -c`` runs per event (the revision is the response's header's,
which depends on when the watcher was created, so it is left out)."""


# -- normalising what differs between any two servers ---------------------------------------------


class Normaliser:
    """Lease IDs as ``<lease N>`` by first appearance; ids and terms as ``set``."""

    def __init__(self) -> None:
        self.ids: dict[int, str] = {}

    def lease(self, value: int) -> str:
        return self.ids.setdefault(value, f"<lease {len(self.ids)}>")

    def text(self, text: str) -> str:
        text = re.sub(r'"key":"([A-Za-z0-9+/=]*)"', _decoded_key, text)
        text = re.sub(r'"(cluster_id|member_id|raft_term)":\d+', r'"\1":"set"', text)
        # decimal IDs before hex ones: a 16-digit decimal would read as a hex ID
        text = re.sub(
            r'"(ID|id|lease)":(\d+)',
            lambda m: f'"{m.group(1)}":"{self.lease(int(m.group(2)))}"',
            text,
        )
        text = re.sub(r"\b[0-9a-f]{16}\b", lambda m: self.lease(int(m.group(0), 16)), text)
        text = re.sub(
            r"\b(mylock|myelection)/([0-9a-f]+)\b",
            lambda m: f"{m.group(1)}/{self.lease(int(m.group(2), 16))}",
            text,
        )
        text = re.sub(r"remaining\(\d+s\)", "remaining(<n>s)", text)
        return re.sub(r'"ttl":\d+', '"ttl":"<n>"', text)

    def outcome(self, outcome: Outcome) -> tuple[list[str], str, int]:
        lines = self.text(outcome.stdout.decode("utf-8", errors="replace")).splitlines()
        return lines, self.text(outcome.error), outcome.exit_code


def _decoded_key(match: re.Match[str]) -> str:
    """A json key (base64) as its text, so the lease IDs in lock and election keys show."""
    key = base64.b64decode(match.group(1)).decode("utf-8", errors="replace")
    return f'"key":{json.dumps(key)}'


def _events_only(outcome: Outcome) -> Outcome:
    """A json watch's events one a line: a watcher created after the writes (the process
    started late) gets them replayed in one message, one created before gets one a message."""
    events = [
        json.dumps(event)
        for line in outcome.stdout.splitlines()
        for event in json.loads(line)["Events"]
    ]
    return Outcome("\n".join(events).encode(), outcome.error, outcome.exit_code)


def _sorted_list(lines: list[str]) -> list[str]:
    """``lease list``: etcd lists leases in Go map order; the count line stays first."""
    return lines[:1] + sorted(lines[1:])


# -- running both sides ----------------------------------------------------------------------------


def _etcdctl_process(endpoint: str, args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["etcdctl", f"--endpoints={endpoint}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"ETCDCTL_API": "3", "PATH": SHELL_PATH},
    )


def _troika_process(endpoint: str, args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "troika", f"--endpoints={endpoint}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{SHELL_PATH}"},
    )


def _troika(endpoint: str, args: list[str], stdin: bytes = b"") -> Outcome:
    """Run ``troika`` in-process, the endpoint given before the command (``lease`` is a
    group whose subcommands take the flags)."""
    argv = mark_exec_args([f"--endpoints={endpoint}", *args])
    result = runner.invoke(app, argv, input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.stdout_bytes, _error_line(result.stderr), result.exit_code)


def _finish(
    process: subprocess.Popen[bytes],
    *,
    stop: bool,
    wait_s: float = EXIT_WAIT_SECONDS,
    printed: bytes = b"",
) -> Outcome:
    """Stop a background command with SIGTERM (or let it end) and collect what it did
    (``printed``: what :func:`_read_until` read of its stdout already)."""
    if stop:
        process.send_signal(signal.SIGTERM)
    try:
        stdout, stderr = process.communicate(timeout=wait_s)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return Outcome(printed + stdout, _error_line(stderr.decode()), process.returncode)


def _stop_when(process: subprocess.Popen[bytes], done: Callable[[bytes], bool]) -> Outcome:
    """Stop a background command with SIGTERM once it has printed what ``done`` looks for
    (a process on a loaded machine can take seconds to start: a fixed pause may stop it
    before it printed anything)."""
    return _finish(process, stop=True, printed=_read_until(process, done))


class Side:
    """One side of the comparison: how to run a command against its server."""

    def __init__(self, endpoint: str, tool: str, normaliser: Normaliser) -> None:
        self.endpoint = endpoint
        self.tool = tool
        self.normaliser = normaliser
        self.leases: list[str] = []

    def run(self, args: list[str], stdin: bytes = b"") -> Outcome:
        if args[0] == "lock":  # a locked command's output goes to the terminal, not to Typer's
            return _finish(self.start(args), stop=False)
        if self.tool == "etcdctl":
            return etcdctl(self.endpoint, args, stdin)
        return _troika(self.endpoint, args, stdin)

    def start(self, args: list[str]) -> subprocess.Popen[bytes]:
        if self.tool == "etcdctl":
            return _etcdctl_process(self.endpoint, args)
        return _troika_process(self.endpoint, args)

    def fill(self, args: list[str]) -> list[str]:
        """``{lease0}`` as the side's first granted lease (hex), and so on."""
        return [
            re.sub(r"\{lease(\d)\}", lambda m: self.leases[int(m.group(1))], arg) for arg in args
        ]

    def grant(self, ttl: int) -> str:
        outcome = self.run(["lease", "grant", str(ttl)])
        lease = outcome.stdout.split()[1].decode()
        self.normaliser.lease(int(lease, 16))
        self.leases.append(lease)
        return lease


SCRIPT_SESSION_TTL = "3600"
SCRIPT: list[list[str]] = [
    ["lease", "grant", "x"],
    ["lease", "grant"],
    ["lease", "grant", "9223372036854775807"],
    ["lease", "grant", "100", "-w", "json"],
    ["put", "k1", "v1", "--lease", "{lease0}"],
    ["put", "k2", "v2", "--lease={lease1}"],
    ["put", "k3", "v3", "--lease={lease1}"],
    ["put", "k4", "v", "--lease", "zz"],
    ["put", "k4", "v", "--lease", "1"],
    ["get", "k1", "-w", "json"],
    ["lease", "timetolive", "{lease0}"],
    ["lease", "timetolive", "{lease0}", "--keys"],
    ["lease", "timetolive", "{lease0}", "--keys", "-w", "json"],
    ["lease", "timetolive", "{lease1}", "-w", "json"],
    ["lease", "timetolive", "1"],
    ["lease", "timetolive", "1", "--keys", "-w", "json"],
    ["lease", "timetolive", "zz"],
    ["lease", "timetolive"],
    ["lease", "keep-alive", "--once", "{lease0}"],
    ["lease", "keep-alive", "--once", "{lease1}", "-w", "json"],
    ["lease", "keep-alive", "--once", "1"],
    ["lease", "keep-alive", "1"],
    ["lease", "keep-alive", "1", "-w", "json"],
    ["lease", "keep-alive"],
    ["lease", "keep-alive", "q"],
    ["lease", "grant", "100", "-w", "table"],
    ["lease", "revoke", "{lease0}"],
    ["lease", "revoke", "{lease0}"],
    ["lease", "revoke", "{lease1}", "-w", "json"],
    ["lease", "revoke", "xyz"],
    ["lease", "revoke"],
    ["get", "k", "--prefix"],
    ["lease", "timetolive", "{lease1}"],
    ["put", "w/a", "1"],
    ["put", "w/a", "2"],
    ["put", "w/b", "3"],
    ["compaction", "9"],
    ["watch"],
    ["watch", "a", "b", "--prefix"],
    ["watch", "w/", "--prefix", "--rev", "2"],
    ["watch", "w/", "--prefix", "--rev", "2", "-w", "json"],
    ["watch", "a", "--"],
    ["watch", "--", "echo"],
    ["lock"],
    # Each lock's session lease outlives the command and is listed at the end: a TTL longer
    # than the script takes on a loaded machine (the default 60 s is not: with four busy
    # loops on two cores troika's first sessions had expired before the listing).
    ["lock", "--ttl", SCRIPT_SESSION_TTL, "mylock", "echo", "hi"],
    [
        "lock",
        "--ttl",
        SCRIPT_SESSION_TTL,
        "mylock",
        "--",
        "sh",
        "-c",
        "echo $ETCD_LOCK_KEY $ETCD_LOCK_REV; exit 3",
    ],
    ["lock", "--ttl", SCRIPT_SESSION_TTL, "mylock", "/nonexistent"],
    ["lock", "--ttl", SCRIPT_SESSION_TTL, "mylock", "nonexistent-command"],
    ["elect"],
    ["elect", "a", "b", "c"],
    ["elect", "myelection"],
    ["elect", "myelection", "p", "-l"],
]


def _script_lines(side: Side) -> list[tuple[list[str], Shown]]:
    side.grant(100)
    side.grant(100)
    shown = []
    for args in SCRIPT:
        filled = side.fill(args)
        shown.append((args, side.normaliser.outcome(side.run(filled))))
    listed = side.normaliser.outcome(side.run(["lease", "list"]))
    shown.append((["lease", "list"], (_sorted_list(listed[0]), listed[1], listed[2])))
    return shown


def _background(side: Side) -> dict[str, Shown]:
    """keep-alive until revoked, watches of a prefix, a lock passed on, an election."""
    results: dict[str, Outcome] = {}
    lease = side.grant(9)
    # etcdctl keeps the lease alive until the keeper (troika's: a Python process, slow to start
    # on a loaded machine) has renewed it
    bridge = _etcdctl_process(side.endpoint, ["lease", "keep-alive", lease])
    keeper = side.start(["lease", "keep-alive", lease])
    first_line = _read_until(keeper, _lines(1))
    _finish(bridge, stop=True)
    side.run(["lease", "revoke", lease])
    kept = _finish(keeper, stop=False)
    results["keep-alive until revoked"] = Outcome(
        first_line + kept.stdout, kept.error, kept.exit_code
    )

    revision = json.loads(side.run(["get", "x", "-w", "json"]).stdout)["header"]["revision"]
    start = ["--rev", str(revision + 1)]
    watchers = {
        "watch simple": side.start(["watch", "x/", "--prefix", "--prev-kv", *start]),
        "watch json": side.start(["watch", "x/", "--prefix", "-w", "json", *start]),
        "watch range": side.start(["watch", "x/a", "x/c", *start]),
        "watch exec": side.start(["watch", "x/", "--prefix", *start, "--", "sh", "-c", EXEC]),
    }
    for args in (["put", "x/a", "1"], ["put", "x/a", "2"], ["del", "x/a"], ["put", "x/c", "3"]):
        side.run(args)
    side.run(["txn"], b"\nput x/b 1\nput x/d 2\n\n\n")
    for name, process in watchers.items():
        results[name] = _stop_when(process, WATCHERS_PRINT[name])
    results["watch json"] = _events_only(results["watch json"])
    exec_lines = sorted(results["watch exec"].stdout.splitlines())
    results["watch exec"] = Outcome(b"\n".join(exec_lines), "", 0)

    holder = side.start(["lock", "mylock", "--ttl", "20"])
    held = _read_until(holder, _lines(1))  # the key: it holds the lock
    waiter = side.start(["lock", "mylock", "echo", "second"])
    _wait_for_keys(side, "mylock/", 2)
    results["lock holder"] = _finish(holder, stop=True, printed=held)
    results["lock waiter"] = _finish(waiter, stop=False)

    holder = side.start(["lock", "mylock", "-w", "json"])
    results["lock json"] = _stop_when(holder, _lines(1))
    holder = side.start(["lock", "mylock", "--ttl", "5", "-w", "json"])
    held = _read_until(holder, _lines(1))
    side.run(["lease", "revoke", _holder_lease(side, "mylock/")])
    results["lock whose lease is revoked"] = _finish(holder, stop=False, printed=held)
    hexed = side.start(["watch", "x/a", "--rev", str(revision + 1), "--hex", "--prev-kv"])
    # PUT x/a 1; PUT x/a 2 with the previous value; DELETE x/a with it: 3 + 5 + 5 lines
    results["watch hex"] = _stop_when(hexed, _lines(13))

    observer = side.start(["elect", "-l", "myelection"])
    first = side.start(["elect", "myelection", "one"])
    elected = _read_until(first, _lines(2))  # the leader's key and proposal
    observed = _read_until(observer, _lines(2))  # the same
    second = side.start(["elect", "myelection", "two"])
    _wait_for_keys(side, "myelection/", 2)
    results["elect first"] = _finish(first, stop=True, printed=elected)
    results["elect second"] = _stop_when(second, _lines(2))
    observed += _read_until(observer, _lines(4 - observed.count(b"\n")))  # and the second
    _wait_for_keys(side, "myelection/", 0)
    results["elect observer"] = _finish(observer, stop=True, printed=observed)

    candidate = side.start(["elect", "myelection", "three", "-w", "json"])
    elected = _read_until(candidate, _lines(1))
    side.run(["lease", "revoke", _holder_lease(side, "myelection/")])
    # The session's TTL is 60 s: its next keep-alive, which finds the lease gone, is 20 s on.
    results["elect whose lease is revoked"] = _finish(
        candidate,
        stop=False,
        wait_s=SESSION_KEEP_ALIVE_SECONDS + EXIT_WAIT_SECONDS,
        printed=elected,
    )
    return {name: side.normaliser.outcome(outcome) for name, outcome in results.items()}


def _wait_for_keys(side: Side, prefix: str, count: int) -> None:
    """Wait until ``count`` keys are under ``prefix`` (a waiter queued, a key deleted)."""
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    while time.monotonic() < deadline:
        found = side.run(["get", prefix, "--prefix", "--keys-only"]).stdout.split()
        if len(found) == count:
            return
        time.sleep(POLL_SECONDS)


def _read_until(
    process: subprocess.Popen[bytes],
    done: Callable[[bytes], bool],
    wait_s: float = EXIT_WAIT_SECONDS,
) -> bytes:
    """What a background command printed until ``done`` holds for it (or it closed its
    stdout, or ``wait_s`` passed), read from the pipe itself so that ``communicate`` reads on
    from there."""
    assert process.stdout is not None
    printed = b""
    deadline = time.monotonic() + wait_s
    while not done(printed) and (left_s := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([process.stdout], [], [], left_s)
        chunk = os.read(process.stdout.fileno(), PIPE_READ_BYTES) if ready else b""
        if not chunk:
            break
        printed += chunk
    return printed


def _lines(count: int) -> Callable[[bytes], bool]:
    """Whether ``count`` whole lines were printed."""
    return lambda printed: printed.count(b"\n") >= count


def _json_events(count: int) -> Callable[[bytes], bool]:
    """Whether a ``-w json`` watch printed ``count`` events (a message a line)."""

    def done(printed: bytes) -> bool:
        whole = printed[: printed.rfind(b"\n") + 1].splitlines()
        return sum(len(json.loads(line)["Events"]) for line in whole) >= count

    return done


WATCHERS_PRINT: dict[str, Callable[[bytes], bool]] = {
    # PUT x/a 1; PUT x/a 2 and DELETE x/a with the previous value; PUT x/c, x/b, x/d
    "watch simple": _lines(3 + 5 + 5 + 3 * 3),
    "watch json": _json_events(6),
    # x/a to x/c: PUT x/a 1, PUT x/a 2, DELETE x/a, PUT x/b
    "watch range": _lines(4 * 3),
    # the six events as above without previous values, and the command's line for each
    "watch exec": _lines(6 * 3 + 6),
}
"""What each watcher of ``_background`` prints for the writes, before it is stopped."""


def _holder_lease(side: Side, prefix: str) -> str:
    """The lease (hex) of the oldest key under ``prefix``: a lock holder's or a leader's."""
    found = side.run(["get", prefix, "--prefix", "--sort-by", "CREATE", "-w", "json"])
    return f"{json.loads(found.stdout)['kvs'][0]['lease']:x}"


@pytest.fixture
def endpoints(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """A fresh etcd (the reference) and a fresh subject: a second etcd or a troika member."""
    if subprocess.run(["which", "etcd", "etcdctl"], capture_output=True, check=False).returncode:
        pytest.skip("etcd and etcdctl (3.4) are not on PATH")
    reference = Etcd(tmp_path_factory.mktemp("etcd-cli-leases-reference"), "reference")
    try:
        if request.param == "etcd":
            subject = Etcd(tmp_path_factory.mktemp("etcd-cli-leases-subject"), "subject")
            try:
                yield reference.endpoint, subject.endpoint
            finally:
                subject.stop()
        else:
            with TroikaCluster(1, tmp_path_factory.mktemp("troika-cli-leases")) as cluster:
                yield reference.endpoint, cluster.client_urls[0].removeprefix("http://")
    finally:
        reference.stop()


Shown = tuple[list[str], str, int]


def _differences(pairs: list[tuple[object, Shown, Shown]]) -> list[str]:
    return [
        f"{name}:\n  etcdctl {expected}\n  troika  {got}"
        for name, expected, got in pairs
        if expected != got
    ]


@pytest.mark.process
@pytest.mark.parametrize("endpoints", ["etcd", "troika"], indirect=True)
def test_lease_watch_lock_elect_print_what_etcdctl_prints(endpoints: tuple[str, str]) -> None:
    """The script and the background scenarios through etcdctl against the reference and
    through troika's commands against the subject: the same output, step by step."""
    reference, subject = endpoints
    theirs = Side(reference, "etcdctl", Normaliser())
    ours = Side(subject, "troika", Normaliser())
    expected, got = _script_lines(theirs), _script_lines(ours)
    differences = _differences(
        [(left[0], left[1], right[1]) for left, right in zip(expected, got, strict=True)]
    )
    assert any("granted with TTL(100s), remaining" in " ".join(line[1][0]) for line in expected)
    background_expected, background_got = _background(theirs), _background(ours)
    assert background_expected["lock waiter"][0] == ["second"]
    assert 'event "DELETE" "x/a" ""' in background_expected["watch exec"][0]
    assert background_expected["lock whose lease is revoked"][1:] == ("Error: session expired", 1)
    assert background_expected["elect whose lease is revoked"][1:] == (
        "Error: elect: session expired",
        1,
    )
    assert background_expected["watch hex"][0][1] == "\\x78\\x2f\\x61"  # x/a
    assert '"key":"mylock/<lease' in background_expected["lock json"][0][0]
    differences += _differences(
        [(name, shown, background_got[name]) for name, shown in background_expected.items()]
    )
    assert not differences, "\n".join(differences)


@pytest.mark.process
@pytest.mark.parametrize("endpoints", ["etcd"], indirect=True)
def test_troika_lock_and_etcdctl_lock_exclude_each_other(endpoints: tuple[str, str]) -> None:
    """The lock is etcdctl's recipe, so a troika holder keeps an etcdctl waiter out."""
    reference, _ = endpoints
    holder = _troika_process(reference, ["lock", "shared"])
    printed = _read_until(holder, _lines(1))  # the key: it holds the lock
    waiter = _etcdctl_process(reference, ["lock", "shared", "echo", "etcdctl got it"])
    _wait_for_keys(Side(reference, "etcdctl", Normaliser()), "shared/", 2)
    time.sleep(SETTLE_SECONDS)
    assert waiter.poll() is None, "etcdctl took a lock troika holds"
    held = _finish(holder, stop=True, printed=printed)
    assert held.exit_code == 0 and held.stdout.startswith(b"shared/")
    assert _finish(waiter, stop=False) == Outcome(b"etcdctl got it\n", "", 0)


# -- the unit half ---------------------------------------------------------------------------------

HEADER = rpc_pb2.ResponseHeader(cluster_id=7, member_id=8, revision=4, raft_term=2)


def test_lease_requests_and_ids() -> None:
    assert grant_request(["60"]).TTL == 60
    assert parse_lease_id("1a") == 26
    for args, message in (
        (["x"], 'bad TTL (strconv.ParseInt: parsing "x": invalid syntax)'),
        ([], "lease grant command needs TTL argument"),
    ):
        with pytest.raises(CtlError) as caught:
            grant_request(args)
        assert (caught.value.exit_code, caught.value.message) == (128, message)
    with pytest.raises(CtlError, match=r"bad lease ID arg \(.*\), expecting ID in Hex"):
        parse_lease_id("q")


def test_lease_renderers_match_etcdctl() -> None:
    grant = rpc_pb2.LeaseGrantResponse(header=HEADER, ID=0x12C8A24012E1F705, TTL=60)
    assert render_grant(grant, "simple") == [b"lease 12c8a24012e1f705 granted with TTL(60s)"]
    assert render_grant(grant, "json") == [
        b'{"cluster_id":7,"member_id":8,"revision":4,"raft_term":2,'
        b'"ID":1353510084103239429,"TTL":60,"Error":""}'
    ]
    assert render_revoke(1, rpc_pb2.LeaseRevokeResponse(header=HEADER), "simple") == [
        b"lease 0000000000000001 revoked"
    ]
    alive = rpc_pb2.LeaseKeepAliveResponse(header=HEADER, ID=1, TTL=6)
    assert render_keep_alive(alive, "json") == [
        b'{"cluster_id":7,"member_id":8,"revision":4,"raft_term":2,"ID":1,"TTL":6}'
    ]
    live = rpc_pb2.LeaseTimeToLiveResponse(
        header=HEADER, ID=1, TTL=99, grantedTTL=100, keys=[b"k1", b"k0"]
    )
    assert render_time_to_live(live, True, "simple") == [
        b"lease 0000000000000001 granted with TTL(100s), remaining(99s), attached keys([k1 k0])"
    ]
    assert json.loads(render_time_to_live(live, True, "json")[0])["keys"] == ["azE=", "azA="]
    gone = rpc_pb2.LeaseTimeToLiveResponse(header=HEADER, ID=1, TTL=-1)
    assert render_time_to_live(gone, True, "simple") == [b"lease 0000000000000001 already expired"]
    assert b'"granted-ttl":0,"keys":null' in render_time_to_live(gone, False, "json")[0]
    listed = rpc_pb2.LeaseLeasesResponse(
        header=HEADER, leases=[rpc_pb2.LeaseStatus(ID=1), rpc_pb2.LeaseStatus(ID=2)]
    )
    assert render_leases(listed, "simple") == [
        b"found 2 leases",
        b"0000000000000001",
        b"0000000000000002",
    ]
    assert json.loads(render_leases(listed, "json")[0])["leases"] == [{"id": 1}, {"id": 2}]
    with pytest.raises(CtlError) as caught:
        render_leases(listed, "table")
    assert (caught.value.exit_code, caught.value.message) == (
        4,
        "table not supported as output format",
    )


def test_watch_requests() -> None:
    prefix = watch_request([b"w/"], WatchOptions(prefix=True, rev=3, prev_kv=True))
    assert (prefix.key, prefix.range_end, prefix.start_revision, prefix.prev_kv) == (
        b"w/",
        b"w0",
        3,
        True,
    )
    assert watch_request([b""], WatchOptions(prefix=True)).range_end == b"\x00"
    assert watch_request([b"a", b"c"], WatchOptions()).range_end == b"c"
    assert watch_request([b"a", b"b", b"c"], WatchOptions()).range_end == b""  # as etcdctl
    with pytest.raises(CtlError, match="bad number of arguments"):
        watch_request([], WatchOptions())
    with pytest.raises(CtlError, match="mutually exclusive"):
        watch_request([b"a", b"b"], WatchOptions(prefix=True))
    parsed = interactive_watch_request("watch w/ --prefix --rev 5")
    assert isinstance(parsed, rpc_pb2.WatchCreateRequest)
    assert (parsed.range_end, parsed.start_revision) == (b"w0", 5)
    assert interactive_watch_request("get x") == "Invalid command get x (only support watch)"
    assert interactive_watch_request("watch") == (
        "Invalid command watch (command type or key is not provided)"
    )


def test_watch_renderer_matches_etcdctl() -> None:
    kv = kv_pb2.KeyValue(key=b"w/a", value=b"2", create_revision=7, mod_revision=8, version=2)
    before = kv_pb2.KeyValue(key=b"w/a", value=b"1", create_revision=7, mod_revision=7, version=1)
    deleted = kv_pb2.KeyValue(key=b"w/a", mod_revision=9)
    response = rpc_pb2.WatchResponse(
        header=HEADER,
        events=[
            kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv, prev_kv=before),
            kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=deleted),
        ],
    )
    assert render_watch(response, Display()) == [
        b"PUT",
        b"w/a",
        b"1",
        b"w/a",
        b"2",
        b"DELETE",
        b"w/a",
        b"",
    ]
    document = json.loads(render_watch(response, Display("json"))[0])
    assert list(document) == ["Header", "Events", "CompactRevision", "Canceled", "Created"]
    assert document["Events"][1] == {"type": 1, "kv": {"key": "dy9h", "mod_revision": 9}}
    cancelled = rpc_pb2.WatchResponse(header=HEADER, canceled=True, compact_revision=3)
    assert render_watch(cancelled, Display("json"))[0].endswith(
        b'"Events":[],"CompactRevision":3,"Canceled":true,"Created":false}'
    )


def test_elect_arguments_and_exec_errors() -> None:
    elect_mode(["e", "p"], listen=False)
    elect_mode(["e"], listen=True)
    for args, listen, message in (
        ([], False, "elect takes one election name argument"),
        (["e"], False, "no proposal argument but -l not set"),
        (["e", "p"], True, "proposal given but -l is set"),
    ):
        with pytest.raises(CtlError, match=message):
            elect_mode(args, listen)
    assert go_exec_error(["false"], 1) == "exit status 1"
    assert go_exec_error(["/x/y"], None) == "fork/exec /x/y: no such file or directory"
    assert go_exec_error(["nope"], None) == 'exec: "nope": executable file not found in $PATH'


def test_normaliser_maps_lease_ids_in_every_form() -> None:
    normaliser = Normaliser()
    text = (
        'lease 12c8a24012e1f705 granted {"ID":1353510084103239429,"ttl":99} '
        "mylock/12c8a24012e1f705 myelection/1f"
    )
    assert normaliser.text(text) == (
        'lease <lease 0> granted {"ID":"<lease 0>","ttl":"<n>"} '
        "mylock/<lease 0> myelection/<lease 1>"
    )
    assert COMMAND_SECONDS_MAX > 0


# -- a watch outlives the member it watched through -----------------------------------------------

RESUME_WRITES = 20
"""Puts before and after the kill (each half)."""
KEPT_TTL_SECONDS = 5
"""The kept-alive lease's TTL: the test outlasts it after the kill."""
KEPT_ALIVE_SECONDS = 3 + KEPT_TTL_SECONDS
"""How long after the last write (after the kill) the lease must still be alive."""


@pytest.mark.process
@pytest.mark.parametrize("system", ["troika", "etcd"])
def test_watch_resumes_on_the_next_endpoint_after_a_kill(
    system: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``troika watch`` and ``troika lease keep-alive`` with three endpoints, their member
    killed with SIGKILL mid-stream: the watch goes on from the next endpoint and prints every
    event once, in order; the lease outlives its TTL several times over."""
    if system == "etcd" and not etcd_available():
        pytest.skip("etcd is not installed")
    kind = TroikaCluster if system == "troika" else EtcdCluster
    with kind(3, tmp_path_factory.mktemp(f"{system}-watch-resume")) as cluster:
        hosts = [url.removeprefix("http://") for url in cluster.client_urls]
        got = etcdctl(hosts[1], ["get", "r/", "-w", "json"])
        start = str(json.loads(got.stdout)["header"]["revision"] + 1)
        # from a revision: the watch sees every write however late its process starts
        watcher = _troika_process(",".join(hosts), ["watch", "r/", "--prefix", "--rev", start])
        lease = etcdctl(hosts[1], ["lease", "grant", str(KEPT_TTL_SECONDS)]).stdout.split()[1]
        # etcdctl (Go: it starts at once) keeps the lease alive until troika's keeper (Python,
        # which can take longer than the TTL to start on a loaded machine: 5 to 6 s with four
        # busy loops on two cores) has renewed it
        bridge = _etcdctl_process(hosts[1], ["lease", "keep-alive", lease.decode()])
        keeper = _troika_process(",".join(hosts), ["lease", "keep-alive", lease.decode()])
        renewed = _read_until(keeper, _lines(1))
        _finish(bridge, stop=True)
        for number in range(RESUME_WRITES):
            assert etcdctl(hosts[1], ["put", f"r/{number}", str(number)]).exit_code == 0
        # the first half printed: the watch streams (from the first endpoint) when it dies
        watched = _read_until(watcher, _lines(3 * RESUME_WRITES))
        cluster.kill(0)
        for number in range(RESUME_WRITES, 2 * RESUME_WRITES):
            outcome = Outcome(b"", "", 1)
            deadline = time.monotonic() + COMMAND_SECONDS_MAX
            while outcome.exit_code != 0 and time.monotonic() < deadline:
                outcome = etcdctl(hosts[1 + number % 2], ["put", f"r/{number}", str(number)])
            assert outcome.exit_code == 0, outcome
        written_s = time.monotonic()
        watched += _read_until(watcher, _lines(3 * 2 * RESUME_WRITES - watched.count(b"\n")))
        time.sleep(max(0.0, written_s + KEPT_ALIVE_SECONDS - time.monotonic()))
        done = _finish(watcher, stop=True, printed=watched)
        alive = etcdctl(hosts[1], ["lease", "timetolive", lease.decode()])
        etcdctl(hosts[1], ["lease", "revoke", lease.decode()])
        kept = _finish(keeper, stop=False, printed=renewed)
    assert b"remaining" in alive.stdout, alive
    renewals = kept.stdout.splitlines()
    assert renewals[-1] == b"lease " + lease + b" expired or revoked.", kept
    assert set(renewals[:-1]) == {b"lease %s keepalived with TTL(%d)" % (lease, KEPT_TTL_SECONDS)}
    assert len(renewals) > 3, kept
    expected = [
        line
        for number in range(2 * RESUME_WRITES)
        for line in (b"PUT", f"r/{number}".encode(), str(number).encode())
    ]
    assert done.stdout.splitlines() == expected, done


def test_watch_exec_arguments_and_environment() -> None:
    assert mark_exec_args(["--endpoints=h:1", "watch", "k", "--", "sh", "-c", "x"]) == [
        "--endpoints=h:1",
        "watch",
        "k",
        "--exec-args-count",
        "3",
        "--",
        "sh",
        "-c",
        "x",
    ]
    assert mark_exec_args(["lock", "l", "--", "sh"]) == ["lock", "l", "--", "sh"]
    assert split_exec_args(["k", "sh", "-c"], 2, {}) == (["k"], ["sh", "-c"])
    assert split_exec_args(
        [], None, {"ETCDCTL_WATCH_KEY": "a", "ETCDCTL_WATCH_RANGE_END": "b"}
    ) == (
        ["a", "b"],
        [],
    )
    for args, count, environ, message in (
        (["k"], 0, {}, "found separator --, but no commands"),
        (["k"], None, {"ETCDCTL_WATCH_KEY": "a"}, "found conflicting environment key"),
        (["k"], None, {"ETCDCTL_WATCH_RANGE_END": "b"}, 'ETCDCTL_WATCH_RANGE_END="b"'),
    ):
        with pytest.raises(CtlError, match=message):
            split_exec_args(args, count, environ)
    event = kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=b'a"b'))
    response = rpc_pb2.WatchResponse(header=HEADER, events=[event])
    assert event_environment(response, event) == {
        "ETCD_WATCH_REVISION": "4",
        "ETCD_WATCH_EVENT_TYPE": '"DELETE"',
        "ETCD_WATCH_KEY": '"a\\"b"',
        "ETCD_WATCH_VALUE": '""',
    }
