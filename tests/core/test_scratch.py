"""Scratch folders: in memory where there is room, else the system's temporary folder; each
removed after its block, and those of dead processes removed by the next process."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from align_track_pipeline.core.scratch import memory_folder, owner_tag, scratch

PREFIX = "align-track-test-"


def test_a_folder_in_memory_is_removed_after_its_block(tmp_path):
    with scratch(PREFIX, root=tmp_path, min_free=0) as folder:
        assert folder.parent == tmp_path and folder.name.startswith(f"{PREFIX}{owner_tag()}-")
        assert owner_tag().endswith(f".{os.getpid()}")
        (folder / "run" / "scene_1").mkdir(parents=True)
        (folder / "run" / "scene_1" / "scene_data.json").write_text("{}")
    assert not list(tmp_path.iterdir())


def test_without_room_or_a_memory_file_system_the_temporary_folder(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    for root, room in ((tmp_path, free + 2**30), (tmp_path / "missing", 0)):
        with scratch(PREFIX, root=root, min_free=room) as folder:
            assert folder.parent == Path(tempfile.gettempdir())
            assert folder.is_dir()
        assert not folder.exists()
    assert not list(tmp_path.iterdir())


def test_folders_of_dead_processes_go_and_live_ones_stay(tmp_path):
    """Of this pid namespace only: another namespace's pid says nothing of a process here
    (containers sharing one memory file system)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = owner_tag().split(".")[0]
    dead = tmp_path / f"{PREFIX}{here}.{gone.pid}-abc"
    older = tmp_path / f"{PREFIX}{gone.pid}-old"  # named before namespaces were
    live = tmp_path / f"{PREFIX}{here}.{os.getppid()}-def"
    elsewhere = tmp_path / f"{PREFIX}{int(here) + 1}.{gone.pid}-ghi"
    for folder in (dead, older, live, elsewhere):
        (folder / "run").mkdir(parents=True)
    fresh = memory_folder(PREFIX, tmp_path, min_free=0)
    assert fresh.is_dir() and not dead.exists() and not older.exists()
    assert live.exists() and elsewhere.exists()
