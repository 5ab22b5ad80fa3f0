"""Aim through `align-track ingest` after what goes wrong around it: a deleted manifest, a
writer killed in the middle of the Aim phase. The next ingest leaves one indexed run per
scene, and the one after is all fresh."""

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.trackers.aim import indexing, storage
from align_track_pipeline.core.trackers.aim.manifest import MANIFEST
from tests.conftest import aim_runs_held, aim_runs_seen_by_a_fresh_process


def _ingest(capsys, tree: Path, data: Path) -> dict:
    code = main(["ingest", "--experiments-dir", str(tree), "--data-dir", str(data), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report["failed"]
    return report


def _delete_manifest(repo: Path) -> None:
    files = list(repo.glob(f"{MANIFEST}*"))
    assert files
    for path in files:
        path.unlink()


def _one_run_per_scene(data: Path) -> set[str]:
    """The hashes of the repo's runs, after checking that it holds exactly one run per scene
    of the tables, each seen (indexed) by a fresh process."""
    scenes = ds.dataset(data / "parquet" / "scenes").to_table()
    wanted = Counter(zip(scenes.column("partition_key").to_pylist(),
                         scenes.column("scene_index").to_pylist(), strict=True))
    seen = aim_runs_seen_by_a_fresh_process(data / "aim")
    got = Counter((r["params"]["partition_key"], r["params"]["scene_index"]) for r in seen)
    assert got == wanted and set(wanted.values()) == {1}
    hashes = {r["hash"] for r in seen}
    assert aim_runs_held(data / "aim") == hashes
    return hashes


@pytest.mark.slow
def test_a_deleted_manifest_is_rebuilt_and_a_changed_folder_adds_no_duplicate(
        capsys, small_tree, data_dir):
    keys = sorted(r.key for r in find_run_dirs(small_tree))
    _ingest(capsys, small_tree, data_dir)
    before = _one_run_per_scene(data_dir)
    _delete_manifest(data_dir / "aim")
    io = small_tree / "random" / "unaligned" / "input_output.json"
    io.write_text(io.read_text().replace("Random choice", "Changed choice", 1))

    second = _ingest(capsys, small_tree, data_dir)
    assert sorted(second["materialized"]) == keys  # Aim's runs re-confirmed for every folder
    after = _one_run_per_scene(data_dir)
    assert len(after - before) == 1  # only the changed scene got a new run; 11 were kept
    assert (data_dir / "aim" / MANIFEST).exists()

    third = _ingest(capsys, small_tree, data_dir)
    assert third["materialized"] == [] and sorted(third["fresh"]) == keys
    assert _one_run_per_scene(data_dir) == after


@pytest.mark.slow
def test_a_deleted_repo_beside_its_manifest_is_written_again(small_tree, data_dir):
    """`.aim` deleted to reset Aim (after a lock error, say), its manifest kept: before, the
    manifest still vouched for the runs, and every command said fresh for good. (The
    commands run as processes, as a user runs them: Aim keeps a repo's objects per process.)"""
    import shutil

    keys = sorted(r.key for r in find_run_dirs(small_tree))
    cmd = [str(Path(sys.executable).parent / "align-track"), "--experiments-dir",
           str(small_tree), "--data-dir", str(data_dir), "--json"]

    def run(command: str) -> dict:
        done = subprocess.run([cmd[0], command, *cmd[1:]], capture_output=True, text=True,
                              timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    run("ingest")
    shutil.rmtree(data_dir / "aim" / ".aim")

    states = {p["partition"]: p["state"] for p in run("status")["partitions"]}
    assert states == dict.fromkeys(keys, "stale")
    assert sorted(run("ingest")["materialized"]) == keys
    _one_run_per_scene(data_dir)  # every scene again, once
    assert run("ingest")["materialized"] == []


@pytest.mark.slow
def test_a_deleted_manifest_alone_is_rebuilt_keeping_every_run(capsys, small_tree, data_dir):
    keys = sorted(r.key for r in find_run_dirs(small_tree))
    _ingest(capsys, small_tree, data_dir)
    before = _one_run_per_scene(data_dir)
    _delete_manifest(data_dir / "aim")

    second = _ingest(capsys, small_tree, data_dir)
    assert sorted(second["materialized"]) == keys and second["fresh"] == []
    assert (data_dir / "aim" / MANIFEST).exists()
    assert _one_run_per_scene(data_dir) == before  # rebuilt from the runs: none rewritten

    third = _ingest(capsys, small_tree, data_dir)
    assert third["materialized"] == [] and sorted(third["fresh"]) == keys


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["aim.runs_complete", "aim.index_records_written"])
def test_a_kill_in_the_aim_phase_leaves_nothing_unindexed_after_the_next_ingest(
        small_tree, data_dir, fault):
    """Killed after a partition's runs were complete but before the index had them (or had
    their checksums): the next ingest keeps those runs and indexes them."""
    cmd = [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
           "--experiments-dir", str(small_tree), "--data-dir", str(data_dir)]
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                            env={**os.environ, "ALIGN_TRACK_FAULT": fault})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    repo = storage.open_repo(data_dir / "aim")
    assert indexing.outdated_runs(repo)  # the kill left runs the index lacks
    written = set(storage.all_run_hashes(repo))

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    hashes = _one_run_per_scene(data_dir)
    assert written <= hashes  # the killed partition's runs were kept, not rewritten
    assert indexing.outdated_runs(storage.open_repo(data_dir / "aim")) == []


@pytest.mark.slow
def test_a_repo_whose_creation_a_kill_cut_short_is_finished_by_the_next_ingest(
        capsys, small_tree, data_dir):
    """Killed while Aim created its repo: the folder and an empty run table are there, no
    schema and no data version. Before, every Aim write failed with "no such table:
    experiment" on every ingest after; Aim's own creation is now finished first."""
    aim = data_dir / "aim" / ".aim"
    aim.mkdir(parents=True)
    (aim / storage.STRUCTURED_DB).touch()
    assert not storage.created_whole(data_dir / "aim")

    report = _ingest(capsys, small_tree, data_dir)

    assert report["failed"] == [] and len(report["materialized"]) == 3
    assert storage.created_whole(data_dir / "aim")
    assert _one_run_per_scene(data_dir)
