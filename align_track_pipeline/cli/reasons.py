"""What `status` tells about a partition beyond its state: why it failed, or which of its
table files is missing or unreadable.

A failed partition is one whose latest planned materialization never happened; that attempt's
run holds the step failure with each partition's error (the `failures` metadata the assets
attach), or one error for a step that failed as a whole.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from align_track_pipeline.cli.batches import step_errors
from align_track_pipeline.core.tables.health import described
from align_track_pipeline.defs.dagster_compat import failed_attempt_runs
from align_track_pipeline.defs.freshness import FAILED, FRESH, STALE, Expected, broken_table_files
from align_track_pipeline.defs.resources import DataStore


def problems(instance: dg.DagsterInstance, store: DataStore, states: dict[str, str],
             expected: Expected) -> dict[str, tuple[str, str]]:
    """Partition -> (state, what is wrong): a failed partition's error; a fresh one whose
    table file is missing or unreadable is stale (the next `ingest` rewrites the file)."""
    failed = {k for k, s in states.items() if s == FAILED}
    reasons = failure_reasons(instance, expected.keys(), failed)
    told = {k: (FAILED, reasons.get(k, "no error recorded")) for k in failed}
    broken = broken_table_files(instance, store, [k for k, s in states.items() if s == FRESH])
    told |= {k: (STALE, described(files) + " (`align-track ingest` rewrites it)")
             for k, files in broken.items()}
    return told


def failure_reasons(instance: dg.DagsterInstance, assets: Iterable[str],
                    partitions: set[str]) -> dict[str, str]:
    """Partition -> its error, for those of `partitions` that failed an attempt of `assets`
    (the first asset's error where several failed); one event-log read per failed run."""
    reasons: dict[str, str] = {}
    if not partitions:
        return reasons
    errors_of_run: dict[str, dict[str, str]] = {}
    for asset in assets:
        for key, run_id in failed_attempt_runs(instance, asset).items():
            if key not in partitions or key in reasons:
                continue
            if run_id not in errors_of_run:
                errors_of_run[run_id] = _run_errors(instance, run_id)
            errors = errors_of_run[run_id]
            reasons[key] = errors.get(key) or errors.get("*") or f"{asset}: run {run_id} failed"
    return reasons


def _run_errors(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    return step_errors([r.dagster_event for r in records if r.dagster_event])
