"""The processes of `spawn_pool` die with the process that made the pool, on the portable
watch alone too, and a pool made on a short-lived thread survives that thread."""

import ctypes
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from align_track_pipeline.core.lifeline import ORPHANED_EXIT, POLL_SECONDS, spawn_pool
from align_track_pipeline.core.processes import process_alive

PR_GET_PDEATHSIG = 2

# Makes a pool on a thread that then ends (so the kernel's parent-death signal is not armed
# and only the poll watches), prints the pool process's pid, and waits to be killed.
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


def _parent_death_signal() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_int(-1)
    assert libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(value), 0, 0, 0) == 0
    return value.value


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_pool_made_on_the_main_thread_arms_the_parent_death_signal():
    with spawn_pool(1) as pool:
        assert pool.submit(_parent_death_signal).result() == signal.SIGKILL


def test_a_child_whose_parent_is_already_gone_exits_at_once():
    code = ("import os; from align_track_pipeline.core.lifeline import die_with_parent; "
            "die_with_parent(os.getppid() + 1, kernel_signal=False); print('went on')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout) == (ORPHANED_EXIT, "")
