"""``troika user|role|auth`` and the global TLS and user flags, against etcdctl 3.4.

The differential half runs one script of auth commands with real ``etcdctl`` against a fresh
single-member server and with ``troika`` against another fresh one of the same kind, both
serving clients over TLS with client certificates (made with trustme), and wants the same
stdout, ``Error:`` line and exit code at every step once the cluster and member ids are
masked. The server is etcd 3.4.23 (the printers, the prompts, the flags and the client's
TLS and token handling) and then troika (its Auth service too).

The unit half checks the cores directly: permission ranges, user add's password sources,
the role printer, pflag's ``--flag=false``, the global flags' layers and ``ETCDCTL_*``.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from typer.testing import CliRunner

from net.etcdpb import auth_pb2, rpc_pb2
from troika.auth_commands import (
    OPEN_END,
    ask_new_password,
    permission_range,
    revoked_line,
    role_get_lines,
    user_add_request,
)
from troika.cli import app, ctl_argv
from troika.ctl import CtlError, GlobalOptions, client_tls, credentials, go_bool_args

STARTUP_SECONDS_MAX = 30.0
COMMAND_SECONDS_MAX = 20.0
ROOT_PASSWORD = "rootpw"

runner = CliRunner()


# -- unit -----------------------------------------------------------------------------------------


def test_permission_ranges_follow_etcdctl() -> None:
    assert permission_range(["a"], prefix=False, from_key=False) == (b"a", b"")
    assert permission_range(["a/"], prefix=True, from_key=False) == (b"a/", b"a0")
    assert permission_range(["k"], prefix=False, from_key=True) == (b"k", OPEN_END)
    assert permission_range(["a", "c"], prefix=False, from_key=False) == (b"a", b"c")
    assert permission_range([""], prefix=True, from_key=False) == (OPEN_END, OPEN_END)
    assert permission_range([""], prefix=False, from_key=False) == (OPEN_END, b"")
    with pytest.raises(CtlError, match="mutually exclusive"):
        permission_range(["a"], prefix=True, from_key=True)
    with pytest.raises(CtlError, match="unexpected endkey argument with --prefix flag"):
        permission_range(["a", "b"], prefix=True, from_key=False)


def test_user_add_takes_the_password_where_etcdctl_does() -> None:
    def add(args: list[str], **flags: object) -> rpc_pb2.AuthUserAddRequest:
        settings: dict[str, object] = {
            "new_user_password": "",
            "no_password": False,
            "interactive": False,
            "read_line": lambda: "  word rest\n",
            "ask": lambda prompt: "asked",
        }
        settings.update(flags)
        return user_add_request(args, **settings)  # type: ignore[arg-type]

    assert (add(["u:p:q"]).name, add(["u:p:q"]).password) == ("u", "p:q")
    assert add(["u"]).password == "word"
    assert add(["u"], interactive=True).password == "asked"
    assert add(["u"], new_user_password="flag").password == "flag"
    nopass = add(["u:p"], no_password=True)
    assert (nopass.name, nopass.password, nopass.options.no_password) == ("u:p", "", True)
    with pytest.raises(CtlError, match=r"^empty user name is not allowed$"):
        add([":p"])
    with pytest.raises(CtlError) as none:
        add([])
    assert none.value.exit_code == 128
    answers = iter(["one", "two"])
    with pytest.raises(CtlError, match=r"^given passwords are different$"):
        ask_new_password("u", lambda prompt: next(answers))
    with pytest.raises(CtlError, match=r"^empty password$"):
        ask_new_password("u", lambda prompt: "")


def test_role_get_prints_etcdctls_ranges() -> None:
    perms = [
        auth_pb2.Permission(permType=auth_pb2.Permission.READ, key=b"\x00", range_end=b"\x00"),
        auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"a", range_end=b"b"),
        auth_pb2.Permission(permType=auth_pb2.Permission.WRITE, key=b"k", range_end=b"\x00"),
        auth_pb2.Permission(permType=auth_pb2.Permission.READ, key=b"one"),
        auth_pb2.Permission(permType=auth_pb2.Permission.READ, key=b"p", range_end=b"pz"),
    ]
    lines = role_get_lines("r", rpc_pb2.AuthRoleGetResponse(perm=perms))
    assert lines == [
        b"Role r",
        b"KV Read:",
        b"\t[\x00, <open ended>",
        b"\t[a, b) (prefix a)",
        b"\tone",
        b"\t[p, pz)",
        b"KV Write:",
        b"\t[a, b) (prefix a)",
        b"\t[k, <open ended>",
    ]
    assert revoked_line("r", b"k", b"") == b"Permission of key k is revoked from role r"
    assert revoked_line("r", b"k", OPEN_END) == (
        b"Permission of range [k, <open ended> is revoked from role r"
    )


def test_pflag_booleans_become_typer_switches() -> None:
    argv = ["user", "add", "u", "--interactive=false", "--hex=true", "--prefix=false", "--x=1"]
    assert go_bool_args(argv) == [
        "user",
        "add",
        "u",
        "--no-interactive",
        "--hex",
        "--prefix=false",
        "--x=1",
    ]


def test_user_flags_are_read_as_etcdctl_reads_them() -> None:
    assert credentials(GlobalOptions()) is None
    root = credentials(GlobalOptions(user="root:pw:x"))
    assert root is not None and (root.user, root.password) == ("root", "pw:x")
    flagged = credentials(GlobalOptions(user="a:b", password="c"))
    assert flagged is not None and (flagged.user, flagged.password) == ("a:b", "c")
    asked = credentials(GlobalOptions(user="a"), ask=lambda prompt: prompt)
    assert asked is not None and asked.password == "Password: "
    with pytest.raises(CtlError, match=r"^empty string is passed to --cacert option$"):
        client_tls(GlobalOptions(cacert=""))


def test_global_flags_layer_command_over_group_over_environment() -> None:
    """A bad endpoint names where its value came from: the nearest layer wins."""

    def endpoint_error(argv: list[str], env: dict[str, str]) -> str:
        result = runner.invoke(app, ctl_argv(argv, env), env=env)
        return result.stderr

    env = {"ETCDCTL_ENDPOINTS": "unix://env:1"}
    assert "'unix://env:1'" in endpoint_error(["user", "list"], env)
    assert "'unix://root:1'" in endpoint_error(["--endpoints=unix://root:1", "user", "list"], env)
    group = ["--endpoints=unix://root:1", "user", "--endpoints=unix://group:1", "list"]
    assert "'unix://group:1'" in endpoint_error(group, env)
    command = [*group, "--endpoints=unix://command:1"]
    assert "'unix://command:1'" in endpoint_error(command, env)


def test_argument_errors_exit_128_before_any_request() -> None:
    for argv, message in (
        (["user", "add"], "user add command requires user name as its argument"),
        (["user", "list", "x"], "user list command requires no arguments"),
        (["role", "grant-permission", "r", "bogus", "k"], "invalid permission type: bogus"),
        (["auth", "enable", "x"], "auth enable command does not accept any arguments"),
    ):
        result = runner.invoke(app, ["--endpoints=127.0.0.1:1", *argv])
        assert (result.exit_code, result.stderr) == (128, f"Error: {message}\n")


# -- the differential half ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command did, as a person sees it."""

    stdout: str
    error: str
    exit_code: int


def _error_line(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if line.startswith("Error:"))


def _certificates(directory: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1, a client certificate without a CommonName
    (so the user comes from --user, and etcd's gateway takes it), and one from another CA."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client.example")
    stranger = trustme.CA().issue_cert("client.example")
    root = ca.issue_cert("root", common_name="root")
    files = {
        "ca": ca.cert_pem.bytes(),
        "server": server.cert_chain_pems[0].bytes(),
        "server-key": server.private_key_pem.bytes(),
        "client": client.cert_chain_pems[0].bytes(),
        "client-key": client.private_key_pem.bytes(),
        "stranger": stranger.cert_chain_pems[0].bytes(),
        "stranger-key": stranger.private_key_pem.bytes(),
        "root": root.cert_chain_pems[0].bytes(),
        "root-key": root.private_key_pem.bytes(),
    }
    paths = {}
    for name, blob in files.items():
        path = directory / f"{name}.pem"
        path.write_bytes(blob)
        paths[name] = str(path)
    return paths


class Server:
    """One member (etcd or ``troika serve``) serving clients over TLS with client certs."""

    def __init__(
        self, system: str, data_dir: Path, certs: dict[str, str], *, client_certs: bool = True
    ) -> None:
        client_port, peer_port = _free_port(), _free_port()
        self.endpoint = f"https://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        binary = ["etcd"] if system == "etcd" else [sys.executable, "-m", "troika", "serve"]
        verify = [f"--trusted-ca-file={certs['ca']}", "--client-cert-auth=true"]
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "member.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                *binary,
                "--name=m",
                f"--data-dir={data_dir / 'm'}",
                f"--listen-client-urls={self.endpoint}",
                f"--advertise-client-urls={self.endpoint}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=m={peer_url}",
                f"--cert-file={certs['server']}",
                f"--key-file={certs['server-key']}",
                *(verify if client_certs else []),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.tls = [f"--cacert={certs['ca']}"]
        if client_certs:
            self.tls += [f"--cert={certs['client']}", f"--key={certs['client-key']}"]
        deadline = time.monotonic() + STARTUP_SECONDS_MAX
        while etcdctl(self, ["endpoint", "health"]).exit_code != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{system} did not start; see {self.log_path}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _names_tls(args: list[str]) -> bool:
    """A step that gives its own TLS flags (the server's are left out)."""
    return any(arg.startswith(("--cacert", "--cert", "--insecure")) for arg in args)


def etcdctl(
    server: Server, args: list[str], stdin: str = "", env: dict[str, str] | None = None
) -> Outcome:
    """The real etcdctl (v3) against ``server``, with its TLS flags unless a step names its
    own."""
    tls: list[str] | None = (
        [] if any(arg.startswith(("--cacert", "--cert", "--insecure")) for arg in args) else None
    )
    done = subprocess.run(
        ["etcdctl", f"--endpoints={server.endpoint}", *(server.tls if tls is None else tls), *args],
        input=stdin.encode(),
        capture_output=True,
        timeout=COMMAND_SECONDS_MAX,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )
    return Outcome(done.stdout.decode(), _error_line(done.stderr.decode()), done.returncode)


def troika(
    server: Server, args: list[str], stdin: str = "", env: dict[str, str] | None = None
) -> Outcome:
    """``troika`` in-process against ``server``, the same flags as :func:`etcdctl`."""
    tls: list[str] | None = (
        [] if any(arg.startswith(("--cacert", "--cert", "--insecure")) for arg in args) else None
    )
    argv = [f"--endpoints={server.endpoint}", *(server.tls if tls is None else tls), *args]
    result = runner.invoke(app, ctl_argv(argv, {}), input=stdin, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.stdout, _error_line(result.stderr), result.exit_code)


ROOT = f"--user=root:{ROOT_PASSWORD}"


@dataclass(frozen=True, slots=True)
class Step:
    """One command of the script, with its stdin and environment."""

    args: list[str]
    stdin: str = ""
    env: dict[str, str] | None = None


def script(certs: dict[str, str]) -> list[Step]:
    """Users, roles, permissions, auth on, the users' rights, the ways to give a user and a
    password, TLS variants, then everything taken down again."""
    steps = [
        ["user", "add", f"root:{ROOT_PASSWORD}"],
        ["user", "add"],
        ["user", "add", ":nameless"],
        ["user", "add", "bob", "--new-user-password=bobpw"],
        ["user", "add", "bob:again"],
        ["user", "add", "carol:pw", "-w", "json"],
        ["user", "list"],
        ["user", "list", "-w", "json"],
        ["user", "list", "-w", "table"],
        ["user", "list", "-w", "xml"],
        ["user", "get", "alice"],
        ["user", "get", "nobody"],
        ["role", "add", "reader"],
        ["role", "add", "reader"],
        ["role", "add", "writer", "-w", "json"],
        ["role", "grant-permission", "reader", "read", "a/", "--prefix"],
        ["role", "grant-permission", "reader", "readwrite", "k1", "k3"],
        ["role", "grant-permission", "reader", "write", "z", "--from-key"],
        ["role", "grant-permission", "reader", "READ", "single"],
        ["role", "grant-permission", "writer", "write", "", "--prefix"],
        ["role", "grant-permission", "reader", "bogus", "x"],
        ["role", "grant-permission", "reader", "read", "a", "--prefix", "--from-key"],
        ["role", "grant-permission", "reader", "read", "a", "b", "--prefix"],
        ["role", "grant-permission", "reader", "read"],
        ["role", "grant-permission", "nobody", "read", "x"],
        ["role", "get", "reader"],
        ["role", "get", "reader", "-w", "json"],
        ["role", "get", "writer"],
        ["role", "get", "nobody"],
        ["role", "list"],
        ["user", "grant-role", "alice", "reader"],
        ["user", "grant-role", "alice", "nobody"],
        ["user", "grant-role", "alice"],
        ["user", "get", "alice"],
        ["user", "get", "alice", "--detail"],
        ["user", "get", "alice", "-w", "json"],
        ["auth", "enable"],
        ["user", "list"],
        ["user", "list", ROOT],
        ["user", "list", "--user=root", f"--password={ROOT_PASSWORD}"],
        ["user", "list", "--user=root:wrong"],
        ["user", "list", "--user=nobody:x"],
        ["put", "a/1", "x", ROOT],
        ["put", "a/1", "y", "--user=alice:alicepw"],
        ["get", "a/1", "--user=alice:alicepw"],
        ["put", "k2", "v", "--user=alice:alicepw"],
        ["get", "k", "--prefix", "--user=bob:bobpw"],
        ["user", "list", "--user=alice:alicepw"],
        ["role", "revoke-permission", "reader", "k1", "k3", ROOT],
        ["role", "revoke-permission", "reader", "a/", "--prefix", ROOT],
        ["role", "revoke-permission", "reader", "z", "--from-key", ROOT],
        ["role", "revoke-permission", "reader", "nothing", ROOT],
        ["role", "revoke-permission", "reader", ROOT],
        ["role", "get", "reader", ROOT],
        ["user", "revoke-role", "alice", "reader", ROOT],
        ["user", "revoke-role", "alice", "reader", ROOT],
        ["get", "single", "--user=alice:alicepw"],
        ["user", "delete", "bob", ROOT],
        ["user", "delete", "bob", ROOT],
        ["role", "delete", "writer", ROOT],
        ["role", "list", ROOT],
        ["user", "get", "root", ROOT],
        ["auth", "disable", "--user=alice:alicepw"],
        ["auth", "disable", ROOT],
        ["auth", "disable"],
        ["user", "list"],
        ["user", "delete", "carol", "-w", "json"],
    ]
    insecure = [f"--cert={certs['client']}", f"--key={certs['client-key']}"]
    stranger = [f"--cacert={certs['ca']}", f"--cert={certs['stranger']}"]
    stranger.append(f"--key={certs['stranger-key']}")
    root_cn = [f"--cacert={certs['ca']}", f"--cert={certs['root']}", f"--key={certs['root-key']}"]
    return [
        Step(["user", "add", "alice", "--interactive=false"], "alicepw extra\n"),
        Step(["user", "add", "erin"], "erinpw\nerinpw\n"),
        Step(["user", "add", "frank"], "one\ntwo\n"),
        *(Step(args) for args in steps[:36]),
        Step(["user", "passwd", "carol", "--interactive=false"], "carolpw2\n"),
        *(Step(args) for args in steps[36:45]),
        Step(["get", "a/1"], env={"ETCDCTL_USER": "alice:alicepw"}),
        Step(["get", "a/1", "--user=erin"], "erinpw\n"),
        Step(["get", "a/1", "--user=root"], f"{ROOT_PASSWORD}\n"),
        Step(["user", "passwd", "alice", "--interactive=false", ROOT], "newpw\n"),
        Step(["get", "a/1", "--user=alice:newpw"]),
        Step(["get", "a/1", "--user=alice:newpw", "--insecure-skip-tls-verify", *insecure]),
        Step(["get", "a/1", "--user=alice:newpw", "--dial-timeout=1s", *stranger]),
        Step(["get", "a/1", "--user=alice:newpw", "--cert="]),
        Step(["user", "list", *root_cn]),
        Step(["role", "get", "root", *root_cn]),
        *(Step(args) for args in steps[45:]),
    ]


_IDS = re.compile(r'"(cluster_id|member_id|raft_term)":\d+')


def _masked(outcome: Outcome) -> Outcome:
    return Outcome(_IDS.sub(r'"\1":0', outcome.stdout), outcome.error, outcome.exit_code)


def _differences(ours: Server, theirs: Server, certs: dict[str, str]) -> list[str]:
    found = []
    for step in script(certs):
        expected = _masked(etcdctl(theirs, step.args, step.stdin, step.env))
        got = _masked(troika(ours, step.args, step.stdin, step.env))
        if got != expected:
            found.append(f"{step.args}:\n  etcdctl {expected}\n  troika  {got}")
    return found


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def servers(
    request: pytest.FixtureRequest, tmp_path: Path, certs: dict[str, str]
) -> Iterator[tuple[Server, Server]]:
    if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
        pytest.skip("etcd 3.4 is not installed")
    system = str(request.param)
    theirs = Server("etcd", tmp_path / "reference", certs)
    try:
        ours = Server(system, tmp_path / "ours", certs)
    except BaseException:
        theirs.stop()
        raise
    try:
        yield ours, theirs
    finally:
        ours.stop()
        theirs.stop()


@pytest.mark.process
@pytest.mark.parametrize("servers", ["etcd", "troika"], indirect=True)
def test_auth_commands_print_what_etcdctl_prints(
    servers: tuple[Server, Server], certs: dict[str, str]
) -> None:
    """etcdctl against etcd, and troika against a second etcd (the printers, the client) or
    against troika serve (the Auth service as well), over TLS with client certificates."""
    ours, theirs = servers
    differences = _differences(ours, theirs, certs)
    assert not differences, "\n".join(differences)


def tls_steps(server: Server, certs: dict[str, str]) -> list[list[str]]:
    """TLS without client certificates: the gateway over HTTPS (troika's unary calls), the
    endpoint forms and the verification switches."""
    address = server.endpoint.removeprefix("https://")
    ca = f"--cacert={certs['ca']}"
    return [
        ["put", "t", "1", ca],
        ["get", "t", ca, f"--endpoints={address}"],
        ["get", "t", "--insecure-skip-tls-verify"],
        ["get", "t", "--insecure-transport=false", "--insecure-skip-tls-verify"],
        ["get", "t", ca, f"--endpoints=http://{address}", "--dial-timeout=1s"],
        ["user", "add", "dave:pw", ca, "-w", "json"],
        ["user", "get", "dave", ca],
        ["get", "t", f"--cert={certs['client']}", f"--key={certs['client-key']}"],
        [
            "get",
            "t",
            "--insecure-skip-tls-verify",
            f"--cert={certs['client']}",
            f"--key={certs['client-key']}",
        ],
    ]


@pytest.mark.process
@pytest.mark.parametrize("system", ["etcd", "troika"])
def test_tls_without_client_certificates(
    system: str, tmp_path: Path, certs: dict[str, str]
) -> None:
    """etcdctl and troika agree on every endpoint form and TLS switch, and troika's
    ``snapshot save`` streams over TLS (a user given while auth is off: clientv3 goes on
    without a token, and so does troika)."""
    if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
        pytest.skip("etcd 3.4 is not installed")
    theirs = Server("etcd", tmp_path / "reference", certs, client_certs=False)
    try:
        ours = Server(system, tmp_path / "ours", certs, client_certs=False)
    except BaseException:
        theirs.stop()
        raise
    try:
        found = []
        for args, our_args in zip(tls_steps(theirs, certs), tls_steps(ours, certs), strict=True):
            expected = _masked(etcdctl(theirs, args))
            got = _masked(troika(ours, our_args))
            if got != expected:
                found.append(f"{args}:\n  etcdctl {expected}\n  troika  {got}")
        assert not found, "\n".join(found)
        backup = str(tmp_path / "backup.db")
        saved = troika(ours, ["snapshot", "save", backup, "--user=dave:pw"])
        assert saved.exit_code == 0 and saved.stdout.startswith("Snapshot saved at"), saved
    finally:
        ours.stop()
        theirs.stop()
