"""MLflow's basic auth: `align-track` against a real `mlflow server --app-name basic-auth`,
the credentials given only as MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (read by
MLflow's client itself) and never written anywhere: not in output, metadata or any file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import _free_port, aim_runs_seen_by_a_fresh_process, stop_server, wait_http

BIN = Path(sys.executable).parent
ADMIN_PASSWORD = "adm1n-s3cret-pw"


@pytest.mark.slow
def test_ingest_through_a_basic_auth_server(tmp_path, small_tree, monkeypatch):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ALIGN_TRACK_"))}
    (tmp_path / "server").mkdir()
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{tmp_path}/server/mlflow.db",
             "--artifacts-destination", str(tmp_path / "server" / "artifacts")],
            cwd=tmp_path / "server", stdout=log, stderr=subprocess.STDOUT,
            env=env | {"MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                         "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-key",
                         "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        wait_http(f"{url}/health", server)

        def ingest(data: Path, **credentials: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [str(BIN / "align-track"), "ingest", "--json", "--experiments-dir",
                 str(small_tree), "--data-dir", str(data), "--mlflow-uri", url],
                env=env | credentials, capture_output=True, text=True, timeout=600)

        refused = ingest(tmp_path / "anonymous")
        assert refused.returncode == 1, refused.stderr[-3000:]  # the MLflow writes refused
        errors = [f["error"] for f in json.loads(refused.stdout)["failed"]]
        assert len(errors) == 3 and all("log_mlflow_runs" in e for e in errors), errors
        assert all("401" in e and "not authenticated" in e for e in errors), errors  # the cause
        # The trackers are independent: the refused MLflow writes did not hold Aim back.
        assert len(aim_runs_seen_by_a_fresh_process(tmp_path / "anonymous" / "aim")) == 12
        admin = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
        for name, value in admin.items():
            monkeypatch.setenv(name, value)
        client = MlflowClient(url)
        assert client.get_experiment_by_name("align-system") is None  # nothing got through

        data = tmp_path / "data"
        done = ingest(data, **admin)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout)["failed"] == []
        experiment = client.get_experiment_by_name("align-system")
        assert len(client.search_runs([experiment.experiment_id], max_results=1000)) == 3 + 12
    finally:
        stop_server(server)
    assert ADMIN_PASSWORD not in done.stdout + done.stderr
    for path in data.rglob("*"):
        if path.is_file():
            assert ADMIN_PASSWORD.encode() not in path.read_bytes(), path
