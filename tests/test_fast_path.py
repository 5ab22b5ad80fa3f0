"""`align-track ingest` on a tree already ingested: a few changed folders reach every store in
two `ingest_folders` runs (tables, then trackers) and the analysis run, which a worker process
runs beside the trackers' run; an unchanged or only touched tree starts no Dagster run at all,
and a changed folder that fails is isolated as on the phase-by-phase way."""

import json
import os
import shutil
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.cli.liveness import PID_TAG
from align_track_pipeline.cli.main import main
from align_track_pipeline.core.analysis.snapshot import COMPARISON_FILE, comparison_is_current
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.tables.store import ParquetStore
from tests.conftest import SAMPLE_TREE, aim_runs_seen_by_a_fresh_process, item_count


def _ingest(capsys, tree: Path, data: Path, *options: str) -> tuple[int, dict]:
    code = main(["ingest", "--experiments-dir", str(tree), "--data-dir", str(data), "--json",
                 *options])
    return code, json.loads(capsys.readouterr().out)


def _jobs(data: Path) -> list[str]:
    """The job of every Dagster run the instance holds, oldest first."""
    return [job for job, _pid in _runs(data)]


def _runs(data: Path) -> list[tuple[str, str]]:
    """The job of every Dagster run the instance holds, oldest first, and the pid of the
    process that ran it."""
    with open_instance(data) as instance:
        return [(run.job_name, run.tags[PID_TAG]) for run in reversed(instance.get_runs())]


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
@pytest.mark.parametrize("workers", [None, "1"])
def test_one_changed_dir_among_several_reaches_every_store_by_the_fast_path(
        capsys, small_tree, data_dir, workers):
    """With workers (the default), a run of its tables, then one of its trackers, while a
    worker refreshes the analysis; in one process (`--workers 1`), one run, then the
    analysis."""
    code, _ = _ingest(capsys, small_tree, data_dir)
    jobs_before = _jobs(data_dir)
    assert code == 0 and "ingest_folders" not in jobs_before  # a first ingest: by phases

    changed, *others = find_run_dirs(small_tree)[1:] + find_run_dirs(small_tree)[:1]
    wanted = _slower_first_scene(changed.path)
    options = ["--workers", workers] if workers else []
    code, report = _ingest(capsys, small_tree, data_dir, *options)

    assert code == 0 and report["materialized"] == [changed.key] and report["failed"] == []
    assert sorted(report["fresh"]) == sorted(r.key for r in others)
    runs = _runs(data_dir)[len(jobs_before):]  # the worker's analysis run starts any time
    here = str(os.getpid())
    if workers:
        assert runs == [("ingest_folders", here), ("analysis", here)]
    else:
        analysis = next(pid for job, pid in runs if job == "analysis")
        assert sorted(runs) == sorted([("ingest_folders", here)] * 2 + [("analysis", analysis)])
        assert analysis != here  # run by a worker, beside the trackers' run
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
    """Both in one `ingest_folders` tables run: the bad one's tables fail, which skips the
    trackers' run; the good one reaches the trackers in a run of each, the bad one keeps what
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
    jobs = _jobs(data_dir)[len(jobs_before):]  # the worker's analysis run starts any time
    assert [j for j in jobs if j != "analysis"] == ["ingest_folders", "mlflow", "aim"]
    assert jobs.count("analysis") == 1
    assert _scene_counts(data_dir) == before == dict.fromkeys(before, scenes)
    assert _timing_of_first_scene(data_dir, good.key) == wanted
    assert comparison_is_current(data_dir)
    assert _comparison_timing(data_dir, good.key) == wanted


@pytest.mark.slow
@pytest.mark.parametrize("workers", [None, "1"])
def test_a_range_whose_tables_failed_leaves_its_good_partition_to_the_phases(
        capsys, small_tree, data_dir, workers):
    """Two ranges: the first's trackers run; the second's tables fail for one partition,
    which skips that range's trackers (its trackers' run, or in one process, its run's
    tracker steps). Its good partition is then written by the
    tracker phases, and the bad one fails for its tables alone (no tracker's step ran for
    it)."""
    extra = "pipeline_kaleido/moral_judgement-0.2"
    shutil.copytree(SAMPLE_TREE / extra, small_tree / extra, symlinks=True)
    _ingest(capsys, small_tree, data_dir)
    scenes = sum(item_count(r.path) for r in find_run_dirs(small_tree))
    first, _, bad, last = find_run_dirs(small_tree)  # partitions in this order: two ranges
    for good in (first, last):
        _slower_first_scene(good.path)
    (bad.path / "input_output.json").write_text('[{"input": ')

    code, report = _ingest(capsys, small_tree, data_dir, *(["--workers", workers] * bool(workers)))

    assert code == 1 and sorted(report["materialized"]) == sorted([first.key, last.key])
    assert [f["partition"] for f in report["failed"]] == [bad.key]
    error = report["failed"][0]["error"]
    assert str(bad.path / "input_output.json") in error
    assert "mlflow" not in error and "aim" not in error, error
    assert _scene_counts(data_dir) == dict.fromkeys(["parquet", "comparison", "mlflow", "aim"],
                                                    scenes)


@pytest.mark.slow
def test_tables_rewritten_after_the_worker_s_analysis_are_analysed_again_here(
        capsys, small_tree, data_dir):
    """A changed folder takes the fast path, whose analysis a worker starts after its tables;
    a fresh partition's deleted table file is rewritten after that, by the tables phase: the
    analysis runs again, here, so the comparison holds both."""
    _ingest(capsys, small_tree, data_dir)
    jobs_before = _jobs(data_dir)
    changed, broken, _ = find_run_dirs(small_tree)
    wanted = _slower_first_scene(changed.path)
    ParquetStore(data_dir).path("scenes", broken.key).unlink()

    code, report = _ingest(capsys, small_tree, data_dir)

    assert code == 0 and sorted(report["materialized"]) == sorted([changed.key, broken.key])
    runs = _runs(data_dir)[len(jobs_before):]
    analyses = [pid for job, pid in runs if job == "analysis"]
    assert len(analyses) == 2 and analyses[0] != analyses[1] == str(os.getpid())
    assert comparison_is_current(data_dir)
    assert _comparison_timing(data_dir, changed.key) == wanted
    scenes = sum(item_count(r.path) for r in find_run_dirs(small_tree))
    assert pq.read_metadata(data_dir / COMPARISON_FILE).num_rows == scenes
