"""Declarative automation on a real instance: exactly the new or changed partitions are
requested, nothing after a touch or no change, everything after a code-version bump, and the
trackers only once the tables have landed."""

import os

import dagster as dg
import pyarrow.parquet as pq
import pytest

from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.tables.store import ParquetStore
from align_track_pipeline.definitions import build_defs
from tests.conftest import (
    SAMPLE_TREE,
    apply_partition_requests,
    item_count,
    make_run_dir,
    sensor_tick,
)
from tests.dagster_probes import stale_status

TABLES = ("experiments", "scenes")
TRACKERS = ("mlflow_runs", "aim_runs")


class Automation:
    """The automation sensor's evaluations, tick after tick, with the daemon's cursor."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.defs, self.instance, self.cursor = defs, instance, None

    def tick(self, defs: dg.Definitions | None = None) -> dict[str, set[str]]:
        result = dg.evaluate_automation_conditions(
            defs=defs or self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {key: result.get_requested_partitions(dg.AssetKey(key))
                for key in (*TABLES, *TRACKERS)}


def _requested(requests: dict[str, set[str]], assets=(*TABLES, *TRACKERS)) -> dict:
    return {asset: parts for asset, parts in requests.items() if asset in assets and parts}


def _sense_and_observe(defs, instance) -> None:
    """A discovery-sensor tick and an observation, without the sensor's own ingest run: what
    the automation, the safety net, gets when that run is missed (or the sensor is off and the
    nightly observation runs)."""
    apply_partition_requests(instance, sensor_tick(defs, instance))
    job = defs.resolve_job_def("observe_experiment_folders")
    assert job.execute_in_process(instance=instance).success


@pytest.fixture
def ingested(capsys, small_tree, data_dir):
    """The small tree ingested by the CLI while the automation sensor was ticking."""
    defs = build_defs(str(small_tree), str(data_dir))
    with open_instance(data_dir) as instance:
        automation = Automation(defs, instance)
        assert _requested(automation.tick()) == {}  # no partition yet
        assert main(["ingest", "--experiments-dir", str(small_tree), "--data-dir",
                     str(data_dir), "--json"]) == 0
        capsys.readouterr()
        # The CLI recorded the same observations and versions: nothing left for the daemon.
        assert _requested(automation.tick()) == {}
        yield small_tree, defs, instance, automation


@pytest.mark.slow
def test_no_change_and_touch_request_nothing(ingested):
    tree, defs, instance, automation = ingested
    _sense_and_observe(defs, instance)
    assert _requested(automation.tick()) == {}
    for run in find_run_dirs(tree):
        os.utime(run.path / "input_output.json")  # touched, same bytes
    _sense_and_observe(defs, instance)
    assert _requested(automation.tick()) == {}


@pytest.mark.slow
def test_a_content_change_requests_exactly_that_partition(ingested):
    tree, defs, instance, automation = ingested
    changed = find_run_dirs(tree)[1]
    io = changed.path / "input_output.json"
    io.write_text(io.read_text() + "\n")
    _sense_and_observe(defs, instance)
    assert _requested(automation.tick()) == {t: {changed.key} for t in TABLES}


@pytest.mark.slow
def test_a_new_folder_runs_tables_then_trackers(ingested, data_dir):
    tree, defs, instance, automation = ingested
    make_run_dir(tree, "late/run", SAMPLE_TREE / "random" / "unaligned" / "input_output.json")
    key = "late/run"
    _sense_and_observe(defs, instance)
    # The trackers wait for the tables to land (the sensor's own run does both in one).
    assert _requested(automation.tick()) == {t: {key} for t in TABLES}
    ingest = defs.resolve_job_def("tables")
    assert ingest.execute_in_process(instance=instance, partition_key=key).success
    assert _requested(automation.tick()) == {t: {key} for t in TRACKERS}
    for job in ("mlflow", "aim"):
        assert defs.resolve_job_def(job).execute_in_process(
            instance=instance, partition_key=key).success
    assert _requested(automation.tick()) == {}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_a_broken_table_file_is_rewritten_and_the_trackers_stay_fresh(ingested, data_dir, how):
    tree, defs, instance, automation = ingested
    run = find_run_dirs(tree)[1]
    path = ParquetStore(data_dir).path("scenes", run.key)
    os.truncate(path, 100) if how == "truncate" else path.unlink()
    result = sensor_tick(defs, instance)
    (request,) = result.run_requests
    assert (request.job_name, request.partition_key) == ("tables", run.key)
    assert sensor_tick(defs, instance).run_requests[0].run_key == request.run_key  # once
    assert defs.resolve_job_def("tables").execute_in_process(
        instance=instance, partition_key=run.key, tags=request.tags).success
    assert pq.read_table(path).num_rows == item_count(run.path)
    assert isinstance(sensor_tick(defs, instance), dg.SkipReason)  # repaired
    assert _requested(automation.tick()) == {}  # same data version: the trackers stay fresh
    os.truncate(path, 100) if how == "truncate" else path.unlink()  # the same break again
    (again,) = sensor_tick(defs, instance).run_requests
    assert again.partition_key == run.key and again.run_key != request.run_key


def _with_code_version(defs: dg.Definitions, op_name: str, version: str) -> dg.Definitions:
    """The same definitions, as after a release that bumped one asset's code version."""

    def bump(asset):
        if getattr(asset, "op", None) is not None and asset.op.name == op_name:
            return asset.map_asset_specs(lambda spec: spec.replace_attributes(code_version=version))
        return asset

    return dg.Definitions(assets=[bump(a) for a in defs.assets], resources=defs.resources)


@pytest.mark.slow
def test_a_parser_code_version_bump_requests_every_partition(ingested):
    tree, defs, instance, automation = ingested
    keys = {r.key for r in find_run_dirs(tree)}
    bumped = _with_code_version(defs, "parse_run_dirs", "999")
    assert _requested(automation.tick(bumped)) == {t: keys for t in TABLES}
    assert _requested(automation.tick(bumped)) == {}  # requested once, not on every tick


@pytest.mark.slow
def test_a_tracker_layout_bump_requests_only_that_tracker(ingested):
    tree, defs, instance, automation = ingested
    keys = {r.key for r in find_run_dirs(tree)}
    bumped = _with_code_version(defs, "log_mlflow_runs", "999")
    assert _requested(automation.tick(bumped)) == {"mlflow_runs": keys}


def test_a_daemon_started_on_an_existing_tree_ingests_it(tmp_path, small_tree, data_dir,
                                                         dagster_storage):
    """Plain `eager()` would request nothing here: the partitions were missing before the
    automation's first evaluation."""
    defs = build_defs(str(small_tree), str(data_dir))
    keys = {r.key for r in find_run_dirs(small_tree)}
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        _sense_and_observe(defs, instance)
        automation = Automation(defs, instance)
        assert _requested(automation.tick()) == {t: keys for t in TABLES}


@pytest.mark.slow
def test_a_failed_partition_is_not_requested_again_until_it_changes(tmp_path, small_tree, data_dir,
                                                                    dagster_storage):
    defs = build_defs(str(small_tree), str(data_dir))
    bad = find_run_dirs(small_tree)[0]
    (bad.path / "input_output.json").write_text('[{"input": ')  # truncated
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        _sense_and_observe(defs, instance)
        automation = Automation(defs, instance)
        requested = automation.tick()["scenes"]
        assert bad.key in requested
        for key in requested:  # what the launched runs do
            result = defs.resolve_job_def("tables").execute_in_process(
                instance=instance, partition_key=key, raise_on_error=False)
            assert result.success == (key != bad.key)
        assert _requested(automation.tick(), TABLES) == {}  # no retry loop on bad input
        (bad.path / "input_output.json").write_text(
            (SAMPLE_TREE / bad.rel_path / "input_output.json").read_text())
        _sense_and_observe(defs, instance)
        assert _requested(automation.tick(), TABLES) == {t: {bad.key} for t in TABLES}


def _staleness(defs: dg.Definitions, instance, asset: str, key: str):
    """What the UI shows for a partition: Dagster's own stale status and its root causes."""
    return stale_status(defs, instance, asset, key)


@pytest.mark.slow
def test_the_ui_shows_a_changed_folder_stale_with_the_reason(ingested):
    tree, defs, instance, automation = ingested
    changed, same = find_run_dirs(tree)[:2]
    for asset in (*TABLES, *TRACKERS):
        assert _staleness(defs, instance, asset, changed.key) == ("FRESH", [])
    io = changed.path / "input_output.json"
    io.write_text(io.read_text() + "\n")
    _sense_and_observe(defs, instance)
    for asset in TABLES:
        assert _staleness(defs, instance, asset, changed.key) == (
            "STALE", ["has a new data version"])
        assert _staleness(defs, instance, asset, same.key) == ("FRESH", [])
    ingest = defs.resolve_job_def("tables")
    assert ingest.execute_in_process(instance=instance, partition_key=changed.key).success
    assert _staleness(defs, instance, "scenes", changed.key) == ("FRESH", [])
    for asset in TRACKERS:  # Dagster marks a partition stale by its direct inputs only
        assert _staleness(defs, instance, asset, changed.key) == (
            "STALE", ["has a new data version", "has a new data version"])
        assert _staleness(defs, instance, asset, same.key) == ("FRESH", [])
    bumped = _with_code_version(defs, "parse_run_dirs", "999")
    assert _staleness(bumped, instance, "scenes", same.key) == (
        "STALE", ["has a new code version"])


@pytest.mark.slow
def test_switching_mlflow_to_flat_requests_every_mlflow_partition(ingested):
    tree, defs, instance, automation = ingested
    flat = build_defs(str(tree), defs.resources["store"].data_dir, {"flat": "1"})
    keys = {r.key for r in find_run_dirs(tree)}
    assert _requested(automation.tick(flat)) == {"mlflow_runs": keys}
