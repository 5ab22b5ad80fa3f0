"""A password written into the MLflow tracking URI (`http://USER:PASSWORD@HOST:PORT`) is used
to connect and shown nowhere: not on stdout or stderr, not in `--json`, not in any file of the
data dir (Parquet, Dagster's run and event storage, its compute logs)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import _free_port

ALIGN_TRACK = str(Path(sys.executable).parent / "align-track")
PASSWORD = "SECRETPW"


def _with_password(url: str) -> str:
    return url.replace("http://", f"http://alice:{PASSWORD}@", 1)


def _align_track(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ALIGN_TRACK_"))}
    return subprocess.run([ALIGN_TRACK, *args], capture_output=True, text=True, timeout=600,
                          env=clean | env)


def _files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under `root` whose bytes contain `secret` (SQLite databases included)."""
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_password_in_the_uri_reaches_no_output_and_no_file(small_tree, tmp_path, mlflow_server):
    data = tmp_path / "data"
    done = _align_track("ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data),
                        "--mlflow-uri", _with_password(mlflow_server),
                        "--mlflow-experiment", "credentials")
    assert done.returncode == 0, done.stderr[-3000:]
    experiment = MlflowClient(mlflow_server).get_experiment_by_name("credentials")
    runs = MlflowClient(mlflow_server).search_runs([experiment.experiment_id], max_results=100)
    assert len(runs) == 3 + 12  # the URI was used to connect
    assert PASSWORD not in done.stdout + done.stderr
    assert "View run" not in done.stdout + done.stderr  # one get_run per run, no longer made
    assert f"mlflow: {mlflow_server} (experiment credentials)" in done.stdout
    assert (data / "dagster" / "storage").is_dir()  # the compute logs are among the files
    assert _files_holding(data, PASSWORD) == []


@pytest.mark.slow
def test_a_password_in_the_uri_of_a_server_that_is_down_is_shown_nowhere(small_tree, tmp_path):
    data = tmp_path / "data"
    uri = _with_password(f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    done = _align_track("ingest", "--json", "--experiments-dir", str(small_tree), "--data-dir",
                        str(data), "--mlflow-uri", uri, "--trackers", "mlflow",
                        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [f["error"] for f in json.loads(done.stdout)["failed"]]
    assert len(errors) == 3 and all("log_mlflow_runs" in e for e in errors), errors
    assert all("127.0.0.1" in e for e in errors), errors  # the cause is still told
    assert PASSWORD not in done.stdout + done.stderr
    assert _files_holding(data, PASSWORD) == []
