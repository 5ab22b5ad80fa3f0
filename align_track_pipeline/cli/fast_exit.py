"""Leaving the `align-track` process once its command is done, without Python's teardown.

After `ingest`, the interpreter's own exit (freeing every module of Dagster, MLflow, Aim,
DuckDB and pyarrow, object by object) took 1.3-2.3 s on 2 loaded cores, longer than the
analysis. Everything a command writes is committed (SQLite, Parquet, Aim's runs closed) and
verified before it returns, so the process ends as Python's exit would, less the teardown:
the `atexit` handlers run (logging's shutdown, MLflow's), the standard streams flushed, then
`os._exit`. A daemon thread still running (e.g. the writers' background imports, unused) ends
with the process, as it would. A non-daemon thread or a child process still running means
Python's own exit, teardown included. What holds a database open must close it itself
(e.g. the MLflow writer's session): nothing is closed on the way out.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import sys
import threading
from contextlib import suppress
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """End the process with `code` after the steps of a normal exit that matter. While any
    other non-daemon thread or any child process lives (a pool left open, e.g. by an
    interrupted close), Python's own exit instead: an executor's idle threads and processes
    end only through threading's shutdown hooks, and multiprocessing's exit handler would wait
    for ever on those processes."""
    if multiprocessing.active_children() or any(
            thread is not threading.current_thread() and not thread.daemon
            for thread in threading.enumerate()):
        sys.exit(code)
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe or stream: nothing to deliver
            stream.flush()
    os._exit(code)


def run_exit_handlers() -> None:
    """The handlers registered with `atexit`, last registered first, as Python's exit runs
    them. `atexit` has no public call for this (a test checks it still runs them)."""
    atexit._run_exitfuncs()
