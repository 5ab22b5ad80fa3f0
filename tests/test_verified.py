"""The gates on the library versions whose internals are used (`core/verified.py`): which one
an upgrade closed, and that the public paths they fall back to store the same things."""

import json
import logging

import pyarrow.dataset as ds
import pytest
from mlflow import MlflowClient

from align_track_pipeline.cli.main import main
from align_track_pipeline.core import verified
from tests.conftest import aim_runs_seen_by_a_fresh_process


@pytest.mark.parametrize("library", sorted(verified.VERIFIED))
def test_the_installed_version_is_the_verified_one(library):
    """Fails after `uv lock --upgrade` moved a library past the versions its internals were
    verified on: that gate is closed (the slower public path runs) until it is verified again
    and `VERIFIED` updated."""
    assert not verified.mismatches(library), (
        f"the {library} gate is closed: installed {verified.mismatches(library)}, verified "
        f"{ {d: sorted(v) for d, v in verified.VERIFIED[library].items()} }")


def test_a_closed_gate_says_so_once(monkeypatch, caplog):
    monkeypatch.setitem(verified.VERIFIED, "mlflow", {"mlflow": frozenset({"0.0.0"})})
    verified._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert [verified.mlflow_internals() for _ in range(3)] == [False] * 3
        assert verified.aim_internals() and verified.dagster_internals()
    assert [r.getMessage() for r in caplog.records if r.name == verified.__name__] == [
        f"mlflow: using its public API only (slower): mlflow {verified.installed('mlflow')} is "
        "not among the verified ['0.0.0']"]
    verified._warn_once.cache_clear()


def _ingest(capsys, tree, data) -> dict:
    code = main(["ingest", "--experiments-dir", str(tree), "--data-dir", str(data), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["failed"] == [], report
    return report


def _counts(data) -> dict[str, int]:
    """What the stores hold, counted independently of the writers."""
    client = MlflowClient(f"sqlite:///{data}/mlflow.db")
    experiment = client.get_experiment_by_name("align-system").experiment_id
    runs = client.search_runs([experiment], max_results=10000)
    traces = client.search_traces(locations=[experiment], max_results=10000,
                                  include_spans=False)
    return {"scenes": ds.dataset(data / "parquet" / "scenes").count_rows(),
            "experiments": ds.dataset(data / "parquet" / "experiments").count_rows(),
            "mlflow_runs": len(runs),
            "mlflow_scene_runs": sum(r.data.tags.get("run_type") == "scene" for r in runs),
            "mlflow_keys": len({r.data.tags["align_track.key"] for r in runs}),
            "mlflow_traces": len(traces),
            "aim_runs": len(aim_runs_seen_by_a_fresh_process(data / "aim"))}


@pytest.mark.slow
def test_the_public_paths_store_the_same_counts_as_the_fast_ones(capsys, monkeypatch,
                                                                 sample_tree, tmp_path):
    """The sample tree ingested with every gate open, then with every gate closed
    (`ALIGN_TRACK_PUBLIC_APIS=1`: MLflow's client on the SQLite store, plain Aim runs and
    Aim's own indexer, Dagster's default planned events): the same exact counts."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    fast = _ingest(capsys, sample_tree, tmp_path / "fast")
    monkeypatch.setenv(verified.PUBLIC_ENV, "1")
    public = _ingest(capsys, sample_tree, tmp_path / "public")
    assert sorted(public["materialized"]) == sorted(fast["materialized"])
    counts = _counts(tmp_path / "fast")
    assert _counts(tmp_path / "public") == counts
    assert counts["mlflow_scene_runs"] == counts["aim_runs"] == counts["mlflow_traces"] == (
        counts["scenes"]) > 0
    assert counts["mlflow_keys"] == counts["mlflow_runs"]  # one run per key
    verified._warn_once.cache_clear()


# As if a new Aim had moved the internals the Aim gate guards: the package's own imports of
# them fail (Aim's own imports still work). `aim.sdk.index_manager` stays: its
# `RepoIndexManager.index` is the public path's indexer step, as for Aim's `aim storage`.
_MOVED = '''
import builtins

MOVED = ("aim.sdk.repo", "aim.sdk.run", "aim.storage", "aimrocks")
_import = builtins.__import__


def _moved(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__") or ""
    if importer.startswith("align_track_pipeline") and level == 0 and any(
            name == m or name.startswith(m + ".") for m in MOVED):
        raise ImportError(f"{name} moved (as if in another Aim)")
    return _import(name, globals, locals, fromlist, level)


builtins.__import__ = _moved
'''

_USE_AN_INTERNAL = """
import sys
from pathlib import Path
from align_track_pipeline.core.trackers.aim import indexing, lean_runs, staging, storage, writer
from align_track_pipeline.core.trackers.aim import tracker
repo = storage.open_repo(Path(sys.argv[1]))
try:
    lean_runs.lean_run(repo, "x")
except ImportError as error:
    print("gated:", error)
"""


def _with_aim_internals_moved(tmp_path, argv: list[str], **env: str):
    import os
    import subprocess
    import sys

    (tmp_path / "moved").mkdir(exist_ok=True)
    (tmp_path / "moved" / "sitecustomize.py").write_text(_MOVED)
    path = os.pathsep.join([str(tmp_path / "moved"), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                          timeout=600, env=os.environ | {"PYTHONPATH": path} | env)


@pytest.mark.slow
def test_with_aims_internals_moved_the_package_imports_and_ingests_by_the_public_path(
        small_tree, tmp_path, monkeypatch):
    """Every Aim module of the package imports without Aim's internals (they are imported
    where the gate lets them be used, never at import time), and an ingest with the gate
    closed stores every scene's run, exact counts, as the fast path does."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    data = tmp_path / "data"
    used = _with_aim_internals_moved(tmp_path, ["-c", _USE_AN_INTERNAL, str(tmp_path / "r")])
    assert used.returncode == 0, used.stderr[-3000:]
    assert used.stdout == "gated: aim.sdk.run moved (as if in another Aim)\n"  # it bites
    done = _with_aim_internals_moved(
        tmp_path, ["-m", "align_track_pipeline.cli.main", "ingest", "--experiments-dir",
                   str(small_tree), "--data-dir", str(data), "--json"],
        **{verified.PUBLIC_ENV: "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["failed"] == []
    counts = _counts(data)
    assert counts["scenes"] == counts["aim_runs"] == counts["mlflow_scene_runs"] == 12
    assert counts["experiments"] == 3
