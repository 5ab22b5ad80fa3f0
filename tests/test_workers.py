"""`align-track ingest --workers 2` writes exactly what one process writes: the same Parquet
rows, one MLflow run per key and one Aim run per scene, with the Aim phase spread over two
worker processes, the tables written by the main process (its parse pool spreads the parsing)
and MLflow on SQLite kept to one writer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from mlflow import MlflowClient

from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.core.cores import usable_cores
from align_track_pipeline.core.pools import pool_name
from align_track_pipeline.core.trackers.mlflow.tracker import MlflowTracker
from align_track_pipeline.defs.dagster_compat import pool_holders
from tests.conftest import aim_runs_seen_by_a_fresh_process
from tests.test_shared_stores import assert_one_aim_run_per_scene, assert_one_run_per_key

pytestmark = pytest.mark.slow
ALIGN_TRACK = str(Path(sys.executable).parent / "align-track")


def _ingest(tree: Path, data: Path, workers: int, *extra: str) -> str:
    done = subprocess.run([ALIGN_TRACK, "ingest", "--json", "--workers", str(workers),
                           "--experiments-dir", str(tree), "--data-dir", str(data), *extra],
                          capture_output=True, text=True, timeout=900, check=False,
                          env={k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["failed"] == []
    return done.stderr


def _rows(data: Path, table: str) -> list[dict]:
    rows = ds.dataset(data / "parquet" / table).to_table().to_pylist()
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _mlflow(data: Path) -> set[tuple[str, str]]:
    client = MlflowClient(f"sqlite:///{data}/mlflow.db")
    exp = client.get_experiment_by_name("align-system")
    return {(r.data.tags["align_track.key"], r.data.tags["align_track.content_hash"])
            for r in client.search_runs([exp.experiment_id], max_results=10000)}


def _aim(data: Path) -> list[tuple]:
    return sorted((r["params"]["partition_key"], r["params"]["scene_index"], r["name"],
                   json.dumps(r["params"], sort_keys=True), json.dumps(r["metrics"]))
                  for r in aim_runs_seen_by_a_fresh_process(data / "aim"))


def test_two_workers_write_exactly_what_one_writes(sample_tree, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    serial = _ingest(sample_tree, one, 1)
    parallel = _ingest(sample_tree, two, 2)
    assert "worker processes" not in serial
    assert "tables run 1/1:" in parallel  # in the main process, beside the workers' start
    assert "tables: 20 partitions over" not in parallel
    assert "aim: 20 partitions over 2 worker processes" in parallel
    assert "mlflow run 1/1:" in parallel  # SQLite: one writer, in the main process
    # the analysis is rebuilt in the main process while the workers still write Aim
    assert parallel.index("analysis: rebuilt") < parallel.index("aim: 20 partitions in")

    for table in ("experiments", "scenes"):
        assert _rows(two, table) == _rows(one, table)
    assert_one_run_per_key(f"sqlite:///{two}/mlflow.db", "align-system", two)
    assert _mlflow(two) == _mlflow(one)
    assert_one_aim_run_per_scene(two / "aim", two)
    assert _aim(two) == _aim(one)

    with open_instance(two) as instance:  # the pools follow the stores and the cores
        aim, mlflow = (pool_name(f"aim:{two.resolve()}/aim"),
                       pool_name(f"mlflow:sqlite:///{two.resolve()}/mlflow.db"))
        assert pool_holders(instance, aim) == (usable_cores() + 1, [])
        assert pool_holders(instance, mlflow) == (1, [])
    assert _ingest(sample_tree, two, 2).count("worker processes") == 0  # all fresh


def test_ctrl_c_stops_every_worker_and_the_rerun_converges(sample_tree, tmp_path):
    """SIGINT as a worker creates its 3rd Aim run: the ingest ends with 130, and the next
    ingest leaves one Aim run per scene."""
    data = tmp_path / "data"
    cmd = [ALIGN_TRACK, "ingest", "--json", "--workers", "2", "--experiments-dir",
           str(sample_tree), "--data-dir", str(data)]
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    stopped = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False,
                             env=env | {"ALIGN_TRACK_FAULT": "aim.run_created:3:sigint"})
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "align-track: interrupted" in stopped.stderr
    assert _ingest(sample_tree, data, 2)
    assert_one_aim_run_per_scene(data / "aim", data)


@pytest.mark.postgres
def test_mlflow_on_postgres_takes_two_workers(sample_tree, tmp_path, postgres):
    """On Postgres each partition's runs are replaced in a transaction under an advisory
    lock, so the MLflow phase spreads over the workers too, and still one run per key."""
    uri = postgres()
    err = _ingest(sample_tree, tmp_path / "data", 2, "--mlflow-uri", uri)
    assert "mlflow: 20 partitions over 2 worker processes" in err
    assert_one_run_per_key(uri, "align-system", tmp_path / "data")
    with open_instance(tmp_path / "data") as instance:
        assert pool_holders(instance, MlflowTracker(uri).pool) == (usable_cores(), [])
