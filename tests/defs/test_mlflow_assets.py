"""`mlflow_runs` on a real instance and through `align-track ingest`: structure, idempotency,
a kill mid-way."""

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import dagster as dg
import pyarrow.dataset as ds
import pytest
from mlflow import MlflowClient

from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.definitions import build_defs
from tests.conftest import _free_port, stop_server, wait_http


def _ingest(capsys, tree: Path, data: Path, *extra: str) -> dict:
    code = main(["ingest", "--experiments-dir", str(tree), "--data-dir", str(data), "--json",
                 *extra])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report["failed"]
    return report


def _runs(uri: str, experiment: str = "align-system") -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=10000)


def _table(data: Path, name: str):
    return ds.dataset(data / "parquet" / name).to_table()


def test_the_asset_writes_one_partition_and_converges(tmp_path, small_tree, data_dir,
                                                      dagster_storage, empty_stores):
    """The asset on one partition of a real instance: a parent per experiments row, a child
    per scene under it, the metadata the UI shows; materialized again, it writes nothing.
    (The store is a copy of an empty one: a new one's creation is
    tests/core/test_mlflow_compat.py's.)"""
    defs = build_defs(str(small_tree), str(data_dir))
    key = find_run_dirs(small_tree)[-1].key
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("experiments", [key])
        for job in ("tables", "mlflow", "mlflow"):
            assert defs.resolve_job_def(job).execute_in_process(
                instance=instance, partition_key=key).success
        records = instance.fetch_materializations(dg.AssetKey("mlflow_runs"), limit=10).records
    first, again = (r.asset_materialization.metadata
                    for r in sorted(records, key=lambda r: r.storage_id))
    runs = _runs(f"sqlite:///{data_dir}/mlflow.db")
    (parent,) = [r for r in runs if r.data.tags["run_type"] == "parent"]
    children = [r for r in runs if r.data.tags["run_type"] == "scene"]
    assert len(children) == _table(data_dir, "scenes").num_rows == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {r.data.tags["partition_key"] for r in runs} == {key}
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert first["written"].value == first["runs"].value == len(runs) == 5
    assert first["parent_run_ids"].value == [parent.info.run_id]
    assert first["experiment_id"].value == parent.info.experiment_id
    assert again["written"].value == 0 and again["unchanged"].value == 5
    assert again["parent_run_ids"].value == [
        parent.info.run_id]


@pytest.mark.slow
def test_ingest_feeds_mlflow_and_converges(capsys, sample_tree, data_dir):
    _ingest(capsys, sample_tree, data_dir)
    uri = f"sqlite:///{data_dir}/mlflow.db"
    runs = _runs(uri)
    parents = [r for r in runs if r.data.tags["run_type"] == "parent"]
    children = [r for r in runs if r.data.tags["run_type"] == "scene"]
    assert len(parents) == _table(data_dir, "experiments").num_rows
    assert len(children) == _table(data_dir, "scenes").num_rows
    parent_ids = {p.info.run_id for p in parents}
    assert all(c.data.tags["mlflow.parentRunId"] in parent_ids for c in children)
    assert {r.info.status for r in runs} == {"FINISHED"}
    ids = {r.info.run_id for r in runs}

    report = _ingest(capsys, sample_tree, data_dir)
    assert report["materialized"] == []
    assert {r.info.run_id for r in _runs(uri)} == ids

    target = find_run_dirs(sample_tree)[-2]  # random/unaligned
    io = target.path / "input_output.json"
    io.write_text(io.read_text().replace("Random choice", "Changed choice", 1))
    report = _ingest(capsys, sample_tree, data_dir)
    assert report["materialized"] == [target.key]
    after = _runs(uri)
    theirs = [r for r in after if r.data.tags["partition_key"] == target.key]
    replaced = {r.info.run_id for r in theirs
                if r.data.tags["run_type"] == "parent" or r.data.params["scene_index"] == "0"}
    kept = {r.info.run_id for r in after} - replaced  # the changed scene's and its parent's
    assert len(replaced) == 2 and replaced.isdisjoint(ids) and kept <= ids
    assert len(after) == len(runs)
    parent = next(r.info.run_id for r in theirs if r.data.tags["run_type"] == "parent")
    assert {r.data.tags["mlflow.parentRunId"] for r in theirs if r.info.run_id != parent} == {
        parent}
    assert len({r.data.tags["source_version"] for r in theirs}) == 1


@pytest.mark.slow
def test_flat_mode(capsys, sample_tree, data_dir):
    _ingest(capsys, sample_tree, data_dir, "--flat", "--mlflow-experiment", "flat-runs")
    runs = _runs(f"sqlite:///{data_dir}/mlflow.db", "flat-runs")
    assert len(runs) == _table(data_dir, "experiments").num_rows
    assert {r.data.tags["run_type"] for r in runs} == {"experiment"}


def _killed_at(fault: str, tree: Path, data: Path, server: str) -> tuple[list[str], str]:
    """Run `align-track ingest` against the server until it is SIGKILLed at the fault point;
    returns its command (to rerun it) and its MLflow experiment."""
    experiment = f"kill-{uuid.uuid4().hex[:8]}"
    cmd = [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
           "--experiments-dir", str(tree), "--data-dir", str(data),
           "--mlflow-uri", server, "--mlflow-experiment", experiment]
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False,
                            env={**os.environ, "ALIGN_TRACK_FAULT": fault})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    return cmd, experiment


def _planned_runs(data: Path) -> tuple[list[str], Counter]:
    """Partitions in the order the MLflow phase writes them, and the runs each one gets (a
    parent per experiments row, a child per scene)."""
    with open_instance(data) as instance:
        order = instance.get_dynamic_partitions("experiments")
    return order, Counter(_table(data, "experiments").column("partition_key").to_pylist()
                          + _table(data, "scenes").column("partition_key").to_pylist())


def _rerun_converges(cmd: list[str], data: Path, server: str, experiment: str) -> list:
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    runs = _runs(server, experiment)
    parents = [r for r in runs if r.data.tags["run_type"] == "parent"]
    children = [r for r in runs if r.data.tags["run_type"] == "scene"]
    assert len(parents) == _table(data, "experiments").num_rows
    assert len(children) == _table(data, "scenes").num_rows
    assert len({r.data.tags["align_track.key"] for r in runs}) == len(runs)
    assert {r.info.status for r in runs} == {"FINISHED"}
    return runs


@pytest.mark.slow
def test_kill_after_a_partition_then_rerun_against_a_server(small_tree, data_dir,
                                                            mlflow_server):
    cmd, experiment = _killed_at("mlflow.partition_written:2", small_tree, data_dir,
                                 mlflow_server)
    order, planned = _planned_runs(data_dir)
    assert len(order) == 3
    partial = _runs(mlflow_server, experiment)  # exactly the first two partitions' runs
    assert Counter(r.data.tags["align_track.partition"] for r in partial) == {
        key: planned[key] for key in order[:2]}
    assert len({r.data.tags["align_track.key"] for r in partial}) == len(partial)
    assert {r.info.status for r in partial} == {"FINISHED"}

    runs = _rerun_converges(cmd, data_dir, mlflow_server, experiment)
    assert {r.info.run_id for r in partial} <= {r.info.run_id for r in runs}  # kept as written


@pytest.mark.slow
def test_kill_mid_partition_then_rerun_against_a_server(small_tree, data_dir, mlflow_server):
    """Killed just after creating the second run of the second partition: its runs so far
    are RUNNING (a partition's runs end only once all of them and their files are stored),
    and the whole partition is written again."""
    cmd, experiment = _killed_at("mlflow.run_created:7", small_tree, data_dir, mlflow_server)
    order, planned = _planned_runs(data_dir)
    assert planned[order[0]] == 5  # a parent and four scenes: run 7 is the second partition's
    partial = _runs(mlflow_server, experiment)
    by_partition = Counter(r.data.tags["align_track.partition"] for r in partial)
    assert by_partition[order[0]] == 5
    assert 2 <= by_partition[order[1]] <= planned[order[1]]  # up to 4 creations in flight
    assert {r.info.status for r in partial
            if r.data.tags["align_track.partition"] == order[0]} == {"FINISHED"}
    assert {r.info.status for r in partial
            if r.data.tags["align_track.partition"] == order[1]} == {"RUNNING"}

    runs = _rerun_converges(cmd, data_dir, mlflow_server, experiment)
    ids = {r.info.run_id for r in runs}
    first = {r.info.run_id for r in partial if r.data.tags["align_track.partition"] == order[0]}
    assert first <= ids  # the complete partition was kept
    assert not ids & {r.info.run_id for r in partial} - first  # the cut ones were replaced


@pytest.mark.slow
def test_mlflow_ui_serves_the_store_on_loopback(capsys, small_tree, data_dir):
    _ingest(capsys, small_tree, data_dir)
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "align-track"), "mlflow-ui",
                             "--data-dir", str(data_dir), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body = wait_http(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get-by-name"
                         "?experiment_name=align-system", proc)
        assert json.loads(body)["experiment"]["name"] == "align-system"
    finally:
        stop_server(proc)
