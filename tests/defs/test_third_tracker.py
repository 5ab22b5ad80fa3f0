"""A third store, registered from outside the package, gets its asset, job, freshness, status
and cleanup from the registry alone: no module of the package names it."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow.dataset as ds
import pytest

from align_track_pipeline.cli import main
from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.trackers import registry
from align_track_pipeline.core.trackers.base import Partition, Tracker, WriteReport
from align_track_pipeline.core.versions import scene_key
from align_track_pipeline.definitions import build_defs
from tests.conftest import status_counts

LAYOUT = {"version": "1"}  # what the factory below reads: a "layout bump" changes it


@dataclass(frozen=True)
class JsonLinesTracker(Tracker):
    """One JSON line per scene, one file per partition."""

    root: str
    layout: str

    name = "jsonl"
    version_tag = "j"
    description = "One JSON line per scene (key and decision), one file per partition."

    def layout_version(self) -> str:
        return self.layout

    def target_id(self) -> str:
        return self.root

    def open(self) -> JsonLinesWriter:
        return JsonLinesWriter(Path(self.root))


class JsonLinesWriter:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, partition: str) -> Path:
        return self.root / f"{hashlib.sha1(partition.encode()).hexdigest()}.jsonl"

    def upsert(self, partition: Partition) -> WriteReport:
        lines = [json.dumps({"key": scene_key(partition.key, s["scene_index"]),
                             "decision": s["decision_text"]}) for s in partition.scenes]
        text = "".join(line + "\n" for line in lines)
        path = self.path(partition.key)
        old = path.read_text() if path.exists() else None
        if old == text:
            return WriteReport(runs=len(lines), written=0, unchanged=len(lines), deleted=0)
        path.write_text(text)
        return WriteReport(runs=len(lines), written=len(lines), unchanged=0,
                           deleted=len(old.splitlines()) if old else 0,
                           details={"file": str(path)})

    def remove(self, partition: str, archive: bool) -> int:
        path = self.path(partition)
        if not path.exists():
            return 0
        count = len(path.read_text().splitlines())
        if archive:
            path.rename(path.with_suffix(".archived"))
        else:
            path.unlink()
        return count

    def close(self) -> None:
        pass


def jsonl_tracker(settings: registry.Settings) -> JsonLinesTracker:
    return JsonLinesTracker(str(Path(settings.data_dir) / "jsonl"), LAYOUT["version"])


def _cli(capsys, command: str, tree: Path, data: Path) -> dict:
    code = main([command, "--experiments-dir", str(tree), "--data-dir", str(data), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    return out


def _materializations(data: Path, asset: str) -> int:
    with open_instance(data) as instance:
        return len(instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records)


@pytest.mark.slow
def test_a_registered_tracker_gets_asset_freshness_status_and_cleanup(
        capsys, monkeypatch, small_tree, data_dir):
    monkeypatch.setitem(LAYOUT, "version", "1")
    with registry.registered("jsonl", jsonl_tracker):
        defs = build_defs(str(small_tree), str(data_dir))
        asset = defs.resolve_assets_def("jsonl_runs")
        code_version = asset.code_versions_by_key[dg.AssetKey("jsonl_runs")]
        assert code_version.startswith("1@") and code_version == jsonl_tracker(
            registry.Settings(data_dir)).code_version()
        assert set(asset.dependency_keys) == {dg.AssetKey("experiments"), dg.AssetKey("scenes")}
        assert defs.resolve_job_def("jsonl").asset_layer.executable_asset_keys == {
            dg.AssetKey("jsonl_runs")}

        keys = [r.key for r in find_run_dirs(small_tree)]
        assert sorted(_cli(capsys, "ingest", small_tree, data_dir)["materialized"]) == sorted(keys)
        writer = jsonl_tracker(registry.Settings(data_dir)).open()
        scenes = ds.dataset(data_dir / "parquet" / "scenes").to_table().to_pylist()
        for key in keys:
            lines = writer.path(key).read_text().splitlines()
            assert len(lines) == sum(s["partition_key"] == key for s in scenes)
        states = _cli(capsys, "status", small_tree, data_dir)
        assert states["counts"] == status_counts(fresh=len(keys))
        assert _cli(capsys, "ingest", small_tree, data_dir)["materialized"] == []

        # A layout bump makes every partition stale for this tracker alone.
        monkeypatch.setitem(LAYOUT, "version", "2")
        states = _cli(capsys, "status", small_tree, data_dir)
        assert states["counts"] == status_counts(stale=len(keys))
        mlflow_before = _materializations(data_dir, "mlflow_runs")
        jsonl_before = _materializations(data_dir, "jsonl_runs")
        assert sorted(_cli(capsys, "ingest", small_tree, data_dir)["materialized"]) == sorted(keys)
        assert _materializations(data_dir, "mlflow_runs") == mlflow_before
        assert _materializations(data_dir, "jsonl_runs") == jsonl_before + len(keys)

        # A removed folder's file is cleaned up with the rest of its data.
        gone = find_run_dirs(small_tree)[0]
        shutil.rmtree(gone.path)
        assert _cli(capsys, "ingest", small_tree, data_dir)["removed"] == [gone.key]
        assert not writer.path(gone.key).exists()
        assert all(writer.path(k).exists() for k in keys if k != gone.key)


def test_a_tracker_must_be_registered_under_its_own_name(data_dir):
    with registry.registered("other", jsonl_tracker), pytest.raises(ValueError, match="jsonl"):
        registry.create_all(registry.Settings(data_dir))
    assert "other" not in registry.factories()
