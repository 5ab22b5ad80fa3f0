"""ALIGN_TRACK_MLFLOW_ARTIFACTS: experiments the pipeline creates keep their artifacts in one
shared location (a folder, or any artifact URI MLflow accepts) instead of the first writer's
data dir; and a tracking server's credentials stay in MLflow's own variables."""

import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from align_track_pipeline.core.trackers.mlflow.writer import MlflowWriter
from align_track_pipeline.core.trackers.registry import Settings, create
from tests.conftest import SAMPLE_TREE
from tests.core.test_mlflow_writer import _artifacts, _specs

REL = "random/unaligned"


def test_the_variable_sets_the_artifact_root(tmp_path):
    shared = create("mlflow", Settings(tmp_path / "data", env={
        "ALIGN_TRACK_MLFLOW_ARTIFACTS": "/mnt/shared/mlflow-artifacts"}))
    assert (shared.artifact_root, shared.shared_artifacts) == (
        "/mnt/shared/mlflow-artifacts", True)
    default = create("mlflow", Settings(tmp_path / "data", env={}))
    assert default.artifact_root == str((tmp_path / "data" / "mlflow-artifacts").resolve())
    assert not default.shared_artifacts


def _written_under(root: Path, uri: str, experiment: str, shared: bool = True) -> list[str]:
    """Upsert one partition; the artifacts MLflow lists for its runs, after checking that the
    experiment's location is under `root`."""
    writer = MlflowWriter(uri, experiment, str(root), shared_artifacts=shared)
    writer.upsert(REL, _specs(SAMPLE_TREE, REL))
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found.artifact_location.removeprefix("file://") == f"{root}/{experiment}"
    runs = client.search_runs([found.experiment_id])
    return sorted(a for r in runs for a in _artifacts(client, r.info.run_id))


def test_a_sql_store_writes_artifacts_into_the_shared_folder(tmp_path, mlflow_db):
    shared = tmp_path / "shared-artifacts"
    listed = _written_under(shared, f"sqlite:///{mlflow_db}", "align-system")
    assert "scene_0/scene_data.json" in listed
    on_disk = [p for p in shared.rglob("*") if p.is_file()]
    assert len(on_disk) == len(listed)


@pytest.mark.slow
def test_a_sql_store_writes_artifacts_through_an_artifact_uri(tmp_path, mlflow_server):
    """A location that is no folder here (the server's proxied artifact store): written
    through MLflow's artifact repository, and read back through it."""
    root = f"{mlflow_server}/api/2.0/mlflow-artifacts/artifacts/shared"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    writer = MlflowWriter(uri, "align-system", root, shared_artifacts=True)
    writer.upsert(REL, _specs(SAMPLE_TREE, REL))
    client = MlflowClient(uri)
    runs = client.search_runs([writer.experiment_id])
    assert all(r.info.artifact_uri.startswith(root) for r in runs)
    assert "scene_0/scene_data.json" in [a for r in runs for a in _artifacts(client,
                                                                            r.info.run_id)]


@pytest.mark.slow
def test_a_server_creates_the_experiment_at_the_shared_location(tmp_path, mlflow_server):
    shared = tmp_path / "shared-artifacts"
    experiment = f"shared-{uuid.uuid4().hex[:8]}"
    listed = _written_under(shared, mlflow_server, experiment)
    assert "scene_0/scene_data.json" in listed
    assert [p for p in shared.rglob("scene_data.json")]


def test_credentials_never_reach_the_target_or_the_metadata(tmp_path, monkeypatch):
    """MLflow's client reads MLFLOW_TRACKING_USERNAME / _PASSWORD itself; a password inside
    the URI is never shown either."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    tracker = create("mlflow", Settings(tmp_path, {"mlflow_uri": "https://bob:pw2@mlflow.example"}))
    shown = tracker.target_id() + tracker.ui_hint() + repr(tracker.layout_version())
    assert "hunter2" not in shown and "pw2" not in shown and "mlflow.example" in shown
