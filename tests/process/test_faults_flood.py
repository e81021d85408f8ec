"""A flood on the leader's client port never starves peer traffic or elections.

A 3-process troika cluster. For ``FLOOD_S`` seconds the leader's client port gets, all at
once, from this process:

- ``SLOWLORIS_CONNECTIONS`` connections that send a request header a byte a second (the
  server must cut them with 408 after its header timeout of 10 s);
- idle connections that say nothing, enough to fill the listener's bound
  (``CONNECTIONS_MAX``) with the others;
- ``HAMMERS`` keep-alive connections sending quorum reads and writes as fast as they can
  (real work for the leader: ReadIndex rounds and proposals);
- a thread that opens connections past the bound as fast as it can (each answered 503
  while the listener is full, served once the slowloris connections are cut).

Meanwhile a writer puts a key through a follower every ``WRITE_INTERVAL_S`` (a follower hands
proposals to the leader over the peer port, and a quorum write needs the leader's heartbeats and
appends to reach the followers). The test asserts that the leader and its term never changed
(no election: the followers heard the leader all along), that every write was acknowledged,
each within ``WRITE_LATENCY_MAX_S``, that the flood did fill the listener (503s seen, slowloris
connections cut with 408), and that the leader serves clients once the flood stops.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from bench.clusters import TroikaCluster, http_get_json
from net.http.server import CONNECTIONS_MAX, HEADER_TIMEOUT_SECONDS

pytestmark = pytest.mark.process

FLOOD_S = 15.0
SLOWLORIS_CONNECTIONS = 50
HAMMERS = 4
IDLE_CONNECTIONS = CONNECTIONS_MAX - SLOWLORIS_CONNECTIONS - HAMMERS
WRITE_INTERVAL_S = 0.1
WRITE_LATENCY_MAX_S = 2.0
"""Longer than a commit on a busy 2-core machine, shorter than an election would take."""
REQUEST_TIMEOUT_S = 5.0
WRITES_MIN = 50


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TroikaCluster]:
    with TroikaCluster(3, tmp_path_factory.mktemp("flood")) as started:
        yield started


def address_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


@dataclass
class FloodCounts:
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: dict[str, int] = field(default_factory=dict)
    slowloris_408: int = 0

    def count(self, what: str) -> None:
        with self.lock:
            self.statuses[what] = self.statuses.get(what, 0) + 1


def hammer(address: tuple[str, int], stop: threading.Event, counts: FloodCounts) -> None:
    """Quorum reads and writes on one keep-alive connection, as fast as answers come."""
    connection = http.client.HTTPConnection(*address, timeout=REQUEST_TIMEOUT_S)
    number = 0
    while not stop.is_set():
        number += 1
        try:
            if number % 2:
                connection.request("GET", "/v2/keys/flood?quorum=true")
            else:
                connection.request(
                    "PUT",
                    "/v2/keys/flood",
                    body=f"value={number}",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
            reply = connection.getresponse()
            reply.read()
            counts.count(f"hammer {reply.status}")
        except (OSError, http.client.HTTPException) as error:
            counts.count(f"hammer {type(error).__name__}")
            connection.close()
    connection.close()


def over_the_bound(address: tuple[str, int], stop: threading.Event, counts: FloodCounts) -> None:
    """New connections as fast as they are answered, each a quorum read, then closed."""
    request = b"GET /v2/keys/flood?quorum=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    while not stop.is_set():
        try:
            with socket.create_connection(address, timeout=REQUEST_TIMEOUT_S) as connection:
                connection.sendall(request)
                head = connection.recv(64)
                counts.count(head[9:12].decode(errors="replace") if head else "closed")
        except OSError as error:
            counts.count(type(error).__name__)


def open_slowloris(address: tuple[str, int]) -> list[socket.socket]:
    connections = []
    for _ in range(SLOWLORIS_CONNECTIONS):
        connection = socket.create_connection(address, timeout=REQUEST_TIMEOUT_S)
        connection.sendall(b"GET /v2/keys/slow HTTP/1.1\r\nHost: x\r\n")
        connection.setblocking(False)
        connections.append(connection)
    return connections


def slowloris(connections: list[socket.socket], stop: threading.Event, counts: FloodCounts) -> None:
    """Sends each connection one more header byte a second, until the server answers."""
    answered: set[int] = set()
    while not stop.wait(1.0):
        for number, connection in enumerate(connections):
            if number in answered:
                continue
            try:
                data = connection.recv(64)
                if data.startswith(b"HTTP/1.1 408"):
                    counts.slowloris_408 += 1
                answered.add(number)
                continue
            except BlockingIOError:
                pass
            except OSError:
                answered.add(number)
                continue
            try:
                connection.send(b"X")
            except OSError:
                answered.add(number)
    for connection in connections:
        connection.close()


@dataclass
class Writes:
    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    terms: set[str] = field(default_factory=set)


def writer(url: str, stop: threading.Event, writes: Writes) -> None:
    host, port = address_of(url)
    number = 0
    while not stop.is_set():
        number += 1
        began = time.monotonic()
        connection = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)
        try:
            connection.request(
                "PUT",
                f"/v2/keys/during-flood/{number}",
                body=f"value={number}",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            reply = connection.getresponse()
            reply.read()
            if reply.status != 201:
                writes.failures.append(f"write {number}: {reply.status}")
            else:
                writes.latencies_s.append(time.monotonic() - began)
                writes.terms.add(reply.headers["X-Raft-Term"])
        except OSError as error:
            writes.failures.append(f"write {number}: {error!r}")
        finally:
            connection.close()
        stop.wait(WRITE_INTERVAL_S)


def leaders_seen(cluster: TroikaCluster, indexes: list[int]) -> set[str]:
    return {
        http_get_json(cluster.client_urls[index] + "/v2/stats/self")["leaderInfo"]["leader"]
        for index in indexes
    }


def test_a_client_port_flood_on_the_leader_starves_neither_peers_nor_elections(
    cluster: TroikaCluster,
) -> None:
    leader = cluster.wait_for_leader()
    followers = [index for index in range(cluster.size) if index != leader]
    before = leaders_seen(cluster, followers)
    target = address_of(cluster.client_urls[leader])

    stop = threading.Event()
    counts = FloodCounts()
    trickling = open_slowloris(target)
    idle = [
        socket.create_connection(target, timeout=REQUEST_TIMEOUT_S) for _ in range(IDLE_CONNECTIONS)
    ]
    writes = Writes()
    threads = [
        threading.Thread(target=slowloris, args=(trickling, stop, counts)),
        *(threading.Thread(target=hammer, args=(target, stop, counts)) for _ in range(HAMMERS)),
        threading.Thread(target=over_the_bound, args=(target, stop, counts)),
        threading.Thread(target=writer, args=(cluster.client_urls[followers[0]], stop, writes)),
    ]
    try:
        for thread in threads:
            thread.start()
        seen_during: set[str] = set()
        deadline = time.monotonic() + FLOOD_S
        while time.monotonic() < deadline:
            seen_during |= leaders_seen(cluster, followers)
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for connection in idle:
            connection.close()

    assert seen_during == before, "the followers saw another leader during the flood"
    assert len(writes.terms) == 1, f"the term moved: {writes.terms}"
    assert writes.failures == []
    assert len(writes.latencies_s) >= WRITES_MIN
    assert max(writes.latencies_s) < WRITE_LATENCY_MAX_S
    assert counts.statuses.get("503", 0) > 0, counts.statuses  # the listener was full
    assert FLOOD_S > HEADER_TIMEOUT_SECONDS
    assert counts.slowloris_408 == SLOWLORIS_CONNECTIONS
    assert counts.statuses.get("hammer 200", 0) > 0, counts.statuses
    # After the flood the leader serves clients again.
    reply = http_get_json(cluster.client_urls[leader] + "/v2/keys/during-flood/1")
    assert reply["node"]["value"] == "1"
    print(
        f"flood: {len(writes.latencies_s)} writes through a follower, slowest "
        f"{max(writes.latencies_s) * 1000:.0f} ms; hammer answers {counts.statuses}; "
        f"slowloris cut with 408: {counts.slowloris_408}"
    )
