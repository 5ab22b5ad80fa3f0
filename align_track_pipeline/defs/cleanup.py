"""Removed run directories: their partitions go, and so does their data in every store."""

import dagster as dg

from .freshness import DATA_VERSION_TAG, FOLDERS
from .resources import AimTarget, DataStore, MlflowTarget

TABLES = ("experiments", "scenes")
ASSETS = (*TABLES, "mlflow_runs", "aim_runs")
REMOVED = "removed"


class CleanupConfig(dg.Config):
    partitions: list[str]


@dg.op(description="Delete the Parquet files, MLflow runs and Aim runs of removed partitions.")
def remove_partition_data(
    context: dg.OpExecutionContext,
    config: CleanupConfig,
    store: DataStore,
    mlflow: MlflowTarget,
    aim: AimTarget,
) -> None:
    mlflow_writer, aim_writer = mlflow.writer(), aim.writer()
    cache = store.fingerprints()
    counts = {"parquet_files": 0, "mlflow_runs": 0, "aim_runs": 0}
    try:
        for key in config.partitions:
            counts["parquet_files"] += sum(store.parquet.delete(t, key) for t in TABLES)
            counts["mlflow_runs"] += mlflow_writer.delete_partition(key)
            counts["aim_runs"] += aim_writer.delete_partition(key)
        cache.forget(config.partitions)
        for key in config.partitions:
            for asset in ASSETS:
                context.log_event(_tombstone(asset, key))
            context.log_event(dg.AssetObservation(
                asset_key=FOLDERS, partition=key, tags={DATA_VERSION_TAG: REMOVED}))
    finally:
        aim_writer.close()
        cache.close()
    context.log.info(f"removed {counts} for {len(config.partitions)} partitions")
    context.add_output_metadata(counts | {"partitions": dg.MetadataValue.json(config.partitions)})


def _tombstone(asset: str, key: str) -> dg.AssetMaterialization:
    """Records that the partition's data is gone. Dagster keeps a deleted partition's history
    (there is no per-partition wipe on SQLite or Postgres), so without this a folder added back
    would look fresh and never be ingested again. The folder's observation is reset the same way
    (beside), so a folder put back with the same bytes counts as changed."""
    return dg.AssetMaterialization(
        asset_key=asset, partition=key, tags={DATA_VERSION_TAG: REMOVED},
        metadata={"removed": "run directory deleted from the tree; its data was removed"})


@dg.job(description="Clean up after run directories that disappeared from the tree.")
def cleanup_removed() -> None:
    remove_partition_data()
