"""No process of an ingest outlives it: `kill -9` of `align-track ingest` takes its worker
processes (`--workers N`) and the fork server they come from, the tables' parse pool and
whatever they started with it within seconds, and the next ingest writes exactly one of
everything."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from align_track_pipeline.core.source.discovery import find_run_dirs
from benchmarks.make_tree import build
from tests.test_shared_stores import assert_one_aim_run_per_scene, assert_one_run_per_key

pytestmark = pytest.mark.slow
ALIGN_TRACK = str(Path(sys.executable).parent / "align-track")
GONE_WITHIN = 10.0  # seconds after the ingest died


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, session id) of a live process; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[3])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def session(sid: int) -> dict[int, int]:
    """pid -> parent pid of every live (not zombie) process of session `sid`: the ingest and
    everything it started, also after they were re-parented (nothing here calls setsid)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            state, ppid, sid_of = stat
            if sid_of == sid and state != "Z":
                found[int(entry.name)] = ppid
    return found


def _wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen, err: Path,
              seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert proc.poll() is None, f"ingest ended before {what}: {err.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {seconds} s"
        time.sleep(0.02)


def _kill_and_count_survivors(proc: subprocess.Popen) -> dict[int, str]:
    """SIGKILL the ingest; the processes of its session still alive GONE_WITHIN s later."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + GONE_WITHIN
    while (left := session(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = {pid: _cmdline(pid) for pid in left}
    for pid in survivors:  # leave nothing behind for the next test
        os.kill(pid, signal.SIGKILL)
    # Dagster's own compute-log mirror (`tail -F`) is reaped by Dagster's watcher script, not by
    # this project; it was once seen alive 10 s after the kill on a loaded machine. Not ours to
    # count here (a known gap, see docs/faults.md); every process of the project's must be gone.
    return {pid: cmd for pid, cmd in survivors.items()
            if not (cmd.startswith("tail -F ") and "/compute_logs/" in cmd)}


def _start(tree: Path, data: Path, workers: int | None, err: Path) -> subprocess.Popen:
    """None: the default workers."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    options = ["--workers", str(workers)] if workers else []
    return subprocess.Popen([ALIGN_TRACK, "ingest", "--json", *options,
                             "--experiments-dir", str(tree), "--data-dir", str(data)],
                            stdout=subprocess.DEVNULL, stderr=err.open("w"), env=env,
                            start_new_session=True)


def _ingest_again_exactly_once(tree: Path, data: Path, scenes: int) -> None:
    done = subprocess.run([ALIGN_TRACK, "ingest", "--json", "--experiments-dir", str(tree),
                           "--data-dir", str(data)], capture_output=True, text=True,
                          timeout=300, check=False,
                          env={k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["failed"] == []
    for table, key, rows in (("experiments", "alignment_target_id", None),
                             ("scenes", "scene_index", scenes)):
        found = ds.dataset(data / "parquet" / table).to_table(["partition_key", key])
        keys = list(zip(*found.to_pydict().values(), strict=True))
        assert len(keys) == len(set(keys)) == (rows or len(keys)), table
        assert {k[0] for k in keys} == {r.key for r in find_run_dirs(tree)}, table
    assert_one_run_per_key(f"sqlite:///{data}/mlflow.db", "align-system", data)
    assert_one_aim_run_per_scene(data / "aim", data)


@pytest.fixture
def busy_tree(tmp_path: Path) -> tuple[Path, int]:
    """40 run directories of 4 scenes: the tables use a parse pool, and the phases last long
    enough to be caught at work."""
    tree = tmp_path / "tree"
    return tree, build(tree, dirs=40, scenes_per_dir=4)


def test_kill_9_takes_the_fork_server_and_the_workers(busy_tree, tmp_path):
    """`--workers 2`, killed while the workers (own process groups, forked from the fork
    server the ingest started) write their Aim batches: the server, the workers and their
    children are all gone within 10 s."""
    tree, scenes = busy_tree
    err = tmp_path / "ingest.err"
    proc = _start(tree, tmp_path / "data", 2, err)

    def workers_at_work() -> bool:
        """A worker writes its batch (its progress is relayed), forked from the server, a
        child of the ingest (not multiprocessing's resource tracker)."""
        procs = session(proc.pid)
        servers = {pid for pid, ppid in procs.items()
                   if ppid == proc.pid and "forkserver" in _cmdline(pid)}
        return "[worker " in err.read_text() and any(
            ppid in servers for ppid in procs.values())

    _wait_for("workers at work", workers_at_work, proc, err)
    assert _kill_and_count_survivors(proc) == {}
    _ingest_again_exactly_once(tree, tmp_path / "data", scenes)


def test_kill_9_takes_the_parse_pool(busy_tree, tmp_path):
    """`--workers 1`: the tables phase's parse pool runs under the ingest itself."""
    tree, scenes = busy_tree
    err = tmp_path / "ingest.err"
    proc = _start(tree, tmp_path / "data", 1, err)

    def parse_pool() -> bool:
        return any(ppid == proc.pid and "spawn_main" in _cmdline(pid)
                   for pid, ppid in session(proc.pid).items())

    _wait_for("parse pool", parse_pool, proc, err)
    assert "tables run 1/1" in err.read_text()
    assert _kill_and_count_survivors(proc) == {}
    _ingest_again_exactly_once(tree, tmp_path / "data", scenes)


def test_ctrl_c_on_the_fast_path_stops_the_analysis_worker_too(tmp_path):
    """A changed folder of a tree ingested before: Ctrl-C while the trackers' run writes, with
    the analysis worker (and its fork server) started beside it. The ingest ends, nothing of
    its session outlives it, and the next ingest writes exactly one of everything."""
    tree, data, err = tmp_path / "tree", tmp_path / "data", tmp_path / "ingest.err"
    scenes = build(tree, dirs=6, scenes_per_dir=4)
    first = _start(tree, data, None, err)
    assert first.wait(timeout=300) == 0, err.read_text()[-3000:]
    timing = find_run_dirs(tree)[2].path / "timing.json"
    times = json.loads(timing.read_text())
    times["raw_times_s"][0] += 1.0
    timing.write_text(json.dumps(times))
    proc = _start(tree, data, None, err)

    def trackers_and_server() -> bool:
        procs = session(proc.pid)
        return "ingest_folders trackers' run" in err.read_text() and any(
            "forkserver" in _cmdline(pid) for pid in procs)

    _wait_for("the trackers' run beside the fork server", trackers_and_server, proc, err)
    proc.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C reaches the ingest alone
    assert proc.wait(timeout=60) != 0
    deadline = time.monotonic() + GONE_WITHIN
    while (left := session(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = {pid: _cmdline(pid) for pid in left}
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert survivors == {}
    _ingest_again_exactly_once(tree, data, scenes)
