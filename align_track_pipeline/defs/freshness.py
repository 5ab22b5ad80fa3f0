"""Per-partition state (fresh / stale / missing / failed) from what the instance recorded.

Every asset records, as the Dagster data version of each partition's materialization, the
version it was built from: `core.parse.data_version` (content fingerprint + parser version) for
the tables, extended with the tracker's layout for MLflow and Aim. A partition is fresh for an
asset when the recorded version equals the one its run directory has now. The CLI, `status`
and the sensors decide "changed" through this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import dagster as dg
from dagster._core.events import DagsterEventType

from ..core.parse import data_version

DATA_VERSION_TAG = "dagster/data_version"
FRESH, STALE, MISSING, FAILED = "fresh", "stale", "missing", "failed"

# asset -> the data version a partition must have recorded, given its source version
Expected = Mapping[str, Callable[[str], str]]
TABLE_VERSIONS: Expected = {"experiments": data_version, "scenes": data_version}


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
