"""MLflow through `align-track ingest` after its SQLite store is deleted: the next ingest
writes every partition again (before, each was still called fresh with its runs gone), and
the one after is all fresh."""

import json
from pathlib import Path

import pytest

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import find_run_dirs
from tests.test_shared_stores import assert_one_run_per_key


def _ingest(capsys, tree: Path, data: Path) -> dict:
    code = main(["ingest", "--experiments-dir", str(tree), "--data-dir", str(data), "--json",
                 "--trackers", "mlflow"])
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
