"""One asset per registered tracker (`<name>_runs`), all of one shape: batch runs over a range
of partitions, fed from the Parquet partition, one materialization per partition, failures
isolated."""

import traceback
from collections.abc import Iterator
from contextlib import closing

import dagster as dg

from align_track_pipeline.core.secrets import credentials_masked, mask_text
from align_track_pipeline.core.source.discovery import rel_path_of
from align_track_pipeline.core.trackers.base import Partition, Tracker, TrackerWriter, WriteReport
from align_track_pipeline.defs.automation import TRACKERS_CONDITION
from align_track_pipeline.defs.dagster_compat import DATA_VERSION_TAG, record_failed_attempt
from align_track_pipeline.defs.freshness import provenance_tags
from align_track_pipeline.defs.interrupts import remembered_interrupts
from align_track_pipeline.defs.partitions import batch_policy, experiment_partitions
from align_track_pipeline.defs.progress import Progress
from align_track_pipeline.defs.resources import DataStore, ExperimentTree, Trackers
from align_track_pipeline.defs.tables import TABLE_ASSETS


def tracker_asset(tracker: Tracker) -> dg.AssetsDefinition:
    """The partitioned asset of one tracker, downstream of the tables; its pool (its store's,
    shared with every tracker writing that store) keeps the writers of the store to what the
    store takes (`cli/sizing.py`: one on SQLite, one per core for Aim, Postgres or a
    server)."""

    @dg.multi_asset(
        specs=[dg.AssetSpec(
            tracker.asset,
            description=tracker.description,
            deps=TABLE_ASSETS,
            partitions_def=experiment_partitions,
            code_version=tracker.code_version(),
            kinds={tracker.name},
            group_name="trackers",
            skippable=True,  # materializations are logged per partition, never implicitly
            automation_condition=TRACKERS_CONDITION,
        )],
        partitions_def=experiment_partitions,
        backfill_policy=batch_policy(),
        pool=tracker.pool,
        name=f"log_{tracker.asset}",
    )
    def log_runs(context: dg.AssetExecutionContext, tree: ExperimentTree, store: DataStore,
                 trackers: Trackers) -> Iterator[dg.Output]:
        """Upsert each partition's runs: unchanged ones are kept, changed ones replaced,
        half-written ones repaired."""
        current = trackers.get(tracker.name)
        with credentials_masked(context.log.error), closing(current.open()) as writer:
            materialize_each(context, current, writer, tree, store)
        yield from ()

    return log_runs


def read_partition(tree: ExperimentTree, store: DataStore, key: str) -> Partition:
    """One partition's rows from the Parquet tables."""
    experiments = store.parquet.read("experiments", key).to_pylist()
    if not experiments:
        raise ValueError("no experiments rows in the Parquet partition")
    scenes = store.parquet.read("scenes", key).to_pylist()
    return Partition(key, tree.root_path / rel_path_of(key), experiments, scenes)


def report_metadata(report: WriteReport) -> dict[str, object]:
    """What a person wants to see about a partition's runs in the UI."""
    metadata: dict[str, object] = {
        "runs": report.runs, "written": report.written, "unchanged": report.unchanged,
        "deleted": report.deleted}
    for name, value in report.details.items():
        metadata[name] = (dg.MetadataValue.json(value) if isinstance(value, list | dict)
                          else value)
    for label, url in report.links.items():
        metadata[f"open {label}"] = dg.MetadataValue.url(url)
    return metadata


def materialize_each(context: dg.AssetExecutionContext, tracker: Tracker, writer: TrackerWriter,
                     tree: ExperimentTree, store: DataStore) -> None:
    """Upsert each partition of the run and log its materialization, with the
    provenance Dagster's staleness reads; a partition that raises fails alone, and the run
    fails at the end naming every failed partition."""
    keys = context.partition_keys
    asset = context.asset_key
    provenance = provenance_tags(context.instance, tracker.code_version(), TABLE_ASSETS, keys)
    failures: dict[str, str] = {}
    progress = Progress(context.log, len(keys))
    with remembered_interrupts() as check_interrupt:
        for n, key in enumerate(keys, 1):
            check_interrupt()
            try:
                partition = read_partition(tree, store, key)
                report = writer.upsert(partition)
            except Exception as exc:  # one partition's failure must not sink the others
                failures[key] = mask_text(f"{key}: {tracker.name}: {type(exc).__name__}: {exc}")
                context.log.error(f"[{n}/{len(keys)}] {failures[key]}")
                context.log.debug(mask_text(traceback.format_exc()))  # where, in the run's log
                record_failed_attempt(context, asset, key)  # failed when the run fails
                continue
            version = tracker.data_version(partition.source_version)
            context.log_event(dg.AssetMaterialization(
                asset_key=asset, partition=key, metadata=report_metadata(report),
                tags=provenance[key] | {DATA_VERSION_TAG: version}))
            progress.done(n, key, f"{report.runs} runs, {report.written} written")
    if failures:
        raise dg.Failure(
            description=f"{len(failures)} of {len(keys)} partitions failed: "
            + "; ".join(failures.values()),
            metadata={"failures": dg.MetadataValue.json(failures)},
        )
