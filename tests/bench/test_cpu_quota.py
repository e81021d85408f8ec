"""``bench.cpu_quota`` on a fake cgroup tree: the quota and the process written where the
kernel reads them, the process moved back afterwards, and refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.cpu_quota import PERIOD_US, CpuQuotaError, cpu_quota


def v1_tree(root: Path) -> Path:
    cpu = root / "cpu"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    (cpu / "cgroup.procs").write_text("")
    return cpu


def test_a_v1_quota_caps_each_process_in_its_own_group(tmp_path: Path) -> None:
    cpu = v1_tree(tmp_path)
    with cpu_quota({"m1": 101, "m2": 102}, 0.25, root=tmp_path) as groups:
        assert sorted(groups) == ["m1", "m2"]
        for name, pid in (("m1", 101), ("m2", 102)):
            group = groups[name]
            assert group.parent == cpu
            assert (group / "cpu.cfs_quota_us").read_text() == f"{PERIOD_US // 4}\n"
            assert (group / "cpu.cfs_period_us").read_text() == f"{PERIOD_US}\n"
            assert (group / "cgroup.procs").read_text() == f"{pid}\n"
    # Afterwards each process is written back to the root group (a plain file here keeps only
    # the last write; the kernel's moves each). The groups stay: a fake tree's files are not
    # the kernel's, so rmdir fails, which the release survives.
    assert (cpu / "cgroup.procs").read_text() == "102\n"


def test_a_v2_quota_is_written_to_cpu_max(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory\n")
    with cpu_quota({"m1": 7}, 0.5, root=tmp_path) as groups:
        assert (groups["m1"] / "cpu.max").read_text() == f"{PERIOD_US // 2} {PERIOD_US}\n"


@pytest.mark.parametrize("cores", [0.0, -1.0, (os.cpu_count() or 1) + 1.0])
def test_a_quota_outside_the_machine_is_refused(tmp_path: Path, cores: float) -> None:
    v1_tree(tmp_path)
    with pytest.raises(CpuQuotaError), cpu_quota({"m1": 1}, cores, root=tmp_path):
        pass


def test_no_cpu_controller_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    with (
        pytest.raises(CpuQuotaError, match="no cgroup CPU controller"),
        cpu_quota({"m1": 1}, 0.5, root=tmp_path),
    ):
        pass
