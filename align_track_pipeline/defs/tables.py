"""The Parquet tables: one parse of a run directory feeds both `experiments` and `scenes`."""

from collections.abc import Iterable, Iterator
from pathlib import Path

import dagster as dg

from align_track_pipeline.core.cores import usable_cores
from align_track_pipeline.core.lifeline import spawn_pool
from align_track_pipeline.core.settings import current
from align_track_pipeline.core.tables.writer import PartitionJob, PartitionWrite, write_partition
from align_track_pipeline.core.verified import dagster_internals
from align_track_pipeline.core.versions import PARSER_VERSION, table_version
from align_track_pipeline.defs.automation import TABLES_CONDITION
from align_track_pipeline.defs.checks import CHECKED_TABLES, TABLE_CHECK_SPECS, check_event
from align_track_pipeline.defs.dagster_compat import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    evaluated_check_outputs,
    record_failed_attempt,
    unblocking_output,
)
from align_track_pipeline.defs.freshness import (
    FOLDERS,
    INGEST_FOLDERS_JOB,
    outdated,
    provenance_tags,
)
from align_track_pipeline.defs.metadata import TableRows, column_schema, partition_metadata
from align_track_pipeline.defs.partitions import batch_policy, experiment_partitions
from align_track_pipeline.defs.progress import Progress
from align_track_pipeline.defs.resources import DataStore, ExperimentTree

TABLE_ASSETS = ("experiments", "scenes")
_DESCRIPTIONS = {
    "experiments": "One row per (run directory, alignment target): config, timing, scores.",
    "scenes": "One row per input_output.json item: probe, choices, decision, timing.",
}
# Below this many partitions a worker pool costs more to start than it saves.
PARALLEL_FROM = 8


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            table,
            description=_DESCRIPTIONS[table],
            deps=[FOLDERS],
            partitions_def=experiment_partitions,
            code_version=PARSER_VERSION,
            kinds={"parquet"},
            group_name="tables",
            skippable=True,  # materializations are logged per partition, never implicitly
            automation_condition=TABLES_CONDITION,
            metadata={"dagster/column_schema": column_schema(table)},
        )
        for table in TABLE_ASSETS
    ],
    check_specs=TABLE_CHECK_SPECS,
    partitions_def=experiment_partitions,
    backfill_policy=batch_policy(),
    can_subset=True,
    name="parse_run_dirs",
)
def parse_run_dirs(
    context: dg.AssetExecutionContext, tree: ExperimentTree, store: DataStore
) -> Iterator[dg.Output]:
    """Parse each run directory of the batch once and write its two Parquet partitions.

    A batch covers many partitions in one run, parsed in worker processes. Each partition gets
    its own materialization event (with its data version) and check result; a partition that
    fails to parse fails alone, reported with the file and the reason, after every other
    partition is written. In the discovery sensor's run, partitions already up to date are
    skipped; the run's tracker steps start once a partition was written.
    """
    keys = context.partition_keys
    selected = tuple(t for t in TABLE_ASSETS if dg.AssetKey(t) in context.selected_asset_keys)
    cache = store.fingerprints()
    try:
        versions = cache.versions(tree.run_dir(k) for k in keys)
    finally:
        cache.close()
    if context.job_name == INGEST_FOLDERS_JOB:
        keys = outdated(context.instance, selected,
                        {k: table_version(versions[k]) for k in keys})
        if len(keys) < len(versions):
            context.log.info(f"{len(versions) - len(keys)} partitions already up to date")
    provenance = provenance_tags(context.instance, PARSER_VERSION, [FOLDERS], keys)
    jobs = [PartitionJob(k, tree.root, store.data_dir, versions[k], selected) for k in keys]
    sizes = TableRows(store.parquet, selected)
    failures: dict[str, str] = {}
    written: list[Path] = []
    scenes = 0
    progress = Progress(context.log, len(keys))
    for n, write in enumerate(_run(jobs), 1):
        if write.error:
            failures[write.key] = write.error
            context.log.error(f"[{n}/{len(keys)}] {write.key}: {write.error}")
            for table in selected:  # marked failed when the run fails, without a re-run
                record_failed_attempt(context, dg.AssetKey(table), write.key)
            continue
        for event in _events(write, provenance[write.key], sizes):
            context.log_event(event)
        written += [Path(table.path) for table in write.tables]
        scenes += write.scenes
        progress.done(n, write.key, f"{scenes} scenes so far")
    _remember_good(store, written)
    if failures:
        raise dg.Failure(
            description=f"{len(failures)} of {len(keys)} partitions failed to parse: "
            + "; ".join(failures.values()),
            metadata={"failures": dg.MetadataValue.json(failures)},
        )
    yield from evaluated_check_outputs(context)
    if written and dagster_internals():  # no event of their own: the partitions were logged
        yield from (unblocking_output(table) for table in selected)  # one by one above


def _remember_good(store: DataStore, paths: list[Path]) -> None:
    """The files just written are good: until their stat data change, checking them costs a
    stat call, not a footer read (`core.tables.health`)."""
    files = store.verified_files()
    try:
        files.record(paths)
    finally:
        files.close()


def _run(jobs: list[PartitionJob]) -> Iterable[PartitionWrite]:
    """Results in partition order; parsing overlaps with event logging in this process."""
    if len(jobs) < PARALLEL_FROM:
        return map(write_partition, jobs)
    return _pooled(jobs)


def _pooled(jobs: list[PartitionJob]) -> Iterator[PartitionWrite]:
    # The setting, else one process per core up to 4.
    workers = current().get("ALIGN_TRACK_PARSE_PROCESSES") or min(usable_cores(), 4)
    with spawn_pool(workers) as pool:  # never outlives this process, even killed
        yield from pool.map(write_partition, jobs, chunksize=4)


def _events(
    write: PartitionWrite, provenance: dict[str, str], sizes: TableRows
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    tags = provenance | {DATA_VERSION_TAG: table_version(write.source_version),
                         CODE_VERSION_TAG: PARSER_VERSION}
    for table in write.tables:
        yield dg.AssetMaterialization(
            asset_key=table.table,
            partition=write.key,
            metadata=partition_metadata(table, write.source_version, sizes.after(table),
                                        write.numbers),
            tags=tags,
        )
        if table.table in CHECKED_TABLES:
            yield check_event(write.key, table)
