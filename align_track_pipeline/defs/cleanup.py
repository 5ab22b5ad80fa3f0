"""Removed run directories: their partitions go, and their data in every store is deleted or,
with `ALIGN_TRACK_ON_REMOVED=archive`, archived (kept, out of every default view)."""

import time
from contextlib import closing

import dagster as dg

from align_track_pipeline.core.secrets import credentials_masked
from align_track_pipeline.core.settings import current
from align_track_pipeline.core.trackers.base import Tracker
from align_track_pipeline.core.trackers.registry import chosen
from align_track_pipeline.defs.dagster_compat import DATA_VERSION_TAG
from align_track_pipeline.defs.freshness import FOLDERS, REMOVED, latest_data_versions
from align_track_pipeline.defs.resources import DataStore, Trackers
from align_track_pipeline.defs.tables import TABLE_ASSETS

DELETE, ARCHIVE = "delete", "archive"


def removal_mode(configured: str = "") -> str:
    """The configured mode, else `ALIGN_TRACK_ON_REMOVED`, else `delete`."""
    mode = configured or current().get("ALIGN_TRACK_ON_REMOVED")
    if mode not in (DELETE, ARCHIVE):
        raise ValueError(f"removal mode must be {DELETE!r} or {ARCHIVE!r} "
                         f"(ALIGN_TRACK_ON_REMOVED or the op config), not {mode!r}")
    return mode


class CleanupConfig(dg.Config):
    partitions: list[str]
    # `delete`, `archive`, or empty for ALIGN_TRACK_ON_REMOVED (default delete). Archived data
    # is kept: Parquet files under <data dir>/archive/, MLflow runs in the `deleted` lifecycle
    # stage (restorable), Aim runs with Aim's `archived` flag.
    mode: str = ""


def cleanup_config(partitions: list[str]) -> dict:
    """Run config of `cleanup_removed` for these partitions (mode from the environment)."""
    return {"ops": {"remove_partition_data": {"config": {"partitions": partitions}}}}


@dg.op(description="Delete (or archive) the Parquet files and every tracker's runs of removed "
       "partitions.")
def remove_partition_data(
    context: dg.OpExecutionContext, config: CleanupConfig, store: DataStore, trackers: Trackers
) -> None:
    mode = removal_mode(config.mode)
    batch = time.strftime("%Y%m%dT%H%M%S") + f"-{context.run_id[:8]}"
    counts = {"parquet_files": 0}
    for key in config.partitions:
        if mode == ARCHIVE:
            counts["parquet_files"] += sum(store.parquet.archive(t, key, batch)
                                           for t in TABLE_ASSETS)
        else:
            counts["parquet_files"] += sum(store.parquet.delete(t, key) for t in TABLE_ASSETS)
    current = _holding(context.instance, trackers, config.partitions)
    for tracker in current:
        with credentials_masked(context.log.error), closing(tracker.open()) as writer:
            counts[tracker.asset] = sum(writer.remove(key, mode == ARCHIVE)
                                        for key in config.partitions)
    with closing(store.fingerprints()) as cache, closing(store.verified_files()) as files:
        cache.forget(config.partitions)
        files.forget(store.parquet.path(t, key) for key in config.partitions
                     for t in TABLE_ASSETS)  # gone on purpose
    for key in config.partitions:
        for asset in (*TABLE_ASSETS, *(t.asset for t in current)):
            context.log_event(_tombstone(asset, key, mode))
        context.log_event(dg.AssetObservation(
            asset_key=FOLDERS, partition=key, tags={DATA_VERSION_TAG: REMOVED}))
    context.log.info(f"{mode}d {counts} for {len(config.partitions)} partitions")
    context.add_output_metadata(
        counts | {"mode": mode, "partitions": dg.MetadataValue.json(config.partitions)})


def _holding(instance: dg.DagsterInstance, trackers: Trackers,
             partitions: list[str]) -> list[Tracker]:
    """The chosen trackers, and those left out (`--trackers`, ALIGN_TRACK_TRACKERS) that hold
    runs of these partitions: written by an earlier run with other choices, they would
    otherwise keep a removed folder's runs for good."""
    every = trackers.every()
    names = set(chosen(trackers.settings(), [t.name for t in every]))

    def holds(tracker: Tracker) -> bool:
        recorded = latest_data_versions(instance, tracker.asset)
        return any(recorded.get(key, REMOVED) != REMOVED for key in partitions)

    return [t for t in every if t.name in names or holds(t)]


def _tombstone(asset: str, key: str, mode: str) -> dg.AssetMaterialization:
    """Records that the partition's data is gone. Dagster keeps a deleted partition's history
    (there is no per-partition wipe on SQLite or Postgres), so without this a folder added back
    would look fresh and never be ingested again. The folder's observation is reset the same way
    (beside), so a folder put back with the same bytes counts as changed."""
    return dg.AssetMaterialization(
        asset_key=asset, partition=key, tags={DATA_VERSION_TAG: REMOVED},
        metadata={"removed": f"run directory deleted from the tree; its data was {mode}d"})


@dg.job(description="Clean up after run directories that disappeared from the tree.",
        executor_def=dg.in_process_executor)  # one step: no process of its own to start
def cleanup_removed() -> None:
    remove_partition_data()
