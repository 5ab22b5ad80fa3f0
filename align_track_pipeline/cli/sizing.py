"""How much runs in parallel: from the cores and the configured stores, not fixed numbers.

- Pools: each tracker's pool gets the tracker's `max_writers(cores)` (Aim: one per core; MLflow:
  one on SQLite, one per core on Postgres or a server), set in the instance whenever
  `align-track ingest` opens it, so the daemon's runs and the CLI's follow the same limits.
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
    """Set each tracker's pool limit in the instance; returns pool -> limit."""
    limits = {t.name: t.max_writers(n_cores or usable_cores()) for t in trackers}
    for pool, limit in limits.items():
        set_pool_limit(instance, pool, limit)
    return limits

