"""The MLflow writer on a real SQLite store and a real `mlflow server`, read back through
MlflowClient."""

import json
import multiprocessing
import shutil
import socket
import subprocess
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from mlflow import MlflowClient

from align_track_pipeline.core.source.discovery import RunDir, content_hash, find_run_dirs
from align_track_pipeline.core.source.parse import parse_run_dir
from align_track_pipeline.core.trackers.mlflow.lookup import experiment_id, find_runs
from align_track_pipeline.core.trackers.mlflow.plan import HIERARCHICAL, TAG_KEY, plan_runs
from align_track_pipeline.core.trackers.mlflow.traces import plan_traces
from align_track_pipeline.core.trackers.mlflow.tracker import parents_only_url
from align_track_pipeline.core.trackers.mlflow.writer import (
    PARENT_TAG,
    REPLACED,
    TAG_BATCH,
    MlflowWriter,
)
from benchmarks.mlflow_http import CountedRequests
from tests.conftest import SAMPLE_TREE

RELS = ["phase2_june_eval_live/baseline/2025-06-12__14-03-55", "random/unaligned",
        "pipeline_comparative_regression/moral_judgement-0.2"]


def _specs(root: Path, rel: str):
    parsed = parse_run_dir(RunDir(root / rel, rel), root)
    return plan_runs(parsed.experiments.to_pylist(), parsed.scenes.to_pylist(), root / rel)


def _sqlite(db: Path) -> MlflowWriter:
    """The writer on a SQLite store (conftest's `mlflow_db`: MLflow's schema, no runs yet)."""
    return MlflowWriter(f"sqlite:///{db}", "align-system", str(db.parent / "artifacts"))


def read_back(uri: str, experiment_id: str) -> dict[str, dict]:
    """Every run as the MLflow API sees it, keyed by our run key, ids replaced by keys."""
    client = MlflowClient(uri)
    runs = client.search_runs([experiment_id], max_results=5000)
    key_of = {r.info.run_id: r.data.tags[TAG_KEY] for r in runs}
    out = {}
    for r in runs:
        tags = {k: v for k, v in r.data.tags.items()
                if not k.startswith("mlflow.") or k == "mlflow.runName"}
        tags[TAG_BATCH] = bool(tags.get(TAG_BATCH))  # one random id per write: present?
        parent = r.data.tags.get("mlflow.parentRunId")
        out[key_of[r.info.run_id]] = {
            "name": r.info.run_name, "status": r.info.status, "params": r.data.params,
            "metrics": r.data.metrics, "tags": tags,
            "parent": key_of.get(parent) if parent else None,
            "artifacts": _artifacts(client, r.info.run_id),
            "duration": (None if r.info.end_time is None  # a duration the data lacks
                         else r.info.end_time - r.info.start_time),
            # a start from the data is exact; one counted from the write time varies
            "start": r.info.start_time if tags["start_time_source"] == "run_dir_name" else None,
        }
    return out


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return sorted(out)


def test_sqlite_bulk_write_reads_back_through_the_api(tmp_path, mlflow_db):
    writer = _sqlite(mlflow_db)
    specs = {rel: _specs(SAMPLE_TREE, rel) for rel in RELS}
    for rel, s in specs.items():
        writer.upsert(RunDir(SAMPLE_TREE / rel, rel).key, s)
    runs = read_back(writer.tracking_uri, writer.experiment_id)
    planned = [s for group in specs.values() for s in group]
    assert set(runs) == {s.key for s in planned}
    for spec in planned:
        run = runs[spec.key]
        assert run["status"] == "FINISHED" and run["name"] == spec.name
        assert run["params"] == spec.params and run["metrics"] == spec.metrics
        assert run["tags"] == spec.tags | {TAG_BATCH: True}
        assert run["parent"] == spec.parent_key
        assert run["artifacts"] == sorted(spec.artifacts)
        assert run["duration"] == spec.span.end - spec.span.start
        if spec.base_ms is not None:
            assert run["start"] == spec.base_ms + spec.span.start
    child = next(s for s in planned if s.parent_key)
    client = MlflowClient(writer.tracking_uri)
    run_id = next(r.info.run_id
                  for r in client.search_runs([writer.experiment_id], max_results=5000)
                  if r.data.tags[TAG_KEY] == child.key)
    artifact = f"scene_{child.params['scene_index']}/scene_data.json"
    local = client.download_artifacts(run_id, artifact, str(tmp_path / "dl"))
    assert Path(local).read_bytes() == child.artifacts[artifact]


def test_children_come_in_scene_order_by_start_time(mlflow_db):
    """The MLflow UI orders runs by start time: a parent's children then read idx0, idx1..."""
    writer = _sqlite(mlflow_db)
    rel = RELS[2]  # no start time in the data: counted back from the write time
    parsed = parse_run_dir(RunDir(SAMPLE_TREE / rel, rel), SAMPLE_TREE)
    rows = parsed.experiments.to_pylist(), parsed.scenes.to_pylist()
    writer.upsert(RunDir(SAMPLE_TREE / rel, rel).key, plan_runs(*rows, SAMPLE_TREE / rel),
                  plan_traces(*rows, HIERARCHICAL))
    written = time.time() * 1000
    client = MlflowClient(writer.tracking_uri)
    runs = client.search_runs(
        [writer.experiment_id], "tags.run_type = 'scene'", order_by=["attributes.start_time"])
    assert [int(r.data.params["scene_index"]) for r in runs] == list(range(len(runs)))
    assert len(runs) >= 4 and all(r.info.end_time > r.info.start_time for r in runs)
    traces = client.search_traces(locations=[writer.experiment_id], max_results=500)
    assert len(traces) == len(runs)
    ends = [r.info.end_time for r in runs] + [
        t.info.request_time + t.info.execution_duration for t in traces]
    assert max(ends) <= written  # nothing in the future


@pytest.mark.slow
def test_bulk_and_api_paths_write_the_same_runs(mlflow_db, mlflow_server):
    bulk = _sqlite(mlflow_db)
    api = MlflowWriter(mlflow_server, f"parity-{uuid.uuid4().hex[:8]}")
    for writer in (bulk, api):
        for rel in RELS[:2]:
            writer.upsert(RunDir(SAMPLE_TREE / rel, rel).key, _specs(SAMPLE_TREE, rel))
    assert read_back(bulk.tracking_uri, bulk.experiment_id) == read_back(
        api.tracking_uri, api.experiment_id)


@pytest.mark.slow  # a real mlflow server
def test_a_run_whose_duration_the_data_lacks_has_no_end_time(mlflow_db, mlflow_server):
    """Scenes without their own time (raw_times_s shorter than the decisions) ended at their
    start: the MLflow UI showed a measured 0 ms, the fastest of all when sorted. Both paths
    now leave their end time unset, and the UI shows no duration."""
    rel = "pipeline_comparative_regression_2025-05/moral_judgement-0.2"
    bulk = _sqlite(mlflow_db)
    api = MlflowWriter(mlflow_server, f"untimed-{uuid.uuid4().hex[:8]}")
    for writer in (bulk, api):
        writer.upsert(RunDir(SAMPLE_TREE / rel, rel).key, _specs(SAMPLE_TREE, rel))
    runs = read_back(bulk.tracking_uri, bulk.experiment_id)
    assert runs == read_back(api.tracking_uri, api.experiment_id)
    scenes = [r for r in runs.values() if r["parent"] is not None]
    assert scenes and all(r["duration"] is None and r["status"] == "FINISHED" for r in scenes)
    assert all(r["duration"] > 0 for r in runs.values() if r["parent"] is None)  # timing.json


def _written_counted(writer: MlflowWriter, rel: str) -> tuple[list, CountedRequests]:
    """One partition upserted through `writer`, every HTTP request it sent counted (the real
    server answers each); the runs read back exactly as planned."""
    specs = _specs(SAMPLE_TREE, rel)
    counted = CountedRequests()
    with counted.counting():
        writer.upsert(RunDir(SAMPLE_TREE / rel, rel).key, specs)
    runs = read_back(writer.tracking_uri, writer.experiment_id)
    assert sorted(runs) == sorted(s.key for s in specs)
    for spec in specs:
        assert runs[spec.key]["params"] == spec.params
        assert runs[spec.key]["artifacts"] == sorted(spec.artifacts)
        assert runs[spec.key]["status"] == "FINISHED"
    return specs, counted


@pytest.mark.slow  # a real mlflow server
def test_a_partition_through_a_server_takes_three_requests_a_run_and_one_per_file(
        mlflow_server):
    """Create, log_batch and end per run, one PUT per artifact file (the server's proxy takes
    a file a request), two searches for the partition (before, and the check after); no
    `runs/get` per run."""
    writer = MlflowWriter(mlflow_server, f"requests-{uuid.uuid4().hex[:8]}")
    specs, counted = _written_counted(writer, RELS[0])
    files = sum(len(s.artifacts) for s in specs)
    assert dict(counted.by_kind) == {
        "POST /api/2.0/mlflow/runs/create": len(specs),
        "POST /api/2.0/mlflow/runs/log-batch": len(specs),
        "POST /api/2.0/mlflow/runs/update": len(specs),
        "PUT /api/2.0/mlflow-artifacts/*": files,
        "POST /api/2.0/mlflow/runs/search": 2}


@pytest.mark.slow  # a real mlflow server
def test_on_an_unverified_mlflow_artifacts_go_through_the_client(mlflow_server, monkeypatch):
    """With the gate closed, MLflow's artifact repositories are not touched: MlflowClient
    uploads each file (looking the run's location up each time), and the runs read back
    the same."""
    from align_track_pipeline.core import verified

    monkeypatch.setenv(verified.PUBLIC_ENV, "1")
    try:
        writer = MlflowWriter(mlflow_server, f"public-{uuid.uuid4().hex[:8]}")
        specs, counted = _written_counted(writer, RELS[0])
    finally:
        verified._warn_once.cache_clear()
    files = sum(len(s.artifacts) for s in specs)
    assert counted.by_kind["PUT /api/2.0/mlflow-artifacts/*"] == files
    assert counted.by_kind["GET /api/2.0/mlflow/runs/get"] >= len(
        [s for s in specs if s.artifacts])  # the client looks the runs up


@pytest.mark.slow  # a real mlflow server
def test_a_partition_through_a_server_with_shared_artifacts_takes_at_most_3_5_requests_a_run(
        mlflow_server, tmp_path):
    """Artifacts in a folder the writer shares (ALIGN_TRACK_MLFLOW_ARTIFACTS) are written
    in place, not through the server."""
    writer = MlflowWriter(mlflow_server, f"shared-{uuid.uuid4().hex[:8]}",
                          str(tmp_path / "artifacts"), shared_artifacts=True)
    specs, counted = _written_counted(writer, RELS[0])
    assert counted.total / len(specs) <= 3.5
    assert not [kind for kind in counted.by_kind if "runs/get" in kind or "artifacts" in kind]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("server", marks=pytest.mark.slow)])
def test_upsert_converges(request, mlflow_db, backend, sample_tree):
    writer = (_sqlite(mlflow_db) if backend == "sqlite"
              else MlflowWriter(request.getfixturevalue("mlflow_server"),
                                f"conv-{uuid.uuid4().hex[:8]}"))
    keys = {rel: RunDir(sample_tree / rel, rel).key for rel in RELS[:2]}
    first = {rel: writer.upsert(keys[rel], _specs(sample_tree, rel)) for rel in keys}
    assert all(r.written for r in first.values())

    again = {rel: writer.upsert(keys[rel], _specs(sample_tree, rel)) for rel in keys}
    assert not any(r.written for r in again.values())
    assert {k: r.run_ids for k, r in again.items()} == {k: r.run_ids for k, r in first.items()}

    changed = _change_first_scene(sample_tree, RELS[1])
    after = {rel: writer.upsert(keys[rel], _specs(sample_tree, rel)) for rel in keys}
    assert not after[RELS[0]].written and after[RELS[0]].run_ids == first[RELS[0]].run_ids
    old, new = first[RELS[1]].run_ids, after[RELS[1]].run_ids
    if backend == "sqlite":  # only the changed runs: the parent and the first scene's
        assert after[RELS[1]].written == after[RELS[1]].deleted == len(changed) == 2
        assert {k for k in new if new[k] != old[k]} == changed
    else:  # the partition's runs, one batch
        assert after[RELS[1]].written == after[RELS[1]].deleted == len(old)
        assert set(new.values()).isdisjoint(old.values())
    runs = read_back(writer.tracking_uri, writer.experiment_id)
    assert len(runs) == sum(len(_specs(sample_tree, rel)) for rel in keys)


def _change_first_scene(tree: Path, rel: str) -> set[str]:
    """Change the first scene's justification; the keys of the runs whose content changed."""
    before = {s.key: s.content_hash for s in _specs(tree, rel)}
    path = tree / rel / "input_output.json"
    items = json.loads(path.read_text())
    items[0]["output"]["action"]["justification"] = "Changed by the test"
    path.write_text(json.dumps(items, indent=2))
    return {s.key for s in _specs(tree, rel) if s.content_hash != before[s.key]}


@pytest.mark.parametrize("rel", [RELS[0], RELS[1]], ids=["start-in-dir-name", "no-start"])
def test_a_changed_scene_replaces_its_run_and_its_parent_and_keeps_the_others(
        mlflow_db, tmp_path, sample_tree, empty_mlflow_db, rel):
    """On a SQL store the runs of unchanged scenes keep their ids (links to them hold), are
    nested under the new parent and carry the folder's new version: the store reads back
    exactly as the new version written into an empty one, and so do its traces. Where the
    data has no start time, the kept runs are dated from the new write like the new ones, so
    the scenes stay in order inside their parent's span."""
    def planned(tree: Path, rel: str):
        parsed = parse_run_dir(RunDir(tree / rel, rel), tree)
        experiments, scenes = parsed.experiments.to_pylist(), parsed.scenes.to_pylist()
        return (plan_runs(experiments, scenes, tree / rel),
                plan_traces(experiments, scenes, HIERARCHICAL))

    key = RunDir(sample_tree / rel, rel).key
    writer = _sqlite(mlflow_db)
    first = writer.upsert(key, *planned(sample_tree, rel))
    changed = _change_first_scene(sample_tree, rel)
    time.sleep(0.05)  # a later write time: what the runs without a start count back from
    after = writer.upsert(key, *planned(sample_tree, rel))
    parents = {s.key for s in _specs(sample_tree, rel) if s.parent_key is None}
    assert changed == parents | {f"{key}::0"}  # the parents hash the folder's version
    assert {k for k in after.run_ids if after.run_ids[k] != first.run_ids[k]} == changed
    # a trace links to its experiment's run, replaced: every trace is written again
    assert after.traces_written == after.traces == len(first.run_ids) - len(parents)
    runs = MlflowClient(writer.tracking_uri).search_runs([writer.experiment_id])
    for parent in (r.info for r in runs if r.data.tags["run_type"] == "parent"):
        scenes = sorted((r.info.start_time, int(r.data.params["scene_index"]), r.info.end_time)
                        for r in runs if r.data.tags.get(PARENT_TAG) == parent.run_id)
        assert [index for _, index, _ in scenes] == sorted(index for _, index, _ in scenes)
        assert parent.start_time <= scenes[0][0] and scenes[-1][2] <= parent.end_time

    fresh_db = tmp_path / "fresh" / "mlflow.db"
    fresh_db.parent.mkdir()
    shutil.copyfile(empty_mlflow_db, fresh_db)
    fresh = _sqlite(fresh_db)
    fresh.upsert(key, *planned(sample_tree, rel))
    kept = read_back(writer.tracking_uri, writer.experiment_id)
    assert kept == read_back(fresh.tracking_uri, fresh.experiment_id)
    assert {r["tags"]["source_version"] for r in kept.values()} == {
        content_hash(sample_tree / rel)}
    assert _traces_read_back(writer) == _traces_read_back(fresh)


def test_kept_runs_of_two_versions_are_nested_under_the_parent_kept(mlflow_db, sample_tree):
    """Archived runs restored by hand beside the runs written since: each key keeps one run,
    which may come from either set, and every kept scene run is nested under the parent
    kept, never under one just retired."""
    from align_track_pipeline.core.trackers.mlflow.plan import TAG_HASH, TAG_PARTITION

    writer, client = _sqlite(mlflow_db), MlflowClient(f"sqlite:///{mlflow_db}")
    rel = RELS[1]
    key, specs = RunDir(sample_tree / rel, rel).key, _specs(sample_tree, rel)
    archived = writer.upsert(key, specs).run_ids
    writer.archive_partition(key)
    writer.upsert(key, specs)
    for run_id in archived.values():
        client.restore_run(run_id)
    parent_key = next(s.key for s in specs if s.parent_key is None)
    client.set_tag(archived[parent_key], TAG_HASH, "stale")  # that parent is replaced

    kept = writer.upsert(key, specs).run_ids

    active = client.search_runs([writer.experiment_id], f"tags.`{TAG_PARTITION}` = '{key}'")
    assert sorted(r.data.tags[TAG_KEY] for r in active) == sorted(s.key for s in specs)
    assert {r.data.tags[PARENT_TAG] for r in active if r.data.tags[TAG_KEY] != parent_key} == {
        kept[parent_key]}


def _traces_read_back(writer: MlflowWriter) -> list[tuple]:
    """Each trace's run (by its key), tags and scores, sorted (not where its store is)."""
    client = MlflowClient(writer.tracking_uri)
    key_of = {r.info.run_id: r.data.tags[TAG_KEY]
              for r in client.search_runs([writer.experiment_id], max_results=1000)}
    traces = client.search_traces(locations=[writer.experiment_id], max_results=1000)
    return sorted((key_of[t.info.request_metadata["mlflow.sourceRun"]],
                   sorted((k, v) for k, v in t.info.tags.items()
                          if k != "mlflow.artifactLocation"),
                   sorted((a.name, a.value) for a in t.info.assessments)) for t in traces)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("server", marks=pytest.mark.slow)])
def test_replaced_and_removed_runs_are_soft_deleted_and_a_restored_one_is_no_duplicate(
        request, mlflow_db, backend, sample_tree):
    """Every backend deletes as `MlflowClient.delete_run` does: replaced and removed runs go to
    the `deleted` stage, restorable. A replaced run restored is an old version, not the key's
    run: its partition and key tags say `replaced:`, and the partition stays converged with
    exactly one active run per key."""
    from mlflow.entities import ViewType

    from align_track_pipeline.core.trackers.mlflow.plan import TAG_PARTITION

    writer = (_sqlite(mlflow_db) if backend == "sqlite"
              else MlflowWriter(request.getfixturevalue("mlflow_server"),
                                f"soft-{uuid.uuid4().hex[:8]}"))
    client = MlflowClient(writer.tracking_uri)
    rel = RELS[1]
    key = RunDir(sample_tree / rel, rel).key
    first = writer.upsert(key, _specs(sample_tree, rel))
    changed = _change_first_scene(sample_tree, rel)
    second = writer.upsert(key, _specs(sample_tree, rel))
    replaced = {k: run_id for k, run_id in first.run_ids.items()
                if backend != "sqlite" or k in changed}  # a SQL store keeps the others
    assert second.written and second.deleted == len(replaced)
    for run_key, run_id in replaced.items():
        old = client.get_run(run_id)
        assert old.info.lifecycle_stage == "deleted"
        assert (old.data.tags[TAG_PARTITION], old.data.tags[TAG_KEY]) == (
            REPLACED + key, REPLACED + run_key)
    restored = next(iter(replaced.values()))
    client.restore_run(restored)
    again = writer.upsert(key, _specs(sample_tree, rel))
    assert not again.written and again.run_ids == second.run_ids  # no duplicate to repair
    active = client.search_runs([writer.experiment_id], f"tags.`{TAG_PARTITION}` = '{key}'")
    assert sorted(r.data.tags[TAG_KEY] for r in active) == sorted(second.run_ids)

    assert writer.delete_partition(key) == len(second.run_ids)
    every = client.search_runs([writer.experiment_id], run_view_type=ViewType.ALL,
                               max_results=1000)
    assert {r.info.run_id: r.info.lifecycle_stage for r in every} == (
        {run_id: "deleted" for run_id in [*replaced.values(), *second.run_ids.values()]}
        | {restored: "active"})


@pytest.mark.slow
def test_half_written_partition_is_repaired(mlflow_server):
    writer = MlflowWriter(mlflow_server, f"crash-{uuid.uuid4().hex[:8]}")
    rel = RELS[0]
    key, specs = RunDir(SAMPLE_TREE / rel, rel).key, _specs(SAMPLE_TREE, rel)
    writer._backend._create(specs[:5], "partial")  # as if killed after five runs
    client = MlflowClient(mlflow_server)
    stray = client.create_run(writer.experiment_id, tags={"align_track.partition": key})
    result = writer.upsert(key, specs)  # the stray RUNNING run and the partial set are replaced
    assert result.written and result.deleted == 6
    runs = read_back(mlflow_server, writer.experiment_id)
    assert sorted(runs) == sorted(s.key for s in specs)
    assert {r["status"] for r in runs.values()} == {"FINISHED"}
    assert client.get_run(stray.info.run_id).info.lifecycle_stage == "deleted"


@pytest.mark.slow
def test_two_complete_batches_settle_on_the_same_one(mlflow_server):
    """Two writers that raced both wrote the partition: whichever looks keeps the same batch
    (the smallest id) and deletes the other, parents and children together."""
    writer = MlflowWriter(mlflow_server, f"race-{uuid.uuid4().hex[:8]}")
    rel = RELS[0]
    key, specs = RunDir(SAMPLE_TREE / rel, rel).key, _specs(SAMPLE_TREE, rel)
    writer._backend._create(specs, "bbbb")
    first = writer._backend._create(specs, "aaaa")
    result = writer.upsert(key, specs)
    assert not result.written and result.deleted == len(specs)
    assert result.run_ids == first
    runs = read_back(mlflow_server, writer.experiment_id)
    assert sorted(runs) == sorted(s.key for s in specs)  # one run per key
    assert all(r["parent"] in (None, *runs) for r in runs.values())
    assert writer.upsert(key, specs).run_ids == first  # converged: nothing written


@pytest.mark.slow
def test_a_batch_deleted_by_another_writer_is_written_again(mlflow_server):
    """The race that loses runs without a check after deleting: each writer deleted the
    other's batch. The next look finds nothing complete and writes the partition again."""
    writer = MlflowWriter(mlflow_server, f"lost-{uuid.uuid4().hex[:8]}")
    rel = RELS[1]
    key, specs = RunDir(SAMPLE_TREE / rel, rel).key, _specs(SAMPLE_TREE, rel)
    partial = writer._backend._create(specs[:2], "aaaa")  # what the other writer left
    result = writer.upsert(key, specs)
    assert result.written and result.deleted == 2
    runs = read_back(mlflow_server, writer.experiment_id)
    assert sorted(runs) == sorted(s.key for s in specs)
    assert not set(partial.values()) & set(result.run_ids.values())


@pytest.mark.slow
def test_a_writer_waits_for_a_batch_another_writer_is_writing(mlflow_server):
    """A partial batch begun first by a live writer is kept while it is written; once its
    writer is gone it is replaced."""
    writer = MlflowWriter(mlflow_server, f"wait-{uuid.uuid4().hex[:8]}")
    rel = RELS[1]
    key, specs = RunDir(SAMPLE_TREE / rel, rel).key, _specs(SAMPLE_TREE, rel)
    other = subprocess.Popen(["sleep", "60"])
    partial = writer._backend._create(specs[:2], f"{1:012x}.0123abcd.{other.pid}@"
                                      f"{socket.gethostname()}")
    with ThreadPoolExecutor(1) as pool:
        upsert = pool.submit(writer.upsert, key, specs)
        time.sleep(3)
        try:
            assert not upsert.done()
            assert set(read_back(mlflow_server, writer.experiment_id)) == set(partial)
        finally:
            other.kill()
            other.wait()
        result = upsert.result(timeout=60)
    assert result.written and result.deleted == 2
    assert sorted(read_back(mlflow_server, writer.experiment_id)) == sorted(s.key for s in specs)


def _upsert_in_a_process(server: str, experiment: str, rels: list[str]) -> None:
    writer = MlflowWriter(server, experiment)
    for rel in rels:
        writer.upsert(RunDir(SAMPLE_TREE / rel, rel).key, _specs(SAMPLE_TREE, rel))


@pytest.mark.slow
def test_six_processes_writing_the_same_partitions_converge(mlflow_server):
    """Six writers, started together, each writing the same partitions (in different
    orders): all return, and each partition holds one finished run per key."""
    experiment = f"race4-{uuid.uuid4().hex[:8]}"
    MlflowWriter(mlflow_server, experiment)
    orders = [RELS, RELS[::-1], RELS[1:] + RELS[:1]] * 2
    with ProcessPoolExecutor(6, mp_context=multiprocessing.get_context("spawn")) as pool:
        for done in [pool.submit(_upsert_in_a_process, mlflow_server, experiment, order)
                     for order in orders]:
            done.result(timeout=600)
    runs = read_back(mlflow_server, experiment_id(mlflow_server, experiment))
    assert sorted(runs) == sorted(s.key for rel in RELS for s in _specs(SAMPLE_TREE, rel))
    assert {r["status"] for r in runs.values()} == {"FINISHED"}
    assert all(r["parent"] in (None, *runs) for r in runs.values())


def test_sqlite_write_is_atomic(mlflow_db, monkeypatch):
    from align_track_pipeline.core.trackers.mlflow import writer as mlflow_writer

    writer = _sqlite(mlflow_db)
    rel = RELS[1]
    key, specs = RunDir(SAMPLE_TREE / rel, rel).key, _specs(SAMPLE_TREE, rel)

    class Killed(Exception):
        pass

    original = mlflow_writer._Rows.add
    calls = {"n": 0}

    def dies_midway(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed
        return original(self, *args)

    monkeypatch.setattr(mlflow_writer._Rows, "add", dies_midway)
    with pytest.raises(Exception) as killed:  # MLflow's session wraps what it rolls back
        writer.upsert(key, specs)
    assert isinstance(killed.value, Killed) or isinstance(killed.value.__cause__, Killed)
    monkeypatch.setattr(mlflow_writer._Rows, "add", original)
    assert read_back(writer.tracking_uri, writer.experiment_id) == {}
    assert writer.upsert(key, specs).written
    assert len(read_back(writer.tracking_uri, writer.experiment_id)) == len(specs)


def test_delete_partition(mlflow_db):
    writer = _sqlite(mlflow_db)
    for run_dir in find_run_dirs(SAMPLE_TREE)[:2]:
        writer.upsert(run_dir.key, _specs(SAMPLE_TREE, run_dir.rel_path))
    gone = find_run_dirs(SAMPLE_TREE)[0]
    assert writer.delete_partition(gone.key) == len(_specs(SAMPLE_TREE, gone.rel_path))
    left = read_back(writer.tracking_uri, writer.experiment_id)
    assert left and not any(k.startswith(gone.key + "::") for k in left)


def test_the_parents_only_url_filters_to_one_run_per_experiment_row(tmp_path, mlflow_db):
    writer = _sqlite(mlflow_db)
    planned = []
    for rel in RELS:
        planned += _specs(SAMPLE_TREE, rel)
        writer.upsert(RunDir(SAMPLE_TREE / rel, rel).key, _specs(SAMPLE_TREE, rel))
    url = parents_only_url("http://127.0.0.1:5000/", writer.experiment_id)
    route, query = url.split("?", 1)
    assert route == f"http://127.0.0.1:5000/#/experiments/{writer.experiment_id}/runs"
    search_filter = parse_qs(query)["searchFilter"][0]
    runs = MlflowClient(writer.tracking_uri).search_runs([writer.experiment_id], search_filter)
    assert sorted(r.data.tags[TAG_KEY] for r in runs) == sorted(
        s.key for s in planned if s.parent_key is None)
    assert experiment_id(writer.tracking_uri, "align-system") == writer.experiment_id
    assert experiment_id(writer.tracking_uri, "never-written") is None
    assert experiment_id(f"sqlite:///{tmp_path}/absent.db", "align-system") is None
    assert not (tmp_path / "absent.db").exists()


def test_sqlite_finds_a_partitions_runs_through_an_index_on_tag_values(mlflow_db):
    """The embedded store gets an index on tags (key, value), so finding a partition's runs
    does not scan every run's partition tag (MLflow's own index is on key, run_uuid)."""
    import sqlite3

    from sqlalchemy import event

    from align_track_pipeline.core.trackers.mlflow.writer import MlflowWriter

    writer = MlflowWriter(f"sqlite:///{mlflow_db}", "exp")  # the index added to MLflow's schema
    backend = writer._backend
    seen = []
    event.listen(backend._store.engine, "before_cursor_execute",
                 lambda _c, _cur, sql, params, _ctx, _many: seen.append((sql, params)))
    with backend._store.ManagedSessionMaker() as session:
        assert backend._find(session, "a/b") == []
    # the query that finds a partition's runs, as the writer sends it (after the pragmas)
    ((sql, params),) = [(q, p) for q, p in seen if q.startswith("SELECT")]
    with sqlite3.connect(mlflow_db) as conn:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    assert "USING INDEX align_track_tags_key_value (key=? AND value=?)" in str(plan)


def test_run_lookup_reads_mlflows_tables_only_on_a_verified_mlflow(mlflow_db, monkeypatch):
    """A page of rows finds its runs with one query over MLflow's tables on the verified
    MLflow; with the gate closed, through MLflow's client instead: the same runs either way."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from align_track_pipeline.core import verified

    writer = _sqlite(mlflow_db)
    keys = {}
    for rel in RELS[1:]:
        partition = RunDir(SAMPLE_TREE / rel, rel).key
        specs = _specs(SAMPLE_TREE, rel)
        writer.upsert(partition, specs)
        keys |= {s.key: partition for s in specs}
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        fast = find_runs(writer.tracking_uri, "align-system", keys)
        assert any("t.value IN" in s for s in statements)  # our one query
        statements.clear()
        monkeypatch.setenv(verified.PUBLIC_ENV, "1")
        public = find_runs(writer.tracking_uri, "align-system", keys)
        assert experiment_id(writer.tracking_uri, "align-system") == writer.experiment_id
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
        verified._warn_once.cache_clear()
    assert not any("t.value IN" in s or s.startswith("SELECT experiment_id FROM experiments")
                   for s in statements)
    assert statements  # MLflow's own store answered
    assert public == fast and len(fast) == len(keys)


@pytest.mark.slow  # a real mlflow server
def test_runs_outside_the_experiments_artifact_location_keep_their_artifact_folders(
        mlflow_server):
    """A run whose artifact URI is not `<experiment location>/<run id>/artifacts` gets a
    repository of its own: its files land in the same subfolders (`config/`, `scene_0/`) as
    under the shared one, not at an absolute path."""
    writer = MlflowWriter(mlflow_server, f"own-root-{uuid.uuid4().hex[:8]}")
    writer._backend._artifact_location = "mlflow-artifacts:/not-the-experiments"  # noqa: SLF001
    rel = RELS[0]
    specs = _specs(SAMPLE_TREE, rel)
    assert any("/" in path for s in specs for path in s.artifacts)
    writer.upsert(RunDir(SAMPLE_TREE / rel, rel).key, specs)
    runs = read_back(writer.tracking_uri, writer.experiment_id)
    assert {key: run["artifacts"] for key, run in runs.items()} == {
        s.key: sorted(s.artifacts) for s in specs}


@pytest.mark.slow  # a real mlflow server
def test_a_run_the_server_refuses_fails_the_partition_naming_the_servers_reason(mlflow_server):
    """A write the server refuses every time (here a param name MLflow rejects) is not taken
    for other writers' changes: the error says what the server said."""
    from dataclasses import replace

    writer = MlflowWriter(mlflow_server, f"refused-{uuid.uuid4().hex[:8]}")
    rel = RELS[1]
    specs = _specs(SAMPLE_TREE, rel)
    specs[0] = replace(specs[0], params={**specs[0].params, "../escape": "1"})
    with pytest.raises(RuntimeError, match=r"\.\./escape") as raised:
        writer.upsert(RunDir(SAMPLE_TREE / rel, rel).key, specs)
    assert "other writers" not in str(raised.value)


def _waits_for_the_creation_lock(db: Path, make) -> None:
    """`make()` (which opens the SQLite store at `db`) waits while another process holds the
    writers' creation lock, then leaves the store with its schema."""
    import threading

    from align_track_pipeline.core.locking import file_lock

    done = threading.Event()
    with file_lock(db.with_suffix(".lock")):
        thread = threading.Thread(target=lambda: (make(), done.set()), daemon=True)
        thread.start()
        assert not done.wait(2)  # not while the lock is held (it opens a store in well under 2 s)
        assert not db.exists()
    assert done.wait(60)
    assert MlflowClient(f"sqlite:///{db}").get_experiment("0") is not None


@pytest.mark.parametrize("public", [False, True])
def test_a_store_is_made_only_under_the_creation_lock(tmp_path, monkeypatch, public):
    """What `align-track mlflow-ui` does before its server opens the store (the server migrates
    what it opens, without the lock), and the public path's writer (MLflow's client migrates
    too): a store made meanwhile by an ingest is never migrated twice at once."""
    from align_track_pipeline.core import verified
    from align_track_pipeline.core.trackers.mlflow.writer import prepare_store

    if public:
        monkeypatch.setenv(verified.PUBLIC_ENV, "1")
    db = tmp_path / "data" / "mlflow.db"
    _waits_for_the_creation_lock(db, lambda: prepare_store(f"sqlite:///{db}",
                                                           str(tmp_path / "artifacts")))
    expected = f"{tmp_path}/artifacts/0" if not public else None
    location = MlflowClient(f"sqlite:///{db}").get_experiment("0").artifact_location
    assert expected is None or location == expected  # as the writer makes it
    other = tmp_path / "other" / "mlflow.db"
    _waits_for_the_creation_lock(other, lambda: MlflowWriter(
        f"sqlite:///{other}", "align-system", str(tmp_path / "artifacts")).close())
