"""The `dashboard` asset: materialized in a real instance, its metadata links to the page the
CLI writes, and the automation builds it once table partitions exist, then after a change."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.analysis.snapshot import COMPARISON_FILE
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.tables.store import ParquetStore
from align_track_pipeline.definitions import build_defs
from align_track_pipeline.defs.analysis import DASHBOARD_FILE, dashboard, scene_comparison
from align_track_pipeline.defs.automation import comparison_automation_sensor
from align_track_pipeline.defs.resources import DataStore
from tests.conftest import apply_partition_requests, sensor_tick
from tests.core.analysis.test_analysis_charts import _same
from tests.core.analysis.test_dashboard import _chart, _sections, expected_agreement

ASSET = dg.AssetKey("dashboard")


def test_it_materializes_and_links_to_the_page(capsys, tables_dir, tmp_path, dagster_storage):
    data = tmp_path / "data"
    shutil.copytree(tables_dir / "parquet", data / "parquet")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize([dashboard], instance=instance,
                                resources={"store": DataStore(data_dir=str(data))})
        assert result.success
        event = instance.get_latest_materialization_event(ASSET)
    metadata = event.asset_materialization.metadata
    page = data / DASHBOARD_FILE
    assert metadata["path"] == dg.MetadataValue.path(str(page))
    assert metadata["open"] == dg.MetadataValue.url(page.resolve().as_uri())
    assert metadata["charts"].value == 7  # 5 scores (3 measured KDMAs), time, agreement
    assert metadata["scenarios compared"].value == len(expected_agreement(tables_dir))
    assert main(["dashboard", "--data-dir", str(tables_dir), "-o", str(tmp_path / "cli.html")]) == 0
    built, cli = (_sections(p.read_text()) for p in (page, tmp_path / "cli.html"))
    assert built.keys() == cli.keys()  # the same page (sums in any order: last digits vary)
    assert all(_same(_chart(built[k]), _chart(cli[k])) for k in built)
    assert not list(page.parent.glob(".*.tmp"))


def test_after_a_change_it_reads_scenes_from_the_updated_comparison_file(tmp_path, tables_dir):
    """One partition changed, another garbled in place with its size and times kept (the
    tables' fingerprint does not see it): the analysis run updates the comparison file from
    the changed partition alone, and the page reads that file, not every scenes file."""
    data = tmp_path / "data"
    shutil.copytree(tables_dir / "parquet", data / "parquet")
    resources = {"store": DataStore(data_dir=str(data))}
    assert dg.materialize([scene_comparison], resources=resources).success
    store = ParquetStore(data)
    garbled = store.path("scenes", "pipeline_prompt_based/moral_judgement-0.2")
    stat = garbled.stat()
    garbled.write_bytes(b"\0" * stat.st_size)
    os.utime(garbled, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    store.write("scenes", "random/unaligned", store.read("scenes", "random/unaligned"))
    result = dg.materialize([scene_comparison, dashboard], resources=resources)
    assert result.success
    metadata = result.asset_materializations_for_node("dashboard")[0].metadata
    assert metadata["scenarios compared"].value == len(expected_agreement(tables_dir))


def test_a_comparison_file_that_cannot_be_written_skips_the_dashboard(tmp_path, tables_dir):
    """The dashboard waits for the comparison file: when it fails, the page is not written
    in that run (the run fails, naming the comparison step) and is built by the next one."""
    data = tmp_path / "data"
    shutil.copytree(tables_dir / "parquet", data / "parquet")
    (data / COMPARISON_FILE).mkdir(parents=True)  # in the way of the file
    resources = {"store": DataStore(data_dir=str(data))}
    result = dg.materialize([scene_comparison, dashboard], resources=resources,
                            raise_on_error=False)
    assert not result.success
    assert [e.step_key for e in result.get_step_failure_events()] == ["scene_comparison"]
    assert [e.step_key for e in result.all_events if e.is_step_start] == ["scene_comparison"]
    assert not (data / DASHBOARD_FILE).exists()
    (data / COMPARISON_FILE).rmdir()
    assert dg.materialize([scene_comparison, dashboard], resources=resources).success
    assert (data / DASHBOARD_FILE).is_file()


def _requested(defs, instance, cursor):
    """One tick of the sensor that builds it: its assets only, as the daemon evaluates them
    (evaluating every asset's conditions costs seconds a tick)."""
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=cursor,
        asset_selection=comparison_automation_sensor.asset_selection)
    return bool(result.get_requested_partitions(ASSET)), result.cursor


def test_the_automation_builds_it_once_tables_exist_and_after_a_change(tmp_path, small_tree,
                                                                       data_dir, dagster_storage):
    defs = build_defs(str(small_tree), str(data_dir))
    assert ASSET in defs.resolve_asset_graph().get_all_asset_keys()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        requested, cursor = _requested(defs, instance, None)
        assert not requested  # no table yet: nothing to show
        apply_partition_requests(instance, sensor_tick(defs, instance))
        assert defs.resolve_job_def("observe_experiment_folders").execute_in_process(
            instance=instance).success
        key = find_run_dirs(small_tree)[0].key
        tables = defs.resolve_job_def("tables")
        assert tables.execute_in_process(instance=instance, partition_key=key).success
        requested, cursor = _requested(defs, instance, cursor)
        assert requested
        assert dg.materialize([dashboard], instance=instance,
                              resources={"store": defs.resources["store"]}).success
        assert Path(data_dir / DASHBOARD_FILE).is_file()
        requested, cursor = _requested(defs, instance, cursor)
        assert not requested  # built: not again on the next tick
        assert tables.execute_in_process(instance=instance, partition_key=key).success
        requested, cursor = _requested(defs, instance, cursor)
        assert requested  # a table partition changed
