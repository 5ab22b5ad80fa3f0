"""Discovery sensor, nightly schedule and the cleanup of removed folders, on a real instance and
real stores."""

import json
import os
import shutil

import dagster as dg
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.tables.store import ParquetStore
from align_track_pipeline.definitions import build_defs
from align_track_pipeline.defs.cleanup import REMOVED, cleanup_config
from align_track_pipeline.defs.dagster_compat import last_event_id
from align_track_pipeline.defs.freshness import latest_data_versions, observed_versions
from align_track_pipeline.defs.schedules import nightly_observation
from align_track_pipeline.defs.sensors import RANGE_END, RANGE_START
from tests.conftest import (
    SAMPLE_TREE,
    aim_runs_seen_by_a_fresh_process,
    apply_partition_requests,
    item_count,
    make_run_dir,
    sensor_tick,
)


def _jobs(result) -> list[str]:
    return [r.job_name for r in getattr(result, "run_requests", None) or []]


def _observe(defs, instance) -> None:
    assert defs.resolve_job_def("observe_experiment_folders").execute_in_process(
        instance=instance).success


def _observations(instance) -> int:
    return len(instance.fetch_observations(dg.AssetKey("experiment_folders"), limit=10_000).records)


def test_sensor_adds_new_folders_and_deletes_gone_ones(tmp_path, sample_tree, data_dir,
                                                       dagster_storage):
    defs = build_defs(str(sample_tree), str(data_dir))
    keys = sorted(r.key for r in find_run_dirs(sample_tree))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        first = sensor_tick(defs, instance)
        assert first.dynamic_partitions_requests[0].partition_keys == keys
        (ingest,) = first.run_requests  # one run ingests the new folders, added as one range
        assert ingest.job_name == "ingest_folders"
        assert (ingest.tags[RANGE_START], ingest.tags[RANGE_END]) == (keys[0], keys[-1])
        assert ingest.tags["dagster/priority"] == "10"  # ahead of upkeep and batched runs
        apply_partition_requests(instance, first)
        _observe(defs, instance)
        assert set(observed_versions(instance)) == set(keys)
        assert isinstance(sensor_tick(defs, instance), dg.SkipReason)  # nothing changed

        gone = find_run_dirs(sample_tree)[0]
        shutil.rmtree(gone.path)
        result = sensor_tick(defs, instance)
        (delete,) = result.dynamic_partitions_requests
        assert isinstance(delete, dg.DeleteDynamicPartitionsRequest)
        assert delete.partition_keys == [gone.key]
        (request,) = result.run_requests
        assert request.job_name == "cleanup_removed"
        config = request.run_config["ops"]["remove_partition_data"]["config"]
        assert config == {"partitions": [gone.key]}


def _ingest(defs, instance, request: dg.RunRequest, raise_on_error: bool = True):
    """What the daemon does with the sensor's `ingest_folders` request."""
    job = defs.resolve_job_def(request.job_name)
    return job.execute_in_process(instance=instance, tags=request.tags,
                                  partition_key=request.partition_key,
                                  raise_on_error=raise_on_error)


def _writers(instance, key: str) -> dict[str, set[str]]:
    """Asset -> the runs that materialized (or observed) this partition."""
    seen = {a: instance.fetch_materializations(dg.AssetKey(a), limit=1000).records
            for a in ("experiments", "scenes", "mlflow_runs", "aim_runs")}
    seen["experiment_folders"] = instance.fetch_observations(
        dg.AssetKey("experiment_folders"), limit=1000).records
    return {a: {r.run_id for r in records if r.partition_key == key}
            for a, records in seen.items()}


def _late_folder_sensed(defs, instance, tree):
    """The instance knows every folder of `tree` but `late/run`, the automation has ticked
    once; then a sensor tick, its partition applied. Returns the automation, the tick's
    result and its request for `late/run`."""
    from tests.defs.test_automation import Automation

    instance.add_dynamic_partitions("experiments", [
        r.key for r in find_run_dirs(tree) if r.key != "late/run"])
    automation = Automation(defs, instance)
    automation.tick()
    result = sensor_tick(defs, instance)
    request = next(r for r in result.run_requests if r.partition_key == "late/run")
    apply_partition_requests(instance, result)
    return automation, result, request


def _late_only(requested: dict[str, set[str]], key: str) -> dict[str, set[str]]:
    return {asset: {key} for asset, keys in requested.items() if key in keys}


@pytest.mark.slow
def test_a_new_folder_reaches_every_store_in_the_sensors_one_run(tmp_path, small_tree, data_dir,
                                                                 dagster_storage):
    """The fast path: the sensor's run observes, parses and feeds both trackers, in one
    process; the automation then requests nothing for it (no second ingest), and the next
    tick nothing either."""

    defs = build_defs(str(small_tree), str(data_dir))
    late = make_run_dir(small_tree, "late/run")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        automation, result, request = _late_folder_sensed(defs, instance, small_tree)
        assert result.dynamic_partitions_requests[0].partition_keys == ["late/run"]
        assert request.job_name == "ingest_folders"
        run = _ingest(defs, instance, request)
        assert run.success
        assert run.dagster_run.job_name == "ingest_folders"
        assert _writers(instance, "late/run") == dict.fromkeys(
            ("experiments", "scenes", "mlflow_runs", "aim_runs", "experiment_folders"),
            {run.run_id})
        assert _late_only(automation.tick(), "late/run") == {}
    scenes = item_count(late)
    assert pq.read_metadata(ParquetStore(data_dir).path("scenes", "late/run")).num_rows == scenes
    client = MlflowClient(f"sqlite:///{data_dir}/mlflow.db")
    exp = client.get_experiment_by_name("align-system")
    runs = client.search_runs([exp.experiment_id],
                              "tags.partition_key = 'late/run' and tags.run_type = 'scene'")
    assert len(runs) == scenes
    aim = aim_runs_seen_by_a_fresh_process(data_dir / "aim", 'run.partition_key == "late/run"')
    assert len(aim) == scenes




@pytest.mark.slow
def test_a_tracker_failing_in_the_sensors_run_is_retried_once(tmp_path, small_tree, data_dir,
                                                              dagster_storage):
    """The sensor's run wrote the tables and MLflow, and Aim failed (its store cannot be
    opened): the automation asks for Aim once for that folder, nothing else; failing again,
    it is not asked for again (no retry loop)."""

    defs = build_defs(str(small_tree), str(data_dir))
    make_run_dir(small_tree, "late/run")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        automation, _, request = _late_folder_sensed(defs, instance, small_tree)
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "aim").write_text("a file where the Aim repo should be")
        run = _ingest(defs, instance, request, raise_on_error=False)
        assert not run.success
        assert _writers(instance, "late/run")["mlflow_runs"] == {run.run_id}
        assert _writers(instance, "late/run")["aim_runs"] == set()
        assert _late_only(automation.tick(), "late/run") == {"aim_runs": {"late/run"}}
        retry = defs.resolve_job_def("aim").execute_in_process(
            instance=instance, partition_key="late/run", raise_on_error=False)
        assert not retry.success
        for _ in range(2):
            assert _late_only(automation.tick(), "late/run") == {}


@pytest.mark.slow
def test_tables_failing_in_the_sensors_range_run_leave_the_others_to_the_automation(
        tmp_path, small_tree, data_dir, dagster_storage):
    """New folders come in one run; one of them is broken: its tables fail, which skips the
    run's tracker steps. The automation asks for the trackers of the others, not for the
    broken one (nothing to log), and nothing once they are written."""
    from tests.defs.test_automation import TABLES, TRACKERS, Automation

    defs = build_defs(str(small_tree), str(data_dir))
    bad, *good = find_run_dirs(small_tree)
    (bad.path / "input_output.json").write_text('[{"input": ')  # truncated
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        automation = Automation(defs, instance)
        automation.tick()
        result = sensor_tick(defs, instance)
        (request,) = result.run_requests
        assert request.tags[RANGE_START] != request.tags[RANGE_END]
        apply_partition_requests(instance, result)
        run = _ingest(defs, instance, request, raise_on_error=False)
        assert not run.success
        wanted = {r.key for r in good}
        for key in wanted:
            writers = _writers(instance, key)
            assert writers["scenes"] == {run.run_id}
            assert writers["mlflow_runs"] == writers["aim_runs"] == set()
        # The broken folder's tables are asked for once more (its observation in the run
        # counts as new input), the trackers of the others once.
        assert {a: k for a, k in automation.tick().items() if k} == dict.fromkeys(
            TABLES, {bad.key}) | dict.fromkeys(TRACKERS, wanted)
        assert not defs.resolve_job_def("tables").execute_in_process(
            instance=instance, partition_key=bad.key, raise_on_error=False).success
        for job in ("mlflow", "aim"):
            for key in wanted:
                assert defs.resolve_job_def(job).execute_in_process(
                    instance=instance, partition_key=key).success
        assert {a: k for a, k in automation.tick().items() if k} == {}


def test_a_folder_being_ingested_gets_no_second_run(tmp_path, small_tree, data_dir,
                                                    dagster_storage):
    """While the sensor's run has not finished, the next tick requests nothing for its
    folders (they are not hashed yet: without the check, each would get a run of its own)."""
    defs = build_defs(str(small_tree), str(data_dir))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        first = sensor_tick(defs, instance)
        apply_partition_requests(instance, first)
        (request,) = first.run_requests
        job = defs.resolve_job_def("ingest_folders")
        instance.create_run_for_job(job, tags=request.tags,
                                     status=dg.DagsterRunStatus.NOT_STARTED)
        assert isinstance(sensor_tick(defs, instance), dg.SkipReason)


def test_a_touched_folder_gets_one_ingest_run_that_writes_nothing(tmp_path, small_tree, data_dir,
                                                                  dagster_storage):
    defs = build_defs(str(small_tree), str(data_dir))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        apply_partition_requests(instance, sensor_tick(defs, instance))
        for run in find_run_dirs(small_tree):
            assert defs.resolve_job_def("tables").execute_in_process(
                instance=instance, partition_key=run.key).success
        _observe(defs, instance)
        run = find_run_dirs(small_tree)[0]
        os.utime(run.path / "input_output.json")  # touched: stat changed, content did not
        touched = sensor_tick(defs, instance)
        (request,) = touched.run_requests
        assert (request.job_name, request.partition_key) == ("ingest_folders", run.key)
        assert sensor_tick(defs, instance).run_requests[0].run_key == request.run_key  # once
        result = _ingest(defs, instance, request)
        assert result.success
        # same bytes: no new version, no table written, the trackers' steps skipped
        assert not any(result.run_id in runs for runs in _writers(instance, run.key).values())
        skipped = {e.step_key for e in result.all_events if e.is_step_skipped}
        assert skipped == {"log_mlflow_runs", "log_aim_runs"}
        assert isinstance(sensor_tick(defs, instance), dg.SkipReason)


def test_many_new_or_changed_folders_go_the_batched_way(monkeypatch, tmp_path, sample_tree,
                                                        data_dir, dagster_storage):
    """Beyond one run's worth of new folders, or a few changed ones, the sensor requests an
    observation and leaves the batches to the automation (parallel runs of up to
    ALIGN_TRACK_PARTITIONS_PER_RUN partitions)."""
    from align_track_pipeline.core.source.discovery import CHANGED_RUNS_MAX

    keys = [r.key for r in find_run_dirs(sample_tree)]
    assert len(keys) > CHANGED_RUNS_MAX + 1
    monkeypatch.setenv("ALIGN_TRACK_PARTITIONS_PER_RUN", str(len(keys) - 1))
    defs = build_defs(str(sample_tree), str(data_dir))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = sensor_tick(defs, instance)
        assert _jobs(result) == ["observe_experiment_folders"]
        apply_partition_requests(instance, result)
        _observe(defs, instance)
        assert isinstance(sensor_tick(defs, instance), dg.SkipReason)
        for run in find_run_dirs(sample_tree)[:CHANGED_RUNS_MAX]:
            os.utime(run.path / "input_output.json")
        assert _jobs(sensor_tick(defs, instance)) == ["ingest_folders"] * CHANGED_RUNS_MAX
        os.utime(find_run_dirs(sample_tree)[-1].path / "input_output.json")
        assert _jobs(sensor_tick(defs, instance)) == ["observe_experiment_folders"]


def test_nightly_schedule_observes_only_when_something_changed(tmp_path, small_tree, data_dir,
                                                               dagster_storage):
    defs = build_defs(str(small_tree), str(data_dir))
    schedule = defs.resolve_schedule_def("nightly_observation")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:

        def tick():
            context = dg.build_schedule_context(instance=instance)
            return nightly_observation(context, tree=defs.resources["tree"],
                                     store=defs.resources["store"])

        first = tick()  # sensor off: the schedule finds the new folders itself
        assert isinstance(first, dg.RunRequest)
        _observe(defs, instance)  # what the requested run does: registers and observes
        assert sorted(instance.get_dynamic_partitions("experiments")) == sorted(
            r.key for r in find_run_dirs(small_tree))
        events = last_event_id(instance)
        assert isinstance(tick(), dg.SkipReason)  # nothing changed: nothing launched
        assert last_event_id(instance) == events  # no event written
        io = small_tree / "random" / "unaligned" / "input_output.json"
        io.write_text(io.read_text().replace("Random choice", "Other choice", 1))
        assert isinstance(tick(), dg.RunRequest)


def test_schedule_timezone_is_configurable(monkeypatch):
    import importlib

    from align_track_pipeline.defs import schedules

    monkeypatch.setenv("ALIGN_TRACK_TIMEZONE", "Europe/Berlin")
    assert importlib.reload(schedules).nightly_observation.execution_timezone == "Europe/Berlin"
    monkeypatch.delenv("ALIGN_TRACK_TIMEZONE")
    assert importlib.reload(schedules).nightly_observation.execution_timezone == "UTC"


def test_the_cleanup_job_deletes_a_partitions_tables_and_marks_it_removed(
        tmp_path, small_tree, data_dir, dagster_storage, empty_stores):
    """`cleanup_removed` as the sensor requests it, on the tables alone: the partition's
    Parquet files go, the others stay, and its versions read `removed` (so a folder put back
    is ingested again). The test below does it with every store filled."""
    defs = build_defs(str(small_tree), str(data_dir))
    keys = [r.key for r in find_run_dirs(small_tree)]
    gone, kept = keys[0], keys[1:]
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("experiments", keys)
        assert defs.resolve_job_def("tables").execute_in_process(instance=instance, tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1]}).success
        result = defs.resolve_job_def("cleanup_removed").execute_in_process(
            instance=instance, run_config=cleanup_config([gone]))
        assert result.success
        versions = {asset: latest_data_versions(instance, asset)
                    for asset in ("experiments", "scenes", "mlflow_runs", "aim_runs")}
        folders = observed_versions(instance)
    store = ParquetStore(data_dir)
    assert not any(store.path(t, gone).exists() for t in ("experiments", "scenes"))
    assert all(store.path(t, k).exists() for t in ("experiments", "scenes") for k in kept)
    assert {asset: v[gone] for asset, v in versions.items()} == dict.fromkeys(versions, REMOVED)
    assert folders[gone] == REMOVED
    assert versions["scenes"][kept[0]] != REMOVED


@pytest.mark.slow
def test_cleanup_removes_a_folders_data_from_every_store(capsys, sample_tree, data_dir):
    assert main(["ingest", "--experiments-dir", str(sample_tree), "--data-dir", str(data_dir),
                 "--json"]) == 0
    capsys.readouterr()
    gone = next(r for r in find_run_dirs(sample_tree) if r.rel_path == "random/unaligned")
    shutil.rmtree(gone.path)
    defs = build_defs(str(sample_tree), str(data_dir))
    with open_instance(data_dir) as instance:
        result = sensor_tick(defs, instance)
        apply_partition_requests(instance, result)
        (request,) = result.run_requests
        job = defs.resolve_job_def("cleanup_removed")
        assert job.execute_in_process(instance=instance, run_config=request.run_config).success
        assert gone.key not in instance.get_dynamic_partitions("experiments")

    parquet = data_dir / "parquet"
    assert not any(gone.key.replace("/", "%2F") in p.name for p in parquet.rglob("*.parquet"))
    client = MlflowClient(f"sqlite:///{data_dir}/mlflow.db")
    exp = client.get_experiment_by_name("align-system")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    assert runs and not any(r.data.tags["partition_key"] == gone.key for r in runs)
    seen = aim_runs_seen_by_a_fresh_process(data_dir / "aim")
    assert seen and not any(r["params"]["partition_key"] == gone.key for r in seen)

    shutil.copytree(SAMPLE_TREE / gone.rel_path, gone.path)  # the folder comes back
    assert main(["ingest", "--experiments-dir", str(sample_tree), "--data-dir", str(data_dir),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["materialized"] == [gone.key]
    seen = aim_runs_seen_by_a_fresh_process(data_dir / "aim")
    assert sum(r["params"]["partition_key"] == gone.key for r in seen) == item_count(gone.path)


@pytest.mark.slow
def test_ingest_cleans_up_a_removed_folder_itself(capsys, small_tree, data_dir):
    """Without the daemon, `align-track ingest` removes what the sensor would have removed."""
    args = ["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir), "--json"]
    assert main(args) == 0
    capsys.readouterr()
    gone = find_run_dirs(small_tree)[0]
    shutil.rmtree(gone.path)
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["removed"] == [gone.key] and report["materialized"] == []
    store = ParquetStore(data_dir)
    assert not any(store.path(t, gone.key).exists() for t in ("experiments", "scenes"))
    assert store.path("scenes", find_run_dirs(small_tree)[0].key).exists()


@pytest.mark.slow
def test_archive_mode_keeps_a_removed_folders_data_out_of_sight(capsys, monkeypatch, small_tree,
                                                                data_dir):
    import pyarrow.dataset as ds
    from mlflow.entities import ViewType

    monkeypatch.setenv("ALIGN_TRACK_ON_REMOVED", "archive")
    args = ["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir), "--json"]
    assert main(args) == 0
    gone = find_run_dirs(small_tree)[0]
    scenes = item_count(gone.path)
    shutil.rmtree(gone.path)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["removed"] == [gone.key]

    archived = list((data_dir / "archive").rglob("*.parquet"))
    assert len(archived) == 2  # experiments and scenes, kept
    table = ds.dataset(data_dir / "parquet" / "scenes").to_table()
    assert gone.key not in set(table.column("partition_key").to_pylist())
    client = MlflowClient(f"sqlite:///{data_dir}/mlflow.db")
    exp = client.get_experiment_by_name("align-system")
    query = f"tags.partition_key = '{gone.key}'"
    assert client.search_runs([exp.experiment_id], query) == []
    kept = client.search_runs([exp.experiment_id], query, run_view_type=ViewType.DELETED_ONLY)
    assert len(kept) == scenes + 1  # the parent and its scenes, restorable
    aim = data_dir / "aim"
    assert aim_runs_seen_by_a_fresh_process(aim, f'run.partition_key == "{gone.key}"') == []
    hidden = aim_runs_seen_by_a_fresh_process(
        aim, f'run.partition_key == "{gone.key}" and run.archived == True')
    assert len(hidden) == scenes

    shutil.copytree(SAMPLE_TREE / gone.rel_path, gone.path)  # back: ingested anew
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["materialized"] == [gone.key]
    assert len(client.search_runs([exp.experiment_id], query)) == scenes + 1
    assert len(aim_runs_seen_by_a_fresh_process(aim, f'run.partition_key == "{gone.key}"')) == (
        scenes)


def test_an_unknown_removal_mode_is_refused(monkeypatch):
    import pytest

    from align_track_pipeline.defs.cleanup import removal_mode

    assert removal_mode() == "delete" and removal_mode("archive") == "archive"
    monkeypatch.setenv("ALIGN_TRACK_ON_REMOVED", "purge")
    with pytest.raises(ValueError, match="ALIGN_TRACK_ON_REMOVED"):
        removal_mode()


def test_a_missing_tree_root_removes_nothing(tmp_path, small_tree, data_dir, dagster_storage):
    """An unmounted share must not read as an empty tree whose partitions all went away."""
    defs = build_defs(str(small_tree), str(data_dir))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        apply_partition_requests(instance, sensor_tick(defs, instance))
        keys = set(instance.get_dynamic_partitions("experiments"))
        small_tree.rename(small_tree.with_name("unmounted"))
        result = sensor_tick(defs, instance)
        assert isinstance(result, dg.SkipReason) and "not found" in result.skip_message
        assert set(instance.get_dynamic_partitions("experiments")) == keys
        context = dg.build_schedule_context(instance=instance)
        skipped = nightly_observation(context, tree=defs.resources["tree"],
                                    store=defs.resources["store"])
        assert isinstance(skipped, dg.SkipReason)
        observe = defs.resolve_job_def("observe_experiment_folders")
        assert not observe.execute_in_process(instance=instance, raise_on_error=False).success
