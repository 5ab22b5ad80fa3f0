"""`align-track ingest` brings the `analysis` assets (`scene_comparison`, `dashboard`) up to date
after the tables changed, as the automation does, so that the commands that read them answer
fast without the daemon too.

On the fast path (a few changed folders) the refresh runs in a worker process, started while
this one observes and writes the tables, and fed as soon as the tables are written: it then
overlaps the trackers' writes here instead of following them (the refresh needs only the
tables). Without a worker pool (`--workers 1`), or when no worker ran it (none could start, or it
died), it runs here after the trackers, as on every other path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import dagster as dg

from align_track_pipeline.cli.batches import InProcess, failures
from align_track_pipeline.cli.workers import WorkerPool
from align_track_pipeline.defs.analysis import CHANGED_FILES, DELETED, scene_comparison
from align_track_pipeline.defs.automation import ANALYSIS
from align_track_pipeline.defs.dagster_compat import MATERIALIZATION, latest_storage_ids
from align_track_pipeline.defs.freshness import TABLE_VERSIONS
from align_track_pipeline.defs.jobs import ANALYSIS_JOB

Written = dict[str, dict[str, int]]


def tables_written(instance: dg.DagsterInstance) -> Written:
    """Table -> partition -> storage id of its latest materialization."""
    return {table: latest_storage_ids(instance, table, MATERIALIZATION)
            for table in TABLE_VERSIONS}


def analysed(instance: dg.DagsterInstance, written: Written) -> bool:
    """Every analysis asset was built after the latest table write in `written`: not when
    its last run failed (or was never made), which the next ingest then tries again."""
    latest = max((i for ids in written.values() for i in ids.values()), default=0)
    for name in ANALYSIS:
        built = instance.fetch_materializations(dg.AssetKey(name), limit=1).records
        if not built or built[0].storage_id < latest:
            return False
    return True


@dataclass(frozen=True)
class Refreshed:
    """One run of the `analysis` job: its progress line, and why it failed (None: it did
    not)."""

    line: str
    error: str | None = None


def refresh(runner: InProcess) -> Refreshed:
    """Run the `analysis` job."""
    started = time.perf_counter()
    result = runner.run(ANALYSIS_JOB, raise_on_error=False)
    failed = failures(result)  # raises KeyboardInterrupt when interrupted
    error = next(iter(failed.values()), None) or (
        None if result.success else f"the {ANALYSIS_JOB} run {result.run_id} failed")
    outcome = f"FAILED: {error}" if error else _comparison_built(result)
    return Refreshed(f"{ANALYSIS_JOB}: {outcome} in {time.perf_counter() - started:.2f} s",
                     error)


def _comparison_built(result: dg.ExecuteInProcessResult) -> str:
    """How the comparison file was brought up to date: from its previous version and the
    changed partition files, or rebuilt from all of them."""
    for done in result.asset_materializations_for_node(scene_comparison.op.name):
        changed = done.metadata.get(CHANGED_FILES)
        if changed is not None:
            n = changed.value
            return f"updated ({n} changed partition file{'s' * (n != 1)} read)"
        if DELETED in done.metadata:
            return "deleted (no table files left)"
    return "rebuilt"


@dataclass
class AnalysisRefresh:
    """The ingest's one refresh. `due`: the tables changed since `written_before`, folders
    were removed, or the tree has partitions and an analysis asset was not built since the
    tables last were (never, or that run failed).
    `start_ahead` hands it to a worker (after the tables, before the trackers); calling it
    finishes it, once: waits for that worker, or runs it here."""

    runner: InProcess
    pool: WorkerPool | None
    written_before: Written
    removed: bool
    partitions: bool
    progress: Callable[[str], None]
    error: str | None = None  # why the last refresh failed: the ingest then fails too
    _ahead: Future | None = None
    _fed: Written = field(default_factory=dict)  # the tables the worker's refresh saw
    _done: bool = False

    def due(self, written: Written) -> bool:
        """`written`: the tables now (`tables_written`)."""
        return (self.removed or written != self.written_before
                or (self.partitions and not analysed(self.runner.instance, written)))

    def start_ahead(self) -> None:
        written = tables_written(self.runner.instance)
        if self.pool is not None and self._ahead is None and self.due(written):
            self._fed = written
            self._ahead = self.pool.submit_call(refresh_in_worker)

    def __call__(self) -> None:
        if self._done:
            return
        self._done = True
        outcome = None
        if self._ahead is not None:  # None: no worker ran it, done here instead
            outcome = self.pool.result(self._ahead, self.runner.instance)
            if outcome is not None:
                self._report(outcome)
        written = tables_written(self.runner.instance)
        if outcome is not None and written == self._fed:
            return  # else tables were written after the worker read them
        if self.due(written):
            self._report(refresh(self.runner))

    def _report(self, outcome: Refreshed) -> None:
        self.progress(outcome.line)
        self.error = outcome.error


def refresh_in_worker() -> Refreshed:
    """In a worker (`WorkerPool.submit_call`): `refresh` with the worker's runner."""
    from align_track_pipeline.cli.workers import worker_runner

    return refresh(worker_runner())
