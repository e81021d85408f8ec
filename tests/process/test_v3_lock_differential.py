"""v3lock and v3election: the same scenarios on troika (3 member processes) and etcd 3.4.23 (3
members), over the JSON gateway and over gRPC, compared step by step.

Each scenario runs on member 0 of each cluster under its own prefix, with leases it grants
itself; blocking calls (a second locker, a second candidate, Observe) run in threads. Replies
are normalized as in the v3 differential suite (``tests/process/v3diff.py``: revisions from an
anchor put, header ids as "set", keys decoded with the prefix as ``{p}``), and lease ids, in
fields and in keys' hex, become the scenario's names for them (``L1``...). What is compared:
every reply (status and body, or gRPC code and details), that a waiter is still waiting while
an older key exists, and the messages an Observe stream sent.

The deliberate differences (docs/lock.md) are not exercised: they need a waiter's own lease to
expire while it waits, where etcd 3.4 answers wrongly.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from bench.clusters import EtcdCluster, TroikaCluster
from net.etcdpb import rpc_pb2, v3election_pb2, v3lock_pb2
from tests.process.v3diff import (
    REQUEST_TIMEOUT_S,
    TRANSPORTS,
    Normalizer,
    Target,
    Transport,
    anchor,
    differences,
)

pytestmark = pytest.mark.process

STILL_WAITING_S = 1.0
"""How long a waiter is watched to stay blocked while an older key exists."""

SHORT_TTL_S = 2
"""A lease left to expire (etcd's minimum TTL)."""

GIVE_UP_S = 1.0
"""How long a client that gives up waits for a lock."""


def deadline_outcome(error: grpc.RpcError) -> str:
    """How a call with a deadline ended: "deadline passed" whichever side's timer fired first.

    When the client's timer fires first, gRPC gives DEADLINE_EXCEEDED on either system. When
    the server's fires first, troika answers DEADLINE_EXCEEDED and etcd 3.4's lock service
    returns the context's error as it is, which its gRPC sends as Unknown `context deadline
    exceeded` (6 of 40 Locks with a 0.2 s deadline on etcd 3.4.23). Any other ending keeps its
    code, so a call answered for another reason still differs.
    """
    code, details = error.code(), error.details()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or (
        code == grpc.StatusCode.UNKNOWN and details == "context deadline exceeded"
    ):
        return "deadline passed"
    return str(code.name)


RPCS: dict[str, tuple[str, str, type[Message], type[Message]]] = {
    "grant": (
        "/v3/lease/grant",
        "/etcdserverpb.Lease/LeaseGrant",
        rpc_pb2.LeaseGrantRequest,
        rpc_pb2.LeaseGrantResponse,
    ),
    "revoke": (
        "/v3/lease/revoke",
        "/etcdserverpb.Lease/LeaseRevoke",
        rpc_pb2.LeaseRevokeRequest,
        rpc_pb2.LeaseRevokeResponse,
    ),
    "timetolive": (
        "/v3/lease/timetolive",
        "/etcdserverpb.Lease/LeaseTimeToLive",
        rpc_pb2.LeaseTimeToLiveRequest,
        rpc_pb2.LeaseTimeToLiveResponse,
    ),
    "range": (
        "/v3/kv/range",
        "/etcdserverpb.KV/Range",
        rpc_pb2.RangeRequest,
        rpc_pb2.RangeResponse,
    ),
    "lock": (
        "/v3/lock/lock",
        "/v3lockpb.Lock/Lock",
        v3lock_pb2.LockRequest,
        v3lock_pb2.LockResponse,
    ),
    "unlock": (
        "/v3/lock/unlock",
        "/v3lockpb.Lock/Unlock",
        v3lock_pb2.UnlockRequest,
        v3lock_pb2.UnlockResponse,
    ),
    "campaign": (
        "/v3/election/campaign",
        "/v3electionpb.Election/Campaign",
        v3election_pb2.CampaignRequest,
        v3election_pb2.CampaignResponse,
    ),
    "proclaim": (
        "/v3/election/proclaim",
        "/v3electionpb.Election/Proclaim",
        v3election_pb2.ProclaimRequest,
        v3election_pb2.ProclaimResponse,
    ),
    "leader": (
        "/v3/election/leader",
        "/v3electionpb.Election/Leader",
        v3election_pb2.LeaderRequest,
        v3election_pb2.LeaderResponse,
    ),
    "resign": (
        "/v3/election/resign",
        "/v3electionpb.Election/Resign",
        v3election_pb2.ResignRequest,
        v3election_pb2.ResignResponse,
    ),
}
"""name -> (gateway path, gRPC path, request type, response type)."""

OBSERVE = ("/v3/election/observe", "/v3electionpb.Election/Observe")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Side:
    """One system running a scenario: its calls, and what they answered, normalized."""

    def __init__(self, target: Target, transport: Transport, slug: str) -> None:
        self.target = target
        self.transport = transport
        self.prefix = f"/lockdiff/{target.name}/{transport}/{slug}"
        self.normalizer = Normalizer(anchor(target, transport, f"lock-{slug}"), self.prefix)
        self.leases: dict[str, int] = {}
        self.transcript: list[tuple[str, Any]] = []

    # -- calls ------------------------------------------------------------------------------

    def raw(self, rpc: str, body: dict[str, Any]) -> tuple[bool, Any]:
        """(True, the reply as gateway JSON) or (False, the error as this transport shows it)."""
        path, grpc_path, request_type, response_type = RPCS[rpc]
        if self.transport == "gateway":
            status, _headers, payload = self.target.http(
                "POST", path, json.dumps(body).encode(), "application/json"
            )
            document = json.loads(payload)
            return (True, document) if status == 200 else (False, {status: document})
        request = request_type()
        json_format.ParseDict(body, request)
        reply, error = self.target.grpc_call(grpc_path, request.SerializeToString())
        if error is not None:
            return False, list(error)
        assert reply is not None
        message = response_type.FromString(reply)
        return True, json_format.MessageToDict(message, preserving_proto_field_name=True)

    def call(self, label: str, rpc: str, body: dict[str, Any]) -> Any:
        """Make a call, record it normalized under ``label``; the raw reply (or None)."""
        ok, document = self.raw(rpc, body)
        self.transcript.append((label, self.normalize(document)))
        return document if ok else None

    def give_up(self, label: str, rpc: str, body: dict[str, Any]) -> None:
        """A call whose client stops waiting after :data:`GIVE_UP_S` (a gateway client that
        disconnects, a gRPC deadline); records how it ended."""
        path, grpc_path, request_type, _ = RPCS[rpc]
        if self.transport == "gateway":
            target = self.target
            connection = http.client.HTTPConnection(target.host, target.port, timeout=GIVE_UP_S)
            try:
                connection.request("POST", path, body=json.dumps(body).encode())
                connection.getresponse()
                ended = "answered"
            except TimeoutError:
                ended = "gave up"
            finally:
                connection.close()
        else:
            request = request_type()
            json_format.ParseDict(body, request)
            call = self.target.channel.unary_unary(grpc_path)
            try:
                call(request.SerializeToString(), timeout=GIVE_UP_S)
                ended = "answered"
            except grpc.RpcError as error:
                ended = deadline_outcome(error)
        time.sleep(GIVE_UP_S)  # the server notices and cleans up
        self.transcript.append((label, ended))

    def keys(self, label: str, suffix: str) -> None:
        """Record the keys under ``<prefix>/<suffix>/``."""
        start = f"{self.prefix}/{suffix}/"
        body = {"key": b64(start), "range_end": b64(start[:-1] + "0"), "keys_only": True}
        ok, reply = self.raw("range", body)
        assert ok, reply
        keys = [self._names(self.normalizer.text(kv["key"])) for kv in reply.get("kvs", [])]
        self.transcript.append((label, keys))

    def grant(self, name: str, ttl_s: int) -> None:
        ok, reply = self.raw("grant", {"TTL": ttl_s})
        assert ok, f"{self.target.name}: grant failed: {reply}"
        self.leases[name] = int(reply["ID"])
        self.transcript.append((f"grant {name}", self.normalize(reply)))

    def revoke_all(self) -> None:
        """Revoke every lease the scenario granted (none expires during a later one)."""
        for lease in self.leases.values():
            self.raw("revoke", {"ID": str(lease)})

    def lease(self, name: str) -> str:
        return str(self.leases[name])

    def name(self, suffix: str) -> str:
        return b64(f"{self.prefix}/{suffix}")

    # -- normalizing ------------------------------------------------------------------------

    def normalize(self, document: Any) -> Any:
        return self._names(self.normalizer.json(document))

    def _names(self, value: Any, field: str = "") -> Any:
        if isinstance(value, dict):
            return {key: self._names(item, key) for key, item in value.items()}
        if isinstance(value, list):
            return [self._names(item, field) for item in value]
        if not isinstance(value, str):
            return value
        if field == "rev" and value.isdigit():
            return self.normalizer.revision(value)
        if field == "name":
            return self.normalizer.text(value)
        for name, lease in self.leases.items():
            if value == str(lease):
                return name
            value = value.replace(f"/{lease:x}", f"/<{name}>")
        return value


# ---------------------------------------------------------------------------- streams


class Observer:
    """An Observe stream read in a thread; ``messages`` as they arrive, normalized later."""

    def __init__(self, side: Side, name: str) -> None:
        self.side = side
        self.messages: list[Any] = []
        self.ended: list[str] = []
        self._stop: Callable[[], None] = lambda: None
        self._thread = threading.Thread(target=self._run, args=(name,), daemon=True)
        self._thread.start()
        time.sleep(0.3)  # the stream is open (its first read has been served) before moving on

    def _run(self, name: str) -> None:
        body = {"name": name}
        if self.side.transport == "gateway":
            self._run_gateway(body)
        else:
            self._run_grpc(body)

    def _run_gateway(self, body: dict[str, Any]) -> None:
        target = self.side.target
        connection = http.client.HTTPConnection(target.host, target.port, timeout=60)
        self._stop = lambda: connection.sock.shutdown(2) if connection.sock else None
        try:
            connection.request("POST", OBSERVE[0], body=json.dumps(body).encode())
            response = connection.getresponse()
            while line := response.readline():
                self.messages.append(json.loads(line))
        except (OSError, http.client.HTTPException, ValueError) as error:
            self.ended.append(type(error).__name__)
        finally:
            connection.close()

    def _run_grpc(self, body: dict[str, Any]) -> None:
        request = v3election_pb2.LeaderRequest()
        json_format.ParseDict(body, request)
        call = self.side.target.channel.unary_stream(OBSERVE[1])(
            request.SerializeToString(), timeout=60
        )
        self._stop = call.cancel
        try:
            for reply in call:
                message = v3election_pb2.LeaderResponse.FromString(reply)
                document = json_format.MessageToDict(message, preserving_proto_field_name=True)
                self.messages.append({"result": document})
        except grpc.RpcError as error:
            self.ended.append(error.code().name)

    def stop(self) -> list[Any]:
        """Close the stream; the messages it carried, normalized."""
        time.sleep(0.3)  # let the last message in flight arrive
        self._stop()
        self._thread.join(REQUEST_TIMEOUT_S)
        return [self.side.normalize(message) for message in self.messages]


Pending = Future[tuple[bool, Any]]


def in_background(pool: ThreadPoolExecutor, side: Side, rpc: str, body: dict[str, Any]) -> Pending:
    """A call that is expected to block; its raw ``(ok, reply)`` later."""
    return pool.submit(side.raw, rpc, body)


def waiting(future: Pending) -> bool:
    """Whether a background call is still blocked after :data:`STILL_WAITING_S`."""
    time.sleep(STILL_WAITING_S)
    return not future.done()


def finished(side: Side, label: str, future: Pending) -> Any:
    ok, document = future.result(timeout=REQUEST_TIMEOUT_S)
    side.transcript.append((label, side.normalize(document)))
    return document if ok else None


# ---------------------------------------------------------------------------- scenarios


def lock_scenario(side: Side, pool: ThreadPoolExecutor) -> None:
    """Waiters in order; the same lease again; unlock and lease revocation hand the lock over;
    an unrenewed lease expires and its holder loses the lock; errors; a lock without lease."""
    for name in ("L1", "L2", "L3"):
        side.grant(name, 60)
    lock = side.name("lock")
    first = side.call("L1 locks", "lock", {"name": lock, "lease": side.lease("L1")})
    side.call("L1 locks again", "lock", {"name": lock, "lease": side.lease("L1")})
    second = in_background(pool, side, "lock", {"name": lock, "lease": side.lease("L2")})
    side.transcript.append(("L2 waits behind L1", waiting(second)))  # and has its key
    third = in_background(pool, side, "lock", {"name": lock, "lease": side.lease("L3")})
    side.transcript.append(("L3 waits behind L2", waiting(third)))
    side.call("L1 unlocks", "unlock", {"key": first["key"]})
    finished(side, "L2 holds", second)
    side.transcript.append(("L3 still waits", waiting(third)))
    side.call("L2's lease is revoked", "revoke", {"ID": side.lease("L2")})
    finished(side, "L3 holds", third)
    side.give_up("L1 gives up waiting", "lock", {"name": lock, "lease": side.lease("L1")})
    side.keys("L1's key is gone", "lock")

    side.grant("S", SHORT_TTL_S)
    short = side.name("short")
    side.call("S locks", "lock", {"name": short, "lease": side.lease("S")})
    after = in_background(pool, side, "lock", {"name": short, "lease": side.lease("L1")})
    side.transcript.append(("L1 waits behind S", waiting(after)))
    finished(side, "S's lease expires, L1 holds", after)  # within the request timeout

    side.call("unknown lease", "lock", {"name": lock, "lease": "1234"})
    side.call("unlock without a key", "unlock", {})
    side.call("unlock of a missing key", "unlock", {"key": side.name("nothing")})
    ok, own = side.raw("lock", {"name": side.name("own")})
    assert ok, f"{side.target.name}: lock without a lease failed: {own}"
    session = base64.b64decode(own["key"]).decode().rsplit("/", 1)[1]
    side.leases["session"] = int(session, 16)
    side.transcript.append(("lock without a lease", side.normalize(own)))
    ttl = side.call("the session lease", "timetolive", {"ID": side.lease("session")})
    side.transcript[-1] = ("the session lease", {"grantedTTL": ttl.get("grantedTTL")})
    side.revoke_all()


def election_scenario(side: Side, pool: ThreadPoolExecutor) -> None:
    """Campaigns queued; proclaim, resign, leader; errors; Observe's stream throughout."""
    for name in ("L1", "L2"):
        side.grant(name, 60)
    election = side.name("election")
    side.call("no leader yet", "leader", {"name": election})
    observer = Observer(side, election)
    first = side.call(
        "L1 campaigns", "campaign", {"name": election, "lease": side.lease("L1"), "value": b64("A")}
    )
    leader_a = first["leader"]
    side.call("leader", "leader", {"name": election})
    side.call(
        "L1 campaigns again",
        "campaign",
        {"name": election, "lease": side.lease("L1"), "value": b64("A2")},
    )
    side.call("A proclaims", "proclaim", {"leader": leader_a, "value": b64("A3")})
    second = in_background(
        pool,
        side,
        "campaign",
        {"name": election, "lease": side.lease("L2"), "value": b64("B")},
    )
    side.transcript.append(("L2 waits", waiting(second)))
    stale = dict(leader_a, rev=str(int(leader_a["rev"]) - 1))
    side.call("a stale key proclaims", "proclaim", {"leader": stale, "value": b64("X")})
    side.call("proclaim without a leader", "proclaim", {"value": b64("X")})
    side.call("resign without a leader", "resign", {})
    side.call("A resigns", "resign", {"leader": leader_a})
    leader_b = finished(side, "L2 leads", second)["leader"]
    side.call("leader", "leader", {"name": election})
    side.call("A resigns again", "resign", {"leader": leader_a})
    side.call("A proclaims after resigning", "proclaim", {"leader": leader_a, "value": b64("Y")})
    side.call("B proclaims", "proclaim", {"leader": leader_b, "value": b64("B2")})
    side.call("L2's lease is revoked", "revoke", {"ID": side.lease("L2")})
    side.call("no leader left", "leader", {"name": election})
    side.transcript.append(("observed", observer.stop()))
    side.revoke_all()


SCENARIOS = {"lock": lock_scenario, "election": election_scenario}


@pytest.fixture(scope="module")
def targets(
    troika_cluster: TroikaCluster, etcd_cluster: EtcdCluster
) -> Iterator[tuple[Target, Target]]:
    troika = Target("troika", troika_cluster.client_urls[0])
    etcd = Target("etcd", etcd_cluster.client_urls[0])
    yield troika, etcd
    troika.close()
    etcd.close()


def run_both(
    scenario: Callable[[Side, ThreadPoolExecutor], None],
    transport: Transport,
    slug: str,
    targets: tuple[Target, Target],
) -> list[str]:
    """Run a scenario on both systems at once (so lease timings match); the differences."""
    sides = [Side(target, transport, slug) for target in targets]
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = [pool.submit(scenario, side, pool) for side in sides]
        for run in runs:
            run.result(timeout=120)
    troika, etcd = (side.transcript for side in sides)
    found = [f"steps: troika {len(troika)}, etcd {len(etcd)}"] if len(troika) != len(etcd) else []
    for (label, left), (_, right) in zip(troika, etcd, strict=False):
        found.extend(f"{label}: {difference}" for difference in differences(left, right))
    return found


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lock_and_election_match_etcd(
    scenario: str, transport: Transport, targets: tuple[Target, Target]
) -> None:
    found = run_both(SCENARIOS[scenario], transport, scenario, targets)
    assert not found, "\n".join(found)


# ---------------------------------------------------------------------------- etcdctl

ETCDCTL = shutil.which("etcdctl")
ETCDCTL_TIMEOUT_S = 30.0


def etcdctl_sessions(endpoints: str, name: str) -> dict[str, Any]:
    """``etcdctl lock`` and ``etcdctl elect`` (clientv3's client-side Mutex and Election, on
    leases, txns and watches): a holder, a waiter that runs a command once the holder is
    stopped, two candidates in turn and an observer (``elect -l``). What each printed."""
    assert ETCDCTL is not None
    env = dict(os.environ, ETCDCTL_API="3")

    def start(*args: str) -> subprocess.Popen[str]:
        command = [ETCDCTL, "--endpoints", endpoints, *args]
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)

    def stop(process: subprocess.Popen[str]) -> str:
        process.terminate()  # etcdctl closes its session (revokes its lease) and exits
        return process.communicate(timeout=ETCDCTL_TIMEOUT_S)[0]

    found: dict[str, Any] = {}
    holder = start("lock", f"{name}/lock")
    assert holder.stdout is not None
    found["holder"] = holder.stdout.readline().strip().rsplit("/", 1)[0]
    waiter = start("lock", f"{name}/lock", "echo", "waited")
    time.sleep(STILL_WAITING_S)
    found["waiter waits"] = waiter.poll() is None
    stop(holder)
    found["waiter"] = waiter.communicate(timeout=ETCDCTL_TIMEOUT_S)[0].split()

    first = start("elect", f"{name}/elect", "p1")
    assert first.stdout is not None
    found["first candidate"] = first.stdout.readline().strip().rsplit("/", 1)[0]
    observer = start("elect", "-l", f"{name}/elect")
    time.sleep(STILL_WAITING_S)
    second = start("elect", f"{name}/elect", "p2")
    time.sleep(STILL_WAITING_S)
    found["second waits"] = second.poll() is None
    stop(first)
    assert second.stdout is not None
    found["second candidate"] = second.stdout.readline().strip().rsplit("/", 1)[0]
    time.sleep(STILL_WAITING_S)
    stop(second)
    lines = stop(observer).split()
    found["observed"] = [line for line in lines if line in ("p1", "p2")]
    return found


@pytest.mark.skipif(ETCDCTL is None, reason="etcdctl is not installed")
def test_etcdctl_lock_and_elect_match_etcd(
    troika_cluster: TroikaCluster, etcd_cluster: EtcdCluster
) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [
            pool.submit(etcdctl_sessions, ",".join(cluster.client_urls), "/etcdctl")
            for cluster in (troika_cluster, etcd_cluster)
        ]
        troika, etcd = (run.result(timeout=120) for run in runs)
    assert etcd["observed"] == ["p1", "p2"], etcd  # the scenario shows what it should
    assert etcd["waiter"] == ["waited"], etcd
    assert troika == etcd


# ---------------------------------------------------------------------------- failover

FAILOVER_TIMEOUT_S = 30.0


def with_retries(target: Target, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A gateway call repeated until it succeeds (requests fail while there is no leader)."""
    deadline = time.monotonic() + FAILOVER_TIMEOUT_S
    while True:
        try:
            status, _, payload = target.http("POST", path, json.dumps(body).encode(), None)
        except OSError:
            status, payload = 0, b""
        if status == 200:
            reply: dict[str, Any] = json.loads(payload)
            return reply
        assert time.monotonic() < deadline, f"{target.name} {path}: {status} {payload!r}"
        time.sleep(0.2)


def failover_run(cluster: TroikaCluster | EtcdCluster, name: str) -> dict[str, Any]:
    """A holder and a waiter on a follower; kill -9 the leader; the holder unlocks through
    the follower once a new leader is elected; the waiter (its wait spanning the failover)
    gets the lock. What each step showed."""
    leader = cluster.wait_for_leader()
    follower = next(index for index in range(len(cluster.client_urls)) if index != leader)
    target = Target(name, cluster.client_urls[follower])
    lock = b64(f"/failover/{name}")
    found: dict[str, Any] = {}
    try:
        first = with_retries(target, "/v3/lease/grant", {"TTL": 60})["ID"]
        second = with_retries(target, "/v3/lease/grant", {"TTL": 60})["ID"]
        held = with_retries(target, "/v3/lock/lock", {"name": lock, "lease": first})["key"]
        with ThreadPoolExecutor(max_workers=1) as pool:
            body = json.dumps({"name": lock, "lease": second}).encode()
            waiter = pool.submit(target.http, "POST", "/v3/lock/lock", body, None)
            time.sleep(STILL_WAITING_S)
            found["waits"] = not waiter.done()
            cluster.kill(leader)
            cluster.wait_for_leader()
            with_retries(target, "/v3/lock/unlock", {"key": held})
            status, _, payload = waiter.result(timeout=FAILOVER_TIMEOUT_S)
        found["waiter"] = status
        if status == 200:
            key = base64.b64decode(json.loads(payload)["key"]).decode()
            found["key"] = key.replace(f"{int(second):x}", "<second>")
    finally:
        target.close()
        if not cluster.is_running(leader):
            cluster.restart(leader)
    return found


def test_a_wait_spans_a_leader_failover_as_on_etcd(
    troika_cluster: TroikaCluster, etcd_cluster: EtcdCluster
) -> None:
    troika = failover_run(troika_cluster, "troika")
    etcd = failover_run(etcd_cluster, "etcd")
    assert etcd == {"waits": True, "waiter": 200, "key": "/failover/etcd/<second>"}
    assert troika == {"waits": True, "waiter": 200, "key": "/failover/troika/<second>"}
