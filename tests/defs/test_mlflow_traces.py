"""A trace per scene through `align-track ingest` on a real SQLite store and a real server:
one per scene whatever happens, content from the Parquet row, linked to its run, scores as
assessments."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from mlflow import MlflowClient

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.trackers.base import scenario_metrics

pytestmark = pytest.mark.slow  # each test is a full ingest (or two) through the CLI


def _ingest(capsys, tree: Path, data: Path, *extra: str) -> dict:
    code = main(["ingest", "--experiments-dir", str(tree), "--data-dir", str(data), "--json",
                 *extra])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report["failed"]
    return report


def _traces(uri: str, experiment: str = "align-system", filter_string: str | None = None):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment).experiment_id
    out, token = [], None
    while True:
        page = client.search_traces(locations=[exp], filter_string=filter_string,
                                    max_results=500, page_token=token)
        out += page
        token = page.token
        if not token:
            return out


def _scenes(data: Path) -> list[dict]:
    return ds.dataset(data / "parquet" / "scenes").to_table().to_pylist()


def _one_per_scene(uri: str, data: Path, experiment: str = "align-system") -> list:
    traces = [t for t in _traces(uri, experiment) if "archived" not in t.info.tags]
    keys = sorted((t.info.tags["partition_key"], int(t.info.tags["scene_index"]))
                  for t in traces)
    assert keys == sorted((s["partition_key"], s["scene_index"]) for s in _scenes(data))
    return traces


def test_a_trace_per_scene_with_the_rows_content(capsys, small_tree, data_dir):
    uri = f"sqlite:///{data_dir}/mlflow.db"
    _ingest(capsys, small_tree, data_dir)
    traces = _one_per_scene(uri, data_dir)
    scene = next(s for s in _scenes(data_dir) if s["scenario_scores"] and s["choice_index"]
                 is not None)
    (trace,) = _traces(uri, filter_string=(
        f"tag.partition_key = '{scene['partition_key']}' "
        f"AND tag.scene_index = '{scene['scene_index']}'"))
    tags = trace.info.tags
    for column in ("adm", "alignment_target_id", "scenario_id", "experiment_path"):
        assert tags[column] == scene[column]
    assert tags["scene_id"] == (scene["scene_id"] or "")
    root = trace.data.spans[0]
    item = json.loads(scene["item_json"])
    assert root.inputs["probe"] == scene["probe_text"]
    assert [c["action_id"] for c in root.inputs["choices"]] == [
        c["action_id"] for c in item["input"]["choices"]]
    assert [c["text"] for c in root.inputs["choices"]] == [
        c.get("unstructured") for c in item["input"]["choices"]]
    assert root.inputs["alignment_target"]["id"] == scene["alignment_target_id"]
    assert root.outputs == {
        "choice_index": scene["choice_index"], "action_id": scene["action_id"],
        "action_type": scene["action_type"], "text": scene["decision_text"],
        "justification": scene["justification"],
        "kdma_association": dict(scene["decision_kdma"]),
        # why the ADM chose, as it recorded it (the sample's scene has both)
        "predicted_kdma_values": item["choice_info"]["predicted_kdma_values"],
        "true_kdma_values": item["choice_info"]["true_kdma_values"]}
    assert trace.info.request_preview.startswith(scene["scenario_id"])
    assert trace.info.response_preview.startswith(f"[{scene['choice_index']}]")
    assert {a.name: a.value for a in trace.info.assessments} == {  # the scenario's, named so
        f"scenario.{k}": v for k, v in scene["scenario_scores"]}
    assert {a.source.source_type for a in trace.info.assessments} == {"CODE"}
    # Linked to the parent run of its experiment row, as the run's Traces tab lists them.
    client = MlflowClient(uri)
    run = client.get_run(trace.info.trace_metadata["mlflow.sourceRun"])
    assert run.data.tags["run_type"] == "parent"
    assert run.data.params["alignment_target_id"] == scene["alignment_target_id"]
    assert run.data.tags["partition_key"] == scene["partition_key"]
    exp = client.get_experiment_by_name("align-system").experiment_id
    linked = client.search_traces(locations=[exp], run_id=run.info.run_id)
    assert len(linked) == sum(1 for s in _scenes(data_dir)
                              if s["partition_key"] == scene["partition_key"]
                              and s["alignment_target_id"] == scene["alignment_target_id"])
    # The scene's timing, as its child run's.
    (child,) = client.search_runs([exp], (
        f"tags.partition_key = '{scene['partition_key']}' AND tags.run_type = 'scene' "
        f"AND tags.scene_index = '{scene['scene_index']}'"))
    assert trace.info.request_time == child.info.start_time
    assert trace.info.execution_duration == child.info.end_time - child.info.start_time
    ids = {t.info.trace_id for t in traces}

    report = _ingest(capsys, small_tree, data_dir)  # nothing changed: nothing written
    assert report["materialized"] == []
    assert {t.info.trace_id for t in _one_per_scene(uri, data_dir)} == ids


def test_changed_and_removed_scenes(capsys, small_tree, data_dir):
    uri = f"sqlite:///{data_dir}/mlflow.db"
    _ingest(capsys, small_tree, data_dir)
    before = {t.info.trace_id: t for t in _one_per_scene(uri, data_dir)}
    changed, removed = sorted(p.parent for p in small_tree.rglob("input_output.json"))[:2]
    io = changed / "input_output.json"
    items = json.loads(io.read_text())
    items[0]["output"]["action"]["justification"] = "A changed justification"
    io.write_text(json.dumps(items))
    _ingest(capsys, small_tree, data_dir)
    after = _one_per_scene(uri, data_dir)
    assert "A changed justification" in {t.data.spans[0].outputs["justification"]
                                         for t in after}
    assert len(after) == len(before)

    import shutil
    shutil.rmtree(removed)
    _ingest(capsys, small_tree, data_dir)
    rel = removed.relative_to(small_tree).as_posix()
    left = _one_per_scene(uri, data_dir)
    assert rel not in {t.info.tags["experiment_path"] for t in left}
    assert len(_traces(uri)) == len(left)  # deleted, not kept somewhere else


def test_removed_folder_archives_its_traces(capsys, small_tree, data_dir, monkeypatch):
    uri = f"sqlite:///{data_dir}/mlflow.db"
    _ingest(capsys, small_tree, data_dir)
    total = len(_traces(uri))
    removed = sorted(p.parent for p in small_tree.rglob("input_output.json"))[0]
    rel = removed.relative_to(small_tree).as_posix()
    import shutil
    shutil.rmtree(removed)
    monkeypatch.setenv("ALIGN_TRACK_ON_REMOVED", "archive")
    _ingest(capsys, small_tree, data_dir)
    archived = _traces(uri, filter_string="tag.archived = 'true'")
    assert len(archived) == 4 and {t.info.tags["experiment_path"] for t in archived} == {rel}
    assert all("partition_key" not in t.info.tags for t in archived)
    assert len(_traces(uri)) == total
    _one_per_scene(uri, data_dir)  # the live partitions: one each


def test_traces_off_writes_none(capsys, small_tree, data_dir, monkeypatch):
    monkeypatch.setenv("ALIGN_TRACK_MLFLOW_TRACES", "off")
    _ingest(capsys, small_tree, data_dir)
    assert _traces(f"sqlite:///{data_dir}/mlflow.db") == []


def test_flat_layout_links_each_trace_to_its_run(capsys, small_tree, data_dir):
    uri = f"sqlite:///{data_dir}/mlflow.db"
    _ingest(capsys, small_tree, data_dir, "--flat", "--mlflow-experiment", "flat")
    traces = _one_per_scene(uri, data_dir, "flat")
    client = MlflowClient(uri)
    for trace in traces:
        run = client.get_run(trace.info.trace_metadata["mlflow.sourceRun"])
        assert run.data.tags["run_type"] == "experiment"
        assert run.data.tags["partition_key"] == trace.info.tags["partition_key"]


@pytest.mark.parametrize("fault", ["mlflow.partition_written:2"])
def test_kill_then_reingest_leaves_one_per_scene(small_tree, data_dir, fault):
    cmd = [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
           "--experiments-dir", str(small_tree), "--data-dir", str(data_dir)]
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False,
                            env={**os.environ, "ALIGN_TRACK_FAULT": fault})
    assert killed.returncode == -9, killed.stderr[-2000:]
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    _one_per_scene(f"sqlite:///{data_dir}/mlflow.db", data_dir)


def test_a_server_gets_a_trace_per_scene(capsys, small_tree, data_dir, mlflow_server):
    experiment = f"traces-{uuid.uuid4().hex[:8]}"
    _ingest(capsys, small_tree, data_dir, "--mlflow-uri", mlflow_server,
            "--mlflow-experiment", experiment)
    traces = _one_per_scene(mlflow_server, data_dir, experiment)
    client = MlflowClient(mlflow_server)
    scored = {(s["partition_key"], s["scene_index"]): scenario_metrics(s)
              for s in _scenes(data_dir)}
    for trace in traces:
        key = (trace.info.tags["partition_key"], int(trace.info.tags["scene_index"]))
        assert {a.name: a.value for a in trace.info.assessments} == scored[key]
        run = client.get_run(_linked_run(client, trace))
        assert run.data.tags["partition_key"] == key[0]
    ids = {t.info.trace_id for t in traces}
    _ingest(capsys, small_tree, data_dir, "--mlflow-uri", mlflow_server,
            "--mlflow-experiment", experiment)
    assert {t.info.trace_id for t in _one_per_scene(mlflow_server, data_dir, experiment)} == ids


def _linked_run(client: MlflowClient, trace) -> str:
    """The parent run whose run_id search lists the trace."""
    runs = client.search_runs([trace.info.experiment_id],
                              f"tags.partition_key = '{trace.info.tags['partition_key']}' "
                              "AND tags.run_type = 'parent'")
    (run,) = [r for r in runs if trace.info.trace_id in {
        t.info.trace_id for t in client.search_traces(
            locations=[trace.info.experiment_id], run_id=r.info.run_id)}]
    return run.info.run_id


def test_kill_after_traces_sent_then_reingest_leaves_one_per_scene(small_tree, data_dir,
                                                                   mlflow_server):
    """Killed after a partition's traces reached the server, before their scores: the re-run
    finds them without their assessments, replaces them, and every scene has one trace with
    all its scores, none twice. Only the small tree's folder with scores is kept."""
    import shutil

    for rel in ("pipeline_baseline", "random"):
        shutil.rmtree(small_tree / rel)
    experiment = f"killed-{uuid.uuid4().hex[:8]}"
    cmd = [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
           "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
           "--mlflow-uri", mlflow_server, "--mlflow-experiment", experiment]
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False,
                            env={**os.environ, "ALIGN_TRACK_FAULT": "mlflow.traces_sent"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    sent = _traces(mlflow_server, experiment)
    assert sent and all(t.info.assessments == [] for t in sent)  # spans there, scores not
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    traces = _one_per_scene(mlflow_server, data_dir, experiment)
    assert len(_traces(mlflow_server, experiment)) == len(traces)  # no duplicate anywhere
    scored = {(s["partition_key"], s["scene_index"]): scenario_metrics(s)
              for s in _scenes(data_dir)}
    assert all(scored.values())
    for trace in traces:
        key = (trace.info.tags["partition_key"], int(trace.info.tags["scene_index"]))
        assert {a.name: a.value for a in trace.info.assessments} == scored[key]
