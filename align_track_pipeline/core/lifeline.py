"""Child processes that die with their parent, whatever kills it (SIGKILL included).

A `ProcessPoolExecutor` worker whose parent is gone does not notice: it finishes the task in
hand and then waits for the next one forever, holding its memory (its task pipe is still open
at its own end). Every pool an ingest starts (the `--workers` processes, the tables' parse
pools inside them or in the CLI itself) is made here, and each of its processes watches its
parent from the moment it starts: a daemon thread checks every `POLL_SECONDS` whether the
process was re-parented (`os.getppid()` is no longer the pid that started it) and then exits
at once. The check right after it starts closes the race of a parent that died before the
child got there. Each child that makes its own pool through here passes the same watch on to
its own. (Linux's parent-death signal would also kill a child whose threads are stuck in a
call that holds the interpreter's lock, but only through libc by ctypes: the package makes no
foreign calls, so such a child exits within `POLL_SECONDS` of that call's return.)

`preloaded_pool` forks its processes from multiprocessing's fork server instead: a spawned,
single-threaded interpreter that imports the given modules once, so that each process starts
with them loaded (seconds of imports saved per process) without forking this threaded process.
Their parent is the server, which exits as soon as this process is gone (the pipe it holds from
this process closes); each of them watches both the server and this process.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import suppress

from align_track_pipeline.core.processes import process_alive

POLL_SECONDS = 0.5
ORPHANED_EXIT = 70  # the exit status of a child whose parent went away


def spawn_pool(max_workers: int, initializer: Callable[..., None] | None = None,
               initargs: tuple = ()) -> ProcessPoolExecutor:
    """A pool of spawned processes (a fresh interpreter each, never a fork of this threaded
    process) that exit as soon as this process is gone; `initializer(*initargs)` runs in each
    after its watch is set."""
    return ProcessPoolExecutor(
        max_workers=max_workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_child, initargs=(os.getpid(), initializer, initargs))


def preloaded_pool(max_workers: int, preload: Sequence[str],
                   initializer: Callable[..., None] | None = None,
                   initargs: tuple = ()) -> ProcessPoolExecutor:
    """A pool of processes forked from the fork server, which imported `preload` once (see the
    module doc); they exit as soon as this process is gone. The server is started by the first
    process the pool starts, which waits for its imports: start the pool off the main thread
    to overlap them with other work."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return ProcessPoolExecutor(
        max_workers=max_workers, mp_context=context, initializer=_start_forked,
        initargs=(os.getpid(), initializer, initargs))


def start_fork_server(preload: Sequence[str]) -> None:
    """Start the fork server now, importing `preload`, without waiting for its imports: a pool
    made later (`preloaded_pool`) forks its processes from it, with its preload, whatever
    that pool asks for. It exits as soon as this process is gone."""
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))
    forkserver.ensure_running()


def stop_fork_server() -> None:
    """Stop this process's fork server, if one runs, and reap it, once its processes are done
    (the server leaving kills them: they watch it): it would otherwise end only after this
    process, unreaped by it, its CPU time missing from this process's children's. It is
    killed first: it holds nothing to clean up, and its own exit would finalize every module
    it preloaded (0.8 s with the analysis's, which an ingest would wait for).
    Multiprocessing has no public way to: this wraps what its own tests' `_stop` does (under
    its lock), and the pid it keeps. A Python without them leaves the server to exit with
    this process (it watches it), unreaped."""
    from multiprocessing import forkserver

    server = forkserver._forkserver  # noqa: SLF001
    stop = getattr(server, "_stop_unlocked", None)
    lock = getattr(server, "_lock", None)
    if stop is None or lock is None:
        return
    with lock:  # two callers (an exit thread, the command's end) never kill a reaped pid
        pid = getattr(server, "_forkserver_pid", None)
        if pid is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop()


def _start_child(parent: int, initializer: Callable[..., None] | None,
                 initargs: tuple) -> None:
    die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def _start_forked(origin: int, initializer: Callable[..., None] | None,
                  initargs: tuple) -> None:
    """Forked by the server, for `origin`: watches both."""
    die_with_parent(os.getppid(), origin=origin)
    if initializer is not None:
        initializer(*initargs)


def die_with_parent(parent: int, origin: int | None = None) -> None:
    """In a child: exit as soon as `parent` (the pid that started it) is no longer its
    parent, or `origin` (the process it works for, when another one started it) is gone."""
    if _orphaned(parent, origin):  # gone before the watch was set
        os._exit(ORPHANED_EXIT)
    threading.Thread(target=_watch, args=(parent, origin), name="align-track-lifeline",
                     daemon=True).start()


def _orphaned(parent: int, origin: int | None) -> bool:
    return os.getppid() != parent or (origin is not None and not process_alive(origin))


def _watch(parent: int, origin: int | None) -> None:
    while not _orphaned(parent, origin):
        time.sleep(POLL_SECONDS)
    os._exit(ORPHANED_EXIT)
