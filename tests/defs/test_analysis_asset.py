"""The `scene_comparison` asset: its file and metadata match the tables, and the automation
rebuilds it once after table partitions change, never while they are being written."""

from __future__ import annotations

import shutil

import dagster as dg
import pyarrow.parquet as pq
import pytest

from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.cli.main import main
from align_track_pipeline.core.analysis.columns import map_columns
from align_track_pipeline.core.analysis.compare import COMPARE_COLUMNS
from align_track_pipeline.core.analysis.snapshot import COMPARISON_FILE, comparison_is_current
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.tables.store import ParquetStore
from align_track_pipeline.definitions import build_defs
from align_track_pipeline.defs.analysis import DASHBOARD_FILE, scene_comparison
from align_track_pipeline.defs.automation import comparison_automation_sensor
from align_track_pipeline.defs.resources import DataStore
from tests.conftest import apply_partition_requests, sensor_tick
from tests.core.analysis.expected import comparison_rows

ASSET = dg.AssetKey("scene_comparison")


def test_the_file_and_metadata_match_the_tables(tables_dir, tmp_path):
    shutil.copytree(tables_dir / "parquet", tmp_path / "parquet")
    result = dg.materialize([scene_comparison],
                            resources={"store": DataStore(data_dir=str(tmp_path))})
    assert result.success
    metadata = result.asset_materializations_for_node("scene_comparison")[0].metadata
    expected = comparison_rows(tmp_path)
    maps = {*map_columns("scenes"), "kdma_values"}
    written = [{k: dict(r[k]) if k in maps and r[k] is not None else r[k]
                for k in COMPARE_COLUMNS}
               for r in pq.read_table(tmp_path / COMPARISON_FILE).to_pylist()]
    assert written == expected
    assert metadata["dagster/row_count"].value == len(expected)
    assert metadata["runs"].value == len({(r["partition_key"], r["alignment_target_id"])
                                          for r in expected})
    assert metadata["scenarios"].value == len({r["scenario_id"] for r in expected})
    preview = metadata["preview"].value
    assert preview.startswith("**DryRunEval.MJ1**, scene P1: 14 runs, the first 6")
    assert preview.count("\n|") == 2 + 13  # header, separator, one line per field


def test_a_second_build_reads_only_the_changed_partition(tables_dir, tmp_path):
    shutil.copytree(tables_dir / "parquet", tmp_path / "parquet")
    resources = {"store": DataStore(data_dir=str(tmp_path))}

    def built() -> str:
        result = dg.materialize([scene_comparison], resources=resources)
        return result.asset_materializations_for_node("scene_comparison")[0].metadata[
            "built"].value

    assert built() == "rebuilt from every partition file"
    store = ParquetStore(tmp_path)
    key = "random/unaligned"
    store.write("scenes", key, store.read("scenes", key))
    assert built() == "updated: 1 changed partition files read"
    assert comparison_is_current(tmp_path)
    expected = comparison_rows(tmp_path)
    maps = {*map_columns("scenes"), "kdma_values"}
    assert [{k: dict(r[k]) if k in maps and r[k] is not None else r[k] for k in COMPARE_COLUMNS}
            for r in pq.read_table(tmp_path / COMPARISON_FILE).to_pylist()] == expected


def _analysis_line(err: str) -> str:
    (line,) = [line for line in err.splitlines() if line.startswith("analysis: ")]
    return line


@pytest.mark.slow  # two CLI ingests of the sample tree; the update itself: test_comparison_update
def test_ingest_says_whether_it_updated_or_rebuilt_the_comparison_file(capsys, sample_tree,
                                                                      data_dir):
    """The first ingest builds it from every partition file; after one folder of 20 changed,
    the next updates it from that folder's file alone, and says so."""
    argv = ["ingest", "--experiments-dir", str(sample_tree), "--data-dir", str(data_dir),
            "--trackers", "mlflow", "--json"]
    assert main(argv) == 0
    assert _analysis_line(capsys.readouterr().err).startswith("analysis: rebuilt in ")
    changed = find_run_dirs(sample_tree)[0].path / "input_output.json"
    changed.write_text(changed.read_text() + "\n")  # new bytes, the same rows
    assert main(argv) == 0
    assert _analysis_line(capsys.readouterr().err).startswith(
        "analysis: updated (1 changed partition file read) in ")
    assert comparison_is_current(data_dir)


def _requested(defs, instance, cursor):
    """One tick of the sensor that builds it: its assets only, as the daemon evaluates them
    (evaluating every asset's conditions costs seconds a tick)."""
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=cursor,
        asset_selection=comparison_automation_sensor.asset_selection)
    return bool(result.get_requested_partitions(ASSET)), result.cursor


@pytest.mark.slow
def test_ingest_builds_it_and_the_automation_rebuilds_it_after_a_change(capsys, small_tree,
                                                                        data_dir):
    defs = build_defs(str(small_tree), str(data_dir))
    with open_instance(data_dir) as instance:
        requested, cursor = _requested(defs, instance, None)
        assert not requested  # no table partition yet: nothing to compare
    assert main(["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
                 "--json"]) == 0
    assert "analysis: rebuilt" in capsys.readouterr().err
    assert comparison_is_current(data_dir)  # ingest keeps it current, as the daemon does
    assert (data_dir / DASHBOARD_FILE).stat().st_size > 0  # and the dashboard, in the same run
    with open_instance(data_dir) as instance:
        requested, cursor = _requested(defs, instance, cursor)
        assert not requested  # nothing left for the daemon
        key = find_run_dirs(small_tree)[0].key
        tables = defs.resolve_job_def("tables")
        assert tables.execute_in_process(instance=instance, partition_key=key).success
        assert not comparison_is_current(data_dir)
        requested, cursor = _requested(defs, instance, cursor)
        assert requested
        requested, cursor = _requested(defs, instance, cursor)
        assert not requested  # requested once, not on every tick
        assert defs.resolve_job_def("analysis").execute_in_process(
            instance=instance).success
        assert comparison_is_current(data_dir)
    capsys.readouterr()
    assert main(["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
                 "--json"]) == 0
    assert "analysis: rebuilt" not in capsys.readouterr().err  # nothing changed: no rebuild


@pytest.mark.slow
def test_the_automation_builds_it_once_tables_exist(tmp_path, small_tree, data_dir,
                                                    dagster_storage):
    defs = build_defs(str(small_tree), str(data_dir))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = sensor_tick(defs, instance)
        apply_partition_requests(instance, result)
        assert defs.resolve_job_def("observe_experiment_folders").execute_in_process(
            instance=instance).success
        key = find_run_dirs(small_tree)[0].key
        assert defs.resolve_job_def("tables").execute_in_process(
            instance=instance, partition_key=key).success
        requested, _ = _requested(defs, instance, None)
        assert requested  # missing, and a table partition exists
