"""Discovery sensor and the cleanup of removed folders, on a real instance and real stores."""

import json
import shutil

import dagster as dg
from mlflow import MlflowClient

from align_track_pipeline.cli import main
from align_track_pipeline.core.discovery import find_run_dirs
from align_track_pipeline.definitions import build_defs
from align_track_pipeline.defs.instance import open_instance
from align_track_pipeline.defs.sensors import experiment_folder_sensor
from tests.conftest import SAMPLE_TREE, aim_runs_seen_by_a_fresh_process, item_count


def _tick(defs, instance) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, definitions=defs)
    return experiment_folder_sensor(context, tree=defs.resources["tree"])


def _apply(instance, result: dg.SensorResult) -> None:
    for request in result.dynamic_partitions_requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def test_sensor_adds_new_folders_and_deletes_gone_ones(tmp_path, sample_tree, data_dir):
    defs = build_defs(str(sample_tree), str(data_dir))
    keys = sorted(r.key for r in find_run_dirs(sample_tree))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        first = _tick(defs, instance)
        assert first.dynamic_partitions_requests[0].partition_keys == keys
        assert first.run_requests == []
        _apply(instance, first)
        assert _tick(defs, instance).dynamic_partitions_requests == []  # nothing changed

        gone = find_run_dirs(sample_tree)[0]
        shutil.rmtree(gone.path)
        result = _tick(defs, instance)
        (delete,) = result.dynamic_partitions_requests
        assert isinstance(delete, dg.DeleteDynamicPartitionsRequest)
        assert delete.partition_keys == [gone.key]
        (request,) = result.run_requests
        config = request.run_config["ops"]["remove_partition_data"]["config"]
        assert config == {"partitions": [gone.key]}


def test_cleanup_removes_a_folders_data_from_every_store(capsys, sample_tree, data_dir):
    assert main(["ingest", "--experiments-dir", str(sample_tree), "--data-dir", str(data_dir),
                 "--json"]) == 0
    capsys.readouterr()
    gone = next(r for r in find_run_dirs(sample_tree) if r.rel_path == "random/unaligned")
    shutil.rmtree(gone.path)
    defs = build_defs(str(sample_tree), str(data_dir))
    with open_instance(data_dir) as instance:
        result = _tick(defs, instance)
        _apply(instance, result)
        (request,) = result.run_requests
        job = defs.resolve_job_def("cleanup_removed")
        assert job.execute_in_process(instance=instance, run_config=request.run_config).success
        assert gone.key not in instance.get_dynamic_partitions("experiments")

    parquet = data_dir / "parquet"
    assert not any(gone.key.replace("/", "%2F") in p.name for p in parquet.rglob("*.parquet"))
    client = MlflowClient(f"sqlite:///{data_dir}/mlflow.db")
    exp = client.get_experiment_by_name("align-system")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    assert runs and not any(r.data.tags["partition_key"] == gone.key for r in runs)
    seen = aim_runs_seen_by_a_fresh_process(data_dir / "aim")
    assert seen and not any(r["params"]["partition_key"] == gone.key for r in seen)

    shutil.copytree(SAMPLE_TREE / gone.rel_path, gone.path)  # the folder comes back
    assert main(["ingest", "--experiments-dir", str(sample_tree), "--data-dir", str(data_dir),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["materialized"] == [gone.key]
    seen = aim_runs_seen_by_a_fresh_process(data_dir / "aim")
    assert sum(r["params"]["partition_key"] == gone.key for r in seen) == item_count(gone.path)
