"""Per-partition state (fresh / stale / missing / failed) from what the instance recorded.

A partition is fresh when the latest materialization of each table recorded the data version
its run directory has now (`core.parse.data_version`: content fingerprint + parser version).
The CLI, `status` and the sensor all decide "changed" through this module.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
from dagster._core.events import DagsterEventType

from ..core.parse import data_version
from .assets import TABLE_ASSETS

DATA_VERSION_TAG = "dagster/data_version"
FRESH, STALE, MISSING, FAILED = "fresh", "stale", "missing", "failed"


def latest_data_versions(instance: dg.DagsterInstance, asset: str) -> dict[str, str]:
    """Partition -> data version of its latest materialization, in one query.

    Uses the event-log storage's per-partition tag index (the one Dagster's own staleness
    reads); it is not re-exported by `dagster`, so tests pin its behaviour.
    """
    tags = instance.event_log_storage.get_latest_tags_by_partition(
        dg.AssetKey(asset), DagsterEventType.ASSET_MATERIALIZATION, [DATA_VERSION_TAG]
    )
    return {key: t[DATA_VERSION_TAG] for key, t in tags.items() if DATA_VERSION_TAG in t}


def failed_partitions(instance: dg.DagsterInstance, asset: str) -> set[str]:
    """Partitions whose latest attempt did not produce a materialization."""
    storage = instance.event_log_storage
    attempts = storage.get_latest_asset_partition_materialization_attempts_without_materializations(
        dg.AssetKey(asset)
    )
    return set(attempts)


def partition_states(
    instance: dg.DagsterInstance, source_versions: Mapping[str, str]
) -> dict[str, str]:
    """State of each partition, given the current source version of each run directory."""
    recorded = {asset: latest_data_versions(instance, asset) for asset in TABLE_ASSETS}
    failed = set().union(*(failed_partitions(instance, asset) for asset in TABLE_ASSETS))
    states = {}
    for key, source_version in source_versions.items():
        wanted = data_version(source_version)
        seen = [recorded[asset].get(key) for asset in TABLE_ASSETS]
        if all(v == wanted for v in seen):
            states[key] = FRESH
        elif key in failed:
            states[key] = FAILED
        elif any(v is None for v in seen):
            states[key] = MISSING
        else:
            states[key] = STALE
    return states
