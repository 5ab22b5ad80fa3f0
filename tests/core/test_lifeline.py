"""The processes of `spawn_pool` die with the process that made the pool, on the portable
watch, and a pool made on a short-lived thread survives that thread; those of
`preloaded_pool` start with the preloaded modules and die with it too, and so does their fork
server, which `stop_fork_server` stops and reaps."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from align_track_pipeline.core.lifeline import (
    ORPHANED_EXIT,
    POLL_SECONDS,
    preloaded_pool,
    stop_fork_server,
)
from align_track_pipeline.core.processes import process_alive

# Makes a pool on a thread that then ends, prints the pool process's pid, and waits to be killed.
POOL_ON_A_THREAD = textwrap.dedent("""
    import os, threading, time
    from align_track_pipeline.core.lifeline import spawn_pool

    pools = []
    def start():
        pools.append(spawn_pool(1))
        print(pools[0].submit(os.getpid).result(), flush=True)
    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    time.sleep(120)
""")


# Makes a preloaded pool, prints its process's pid and parent (the fork server), and waits to
# be killed.
PRELOADED_POOL = textwrap.dedent("""
    import os, time
    from align_track_pipeline.core.lifeline import preloaded_pool

    pool = preloaded_pool(1, ["json"])
    print(pool.submit(os.getpid).result(), pool.submit(os.getppid).result(), flush=True)
    time.sleep(120)
""")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_pool_process_outlives_its_thread_and_dies_with_its_process():
    parent = subprocess.Popen([sys.executable, "-c", POOL_ON_A_THREAD], stdout=subprocess.PIPE,
                              text=True)
    try:
        child = int(parent.stdout.readline())
        time.sleep(3 * POLL_SECONDS)
        assert process_alive(child), "killed when the thread that started it ended"
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert _gone_within(child, 4 * POLL_SECONDS)


def test_a_child_whose_parent_is_already_gone_exits_at_once():
    code = ("import os; from align_track_pipeline.core.lifeline import die_with_parent; "
            "die_with_parent(os.getppid() + 1); print('went on')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout) == (ORPHANED_EXIT, "")


def test_preloaded_pool_process_and_its_server_die_with_the_process():
    parent = subprocess.Popen([sys.executable, "-c", PRELOADED_POOL], stdout=subprocess.PIPE,
                              text=True)
    try:
        child, server = map(int, parent.stdout.readline().split())
        assert server != parent.pid  # forked by the server, not by the threaded parent
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert _gone_within(child, 4 * POLL_SECONDS)
    assert _gone_within(server, 4 * POLL_SECONDS)


def _loaded(module: str) -> bool:
    return module in sys.modules


def test_preloaded_pool_processes_start_with_the_modules_imported_a_missing_one_skipped():
    # one this test process has not imported (other tests on the worker import some): only
    # the preload loads it
    module = next(m for m in ("tabnanny", "pyclbr", "netrc", "xml.dom.minidom")
                  if not _loaded(m))
    stop_fork_server()  # a server started by another test has its own preload
    missing = "dagster._no_such_module"  # e.g. a private module a Dagster upgrade moved
    with preloaded_pool(1, [missing, module]) as pool:  # skipped: the rest still loads
        assert pool.submit(_loaded, module).result()
    stop_fork_server()


def test_stop_fork_server_stops_and_reaps_it():
    with preloaded_pool(1, []) as pool:
        server = pool.submit(os.getppid).result()
    assert server != os.getpid()
    stop_fork_server()
    assert not Path(f"/proc/{server}").exists()  # reaped: not even a zombie
    stop_fork_server()  # none running: nothing to do
