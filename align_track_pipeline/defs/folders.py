"""The experiment folders as an observable source asset: each partition's data version is the
content fingerprint of its run directory, recorded only when it changed."""

from __future__ import annotations

import hashlib

import dagster as dg

from align_track_pipeline.core.quiet import quiet_about
from align_track_pipeline.core.source.discovery import RunDir
from align_track_pipeline.defs.dagster_compat import (
    DATA_VERSION_TAG,
    observations_in_one_write,
)
from align_track_pipeline.defs.freshness import (
    FOLDERS,
    INGEST_FOLDERS_JOB,
    changed_folders,
    observed_versions,
)
from align_track_pipeline.defs.partitions import experiment_partitions
from align_track_pipeline.defs.resources import DataStore, ExperimentTree

OBSERVE_JOB = "observe_experiment_folders"
FOLDERS_DESCRIPTION = (
    "The experiment-data tree itself, one partition per run directory. It is observed, never "
    "materialized: an observation records a folder's data version (a hash of its input files), "
    "and a new version marks that partition's tables stale. Dagster's partition bar counts "
    "materializations only, so here it always reads \"0% filled\" and every partition "
    "\"Missing\": that is expected, not a failure. What was ingested shows on `experiments` and "
    "`scenes`; the observation history of a partition shows when its folder last changed."
)


def register_partitions(instance: dg.DagsterInstance, keys: list[str]) -> list[str]:
    """Add the keys the instance does not know yet; returns them."""
    known = set(instance.get_dynamic_partitions(experiment_partitions.name))
    new = [k for k in keys if k not in known]
    if new:
        instance.add_dynamic_partitions(experiment_partitions.name, new)
    return new


def folders_to_observe(
    instance: dg.DagsterInstance, run_dirs: list[RunDir], store: DataStore
) -> dict[str, str]:
    """Key -> stat signature of each folder whose version may differ from the one observed:
    its stat data changed since it was last hashed, or its known hash was never observed.
    Stat calls and two reads, no hashing: cheap enough for every sensor tick."""
    cache = store.fingerprints()
    try:
        peeked = cache.peek(run_dirs)
    finally:
        cache.close()
    observed = observed_versions(instance)
    return {key: stat for key, (stat, version) in peeked.items()
            if version is None or observed.get(key) != version}


def run_key(prefix: str, state: list[str]) -> str:
    """The same state gives the same key, so Dagster launches its run once."""
    return f"{prefix}-{hashlib.blake2b(chr(10).join(state).encode(), digest_size=8).hexdigest()}"


def observation_request(prefix: str, suspects: dict[str, str]) -> dg.RunRequest:
    """A run of the observation job for these folders (key -> stat signature); the same
    folders in the same state give the same run key, so a repeated tick launches nothing."""
    return dg.RunRequest(
        job_name=OBSERVE_JOB,
        run_key=run_key(prefix, [f"{k}:{s}" for k, s in sorted(suspects.items())]),
        tags={"align_track/folders": str(len(suspects))},
    )


def observe_folders(
    context: dg.AssetExecutionContext, tree: ExperimentTree, store: DataStore
) -> dg.DataVersionsByPartition:
    """Registers new run directories as partitions, then records the source version of each
    folder whose version changed (new folders included) and of no other, so an unchanged tree
    writes no event. The discovery sensor's run observes its own partitions only (the sensor
    registered them)."""
    if context.job_name == INGEST_FOLDERS_JOB:
        run_dirs, new = [tree.run_dir(k) for k in context.partition_keys], []
    else:
        run_dirs = tree.run_dirs()
        new = register_partitions(context.instance, [r.key for r in run_dirs])
    cache = store.fingerprints()
    try:
        current = cache.versions(run_dirs)
    finally:
        cache.close()
    changed = changed_folders(current, observed_versions(context.instance))
    context.log.info(f"{len(run_dirs)} folders, {len(new)} new partitions, "
                     f"{len(changed)} new versions")
    # The observations Dagster records for a `DataVersionsByPartition`, logged here so that
    # they are stored in one write (a first observation of a large tree records thousands).
    with observations_in_one_write(context.instance):
        for key, version in changed.items():
            context.log_event(dg.AssetObservation(
                FOLDERS, partition=key, tags={DATA_VERSION_TAG: version}))
    with quiet_about(dg.BetaWarning):
        return dg.DataVersionsByPartition({})


with quiet_about(dg.BetaWarning):  # observable source assets are "beta" in Dagster 1.13
    experiment_folders = dg.observable_source_asset(
        name=FOLDERS,
        partitions_def=experiment_partitions,
        group_name="tree",
        description=FOLDERS_DESCRIPTION,
    )(observe_folders)

# Observing is a run of its own: `materialize()` of an observable source records nothing.
observe_job = dg.define_asset_job(OBSERVE_JOB, selection=[FOLDERS])
