"""Bring every store up to date with the tree, in-process: what `align-track ingest` does.

The same mechanism as the daemon: the folders of removed run directories are cleaned up, the
`experiment_folders` observation registers new run directories and records the versions that
changed, then each phase (tables, then each tracker) runs over the partitions whose recorded
version is not the observed one, one run per contiguous partition range (one run for a cold
tree), never one run per partition; with `--workers N` a tracker phase's partitions are cut
into contiguous batches run by up to N worker processes at once, as many as the phase's store
takes (its pool limit, see `sizing`), while the tables stay in this process (`Phase.spread`);
the phases of trackers on different stores run side by side
then, a single-writer store's in this process, and those of trackers sharing a store (one pool)
one after another. A partition that fails the tables skips the trackers; one that fails
a tracker is still written to the others; each is reported with its errors. After the tables
changed, the `analysis` assets (`scene_comparison`, `dashboard`) are brought up to date in one
run, as the automation does (`analysis: updated` when the comparison file was updated from the
changed partition files, `analysis: rebuilt` when it was rebuilt from all of them).

A run over N partitions stores N "planned" events per asset before it starts (about 10 ms each
on SQLite). The batch runs here store one per asset instead, and record a planned event only for
each partition that failed, so Dagster still marks exactly those failed (in the UI, `status`
and the automation) and no partition is run twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from align_track_pipeline.cli.ahead import Ahead
from align_track_pipeline.cli.analysis_refresh import AnalysisRefresh, tables_written
from align_track_pipeline.cli.batches import Found, InProcess, run_ranges, split
from align_track_pipeline.cli.fast_path import (
    FastPhase,
    fast_path_applies,
    peek_versions,
    run_fast,
)
from align_track_pipeline.cli.liveness import fail_abandoned_runs, heartbeat, wait_for_pool
from align_track_pipeline.cli.preload import ANALYSIS_PRELOAD
from align_track_pipeline.cli.sizing import size_pools
from align_track_pipeline.cli.workers import Parallel, WorkerPool
from align_track_pipeline.core.guard import (
    check_first_tree,
    check_removals,
    remember_tree,
    removals,
)
from align_track_pipeline.core.source.discovery import RunDir, scan_tree
from align_track_pipeline.core.tables.health import described
from align_track_pipeline.core.trackers.base import Tracker, preload_writers
from align_track_pipeline.core.trackers.sqlite_value import NONE
from align_track_pipeline.defs.cleanup import cleanup_config, cleanup_removed
from align_track_pipeline.defs.dagster_compat import (
    one_planned_event_per_asset,
)
from align_track_pipeline.defs.folders import observe_job, register_partitions
from align_track_pipeline.defs.freshness import (
    FRESH,
    STALE,
    TABLE_VERSIONS,
    Expected,
    broken_table_files,
    observed_versions,
    partition_states,
)
from align_track_pipeline.defs.jobs import TABLES_JOB
from align_track_pipeline.defs.partitions import experiment_partitions
from align_track_pipeline.defs.resources import DataStore
from align_track_pipeline.defs.store_checks import (
    end_repairs,
    held_partitions,
    pending_repairs,
    remember_generations,
    remote_generations,
    store_resets,
)
from align_track_pipeline.defs.store_repairs import Repair, repair_partitions

PARTITIONS = experiment_partitions.name


@dataclass(frozen=True)
class Phase:
    job: str
    expected: Expected
    pool: str | None = None  # its store's pool (`Tracker.pool`); the tables have none
    # Over the workers, or in this process: the tables' parse pool already spreads their
    # parsing over the cores, and their runs in two workers took longer (docs/performance.md).
    spread: bool = True


def phases(trackers: list[Tracker]) -> list[Phase]:
    """The order stores are brought up to date: the tables, then each tracker (fed from the
    tables) in the order of the registry."""
    return [Phase(TABLES_JOB, TABLE_VERSIONS, spread=False),
            *(Phase(t.name, {t.asset: t.data_version}, t.pool) for t in trackers)]


def all_expected(trackers: list[Tracker]) -> Expected:
    return {asset: want for phase in phases(trackers) for asset, want in phase.expected.items()}


@dataclass
class IngestReport:
    """Filled in as the ingest goes; None: not known yet (the ingest stopped before)."""

    discovered: int | None = None
    materialized: list[str] | None = None
    fresh: list[str] | None = None
    failed: list[dict[str, str]] | None = None
    removed: list[str] | None = None
    # Folders that changed while they were read: not failures, ingested again next pass.
    changed: list[str] | None = None
    # Why the analysis (the comparison file, the dashboard) failed; None: it did not.
    analysis_failed: str | None = None

    def as_json(self) -> dict:
        """The known keys, in the order of a complete report."""
        found = {"discovered": self.discovered, "materialized": self.materialized,
                 "fresh": self.fresh, "failed": self.failed, "removed": self.removed,
                 "changed": self.changed, "analysis_failed": self.analysis_failed}
        return {k: v for k, v in found.items() if v is not None}


def source_versions(run_dirs: list[RunDir], data_dir: Path) -> dict[str, str]:
    cache = DataStore(data_dir=str(data_dir)).fingerprints()
    try:
        return cache.versions(run_dirs)
    finally:
        cache.close()


def stored_partitions(store: DataStore, progress: Callable[[str], None]) -> set[str]:
    """For an instance that knows no partition (deleted or lost): those the tables hold, for
    removals, as the sensor takes them."""
    stored = store.parquet.stored_keys()
    if stored:
        progress(f"the Dagster instance knows no partition, the tables hold {len(stored)}: "
                 "taking those as known (a folder gone from the tree is removed)")
    return stored


def remove_gone(runner: InProcess, gone: list[str]) -> list[str]:
    """Delete these partitions, whose folder is gone, and their data in every store (what the
    sensor requests from the daemon); returns their keys."""
    if gone:
        try:
            runner.run(cleanup_removed.name, cleanup_config(gone))
        except KeyboardInterrupt as stopped:  # the stores are part done: say how to finish
            raise KeyboardInterrupt(
                f"{stopped}: removing the data of {len(gone)} folders gone from the tree was "
                "cut short; the next `ingest` finishes it, with --confirm-removals if it "
                "asks") from None
        for key in gone:
            runner.instance.delete_dynamic_partition(PARTITIONS, key)
    return gone


def observe(runner: InProcess, run_dirs: list[RunDir]) -> dict[str, str]:
    """Run the `experiment_folders` observation; partition -> observed source version."""
    runner.run(observe_job.name)
    observed = observed_versions(runner.instance)
    return {r.key: observed[r.key] for r in run_dirs if r.key in observed}


def _observe(runner: InProcess, run_dirs: list[RunDir], known: set[str],
             progress: Callable[[str], None], ahead: Ahead
             ) -> tuple[dict[str, str], list[str]]:
    """Partition -> source version, and the partitions for the fast path (`fast_path`): a
    few changed folders are observed by its run; otherwise by an observation of the tree.
    `ahead.peeked`: the cache peeked at already (`cli.ahead`), counted in the time told."""
    stats = ahead.peeked
    started = time.perf_counter() - (ahead.peek_seconds if stats is not None else 0.0)
    peeked = peek_versions(runner.instance, run_dirs, runner.defs.resources["store"], stats)
    if peeked is not None and not peeked.changed:
        progress(f"observe: {len(run_dirs)} partitions by their stat data, none changed, in "
                 f"{time.perf_counter() - started:.2f} s")
        return peeked.versions, []
    if peeked is not None and fast_path_applies(known, peeked.changed):
        register_partitions(runner.instance, [r.key for r in run_dirs])
        progress(f"observe: {len(run_dirs)} partitions by their stat data, "
                 f"{len(peeked.changed)} changed, in {time.perf_counter() - started:.2f} s")
        return peeked.versions, peeked.changed
    versions = observe(runner, run_dirs)
    progress(f"observe: {len(run_dirs)} partitions in {time.perf_counter() - started:.2f} s")
    return versions, []


def _run_fast(runner: InProcess, keys: list[str], trackers: list[Tracker],
              versions: dict[str, str], errors: dict[str, str],
              progress: Callable[[str], None],
              tables_done: Callable[[], None] | None) -> None:
    """The changed partitions through every store in one run per range (`fast_path`)."""
    instance = runner.instance
    for tracker in trackers:
        if tracker.pool:
            wait_for_pool(instance, tracker.pool, progress)
    stores = [FastPhase(phase.job, _step(runner.defs, phase), phase.expected)
              for phase in phases(trackers)]
    run_fast(runner, keys, instance.get_dynamic_partitions(PARTITIONS), stores, versions,
             errors, progress, tables_done)


def _step(defs: dg.Definitions, phase: Phase) -> str:
    """The name of the step that writes the phase's assets."""
    return defs.resolve_assets_def(dg.AssetKey(next(iter(phase.expected)))).node_def.name


def ingest(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    experiments_dir: Path,
    trackers: list[Tracker],
    progress: Callable[[str], None] = lambda _msg: None,
    run_config: dict | None = None,
    parallel: Parallel | None = None,
    confirm_removals: bool = False,
    report: IngestReport | None = None,
    ahead: Ahead | None = None,
) -> IngestReport:
    """`parallel`: spread each phase over worker processes; None: everything in this one.
    `report`: filled in as the ingest goes (what is known if it stops), and returned.
    `ahead`: the tree as scanned (and peeked at) before Dagster's imports (`cli.ahead`).
    Raises `TreeUnreadable` (the root cannot be listed), `TooManyRemovals` (the pass would
    remove more than the bound allows and `confirm_removals` is off) or `EmptyTree` (a first
    pass finds no run directory) before any write; then the data dir remembers the tree."""
    pool = WorkerPool(parallel) if parallel else None
    try:
        with heartbeat(instance):
            return _ingest(InProcess(defs, instance, run_config or {}), experiments_dir,
                           ahead or Ahead(scan_tree(experiments_dir)), trackers, progress,
                           pool, confirm_removals, report or IngestReport())
    finally:
        if pool:
            pool.close()


def _ingest(runner: InProcess, experiments_dir: Path, ahead: Ahead, trackers: list[Tracker],
            progress: Callable[[str], None], pool: WorkerPool | None,
            confirm_removals: bool, report: IngestReport) -> IngestReport:
    instance = runner.instance
    scan = ahead.scan
    run_dirs = scan.run_dirs
    registered = set(instance.get_dynamic_partitions(PARTITIONS))
    known = registered or stored_partitions(runner.defs.resources["store"], progress)
    plan = removals(known, scan)
    check_removals(experiments_dir, len(known), plan.gone, len(run_dirs), confirm_removals)
    check_first_tree(experiments_dir, len(known), len(run_dirs), scan.unreadable)
    data_dir = Path(runner.defs.resources["store"].data_dir)
    # the pass goes ahead: from its first write on, a forgotten --experiments-dir means this tree
    remember_tree(data_dir, experiments_dir)
    limits = size_pools(instance, trackers)  # store's pool -> writers at once
    abandoned = fail_abandoned_runs(instance)
    if abandoned:
        progress(f"marked {len(abandoned)} runs of killed align-track processes failed")
    for folder, reason in scan.unreadable.items():
        progress(f"unreadable, nothing below it is taken as removed: {folder}: {reason}")
    report.discovered = len(run_dirs)
    report.removed = remove_gone(runner, plan.gone)
    known = registered - set(report.removed)  # what the instance holds now
    new = [r.key for r in run_dirs if r.key not in known]
    if pool:  # new partitions will all be materialized: start the workers meanwhile
        pool.warm_up(len(new))
    progress(f"discovered {len(run_dirs)} run directories ({len(new)} new, "
             f"{len(report.removed)} removed)")
    versions, fast = _observe(runner, run_dirs, known, progress, ahead)
    before = partition_states(instance, versions, all_expected(trackers))
    broken = _broken_files(runner, versions, progress)
    generations = remote_generations(trackers)
    again = _stores_made_again(runner, data_dir, trackers, generations, versions, progress)
    taken = _repairs_due(data_dir, trackers, versions, again, progress)
    held = again
    before |= {key: STALE for key in broken.union(*again.values())}
    report.fresh = [k for k, s in before.items() if s == FRESH]
    errors: dict[str, str] = {}
    table_phase, *tracker_phases = phases(trackers)
    written_before = tables_written(instance)
    analysis = AnalysisRefresh(runner, pool, written_before, bool(report.removed),
                               bool(versions), progress)
    if fast:  # the fast run writes the tables, then the trackers: their imports meanwhile
        preload_writers(trackers)
        if pool:  # and the analysis refresh in a worker, beside the trackers
            pool.warm_up_some(1, ANALYSIS_PRELOAD)
        with pool.interruptible() if pool else nullcontext():  # Ctrl-C reaches that worker
            _run_fast(runner, fast, trackers, versions, errors, progress,
                      analysis.start_ahead if pool else None)
        again = {job: keys - set(fast) for job, keys in again.items()}  # written by now
    _run_phases(runner, pool, [table_phase], limits, versions, errors, progress,
                set(errors), forced={TABLES_JOB: broken})
    for key, files in broken_table_files(instance, runner.defs.resources["store"],
                                         broken).items():  # a rewrite that failed
        errors.setdefault(key, f"tables: {described(files)}")
    report.changed = _changed_while_read(instance, versions, errors, written_before, progress)
    # The trackers are independent stores fed from the tables: a partition that failed the
    # tables skips them, one that fails a tracker is still written to the others.
    skipped = set(errors) | set(report.changed)
    _run_phases(runner, pool, tracker_phases, limits, versions, errors, progress, skipped,
                forced=again, meanwhile=analysis)
    analysis()  # no tracker phase finished it
    report.analysis_failed = analysis.error
    settled = {t.name for t in trackers if not held.get(t.name, set()) & (set(errors) | skipped)}
    remember_generations(trackers, data_dir, generations, settled)
    end_repairs(trackers, data_dir, taken, settled, set(versions),
                instance.get_dynamic_partitions(PARTITIONS))
    if pool:
        pool.release()
    if report.fresh == list(versions):
        progress("all partitions are fresh: nothing to materialize")
    final = partition_states(instance, versions, all_expected(trackers))
    report.materialized = [k for k, s in final.items()
                           if s == FRESH and before[k] != FRESH and k not in errors]
    report.failed = [{"partition": k, "error": e} for k, e in (plan.hidden | errors).items()]
    return report


def _stores_made_again(runner: InProcess, data_dir: Path, trackers: list[Tracker],
                       generations: dict[str, str], versions: dict[str, str],
                       progress: Callable[[str], None]) -> Forced:
    """Tracker -> every partition its store held, for the stores made again since the last
    ingest or sensor tick saw them, whose data versions cannot tell it (`store_resets`)."""
    resets = store_resets(trackers, data_dir, generations)
    order = runner.instance.get_dynamic_partitions(PARTITIONS)
    again: Forced = {}
    for tracker in trackers:
        if tracker.name in resets:
            again[tracker.name] = set(held_partitions(runner.instance, tracker, versions, order))
            what = ("no longer holds the experiment" if generations[tracker.name] == NONE
                    else "holds another experiment of that name")
            progress(f"{tracker.name}: the store {what} since it was last written: writing "
                     f"its {len(again[tracker.name])} partitions again")
    return again


def _repairs_due(data_dir: Path, trackers: list[Tracker], versions: dict[str, str],
                 again: Forced, progress: Callable[[str], None]) -> dict[str, Repair]:
    """Add to `again` the partitions of the sensor's store repairs not finished yet (their
    run failed, or has not run): this ingest writes them too. Tracker name -> the repairs
    taken, ended once written (`store_checks.end_repairs`)."""
    taken = pending_repairs(trackers, data_dir)
    for name, repair in taken.items():
        keys = repair_partitions(repair) & versions.keys()
        if keys - again.get(name, set()):
            progress(f"{name}: writing the {len(keys)} partitions a repair of its store has "
                     "not written yet")
        again[name] = again.get(name, set()) | keys
    return taken


def _changed_while_read(instance: dg.DagsterInstance, versions: dict[str, str],
                        errors: dict[str, str], written_before: dict[str, dict[str, int]],
                        progress: Callable[[str], None]) -> list[str]:
    """The partitions whose tables this pass wrote, from another version than the one observed:
    their folder changed after the observation, while this pass read it. Not failures: the
    next pass observes the new version and brings every store up to it. A partition whose
    tables were not written this pass (a crashed worker, say) stays a failure."""
    written = tables_written(instance)
    states = partition_states(instance, {k: versions[k] for k in errors}, TABLE_VERSIONS)
    changed = sorted(k for k, s in states.items() if s == STALE and all(
        written[t].get(k, -1) > written_before[t].get(k, -1) for t in TABLE_VERSIONS))
    for key in changed:
        del errors[key]
        progress(f"{key}: the folder changed while it was read; it is ingested again on the "
                 "next pass")
    return changed


def _broken_files(runner: InProcess, versions: dict[str, str],
                  progress: Callable[[str], None]) -> set[str]:
    """The partitions whose table files are missing or unreadable though their version is
    fresh: their tables are rewritten (same data version: the trackers stay fresh)."""
    store = runner.defs.resources["store"]
    broken = broken_table_files(runner.instance, store, versions)
    for key, files in broken.items():
        progress(f"{key}: {described(files)}: rewriting its tables")
    return set(broken)


def _todo(instance: dg.DagsterInstance, versions: dict[str, str], phase: Phase,
          skipped: set[str], forced: Forced) -> list[str]:
    states = partition_states(instance, versions, phase.expected)
    again = forced.get(phase.job, set())
    return [k for k, s in states.items() if (s != FRESH or k in again) and k not in skipped]


# Job -> partitions to materialize even when fresh: the tables' broken files, the partitions
# a tracker's store held before it was made again (`store_checks.store_resets`).
Forced = dict[str, set[str]]


def _run_phases(runner: InProcess, pool: WorkerPool | None, todo_phases: list[Phase],
                limits: dict[str, int], versions: dict[str, str], errors: dict[str, str],
                progress: Callable[[str], None], skipped: set[str] = frozenset(),
                forced: Forced | None = None,
                meanwhile: Callable[[], None] | None = None) -> None:
    """Bring `todo_phases` up to date, in waves that hold at most one phase per pool (the
    phases of trackers sharing a store run one after another, so the store's limit holds for
    all of them). `forced`: job -> partitions to materialize even when fresh. `meanwhile`:
    work for this process while worker processes write (see `_run_wave`)."""
    for wave in _waves(todo_phases):
        _run_wave(runner, pool, wave, limits, versions, errors, progress, skipped, forced or {},
                  meanwhile)


def _waves(todo_phases: list[Phase]) -> list[list[Phase]]:
    """The n-th wave holds the n-th phase of each pool, in the order of `todo_phases`."""
    waves: list[list[Phase]] = []
    seen: dict[str | None, int] = {}
    for phase in todo_phases:
        n = seen.get(phase.pool, -1) + 1 if phase.pool else 0
        seen[phase.pool] = n
        if n == len(waves):
            waves.append([])
        waves[n].append(phase)
    return waves


def _run_wave(runner: InProcess, pool: WorkerPool | None, wave: list[Phase],
              limits: dict[str, int], versions: dict[str, str], errors: dict[str, str],
              progress: Callable[[str], None], skipped: set[str],
              forced: Forced, meanwhile: Callable[[], None] | None = None) -> None:
    """The phases that spread over worker processes start there first, then the ones that
    take one writer (e.g. MLflow on SQLite) run in this process meanwhile, so that a
    single-writer store no longer leaves the other cores idle; then `meanwhile` (the
    analysis, which needs only the tables), before this process waits for the workers."""
    instance = runner.instance
    order = instance.get_dynamic_partitions(PARTITIONS)
    planned = []
    for phase in wave:
        todo = _todo(instance, versions, phase, skipped, forced)
        if todo:
            if phase.pool:
                wait_for_pool(instance, phase.pool, progress)
            limit = limits.get(phase.pool) if phase.pool else None
            spread = pool and phase.spread
            processes = pool.parallel.processes(len(todo), limit) if spread else 1
            planned.append((phase, todo, processes))
    with pool.interruptible() if pool else nullcontext():
        spread = []
        for phase, todo, processes in (p for p in planned if p[2] > 1):
            progress(f"{phase.job}: {len(todo)} partitions over {processes} worker processes")
            batches = split(todo, order, processes)
            spread.append((phase, todo, pool.submit(phase.job, batches, order, progress)))
        for phase, todo, _processes in (p for p in planned if p[2] == 1):
            started = time.perf_counter()
            with one_planned_event_per_asset():
                found = run_ranges(runner, phase.job, todo, order, progress)
            _finish(instance, versions, phase, todo, found, errors, forced, progress,
                    time.perf_counter() - started)
        failed = None
        if meanwhile is not None:
            try:
                meanwhile()
            except Exception as error:  # reported once the workers' partitions are
                failed = error
        for phase, todo, pending in spread:
            found = pool.collect(instance, pending)
            _finish(instance, versions, phase, todo, found, errors, forced, progress,
                    pending.seconds)
        if failed is not None:
            raise failed


def _finish(instance: dg.DagsterInstance, versions: dict[str, str], phase: Phase,
            todo: list[str], found: Found, errors: dict[str, str], forced: Forced,
            progress: Callable[[str], None], seconds: float) -> None:
    """Report the phase, mark the partitions of crashed runs failed, record the errors. A
    partition forced through while fresh stays fresh by its version when its write fails:
    what its run reported tells."""
    progress(f"{phase.job}: {len(todo)} partitions in {seconds:.2f} s")
    after = partition_states(instance, versions, phase.expected)
    again = forced.get(phase.job, set())
    unfinished = {k for k in todo if after[k] != FRESH or (k in again and found.get(k))}
    for crashed in found.crashed:  # the assets mark the partitions that fail one by one
        crashed.mark_failed(instance, unfinished)
    for key in todo:
        if key in unfinished:
            error = found.get(key) or f"{phase.job}: {after[key]}"
            errors[key] = f"{errors[key]}; {error}" if key in errors else error
