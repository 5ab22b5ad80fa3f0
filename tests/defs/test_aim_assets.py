"""`aim_runs` and `aim_reindex` through `align-track` and a real Dagster instance."""

import itertools
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import pyarrow.dataset as ds
import pytest

from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.trackers.aim import indexing, lean_runs, storage
from align_track_pipeline.definitions import build_defs
from tests.conftest import (
    _free_port,
    aim_runs_held,
    aim_runs_seen_by_a_fresh_process,
    stop_server,
    wait_http,
)


def _ingest(capsys, tree: Path, data: Path) -> dict:
    code = main(["ingest", "--experiments-dir", str(tree), "--data-dir", str(data), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report["failed"]
    return report


@pytest.mark.slow
def test_ingest_makes_every_scene_visible_in_aim(capsys, sample_tree, data_dir):
    _ingest(capsys, sample_tree, data_dir)
    scenes = ds.dataset(data_dir / "parquet" / "scenes").to_table().to_pylist()
    seen = aim_runs_seen_by_a_fresh_process(data_dir / "aim")
    assert len(seen) == len(scenes)
    by_key = {(r["params"]["partition_key"], r["params"]["scene_index"]): r for r in seen}
    for scene in scenes:
        run = by_key[(scene["partition_key"], scene["scene_index"])]
        assert run["name"] == (f"{scene['scenario_id']} {scene['scene_id'] or '-'} | "
                               f"{scene['adm']} | "
                               f"{scene['alignment_target_id']} | idx{scene['scene_index']}")
        assert run["experiment"] == scene["experiment_path"]
        for text in ("probe_text", "choices_text", "decision_text", "justification"):
            assert run["params"][text] == scene[text]
    hashes = {r["hash"] for r in seen}

    assert _ingest(capsys, sample_tree, data_dir)["materialized"] == []
    assert {r["hash"] for r in aim_runs_seen_by_a_fresh_process(data_dir / "aim")} == hashes

    io = sample_tree / "random" / "unaligned" / "input_output.json"
    io.write_text(io.read_text().replace("Random choice", "Changed choice", 1))
    _ingest(capsys, sample_tree, data_dir)
    after = {r["hash"] for r in aim_runs_seen_by_a_fresh_process(data_dir / "aim")}
    assert len(after) == len(hashes) and len(after - hashes) == 1


def test_sensor_requests_one_reindex_and_the_job_runs(tmp_path, sample_tree, data_dir,
                                                      dagster_storage, empty_stores):
    """(The repo is a copy of an empty one: a new one's creation is
    tests/core/test_aim_compat.py's.)"""
    defs = build_defs(str(sample_tree), str(data_dir))
    aim_reindex_sensor = defs.resolve_sensor_def("aim_reindex_sensor")  # Aim's follow-up
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        keys = [r.key for r in find_run_dirs(sample_tree)][:2]
        instance.add_dynamic_partitions("experiments", keys)
        tags = {"dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1]}
        for job in ("tables", "aim"):
            assert defs.resolve_job_def(job).execute_in_process(instance=instance,
                                                                tags=tags).success
        repo = storage.open_repo(data_dir / "aim")
        unindexed = lean_runs.lean_run(repo, "by hand")  # e.g. written while aim up held it
        unindexed.close()
        context = dg.build_sensor_context(instance=instance, definitions=defs)
        requests = list(aim_reindex_sensor(context))
        assert len(requests) == 1  # two partitions materialized, one reindex
        result = defs.resolve_job_def("aim_reindex").execute_in_process(instance=instance)
        assert result.success
        assert indexing.outdated_runs(storage.open_repo(data_dir / "aim")) == []
        context = dg.build_sensor_context(instance=instance, definitions=defs,
                                          cursor=context.cursor)
        again = list(aim_reindex_sensor(context))
        assert not any(isinstance(r, dg.RunRequest) for r in again)


@pytest.mark.slow
def test_aim_reindex_command_indexes_what_is_outdated(small_tree, data_dir, capsys):
    _ingest(capsys, small_tree, data_dir)
    repo = storage.open_repo(data_dir / "aim")
    unindexed = lean_runs.lean_run(repo, "by hand")
    unindexed.close()
    assert indexing.outdated_runs(storage.open_repo(data_dir / "aim")) == [unindexed.hash]
    assert main(["aim-reindex", "--data-dir", str(data_dir)]) == 0
    assert indexing.outdated_runs(storage.open_repo(data_dir / "aim")) == []
    assert main(["aim-reindex", "--data-dir", str(data_dir), "--full"]) == 0
    with open_instance(data_dir) as instance:
        record = instance.fetch_materializations(dg.AssetKey("aim_index"), limit=1).records[0]
    meta = record.asset_materialization.metadata
    assert meta["full"].value is True and meta["indexed_runs"].value == len(
        storage.all_run_hashes(repo))


def _written_before(data: Path, runs: int) -> list[str]:
    """The partitions whose Aim runs are all among the first `runs` the Aim phase creates
    (partitions in the order the phase writes them, one run per scene)."""
    with open_instance(data) as instance:
        order = instance.get_dynamic_partitions("experiments")
    sizes = Counter(ds.dataset(data / "parquet" / "scenes").to_table()
                    .column("partition_key").to_pylist())
    done = list(itertools.takewhile(
        lambda n: n <= runs, itertools.accumulate(sizes[key] for key in order)))
    return order[:len(done)]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["aim.run_created:40", "aim.run_row_inserted:40"])
def test_kill_during_aim_phase_then_rerun(sample_tree, data_dir, fault):
    """SIGKILLed at Aim's 40th run (in the middle of the third partition): as Aim created
    it, before the manifest learned its hash (the run, built outside the repo, leaves
    nothing in it), or once its run-table row was in but not its data. Complete partitions
    are kept, the rest is redone."""
    cmd = [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
           "--experiments-dir", str(sample_tree), "--data-dir", str(data_dir)]
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False,
                            env={**os.environ, "ALIGN_TRACK_FAULT": fault})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = aim_runs_held(data_dir / "aim")
    assert len(before) == (40 if "row" in fault else 39)
    complete = _written_before(data_dir, 39)
    scenes = ds.dataset(data_dir / "parquet" / "scenes").to_table()
    kept = sum(scenes.column("partition_key").to_pylist().count(key) for key in complete)
    assert 0 < kept < 39  # the 40th run is in the middle of a partition

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    seen = aim_runs_seen_by_a_fresh_process(data_dir / "aim")
    assert len(seen) == scenes.num_rows == len(aim_runs_held(data_dir / "aim"))
    assert aim_runs_held(data_dir / "aim") == set(storage.all_run_hashes(
        storage.open_repo(data_dir / "aim")))  # nothing left of the killed run
    keys = {(r["params"]["partition_key"], r["params"]["scene_index"]) for r in seen}
    assert len(keys) == scenes.num_rows  # one run per scene, none duplicated
    survivors = {r["hash"] for r in seen} & before
    assert len(survivors) == kept  # the complete partitions' runs, and no other
    assert {r["params"]["partition_key"] for r in seen if r["hash"] in survivors} == set(
        complete)


@pytest.mark.slow
def test_ingest_while_aim_up_serves_the_repo(capsys, small_tree, data_dir):
    """The safe order is any order: Aim's index is opened, written and released per batch,
    with retries while `aim up` holds it; the UI keeps serving and sees every run."""
    first, *rest = find_run_dirs(small_tree)
    _ingest(capsys, small_tree, data_dir)
    port = _free_port()
    up = subprocess.Popen([str(Path(sys.executable).parent / "align-track"), "aim-ui",
                           "--data-dir", str(data_dir), "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/projects/", up)
        io = first.path / "input_output.json"
        io.write_text(io.read_text() + "\n ")
        (small_tree / "random" / "unaligned" / "input_output.json").write_text(
            (small_tree / "random" / "unaligned" / "input_output.json").read_text()
            .replace("Random choice", "Changed choice", 1))
        _ingest(capsys, small_tree, data_dir)
        wait_http(f"http://127.0.0.1:{port}/api/projects/", up)
    finally:
        stop_server(up)
    scenes = ds.dataset(data_dir / "parquet" / "scenes").to_table()
    seen = aim_runs_seen_by_a_fresh_process(data_dir / "aim")
    assert len(seen) == scenes.num_rows
    assert all(r["params"]["partition_key"] for r in seen)

