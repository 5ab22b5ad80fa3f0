"""The shape every tracker asset shares: batch runs, one event per partition, failures
isolated, fed from the Parquet partition."""

from collections.abc import Callable

import dagster as dg

from .partitions import experiment_partitions
from .resources import DataStore


def tracker_asset(key: str, description: str, code_version: str, kind: str):
    """A partitioned tracker asset downstream of the tables: one run covers a range of
    partitions, each logged by the body (never implicitly)."""
    return dg.multi_asset(
        specs=[
            dg.AssetSpec(
                key,
                description=description,
                deps=["experiments", "scenes"],
                partitions_def=experiment_partitions,
                code_version=code_version,
                kinds={kind},
                group_name="trackers",
                skippable=True,
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


def materialize_each(
    context: dg.AssetExecutionContext,
    materialize: Callable[[str], dg.AssetMaterialization],
) -> None:
    """Call `materialize` for each partition of the run and log its event; a partition that
    raises fails alone, and the run fails at the end naming every failed partition."""
    keys = context.partition_keys
    failures: dict[str, str] = {}
    for n, key in enumerate(keys, 1):
        try:
            event = materialize(key)
        except Exception as exc:  # one partition's failure must not sink the others
            failures[key] = f"{key}: {type(exc).__name__}: {exc}"
            context.log.error(f"[{n}/{len(keys)}] {failures[key]}")
            continue
        context.log_event(event)
    if failures:
        raise dg.Failure(
            description=f"{len(failures)} of {len(keys)} partitions failed: "
            + "; ".join(failures.values()),
            metadata={"failures": dg.MetadataValue.json(failures)},
        )
