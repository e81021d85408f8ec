"""Real v3 clients' watches, unchanged, against troika (3 member processes) and etcd 3.4
(3 members), the same operations on both and what the clients report compared:

- ``ETCDCTL_API=3 etcdctl watch`` (gRPC): ``--prefix --prev-kv`` while writes happen, and
  ``--rev`` from a past revision;
- python ``etcd3`` (gRPC, in a subprocess with ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``):
  ``watch_prefix`` with ``prev_kv``, a txn's events, ``watch`` from a past revision, cancel;
- ``etcd3gw`` (the gateway's ``/v3/watch``): ``watch_prefix``, ``watch`` from a past revision
  with ``prev_kv``, cancel.

Revisions are compared as deltas from an anchor put made by the same client.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import etcd3gw
import pytest

from bench.clusters import EtcdCluster, TroikaCluster

pytestmark = pytest.mark.process

ETCDCTL = shutil.which("etcdctl")
CLIENT_TIMEOUT_S = 60.0
SETTLE_S = 1.0
"""How long a watch command is given to start before the writes (and to print after)."""


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//")[1].rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="module")
def urls(troika_cluster: TroikaCluster, etcd_cluster: EtcdCluster) -> tuple[str, str]:
    return troika_cluster.client_urls[0], etcd_cluster.client_urls[0]


# ---------------------------------------------------------------------------- python etcd3

ETCD3_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import etcd3

    host, port, p = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    client = etcd3.client(host=host, port=port, timeout=20)
    base = client.put(p + "/_anchor", "x").header.revision

    def show(event):
        return [type(event).__name__, event.key.decode(), event.value.decode(),
                event.mod_revision - base, event.version,
                getattr(event, "prev_value", b"").decode()]

    events, cancel = client.watch_prefix(p + "/w/", prev_kv=True)
    client.put(p + "/w/a", "1")
    client.put(p + "/w/a", "2")
    client.delete(p + "/w/a")
    client.put(p + "/x", "not watched")
    client.transaction(compare=[], success=[client.transactions.put(p + "/w/b", "b"),
                                            client.transactions.put(p + "/w/c", "c")],
                       failure=[])
    live = [show(next(events)) for _ in range(5)]
    cancel()
    past, cancel_past = client.watch(p + "/w/a", start_revision=base + 1)
    replayed = [show(next(past)) for _ in range(3)]
    cancel_past()
    print(json.dumps({"live": live, "replayed": replayed}))
    """
)


def run_etcd3(url: str, prefix: str) -> Any:
    host, port = host_port(url)
    environment = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    done = subprocess.run(
        [sys.executable, "-c", ETCD3_SCRIPT, host, str(port), prefix],
        env=environment,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_python_etcd3_watches(urls: tuple[str, str]) -> None:
    troika, etcd = (run_etcd3(url, "/etcd3-watch") for url in urls)
    assert etcd["live"][0] == ["PutEvent", "/etcd3-watch/w/a", "1", 1, 1, ""]
    assert troika == etcd


# ---------------------------------------------------------------------------- etcd3gw


def _text(value: bytes | str) -> str:
    """etcd3gw decodes an event's ``kv`` but hands ``prev_kv`` on as the gateway sent it."""
    return value.decode() if isinstance(value, bytes) else base64.b64decode(value).decode()


def _events(iterator: Iterator[Any], count: int, base: int) -> list[Any]:
    shown = []
    for _ in range(count):
        event = next(iterator)
        kv = event["kv"]
        prev = event.get("prev_kv", {})
        shown.append(
            [
                event.get("type", "PUT"),
                kv["key"].decode(),
                kv.get("value", b"").decode(),
                int(kv["mod_revision"]) - base,
                int(kv.get("version", 0)),
                _text(prev.get("value", "")) if prev else None,
            ]
        )
    return shown


def run_etcd3gw(url: str, prefix: str) -> Any:
    host, port = host_port(url)
    client = etcd3gw.Etcd3Client(host=host, port=port, timeout=20)
    client.put(prefix + "/_anchor", "x")
    [(_, anchor)] = client.get(prefix + "/_anchor", metadata=True)
    base = int(anchor["mod_revision"])
    events, cancel = client.watch_prefix(prefix + "/w/")
    result: dict[str, Any] = {}

    def read() -> None:
        result["live"] = _events(events, 3, base)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(SETTLE_S)
    client.put(prefix + "/w/a", "1")
    client.put(prefix + "/w/a", "2")
    client.delete(prefix + "/w/a")
    reader.join(CLIENT_TIMEOUT_S)
    cancel()
    past, cancel_past = client.watch(prefix + "/w/a", start_revision=base + 1, prev_kv=True)
    result["replayed"] = _events(past, 3, base)
    cancel_past()
    return result


def test_etcd3gw_watches(urls: tuple[str, str]) -> None:
    troika, etcd = (run_etcd3gw(url, "/etcd3gw-watch") for url in urls)
    assert etcd["live"][2][0] == "DELETE"
    assert troika == etcd


# ---------------------------------------------------------------------------- etcdctl


def etcdctl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert ETCDCTL is not None
    environment = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run(
        [ETCDCTL, f"--endpoints={url}", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=True,
    )


def run_etcdctl(url: str, prefix: str) -> Any:
    assert ETCDCTL is not None
    anchor = etcdctl(url, "put", prefix + "/_anchor", "x", "-w", "json")
    base = int(json.loads(anchor.stdout)["header"]["revision"])
    environment = dict(os.environ, ETCDCTL_API="3")
    watcher = subprocess.Popen(
        [ETCDCTL, f"--endpoints={url}", "watch", "--prefix", "--prev-kv", prefix + "/w/"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(SETTLE_S)
        etcdctl(url, "put", prefix + "/w/a", "1")
        etcdctl(url, "put", prefix + "/w/a", "2")
        etcdctl(url, "del", prefix + "/w/a")
        time.sleep(SETTLE_S)
    finally:
        watcher.terminate()
        live, _ = watcher.communicate(timeout=CLIENT_TIMEOUT_S)
    past = subprocess.Popen(
        [ETCDCTL, f"--endpoints={url}", "watch", "--rev", str(base + 1), prefix + "/w/a"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(SETTLE_S)
    finally:
        past.terminate()
        replayed, _ = past.communicate(timeout=CLIENT_TIMEOUT_S)
    return {"live": live.splitlines(), "replayed": replayed.splitlines()}


@pytest.mark.skipif(ETCDCTL is None, reason="etcdctl is not installed")
def test_etcdctl_watches(urls: tuple[str, str]) -> None:
    troika, etcd = (run_etcdctl(url, "/etcdctl-watch") for url in urls)
    assert etcd["live"][:3] == ["PUT", "/etcdctl-watch/w/a", "1"]
    assert troika == etcd
