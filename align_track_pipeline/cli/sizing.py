"""How much runs in parallel: from the cores and the configured stores, not fixed numbers.

- Pools: one per store (`Tracker.pool`, named after the store's address), limited to the
  `max_writers(cores)` of the trackers writing it (Aim: one per core and one more; MLflow:
  one on SQLite, one per core on Postgres or a server; the least of them when several
  trackers share the store), set in the instance whenever `align-track ingest` opens it, so
  the daemon's runs and the CLI's follow the same limits. The largest is the default
  `--workers` (`most_writers`).
- Runs: the `dagster.yaml` that `align-track` writes into DAGSTER_HOME allows one concurrent
  run per core (`instance.instance_config`).
"""

from __future__ import annotations

import dagster as dg

from align_track_pipeline.core.cores import usable_cores
from align_track_pipeline.core.trackers.base import Tracker
from align_track_pipeline.defs.dagster_compat import set_pool_limit


def size_pools(instance: dg.DagsterInstance, trackers: list[Tracker],
               n_cores: int | None = None) -> dict[str, int]:
    """Set each store's pool limit in the instance; returns pool -> limit."""
    limits = pool_limits(trackers, n_cores)
    for pool, limit in limits.items():
        set_pool_limit(instance, pool, limit)
    return limits


def pool_limits(trackers: list[Tracker], n_cores: int | None = None) -> dict[str, int]:
    """Each store's pool -> how many of its trackers' writers may run at once."""
    cores = n_cores or usable_cores()
    limits: dict[str, int] = {}
    for tracker in trackers:
        limit = tracker.max_writers(cores)
        limits[tracker.pool] = min(limits.get(tracker.pool, limit), limit)
    return limits


def most_writers(trackers: list[Tracker], n_cores: int | None = None) -> int:
    """The most worker processes any tracker phase takes: the default `--workers`."""
    return max(pool_limits(trackers, n_cores).values(), default=1)

