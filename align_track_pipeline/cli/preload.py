"""What the fork server the ingest's worker processes are forked from imports once, so that
each worker starts with it loaded (`core.lifeline.preloaded_pool`). No Dagster import here:
`cli.ahead` starts that server before this process imports Dagster."""

from __future__ import annotations

from align_track_pipeline.core.verified import dagster_internals

# What `_start_worker` and an Aim batch import (Dagster with the definitions, Aim), and the
# main module (so a worker need not import it again); on a verified Dagster also the
# instance's SQLite storage (`preload`). A name that no longer imports is skipped (the
# workers import what they need). MLflow is left to the workers that write it (on a server or
# Postgres).
WORKER_PRELOAD = ("__main__", "align_track_pipeline.cli.workers",
                  "align_track_pipeline.definitions", "align_track_pipeline.cli.instance")
PRELOAD = (*WORKER_PRELOAD, "align_track_pipeline.core.trackers.aim.writer")

# For the analysis refresh of the fast path instead (`cli.analysis_refresh`): its worker
# writes no Aim run, and finds pandas, pyarrow and matplotlib imported.
ANALYSIS_PRELOAD = (*WORKER_PRELOAD, "align_track_pipeline.cli.analysis_refresh", "pandas",
                    "pyarrow.parquet", "matplotlib.figure", "matplotlib.backends.backend_svg")

# Dagster's SQLite event-log and run storage, which an instance on a data dir opens: private
# modules, imported ahead of time on a verified Dagster only.
_SQLITE_STORAGE_MODULES = ("dagster._core.storage.event_log.sqlite.sqlite_event_log",
                           "dagster._core.storage.runs.sqlite.sqlite_run_storage")


def sqlite_storage_modules() -> tuple[str, ...]:
    """The private modules of the instance's SQLite storage, to import ahead of their use;
    none on an unverified Dagster (they may have moved: the public `dagster` imports them)."""
    return _SQLITE_STORAGE_MODULES if dagster_internals() else ()


def preload(modules: tuple[str, ...] = PRELOAD) -> list[str]:
    """`modules`, and Dagster's private storage modules where Dagster is a verified version."""
    return [*modules, *sqlite_storage_modules()]
