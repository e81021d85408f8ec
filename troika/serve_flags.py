"""etcd 3.4's server flags for ``troika serve``: parsed as etcd parses them, checked, explained.

Why
---

An operator replaces ``etcd`` with ``troika serve`` in a start script or a systemd unit and
changes nothing else, so the command line must be read exactly as etcd 3.4 reads it:

- Go's ``flag`` package: ``-name v``, ``--name v``, ``--name=v``; a boolean flag alone means
  true and takes its value only after ``=`` (``--enable-v2 false`` leaves ``false`` as a stray
  argument, which etcd refuses: "'false' is not a valid flag"); the same flag given twice keeps
  the last value. Errors in the same words and with the same exit codes (2 for a malformed
  command line, 1 for a configuration etcd refuses after parsing).
- ``ETCD_*`` environment variables (``--initial-cluster-state`` is
  ``ETCD_INITIAL_CLUSTER_STATE``) fill the flags not given on the command line. etcd 3.4.23
  refuses to start when a variable and a flag name the same setting ("conflicting environment
  variable ... is shadowed by corresponding command-line flag"), and so does troika; an
  ``ETCD_`` variable that names no flag is logged and ignored, as etcd does.

Every flag etcd 3.4 defines is in :data:`FLAGS`, with what troika does with it:

- ``USED``: honoured with etcd's meaning;
- ``NO_EFFECT``: accepted with any value because it tunes something troika does not have (the
  note says why, e.g. bbolt's freelist type);
- values outside ``accepted`` are refused with a message that names the flag, the value and
  the reason (``FlagError``), never ignored: a TLS revocation list or a discovery URL that is
  silently dropped would be a security or correctness surprise.

This module is pure (argv and an environment mapping in, a :class:`ParsedFlags` out), so the
tests run it without starting anything.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

EXIT_USAGE: Final = 2
"""Go's flag package exits 2 on a malformed command line."""
EXIT_CONFIG: Final = 1
"""etcd exits 1 when it refuses a parsed configuration ("error verifying flags")."""
ENV_PREFIX: Final = "ETCD_"


class FlagError(Exception):
    """The command line or environment is refused; ``message`` is etcd's words."""

    def __init__(self, message: str, exit_code: int = EXIT_CONFIG) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Kind(enum.Enum):
    """How a flag's text is parsed (the Go type etcd declares it with)."""

    STRING = "string"
    BOOL = "bool"
    UINT = "uint"
    UINT32 = "uint32"
    UINT64 = "uint64"
    INT = "int"
    INT64 = "int64"
    DURATION = "duration"
    URLS = "urls"
    CHOICE = "choice"


class Use(enum.Enum):
    """What troika does with a flag (see the module docstring)."""

    USED = "used"
    NO_EFFECT = "no effect"


FlagValue = str | bool | int | float | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Flag:
    """One etcd 3.4 server flag.

    Attributes:
        name: without dashes, as etcd names it.
        kind: its Go type.
        default: etcd's default, as text.
        use: what troika does with it.
        note: for the operator: how troika maps it, or why a value is refused.
        accepted: the values troika takes (None: every valid value); checked after parsing.
        choices: the values a CHOICE flag may take (etcd's own check, at parse time).
    """

    name: str
    kind: Kind
    default: str
    use: Use = Use.USED
    note: str = ""
    accepted: Callable[[FlagValue], bool] | None = None
    choices: tuple[str, ...] = ()

    @property
    def env_name(self) -> str:
        """``ETCD_INITIAL_CLUSTER_STATE`` for ``initial-cluster-state``."""
        return ENV_PREFIX + self.name.upper().replace("-", "_")


TROIKA_LEARNERS_MAX: Final = 8
"""``--troika-max-learners``' bound (``net.v3.service.LEARNERS_MAX_LIMIT``)."""


def _only(*values: FlagValue) -> Callable[[FlagValue], bool]:
    return lambda value: value in values


_EMPTY = _only("", ())
_FALSE = _only(False)

_TLS_NOTE = "see docs/operations.md, TLS"
_PROXY_NOTE = "etcd's v2 proxy is not built; troika runs only as a member (--proxy=off)"

FLAGS: Final[tuple[Flag, ...]] = (
    # -- member
    Flag("name", Kind.STRING, "default"),
    Flag("data-dir", Kind.STRING, "", note="default NAME.etcd; RocksDB lives in DIR/db"),
    Flag(
        "wal-dir",
        Kind.STRING,
        "",
        note="troika's Raft log is a part of the one RocksDB store in --data-dir (written and "
        "fsynced with the applied state), so it cannot be put in a directory of its own",
        accepted=_EMPTY,
    ),
    Flag(
        "snapshot-count",
        Kind.UINT64,
        "100000",
        note="applied entries between snapshots",
    ),
    Flag("heartbeat-interval", Kind.UINT, "100", note="milliseconds; one Raft tick"),
    Flag("election-timeout", Kind.UINT, "1000", note="milliseconds"),
    Flag(
        "initial-election-tick-advance",
        Kind.BOOL,
        "true",
        Use.NO_EFFECT,
        "troika's members start elections after one election timeout either way",
    ),
    Flag("listen-peer-urls", Kind.URLS, "http://localhost:2380"),
    Flag("listen-client-urls", Kind.URLS, "http://localhost:2379"),
    Flag("max-snapshots", Kind.UINT, "5", Use.NO_EFFECT, "troika keeps no snapshot files"),
    Flag("max-wals", Kind.UINT, "5", Use.NO_EFFECT, "troika keeps no WAL files (RocksDB)"),
    Flag(
        "quota-backend-bytes",
        Kind.INT64,
        "0",
        note="0: etcd's 2 GiB; negative: no quota; writes that add data are refused with "
        "'etcdserver: mvcc: database space exceeded' past it (storage/space.py)",
    ),
    Flag("backend-batch-interval", Kind.DURATION, "0s", Use.NO_EFFECT, "one RocksDB batch a Ready"),
    Flag("backend-batch-limit", Kind.INT, "0", Use.NO_EFFECT, "one RocksDB batch a Ready"),
    Flag("max-txn-ops", Kind.UINT, "128"),
    Flag("max-request-bytes", Kind.UINT, "1572864", note="at most 7 MiB in troika"),
    Flag(
        "max-concurrent-streams",
        Kind.UINT32,
        "4294967295",
        note="troika's gRPC server has its own bound on streams a connection",
        accepted=_only(4294967295),
    ),
    Flag(
        "grpc-keepalive-min-time",
        Kind.DURATION,
        "5s",
        note="troika's gRPC server does not police client pings",
        accepted=_only(5.0),
    ),
    Flag(
        "grpc-keepalive-interval",
        Kind.DURATION,
        "2h0m0s",
        note="troika's gRPC server sends no keepalive pings",
        accepted=_only(7200.0),
    ),
    Flag(
        "grpc-keepalive-timeout",
        Kind.DURATION,
        "20s",
        note="troika's gRPC server sends no keepalive pings",
        accepted=_only(20.0),
    ),
    # -- clustering
    Flag("initial-advertise-peer-urls", Kind.URLS, "http://localhost:2380"),
    Flag("initial-cluster", Kind.STRING, "", note="default NAME=first initial advertise peer URL"),
    Flag("initial-cluster-state", Kind.CHOICE, "new", choices=("new", "existing")),
    Flag("initial-cluster-token", Kind.STRING, "etcd-cluster"),
    Flag("advertise-client-urls", Kind.URLS, "http://localhost:2379"),
    Flag("discovery", Kind.STRING, "", note="discovery is not built", accepted=_EMPTY),
    Flag(
        "discovery-fallback",
        Kind.CHOICE,
        "proxy",
        Use.NO_EFFECT,
        "only read with --discovery",
        choices=("exit", "proxy"),
    ),
    Flag("discovery-proxy", Kind.STRING, "", note="discovery is not built", accepted=_EMPTY),
    Flag("discovery-srv", Kind.STRING, "", note="discovery is not built", accepted=_EMPTY),
    Flag("discovery-srv-name", Kind.STRING, "", note="discovery is not built", accepted=_EMPTY),
    Flag(
        "strict-reconfig-check",
        Kind.BOOL,
        "true",
        Use.NO_EFFECT,
        "troika's membership changes are applied as etcd-raft applies them; not configurable",
    ),
    Flag(
        "pre-vote",
        Kind.BOOL,
        "false",
        Use.NO_EFFECT,
        "troika's Raft always campaigns with PreVote (no client-visible difference)",
    ),
    Flag(
        "auto-compaction-retention",
        Kind.STRING,
        "0",
        note="periodic: hours, or a Go duration; revision: revisions kept; 0: off",
    ),
    Flag("auto-compaction-mode", Kind.STRING, "periodic", note="periodic, revision or adaptive"),
    Flag("enable-v2", Kind.BOOL, "false", note="serve the v2 keys API (/v2/keys, /v2/members...)"),
    # -- proxy (off)
    Flag(
        "proxy",
        Kind.CHOICE,
        "off",
        note=_PROXY_NOTE,
        accepted=_only("off"),
        choices=("off", "readonly", "on"),
    ),
    Flag("proxy-failure-wait", Kind.UINT, "5000", Use.NO_EFFECT, _PROXY_NOTE),
    Flag("proxy-refresh-interval", Kind.UINT, "30000", Use.NO_EFFECT, _PROXY_NOTE),
    Flag("proxy-dial-timeout", Kind.UINT, "1000", Use.NO_EFFECT, _PROXY_NOTE),
    Flag("proxy-write-timeout", Kind.UINT, "5000", Use.NO_EFFECT, _PROXY_NOTE),
    Flag("proxy-read-timeout", Kind.UINT, "0", Use.NO_EFFECT, _PROXY_NOTE),
    # -- security
    Flag("cert-file", Kind.STRING, "", note=_TLS_NOTE),
    Flag("key-file", Kind.STRING, "", note=_TLS_NOTE),
    Flag("client-cert-auth", Kind.BOOL, "false", note=_TLS_NOTE),
    Flag("client-crl-file", Kind.STRING, "", note="revocation lists are not read", accepted=_EMPTY),
    Flag(
        "client-cert-allowed-hostname",
        Kind.STRING,
        "",
        note="client certificates are checked against the CA only",
        accepted=_EMPTY,
    ),
    Flag("trusted-ca-file", Kind.STRING, "", note=_TLS_NOTE),
    Flag("auto-tls", Kind.BOOL, "false", note=_TLS_NOTE),
    Flag("peer-cert-file", Kind.STRING, "", note=_TLS_NOTE),
    Flag("peer-key-file", Kind.STRING, "", note=_TLS_NOTE),
    Flag("peer-client-cert-auth", Kind.BOOL, "false", note=_TLS_NOTE),
    Flag("peer-trusted-ca-file", Kind.STRING, "", note=_TLS_NOTE),
    Flag("peer-auto-tls", Kind.BOOL, "false", note=_TLS_NOTE),
    Flag("peer-crl-file", Kind.STRING, "", note="revocation lists are not read", accepted=_EMPTY),
    Flag(
        "peer-cert-allowed-cn",
        Kind.STRING,
        "",
        note="peer certificates are checked against the CA only",
        accepted=_EMPTY,
    ),
    Flag(
        "peer-cert-allowed-hostname",
        Kind.STRING,
        "",
        note="peer certificates are checked against the CA only",
        accepted=_EMPTY,
    ),
    Flag(
        "experimental-peer-skip-client-san-verification",
        Kind.BOOL,
        "false",
        Use.NO_EFFECT,
        "troika does not check a peer client certificate's SAN against its address",
    ),
    Flag(
        "cipher-suites",
        Kind.STRING,
        "",
        note="Python's ssl module picks the TLS 1.2/1.3 suites",
        accepted=_EMPTY,
    ),
    Flag(
        "cors",
        Kind.STRING,
        "*",
        note="troika answers every origin (etcd's default)",
        accepted=_only("*", ""),
    ),
    Flag(
        "host-whitelist",
        Kind.STRING,
        "*",
        note="troika answers every Host (etcd's default)",
        accepted=_only("*", ""),
    ),
    # -- auth
    Flag("auth-token", Kind.STRING, "simple", note="simple, or jwt,pub-key=,priv-key=,..."),
    Flag("bcrypt-cost", Kind.UINT, "10"),
    Flag("auth-token-ttl", Kind.UINT, "300"),
    # -- profiling and monitoring
    Flag(
        "enable-pprof", Kind.BOOL, "false", note="Go's profiler has no twin here", accepted=_FALSE
    ),
    Flag(
        "metrics",
        Kind.STRING,
        "basic",
        note="the extensive histograms are not kept",
        accepted=_only("basic"),
    ),
    Flag("listen-metrics-urls", Kind.URLS, "", note="/metrics and /health on these URLs too"),
    Flag(
        "enable-grpc-gateway",
        Kind.BOOL,
        "true",
        note="the /v3/ JSON gateway is always served",
        accepted=_only(True),
    ),
    # -- logging
    Flag("logger", Kind.STRING, "capnslog", note="capnslog or zap; troika's own line format"),
    Flag(
        "log-outputs",
        Kind.STRING,
        "default",
        note="default and stderr log to standard error, stdout to standard output",
        accepted=_only("default", "stderr", "stdout"),
    ),
    Flag(
        "log-output",
        Kind.STRING,
        "default",
        note="deprecated name of --log-outputs",
        accepted=_only("default", "stderr", "stdout"),
    ),
    Flag("debug", Kind.BOOL, "false", note="deprecated: --log-level=debug"),
    Flag("log-level", Kind.STRING, "info", note="debug, info, warn, error, panic or fatal"),
    Flag(
        "log-package-levels",
        Kind.STRING,
        "",
        note="troika has one level for every module",
        accepted=_EMPTY,
    ),
    # -- experimental
    Flag(
        "experimental-initial-corrupt-check",
        Kind.BOOL,
        "false",
        note="not built (every member checks its own store's checksums at start)",
        accepted=_FALSE,
    ),
    Flag(
        "experimental-corrupt-check-time",
        Kind.DURATION,
        "0s",
        note="periodic corruption checks are not built",
        accepted=_only(0.0),
    ),
    Flag("experimental-enable-v2v3", Kind.STRING, "", note="not built", accepted=_EMPTY),
    Flag(
        "experimental-backend-bbolt-freelist-type",
        Kind.STRING,
        "array",
        Use.NO_EFFECT,
        "troika's backend is RocksDB, not bbolt",
    ),
    Flag(
        "experimental-enable-lease-checkpoint",
        Kind.BOOL,
        "false",
        note="lease checkpoints are not built",
        accepted=_FALSE,
    ),
    Flag(
        "experimental-enable-lease-checkpoint-persist",
        Kind.BOOL,
        "false",
        note="lease checkpoints are not built",
        accepted=_FALSE,
    ),
    Flag(
        "experimental-compaction-batch-limit",
        Kind.INT,
        "1000",
        Use.NO_EFFECT,
        "troika reclaims compacted revisions in its own bounded rounds",
    ),
    Flag(
        "experimental-watch-progress-notify-interval",
        Kind.DURATION,
        "10m0s",
        note="how often idle watchers that asked for it hear of the revision",
    ),
    Flag(
        "experimental-warning-apply-duration",
        Kind.DURATION,
        "100ms",
        Use.NO_EFFECT,
        "troika logs no slow-apply warnings",
    ),
    # -- troika's own (not etcd's)
    Flag(
        "troika-learner-linearizable-reads",
        Kind.BOOL,
        "false",
        note="troika only: learners serve linearizable ranges through the leader's ReadIndex "
        "(etcd 3.4 refuses them on learners); docs/beyond-etcd.md",
    ),
    Flag(
        "troika-max-learners",
        Kind.UINT,
        "1",
        note="troika only: how many learners member add lets the cluster hold (etcd 3.4: 1), "
        "for read scaling with learners; 1..8",
        accepted=lambda value: isinstance(value, int) and 1 <= value <= TROIKA_LEARNERS_MAX,
    ),
    # -- unsafe
    Flag(
        "unsafe-no-fsync",
        Kind.BOOL,
        "false",
        note="troika always fsyncs before it acknowledges",
        accepted=_FALSE,
    ),
    Flag(
        "force-new-cluster",
        Kind.BOOL,
        "false",
        note="not built: rewriting the member table of a data directory is refused rather than "
        "done unsafely; restore a snapshot into a new cluster instead",
        accepted=_FALSE,
    ),
    # -- the command
    Flag(
        "config-file",
        Kind.STRING,
        "",
        note="YAML configuration files are not read",
        accepted=_EMPTY,
    ),
    Flag("version", Kind.BOOL, "false", note="print the version and exit"),
)

IGNORED_FLAGS: Final = frozenset(
    {
        "cluster-active-size",
        "cluster-remove-delay",
        "cluster-sync-interval",
        "config",
        "force",
        "max-result-buffer",
        "max-retry-attempts",
        "peer-heartbeat-interval",
        "peer-election-timeout",
        "retry-interval",
        "snapshot",
        "v",
        "vv",
    }
)
"""etcd 0.4's flags, which etcd 3.4 still takes and ignores (so does troika)."""

BY_NAME: Final[Mapping[str, Flag]] = {flag.name: flag for flag in FLAGS}

HELP_NAMES: Final = frozenset({"h", "help"})

LOG_LEVELS: Final = ("debug", "info", "warn", "error", "panic", "fatal")
LOGGERS: Final = ("capnslog", "zap")
COMPACTION_MODES: Final = ("periodic", "revision", "adaptive")  # adaptive: issue 16


@dataclass
class ParsedFlags:
    """Every flag's value after the command line and the environment.

    Attributes:
        values: by flag name, typed (bool, int, float seconds for durations, tuples of URLs).
        from_command_line: the flags the command line set.
        from_environment: the flags an ``ETCD_*`` variable set, with the variable's text.
        notes: what etcd would log about the environment (used and unrecognised variables).
        help_requested: ``-h``/``--help`` was given.
    """

    values: dict[str, FlagValue]
    from_command_line: set[str] = field(default_factory=set)
    from_environment: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    help_requested: bool = False

    def text(self, name: str) -> str:
        value = self.values[name]
        assert isinstance(value, str), (name, value)
        return value

    def flag(self, name: str) -> bool:
        value = self.values[name]
        assert isinstance(value, bool), (name, value)
        return value

    def number(self, name: str) -> int:
        value = self.values[name]
        assert isinstance(value, int) and not isinstance(value, bool), (name, value)
        return value

    def seconds(self, name: str) -> float:
        value = self.values[name]
        assert isinstance(value, float), (name, value)
        return value

    def urls(self, name: str) -> tuple[str, ...]:
        value = self.values[name]
        assert isinstance(value, tuple), (name, value)
        return value


# -- values --------------------------------------------------------------------------------------

_GO_BOOLS: Final = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
_UNSIGNED_BITS: Final = {Kind.UINT: 64, Kind.UINT32: 32, Kind.UINT64: 64}
_SIGNED_BITS: Final = {Kind.INT: 64, Kind.INT64: 64}
_DURATION_PART: Final = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS_S: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


class _BadValue(Exception):
    """A value Go's parser refuses; the text is Go's reason ("parse error")."""


def parse_go_int(text: str, bits: int, signed: bool) -> int:
    """``strconv.ParseInt``/``ParseUint`` with base 0, as Go's flag package calls them.

    Raises:
        _BadValue: "parse error" or "value out of range".
    """
    body = text[1:] if signed and text[:1] in "+-" else text
    negative = signed and text.startswith("-")
    base = 10
    digits = body
    lowered = body.lower()
    if lowered.startswith(("0x", "0o", "0b")):
        base = {"x": 16, "o": 8, "b": 2}[lowered[1]]
        digits = body[2:].replace("_", "")
    elif len(body) > 1 and body.startswith("0"):
        base, digits = 8, body[1:].replace("_", "")
    if not digits or not all(c in "0123456789abcdefABCDEF"[: base + (6 if base == 16 else 0)]
                             for c in digits):  # fmt: skip
        raise _BadValue("parse error")
    value = int(digits, base)
    value = -value if negative else value
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= value <= high:
        raise _BadValue("value out of range")
    return value


def parse_go_duration_s(text: str) -> float:
    """``time.ParseDuration`` in seconds.

    Raises:
        _BadValue: "parse error" (Go's flag package reports every duration error so).
    """
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    position, total = 0, 0.0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None or match.group(1) in ("", "."):
            raise _BadValue("parse error")
        total += float(match.group(1)) * _DURATION_UNITS_S[match.group(2)]
        position = match.end()
    if not body:
        raise _BadValue("parse error")
    return -total if text.startswith("-") else total


def _parse_url(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in ("http", "https", "unix", "unixs"):
        raise _BadValue(f"URL scheme must be http, https, unix, or unixs: {url}")
    host_port = rest.split("/", 1)[0]
    host, colon, port = host_port.rpartition(":")
    if not colon or not port.isdigit() or (host.startswith("[") != host.endswith("]")):
        raise _BadValue(f'URL address does not have the form "host:port": {url}')
    if "/" in rest.strip("/") or (rest.endswith("/") and rest.count("/") > 0):
        raise _BadValue(f"URL must not contain a path: {url}")
    return url


def parse_value(flag: Flag, text: str) -> FlagValue:
    """A flag's text as its Go type parses it.

    Raises:
        _BadValue: Go's or etcd's reason.
    """
    match flag.kind:
        case Kind.STRING:
            return text
        case Kind.BOOL:
            if text not in _GO_BOOLS:
                raise _BadValue("parse error")
            return _GO_BOOLS[text]
        case Kind.UINT | Kind.UINT32 | Kind.UINT64:
            return parse_go_int(text, _UNSIGNED_BITS[flag.kind], signed=False)
        case Kind.INT | Kind.INT64:
            return parse_go_int(text, _SIGNED_BITS[flag.kind], signed=True)
        case Kind.DURATION:
            return parse_go_duration_s(text)
        case Kind.URLS:
            urls = tuple(url.strip() for url in text.split(",") if url.strip())
            return tuple(_parse_url(url) for url in urls)
        case Kind.CHOICE:
            if text not in flag.choices:
                raise _BadValue("invalid value")
            return text


def _invalid(flag: Flag, text: str, reason: str, source: str) -> FlagError:
    if source.startswith(ENV_PREFIX):
        return FlagError(f'invalid value "{text}" for {source}: {reason}', EXIT_CONFIG)
    if flag.kind is Kind.BOOL:
        return FlagError(f'invalid boolean value "{text}" for -{flag.name}: {reason}', EXIT_USAGE)
    return FlagError(f'invalid value "{text}" for flag -{flag.name}: {reason}', EXIT_USAGE)


def defaults() -> dict[str, FlagValue]:
    """Every flag at etcd's default."""
    return {flag.name: parse_value(flag, flag.default) for flag in FLAGS}


# -- the command line and the environment -------------------------------------------------------


def parse_command_line(argv: Sequence[str]) -> ParsedFlags:
    """Go's flag parsing of ``argv`` (the arguments after ``serve``), without the environment.

    Raises:
        FlagError: Go's or etcd's message and exit code.
    """
    parsed = ParsedFlags(defaults())
    position = 0
    while position < len(argv):
        argument = argv[position]
        if len(argument) < 2 or not argument.startswith("-"):
            break
        position += 1
        if argument == "--":
            break
        body = argument[2:] if argument.startswith("--") else argument[1:]
        if not body or body.startswith(("-", "=")):
            raise FlagError(f"bad flag syntax: {argument}", EXIT_USAGE)
        name, has_value, text = body.partition("=")
        if name in HELP_NAMES:
            parsed.help_requested = True
            continue
        if name in IGNORED_FLAGS:
            if not has_value and position < len(argv):
                position += 1
            continue
        flag = BY_NAME.get(name)
        if flag is None:
            raise FlagError(f"flag provided but not defined: -{name}", EXIT_USAGE)
        if not has_value:
            if flag.kind is Kind.BOOL:
                text = "true"
            elif position < len(argv):
                text = argv[position]
                position += 1
            else:
                raise FlagError(f"flag needs an argument: -{name}", EXIT_USAGE)
        try:
            parsed.values[name] = parse_value(flag, text)
        except _BadValue as error:
            raise _invalid(flag, text, str(error), "") from None
        parsed.from_command_line.add(name)
    if position < len(argv):
        raise FlagError(f"'{argv[position]}' is not a valid flag")
    return parsed


def apply_environment(parsed: ParsedFlags, environment: Mapping[str, str]) -> None:
    """Fill the flags the command line left unset from ``ETCD_*`` variables, as etcd 3.4's
    ``flags.SetFlagsFromEnv`` does.

    Raises:
        FlagError: a variable's value does not parse, or it names a flag the command line set.
    """
    known = {flag.env_name: flag for flag in FLAGS}
    for variable in sorted(environment):
        if variable.startswith(ENV_PREFIX) and variable not in known:
            parsed.notes.append(
                f"unrecognized environment variable {variable}={environment[variable]}"
            )
    for flag in FLAGS:
        text = environment.get(flag.env_name, "")
        if not text:
            continue
        if flag.name in parsed.from_command_line:
            raise FlagError(
                f'conflicting environment variable "{flag.env_name}" is shadowed by '
                "corresponding command-line flag (either unset environment variable or "
                "disable flag)"
            )
        try:
            parsed.values[flag.name] = parse_value(flag, text)
        except _BadValue as error:
            raise _invalid(flag, text, str(error), flag.env_name) from None
        parsed.from_environment[flag.name] = text
        parsed.notes.append(f"recognized and used environment variable {flag.env_name}={text}")


def check_supported(parsed: ParsedFlags) -> None:
    """Refuse a value troika cannot honour, naming the flag and why.

    Raises:
        FlagError: the first such flag (exit code 1).
    """
    for flag in FLAGS:
        value = parsed.values[flag.name]
        if flag.accepted is not None and not flag.accepted(value):
            raise FlagError(f"troika does not support --{flag.name}={_show(value)}: {flag.note}")
    for name in ("listen-client-urls", "listen-peer-urls", "advertise-client-urls",
                 "initial-advertise-peer-urls", "listen-metrics-urls"):  # fmt: skip
        for url in parsed.urls(name):
            if url.startswith("unix"):
                raise FlagError(f"troika does not support --{name}={url}: unix sockets")


def check_etcd_rules(parsed: ParsedFlags) -> None:
    """The checks etcd makes after parsing ("error verifying flags, ...").

    Raises:
        FlagError: etcd's words, exit code 1.
    """
    heartbeat_ms = parsed.number("heartbeat-interval")
    election_ms = parsed.number("election-timeout")
    if election_ms < 5 * heartbeat_ms:
        raise FlagError(
            f"--election-timeout[{election_ms}ms] should be at least as 5 times as "
            f"--heartbeat-interval[{heartbeat_ms}ms]"
        )
    if election_ms > 50_000:
        raise FlagError(
            f"--election-timeout[{election_ms}ms] is too long, and should be set less than "
            "50 seconds"
        )
    mode = parsed.text("auto-compaction-mode")
    if mode not in COMPACTION_MODES:
        raise FlagError(f'unknown auto-compaction-mode "{mode}"')
    logger = parsed.text("logger")
    if logger not in LOGGERS:
        raise FlagError(f'unknown logger option "{logger}"')
    level = parsed.text("log-level")
    if level not in LOG_LEVELS:
        raise FlagError(f'unknown level "{level}"')
    compaction_retention_s(parsed)


def compaction_retention_s(parsed: ParsedFlags) -> float:
    """``--auto-compaction-retention`` as etcd reads it: a whole number is hours (periodic) or
    revisions (revision mode); anything else is a Go duration. 0 is off.

    Raises:
        FlagError: neither a whole number nor a duration.
    """
    text = parsed.text("auto-compaction-retention")
    mode = parsed.text("auto-compaction-mode")
    if text.isdigit():
        return float(int(text) * 3600 if mode == "periodic" else int(text))
    try:
        return parse_go_duration_s(text)
    except _BadValue:
        raise FlagError(
            f'error parsing CompactionRetention: time: invalid duration "{text}"'
        ) from None


def parse(argv: Sequence[str], environment: Mapping[str, str]) -> ParsedFlags:
    """The command line, then the environment, then etcd's checks and troika's support.

    Raises:
        FlagError: the message and exit code to stop with.
    """
    parsed = parse_command_line(argv)
    if parsed.help_requested or parsed.flag("version"):
        return parsed
    apply_environment(parsed, environment)
    check_etcd_rules(parsed)
    check_supported(parsed)
    return parsed


def _show(value: FlagValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def help_text() -> str:
    """``troika serve --help``: every flag, its default, and what troika does with it."""
    lines = [
        "Usage: troika serve [flags]",
        "",
        "  Run one member. Flags are etcd 3.4's (-flag, --flag, --flag=value); each may also",
        "  come from its ETCD_* environment variable (--initial-cluster-state:",
        "  ETCD_INITIAL_CLUSTER_STATE). A value troika cannot honour is refused, naming the flag.",
        "",
    ]
    for flag in FLAGS:
        lines.append(f"  --{flag.name} '{flag.default}'")
        detail = flag.note
        if flag.use is Use.NO_EFFECT:
            detail = f"accepted, no effect: {detail}"
        elif flag.accepted is not None:
            detail = f"only etcd's default is taken: {detail}"
        if detail:
            lines.append(f"      {detail}")
    return "\n".join(lines) + "\n"
