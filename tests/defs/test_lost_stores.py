"""MLflow after its SQLite store is deleted, or its experiment on a tracking server made again:
the next `align-track ingest`, or the daemon's discovery sensor, writes every partition again
(before, each was still called fresh with its runs gone), and the one after is all fresh."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.definitions import build_defs
from align_track_pipeline.defs.partitions import RANGE_END, RANGE_START
from align_track_pipeline.defs.store_checks import store_requests
from align_track_pipeline.defs.store_repairs import (
    FIRST_RETRY_SECONDS,
    RUN_KEY_TAG,
    repairs_path,
)
from tests.conftest import sensor_tick
from tests.test_shared_stores import assert_one_run_per_key


def _ingest(capsys, tree: Path, data: Path, trackers: str = "mlflow", *options: str) -> dict:
    code = main(["ingest", "--experiments-dir", str(tree), "--data-dir", str(data), "--json",
                 "--trackers", trackers, *options])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 0, report["failed"]
    return report | {"stderr": captured.err}


@pytest.mark.slow
def test_a_deleted_mlflow_store_is_written_again(capsys, small_tree, data_dir):
    keys = sorted(r.key for r in find_run_dirs(small_tree))
    uri = f"sqlite:///{data_dir / 'mlflow.db'}"
    assert sorted(_ingest(capsys, small_tree, data_dir)["materialized"]) == keys
    for path in data_dir.glob("mlflow.db*"):
        path.unlink()

    second = _ingest(capsys, small_tree, data_dir)
    assert sorted(second["materialized"]) == keys and second["fresh"] == []
    assert_one_run_per_key(uri, "align-system", data_dir)

    third = _ingest(capsys, small_tree, data_dir)
    assert third["materialized"] == [] and sorted(third["fresh"]) == keys


def _one_repair_over_every_partition(defs: dg.Definitions, instance: dg.DagsterInstance,
                                     asset: str, data: Path) -> None:
    """The next sensor tick requests the asset's step over every partition, in one run;
    once that run succeeded, the tick after requests nothing."""
    (request,) = sensor_tick(defs, instance).run_requests
    assert request.asset_selection == [dg.AssetKey(asset)]
    ordered = instance.get_dynamic_partitions("experiments")
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == (ordered[0], ordered[-1])
    assert _repair_job(defs, request).execute_in_process(
        instance=instance, tags=_as_launched(request)).success
    assert isinstance(sensor_tick(defs, instance), dg.SkipReason)
    assert not repairs_path(data).exists()  # followed to the end


def _repair_job(defs: dg.Definitions, request: dg.RunRequest) -> dg.JobDefinition:
    job = defs.resolve_job_def(request.job_name)
    return job.get_subset(asset_selection=set(request.asset_selection))


def _as_launched(request: dg.RunRequest) -> dict[str, str]:
    """The tags the daemon gives a sensor's run: the request's and its run key."""
    return {**request.tags, RUN_KEY_TAG: request.run_key}


@pytest.mark.slow
def test_a_repair_whose_run_failed_is_asked_for_again_until_one_succeeded(
        capsys, small_tree, data_dir):
    """Before, the sensor kept the new generation when it asked for the repair, so a repair
    run that failed (its process killed, the store down) left the runs missing for good: the
    partitions are fresh by their versions and the automation never retries a failure."""
    _ingest(capsys, small_tree, data_dir)
    defs = build_defs(str(small_tree), str(data_dir))
    with open_instance(data_dir) as instance:
        for path in data_dir.glob("mlflow.db*"):
            path.unlink()
        (first,) = sensor_tick(defs, instance).run_requests
        job = _repair_job(defs, first)
        instance.report_run_failed(instance.create_run_for_job(job, tags=_as_launched(first)))
        assert isinstance(sensor_tick(defs, instance), dg.SkipReason)  # not at once

        order = instance.get_dynamic_partitions("experiments")
        later = time.time() + FIRST_RETRY_SECONDS + 1
        (again,) = store_requests(instance, defs.resources["trackers"].all, data_dir, order,
                                  clock=lambda: later)
        assert again.run_key != first.run_key  # Dagster launches a key once
        assert {k: again.tags[k] for k in (RANGE_START, RANGE_END)} == {
            k: first.tags[k] for k in (RANGE_START, RANGE_END)}
        assert job.execute_in_process(instance=instance, tags=_as_launched(again)).success
        assert isinstance(sensor_tick(defs, instance), dg.SkipReason)
    assert not repairs_path(data_dir).exists()
    assert_one_run_per_key(f"sqlite:///{data_dir / 'mlflow.db'}", "align-system", data_dir)


@pytest.mark.slow
@pytest.mark.parametrize(("lost", "asset"), [("mlflow.db*", "mlflow_runs"),
                                             ("aim/align-track-manifest.sqlite*", "aim_runs")])
def test_the_daemon_writes_a_lost_store_again(capsys, small_tree, data_dir, lost, asset):
    """Under the daemon nothing else would notice: no folder changed, no code version. The
    discovery sensor sees the store's generation change (the MLflow store deleted; the Aim
    manifest deleted, which the writer rebuilds from the runs) and requests that tracker's
    step of `ingest_folders` over the partitions; once it ran, the next tick requests
    nothing."""
    keys = sorted(r.key for r in find_run_dirs(small_tree))
    _ingest(capsys, small_tree, data_dir, "mlflow,aim")
    defs = build_defs(str(small_tree), str(data_dir))
    with open_instance(data_dir) as instance:
        assert isinstance(sensor_tick(defs, instance), dg.SkipReason)  # the stores as written
        for path in data_dir.glob(lost):
            path.unlink()
        _one_repair_over_every_partition(defs, instance, asset, data_dir)
    if asset == "mlflow_runs":
        assert_one_run_per_key(f"sqlite:///{data_dir / 'mlflow.db'}", "align-system", data_dir)
    assert sorted(_ingest(capsys, small_tree, data_dir, "mlflow,aim")["fresh"]) == keys


def _made_again(server: str, experiment: str) -> str:
    """The experiment as if removed for good and made again by someone (a restored or
    recreated database, `mlflow gc` and a new experiment): the name now names a new one,
    empty; its old runs live on under another name. Returns the old id."""
    client = MlflowClient(server)
    old = client.get_experiment_by_name(experiment).experiment_id
    client.rename_experiment(old, f"{experiment}-before")
    client.create_experiment(experiment)
    return old


@pytest.mark.slow
def test_an_experiment_made_again_behind_a_tracking_server_is_written_again(
        capsys, small_tree, data_dir, mlflow_server):
    """A server's store cannot vouch for the runs in the data versions (a request per
    partition), so `ingest` compares the experiment's id and creation time with the last
    ones seen, once per ingest, and writes every partition again when they changed. An
    ingest cut short during that rewrite does not forget it: the next one writes them all."""
    keys = sorted(r.key for r in find_run_dirs(small_tree))
    experiment = f"made-again-{os.getpid()}-{data_dir.parent.name}"
    options = ("--mlflow-uri", mlflow_server, "--mlflow-experiment", experiment)
    assert sorted(_ingest(capsys, small_tree, data_dir, "mlflow", *options)["materialized"]) \
        == keys
    assert _ingest(capsys, small_tree, data_dir, "mlflow", *options)["materialized"] == []

    old = _made_again(mlflow_server, experiment)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    cut = subprocess.run(
        [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
         "--experiments-dir", str(small_tree), "--data-dir", str(data_dir), "--trackers",
         "mlflow", *options], capture_output=True, text=True, timeout=600, check=False,
        env=env | {"ALIGN_TRACK_FAULT": "mlflow.run_created:2:sigint"})
    assert cut.returncode == 130, cut.stderr[-2000:]
    second = _ingest(capsys, small_tree, data_dir, "mlflow", *options)
    assert sorted(second["materialized"]) == keys and second["fresh"] == []
    assert (f"mlflow: the store holds another experiment of that name since it was last "
            f"written: writing its {len(keys)} partitions again") in second["stderr"]
    assert MlflowClient(mlflow_server).get_experiment_by_name(experiment).experiment_id != old
    assert_one_run_per_key(mlflow_server, experiment, data_dir)

    third = _ingest(capsys, small_tree, data_dir, "mlflow", *options)
    assert third["materialized"] == [] and sorted(third["fresh"]) == keys

    client = MlflowClient(mlflow_server)  # gone: renamed away, none made in its place
    client.rename_experiment(client.get_experiment_by_name(experiment).experiment_id,
                             f"{experiment}-gone")
    fourth = _ingest(capsys, small_tree, data_dir, "mlflow", *options)
    assert sorted(fourth["materialized"]) == keys
    assert "mlflow: the store no longer holds the experiment" in fourth["stderr"]
    assert_one_run_per_key(mlflow_server, experiment, data_dir)
    assert _status(capsys, small_tree, data_dir, *options)["counts"]["fresh"] == len(keys)
    assert _ingest(capsys, small_tree, data_dir, "mlflow", *options)["materialized"] == []


def _status(capsys, tree: Path, data: Path, *options: str) -> dict:
    assert main(["status", "--experiments-dir", str(tree), "--data-dir", str(data), "--json",
                 "--trackers", "mlflow", *options]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_the_daemon_writes_an_experiment_made_again_behind_a_server_again(
        capsys, small_tree, data_dir, mlflow_server):
    """The discovery sensor asks the server once a tick; when the experiment was made again
    it requests the tracker's step over every partition the store held, once."""
    experiment = f"daemon-made-again-{os.getpid()}-{data_dir.parent.name}"
    options = {"mlflow_uri": mlflow_server, "mlflow_experiment": experiment,
               "trackers": "mlflow"}
    _ingest(capsys, small_tree, data_dir, "mlflow", "--mlflow-uri", mlflow_server,
            "--mlflow-experiment", experiment)
    defs = build_defs(str(small_tree), str(data_dir), options)
    with open_instance(data_dir) as instance:
        assert isinstance(sensor_tick(defs, instance), dg.SkipReason)
        _made_again(mlflow_server, experiment)
        _one_repair_over_every_partition(defs, instance, "mlflow_runs", data_dir)
    assert_one_run_per_key(mlflow_server, experiment, data_dir)


@pytest.mark.slow
def test_an_ingest_writes_what_a_failed_repair_left_behind_a_server(
        capsys, small_tree, data_dir, mlflow_server):
    """The sensor saw the experiment made again and keeps that generation; its repair run
    failed. The store's generation no longer differs from the one seen, and the partitions
    are fresh by their versions: the next `align-track ingest` writes them because the
    repair is still open, then ends it."""
    keys = sorted(r.key for r in find_run_dirs(small_tree))
    experiment = f"failed-repair-{os.getpid()}-{data_dir.parent.name}"
    options = ("--mlflow-uri", mlflow_server, "--mlflow-experiment", experiment)
    _ingest(capsys, small_tree, data_dir, "mlflow", *options)
    defs = build_defs(str(small_tree), str(data_dir),
                      {"mlflow_uri": mlflow_server, "mlflow_experiment": experiment,
                       "trackers": "mlflow"})
    with open_instance(data_dir) as instance:
        _made_again(mlflow_server, experiment)
        (request,) = sensor_tick(defs, instance).run_requests
        run = instance.create_run_for_job(_repair_job(defs, request), tags=_as_launched(request))
        instance.report_run_failed(run)
    assert repairs_path(data_dir).exists()
    told = _status(capsys, small_tree, data_dir, *options)
    assert told["counts"]["stale"] == len(keys) and told["counts"]["fresh"] == 0
    for row in told["partitions"]:  # fresh by their versions, but their runs are gone
        assert row["state"] == "stale"
        assert row["error"].startswith(f"mlflow: its runs were gone from mlflow:{mlflow_server}")
        assert "asked for 1 run (tag align_track/repair)" in row["error"]

    second = _ingest(capsys, small_tree, data_dir, "mlflow", *options)
    assert sorted(second["materialized"]) == keys
    assert (f"mlflow: writing the {len(keys)} partitions a repair of its store has not "
            "written yet") in second["stderr"]
    assert not repairs_path(data_dir).exists()
    assert_one_run_per_key(mlflow_server, experiment, data_dir)
    assert _status(capsys, small_tree, data_dir, *options)["counts"]["fresh"] == len(keys)
    assert _ingest(capsys, small_tree, data_dir, "mlflow", *options)["materialized"] == []


def _status(capsys, tree: Path, data: Path, *options: str) -> dict:
    assert main(["status", "--experiments-dir", str(tree), "--data-dir", str(data), "--json",
                 "--trackers", "mlflow", *options]) == 0
    return json.loads(capsys.readouterr().out)
