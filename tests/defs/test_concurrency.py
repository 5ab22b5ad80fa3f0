"""Several writers at once: pools serialize the trackers, nothing is written twice, and a
killed `align-track` leaves nothing that blocks the next one."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pyarrow.dataset as ds
import pytest
from mlflow import MlflowClient

from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.cli.liveness import (
    HEARTBEAT_TAG,
    HOST_TAG,
    PID_TAG,
    fail_abandoned_runs,
)
from align_track_pipeline.cli.main import main
from align_track_pipeline.core.pools import pool_name
from tests.conftest import aim_runs_seen_by_a_fresh_process
from tests.dagster_probes import active_pool_slots, claim_pool_slot


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _mlflow_pool(data_dir: Path) -> str:
    """The pool of the MLflow store an ingest into `data_dir` writes (SQLite there)."""
    return pool_name(f"mlflow:sqlite:///{data_dir.resolve()}/mlflow.db")


def _run_holding_a_slot(instance, pool: str, tags: dict[str, str]) -> str:
    """A STARTED run that claimed a pool slot, as a killed in-process run leaves behind."""
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="mlflow", run_id=run_id,
                                   status=dg.DagsterRunStatus.STARTED, tags=tags))
    assert claim_pool_slot(instance, pool, run_id, "log_mlflow_runs")
    return run_id


def test_only_runs_of_dead_processes_are_failed(data_dir):
    import os
    import socket

    host = socket.gethostname()
    with open_instance(data_dir) as instance:
        mlflow, aim = _mlflow_pool(data_dir), pool_name(f"aim:{data_dir.resolve()}/aim")
        dead = _run_holding_a_slot(instance, mlflow, {HOST_TAG: host, PID_TAG: str(_dead_pid())})
        alive = _run_holding_a_slot(instance, aim, {HOST_TAG: host, PID_TAG: str(os.getpid())})
        other_host = _run_holding_a_slot(instance, "other", {
            HOST_TAG: "elsewhere", PID_TAG: str(_dead_pid()), HEARTBEAT_TAG: str(time.time())})
        assert fail_abandoned_runs(instance) == [dead]
        assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED
        assert instance.get_run_by_id(other_host).status == dg.DagsterRunStatus.STARTED
        assert active_pool_slots(instance, mlflow) == 0
        assert active_pool_slots(instance, aim) == 1


@pytest.mark.slow
def test_a_killed_ingest_does_not_block_the_next_one(capsys, small_tree, data_dir):
    import socket

    with open_instance(data_dir) as instance:
        stale = _run_holding_a_slot(instance, _mlflow_pool(data_dir), {
            HOST_TAG: socket.gethostname(), PID_TAG: str(_dead_pid())})
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


@pytest.mark.slow
def test_a_dead_writer_on_another_host_is_freed_once_its_heartbeat_is_old(
        capsys, monkeypatch, small_tree, data_dir):
    monkeypatch.setenv("ALIGN_TRACK_DEAD_WRITER_SECONDS", "60")
    with open_instance(data_dir) as instance:
        stale = _run_holding_a_slot(instance, _mlflow_pool(data_dir), {
            HOST_TAG: "pod-7f9c", PID_TAG: "1", HEARTBEAT_TAG: str(time.time() - 600)})
    assert main(["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failed"] == []
    with open_instance(data_dir) as instance:
        assert instance.get_run_by_id(stale).status == dg.DagsterRunStatus.FAILURE
        assert active_pool_slots(instance, _mlflow_pool(data_dir)) == 0


def _live_holder_elsewhere(data_dir) -> str:
    with open_instance(data_dir) as instance:
        return _run_holding_a_slot(instance, _mlflow_pool(data_dir), {
            HOST_TAG: "pod-live", PID_TAG: "1", HEARTBEAT_TAG: str(time.time() + 3600)})


@pytest.mark.slow
def test_a_live_writer_elsewhere_is_waited_for_then_given_up_on(small_tree, data_dir):
    holder = _live_holder_elsewhere(data_dir)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
         "--experiments-dir", str(small_tree), "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "ALIGN_TRACK_POOL_WAIT_SECONDS": "4"})
    assert done.returncode == 1 and "gave up after" in json.loads(done.stdout)["error"]
    pool = _mlflow_pool(data_dir)
    assert f"waiting for pool {pool!r}, held by run {holder[:8]} (host pod-live" in done.stderr
    assert "gave up after" in done.stderr and "ALIGN_TRACK_POOL_WAIT_SECONDS=4" in done.stderr


@pytest.mark.slow
def test_ctrl_c_stops_a_wait_for_a_pool_at_once(small_tree, data_dir):
    _live_holder_elsewhere(data_dir)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "align-track"), "ingest", "--experiments-dir",
         str(small_tree), "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("waiting for pool"):
            break
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - started < 10
