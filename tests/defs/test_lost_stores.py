"""MLflow after its SQLite store is deleted: the next `align-track ingest`, or the daemon's
discovery sensor, writes every partition again (before, each was still called fresh with its
runs gone), and the one after is all fresh."""

import json
from pathlib import Path

import dagster as dg
import pytest

from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.definitions import build_defs
from align_track_pipeline.defs.partitions import RANGE_END, RANGE_START
from tests.conftest import sensor_tick
from tests.test_shared_stores import assert_one_run_per_key


def _ingest(capsys, tree: Path, data: Path, trackers: str = "mlflow") -> dict:
    code = main(["ingest", "--experiments-dir", str(tree), "--data-dir", str(data), "--json",
                 "--trackers", trackers])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report["failed"]
    return report


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

        (request,) = sensor_tick(defs, instance).run_requests
        assert request.asset_selection == [dg.AssetKey(asset)]
        ordered = instance.get_dynamic_partitions("experiments")
        assert (request.tags[RANGE_START], request.tags[RANGE_END]) == (ordered[0], ordered[-1])
        job = defs.resolve_job_def(request.job_name)
        assert job.get_subset(asset_selection=set(request.asset_selection)).execute_in_process(
            instance=instance, tags=request.tags).success

        assert isinstance(sensor_tick(defs, instance), dg.SkipReason)
    if asset == "mlflow_runs":
        assert_one_run_per_key(f"sqlite:///{data_dir / 'mlflow.db'}", "align-system", data_dir)
    assert sorted(_ingest(capsys, small_tree, data_dir, "mlflow,aim")["fresh"]) == keys
