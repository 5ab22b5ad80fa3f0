"""A partition file that was truncated or deleted behind the pipeline's back: `ingest` rewrites
it (the trackers, fed the same content, keep their runs), and the commands that read the
tables name the file and say how to repair it, without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.tables.store import ParquetStore
from tests.conftest import aim_runs_held, item_count


def _ingest(capsys, tree: Path, data: Path) -> dict:
    code = main(["ingest", "--experiments-dir", str(tree), "--data-dir", str(data), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    return report


def _mlflow_run_ids(data: Path) -> set[str]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{data / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("align-system")
    return {r.info.run_id for r in client.search_runs([experiment.experiment_id],
                                                      max_results=10000)}


def _break(path: Path, how: str) -> None:
    if how == "truncate":
        os.truncate(path, 100)
    else:
        path.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_ingest_rewrites_a_broken_scenes_file_and_keeps_the_tracker_runs(
        capsys, small_tree, data_dir, how):
    _ingest(capsys, small_tree, data_dir)
    run_dir = find_run_dirs(small_tree)[1]
    path = ParquetStore(data_dir).path("scenes", run_dir.key)
    mlflow_runs, aim_runs = _mlflow_run_ids(data_dir), aim_runs_held(data_dir / "aim")
    assert mlflow_runs and aim_runs

    _break(path, how)
    main(["status", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
          "--json"])
    status = {p["partition"]: p for p in json.loads(capsys.readouterr().out)["partitions"]}
    assert status[run_dir.key]["state"] == "stale"  # not fresh: a file is gone
    assert status[run_dir.key]["error"].startswith(f"{path} is ")
    assert all(p["state"] == "fresh" for k, p in status.items() if k != run_dir.key)
    report = _ingest(capsys, small_tree, data_dir)

    assert report["materialized"] == [run_dir.key] and report["failed"] == []
    assert pq.read_table(path).num_rows == item_count(run_dir.path)
    assert _mlflow_run_ids(data_dir) == mlflow_runs  # the same runs, none rewritten
    assert aim_runs_held(data_dir / "aim") == aim_runs
    assert _ingest(capsys, small_tree, data_dir)["materialized"] == []  # repaired for good


def _cli(data: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "align-track"), *argv, "--data-dir", str(data)],
        capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_reading_commands_name_the_broken_file_and_the_repair(capsys, small_tree, data_dir,
                                                              tmp_path):
    _ingest(capsys, small_tree, data_dir)
    run_dir = find_run_dirs(small_tree)[1]
    path = ParquetStore(data_dir).path("scenes", run_dir.key)
    scenario = pq.read_table(path, columns=["scenario_id"])["scenario_id"][0].as_py()
    os.truncate(path, 100)

    for argv in (["search"], ["search", "--adm", "random"],
                 ["search", "--where", "timing_seconds >= 0"], ["compare", scenario],
                 ["export", "-o", str(tmp_path / "e.csv")],
                 ["report", "--table", "scenes", "--values", "timing_seconds", "-o",
                  str(tmp_path / "r.md")]):
        done = _cli(data_dir, *argv)
        output = done.stdout + done.stderr
        assert done.returncode != 0, (argv, output)
        assert str(path) in done.stderr and "align-track ingest" in done.stderr, (argv, output)
        assert "Traceback" not in output and "--where" not in output, (argv, output)


@pytest.mark.slow
def test_reading_commands_warn_of_deleted_partition_files_not_of_removed_folders(
        capsys, small_tree, data_dir):
    """Both files of a partition deleted behind the pipeline's back: every answer would
    silently lack its rows, so the reading commands say which files are gone and how to get
    them back. A folder removed from the tree takes its files on purpose: no warning."""
    _ingest(capsys, small_tree, data_dir)
    run_dirs = find_run_dirs(small_tree)
    store = ParquetStore(data_dir)
    gone = [store.path(t, run_dirs[1].key) for t in ("experiments", "scenes")]
    for path in gone:
        path.unlink()

    done = _cli(data_dir, "search", "--json", "--limit", "0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["count"] == sum(item_count(r.path) for r in run_dirs) - (
        item_count(run_dirs[1].path))
    assert done.stderr.startswith("align-track search: warning: 2 table files that ingest "
                                  f"wrote are missing ({gone[0]}; {gone[1]})")
    assert done.stderr.rstrip().endswith("Run `align-track ingest` to rewrite them")

    _ingest(capsys, small_tree, data_dir)
    assert _cli(data_dir, "search", "--limit", "1").stderr == ""
    import shutil

    shutil.rmtree(run_dirs[2].path)
    _ingest(capsys, small_tree, data_dir)
    assert not store.path("scenes", run_dirs[2].key).exists()
    assert _cli(data_dir, "search", "--limit", "1").stderr == ""  # removed on purpose


@pytest.mark.slow
def test_a_file_that_is_not_a_table_file_is_named_and_fails_the_ingest_until_moved(
        capsys, small_tree, data_dir, tmp_path):
    """A Parquet file put into a table folder by hand (a notebook's output) makes every read
    of the table fail: the reading commands and the ingest's analysis name it and say to move
    it out, the ingest exits 1 while it is there (its analysis is stale), and the next ingest
    after it is moved builds the analysis again."""
    import pyarrow as pa

    _ingest(capsys, small_tree, data_dir)
    stray = ParquetStore(data_dir).table_dir("scenes") / "my_notes.parquet"
    pq.write_table(pa.table({"note": ["kept for later"]}), stray)

    assert main(["search", "--data-dir", str(data_dir)]) == 1
    said = capsys.readouterr().err
    assert str(stray) in said and "Move them out of" in said, said

    argv = ["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
            "--json"]
    run_dir = find_run_dirs(small_tree)[0]
    with (run_dir.path / "input_output.json").open("a") as f:
        f.write("\n")  # a change: the tables are written, then the analysis fails
    assert main(argv) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] == [] and report["materialized"] == [run_dir.key]
    assert str(stray) in report["analysis_failed"]
    assert main(argv) == 1  # nothing changed since, but the stale analysis is tried again
    assert json.loads(capsys.readouterr().out)["materialized"] == []

    stray.rename(tmp_path / stray.name)
    assert "analysis_failed" not in _ingest(capsys, small_tree, data_dir)
