"""The cores a process may use: its CPU affinity and its cgroup's CPU quota, not the host's."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from align_track_pipeline.core.cores import CGROUP_ROOT, cgroup_quota, usable_cores

PRINT_CORES = "from align_track_pipeline.core.cores import usable_cores; print(usable_cores())"


def _cores_in_child(preexec) -> int:
    out = subprocess.run([sys.executable, "-c", PRINT_CORES], capture_output=True, text=True,
                         check=True, preexec_fn=preexec)
    return int(out.stdout)


def test_a_process_pinned_to_one_cpu_counts_one_core():
    first = min(os.sched_getaffinity(0))
    assert _cores_in_child(lambda: os.sched_setaffinity(0, {first})) == 1
    quota = cgroup_quota()  # where this suite itself runs in a container with a CPU limit
    affinity = len(os.sched_getaffinity(0))
    assert _cores_in_child(None) == (min(affinity, quota) if quota else affinity)


def _proc_cgroup(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proc-self-cgroup"
    path.write_text(text)
    return path


def test_cgroup_v2_quota_of_the_process_or_a_parent_caps_the_cores(tmp_path):
    root = tmp_path / "cgroup"
    (root / "kubepods" / "pod1").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "kubepods" / "cpu.max").write_text("400000 100000\n")
    (root / "kubepods" / "pod1" / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    proc = _proc_cgroup(tmp_path, "0::/kubepods/pod1\n")
    assert cgroup_quota(root, proc) == 2
    (root / "kubepods" / "cpu.max").write_text("50000 100000\n")  # a parent's half CPU
    assert cgroup_quota(root, proc) == 1
    assert usable_cores(root, proc) == 1


def test_cgroup_v2_without_a_limit_leaves_the_affinity(tmp_path):
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cpu.max").write_text("max 100000\n")
    proc = _proc_cgroup(tmp_path, "0::/\n")
    assert cgroup_quota(root, proc) is None
    assert usable_cores(root, proc) == len(os.sched_getaffinity(0))


def test_cgroup_v1_quota_in_a_container_that_sees_the_host_path(tmp_path):
    # Without a cgroup namespace the path is the host's, but the mount holds the container's.
    root = tmp_path / "cgroup"
    (root / "cpu,cpuacct").mkdir(parents=True)
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("200000\n")
    (root / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    proc = _proc_cgroup(tmp_path, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    assert cgroup_quota(root, proc) == 2
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(root, proc) is None


def test_unreadable_cgroups_leave_the_affinity(tmp_path):
    assert cgroup_quota(tmp_path, tmp_path / "missing") is None
    garbled = _proc_cgroup(tmp_path, "0::/\n")
    (tmp_path / "cpu.max").write_text("not numbers at all\n")
    assert cgroup_quota(tmp_path, garbled) is None


def test_malformed_lines_are_skipped_and_the_rest_read(tmp_path):
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_bytes(b"garbage\n\n1:cpu\n7:name=\xff\xfe:/odd\n0::/\n")
    assert cgroup_quota(tmp_path, proc) == 2


def _writable_v1_cpu() -> Path | None:
    folder = CGROUP_ROOT / "cpu"
    return folder if (folder / "cpu.cfs_quota_us").exists() and os.access(folder, os.W_OK) else None


@pytest.mark.skipif(_writable_v1_cpu() is None, reason="needs a writable cgroup v1 cpu hierarchy")
def test_a_process_in_a_real_cgroup_with_half_a_cpu_counts_one_core():
    group = _writable_v1_cpu() / f"align-track-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text("50000")
        assert _cores_in_child(lambda: (group / "cgroup.procs").write_text(str(os.getpid()))) == 1
    finally:
        group.rmdir()
