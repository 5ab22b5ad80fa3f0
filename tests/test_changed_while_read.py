"""A run dir written while `ingest` reads it is not a failure: it is named, skipped by the
trackers this pass, and brought up to date in every store by the next pass."""

import json

import pytest
from mlflow import MlflowClient

from align_track_pipeline.cli.ingest import ingest
from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.trackers.registry import Settings, create_all
from align_track_pipeline.definitions import build_defs
from tests.conftest import aim_runs_seen_by_a_fresh_process, item_count


@pytest.mark.slow
def test_a_folder_written_during_ingest_is_retried_on_the_next_pass(capsys, small_tree,
                                                                   data_dir):
    victim = find_run_dirs(small_tree)[0]

    def write_after_the_observation(message: str) -> None:
        if message.startswith("observe:"):  # the versions are recorded, the tables not read
            with open(victim.path / "input_output.json", "a") as f:
                f.write("\n")  # same JSON, new bytes: a new source version

    defs = build_defs(str(small_tree), str(data_dir))
    trackers = create_all(Settings(data_dir, {}))
    with open_instance(data_dir) as instance:
        report = ingest(defs, instance, small_tree, trackers,
                        progress=write_after_the_observation)
    assert report.failed == [] and report.changed == [victim.key]
    assert sorted(report.materialized) == sorted(r.key for r in find_run_dirs(small_tree)[1:])

    assert main(["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
                 "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["materialized"] == [victim.key] and second["changed"] == []
    scenes = sum(item_count(r.path) for r in find_run_dirs(small_tree))
    client = MlflowClient(f"sqlite:///{data_dir}/mlflow.db")
    experiment = client.get_experiment_by_name("align-system")
    scene_runs = client.search_runs([experiment.experiment_id], "tags.run_type = 'scene'",
                                    max_results=1000)
    assert len(scene_runs) == scenes
    assert len(aim_runs_seen_by_a_fresh_process(data_dir / "aim")) == scenes


@pytest.mark.slow
def test_a_stale_partition_that_failed_without_writing_stays_a_failure(small_tree, data_dir):
    """E.g. a worker process that died before its partitions: their tables hold an older
    version (stale), but this pass wrote nothing for them, so they are failures."""
    from align_track_pipeline.cli.analysis_refresh import tables_written
    from align_track_pipeline.cli.batches import InProcess
    from align_track_pipeline.cli.ingest import _changed_while_read, observe

    victim = find_run_dirs(small_tree)[0]
    defs = build_defs(str(small_tree), str(data_dir))
    trackers = create_all(Settings(data_dir, {}))
    with open_instance(data_dir) as instance:
        ingest(defs, instance, small_tree, trackers)
        with open(victim.path / "input_output.json", "a") as f:
            f.write("\n")
        versions = observe(InProcess(defs, instance, {}), find_run_dirs(small_tree))
        before = tables_written(instance)
        errors = {victim.key: "tables: the worker process died"}
        assert _changed_while_read(instance, versions, errors, before, print) == []
    assert errors == {victim.key: "tables: the worker process died"}
