"""Pins the Dagster switch the CLI's batch runs rely on, and the failed marking it costs."""

import dagster as dg

from align_track_pipeline.cli.instance import one_planned_event_per_asset

PARTS = dg.DynamicPartitionsDefinition(name="parts")


@dg.asset(partitions_def=PARTS, backfill_policy=dg.BackfillPolicy.single_run())
def thing(context: dg.AssetExecutionContext) -> None:
    for key in context.partition_keys:
        if key != "bad":
            context.log_event(dg.AssetMaterialization(asset_key="thing", partition=key))
    raise dg.Failure("bad failed")


def _run(instance) -> int:
    """Planned events stored by a run over a, b, bad, c."""
    job = dg.Definitions(assets=[thing]).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, raise_on_error=False, tags={
        "dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"})
    planned = dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    return len(instance.all_logs(result.run_id, of_type=planned))


def _failed(instance) -> set[str]:
    storage = instance.event_log_storage
    return set(storage.get_latest_asset_partition_materialization_attempts_without_materializations(
        dg.AssetKey("thing")))


def test_one_planned_event_per_asset_and_what_it_costs(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("parts", ["a", "b", "bad", "c"])
        with one_planned_event_per_asset():
            assert _run(instance) == 1
        assert _failed(instance) == set()  # hence the CLI's second, per-partition run
        assert _run(instance) == 4
        assert _failed(instance) == {"bad"}
