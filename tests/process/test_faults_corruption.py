"""Flipped bytes in a real member's data directory: refused at start-up with a clear error,
never served as wrong answers.

A one-member ``troika serve`` cluster takes ``KEYS`` v2 writes and ``KEYS`` v3 writes. Two
images of its data directory are kept: after ``kill -9`` (the writes still in RocksDB's
write-ahead log) and after a clean stop (the writes in a table file). For each case a fresh
copy of an image gets one byte flipped, and the member is started on it:

- write-ahead log, table file, MANIFEST, CURRENT: the member must not start; its log must
  show ``StorageCorrupted`` naming the damaged file and saying what to do
  (``storage.integrity.WHAT_TO_DO``);
- files RocksDB never reads back (LOG, OPTIONS, IDENTITY, rocksdict's config): the member
  starts and every key reads back right.

Before ``storage.integrity``, a byte flipped in the middle of the write-ahead log made the
member start and answer 404 for keys it had acknowledged (RocksDB's point-in-time recovery
stops at the damage without a word), and a flipped MANIFEST length made it start empty.
"""

from __future__ import annotations

import base64
import json
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest

from bench.clusters import ClusterError, TroikaCluster
from storage.integrity import WHAT_TO_DO

pytestmark = pytest.mark.process

KEYS = 200
REQUEST_TIMEOUT_S = 10.0
STARTUP_TIMEOUT_S = 20.0


def v2_value(number: int) -> str:
    return f"value-{number:04d}-" + "z" * 200


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def call(url: str, method: str, body: bytes = b"", content_type: str = "") -> bytes:
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(url, data=body or None, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as reply:
        data: bytes = reply.read()
        return data


def write_keys(url: str) -> None:
    for number in range(KEYS):
        form = urlencode({"value": v2_value(number)}).encode()
        call(f"{url}/v2/keys/k{number:04d}", "PUT", form, "application/x-www-form-urlencoded")
        put = {"key": b64(b"v3-%04d" % number), "value": b64(b"val-%04d" % number)}
        call(f"{url}/v3/kv/put", "POST", json.dumps(put).encode(), "application/json")


def wrong_reads(url: str) -> list[str]:
    """Every key read back (v2 and v3, linearizable); what is missing or wrong."""
    wrong = []
    for number in range(KEYS):
        try:
            node = json.loads(call(f"{url}/v2/keys/k{number:04d}?quorum=true", "GET"))["node"]
            if node["value"] != v2_value(number):
                wrong.append(f"v2 k{number}: {node['value'][:20]!r}")
        except OSError as error:
            wrong.append(f"v2 k{number}: {error}")
    ranged = json.loads(
        call(
            f"{url}/v3/kv/range",
            "POST",
            json.dumps({"key": b64(b"v3-"), "range_end": b64(b"v3."), "limit": 0}).encode(),
            "application/json",
        )
    )
    seen = {base64.b64decode(kv["key"]): base64.b64decode(kv["value"]) for kv in ranged["kvs"]}
    expected = {b"v3-%04d" % n: b"val-%04d" % n for n in range(KEYS)}
    if seen != expected:
        right = sum(seen.get(key) == value for key, value in expected.items())
        wrong.append(f"v3: {len(seen)} keys, {right} right")
    return wrong


@dataclass
class Images:
    cluster: TroikaCluster
    crashed: Path
    closed: Path

    @property
    def db(self) -> Path:
        return self.cluster.data_dir(0) / "db"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    root = tmp_path_factory.mktemp("corruption")
    with TroikaCluster(1, root / "cluster", startup_timeout_s=STARTUP_TIMEOUT_S) as cluster:
        write_keys(cluster.client_urls[0])
        db = cluster.data_dir(0) / "db"
        cluster.kill(0)
        shutil.copytree(db, root / "crashed")
        cluster.restart(0)
        assert wrong_reads(cluster.client_urls[0]) == []
        cluster.stop()
        shutil.copytree(db, root / "closed")
        yield Images(cluster, root / "crashed", root / "closed")


def start_on_flipped(images: Images, image: Path, pattern: str, fraction: float) -> Path:
    """Put a copy of ``image`` in place with one byte flipped in the largest file matching
    ``pattern``; the flipped file."""
    if images.cluster.is_running(0):
        images.cluster.kill(0)
    shutil.rmtree(images.db)
    shutil.copytree(image, images.db)
    candidates = [file for file in images.db.glob(pattern) if file.is_file()]
    target = max(candidates, key=lambda file: (file.stat().st_size, file.name))
    data = bytearray(target.read_bytes())
    data[int(len(data) * fraction)] ^= 0x10
    target.write_bytes(bytes(data))
    return target


REFUSED = [
    ("crashed", "*.log", 0.1),
    ("crashed", "*.log", 0.5),
    ("crashed", "*.log", 0.9),
    ("closed", "*.sst", 0.1),
    ("closed", "*.sst", 0.5),
    ("closed", "*.sst", 0.9),
    ("closed", "MANIFEST-*", 0.3),
    ("closed", "MANIFEST-*", 0.7),
    ("closed", "CURRENT", 0.5),
]


@pytest.mark.parametrize(("image", "pattern", "fraction"), REFUSED)
def test_a_flipped_byte_in_what_the_store_reads_stops_the_member_with_a_clear_error(
    images: Images, image: str, pattern: str, fraction: float
) -> None:
    damaged = start_on_flipped(images, getattr(images, image), pattern, fraction)
    log_before = images.cluster.log_path(0).stat().st_size
    with pytest.raises(ClusterError):
        images.cluster.restart(0)
    assert not images.cluster.is_running(0)
    log = images.cluster.log_path(0).read_text()[log_before:]
    assert "StorageCorrupted" in log
    named = str(damaged) if pattern != "CURRENT" else "CURRENT"
    assert named in log, log[-2000:]
    assert WHAT_TO_DO[:60] in log


INERT = [("closed", "LOG", 0.5), ("closed", "OPTIONS-*", 0.5), ("crashed", "IDENTITY", 0.5)]


@pytest.mark.parametrize(("image", "pattern", "fraction"), INERT)
def test_a_flipped_byte_in_a_file_never_read_back_changes_nothing(
    images: Images, image: str, pattern: str, fraction: float
) -> None:
    start_on_flipped(images, getattr(images, image), pattern, fraction)
    images.cluster.restart(0)
    assert wrong_reads(images.cluster.client_urls[0]) == []
    images.cluster.stop()
