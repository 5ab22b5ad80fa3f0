"""An ordinary mistake never wipes a store: an empty, other, forgotten or unreadable tree, or a
pass that would remove much of the data dir, removes nothing. The real CLI on real stores
(Parquet, MLflow on SQLite, Aim), counted before and after."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.definitions import build_defs
from tests.conftest import (
    aim_runs_held,
    apply_partition_requests,
    sensor_tick,
    status_counts,
    without_read_override,
)


def _cli(capsys, *args) -> tuple[int, dict]:
    code = main([*map(str, args), "--json"])
    return code, json.loads(capsys.readouterr().out)


def _stores(data: Path) -> dict[str, list[str]]:
    """What each store holds: Parquet files, active MLflow runs, Aim runs."""
    client = MlflowClient(f"sqlite:///{data}/mlflow.db")
    experiment = client.get_experiment_by_name("align-system")
    runs = client.search_runs([experiment.experiment_id], max_results=10_000)
    return {"parquet": sorted(p.relative_to(data).as_posix()
                              for p in (data / "parquet").rglob("*.parquet")),
            "mlflow": sorted(r.info.run_id for r in runs),
            "aim": sorted(aim_runs_held(data / "aim"))}


@pytest.fixture
def ingested(capsys, monkeypatch, small_tree, data_dir):
    """`small_tree` ingested into `data_dir`, and what the stores hold then."""
    monkeypatch.delenv("ALIGN_TRACK_EXPERIMENTS_DIR", raising=False)
    code, report = _cli(capsys, "ingest", "--experiments-dir", small_tree, "--data-dir", data_dir)
    assert code == 0 and len(report["materialized"]) == 3
    stores = _stores(data_dir)
    assert len(stores["parquet"]) == 6 and stores["mlflow"] and stores["aim"]
    return stores


@pytest.mark.slow
def test_an_empty_or_other_tree_is_refused_and_a_forgotten_one_is_the_remembered_one(
        capsys, tmp_path, small_tree, data_dir, ingested):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = _cli(capsys, "ingest", "--experiments-dir", empty, "--data-dir", data_dir)
    assert code == 2 and str(small_tree) in out["error"] and str(empty) in out["error"]
    assert "--new-tree" in out["error"]
    assert _stores(data_dir) == ingested

    code, out = _cli(capsys, "ingest", "--experiments-dir", empty, "--data-dir", data_dir,
                     "--new-tree")
    assert code == 2 and "holds no run directory" in out["error"]
    assert "--confirm-removals" in out["error"]
    assert _stores(data_dir) == ingested
    assert json.loads((data_dir / "tree.json").read_text())["experiments_dir"] == str(small_tree)

    code, out = _cli(capsys, "ingest", "--data-dir", data_dir)  # no --experiments-dir
    assert code == 0 and out["removed"] == [] and len(out["fresh"]) == 3
    assert _stores(data_dir) == ingested

    code, out = _cli(capsys, "status", "--experiments-dir", empty, "--data-dir", data_dir)
    assert code == 2 and str(small_tree) in out["error"]


@pytest.mark.slow
def test_a_tree_emptied_in_place_like_an_unmounted_share_removes_nothing(
        capsys, tmp_path, small_tree, data_dir, ingested):
    away = tmp_path / "away"
    away.mkdir()
    for child in list(small_tree.iterdir()):
        child.rename(away / child.name)
    code, out = _cli(capsys, "status", "--experiments-dir", small_tree, "--data-dir", data_dir)
    assert code == 2 and "holds no run directory" in out["error"]  # before: 0 partitions, 0
    assert out["counts"] == status_counts(gone=3)
    code, out = _cli(capsys, "ingest", "--experiments-dir", small_tree, "--data-dir", data_dir)
    assert code == 2 and "holds no run directory" in out["error"]
    assert _stores(data_dir) == ingested
    code = main(["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
                 "--confirm-removals", "--json"])
    said = capsys.readouterr()
    out = json.loads(said.out)
    assert code == 0 and len(out["removed"]) == 3 and "analysis_failed" not in out
    assert "analysis: deleted (no table files left)" in said.err
    assert _stores(data_dir) == {"parquet": [], "mlflow": [], "aim": []}
    assert not list((data_dir / "analysis").glob("*.*"))  # no page of the removed folders


@pytest.mark.slow
def test_a_run_folder_moved_out_of_the_tree_and_linked_back_is_kept(
        capsys, tmp_path, small_tree, data_dir, ingested):
    """Symlinks out of the tree are not followed; a run folder moved to a share and linked
    back, or the link left dangling once the share is gone, fails and keeps its runs."""
    run = small_tree / "random" / "unaligned"
    share = tmp_path / "share"
    share.mkdir()
    run.rename(share / "unaligned")
    run.symlink_to(share / "unaligned")
    for state in ("linked", "dangling"):
        code, out = _cli(capsys, "ingest", "--experiments-dir", small_tree, "--data-dir",
                         data_dir)
        assert code == 1 and out["removed"] == [], (state, out)
        assert [f["partition"] for f in out["failed"]] == ["random/unaligned"], state
        assert f"{run} leads out of the tree" in out["failed"][0]["error"] or (
            state == "dangling" and f"cannot read {run}" in out["failed"][0]["error"]), out
        assert _stores(data_dir) == ingested, state
        shutil.rmtree(share, ignore_errors=True)  # the share unmounted: the link dangles


@pytest.mark.slow
def test_a_first_ingest_cut_short_still_remembers_its_tree(capsys, monkeypatch, small_tree,
                                                           data_dir):
    """Interrupted after its first Aim partition: what it wrote belongs to its tree, so the
    next ingest without --experiments-dir is of that tree, not the bundled sample (which
    would remove the partitions written)."""
    monkeypatch.delenv("ALIGN_TRACK_EXPERIMENTS_DIR", raising=False)
    cut = subprocess.run(
        [sys.executable, "-m", "align_track_pipeline.cli.main", "ingest", "--experiments-dir",
         str(small_tree), "--data-dir", str(data_dir), "--json", "--workers", "1"],
        env=os.environ | {"ALIGN_TRACK_FAULT": "aim.partition_written:1:sigint"},
        capture_output=True, text=True, timeout=600)
    assert cut.returncode == 130, cut.stderr[-2000:]
    assert json.loads((data_dir / "tree.json").read_text())["experiments_dir"] == str(small_tree)
    code, out = _cli(capsys, "ingest", "--data-dir", data_dir)
    assert code == 0 and out["removed"] == [] and out["discovered"] == 3, out


def test_a_data_dir_inside_the_tree_is_refused(capsys, monkeypatch, small_tree):
    """Each pass would ingest the data dir's own copies of the run folders (the MLflow
    artifacts) as run folders, growing with its own output."""
    monkeypatch.delenv("ALIGN_TRACK_EXPERIMENTS_DIR", raising=False)
    inside = small_tree / "align-track-data"
    code, out = _cli(capsys, "ingest", "--experiments-dir", small_tree, "--data-dir", inside)
    assert code == 2 and f"the data dir {inside} is inside the tree {small_tree}" in out["error"]
    assert not inside.exists()


def test_a_first_ingest_of_an_empty_tree_is_refused_and_remembers_nothing(
        capsys, monkeypatch, tmp_path, data_dir):
    """An empty first tree (an unmounted share, a typo'd parent) would be remembered, and the
    tree meant refused after it."""
    monkeypatch.delenv("ALIGN_TRACK_EXPERIMENTS_DIR", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = _cli(capsys, "ingest", "--experiments-dir", empty, "--data-dir", data_dir)
    assert code == 2 and f"the tree {empty} holds no run directory" in out["error"]
    assert not (data_dir / "tree.json").exists()
    (empty / "run").symlink_to(tmp_path / "unmounted-share")  # the only run folder, unseen
    code, out = _cli(capsys, "ingest", "--experiments-dir", empty, "--data-dir", data_dir)
    assert code == 2 and "holds no run directory that can be read (cannot read " in out["error"]
    assert not (data_dir / "tree.json").exists()


@pytest.mark.slow
def test_an_unreadable_folder_fails_its_partitions_and_removes_nothing(
        small_tree, data_dir, ingested):
    """As a user without the right to read a folder (EACCES; an EIO or ESTALE is the same
    path): a whole subtree, and one run dir's `.hydra` folder."""
    hidden, blind = small_tree / "random", small_tree / "pipeline_baseline/moral_judgement-0.2"
    hidden.chmod(0)
    (blind / ".hydra").chmod(0)
    try:
        out = subprocess.run(without_read_override([
            sys.executable, "-m", "align_track_pipeline.cli.main", "ingest", "--experiments-dir",
            str(small_tree), "--data-dir", str(data_dir), "--json"]),
            capture_output=True, text=True, timeout=600)
    finally:
        hidden.chmod(0o755)
        (blind / ".hydra").chmod(0o755)
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["removed"] == []
    failed = {f["partition"]: f["error"] for f in report["failed"]}
    assert set(failed) == {"random/unaligned", "pipeline_baseline/moral_judgement-0.2"}
    assert failed["random/unaligned"] == f"cannot read folder {hidden}: Permission denied"
    assert "config.yaml: cannot read file: Permission denied" in \
        failed["pipeline_baseline/moral_judgement-0.2"]
    assert _stores(data_dir) == ingested  # the failed partitions keep what they had


@pytest.mark.slow
def test_a_pass_removing_more_than_the_bound_needs_a_confirmation(
        capsys, monkeypatch, sample_tree, data_dir):
    monkeypatch.delenv("ALIGN_TRACK_EXPERIMENTS_DIR", raising=False)
    code, _ = _cli(capsys, "ingest", "--experiments-dir", sample_tree, "--data-dir", data_dir)
    assert code == 0
    before = _stores(data_dir)
    run_dirs = find_run_dirs(sample_tree)
    gone = run_dirs[:6]
    for run_dir in gone:
        shutil.rmtree(run_dir.path)
    code, out = _cli(capsys, "ingest", "--experiments-dir", sample_tree, "--data-dir", data_dir)
    assert code == 2 and f"6 of {len(run_dirs)} partitions" in out["error"]
    assert _stores(data_dir) == before

    code, out = _cli(capsys, "ingest", "--experiments-dir", sample_tree, "--data-dir", data_dir,
                     "--confirm-removals")
    assert code == 0 and sorted(out["removed"]) == sorted(r.key for r in gone)
    after = _stores(data_dir)
    assert len(after["parquet"]) == len(before["parquet"]) - 12
    assert set(after["mlflow"]) < set(before["mlflow"]) and set(after["aim"]) < set(before["aim"])


@pytest.mark.slow
def test_ctrl_c_while_removing_says_so_and_the_next_ingest_finishes_it(capsys, small_tree,
                                                                       data_dir, ingested):
    """Before: exit 1 (as if partitions had failed) and Dagster's interrupt error with its
    tracebacks; the Aim runs of the removed folders stayed while `status` said fresh."""
    gone = find_run_dirs(small_tree)[:2]
    for run_dir in gone:
        shutil.rmtree(run_dir.path)
    argv = ["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
            "--confirm-removals"]
    stopped = subprocess.run(  # Ctrl-C once the first folder's MLflow runs are deleted
        [str(Path(sys.executable).parent / "align-track"), *argv], capture_output=True,
        text=True, timeout=600, check=False,
        env=os.environ | {"ALIGN_TRACK_FAULT": "mlflow.partition_written:1:sigint"})
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert "was cut short; the next `ingest` finishes it" in stopped.stderr
    code, status = _cli(capsys, "status", *argv[1:5])
    assert code == 0 and status["counts"] == status_counts(fresh=1, gone=2)

    code, report = _cli(capsys, *argv)
    assert code == 0 and sorted(report["removed"]) == sorted(r.key for r in gone)
    after = _stores(data_dir)
    assert len(after["parquet"]) == 2  # the one folder left, each table's file
    assert set(after["mlflow"]) < set(ingested["mlflow"])
    assert set(after["aim"]) < set(ingested["aim"]) and len(after["aim"]) == 4  # its scenes


def test_the_sensor_skips_removals_beyond_the_bound_and_adds_new_folders(
        tmp_path, small_tree, data_dir, dagster_storage):
    defs = build_defs(str(small_tree), str(data_dir))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        apply_partition_requests(instance, sensor_tick(defs, instance))
        keys = set(instance.get_dynamic_partitions("experiments"))
        assert len(keys) == 3
        away = tmp_path / "away"
        shutil.move(small_tree, away)
        small_tree.mkdir()
        result = sensor_tick(defs, instance)  # an empty tree: skip, remove nothing
        assert isinstance(result, dg.SkipReason) and "holds no run directory" in \
            result.skip_message and "--confirm-removals" in result.skip_message
        shutil.copytree(away / "random", small_tree / "random")
        shutil.copytree(away / "random", small_tree / "new")
        result = sensor_tick(defs, instance)  # 2 of 3 gone: within the bound (at most 5)
        delete = [r for r in result.dynamic_partitions_requests
                  if isinstance(r, dg.DeleteDynamicPartitionsRequest)]
        assert [sorted(r.partition_keys) for r in delete] == [sorted(keys - {"random/unaligned"})]

        other = build_defs(str(away), str(data_dir))
        result = sensor_tick(other, instance)  # another tree than the data dir's
        assert isinstance(result, dg.SkipReason)
        assert str(small_tree) in result.skip_message and str(away) in result.skip_message
        assert set(instance.get_dynamic_partitions("experiments")) == keys


def test_the_sensor_refuses_an_empty_first_tree_and_a_data_dir_inside_the_tree(
        tmp_path, monkeypatch, small_tree, dagster_storage):
    """As `ingest`: no tree remembered from an empty first tick (the tree meant would be
    refused after it), and no data dir read as run folders."""
    empty = tmp_path / "empty"
    empty.mkdir()
    data = tmp_path / "data"
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = sensor_tick(build_defs(str(empty), str(data)), instance)
        assert isinstance(result, dg.SkipReason)
        assert f"the tree {empty} holds no run directory" in result.skip_message
        assert not (data / "tree.json").exists()
        monkeypatch.chdir(small_tree)  # a relative data dir (ALIGN_TRACK_DATA_DIR=data, say)
        result = sensor_tick(build_defs(str(small_tree), "align-track-data"), instance)
        assert isinstance(result, dg.SkipReason) and "is inside the tree" in result.skip_message
        assert instance.get_dynamic_partitions("experiments") == []


def test_the_sensor_adds_new_folders_but_removes_none_when_too_many_are_gone(
        tmp_path, sample_tree, data_dir, dagster_storage):
    defs = build_defs(str(sample_tree), str(data_dir))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        apply_partition_requests(instance, sensor_tick(defs, instance))
        keys = set(instance.get_dynamic_partitions("experiments"))
        run_dirs = find_run_dirs(sample_tree)
        for run_dir in run_dirs[:6]:
            shutil.rmtree(run_dir.path)
        shutil.copytree(run_dirs[-1].path, sample_tree / "brand-new")
        result = sensor_tick(defs, instance)
        assert [type(r) for r in result.dynamic_partitions_requests] == \
            [dg.AddDynamicPartitionsRequest]
        assert result.dynamic_partitions_requests[0].partition_keys == ["brand-new"]
        assert "cleanup_removed" not in [r.job_name for r in result.run_requests]
        apply_partition_requests(instance, result)
        assert set(instance.get_dynamic_partitions("experiments")) == keys | {"brand-new"}


@pytest.mark.slow
def test_a_moved_data_dir_keeps_every_runs_artifacts_in_sight(capsys, tmp_path, small_tree):
    """Its SQLite store named the artifacts by the old path: the UI showed none, and the next
    run recreated the old folder for its own."""
    first, moved = tmp_path / "data", tmp_path / "moved"
    assert _cli(capsys, "ingest", "--experiments-dir", small_tree, "--data-dir", first)[0] == 0
    shutil.move(first, moved)
    run = find_run_dirs(small_tree)[0].path
    (run / "timing.json").write_text((run / "timing.json").read_text() + "\n")  # one change
    code, out = _cli(capsys, "ingest", "--data-dir", moved)
    assert code == 0 and out["failed"] == [] and not first.exists()
    client = MlflowClient(f"sqlite:///{moved}/mlflow.db")
    experiment = client.get_experiment_by_name("align-system")
    assert experiment.artifact_location == f"{moved}/mlflow-artifacts/align-system"
    runs = client.search_runs([experiment.experiment_id], max_results=10_000)
    assert runs and all(r.info.artifact_uri.startswith(f"{moved}/mlflow-artifacts/")
                        and client.list_artifacts(r.info.run_id) for r in runs)


@pytest.mark.slow
def test_a_folder_removed_after_the_instance_was_deleted_is_removed_from_every_store(
        capsys, tmp_path, small_tree):
    """`rm -rf <data dir>/dagster` (to reclaim its logs' space) left the instance knowing no
    partition: a folder removed since kept its Parquet files and runs for good, fresh."""
    data = tmp_path / "data"
    assert _cli(capsys, "ingest", "--experiments-dir", small_tree, "--data-dir", data)[0] == 0
    before = _stores(data)
    gone = find_run_dirs(small_tree)[0]
    shutil.rmtree(data / "dagster")
    shutil.rmtree(gone.path)
    code, out = _cli(capsys, "ingest", "--data-dir", data)
    assert code == 0 and out["removed"] == [gone.key] and out["discovered"] == 2
    after = _stores(data)
    assert after["parquet"] == [p for p in before["parquet"] if gone.key.split("/")[0] not in p]
    assert len(after["parquet"]) == len(before["parquet"]) - 2
    assert 0 < len(after["mlflow"]) < len(before["mlflow"])
    assert 0 < len(after["aim"]) < len(before["aim"])
