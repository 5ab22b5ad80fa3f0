"""The Parquet multi-asset on a real Dagster instance: batch runs, per-partition events."""

import logging
from pathlib import Path

import dagster as dg
import pyarrow.dataset as ds
import pytest

from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.definitions import build_defs
from align_track_pipeline.defs.freshness import latest_data_versions
from tests.conftest import item_count


def _run_range(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[str],
               job: str = "tables"):
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        tags={"dagster/asset_partition_range_start": keys[0],
              "dagster/asset_partition_range_end": keys[-1]},
        raise_on_error=False,
    )


@pytest.fixture
def instance(tmp_path, dagster_storage):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        yield inst


def test_one_run_materializes_every_partition_with_its_own_event(sample_tree, data_dir, instance):
    run_dirs = find_run_dirs(sample_tree)
    keys = [r.key for r in run_dirs]
    instance.add_dynamic_partitions("experiments", keys)
    defs = build_defs(str(sample_tree), str(data_dir))
    result = _run_range(defs, instance, keys)
    assert result.success
    for asset in ("experiments", "scenes"):
        assert set(latest_data_versions(instance, asset)) == set(keys)
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
        assert sorted(r.partition_key for r in records) == sorted(keys)  # once each
    scenes = ds.dataset(data_dir / "parquet" / "scenes").to_table()
    assert scenes.num_rows == sum(item_count(r.path) for r in run_dirs)


def test_a_bad_partition_fails_alone(sample_tree, data_dir, instance):
    run_dirs = find_run_dirs(sample_tree)
    bad = run_dirs[1]
    (bad.path / "input_output.json").write_text('[{"input": ')
    keys = [r.key for r in run_dirs]
    instance.add_dynamic_partitions("experiments", keys)
    result = _run_range(build_defs(str(sample_tree), str(data_dir)), instance, keys)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert list(failure.metadata["failures"].value) == [bad.key]
    assert "input_output.json: invalid JSON" in failure.metadata["failures"].value[bad.key]
    materialized = set(latest_data_versions(instance, "scenes"))
    assert materialized == set(keys) - {bad.key}


def test_a_tracker_partition_that_fails_names_the_tracker_and_logs_where(small_tree, data_dir,
                                                                          instance):
    """A partition whose table file went missing after the tables run fails alone in the
    Aim run: its error names the store, and the run's log holds the traceback (at debug
    level: the terminal shows the one-line error)."""
    from align_track_pipeline.core.tables.store import ParquetStore

    keys = [r.key for r in find_run_dirs(small_tree)][:2]
    instance.add_dynamic_partitions("experiments", keys)
    defs = build_defs(str(small_tree), str(data_dir))
    assert _run_range(defs, instance, keys).success
    ParquetStore(data_dir).path("scenes", keys[1]).unlink()
    result = _run_range(defs, instance, keys, job="aim")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert list(failure.metadata["failures"].value) == [keys[1]]
    assert failure.metadata["failures"].value[keys[1]].startswith(f"{keys[1]}: aim: ")
    logged = [e.user_message for e in instance.all_logs(result.run_id)
              if e.level == logging.DEBUG]
    assert any(m.startswith("Traceback (most recent call last):") for m in logged)


def test_checks_are_evaluated_per_partition(sample_tree, data_dir, instance):
    keys = [r.key for r in find_run_dirs(sample_tree)][:3]
    instance.add_dynamic_partitions("experiments", keys)
    result = _run_range(build_defs(str(sample_tree), str(data_dir)), instance, keys)
    evaluations = result.get_asset_check_evaluations()
    assert {(e.asset_key.path[0], e.check_name, e.partition) for e in evaluations} == {
        ("scenes", "row_contract", key) for key in keys
    }
    assert all(e.passed for e in evaluations)
    # The check's output is yielded: no false "did not yield ... expected outputs" line, and
    # no extra evaluation or materialization comes with it.
    logged = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("scenes so far" in m for m in logged)  # the run's own lines are read here
    assert not [m for m in logged if "did not yield" in m]
    assert len(evaluations) == len(keys)
    assert len(instance.fetch_materializations(dg.AssetKey("scenes"), limit=100).records) == 3
    first = next(e for e in evaluations if e.partition == keys[0])
    items = item_count(find_run_dirs(sample_tree)[0].path)
    assert first.metadata["source_items"].value == first.metadata["scenes"].value == items


def test_materialization_metadata_has_what_the_ui_shows(sample_tree, data_dir, instance):
    key = find_run_dirs(sample_tree)[0].key
    instance.add_dynamic_partitions("experiments", [key])
    defs = build_defs(str(sample_tree), str(data_dir))
    _run_range(defs, instance, [key])
    record = instance.fetch_materializations(dg.AssetKey("scenes"), limit=1).records[0]
    meta = record.asset_materialization.metadata
    assert meta["dagster/row_count"].value == item_count(find_run_dirs(sample_tree)[0].path)
    assert Path(meta["path"].value).is_file()
    assert "scenario_id" in meta["preview"].value
    spec_meta = defs.resolve_assets_def("scenes").metadata_by_key[dg.AssetKey("scenes")]
    columns = [c.name for c in spec_meta["dagster/column_schema"].columns]
    assert "timing_seconds" in columns and "item_json" in columns


def test_definitions_load_and_the_graph_reads_tree_to_index():
    defs = build_defs()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()

    def parents(key: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(key)).parent_keys}

    assert parents("experiments") == parents("scenes") == {"experiment_folders"}
    assert parents("mlflow_runs") == parents("aim_runs") == {"experiments", "scenes"}
    assert parents("aim_index") == {"aim_runs"}
    assert {s.name for s in defs.sensors} == {
        "experiment_folder_sensor", "automation", "comparison_automation", "aim_reindex_sensor"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in defs.sensors)


def test_the_workspace_loads_as_the_daemon_and_the_ui_load_it(tmp_path):
    """Module-scope rules (e.g. one Definitions object) only show when Dagster's own loader
    imports the module, as `dagster dev` and the daemon do."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import REPO

    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w",
         "workspace.yaml"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**__import__("os").environ, "DAGSTER_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "passed validation" in done.stdout + done.stderr
