"""The fast path of `align-track ingest`: a few changed (or new) folders of a tree already
ingested reach every store in one `ingest_folders` run per contiguous range (the folders'
observation, their tables and every tracker, steps in one process), as the discovery sensor's
runs do, instead of an observation run over the whole tree and a run per store. With a
worker pool, two runs per range: the tables, then the trackers, so that a worker refreshes
the analysis beside the second (`cli.analysis_refresh`).

What changed is told without a Dagster run: a stat signature per run dir against the
fingerprint cache (what the sensor's tick does), then a hash of only the folders whose stat
data changed. A folder whose version equals the one observed costs no run at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from align_track_pipeline.cli.batches import Crashed, InProcess, failures, step_errors
from align_track_pipeline.core.source.discovery import CHANGED_RUNS_MAX, RunDir, Stats
from align_track_pipeline.core.verified import dagster_internals
from align_track_pipeline.defs.dagster_compat import one_planned_event_per_asset
from align_track_pipeline.defs.freshness import (
    FOLDERS,
    FRESH,
    INGEST_FOLDERS_JOB,
    Expected,
    observed_versions,
    partition_states,
)
from align_track_pipeline.defs.partitions import RANGE_END, RANGE_START, contiguous_ranges
from align_track_pipeline.defs.resources import DataStore

# The most changed folders that take the fast path; more go phase by phase (a run per store,
# spread over worker processes), where the stores are written side by side.
FAST_PATH_MAX = CHANGED_RUNS_MAX


@dataclass(frozen=True)
class Peeked:
    """Every run dir's source version, and the keys whose version was never observed."""

    versions: dict[str, str]
    changed: list[str]


def peek_versions(instance: dg.DagsterInstance, run_dirs: list[RunDir],
                  store: DataStore, stats: Stats | None = None) -> Peeked | None:
    """Stat calls for all (unless `stats` has them), hashing for the folders whose stat data
    changed. None: a folder could not be hashed here (the observation run reports it)."""
    cache = store.fingerprints()
    try:
        peeked = stats if stats is not None else cache.peek(run_dirs)
        suspects = [r for r in run_dirs if peeked[r.key][1] is None]
        hashed = cache.versions(suspects)
    except OSError:
        return None
    finally:
        cache.close()
    observed = observed_versions(instance)
    versions = {r.key: hashed.get(r.key) or peeked[r.key][1] for r in run_dirs}
    return Peeked(versions, [k for k, v in versions.items() if observed.get(k) != v])


def fast_path_applies(known: set[str], changed: list[str]) -> bool:
    """A tree already ingested with a few changed folders, on a Dagster version whose
    in-run step unblocking was verified (the sensor's fast path needs the same)."""
    return bool(known) and 0 < len(changed) <= FAST_PATH_MAX and dagster_internals()


@dataclass(frozen=True)
class FastPhase:
    """A store as the fast run writes it: its step, and the versions it must record."""

    job: str
    step: str
    expected: Expected


def run_fast(runner: InProcess, keys: list[str], order: list[str], stores: list[FastPhase],
             versions: dict[str, str], errors: dict[str, str],
             progress: Callable[[str], None],
             tables_done: Callable[[], None] | None = None) -> None:
    """One `ingest_folders` run per contiguous range of `keys`; with `tables_done`, two: one of
    the observation and the tables (`stores[0]`), then `tables_done()`, then, per range whose
    first run succeeded, one of the trackers. Then `versions` holds what the runs observed,
    and `errors` each partition a step that ran left failed. A partition whose trackers did
    not run (its tables failed, for it or another partition of its range) is left to the
    phases."""
    started = time.perf_counter()
    ranges = contiguous_ranges(keys, order)
    split = tables_done is not None
    tables = [FOLDERS, *stores[0].expected] if split else None  # None: the whole job
    runs = [(first, last, _run(runner, first, last, tables, f"run {n}/{len(ranges)}", progress))
            for n, (first, last) in enumerate(ranges, 1)]
    trackers = [asset for phase in stores[1:] for asset in phase.expected]
    if split:
        tables_done()
        runs += [(first, last, _run(runner, first, last, trackers, "trackers' run", progress))
                 for first, last, result in list(runs) if result.success and trackers]
    ran: dict[str, set[str]] = {}  # step -> the keys of the ranges it ran for
    found: dict[str, dict[str, str]] = {}
    crashed: list[tuple[Crashed, str]] = []
    for first, last, result in runs:
        span = set(order[order.index(first):order.index(last) + 1])
        steps = [e.step_key for e in [*result.get_step_success_events(),
                                      *result.get_step_failure_events()]]
        for step_key in steps:
            ran.setdefault(step_key, set()).update(k for k in keys if k in span)
        for event in result.get_step_failure_events():
            step = found.setdefault(event.step_key, {})
            step |= step_errors([event])
            if "*" in step_errors([event]):
                crashed.append((Crashed(result.run_id, INGEST_FOLDERS_JOB, [event.step_key],
                                        [], [k for k in keys if k in span]), event.step_key))
    observed = observed_versions(runner.instance)
    versions |= {k: observed[k] for k in keys if k in observed}
    progress(f"{INGEST_FOLDERS_JOB}: {len(keys)} partitions in "
             f"{time.perf_counter() - started:.2f} s")
    for phase in stores:  # only the keys of the ranges its step ran for: the others' went
        if phase.step in ran:  # to the phases
            _phase_errors(runner.instance, phase, [k for k in keys if k in ran[phase.step]],
                          versions, found.get(phase.step, {}),
                          [c for c, step in crashed if step == phase.step], errors)
    steps = {phase.step for phase in stores}
    for run, step in crashed:  # the observation itself failed: nothing below it ran
        if step not in steps:
            for key in run.keys:
                errors[key] = found[step]["*"]


def _run(runner: InProcess, first: str, last: str, assets: list[str] | None, which: str,
         progress: Callable[[str], None]) -> dg.ExecuteInProcessResult:
    """One `ingest_folders` run of `assets` (None: all of the job's) over `first` .. `last`."""
    progress(f"{INGEST_FOLDERS_JOB} {which}: partitions {first} .. {last}")
    with one_planned_event_per_asset():
        result = runner.run(INGEST_FOLDERS_JOB, raise_on_error=False,
                            tags={RANGE_START: first, RANGE_END: last},
                            assets=None if assets is None else [dg.AssetKey(a) for a in assets])
    failures(result)  # raises KeyboardInterrupt when interrupted
    return result


def _phase_errors(instance: dg.DagsterInstance, phase: FastPhase, keys: list[str],
                  versions: dict[str, str], found: dict[str, str],
                  crashed: list[Crashed], errors: dict[str, str]) -> None:
    """What `ingest._finish` records for a phase, for the store's step of the fast run."""
    after = partition_states(instance, {k: versions[k] for k in keys}, phase.expected)
    unfinished = {k for k in keys if after[k] != FRESH}
    for run in crashed:
        assets = [dg.AssetKey(a) for a in phase.expected]
        Crashed(run.run_id, run.job, run.steps, assets, run.keys).mark_failed(instance,
                                                                             unfinished)
    for key in sorted(unfinished):
        error = found.get(key) or found.get("*") or f"{phase.job}: {after[key]}"
        errors[key] = f"{errors[key]}; {error}" if key in errors else error
