"""Dagster internals only the tests use, each in one small function (as
`align_track_pipeline/defs/dagster_compat.py` does for the pipeline's own): reading what the UI
would show, claiming a pool slot as a run worker does, and resetting Dagster's defs-state
context between tests. tests/defs/test_dagster_compat.py pins each one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from dagster._core.definitions.data_version import CachingStaleStatusResolver
from dagster._core.loader import LoadingContextForTest
from dagster._core.storage.defs_state.base import DefsStateStorage, set_defs_state_storage


def active_pool_slots(instance: dg.DagsterInstance, pool: str) -> int:
    return instance.event_log_storage.get_concurrency_info(pool).active_slot_count


def claim_pool_slot(instance: dg.DagsterInstance, pool: str, run_id: str, step: str) -> bool:
    """Claim a slot of `pool` for a run's step, as a run worker does before the step starts
    (which sets the default limit only on a pool that has no limit of its own)."""
    storage = instance.event_log_storage
    info = storage.get_concurrency_info(pool)
    if info.using_default_limit or not info.slot_count:
        storage.initialize_concurrency_limit_to_default(pool)
    return storage.claim_concurrency_slot(pool, run_id, step).is_claimed


def stale_status(defs: dg.Definitions, instance: dg.DagsterInstance, asset: str,
                 partition: str | None) -> tuple[str, list[str]]:
    """What the UI shows for a partition: Dagster's stale status and its root causes."""
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(),
                                          LoadingContextForTest(instance))
    key = dg.AssetKey(asset)
    causes = resolver.get_stale_root_causes(key, partition)
    return resolver.get_status(key, partition).value, sorted(c.reason for c in causes)


@contextmanager
def no_defs_state_storage() -> Iterator[None]:
    """A block that starts with no current defs-state storage and leaves none behind.

    Dagster keeps the current one in a context variable that `with instance:` sets; some flows
    leave it set to an instance that is gone (after tests/defs/test_sensors.py it points at a
    disposed instance), and the next Definitions load in the same thread then fails with
    "Attempted to resolve undefined DagsterInstance weakref". Tests run each in such a block.
    """
    with set_defs_state_storage(None):
        yield


def current_defs_state_storage() -> DefsStateStorage | None:
    return DefsStateStorage.get()
