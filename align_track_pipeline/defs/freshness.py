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

A fresh version is not enough for the tables: their partition file must still be there and
readable (`broken_table_files`). A broken one is rewritten with the same data version, so the
trackers, fed the same content, stay fresh.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

import dagster as dg

from align_track_pipeline.core.tables.health import BrokenFile
from align_track_pipeline.core.versions import table_version
from align_track_pipeline.defs.dagster_compat import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    MATERIALIZATION,
    OBSERVATION,
    failed_partitions,
    input_tags,
    latest_storage_ids,
    latest_tag_by_partition,
)
from align_track_pipeline.defs.resources import DataStore

FOLDERS = "experiment_folders"
# The discovery sensor's run (`jobs.ingest_folders_job`): it skips what is already up to date.
INGEST_FOLDERS_JOB = "ingest_folders"
FRESH, STALE, MISSING, FAILED = "fresh", "stale", "missing", "failed"
REMOVED = "removed"  # the data version a cleaned-up partition records (`cleanup`)

# asset -> the data version a partition must have recorded, given its source version
Expected = Mapping[str, Callable[[str], str]]
TABLE_VERSIONS: Expected = {"experiments": table_version, "scenes": table_version}


def latest_data_versions(
    instance: dg.DagsterInstance, asset: str, event: dg.DagsterEventType = MATERIALIZATION,
    partitions: Collection[str] | None = None,
) -> dict[str, str]:
    """Partition -> data version of its latest materialization (or observation), one query;
    of `partitions` only, when given."""
    return latest_tag_by_partition(instance, asset, event, DATA_VERSION_TAG, partitions)


def observed_versions(instance: dg.DagsterInstance) -> dict[str, str]:
    """Partition -> the source version the `experiment_folders` observation last recorded."""
    return latest_data_versions(instance, FOLDERS, OBSERVATION)


def changed_folders(current: Mapping[str, str], observed: Mapping[str, str]) -> dict[str, str]:
    """The folders whose source version is not the one last observed (new ones included)."""
    return {key: version for key, version in current.items() if observed.get(key) != version}


def outdated(instance: dg.DagsterInstance, assets: Iterable[str],
             wanted: Mapping[str, str]) -> list[str]:
    """The partitions (of `wanted`: key -> the data version an up-to-date one records) that
    any of `assets` has not recorded at that version, in `wanted`'s order."""
    recorded = [latest_data_versions(instance, asset) for asset in assets]
    return [key for key, version in wanted.items()
            if any(r.get(key) != version for r in recorded)]


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
        versions = latest_data_versions(instance, asset, event, tags)
        ids = latest_storage_ids(instance, asset, event, tags)
        for key, partition_tags in tags.items():
            if key in versions and key in ids:
                partition_tags |= input_tags(asset, versions[key], ids[key])
    return tags


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


def broken_table_files(instance: dg.DagsterInstance, store: DataStore,
                       keys: Iterable[str]) -> dict[str, list[BrokenFile]]:
    """Partition -> its table files that Dagster recorded as written but that are missing or
    unreadable now. A stat call per file; a footer read only for a file whose stat data
    changed since it was last known good (`core.tables.health`)."""
    keys = set(keys)
    expected = {}
    for table in TABLE_VERSIONS:
        recorded = latest_data_versions(instance, table)
        for key in keys & recorded.keys():
            if recorded[key] != REMOVED:  # a tombstone: its files are meant to be gone
                expected[store.parquet.path(table, key)] = key
    files = store.verified_files()
    try:
        found = files.broken(expected)
    finally:
        files.close()
    broken: dict[str, list[BrokenFile]] = {}
    for bad in found:
        broken.setdefault(expected[bad.path], []).append(bad)
    return broken
