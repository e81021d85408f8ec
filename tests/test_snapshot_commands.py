"""``troika snapshot restore|status``: a backup file into a founder's data directory, and the
refusals (a damaged file, a data directory that exists, flags that disagree)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from typer.testing import CliRunner

from actors.bootstrap import MemberConfig, open_state
from storage.kv import RocksKeyValueStore
from storage.snapshot_file import SnapshotHeader, snapshot_body, with_digest
from troika.cli import app

CLUSTER = "r1=http://127.0.0.1:2380,r2=http://127.0.0.1:2381"
RESTORE = [
    "--name", "r1",
    "--initial-cluster", CLUSTER,
    "--initial-cluster-token", "t",
    "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
]  # fmt: skip


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    """A backup of an empty store (no records: the MVCC store starts at revision 1)."""
    path = tmp_path / "backup.db"
    path.write_bytes(with_digest(snapshot_body(SnapshotHeader(1, 2, 3, 1, 0, 0), [])))
    return path


def test_restore_writes_a_founder_that_opens(backup: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "r1"
    done = CliRunner().invoke(
        app, ["snapshot", "restore", str(backup), "--data-dir", str(data_dir), *RESTORE]
    )
    assert done.exit_code == 0, done.output
    assert "restored snapshot (revision 1, 0 records)" in done.output

    async def opened() -> list[str]:
        kv = RocksKeyValueStore(data_dir / "db")
        try:
            config = MemberConfig(
                name="r1",
                initial_cluster={"r1": ["http://127.0.0.1:2380"], "r2": ["http://127.0.0.1:2381"]},
                initial_cluster_token="t",
            )
            state = await open_state(config, kv)
            return [m.name for m in state.machine.membership.sorted_members()]
        finally:
            kv.close()

    assert sorted(trio.run(opened)) == ["r1", "r2"]
    again = CliRunner().invoke(
        app, ["snapshot", "restore", str(backup), "--data-dir", str(data_dir), *RESTORE]
    )
    assert again.exit_code == 1
    assert "exists" in again.output


def test_restore_refuses_a_damaged_file_and_disagreeing_flags(backup: Path, tmp_path: Path) -> None:
    data = bytearray(backup.read_bytes())
    data[3] ^= 1
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(bytes(data))
    done = CliRunner().invoke(
        app, ["snapshot", "restore", str(damaged), "--data-dir", str(tmp_path / "a"), *RESTORE]
    )
    assert done.exit_code == 1
    assert "sha256" in done.output
    wrong = [*RESTORE[:-1], "http://127.0.0.1:9999"]
    done = CliRunner().invoke(
        app, ["snapshot", "restore", str(backup), "--data-dir", str(tmp_path / "b"), *wrong]
    )
    assert done.exit_code == 1
    assert "--initial-advertise-peer-urls" in done.output
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


def test_status(backup: Path) -> None:
    done = CliRunner().invoke(app, ["snapshot", "status", str(backup), "-w", "json"])
    assert done.exit_code == 0, done.output
    fields = json.loads(done.output)
    assert (fields["revision"], fields["totalKey"], fields["totalSize"]) == (1, 0, 544)
