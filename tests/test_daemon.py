"""End to end with the real daemon: a run directory dropped into the tree reaches Parquet,
MLflow and Aim with no other action, through the discovery sensor's own run."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from align_track_pipeline.cli.instance import INSTANCE_CONFIG
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.tables.store import ParquetStore
from tests.conftest import (
    REPO,
    SAMPLE_TREE,
    aim_runs_seen_by_a_fresh_process,
    item_count,
    mlflow_scenes_finished,
    stop_server,
)

BOUND_SECONDS = 300  # sensors tick every 5 s here; a new folder takes seconds


def _ingested(data: Path, key: str, scenes: int) -> bool:
    """The partition's scenes are in all three stores, counted independently of the writers."""
    path = ParquetStore(data).path("scenes", key)
    if not path.exists() or pq.read_metadata(path).num_rows != scenes:
        return False
    if not mlflow_scenes_finished(f"sqlite:///{data}/mlflow.db", key, scenes):
        return False
    aim = aim_runs_seen_by_a_fresh_process(data / "aim", f'run.partition_key == "{key}"')
    return len(aim) == scenes


def _runs_that_wrote(home: Path, asset: str, key: str | None = None) -> set[str]:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
    return {r.run_id for r in records if key is None or r.partition_key == key}


def _changed(home: Path, asset: str, key: str, run_id: str) -> dict[str, int]:
    """What the run `run_id` changed in the tracker's store for the partition, by its
    materialization's metadata: runs written or deleted, MLflow traces written."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
    (record,) = [r for r in records if r.partition_key == key and r.run_id == run_id]
    metadata = record.asset_materialization.metadata
    counts = {name: metadata[name].value for name in ("written", "deleted", "traces_written")
              if name in metadata}
    return {name: count for name, count in counts.items() if count}


def _run(home: Path, run_id: str):
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_run_by_id(run_id)


def _wait(what: str, done, daemon: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + BOUND_SECONDS
    while not done():
        assert daemon.poll() is None, f"daemon exited:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"{what}: not done in {BOUND_SECONDS} s:\n" + (
            log.read_text()[-4000:])
        time.sleep(3)


def test_what_the_daemon_is_started_with(monkeypatch, tmp_path, small_tree):
    """The test above in seconds, without the daemon: workspace.yaml names the project's
    Definitions, bound to the ALIGN_TRACK_* variables, with every sensor and the schedule on
    by default; dagster.yaml queues at most 2 runs, gives each pool one slot, and turns the
    UI's welcome modal and telemetry off; the queue is drained every second, upkeep runs take
    one slot at most, and the sensor's ingest and the cleanup run their steps in the run's own
    process."""
    import importlib

    import dagster as dg
    import yaml

    from align_track_pipeline.core.trackers import registry
    from align_track_pipeline.defs.automation import automation_seconds, discovery_seconds

    (location,) = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    module = importlib.import_module(location["python_module"]["module_name"])
    data = tmp_path / "data"
    with monkeypatch.context() as env:
        env.setenv("ALIGN_TRACK_EXPERIMENTS_DIR", str(small_tree))
        env.setenv("ALIGN_TRACK_DATA_DIR", str(data))
        env.delenv("ALIGN_TRACK_SENSOR_INTERVAL_SECONDS", raising=False)
        env.delenv("ALIGN_TRACK_AUTOMATION_INTERVAL_SECONDS", raising=False)
        defs = importlib.reload(module).defs
        assert (discovery_seconds(), automation_seconds()) == (5, 30)  # the defaults
        mlflow = registry.create("mlflow", registry.Settings(data))
    importlib.reload(module)  # back to the environment's own
    # Bound to the variables by name (the UI shows the name, the run reads the value).
    assert defs.resources["tree"].root == dg.EnvVar("ALIGN_TRACK_EXPERIMENTS_DIR")
    assert defs.resources["store"].data_dir == dg.EnvVar("ALIGN_TRACK_DATA_DIR")
    assert mlflow.tracking_uri == f"sqlite:///{data}/mlflow.db"
    assert {s.name: s.default_status for s in defs.sensors} == {
        name: dg.DefaultSensorStatus.RUNNING
        for name in ("experiment_folder_sensor", "automation", "comparison_automation",
                     "aim_reindex_sensor")}
    assert [s.default_status for s in defs.schedules] == [dg.DefaultScheduleStatus.RUNNING]
    assert {s.name: s.minimum_interval_seconds for s in defs.sensors} == {
        "experiment_folder_sensor": 5, "automation": 30, "comparison_automation": 30,
        "aim_reindex_sensor": 30}
    # Upkeep runs take one run slot at most: a new folder's ingest never waits behind them.
    upkeep = {"align_track/upkeep": "true"}
    assert defs.resolve_job_def("aim_reindex").tags.items() >= upkeep.items()
    assert defs.resolve_job_def("analysis").tags.items() >= upkeep.items()
    comparison = next(s for s in defs.sensors if s.name == "comparison_automation")
    assert comparison.run_tags == upkeep
    for job in ("ingest_folders", "cleanup_removed"):
        assert defs.resolve_job_def(job).executor_def == dg.in_process_executor

    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        config = instance.get_concurrency_config()
        assert config.run_queue_config.max_concurrent_runs == 2
        assert config.pool_config.default_pool_limit == 1
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        (limit,) = config.run_queue_config.tag_concurrency_limits
        assert limit == {"key": "align_track/upkeep", "limit": 1}
        assert instance.run_monitoring_enabled
        # A quiet UI: no welcome modal, nothing sent home.
        assert not instance.nux_enabled and not instance.telemetry_enabled


@pytest.mark.slow
def test_the_daemon_ingests_a_new_folder_with_no_other_action(tmp_path, small_tree):
    home, data, log = tmp_path / "dagster-home", tmp_path / "data", tmp_path / "daemon.log"
    home.mkdir()
    shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ALIGN_TRACK_", "MLFLOW_", "DAGSTER_"))}
    # The automation ticks as often as the sensor: it gets every chance to ingest twice.
    env |= {"DAGSTER_HOME": str(home), "ALIGN_TRACK_EXPERIMENTS_DIR": str(small_tree),
            "ALIGN_TRACK_DATA_DIR": str(data), "ALIGN_TRACK_AUTOMATION_INTERVAL_SECONDS": "5"}
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Started on an existing tree, the daemon ingests it, the partitions batched in one
        # run (the sensor's, over the range it added), not one run per partition.
        existing = find_run_dirs(small_tree)
        for run in existing:
            _wait(run.key, lambda r=run: _ingested(data, r.key, item_count(r.path)), daemon, log)
        assert len(_runs_that_wrote(home, "scenes")) == 1

        late = small_tree / "late" / "run"
        shutil.copytree(SAMPLE_TREE / "wrapper_2026_04" / "random", late)
        started = time.monotonic()
        _wait("late/run", lambda: _ingested(data, "late/run", item_count(late)), daemon, log)
        print(f"new folder in all stores after {time.monotonic() - started:.1f} s")
        time.sleep(15)  # a few more ticks of the automation and the sensor
        # One run wrote it everywhere: the sensor's own, which the automation left alone.
        writers = {asset: _runs_that_wrote(home, asset, "late/run")
                   for asset in ("experiments", "scenes", "mlflow_runs", "aim_runs")}
        (run_id,) = writers["scenes"]
        assert writers["experiments"] == {run_id}
        for tracker in ("mlflow_runs", "aim_runs"):
            assert run_id in writers[tracker]
            # A Dagster race (docs/freshness.md) can start one more run of a tracker: it must
            # be the automation's, and find everything in place and change nothing.
            assert len(writers[tracker]) <= 2
            for other in writers[tracker] - {run_id}:
                assert _run(home, other).tags["dagster/sensor_name"] == "automation"
                assert _changed(home, tracker, "late/run", other) == {}
        run = _run(home, run_id)
        assert run.job_name == "ingest_folders"
        assert run.tags["dagster/sensor_name"] == "experiment_folder_sensor"
        assert run.tags["dagster/partition"] == "late/run"
    finally:
        os.killpg(daemon.pid, 15)
        stop_server(daemon)
