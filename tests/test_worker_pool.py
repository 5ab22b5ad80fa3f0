"""A worker that died while idle (killed between phases, e.g. while the main process wrote the
tables) costs nothing: the next phase's batches go to a fresh pool instead of the ingest
stopping on the broken one."""

import os
import signal
import threading
import time

import pytest

from align_track_pipeline.cli.ingest import PARTITIONS
from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.cli.main import main
from align_track_pipeline.cli.preload import PRELOAD, preload
from align_track_pipeline.cli.workers import Parallel, Setup, WorkerPool
from align_track_pipeline.core import verified
from align_track_pipeline.core.processes import process_alive
from align_track_pipeline.defs.jobs import TABLES_JOB


@pytest.mark.slow  # forked workers that import Dagster and Aim, one killed
def test_a_worker_killed_while_idle_leaves_the_next_batches_to_a_fresh_pool(small_tree,
                                                                            data_dir):
    assert main(["ingest", "--experiments-dir", str(small_tree),
                 "--data-dir", str(data_dir)]) == 0
    pool = WorkerPool(Parallel(Setup(str(small_tree), str(data_dir)), 2))
    try:
        worker = pool._start().submit(os.getpid).result()  # noqa: SLF001
        os.kill(worker, signal.SIGKILL)
        while process_alive(worker):
            time.sleep(0.05)
        time.sleep(1)  # the pool notices the death
        with open_instance(data_dir) as instance:
            order = instance.get_dynamic_partitions(PARTITIONS)
            pending = pool.submit(TABLES_JOB, [order[:1], order[1:]], order, lambda _m: None)
            found = pool.collect(instance, pending)
        assert (found.errors, found.crashed) == ({}, [])
    finally:
        pool.close()


def test_release_waits_for_a_pool_being_started_and_lets_it_go(tmp_path):
    """`release` takes the executor under the lock `_start` holds while it makes one: a pool
    the warm-up thread is starting meanwhile is released too, not left running until close."""
    pool = WorkerPool(Parallel(Setup(str(tmp_path), str(tmp_path)), 2))
    try:
        executor = pool._start()  # noqa: SLF001  (no process is started before a submit)
        with pool._lock:  # noqa: SLF001  as `_start` holds it while it makes the pool
            releasing = threading.Thread(target=pool.release)
            releasing.start()
            releasing.join(0.5)
            assert releasing.is_alive()  # waits for the pool being started
            assert pool._executor is executor  # noqa: SLF001
        releasing.join(10)
        assert not releasing.is_alive()
        assert pool._executor is None  # noqa: SLF001
        pool._stopping.join(30)  # noqa: SLF001
        with pytest.raises(RuntimeError, match="shutdown"):
            executor.submit(os.getpid)
    finally:
        pool.close()


def test_a_warm_up_that_fails_is_logged_once_with_its_cause_and_the_first_batch_fails_on_it(
        tmp_path, caplog):
    """Worker processes that cannot start (here: a run config that cannot be sent to them):
    the warm-up says so, naming the cause, instead of swallowing it, and the first batch
    raises it."""
    setup = Setup(str(tmp_path), str(tmp_path), run_config={"not sendable": threading.Lock()})
    pool = WorkerPool(Parallel(setup, 2))
    try:
        with caplog.at_level("WARNING", logger="align_track_pipeline.cli.workers"):
            pool.warm_up(100)
            pool._starting.join(60)  # noqa: SLF001
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith("worker processes did not start ahead of their work: "
                                      "TypeError: cannot pickle '_thread.lock' object")
        with pytest.raises(TypeError, match="cannot pickle '_thread.lock'"):
            pool.submit(TABLES_JOB, [["a"]], ["a"], lambda _m: None)
    finally:
        pool.close()


def test_on_an_unverified_dagster_the_workers_preload_no_private_dagster_module(monkeypatch):
    """Dagster's private storage modules are preloaded on the verified version only: on any
    other, the public modules alone (the workers import what they need)."""
    private = {"dagster._core.storage.event_log.sqlite.sqlite_event_log",
               "dagster._core.storage.runs.sqlite.sqlite_run_storage"}
    assert set(preload()) == set(PRELOAD) | private  # the installed Dagster is verified
    monkeypatch.setitem(verified.VERIFIED, "dagster", {"dagster": frozenset({"0.0.0"})})
    assert preload() == list(PRELOAD)
    assert not [name for name in preload() if name.startswith("dagster._")]
    verified._warn_once.cache_clear()
