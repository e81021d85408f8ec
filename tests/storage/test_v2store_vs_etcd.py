"""Differential test: random v2 requests sent to a real etcd 3.4 (``--enable-v2``) and applied
to a ``V2Store`` must get the same status, ``X-Etcd-Index`` and JSON (expiration times aside).

Needs the ``etcd`` binary; starts one member on loopback on free ports and stops it by its
process at the end. Slow: run with ``pytest -m slow tests/storage/test_v2store_vs_etcd.py``.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from net.v2json import error_json, error_status, event_json
from storage.v2store import V2Error, V2Request, V2Store

pytestmark = [pytest.mark.slow, pytest.mark.process]

ETCD = shutil.which("etcd")
PATHS = ["/a", "/a/b", "/a/b/c", "/a/_h", "/d", "/d/e", "/_top", "/q", "/q/x", "/d/e/f"]
SECOND = 1_000_000_000
TTL_SECONDS = 1000  # long enough that nothing expires during a run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bootstrapped(client: str) -> bool:
    """etcd answers and its own first writes are in (its member's attributes, the cluster
    version), so the index a test reads first stays put; /v2/keys answers before they are."""
    try:
        with urllib.request.urlopen(client + "/version", timeout=1) as answer:
            cluster_version = json.load(answer)["etcdcluster"]
        with urllib.request.urlopen(client + "/v2/members", timeout=1) as answer:
            members = json.load(answer)["members"]
    except OSError:
        return False
    return cluster_version != "not_decided" and all(member["clientURLs"] for member in members)


@pytest.fixture
def etcd_url(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if "slow" not in request.config.getoption("markexpr", ""):
        pytest.skip("slow: select with -m slow")
    if ETCD is None:
        pytest.skip("etcd is not installed")
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            ETCD,
            "--name=ref",
            f"--data-dir={tmp_path / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=ref={peer}",
            "--enable-v2=true",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not bootstrapped(client):
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd at {client} did not finish its first writes in 20 s")
            time.sleep(0.1)
        yield client
    finally:
        process.terminate()
        process.wait(timeout=20)


def call_etcd(
    base: str, method: str, path: str, form: dict[str, str], query: dict[str, str]
) -> tuple[int, str, Any]:
    url = base + "/v2/keys" + path + ("?" + urllib.parse.urlencode(query) if query else "")
    data = urllib.parse.urlencode(form).encode() if form else None
    request = urllib.request.Request(url, data=data, method=method)
    if data:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["X-Etcd-Index"], json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers["X-Etcd-Index"], json.loads(error.read())


def without_times(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: without_times(v) for k, v in value.items() if k not in ("expiration", "ttl")}
        if "expiration" in value:
            out["has_expiration"] = True
        return out
    if isinstance(value, list | tuple):
        return [without_times(item) for item in value]
    return value


def random_call(
    rng: random.Random,
) -> tuple[str, str, dict[str, str], dict[str, str], dict[str, Any]]:
    """A request as HTTP form and query, and as V2Request fields (without times)."""
    path = rng.choice(PATHS)
    method = rng.choice(["PUT"] * 6 + ["DELETE"] * 3 + ["POST", "GET", "GET"])
    form: dict[str, str] = {}
    query: dict[str, str] = {}
    fields: dict[str, Any] = {}
    if method in ("PUT", "POST"):
        form["value"] = fields["value"] = rng.choice(["", "v", "w"])
        if rng.random() < 0.2:
            form["ttl"] = str(TTL_SECONDS)
            fields["ttl"] = True
    if method == "PUT":
        if rng.random() < 0.15:
            query["dir"], fields["dir"] = "true", True
        choice = rng.randrange(5)
        if choice == 1:
            exist = rng.random() < 0.5
            query["prevExist"], fields["prev_exist"] = str(exist).lower(), exist
        elif choice == 2:
            query["prevValue"] = fields["prev_value"] = rng.choice(["v", "w"])
        elif choice == 3:
            index = rng.randrange(1, 40)
            query["prevIndex"], fields["prev_index"] = str(index), index
        elif choice == 4 and "ttl" in form:
            del form["value"]
            fields["value"] = ""
            query["refresh"], fields["refresh"] = "true", True
            if rng.random() < 0.5:
                query["prevExist"], fields["prev_exist"] = "true", True
    elif method == "DELETE":
        if rng.random() < 0.3:
            query["prevValue"] = fields["prev_value"] = rng.choice(["v", "w"])
        else:
            if rng.random() < 0.5:
                query["dir"], fields["dir"] = "true", True
            if rng.random() < 0.5:
                query["recursive"], fields["recursive"] = "true", True
    elif method == "GET":
        query["sorted"], fields["sorted"] = "true", True
        if rng.random() < 0.5:
            query["recursive"], fields["recursive"] = "true", True
    return method, path, form, query, fields


@pytest.mark.parametrize("seed", range(3))
def test_same_replies_as_etcd(etcd_url: str, seed: int) -> None:
    rng = random.Random(seed)
    _, start_index, _ = call_etcd(etcd_url, "GET", "/", {}, {})
    store = V2Store(track_changes=False)
    store.restore(cbor2.dumps([1, int(start_index), [], []]))  # etcd's bootstrap writes
    for step in range(300):
        method, path, form, query, fields = random_call(rng)
        theirs = call_etcd(etcd_url, method, path, form, query)
        now_ns = time.time_ns()
        if fields.pop("ttl", False):
            fields["expiration_ns"] = now_ns + TTL_SECONDS * SECOND
        try:
            event = store.apply(V2Request(method, path, time_ns=now_ns, **fields))
            assert event is not None
            ours = (201 if event.created() else 200, str(event.etcd_index), event_json(event))
        except V2Error as error:
            ours = (error_status(error), str(error.index), error_json(error))
        assert without_times(ours) == without_times(theirs), (step, method, path, query, form)
