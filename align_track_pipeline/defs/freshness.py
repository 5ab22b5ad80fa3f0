"""What changed, decided in one place, from what the Dagster instance recorded.

A run directory's *source version* is the content fingerprint of its input files
(`core.discovery`). The `experiment_folders` observation records it as the folder partition's
data version, and only when it differs from the version last observed (`changed_folders`): that
is the one definition of "this folder changed", used by the sensor, the nightly schedule, the
daemon's automation and `align-track ingest` alike.

Every downstream asset records, as the data version of each partition's materialization, the
version it was built from (`core.versions`): source version + parser version for the tables,
extended with the tracker's code version for each tracker. A partition is fresh for an asset
when the recorded version equals the one its folder has now (`partition_states`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import dagster as dg
from dagster._core.events import DagsterEventType

from align_track_pipeline.core.versions import table_version

FOLDERS = "experiment_folders"
DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
FRESH, STALE, MISSING, FAILED = "fresh", "stale", "missing", "failed"
MATERIALIZATION = DagsterEventType.ASSET_MATERIALIZATION
OBSERVATION = DagsterEventType.ASSET_OBSERVATION

# asset -> the data version a partition must have recorded, given its source version
Expected = Mapping[str, Callable[[str], str]]
TABLE_VERSIONS: Expected = {"experiments": table_version, "scenes": table_version}


def latest_data_versions(
    instance: dg.DagsterInstance, asset: str, event: DagsterEventType = MATERIALIZATION
) -> dict[str, str]:
    """Partition -> data version of its latest materialization (or observation), one query.

    Uses the event-log storage's per-partition tag index (the one Dagster's own staleness
    reads); it is not re-exported by `dagster`, so tests pin its behaviour.
    """
    tags = instance.event_log_storage.get_latest_tags_by_partition(
        dg.AssetKey(asset), event, [DATA_VERSION_TAG]
    )
    return {key: t[DATA_VERSION_TAG] for key, t in tags.items() if DATA_VERSION_TAG in t}


def latest_storage_ids(
    instance: dg.DagsterInstance, asset: str, event: DagsterEventType = MATERIALIZATION
) -> dict[str, int]:
    """Partition -> storage id of its latest materialization (or observation), one query."""
    return dict(instance.event_log_storage.get_latest_storage_id_by_partition(
        dg.AssetKey(asset), event))


def observed_versions(instance: dg.DagsterInstance) -> dict[str, str]:
    """Partition -> the source version the `experiment_folders` observation last recorded."""
    return latest_data_versions(instance, FOLDERS, OBSERVATION)


def changed_folders(current: Mapping[str, str], observed: Mapping[str, str]) -> dict[str, str]:
    """The folders whose source version is not the one last observed (new ones included)."""
    return {key: version for key, version in current.items() if observed.get(key) != version}


def provenance_tags(
    instance: dg.DagsterInstance, code_version: str, upstream: Iterable[str], keys: Iterable[str]
) -> dict[str, dict[str, str]]:
    """Partition -> the provenance tags Dagster writes for a materialization it makes itself
    (code version, and each upstream partition's data version and storage id), so the UI
    shows a partition stale, with the reason, when its folder or an upstream asset changed.
    The assets log their partitions one by one, so they record this themselves."""
    tags: dict[str, dict[str, str]] = {key: {CODE_VERSION_TAG: code_version} for key in keys}
    for asset in upstream:
        event = OBSERVATION if asset == FOLDERS else MATERIALIZATION
        versions = latest_data_versions(instance, asset, event)
        ids = latest_storage_ids(instance, asset, event)
        for key, partition_tags in tags.items():
            if key in versions and key in ids:
                partition_tags[f"dagster/input_data_version/{asset}"] = versions[key]
                partition_tags[f"dagster/input_event_pointer/{asset}"] = str(ids[key])
    return tags


def failed_partitions(instance: dg.DagsterInstance, asset: str) -> set[str]:
    """Partitions whose latest attempt did not produce a materialization."""
    storage = instance.event_log_storage
    attempts = storage.get_latest_asset_partition_materialization_attempts_without_materializations(
        dg.AssetKey(asset)
    )
    return set(attempts)


def partition_states(
    instance: dg.DagsterInstance,
    source_versions: Mapping[str, str],
    expected: Expected = TABLE_VERSIONS,
) -> dict[str, str]:
    """State of each partition across `expected`'s assets (fresh only if fresh for all)."""
    recorded = {asset: latest_data_versions(instance, asset) for asset in expected}
    failed = set().union(*(failed_partitions(instance, asset) for asset in expected))
    states = {}
    for key, source_version in source_versions.items():
        seen = [recorded[asset].get(key) == want(source_version)
                for asset, want in expected.items()]
        present = [key in recorded[asset] for asset in expected]
        if all(seen):
            states[key] = FRESH
        elif key in failed:
            states[key] = FAILED
        elif not all(present):
            states[key] = MISSING
        else:
            states[key] = STALE
    return states
