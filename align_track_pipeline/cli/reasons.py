"""What `status` tells about a partition beyond its state: why it failed, which of its
table files is missing or unreadable, or which store lost its runs and has not had them back.

A failed partition is one whose latest planned materialization never happened; that attempt's
run holds the step failure with each partition's error (the `failures` metadata the assets
attach), or one error for a step that failed as a whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import dagster as dg

from align_track_pipeline.cli.batches import step_errors
from align_track_pipeline.core.tables.health import described
from align_track_pipeline.core.trackers.base import Tracker
from align_track_pipeline.defs.dagster_compat import failed_attempt_runs
from align_track_pipeline.defs.freshness import FAILED, FRESH, STALE, Expected, broken_table_files
from align_track_pipeline.defs.resources import DataStore
from align_track_pipeline.defs.store_checks import pending_repairs
from align_track_pipeline.defs.store_repairs import REPAIR_TAG, open_ranges


def problems(instance: dg.DagsterInstance, store: DataStore, states: dict[str, str],
             expected: Expected, trackers: list[Tracker]) -> dict[str, tuple[str, str]]:
    """Partition -> (state, what is wrong): a failed partition's error; a fresh one whose
    table file is missing or unreadable, or whose runs a store lost and no repair wrote
    back yet, is stale (the next `ingest` writes it)."""
    failed = {k for k, s in states.items() if s == FAILED}
    reasons = failure_reasons(instance, expected.keys(), failed)
    told = {k: (FAILED, reasons.get(k, "no error recorded")) for k in failed}
    broken = broken_table_files(instance, store, [k for k, s in states.items() if s == FRESH])
    told |= {k: (STALE, described(files) + " (`align-track ingest` rewrites it)")
             for k, files in broken.items()}
    return unrepaired(trackers, Path(store.data_dir), states) | told


def unrepaired(trackers: list[Tracker], data_dir: Path,
               states: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Partition -> (stale, why), for a partition fresh by its versions whose runs a store
    check found lost (a store reset, an experiment made again on a server) and which no
    repair has written back yet: a repair whose run keeps failing is seen here, not only in
    the daemon's log."""
    told: dict[str, tuple[str, str]] = {}
    by_name = {t.name: t for t in trackers}
    for name, repair in pending_repairs(trackers, data_dir).items():
        for keys, attempt in open_ranges(repair):
            runs = f"{attempt + 1} run{'s' if attempt else ''}"
            why = (f"{name}: its runs were gone from {by_name[name].store()} (reset, or the "
                   f"experiment made again) and are not known to be written back yet: the "
                   f"sensor's repair asked for {runs} (tag {REPAIR_TAG}) and ends once one "
                   f"succeeded; `align-track ingest` writes them now")
            told |= {k: (STALE, why) for k in keys if states.get(k) == FRESH and k not in told}
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
