"""`align-track ingest` on a tree already ingested: a few changed folders reach every store in
one `ingest_folders` run (plus the analysis run), an unchanged or only touched tree starts no
Dagster run at all, and a changed folder that fails is isolated as on the phase-by-phase way."""

import json
import os
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.cli.main import main
from align_track_pipeline.core.analysis.snapshot import COMPARISON_FILE, comparison_is_current
from align_track_pipeline.core.source.discovery import find_run_dirs
from tests.conftest import aim_runs_seen_by_a_fresh_process, item_count


def _ingest(capsys, tree: Path, data: Path) -> tuple[int, dict]:
    code = main(["ingest", "--experiments-dir", str(tree), "--data-dir", str(data), "--json"])
    return code, json.loads(capsys.readouterr().out)


def _jobs(data: Path) -> list[str]:
    """The job of every Dagster run the instance holds, oldest first."""
    with open_instance(data) as instance:
        return [run.job_name for run in reversed(instance.get_runs())]


def _slower_first_scene(run_dir: Path) -> float:
    timing = json.loads((run_dir / "timing.json").read_text())
    timing["raw_times_s"][0] += 1.0
    (run_dir / "timing.json").write_text(json.dumps(timing))
    return timing["raw_times_s"][0]


def _scene_counts(data: Path) -> dict[str, int]:
    """Scenes each store holds now."""
    client = MlflowClient(f"sqlite:///{data}/mlflow.db")
    experiment = client.get_experiment_by_name("align-system")
    mlflow_scenes = client.search_runs([experiment.experiment_id], "tags.run_type = 'scene'",
                                       max_results=1000)
    return {"parquet": ds.dataset(data / "parquet" / "scenes").to_table().num_rows,
            "comparison": pq.read_metadata(data / COMPARISON_FILE).num_rows,
            "mlflow": len(mlflow_scenes),
            "aim": len(aim_runs_seen_by_a_fresh_process(data / "aim"))}


def _comparison_timing(data: Path, key: str) -> float:
    """The first scene's timing of the partition, as the comparison file holds it."""
    rows = pq.read_table(data / COMPARISON_FILE).to_pylist()
    return next(r["timing_seconds"] for r in rows
                if r["partition_key"] == key and r["scene_index"] == 0)


def _timing_of_first_scene(data: Path, key: str) -> float:
    scenes = ds.dataset(data / "parquet" / "scenes").to_table(
        filter=(ds.field("partition_key") == key) & (ds.field("scene_index") == 0))
    return scenes.column("timing_seconds").to_pylist()[0]


@pytest.mark.slow
def test_one_changed_dir_among_several_reaches_every_store_in_one_run(capsys, small_tree,
                                                                     data_dir):
    code, _ = _ingest(capsys, small_tree, data_dir)
    jobs_before = _jobs(data_dir)
    assert code == 0 and "ingest_folders" not in jobs_before  # a first ingest: by phases

    changed, *others = find_run_dirs(small_tree)[1:] + find_run_dirs(small_tree)[:1]
    wanted = _slower_first_scene(changed.path)
    code, report = _ingest(capsys, small_tree, data_dir)

    assert code == 0 and report["materialized"] == [changed.key] and report["failed"] == []
    assert sorted(report["fresh"]) == sorted(r.key for r in others)
    assert _jobs(data_dir)[len(jobs_before):] == ["ingest_folders", "analysis"]
    scenes = sum(item_count(r.path) for r in find_run_dirs(small_tree))
    counts = _scene_counts(data_dir)
    assert counts == dict.fromkeys(counts, scenes)
    assert _timing_of_first_scene(data_dir, changed.key) == wanted
    assert comparison_is_current(data_dir)
    assert _comparison_timing(data_dir, changed.key) == wanted


@pytest.mark.slow
def test_an_unchanged_or_touched_tree_starts_no_run(capsys, small_tree, data_dir):
    _ingest(capsys, small_tree, data_dir)
    jobs_before = _jobs(data_dir)
    keys = sorted(r.key for r in find_run_dirs(small_tree))

    code, unchanged = _ingest(capsys, small_tree, data_dir)
    os.utime(find_run_dirs(small_tree)[0].path / "input_output.json")  # new stat, same bytes
    code_touched, touched = _ingest(capsys, small_tree, data_dir)

    assert (code, code_touched) == (0, 0)
    assert unchanged["materialized"] == touched["materialized"] == []
    assert sorted(unchanged["fresh"]) == sorted(touched["fresh"]) == keys
    assert _jobs(data_dir) == jobs_before


@pytest.mark.slow
def test_a_changed_dir_failing_its_tables_fails_alone_and_its_neighbour_is_written(
        capsys, small_tree, data_dir):
    """Both in one `ingest_folders` run: the bad one's tables fail, which skips the run's
    tracker steps; the good one reaches the trackers in a run of each, the bad one keeps what
    was ingested before."""
    _ingest(capsys, small_tree, data_dir)
    before = _scene_counts(data_dir)
    scenes = sum(item_count(r.path) for r in find_run_dirs(small_tree))
    jobs_before = _jobs(data_dir)
    bad, good, _ = find_run_dirs(small_tree)
    (bad.path / "input_output.json").write_text('[{"input": ')  # a crashed rewrite
    wanted = _slower_first_scene(good.path)

    code, report = _ingest(capsys, small_tree, data_dir)

    assert code == 1 and report["materialized"] == [good.key]
    assert [f["partition"] for f in report["failed"]] == [bad.key]
    assert str(bad.path / "input_output.json") in report["failed"][0]["error"]
    assert _jobs(data_dir)[len(jobs_before):] == ["ingest_folders", "mlflow", "aim",
                                                  "analysis"]
    assert _scene_counts(data_dir) == before == dict.fromkeys(before, scenes)
    assert _timing_of_first_scene(data_dir, good.key) == wanted
    assert comparison_is_current(data_dir)
    assert _comparison_timing(data_dir, good.key) == wanted
