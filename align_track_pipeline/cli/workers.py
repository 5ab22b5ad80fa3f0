"""Partitions over N processes: `align-track ingest --workers N`.

A phase's partitions are cut into contiguous batches, one per worker process; each worker runs
its batch as in-process runs over contiguous ranges (one run per range), exactly as a single
process does, on the same Dagster instance and stores. Workers are started once per ingest and
kept for every phase; they are forked from a server that imported Dagster, the definitions and
Aim once (`core.lifeline.preloaded_pool`: never a fork of this threaded process), and started
on a thread while this process discovers, observes and writes the tables, so their start
overlaps that work. On the fast path one worker, forked from a server that imported the
analysis's modules instead, refreshes the analysis (`submit_call`, `cli.analysis_refresh`).
The tables phase stays in this process, whose parse pool already spreads the parsing over
the cores (two workers took longer). Whether a store takes several writers is
the store's business (the phase's pool limit, see `sizing`); the stores stay idempotent
whoever writes.

Ctrl-C or SIGTERM: the workers sit in their own process group, so a terminal's Ctrl-C reaches
this process alone, which passes one SIGINT to each worker; each stops after the partition in
progress, and the ingest ends with the interrupt. A worker that dies (killed) takes the pool
down: the partitions its batches had not written fail, their runs are marked failed at once,
and the next ingest redoes them (the stores repair what was cut short); batches submitted
after it died (say it died idle, while this process wrote the tables) go to a fresh pool.
This process killed (even by SIGKILL): the fork server, each worker, and each process a worker
started, exit within a second (`core.lifeline`), its runs failed and redone likewise by the
next ingest.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from align_track_pipeline.cli.batches import Found, InProcess, run_ranges
from align_track_pipeline.cli.liveness import fail_abandoned_runs, heartbeat
from align_track_pipeline.cli.preload import PRELOAD, preload
from align_track_pipeline.cli.signals import interrupts_recorded
from align_track_pipeline.core.cores import usable_cores
from align_track_pipeline.core.lifeline import preloaded_pool, stop_fork_server
from align_track_pipeline.core.secrets import mask_text

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Setup:
    """What a worker needs to build the same runner as this process (picklable)."""

    experiments_dir: str
    data_dir: str
    options: dict[str, str] = field(default_factory=dict)
    run_config: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Parallel:
    """`workers`: the most processes a phase uses. `min_batch`: the fewest partitions worth a
    worker (a worker costs seconds of imports): a phase uses `min(workers, pool limit,
    partitions // min_batch)` processes, one (this process) when that is 1."""

    setup: Setup
    workers: int
    min_batch: int = 1

    def processes(self, partitions: int, limit: int | None) -> int:
        return max(1, min(self.workers, limit or self.workers, partitions // self.min_batch))


# Without `--workers`, a worker is started for each 32 partitions of a phase, up to what its
# store takes: a worker's imports cost seconds, a partition of an Aim phase about one.
AUTO_MIN_BATCH = 32


def parallel_for(setup: Setup, workers: int | None, most: int | None = None
                 ) -> Parallel | None:
    """`--workers N` (any phase of N or more partitions is spread), or by default as many
    workers as a store takes (`most`, the largest pool limit: `sizing.most_writers`; else one
    per core) for phases large enough to gain from it; None: one process."""
    if workers is None:
        return Parallel(setup, most or usable_cores(), AUTO_MIN_BATCH)
    return Parallel(setup, workers) if workers > 1 else None


@dataclass
class Pending:
    """A job's batches submitted to the workers, and when the last one finished."""

    started: float
    futures: dict[Future, list[str]] = field(default_factory=dict)
    finished: float | None = None

    def done(self, _future: Future) -> None:
        self.finished = time.perf_counter()

    @property
    def seconds(self) -> float:
        return (self.finished or time.perf_counter()) - self.started


class WorkerPool:
    """Worker processes for one ingest, started on first use, kept across phases."""

    def __init__(self, parallel: Parallel):
        self.parallel = parallel
        self._executor: ProcessPoolExecutor | None = None
        self._futures: dict[Future, ProcessPoolExecutor] = {}  # submitted, not collected yet
        self._lock = threading.Lock()
        self._starting: threading.Thread | None = None  # the warm-up, see `warm_up`
        self._stopping: threading.Thread | None = None  # the shutdown, see `release`
        self._modules = PRELOAD  # what the fork server imports (`warm_up_some`)
        self._readies: list[Future] = []  # the warm-up's, done once each worker is ready
        self._released = False  # `release`d: `submit_call` starts no pool any more
        self._interrupted = False  # the workers were sent the interrupt (`interruptible`)

    def submit(self, job: str, batches: list[list[str]], order: list[str],
               progress: Callable[[str], None]) -> Pending:
        """Start `job` over each batch in a worker (queued while all workers are busy)."""
        executor = self._start()
        pending = Pending(time.perf_counter())
        for n, batch in enumerate(batches, 1):
            try:
                future = executor.submit(_run_batch, job, batch, order)
            except BrokenProcessPool:  # a worker died since (idle, or in an earlier batch)
                self._drop(executor)  # its own batches fail; a fresh pool takes these
                executor = self._start()
                future = executor.submit(_run_batch, job, batch, order)
            future.add_done_callback(pending.done)
            pending.futures[future] = batch
            self._futures[future] = executor
            progress(f"{job} batch {n}/{len(batches)}: {len(batch)} partitions, "
                     f"{batch[0]} .. {batch[-1]}")
        return pending

    def submit_call(self, call: Callable[[], T]) -> Future[T | None]:
        """Run `call` (a module-level function, picklable) in a worker. Returns at once: the
        submit itself waits, on a thread, for the workers the warm-up is starting (a submit
        before they are ready would wait for the fork server's imports, and start one more).
        Its result is None when no worker ran it: none could start (logged), the pool was
        released meanwhile, or the worker died (`result`)."""
        outer: Future[T | None] = Future()

        def submit() -> None:
            if self._starting is not None:
                self._starting.join()
            wait(self._readies)
            try:
                with self._lock:  # never a new pool once released
                    executor = None if self._released else self._start_locked()
                inner = executor.submit(_run_call, call) if executor else None
            except Exception as exc:  # noqa: BLE001  the caller does the work itself
                log.warning("no worker process took %s: %s: %s", call.__name__,
                            type(exc).__name__, mask_text(str(exc)))
                inner = None
            if inner is None:
                outer.set_result(None)
                return
            self._futures[outer] = executor
            inner.add_done_callback(lambda done: _pass_on(done, outer))

        threading.Thread(target=submit, daemon=True, name="align-track-submit").start()
        return outer

    def result(self, future: Future[T | None], instance) -> T | None:
        """Wait for a `submit_call`, interruptible as the batches are; None: no worker ran it
        (one died: its runs are marked failed)."""
        try:
            with self.interruptible():
                try:
                    return future.result()
                except (BrokenProcessPool, CancelledError):
                    self._died(instance, future)
                    return None
        finally:  # after `interruptible` waited for it
            self._futures.pop(future, None)

    def collect(self, instance, pending: Pending) -> Found:
        """Wait for a submitted job's batches; merge what they report."""
        found = Found()
        for future, batch in pending.futures.items():
            found.merge(self._outcome(instance, future, batch))
            self._futures.pop(future, None)
        return found

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """While the workers write: SIGTERM counts as Ctrl-C, and either is passed on to every
        worker, whose partition in progress is finished before the interrupt is raised; no
        task starts after it (`_interruptible`). The futures are not cancelled: a pool that
        breaks meanwhile (a worker still starting takes the interrupt) fails every future it
        holds, and Python 3.11's executor thread dies on a cancelled one, leaving the wait
        hung."""
        def as_interrupt(_signum, _frame) -> None:
            raise KeyboardInterrupt("SIGTERM")

        previous = signal.signal(signal.SIGTERM, as_interrupt)
        try:
            yield
        except KeyboardInterrupt:
            with self._lock:
                executor = None if self._interrupted else self._executor
                self._interrupted = True  # once: these blocks nest (`result` in a wave)
            for pid in list(getattr(executor, "_processes", {}) or {}):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)
            wait(self._futures)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)

    def warm_up(self, partitions: int) -> None:
        """Start the workers now, on a thread, when a phase of `partitions` will want them (a
        cold tree): their start then overlaps with this process's discovery, observation and
        tables. A start that fails here is logged, and fails again (raised) at the first batch."""
        if self.parallel.processes(partitions, None) > 1:
            self.warm_up_some(self.parallel.workers)

    def warm_up_some(self, workers: int, modules: tuple[str, ...] = PRELOAD) -> None:
        """Start `workers` workers now, on a thread (see `warm_up`), unless started already;
        a fork server not started yet imports `modules` (`preload`)."""
        if self._starting is None:
            self._modules = modules
            self._starting = threading.Thread(target=self._start_all, args=(workers,),
                                              daemon=True, name="align-track-workers")
            self._starting.start()

    def release(self) -> None:
        """No phase needs the workers any more: let them exit while this process goes on.
        Under the lock: a pool the warm-up thread has begun to start is let go once started.
        (One whose start had not begun yet would idle until `close`; the observation and the
        tables come between the warm-up and this call.)"""
        with self._lock:
            executor, self._executor = self._executor, None
            self._released = True
        if executor is not None:
            self._stopping = threading.Thread(target=_shut_down, args=(executor,),
                                              name="align-track-workers-exit")
            self._stopping.start()

    def close(self) -> None:
        if self._starting is not None:
            self._starting.join()
        self.release()
        if self._stopping is not None:
            self._stopping.join()

    def _start_all(self, workers: int) -> None:
        """The warm-up: a failure is logged once, naming its cause (the first batch then
        tries again, and fails with it if it recurs); none when the pool was released
        meanwhile (a submit to it fails then, as it should)."""
        executor = None
        try:
            executor = self._start()
            self._readies = [executor.submit(_ready) for _ in range(workers)]
        except Exception as exc:  # noqa: BLE001  reported, and raised again at the first batch
            with self._lock:
                released = executor is not None and self._executor is not executor
            if not released:
                log.warning("worker processes did not start ahead of their work: %s: %s",
                            type(exc).__name__, mask_text(str(exc)))

    def _start(self) -> ProcessPoolExecutor:
        with self._lock:
            return self._start_locked()

    def _start_locked(self) -> ProcessPoolExecutor:
        if self._executor is None:
            parallel = self.parallel
            self._executor = preloaded_pool(parallel.workers, preload(self._modules),
                                            _start_worker, (parallel.setup,))
        return self._executor

    def _drop(self, executor: ProcessPoolExecutor) -> None:
        """A broken pool (a worker died): no batch goes to it any more. The fork server stays
        for the pool that replaces it (stopping it would kill that pool's workers)."""
        with self._lock:
            if self._executor is executor:
                self._executor = None
        executor.shutdown(wait=True, cancel_futures=True)

    def _outcome(self, instance, future: Future, batch: list[str]) -> Found:
        try:
            return future.result()
        except BrokenProcessPool:  # a worker was killed: its batch failed, its runs are over
            self._died(instance, future)
            error = "its worker process died before the partition was written"
            return Found(errors={key: error for key in batch})

    def _died(self, instance, future: Future) -> None:
        """`future`'s worker died: its pool takes no more work, its runs are marked failed."""
        self._drop(self._futures[future])
        fail_abandoned_runs(instance)


def _pass_on(done: Future, to: Future) -> None:
    """`to` gets `done`'s outcome (a cancelled one: its pool was shut down)."""
    if done.cancelled():
        to.set_exception(CancelledError())
    elif done.exception() is not None:
        to.set_exception(done.exception())
    else:
        to.set_result(done.result())


def _shut_down(executor: ProcessPoolExecutor) -> None:
    """Wait for the workers to exit, then for the fork server."""
    executor.shutdown(wait=True, cancel_futures=True)
    stop_fork_server()


_runner: InProcess | None = None
_stopping = False  # the ingest was interrupted: no batch starts in this worker any more


def _start_worker(setup: Setup) -> None:
    """In the worker: its own process group (a terminal's Ctrl-C goes to the parent, which
    passes it on), and the runner."""
    global _runner
    os.setpgrp()
    signal.signal(signal.SIGINT, _stop_later)  # idle between batches: none starts after
    from align_track_pipeline.cli.instance import open_instance
    from align_track_pipeline.cli.progress import progress_logger
    from align_track_pipeline.core.quiet import quiet_about
    from align_track_pipeline.definitions import build_defs

    with quiet_about(Warning, message="Parameter `owners`"):  # as the CLI does (main.py)
        defs = build_defs(setup.experiments_dir, setup.data_dir, setup.options,
                          loggers={"progress": progress_logger})
    _runner = InProcess(defs, open_instance(Path(setup.data_dir)), setup.run_config)


def _stop_later(_signum: int, _frame) -> None:
    """The ingest's interrupt reached this worker between batches (a batch queued behind
    another, say): the batches still to come do not start."""
    global _stopping
    _stopping = True


def _ready() -> None:
    """A no-op: submitted once per worker so that it starts (and imports) ahead of its work."""


def worker_runner() -> InProcess:
    """In a worker: the runner `_start_worker` built."""
    assert _runner is not None, "worker not started"
    return _runner


def _run_batch(job: str, batch: list[str], order: list[str]) -> Found:
    """In the worker: the batch's runs, one per contiguous range (`_interruptible`)."""
    from align_track_pipeline.defs.dagster_compat import one_planned_event_per_asset

    with _interruptible(f"{job} batch") as runner, one_planned_event_per_asset():
        return run_ranges(runner, job, batch, order, _say)


def _run_call(call: Callable[[], T]) -> T:
    """In the worker: a `submit_call` (`_interruptible`)."""
    with _interruptible(call.__name__):
        return call()


@contextmanager
def _interruptible(what: str) -> Iterator[InProcess]:
    """In the worker, around a task's runs, with a heartbeat. The interrupt this process
    passes on stops the task after the run in progress, also when it lands after that run's
    last step, where Dagster drops it (`raise_if_received`); once interrupted, idle or not,
    the worker starts no further task."""
    global _stopping
    runner = worker_runner()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if _stopping:  # checked once SIGINT raises: an interrupt can no longer slip between
            raise KeyboardInterrupt(f"{what}: the ingest was interrupted before it began")
        with interrupts_recorded(), heartbeat(runner.instance):
            yield runner
    except KeyboardInterrupt:
        _stopping = True
        raise
    finally:
        signal.signal(signal.SIGINT, _stop_later)


def _say(msg: str) -> None:
    import sys

    print(f"[worker {os.getpid()}] {msg}", file=sys.stderr, flush=True)

