"""`align-track mlflow-ui` and `aim-ui` serve a read-only UI with a small process tree."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from align_track_pipeline.core.source.discovery import RunDir
from align_track_pipeline.core.source.parse import parse_run_dir
from align_track_pipeline.core.trackers.aim.writer import AimWriter
from align_track_pipeline.core.trackers.mlflow.plan import plan_runs
from align_track_pipeline.core.trackers.mlflow.tracker import parents_only_url, runs_url, traces_url
from align_track_pipeline.core.trackers.mlflow.writer import MlflowWriter
from tests.conftest import SAMPLE_TREE, _free_port

REL = "random/unaligned"
MAX_PROCESSES = 3  # the server and its one worker (MLflow's default is 16 processes)


def _session(leader: int) -> list[int]:
    """Every process of the session the server was started in (its whole tree)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == leader:
                    out.append(int(entry.name))
            except ProcessLookupError:
                pass
    return out


def _serve(tmp_path: Path, args: list[str], ready_path: str):
    """Start `align-track ARGS --port P`; yield (url, process ids, log path) once ready."""
    port = _free_port()
    log = tmp_path / "ui.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "align-track"), *args, "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}{ready_path}", timeout=2) as response:
                    body = response.read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        yield url, body, _session(proc.pid), log.read_text()
        proc.terminate()  # `kill PID`: the server alone is signalled, its worker must follow
        proc.wait(timeout=30)
        while _session(proc.pid) and time.monotonic() < deadline + 60:
            time.sleep(0.5)
        assert _session(proc.pid) == [], "a worker outlived the server"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _session(proc.pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_mlflow_ui_is_one_worker_and_prints_the_parents_only_view(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    writer = MlflowWriter(uri, "align-system", str(tmp_path / "artifacts"))
    parsed = parse_run_dir(RunDir(SAMPLE_TREE / REL, REL), SAMPLE_TREE)
    writer.upsert(RunDir(SAMPLE_TREE / REL, REL).key, plan_runs(
        parsed.experiments.to_pylist(), parsed.scenes.to_pylist(), SAMPLE_TREE / REL))
    for url, body, pids, log in _serve(tmp_path, ["mlflow-ui", "--data-dir", str(tmp_path),
                                                  "--mlflow-uri", uri], "/health"):
        assert body == b"OK"
        assert 1 <= len(pids) <= MAX_PROCESSES, pids
        assert parents_only_url(url, writer.experiment_id) in log
        # The runs list with the scene runs, and the Traces tab: MLflow 3.17's routes.
        assert f"{url}/#/experiments/{writer.experiment_id}/runs\n" in log
        assert f"{url}/#/experiments/{writer.experiment_id}/traces\n" in log
        assert runs_url(url, writer.experiment_id) in log
        assert traces_url(url, writer.experiment_id) in log
        for pid in pids:  # the server and its worker: MLflow's telemetry off, as in the CLI
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert b"MLFLOW_DISABLE_TELEMETRY=true" in environ, pid
            assert b"MLFLOW_ENABLE_REMOTE_ASSISTANT=false" in environ, pid
        # What the UI asks the server: its own telemetry off, the assistant not remote.
        assert _get_json(f"{url}/ajax-api/3.0/mlflow/ui-telemetry")["disable_ui_telemetry"]
        assistant = _get_json(f"{url}/ajax-api/3.0/mlflow/assistant/config")
        assert assistant["remote_access_allowed"] is False


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_aim_ui_is_one_worker_serving_the_repo(tmp_path):
    AimWriter(tmp_path / "aim").close()  # the repo `ingest` creates
    for _, body, pids, _ in _serve(tmp_path, ["aim-ui", "--aim-repo", str(tmp_path / "aim")],
                                   "/api/projects/"):
        assert json.loads(body)["path"] == str(tmp_path / "aim")
        assert 1 <= len(pids) <= MAX_PROCESSES, pids
