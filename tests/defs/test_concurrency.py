"""Several writers at once: pools serialize the trackers, nothing is written twice, and a
killed `align-track` leaves nothing that blocks the next one."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pyarrow.dataset as ds
import pytest
from dagster._core.storage.dagster_run import DagsterRun
from mlflow import MlflowClient

from align_track_pipeline.cli.instance import (
    HOST_TAG,
    PID_TAG,
    fail_abandoned_runs,
    open_instance,
    release_pool_slots,
)
from align_track_pipeline.cli.main import main
from tests.conftest import aim_runs_seen_by_a_fresh_process


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _run_holding_a_slot(instance, pool: str, tags: dict[str, str]) -> str:
    """A STARTED run that claimed a pool slot, as a killed in-process run leaves behind."""
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name="mlflow", run_id=run_id,
                                status=dg.DagsterRunStatus.STARTED, tags=tags))
    instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
    claim = instance.event_log_storage.claim_concurrency_slot(pool, run_id, "log_mlflow_runs")
    assert claim.is_claimed
    return run_id


def _active_slots(instance, pool: str) -> int:
    return instance.event_log_storage.get_concurrency_info(pool).active_slot_count


def test_release_pool_slots_frees_a_runs_claims(data_dir):
    """Pins the event-log storage method the CLI relies on."""
    with open_instance(data_dir) as instance:
        run_id = _run_holding_a_slot(instance, "mlflow", {})
        assert _active_slots(instance, "mlflow") == 1
        release_pool_slots(instance, run_id)
        assert _active_slots(instance, "mlflow") == 0


def test_only_runs_of_dead_processes_are_failed(data_dir):
    import os
    import socket

    host = socket.gethostname()
    with open_instance(data_dir) as instance:
        dead = _run_holding_a_slot(instance, "mlflow", {HOST_TAG: host, PID_TAG: str(_dead_pid())})
        alive = _run_holding_a_slot(instance, "aim", {HOST_TAG: host, PID_TAG: str(os.getpid())})
        other_host = _run_holding_a_slot(instance, "other", {HOST_TAG: "elsewhere",
                                                             PID_TAG: str(_dead_pid())})
        assert fail_abandoned_runs(instance) == [dead]
        assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED
        assert instance.get_run_by_id(other_host).status == dg.DagsterRunStatus.STARTED
        assert _active_slots(instance, "mlflow") == 0 and _active_slots(instance, "aim") == 1


@pytest.mark.slow
def test_a_killed_ingest_does_not_block_the_next_one(capsys, small_tree, data_dir):
    import socket

    with open_instance(data_dir) as instance:
        stale = _run_holding_a_slot(instance, "mlflow", {HOST_TAG: socket.gethostname(),
                                                         PID_TAG: str(_dead_pid())})
    # With the slot still held, the MLflow phase would wait for ever.
    assert main(["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failed"] == []
    with open_instance(data_dir) as instance:
        assert instance.get_run_by_id(stale).status == dg.DagsterRunStatus.FAILURE


@pytest.mark.slow
def test_two_ingests_at_once_write_everything_once(small_tree, data_dir):
    cmd = [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
           "--experiments-dir", str(small_tree), "--data-dir", str(data_dir)]
    main(["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
          "--json"])  # the instance and stores exist; the race is over the partitions
    for io in small_tree.rglob("input_output.json"):  # every partition changed
        io.write_text(io.read_text() + "\n")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "database is locked" not in err
        assert json.loads(out)["failed"] == []

    scenes = ds.dataset(data_dir / "parquet" / "scenes").to_table()
    experiments = ds.dataset(data_dir / "parquet" / "experiments").to_table()
    client = MlflowClient(f"sqlite:///{data_dir}/mlflow.db")
    exp = client.get_experiment_by_name("align-system")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    kinds = [r.data.tags["run_type"] for r in runs]
    assert kinds.count("parent") == experiments.num_rows
    assert kinds.count("scene") == scenes.num_rows
    assert len({r.data.tags["align_track.key"] for r in runs}) == len(runs)
    seen = aim_runs_seen_by_a_fresh_process(data_dir / "aim")
    keys = {(r["params"]["partition_key"], r["params"]["scene_index"]) for r in seen}
    assert len(seen) == len(keys) == scenes.num_rows
