"""The shape every tracker asset shares: batch runs, one event per partition, failures
isolated, fed from the Parquet partition."""

from collections.abc import Callable

import dagster as dg

from align_track_pipeline.defs.automation import TRACKERS_CONDITION
from align_track_pipeline.defs.freshness import DATA_VERSION_TAG, provenance_tags
from align_track_pipeline.defs.interrupts import remembered_interrupts
from align_track_pipeline.defs.partitions import experiment_partitions
from align_track_pipeline.defs.resources import DataStore

UPSTREAM = ("experiments", "scenes")
# What one partition's upsert returns: its data version and the metadata shown in the UI.
Logged = tuple[str, dict]


def tracker_asset(key: str, description: str, code_version: str, kind: str):
    """A partitioned tracker asset downstream of the tables: one run covers a range of
    partitions, each logged by the body (never implicitly)."""
    return dg.multi_asset(
        specs=[
            dg.AssetSpec(
                key,
                description=description,
                deps=UPSTREAM,
                partitions_def=experiment_partitions,
                code_version=code_version,
                kinds={kind},
                group_name="trackers",
                skippable=True,
                automation_condition=TRACKERS_CONDITION,
            )
        ],
        partitions_def=experiment_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=kind,  # one writer per store at a time: no duplicates, no "database is locked"
        name=f"log_{key}",
    )


def read_partition(store: DataStore, key: str) -> tuple[list[dict], list[dict]]:
    """The experiments and scenes rows of one partition."""
    experiments = store.parquet.read("experiments", key).to_pylist()
    if not experiments:
        raise ValueError("no experiments rows in the Parquet partition")
    return experiments, store.parquet.read("scenes", key).to_pylist()


def materialize_each(context: dg.AssetExecutionContext, upsert: Callable[[str], Logged]) -> None:
    """Call `upsert` for each partition of the run and log its materialization, with the
    provenance Dagster's staleness reads; a partition that raises fails alone, and the run
    fails at the end naming every failed partition."""
    keys = context.partition_keys
    asset = context.asset_key
    code_version = context.assets_def.code_versions_by_key[asset]
    provenance = provenance_tags(context.instance, code_version, UPSTREAM, keys)
    failures: dict[str, str] = {}
    with remembered_interrupts() as check_interrupt:
        for n, key in enumerate(keys, 1):
            check_interrupt()
            try:
                version, metadata = upsert(key)
            except Exception as exc:  # one partition's failure must not sink the others
                failures[key] = f"{key}: {type(exc).__name__}: {exc}"
                context.log.error(f"[{n}/{len(keys)}] {failures[key]}")
                continue
            context.log_event(dg.AssetMaterialization(
                asset_key=asset, partition=key, metadata=metadata,
                tags=provenance[key] | {DATA_VERSION_TAG: version}))
    if failures:
        raise dg.Failure(
            description=f"{len(failures)} of {len(keys)} partitions failed: "
            + "; ".join(failures.values()),
            metadata={"failures": dg.MetadataValue.json(failures)},
        )
