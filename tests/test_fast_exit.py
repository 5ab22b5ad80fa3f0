"""The `align-track` script ends without Python's teardown, but after what a normal exit does
that matters: `atexit` handlers run, buffered output is written; with a non-daemon thread
still alive, it exits as Python does."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from align_track_pipeline.core.analysis.snapshot import comparison_is_current
from align_track_pipeline.core.source.discovery import find_run_dirs
from tests.conftest import item_count
from tests.test_fast_path import _comparison_timing, _scene_counts, _slower_first_scene

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from align_track_pipeline.cli.fast_exit import exit_now

out = Path(sys.argv[1])

class TornDown:
    def __del__(self):
        (out / "torn_down").write_text("yes")

kept = TornDown()  # a module global: freed by the interpreter's teardown only
atexit.register(lambda: (out / "atexit").write_text("yes"))
def late():
    time.sleep(0.3)
    (out / "thread").write_text("yes")
threading.Thread(target=late, daemon=len(sys.argv) > 2).start()
sys.stdout.write("buffered, no newline")
if len(sys.argv) > 2:  # the daemon thread is left to end with the process
    time.sleep(0.6)
exit_now(3)
"""


def test_exit_now_runs_handlers_and_flushes_but_skips_the_teardown(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "daemon"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered, no newline"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atexit", "thread"]


def test_exit_now_with_a_non_daemon_thread_alive_exits_as_python_does(tmp_path):
    """Such a thread may be an executor's idle worker, which only threading's own shutdown
    ends: Python's exit then, the thread finished and the teardown made."""
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered, no newline"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atexit", "thread", "torn_down"]


def test_without_exit_now_the_same_script_is_torn_down(tmp_path):
    """The check above means something: a normal exit frees the global."""
    script = SCRIPT.replace("exit_now(3)", "sys.exit(3)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), "daemon"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atexit", "thread", "torn_down"]


@pytest.mark.slow
def test_the_script_exits_with_every_store_written(small_tree, data_dir):
    """Nothing a command wrote waits for the teardown: a first ingest, then one changed
    folder (the fast path), each by the installed script, and every store and the
    comparison file hold every scene as a fresh process sees it; the MLflow store's log is
    folded in."""
    script = [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
              "--experiments-dir", str(small_tree), "--data-dir", str(data_dir)]
    first = subprocess.run(script, capture_output=True, text=True, timeout=600, check=False)
    changed = find_run_dirs(small_tree)[1]
    wanted = _slower_first_scene(changed.path)
    second = subprocess.run(script, capture_output=True, text=True, timeout=600, check=False)

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert json.loads(second.stdout)["materialized"] == [changed.key]
    scenes = sum(item_count(r.path) for r in find_run_dirs(small_tree))
    counts = _scene_counts(data_dir)
    assert counts == dict.fromkeys(counts, scenes)
    assert _comparison_timing(data_dir, changed.key) == wanted
    assert comparison_is_current(data_dir)
    # the MLflow store's connections were closed: its write-ahead log was folded into the
    # database, not left to grow with every ingest
    wal = data_dir / "mlflow.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


# A pool left open (an interrupted close) whose first submit came from a daemon thread: its
# manager thread is a daemon, its processes are not.
OPEN_POOL = textwrap.dedent("""
    import os, threading, multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from align_track_pipeline.cli.fast_exit import exit_now

    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver"))
    submit = threading.Thread(target=lambda: pool.submit(os.getpid).result(), daemon=True)
    submit.start()
    submit.join()
    exit_now(4)
""")


def test_exit_now_with_a_pool_left_open_exits_as_python_does():
    """multiprocessing's exit handler joins the pool's processes, which only threading's
    shutdown hooks stop: the fast exit would wait for ever."""
    done = subprocess.run([sys.executable, "-c", OPEN_POOL], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 4, done.stderr
