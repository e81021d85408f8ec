"""A CPU quota per benchmark process, from a Linux cgroup: each member capped at a fraction of
a core stands for a member on a small machine of its own.

A scaling-out benchmark (more members serving, more reads served) cannot show anything on a
machine with fewer cores than processes: the members already share every core, and one more
member only shares them more thinly. Capping each member at, say, a quarter of a core with the
kernel's CFS bandwidth control gives every member the same fixed budget whoever else runs, so
what a member added brings is its own budget, as on a real deployment.

Both cgroup layouts are handled: v1 (``/sys/fs/cgroup/cpu/cpu.cfs_quota_us``) and v2
(``/sys/fs/cgroup/cpu.max`` with the ``cpu`` controller enabled). Creating groups needs
root or a delegated hierarchy; without either, ``CpuQuotaError`` says so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
PERIOD_US: Final = 100_000
"""The CFS period: the quota is this many microseconds times the fraction of a core."""
CORES_MIN: Final = 0.01


class CpuQuotaError(Exception):
    """No writable cgroup CPU controller, or a quota outside (0, cores]."""


def _hierarchy(root: Path) -> tuple[Path, bool]:
    """The directory to create groups in, and whether it is cgroup v2."""
    v1 = root / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        return v1, False
    controllers = root / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return root, True
    raise CpuQuotaError(f"no cgroup CPU controller under {root} (v1 cpu/ or v2 with cpu)")


def _limit(group: Path, cores: float, v2: bool) -> None:
    quota_us = max(1_000, round(cores * PERIOD_US))
    if v2:
        (group / "cpu.max").write_text(f"{quota_us} {PERIOD_US}\n")
    else:
        (group / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
        (group / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")


@contextmanager
def cpu_quota(
    pids: Mapping[str, int], cores: float, root: Path = CGROUP_ROOT
) -> Iterator[dict[str, Path]]:
    """Each process (by name) in a group of its own capped at ``cores`` of a core, for the
    block; the processes go back to the root group and the groups are removed after it.

    Raises:
        CpuQuotaError: no CPU controller, a group that cannot be created, a bad quota.
    """
    if not CORES_MIN <= cores <= (os.cpu_count() or 1):
        raise CpuQuotaError(f"a quota is {CORES_MIN} to {os.cpu_count()} cores, not {cores}")
    base, v2 = _hierarchy(root)
    groups: dict[str, Path] = {}
    try:
        for name, pid in pids.items():
            group = base / f"troika-bench-{os.getpid()}-{name}"
            try:
                group.mkdir()
                groups[name] = group
                _limit(group, cores, v2)
                (group / "cgroup.procs").write_text(f"{pid}\n")
            except OSError as error:
                raise CpuQuotaError(f"cannot cap {name} (pid {pid}) in {group}: {error}") from None
        yield groups
    finally:
        for group in groups.values():
            _release(group, base)


def _release(group: Path, base: Path) -> None:
    """Move what still runs in ``group`` back to ``base``, then remove the group."""
    with contextlib.suppress(OSError):  # else left behind: named after this process
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # it exited meanwhile
                (base / "cgroup.procs").write_text(f"{pid}\n")
        group.rmdir()
