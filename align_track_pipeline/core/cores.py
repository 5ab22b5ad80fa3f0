"""How many cores this process may use: what sizes the workers, pools and concurrent runs.

`os.cpu_count()` is the host's: in a container limited to 2 CPUs on a 64-core node it says 64,
and 64 workers would only contend for 2 CPUs (and hold 64 workers' memory). The CPU affinity
(`taskset`, cpusets) and the cgroup's CPU quota (`docker run --cpus`, a Kubernetes CPU limit)
say what the process really gets.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cores(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The CPUs this process may run on, capped by its cgroup's quota (rounded up); at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        cores = os.cpu_count() or 1
    quota = cgroup_quota(root, proc_cgroup)
    return max(1, min(cores, quota) if quota else cores)


def cgroup_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """The smallest CPU quota (in whole CPUs, rounded up) of this process's cgroup and its
    parents, cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`); None
    where none is set or cgroups cannot be read."""
    try:
        lines = proc_cgroup.read_text(errors="surrogateescape").splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:  # not a cgroup line: never a reason to fail an ingest
            continue
        _id, controllers, path = fields
        if controllers == "":  # v2: one unified hierarchy
            quotas += [_v2_quota(d) for d in _dirs(root, path)]
        elif "cpu" in controllers.split(","):
            quotas += [_v1_quota(d) for d in _dirs(root / controllers, path)]
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _dirs(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder and its parents' up to the mount (in a container with its own
    cgroup namespace the path is `/`: the mount itself)."""
    parts = [p for p in path.split("/") if p]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_quota(folder: Path) -> int | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else _whole(int(quota), int(period))


def _v1_quota(folder: Path) -> int | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 else _whole(quota, period)


def _whole(quota: int, period: int) -> int | None:
    return max(1, math.ceil(quota / period)) if period > 0 else None
