"""troika serve's etcd flags: parsing as etcd 3.4.23 parses them, the ETCD_* environment,
refusals that name the flag, and each flag's effect on the member's options.

The expected messages were recorded from etcd 3.4.23 (``etcd <flags>``; the process test in
tests/process/test_serve_flags_etcd.py runs both binaries and compares them live).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.compactor import MODES
from net.tls import TlsFiles
from storage.space import QUOTA_BACKEND_BYTES_DEFAULT
from troika import serve_flags
from troika.serve import QUOTA_DISABLED_BYTES, ServeOptions
from troika.serve_flags import (
    EXIT_CONFIG,
    EXIT_USAGE,
    FLAGS,
    FlagError,
    Use,
    parse,
    parse_command_line,
)

# (argv, exit code, message) as etcd 3.4.23 prints them (its "error verifying flags, ...
# See 'etcd --help'." frame around exit-1 messages is troika's own around the same words).
ETCD_ERRORS = [
    (["--foo=1"], EXIT_USAGE, "flag provided but not defined: -foo"),
    (["--heartbeat-interval=abc"], EXIT_USAGE,
     'invalid value "abc" for flag -heartbeat-interval: parse error'),
    (["--heartbeat-interval=99999999999999999999999"], EXIT_USAGE,
     'invalid value "99999999999999999999999" for flag -heartbeat-interval: value out of range'),
    (["--enable-v2", "false"], EXIT_CONFIG, "'false' is not a valid flag"),
    (["--enable-v2=maybe"], EXIT_USAGE,
     'invalid boolean value "maybe" for -enable-v2: parse error'),
    (["--initial-cluster-state=bogus"], EXIT_USAGE,
     'invalid value "bogus" for flag -initial-cluster-state: invalid value'),
    (["--snapshot-count=-1"], EXIT_USAGE,
     'invalid value "-1" for flag -snapshot-count: parse error'),
    (["--quota-backend-bytes=1.5"], EXIT_USAGE,
     'invalid value "1.5" for flag -quota-backend-bytes: parse error'),
    (["--backend-batch-interval=5"], EXIT_USAGE,
     'invalid value "5" for flag -backend-batch-interval: parse error'),
    (["--auto-compaction-mode=bogus", "--auto-compaction-retention=1"], EXIT_CONFIG,
     'unknown auto-compaction-mode "bogus"'),
    (["--logger=bogus"], EXIT_CONFIG, 'unknown logger option "bogus"'),
    (["positional"], EXIT_CONFIG, "'positional' is not a valid flag"),
    (["--election-timeout=200"], EXIT_CONFIG,
     "--election-timeout[200ms] should be at least as 5 times as --heartbeat-interval[100ms]"),
    (["--heartbeat-interval", "50", "--election-timeout=100"], EXIT_CONFIG,
     "--election-timeout[100ms] should be at least as 5 times as --heartbeat-interval[50ms]"),
    (["--listen-client-urls=foo"], EXIT_USAGE,
     'invalid value "foo" for flag -listen-client-urls: URL scheme must be http, https, unix, '
     "or unixs: foo"),
    (["--listen-client-urls=http://127.0.0.1"], EXIT_USAGE,
     'invalid value "http://127.0.0.1" for flag -listen-client-urls: URL address does not have '
     'the form "host:port": http://127.0.0.1'),
    (["--name"], EXIT_USAGE, "flag needs an argument: -name"),
    (["---name=x"], EXIT_USAGE, "bad flag syntax: ---name=x"),
    (["--", "--name=x"], EXIT_CONFIG, "'--name=x' is not a valid flag"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "exit_code", "message"), ETCD_ERRORS)
def test_bad_command_lines_fail_with_etcds_words_and_exit_code(
    argv: list[str], exit_code: int, message: str
) -> None:
    with pytest.raises(FlagError) as raised:
        parse(argv, {})
    assert (raised.value.exit_code, raised.value.message) == (exit_code, message)


def test_go_flag_syntax_forms_all_set_the_flag() -> None:
    for argv in (["-name", "x"], ["--name", "x"], ["-name=x"], ["--name=x"]):
        assert parse(argv, {}).text("name") == "x"
    assert parse(["--enable-v2"], {}).flag("enable-v2") is True
    for text, value in (("1", True), ("T", True), ("FALSE", False), ("f", False)):
        assert parse([f"--enable-v2={text}"], {}).flag("enable-v2") is value
    # the last of a flag given twice wins, as in Go
    assert parse(["--name=a", "--name=b"], {}).text("name") == "b"
    # Go's base-0 integers
    assert parse(["--snapshot-count=0x10"], {}).number("snapshot-count") == 16
    assert parse(["--snapshot-count=010"], {}).number("snapshot-count") == 8
    # etcd 0.4's flags are taken and ignored
    assert parse(["--peer-heartbeat-interval", "5", "--name=z"], {}).text("name") == "z"


def test_help_and_version_stop_before_checks() -> None:
    assert parse(["-h"], {}).help_requested
    assert parse(["--help", "--election-timeout=1"], {}).help_requested
    assert parse(["--version"], {}).flag("version")
    text = serve_flags.help_text()
    for flag in FLAGS:
        assert f"--{flag.name} " in text


def test_environment_fills_unset_flags_with_etcds_names() -> None:
    environment = {
        "ETCD_INITIAL_CLUSTER_STATE": "existing",
        "ETCD_ENABLE_V2": "true",
        "ETCD_SNAPSHOT_COUNT": "5",
        "ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:1,http://127.0.0.1:2",
        "ETCD_NOT_A_FLAG": "1",
        "ETCDCTL_API": "3",
    }
    parsed = parse([], environment)
    assert parsed.text("initial-cluster-state") == "existing"
    assert parsed.flag("enable-v2") is True
    assert parsed.number("snapshot-count") == 5
    assert parsed.urls("listen-client-urls") == ("http://127.0.0.1:1", "http://127.0.0.1:2")
    assert "unrecognized environment variable ETCD_NOT_A_FLAG=1" in parsed.notes
    assert "recognized and used environment variable ETCD_ENABLE_V2=true" in parsed.notes
    assert not any("ETCDCTL" in note for note in parsed.notes)


def test_environment_errors_as_etcd() -> None:
    with pytest.raises(FlagError) as raised:
        parse([], {"ETCD_HEARTBEAT_INTERVAL": "abc"})
    assert raised.value.message == 'invalid value "abc" for ETCD_HEARTBEAT_INTERVAL: parse error'
    assert raised.value.exit_code == EXIT_CONFIG
    # etcd 3.4.23 refuses a variable that a command-line flag shadows (it does not pick one)
    with pytest.raises(FlagError) as raised:
        parse(["--name", "y"], {"ETCD_NAME": "x"})
    assert raised.value.message == (
        'conflicting environment variable "ETCD_NAME" is shadowed by corresponding '
        "command-line flag (either unset environment variable or disable flag)"
    )
    assert parse([], {"ETCD_NAME": ""}).text("name") == "default"  # empty: unset


def test_every_flag_has_a_unique_env_name_and_parses_its_default() -> None:
    assert len({flag.env_name for flag in FLAGS}) == len(FLAGS)
    parsed = parse_command_line([])
    for flag in FLAGS:
        assert flag.name in parsed.values
        if flag.accepted is not None:
            assert flag.accepted(parsed.values[flag.name]), flag.name  # the default is taken
        assert flag.note or flag.use is Use.USED, flag.name


@pytest.mark.parametrize(
    "argv",
    [
        ["--force-new-cluster"],
        ["--wal-dir=/somewhere"],
        ["--discovery=https://discovery.etcd.io/x"],
        ["--proxy=on"],
        ["--client-crl-file=crl.pem"],
        ["--peer-cert-allowed-cn=etcd"],
        ["--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
        ["--enable-pprof"],
        ["--metrics=extensive"],
        ["--unsafe-no-fsync"],
        ["--log-outputs=/var/log/etcd.log"],
        ["--config-file=/etc/etcd.yml"],
        ["--experimental-corrupt-check-time=1m"],
        ["--listen-client-urls=unix://localhost:1"],
    ],
)
def test_values_troika_cannot_honour_are_refused_naming_the_flag(argv: list[str]) -> None:
    with pytest.raises(FlagError) as raised:
        parse(argv, {})
    name = argv[0].split("=")[0]
    assert raised.value.exit_code == EXIT_CONFIG
    assert raised.value.message.startswith(f"troika does not support {name}=")


def test_flags_with_no_effect_are_accepted_with_any_value() -> None:
    argv = [
        "--max-snapshots=9",
        "--max-wals=0",
        "--pre-vote=true",
        "--strict-reconfig-check=false",
        "--initial-election-tick-advance=false",
        "--experimental-backend-bbolt-freelist-type=map",
        "--proxy-dial-timeout=10",
        "--logger=zap",
        "--log-outputs=stderr",
        "--cors=*",
    ]
    parse(argv, {})  # nothing raised


def test_compaction_retention_is_read_as_etcd_reads_it() -> None:
    def retention(mode: str, text: str) -> float:
        flags = parse([f"--auto-compaction-mode={mode}", f"--auto-compaction-retention={text}"], {})
        return ServeOptions.from_flags(flags).auto_compaction_retention

    assert set(MODES) == set(serve_flags.COMPACTION_MODES)
    assert retention("periodic", "1") == 3600.0  # hours when no unit
    assert retention("periodic", "30m") == 1800.0
    assert retention("periodic", "0") == 0.0
    assert retention("revision", "1000") == 1000.0
    with pytest.raises(FlagError, match="error parsing CompactionRetention"):
        parse(["--auto-compaction-retention=soon"], {})


def test_each_used_flag_reaches_the_members_options() -> None:
    argv = [
        "--name=m2",
        "--data-dir=/tmp/m2",
        "--listen-client-urls=http://127.0.0.1:3379",
        "--advertise-client-urls=http://10.0.0.2:3379",
        "--listen-peer-urls=https://127.0.0.1:3380",
        "--initial-advertise-peer-urls=https://10.0.0.2:3380",
        "--initial-cluster=m1=https://10.0.0.1:3380,m2=https://10.0.0.2:3380",
        "--initial-cluster-state=existing",
        "--initial-cluster-token=tok",
        "--heartbeat-interval=50",
        "--election-timeout=500",
        "--snapshot-count=777",
        "--max-txn-ops=7",
        "--max-request-bytes=1000",
        "--experimental-watch-progress-notify-interval=2s",
        "--enable-v2",
        "--quota-backend-bytes=-1",
        "--listen-metrics-urls=http://127.0.0.1:3381",
        "--cert-file=c.pem",
        "--key-file=k.pem",
        "--trusted-ca-file=ca.pem",
        "--client-cert-auth",
        "--peer-auto-tls",
    ]
    options = ServeOptions.from_flags(parse(argv, {}))
    config = options.member_config()
    assert config.name == "m2"
    assert str(options.data_path()) == "/tmp/m2"
    assert config.listen_client_addresses == ("127.0.0.1:3379",)
    assert config.advertise_client_urls == ("http://10.0.0.2:3379",)
    assert config.listen_peer_addresses == ("127.0.0.1:3380",)
    assert config.advertise_peer_urls == ("https://10.0.0.2:3380",)
    assert sorted(config.initial_cluster) == ["m1", "m2"]
    assert config.initial_cluster_state == "existing"
    assert config.initial_cluster_token == "tok"
    assert (config.tick_interval_s, config.election_ticks) == (0.05, 10)
    assert config.snapshot_every_entries == 777
    assert config.watch_progress_notify_interval_s == 2.0
    limits = options.service_limits()
    assert (limits.max_txn_ops, limits.max_request_bytes) == (7, 1000)
    assert options.enable_v2
    assert options.quota_bytes() == QUOTA_DISABLED_BYTES
    assert options.listen_metrics_urls == ("http://127.0.0.1:3381",)
    assert options.client_tls == TlsFiles("c.pem", "k.pem", "ca.pem", True, False)
    assert options.peer_tls == TlsFiles(auto_tls=True)


def test_defaults_are_etcds() -> None:
    options = ServeOptions.from_flags(parse([], {}))
    assert not options.enable_v2  # etcd 3.4: the v2 API is off unless asked for
    assert options.quota_bytes() == QUOTA_BACKEND_BYTES_DEFAULT
    assert str(options.data_path()) == "default.etcd"
    assert options.listen_client_urls == ("http://localhost:2379",)
    config = options.member_config()
    assert (config.tick_interval_s, config.election_ticks) == (0.1, 10)
    assert config.snapshot_every_entries == 100_000


def test_the_operations_doc_names_every_flag() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    missing = [flag.name for flag in FLAGS if f"`--{flag.name}`" not in doc]
    assert not missing


def test_troikas_read_scaling_flags() -> None:
    """Beyond etcd (issue 16): learners serving linearizable reads and more than one learner;
    both off (etcd's behaviour) by default, and a limit out of range is refused."""
    default = ServeOptions.from_flags(parse([], {})).service_limits()
    assert (default.learner_linearizable_reads, default.learners_max) == (False, 1)
    argv = ["--troika-learner-linearizable-reads", "--troika-max-learners=2"]
    limits = ServeOptions.from_flags(parse(argv, {})).service_limits()
    assert (limits.learner_linearizable_reads, limits.learners_max) == (True, 2)
    environment = {"ETCD_TROIKA_MAX_LEARNERS": "3"}
    assert ServeOptions.from_flags(parse([], environment)).service_limits().learners_max == 3
    with pytest.raises(serve_flags.FlagError):
        parse(["--troika-max-learners=9"], {})
