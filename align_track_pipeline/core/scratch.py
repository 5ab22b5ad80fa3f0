"""Folders for files a process writes and removes within seconds (a partition's MLflow
artifacts on their way to a server), on a memory file system where there is one with room.

Creating and removing a partition's artifact folders (22 runs, 44 files) took 107 ms on this
machine's disk under load and 2.7 ms in /dev/shm. A folder is named after its process: the
folders of a process killed before removing its own are removed by the next one (memory is
not given back otherwise). Where there is no memory file system, or it is short of room
(a container's 64 MiB /dev/shm), the system's temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from align_track_pipeline.core.processes import process_alive

MEMORY_ROOT = Path("/dev/shm")
MIN_FREE = 1 << 30  # leave the memory file system alone below this much free space


def owner_tag() -> str:
    """`<pid namespace>.<pid>` of this process: the folder names' owner. A memory file system
    can be shared by containers whose pids are numbered apart (a pod's); a folder of another
    namespace is never judged by a pid that means another process here."""
    return f"{_pid_namespace()}.{os.getpid()}"


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # not Linux: one namespace
        return 0


def sweep_dead(root: Path, prefix: str) -> None:
    """Remove the folders `<prefix>[<namespace>.]<pid>-...` under `root` whose process is
    gone: of this pid namespace only (no namespace: a name from before it was recorded)."""
    here = _pid_namespace()
    for old in root.glob(f"{prefix}*"):
        found = re.match(rf"{re.escape(prefix)}(?:(\d+)\.)?(\d+)-", old.name)
        if not found or (found.group(1) is not None and int(found.group(1)) != here):
            continue
        if not process_alive(int(found.group(2))):
            shutil.rmtree(old, ignore_errors=True)


def memory_folder(prefix: str, root: Path = MEMORY_ROOT, min_free: int = MIN_FREE
                  ) -> Path | None:
    """A fresh folder of this process under `root`, or None where `root` is missing, cannot
    be written or has less than `min_free` bytes free; dead processes' folders go first."""
    if not (root.is_dir() and os.access(root, os.W_OK)):
        return None
    sweep_dead(root, prefix)
    if shutil.disk_usage(root).free < min_free:
        return None
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=root))


@contextmanager
def scratch(prefix: str, root: Path = MEMORY_ROOT, min_free: int = MIN_FREE) -> Iterator[Path]:
    """A temporary folder for the block, in memory where possible, removed after it."""
    folder = memory_folder(prefix, root, min_free)
    if folder is None:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield Path(tmp)
        return
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
