"""Every tracker target is explicit and checked: what cannot be honoured is refused with exit 2
before anything is written, and `--json` stays one object on stdout whatever the stores."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from align_track_pipeline.cli import main
from align_track_pipeline.core.trackers.base import TargetError
from align_track_pipeline.core.trackers.mlflow.tracker import check_tracking_uri

ALIGN_TRACK = str(Path(sys.executable).parent / "align-track")


@pytest.mark.parametrize("repo", ["aim://127.0.0.1:53800", "http://127.0.0.1:43800/repo"])
def test_a_remote_aim_repo_is_refused_before_anything_is_written(capsys, monkeypatch, tmp_path,
                                                                 small_tree, repo):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    code = main(["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data),
                 "--aim-repo", repo, "--json"])
    captured = capsys.readouterr()
    assert code == 2 and "not supported" in json.loads(captured.out)["error"]
    assert "not supported" in captured.err and "local path" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small-tree"]  # no data, no aim:/


@pytest.mark.parametrize("uri", [
    "127.0.0.1:5000",            # no scheme: MLflow would make a local folder of it
    "mlruns",                    # a bare path: the deprecated file store
    "file:///tmp/mlruns",
    "sqlite:/x.db",              # one slash: not a SQLite URI
    "http://",                   # no host
    "htp://127.0.0.1:5000",      # a typo
])
def test_a_malformed_mlflow_uri_is_refused(capsys, tmp_path, small_tree, uri):
    data = tmp_path / "data"
    code = main(["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data),
                 "--mlflow-uri", uri])
    assert code == 2
    assert "MLflow tracking URI" in capsys.readouterr().err
    assert not data.exists()


@pytest.mark.parametrize("uri", [
    "sqlite:///relative.db", "sqlite:////abs/path.db", "http://127.0.0.1:5000",
    "https://mlflow.example.org", "postgresql+psycopg2://u:p@127.0.0.1:5432/db",
    "postgresql+psycopg2://u:p@127.0.0.1/db?port=5433&sslmode=require"])
def test_supported_mlflow_uris_pass(uri):
    check_tracking_uri(uri)


@pytest.mark.parametrize("uri, says", [
    ("postgresql://alice:s3cret@127.0.0.1:5432/db", "write postgresql+psycopg2://"),
    ("mysql+pymysql://alice:s3cret@127.0.0.1/db", "'pymysql' is not installed"),
    ("postgresql+nodriver://alice:s3cret@127.0.0.1/db", "driver SQLAlchemy does not know"),
    ("postgresql+psycopg2://alice:s3cret@127.0.0.1:port/db", "port is not a number"),
    ("postgresql+psycopg2://alice:s3cret@127.0.0.1:70000/db", "port is not a number"),
    ("http://alice:s3cret@127.0.0.1:port", "port is not a number"),
    ("http://alice:s3cret@[127.0.0.1:5000", "does not parse"),
    ("postgresql://h/db?password=s3cret", "'psycopg' is not installed"),
    ("postgresql+psycopg2://alice:s3cret@127.0.0.1/db?port=x", "non-integer port"),
])
def test_a_database_uri_that_cannot_connect_is_refused_before_anything_is_written(
        capsys, tmp_path, small_tree, uri, says):
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed: the
    ingest would otherwise fail each partition with `No module named 'psycopg'`."""
    data = tmp_path / "data"
    code = main(["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data),
                 "--mlflow-uri", uri])
    err = capsys.readouterr().err
    assert code == 2 and says in err and "s3cret" not in err
    assert not data.exists()


def test_a_refusal_never_shows_credentials():
    with pytest.raises(TargetError) as refused:
        check_tracking_uri("htp://alice:s3cret@host:5000")
    assert "s3cret" not in str(refused.value)


@pytest.mark.slow
def test_json_is_one_object_on_stdout_against_a_server(small_tree, tmp_path, mlflow_server):
    """Against a server, MLflow would print a "View run ... at" line per run it ends (off:
    `core/trackers/mlflow/environment.py`); whatever prints meanwhile goes to stderr."""
    cmd = [ALIGN_TRACK, "ingest", "--json", "--experiments-dir", str(small_tree),
           "--data-dir", str(tmp_path / "data"), "--mlflow-uri", mlflow_server,
           "--mlflow-experiment", "json-purity"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)  # the whole of stdout is the one object
    assert done.stdout.count("\n") == 1 and len(report["materialized"]) == 3
    assert "View run" not in done.stdout + done.stderr  # one get_run per run, not made


def _ingest(capsys, tree: Path, data: Path, *extra: str) -> dict:
    code = main(["ingest", "--experiments-dir", str(tree), "--data-dir", str(data), "--json",
                 *extra])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report["failed"]
    return report


def _mlflow_runs(data: Path, experiment: str) -> dict[str, str]:
    """Run key -> run id of an experiment of the data dir's SQLite store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{data}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=5000) if found else []
    keys = [r.data.tags["align_track.key"] for r in runs]
    assert len(set(keys)) == len(keys)  # one run per key
    return {r.data.tags["align_track.key"]: r.info.run_id for r in runs}


@pytest.mark.slow
def test_the_target_is_part_of_freshness(capsys, small_tree, data_dir, tmp_path):
    """Pointing the same data dir at another store writes everything there; coming back finds
    and keeps what the first store already has."""
    from tests.conftest import aim_runs_seen_by_a_fresh_process

    keys = sorted(_ingest(capsys, small_tree, data_dir)["materialized"])
    first = _mlflow_runs(data_dir, "align-system")
    other_aim = tmp_path / "other-aim"

    report = _ingest(capsys, small_tree, data_dir, "--mlflow-experiment", "other",
                     "--aim-repo", str(other_aim))
    assert sorted(report["materialized"]) == keys  # before: "all partitions are fresh"
    assert _mlflow_runs(data_dir, "other").keys() == first.keys()
    scenes = len(aim_runs_seen_by_a_fresh_process(data_dir / "aim"))
    assert len(aim_runs_seen_by_a_fresh_process(other_aim)) == scenes

    assert sorted(_ingest(capsys, small_tree, data_dir)["materialized"]) == keys  # re-checked
    assert _mlflow_runs(data_dir, "align-system") == first  # the same runs, none added
    assert len(aim_runs_seen_by_a_fresh_process(data_dir / "aim")) == scenes
    assert _ingest(capsys, small_tree, data_dir)["materialized"] == []
