"""Links from table rows to their runs: read from the real stores the writers fill, only when
the UI's address is known, one lookup per page of rows."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from align_track_pipeline.core.source.discovery import RunDir
from align_track_pipeline.core.source.parse import parse_run_dir
from align_track_pipeline.core.trackers.aim.manifest import Manifest, manifest_path
from align_track_pipeline.core.trackers.aim.tracker import AimTracker
from align_track_pipeline.core.trackers.mlflow.plan import FLAT, TAG_KEY, plan_runs
from align_track_pipeline.core.trackers.mlflow.tracker import MlflowTracker
from align_track_pipeline.core.versions import experiment_key, scene_key
from tests.conftest import SAMPLE_TREE

REL = "phase2_june_eval_live/baseline/2025-06-12__14-03-55"  # several targets in one dir


def _rows(rel: str = REL) -> tuple[list[dict], list[dict]]:
    parsed = parse_run_dir(RunDir(SAMPLE_TREE / rel, rel), SAMPLE_TREE)
    return parsed.experiments.to_pylist(), parsed.scenes.to_pylist()


def test_aim_links_are_the_complete_runs_of_the_manifest(tmp_path):
    _, scenes = _rows()
    manifest = Manifest(manifest_path(tmp_path / "aim"))
    keys = [scene_key(s["partition_key"], s["scene_index"]) for s in scenes]
    for n, key in enumerate(keys):
        manifest.pending(REL, key, f"hash{n}", "content")
    manifest.complete(keys[1:])  # the first run was never closed: no link to it
    manifest.close()
    aim = AimTracker(repo=str(tmp_path / "aim"), ui_url="http://127.0.0.1:43800/")
    assert aim.links("scenes", scenes) == {
        key: f"http://127.0.0.1:43800/runs/hash{n}" for n, key in enumerate(keys) if n}
    assert aim.links("experiments", _rows()[0]) == {}  # Aim has no run per experiment row
    no_ui = AimTracker(repo=aim.repo)
    assert no_ui.links("scenes", scenes) == {}
    behind = AimTracker(repo=aim.repo, ui_url="http://aim.example:43800/ui/?team=a#top")
    assert set(behind.links("scenes", scenes).values()) == {
        f"http://aim.example:43800/ui/runs/hash{n}?team=a#top" for n in range(1, len(keys))}
    missing = AimTracker(repo=str(tmp_path / "none"), ui_url="x")
    assert missing.links("scenes", scenes) == {} and not (tmp_path / "none").exists()


def _mlflow_links(uri: str, tmp_path: Path, experiment: str = "align-system",
                  flat: bool = False) -> None:
    from mlflow import MlflowClient

    from align_track_pipeline.core.trackers.mlflow.writer import MlflowWriter

    experiments, scenes = _rows()
    writer = MlflowWriter(uri, experiment, str(tmp_path / "artifacts"))
    writer.upsert(REL, plan_runs(experiments, scenes, SAMPLE_TREE / REL,
                                 FLAT if flat else "hierarchical"))
    ui = "http://127.0.0.1:5000"
    tracker = MlflowTracker(tracking_uri=uri, experiment=experiment, flat=flat, ui_url=ui)
    client = MlflowClient(uri)
    runs = client.search_runs([writer.experiment_id], max_results=5000)
    url = {r.data.tags[TAG_KEY]: f"{ui}/#/experiments/{writer.experiment_id}/runs/"
                                 f"{r.info.run_id}" for r in runs}
    parents = {experiment_key(e["partition_key"], e["alignment_target_id"])
               for e in experiments}
    assert tracker.links("experiments", experiments) == {k: url[k] for k in parents}
    if flat:
        assert tracker.links("scenes", scenes) == {}  # flat: no run per scene
    else:
        page = scenes[:7]
        keys = {scene_key(s["partition_key"], s["scene_index"]) for s in page}
        assert tracker.links("scenes", page) == {k: url[k] for k in keys}
    no_ui = MlflowTracker(tracking_uri=uri, experiment=experiment)
    assert no_ui.links("experiments", experiments) == {}


@pytest.mark.slow
def test_mlflow_links_on_the_sqlite_store(tmp_path):
    _mlflow_links(f"sqlite:///{tmp_path}/mlflow.db", tmp_path)
    never_written = MlflowTracker(tracking_uri=f"sqlite:///{tmp_path}/other.db", ui_url="x")
    assert never_written.links("experiments", _rows()[0]) == {}
    assert not (tmp_path / "other.db").exists()


@pytest.mark.slow
def test_mlflow_links_flat(tmp_path):
    _mlflow_links(f"sqlite:///{tmp_path}/mlflow.db", tmp_path, flat=True)
    other = MlflowTracker(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="other",
                          ui_url="x")
    assert other.links("experiments", _rows()[0]) == {}  # runs of this experiment only


@pytest.mark.slow
def test_mlflow_links_through_a_tracking_server(mlflow_server, tmp_path):
    _mlflow_links(mlflow_server, tmp_path, experiment=f"links-{uuid.uuid4().hex[:8]}")
