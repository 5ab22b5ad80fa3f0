"""Many writers, one store: processes with different Dagster instances (separate data dirs)
writing the same partitions into one MLflow store or one Aim repo end with exactly one run per
key, no orphans, every process exiting 0."""

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from mlflow import MlflowClient

from tests.conftest import aim_runs_seen_by_a_fresh_process

pytestmark = pytest.mark.slow
ALIGN_TRACK = str(Path(sys.executable).parent / "align-track")


def _ingest_at_once(tree: Path, data_dirs: list[Path], *extra: str) -> None:
    """`align-track ingest` in each data dir (each its own Dagster instance), all at once."""
    procs = [subprocess.Popen([ALIGN_TRACK, "ingest", "--json", "--experiments-dir", str(tree),
                               "--data-dir", str(data), *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for data in data_dirs]
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        assert json.loads(out)["failed"] == []


def assert_one_run_per_key(uri: str, experiment: str, data: Path) -> None:
    """Exactly one parent per experiment row and one child per scene, every child's parent
    among the parents, all FINISHED."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=10000)
    keys = [r.data.tags["align_track.key"] for r in runs]
    assert len(keys) == len(set(keys)), "duplicate keys"
    parents = {r.info.run_id for r in runs if r.data.tags["run_type"] == "parent"}
    children = [r for r in runs if r.data.tags["run_type"] == "scene"]
    assert len(parents) == ds.dataset(data / "parquet" / "experiments").count_rows()
    assert len(children) == ds.dataset(data / "parquet" / "scenes").count_rows()
    assert all(c.data.tags["mlflow.parentRunId"] in parents for c in children), "orphans"
    assert {r.info.status for r in runs} == {"FINISHED"}


def assert_one_aim_run_per_scene(repo: Path, data: Path) -> None:
    seen = aim_runs_seen_by_a_fresh_process(repo)
    keys = {(r["params"]["partition_key"], r["params"]["scene_index"]) for r in seen}
    assert len(seen) == len(keys) == ds.dataset(data / "parquet" / "scenes").count_rows()


def test_two_instances_share_one_sqlite_store_and_one_aim_repo(sample_tree, tmp_path):
    shared = tmp_path / "shared"
    uri = f"sqlite:///{shared}/mlflow.db"
    data_dirs = [tmp_path / "a", tmp_path / "b"]
    _ingest_at_once(sample_tree, data_dirs, "--mlflow-uri", uri, "--aim-repo",
                    str(shared / "aim"))
    assert_one_run_per_key(uri, "align-system", data_dirs[0])
    assert_one_aim_run_per_scene(shared / "aim", data_dirs[0])
    assert not list(tmp_path.glob("*/state/aim_manifest.sqlite"))  # the manifest is shared
    assert (shared / "aim" / "align-track-manifest.sqlite").exists()


def test_two_instances_share_one_mlflow_server(small_tree, tmp_path, mlflow_server):
    experiment = f"shared-{uuid.uuid4().hex[:8]}"
    data_dirs = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    _ingest_at_once(small_tree, data_dirs, "--mlflow-uri", mlflow_server,
                    "--mlflow-experiment", experiment)
    assert_one_run_per_key(mlflow_server, experiment, data_dirs[0])


@pytest.mark.postgres
def test_two_instances_share_one_postgres_store(sample_tree, tmp_path, postgres):
    uri = postgres()
    data_dirs = [tmp_path / "a", tmp_path / "b"]
    _ingest_at_once(sample_tree, data_dirs, "--mlflow-uri", uri)
    assert_one_run_per_key(uri, "align-system", data_dirs[0])


def test_a_writer_killed_on_another_host_never_blocks(small_tree, data_dir):
    """Host A (its own UTS namespace, so its own hostname) is SIGKILLed while it holds the
    pool of the shared instance's MLflow store; an ingest here frees the slot once A's heartbeat is
    older than the bound, and finishes the job."""
    import os
    import signal
    import time

    from align_track_pipeline.cli.instance import open_instance
    from align_track_pipeline.core.pools import pool_name
    from align_track_pipeline.defs.dagster_compat import pool_holders

    args = ["ingest", "--json", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir)]
    pool = pool_name(f"mlflow:sqlite:///{data_dir.resolve()}/mlflow.db")
    host_a = subprocess.Popen(["unshare", "--uts", "sh", "-c",
                               'hostname host-a && exec "$0" "$@"', ALIGN_TRACK, *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "ALIGN_TRACK_DEAD_WRITER_SECONDS": "8"})
    deadline = time.monotonic() + 300
    while True:  # until A holds the pool: then it is mid-way through its MLflow phase
        assert host_a.poll() is None and time.monotonic() < deadline
        if (data_dir / "dagster" / "history").exists():
            with open_instance(data_dir) as instance:
                if pool_holders(instance, pool)[1]:
                    held = pool_holders(instance, pool)[1][0]
                    break
        time.sleep(0.2)
    host_a.send_signal(signal.SIGKILL)
    host_a.wait()

    started = time.monotonic()
    # A beats every 2 s (its bound / 4); the bound here outlasts this ingest's start on a
    # loaded machine (imports alone took over 5 s at a load of 20), so it finds A's heartbeat
    # still young and waits for it to age: the path under test.
    here = subprocess.run([ALIGN_TRACK, *args], capture_output=True, text=True, timeout=600,
                          check=False, env={**os.environ, "ALIGN_TRACK_DEAD_WRITER_SECONDS": "20"})
    assert here.returncode == 0, here.stdout[-3000:] + here.stderr[-3000:]  # stdout: the errors
    assert f"held by run {held[:8]} (host host-a" in here.stderr
    assert time.monotonic() - started < 120
    assert json.loads(here.stdout)["failed"] == []
    with open_instance(data_dir) as instance:
        assert instance.get_run_by_id(held).status.value == "FAILURE"
    assert_one_run_per_key(f"sqlite:///{data_dir}/mlflow.db", "align-system", data_dir)


def test_a_data_dir_of_another_tree_never_touches_a_stores_runs(small_tree, tmp_path):
    """Two trees, one store (`MLFLOW_TRACKING_URI` exported in the shell): the second tree's
    runs would share the first's keys, replace them, and its removals delete them."""
    other = tmp_path / "other-tree"
    shutil.copytree(small_tree, other)
    stores = ["--mlflow-uri", f"sqlite:///{tmp_path}/shared.db", "--aim-repo",
              str(tmp_path / "shared-aim")]
    _ingest_at_once(small_tree, [tmp_path / "a"], *stores)
    before = aim_runs_seen_by_a_fresh_process(tmp_path / "shared-aim")
    done = subprocess.run([ALIGN_TRACK, "ingest", "--json", "--experiments-dir", str(other),
                           "--data-dir", str(tmp_path / "b"), *stores],
                          capture_output=True, text=True, timeout=900, check=False)
    failed = json.loads(done.stdout)["failed"]
    assert done.returncode == 1 and len(failed) == 3
    assert all(f"holds the runs of the tree {small_tree}, not of this data dir's tree {other}"
               in f["error"] and "Nothing was written" in f["error"]
               and "OtherTreesStore" not in f["error"] for f in failed)
    assert_one_run_per_key(f"sqlite:///{tmp_path}/shared.db", "align-system", tmp_path / "a")
    assert aim_runs_seen_by_a_fresh_process(tmp_path / "shared-aim") == before
