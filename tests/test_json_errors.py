"""`--json` prints exactly one JSON object on stdout whatever stops the command: an
unwritable data dir, a full disk, SIGTERM, or an error nobody foresaw, each with its cause
under "error" and a non-zero exit; a SIGTERM'd ingest is finished by the next one."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from align_track_pipeline.core.source.discovery import find_run_dirs
from tests.conftest import item_count
from tests.test_shared_stores import assert_one_aim_run_per_scene, assert_one_run_per_key

pytestmark = pytest.mark.slow
ALIGN_TRACK = str(Path(sys.executable).parent / "align-track")
ENV = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}


def _cli(command: str, tree: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([ALIGN_TRACK, command, "--json", "--experiments-dir", str(tree),
                           "--data-dir", str(data), *extra], capture_output=True, text=True,
                          timeout=600, check=False, env=ENV)


def _one_object(stdout: str) -> dict:
    """stdout is exactly one JSON object (json.loads refuses anything after it)."""
    found = json.loads(stdout)
    assert isinstance(found, dict)
    return found


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[callable]:
    """Mounts a real tmpfs (root only) and unmounts it afterwards."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        where = tmp_path / name
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                       check=True, capture_output=True)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _read_only_data_dir(tmp_path: Path, tmpfs) -> Path:
    """A data dir nothing can be written to: root ignores permissions, so a read-only mount
    then; otherwise a folder without write permission."""
    if os.geteuid() == 0:
        return tmpfs("ro", "ro,size=1m")
    data = tmp_path / "ro"
    data.mkdir(mode=0o500)
    return data


@pytest.mark.parametrize("command", ["ingest", "status"])
def test_a_file_where_the_data_dir_should_be(command, small_tree, tmp_path):
    data = tmp_path / "data"
    data.write_text("not a folder")
    done = _cli(command, small_tree, data)
    assert done.returncode == 1, done.stderr[-3000:]
    found = _one_object(done.stdout)
    assert found["error"] == f"cannot write {data}/dagster: Not a directory"
    assert "Traceback" not in done.stdout


def test_a_read_only_data_dir(small_tree, tmp_path, tmpfs):
    data = _read_only_data_dir(tmp_path, tmpfs)
    done = _cli("ingest", small_tree, data)
    assert done.returncode == 1, done.stderr[-3000:]
    found = _one_object(done.stdout)
    assert found["error"].startswith(f"cannot write {data}/")
    assert found["error"].endswith(("Read-only file system", "Permission denied"))
    # `status` writes nothing where nothing was ingested: every partition is missing
    done = _cli("status", small_tree, data)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _one_object(done.stdout)["counts"]["missing"] == 3
    assert f"nothing has been ingested into {data} yet" in done.stderr


def test_a_full_disk_is_named_with_the_data_dir(sample_tree, tmp_path, tmpfs):
    data = tmpfs("full", "size=2m") / "data"
    done = _cli("ingest", sample_tree, data)
    assert done.returncode == 1, done.stderr[-3000:]
    found = _one_object(done.stdout)
    assert found["error"] == f"no space left on {data}"
    assert found["path"] == str(data)
    assert found["discovered"] == 20  # the normal keys known by then are kept
    assert "disk I/O error" not in done.stdout
    assert f"align-track: no space left on {data}" in done.stderr


def test_an_unforeseen_error_is_one_object_too(small_tree, tmp_path):
    """A Dagster run history that is not a database: nothing maps it, it still is JSON."""
    data = tmp_path / "data"
    assert _cli("ingest", small_tree, data).returncode == 0
    (data / "dagster" / "history" / "runs.db").write_bytes(b"not a database " * 1000)
    for command in ("status", "ingest"):
        done = _cli(command, small_tree, data)
        assert done.returncode == 1, done.stderr[-3000:]
        found = _one_object(done.stdout)
        assert "file is not a database" in found["error"]
        assert "Traceback" in done.stderr and "Traceback" not in done.stdout


@pytest.mark.parametrize(("workers", "mid_run"), [(1, "mlflow run 1/1"),
                                                  (2, "aim batch 1/2")])
def test_sigterm_mid_ingest(workers, mid_run, sample_tree, tmp_path):
    data = tmp_path / "data"
    err = tmp_path / "ingest.err"
    proc = subprocess.Popen([ALIGN_TRACK, "ingest", "--json", "--workers", str(workers),
                             "--experiments-dir", str(sample_tree), "--data-dir", str(data)],
                            stdout=subprocess.PIPE, stderr=err.open("w"), text=True, env=ENV)
    deadline = time.monotonic() + 300
    while mid_run not in err.read_text():
        assert proc.poll() is None, err.read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, err.read_text()[-3000:]
    found = _one_object(stdout)
    assert found["signal"] == "SIGTERM"
    assert found["error"].startswith("interrupted by SIGTERM")
    assert found["discovered"] == 20

    again = _cli("ingest", sample_tree, data)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _one_object(again.stdout)["failed"] == []
    scenes = sum(item_count(r.path) for r in find_run_dirs(sample_tree))
    assert ds.dataset(data / "parquet" / "scenes").count_rows() == scenes
    assert_one_run_per_key(f"sqlite:///{data}/mlflow.db", "align-system", data)
    assert_one_aim_run_per_scene(data / "aim", data)
