"""What the Dagster UI shows about the assets, read back from a real instance after real runs:
the table's size beside the partition's, links into the MLflow and Aim UIs, and a source
asset that explains its partition bar."""

import dagster as dg
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.tables.store import ParquetStore
from align_track_pipeline.core.trackers.aim.manifest import complete_run_hashes, manifest_path
from align_track_pipeline.core.trackers.mlflow.tracker import PARENTS_ONLY_LABEL, parents_only_url
from align_track_pipeline.core.versions import scene_key
from align_track_pipeline.definitions import build_defs
from align_track_pipeline.defs.metadata import TABLE_ROWS
from tests.conftest import item_count
from tests.core.test_research_numbers import expected_numbers

UI_VARIABLES = ("ALIGN_TRACK_MLFLOW_UI_URL", "ALIGN_TRACK_AIM_UI_URL", "MLFLOW_TRACKING_URI")


@pytest.fixture
def instance(tmp_path, monkeypatch, dagster_storage):
    for name in UI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        yield inst


def _latest(instance, asset: str, partition: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
        limit=1).records
    return records[0].asset_materialization.metadata


def _run(defs, instance, job: str, keys: list[str]) -> None:
    assert defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": keys[0],
              "dagster/asset_partition_range_end": keys[-1]}).success


def test_each_partition_shows_the_size_of_the_whole_table(small_tree, data_dir, instance):
    """`dagster/row_count` is the partition's rows; "rows in table" is every partition's,
    counted once even when a partition is written again, as text: not plotted."""
    run_dirs = find_run_dirs(small_tree)
    keys = [r.key for r in run_dirs]
    instance.add_dynamic_partitions("experiments", keys)
    defs = build_defs(str(small_tree), str(data_dir))
    _run(defs, instance, "tables", keys[:2])
    _run(defs, instance, "tables", keys)  # the first two again, the third for the first time
    for table in ("experiments", "scenes"):
        total = ds.dataset(data_dir / "parquet" / table).count_rows()
        last = _latest(instance, table, keys[-1])
        assert last[TABLE_ROWS] == dg.MetadataValue.text(str(total))
        assert last["dagster/row_count"].value < total
    assert _latest(instance, "scenes", keys[0])["dagster/row_count"].value == item_count(
        run_dirs[0].path)


def test_each_partition_carries_its_research_numbers(small_tree, data_dir, instance):
    """What the Plots tab draws: the numbers of the rows written, on both tables, as floats."""
    run_dirs = find_run_dirs(small_tree)
    keys = [r.key for r in run_dirs]
    instance.add_dynamic_partitions("experiments", keys)
    _run(build_defs(str(small_tree), str(data_dir)), instance, "tables", keys)
    store = ParquetStore(data_dir)
    for key in keys:
        tables = {t: pq.read_table(store.path(t, key)).to_pylist()
                  for t in ("experiments", "scenes")}
        expected = expected_numbers(tables["experiments"], tables["scenes"])
        for table in tables:
            plotted = {k: v.value for k, v in _latest(instance, table, key).items()
                       if isinstance(v, dg.FloatMetadataValue)}
            assert plotted.keys() == expected.keys()
            assert all(abs(plotted[k] - v) <= 1e-12 * max(1, abs(v)) for k, v in expected.items())
    scored = _latest(instance, "experiments", keys[0])  # comp_reg_icl_adept: scored
    assert {"scores.score mean", "scores.score max", "scenes", "decided share"} <= scored.keys()


def test_tracker_materializations_link_to_the_runs(small_tree, data_dir, instance, monkeypatch,
                                                   empty_stores):
    """MLflow: its parent run's page, at ALIGN_TRACK_MLFLOW_UI_URL; Aim: each scene run's
    page, at what `align-track aim-ui` serves when no address is set."""
    monkeypatch.setenv("ALIGN_TRACK_MLFLOW_UI_URL", "http://mlflow.example:8080/")
    run_dir = find_run_dirs(small_tree)[0]
    instance.add_dynamic_partitions("experiments", [run_dir.key])
    defs = build_defs(str(small_tree), str(data_dir))
    for job in ("tables", "mlflow", "aim"):
        _run(defs, instance, job, [run_dir.key])

    client = MlflowClient(f"sqlite:///{data_dir}/mlflow.db")
    experiment = client.get_experiment_by_name("align-system").experiment_id
    (parent,) = client.search_runs([experiment], "tags.run_type = 'parent'")
    mlflow_links = {k: v for k, v in _latest(instance, "mlflow_runs", run_dir.key).items()
                    if isinstance(v, dg.UrlMetadataValue)}
    assert mlflow_links.pop(f"open {PARENTS_ONLY_LABEL}") == dg.MetadataValue.url(
        parents_only_url("http://mlflow.example:8080", experiment))
    assert list(mlflow_links.values()) == [dg.MetadataValue.url(
        f"http://mlflow.example:8080/#/experiments/{experiment}/runs/{parent.info.run_id}")]

    aim_meta = _latest(instance, "aim_runs", run_dir.key)
    scenes = [scene_key(run_dir.key, i) for i in range(item_count(run_dir.path))]
    hashes = complete_run_hashes(manifest_path(data_dir / "aim"), scenes)
    aim_links = {k: v.value for k, v in aim_meta.items() if isinstance(v, dg.UrlMetadataValue)}
    assert sorted(aim_links.values()) == sorted(
        f"http://127.0.0.1:43800/runs/{h}" for h in hashes.values())
    assert len(aim_links) == item_count(run_dir.path)
    assert all(label.startswith("open ") and " | idx" in label for label in aim_links)


def test_the_folders_asset_says_why_its_partitions_read_missing():
    spec = build_defs().resolve_assets_def("experiment_folders").specs_by_key[
        dg.AssetKey("experiment_folders")]
    assert "observed, never materialized" in spec.description
    assert "not a failure" in spec.description
