"""`mlflow_runs` through `align-track ingest`: structure, idempotency, a kill mid-way."""

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.dataset as ds
from mlflow import MlflowClient

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import find_run_dirs
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
    replaced = {r.info.run_id for r in after if r.data.tags["partition_key"] == target.key}
    kept = {r.info.run_id for r in after} - replaced
    assert replaced and replaced.isdisjoint(ids) and kept <= ids
    assert len(after) == len(runs)


def test_flat_mode(capsys, sample_tree, data_dir):
    _ingest(capsys, sample_tree, data_dir, "--flat", "--mlflow-experiment", "flat-runs")
    runs = _runs(f"sqlite:///{data_dir}/mlflow.db", "flat-runs")
    assert len(runs) == _table(data_dir, "experiments").num_rows
    assert {r.data.tags["run_type"] for r in runs} == {"experiment"}


def test_kill_mid_way_then_rerun_against_a_server(tmp_path, sample_tree, data_dir, mlflow_server):
    experiment = f"kill-{uuid.uuid4().hex[:8]}"
    cmd = [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
           "--experiments-dir", str(sample_tree), "--data-dir", str(data_dir),
           "--mlflow-uri", mlflow_server, "--mlflow-experiment", experiment]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    client = MlflowClient(mlflow_server)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until MLflow runs are being written
        exp = client.get_experiment_by_name(experiment)
        if exp and len(client.search_runs([exp.experiment_id], max_results=50)) >= 30:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(_runs(mlflow_server, experiment))
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    runs = _runs(mlflow_server, experiment)
    assert 30 <= partial < len(runs)
    parents = [r for r in runs if r.data.tags["run_type"] == "parent"]
    children = [r for r in runs if r.data.tags["run_type"] == "scene"]
    assert len(parents) == _table(data_dir, "experiments").num_rows
    assert len(children) == _table(data_dir, "scenes").num_rows
    assert len({r.data.tags["align_track.key"] for r in runs}) == len(runs)
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_mlflow_ui_serves_the_store_on_loopback(capsys, sample_tree, data_dir):
    _ingest(capsys, sample_tree, data_dir)
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
