"""Latency benchmark: how long a run directory dropped into the tree, changed or removed takes
to reach Parquet, MLflow and Aim, with `align-track dagster-ui` at its defaults (the real
daemon, sensors and run launches).

    ./dev python -m benchmarks.latency [--drops 5] [--keep DIR]

It copies the bundled tree into a temporary folder, starts `align-track dagster-ui` on a free
port over it and an empty data dir, and waits for the initial ingest. Then it drops copies of a
sample run directory under new names, one at a time (each appears at once: copied beside the
tree, then renamed into it), and polls each store until the new folder's scenes are all there:
the Parquet `scenes` partition, finished MLflow scene runs, Aim runs. Then one file changes
(the first drop's input_output.json loses its last item: every store must show one scene fewer),
and one folder is removed (every store must hold none of it). It prints each measurement and the
medians, with the load (`uptime`). About 5 minutes on 2 cores.

Target: median of the drops within 20 s in every store; the change within 20 s; the removal
within 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.tables.store import ParquetStore

REPO = Path(__file__).resolve().parents[1]
SAMPLE = "wrapper_2026_04/random"
STORES = ("parquet", "mlflow", "aim")
POLL_SECONDS = 0.25
TIMEOUT = 300.0


def _items(run_dir: Path) -> int:
    data = json.loads((run_dir / "input_output.json").read_text())
    return len(data["results"] if isinstance(data, dict) else data)


class Stores:
    """Counts of a partition's scenes in each store, read independently of the writers."""

    def __init__(self, data: Path):
        self.data = data

    def parquet(self, key: str) -> int:
        path = ParquetStore(self.data).path("scenes", key)
        try:
            return pq.read_metadata(path).num_rows
        except OSError:  # not written yet, or being replaced
            return 0

    def mlflow(self, key: str) -> int:
        """Finished, active scene runs of the partition (a read-only look at mlflow.db)."""
        db = self.data / "mlflow.db"
        if not db.exists():
            return 0
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone():
                return 0  # being created
            (count,) = conn.execute(
                "SELECT count(*) FROM runs r"
                " JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = 'partition_key'"
                " JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'run_type'"
                " WHERE p.value = ? AND t.value = 'scene' AND r.status = 'FINISHED'"
                " AND r.lifecycle_stage = 'active'", (key,)).fetchone()
        return count

    def aim(self, key: str) -> int:
        """Runs a fresh `aim.Repo` finds for the partition (not archived)."""
        from aim import Repo
        from sqlalchemy.exc import OperationalError

        repo_path = self.data / "aim"
        if not (repo_path / ".aim").exists():
            return 0
        repo = Repo(str(repo_path))
        try:
            query = f'run.partition_key == "{key}" and run.archived == False'
            return sum(1 for _ in repo.query_runs(query, report_mode=0).iter_runs())
        except OperationalError:  # the repo is being created: its tables are not there yet
            return 0
        finally:
            repo.close()

    def counts(self, key: str) -> dict[str, int]:
        return {store: getattr(self, store)(key) for store in STORES}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(tree: Path, data: Path, log: Path) -> subprocess.Popen:
    """`align-track dagster-ui` as a user starts it: defaults only (no ALIGN_TRACK_*,
    DAGSTER_* or MLFLOW_* from this shell)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ALIGN_TRACK_", "DAGSTER_", "MLFLOW_"))}
    cli = Path(sys.executable).parent / "align-track"
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(cli), "dagster-ui", "--experiments-dir", str(tree), "--data-dir", str(data),
             "--port", str(_free_port())],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_ui(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
    except ProcessLookupError:
        pass


def until(done: Callable[[str], bool], ui: subprocess.Popen, log: Path) -> dict[str, float]:
    """Seconds until `done(store)` held for each store, from now."""
    started, seen = time.monotonic(), {}
    while len(seen) < len(STORES):
        for store in STORES:
            if store not in seen and done(store):
                seen[store] = time.monotonic() - started
        if ui.poll() is not None:
            sys.exit(f"dagster-ui exited:\n{log.read_text()[-3000:]}")
        if time.monotonic() - started > TIMEOUT:
            sys.exit(f"not in every store after {TIMEOUT:.0f} s: {sorted(seen)}\n"
                     + log.read_text()[-3000:])
        time.sleep(POLL_SECONDS)
    return seen


def initial_ingest(tree: Path, stores: Stores, ui: subprocess.Popen, log: Path) -> float:
    """Seconds until every run directory of the bundled tree has scenes in every store."""
    keys = [r.key for r in find_run_dirs(tree)]
    started = time.monotonic()
    for key in keys:
        until(lambda store, k=key: getattr(stores, store)(k) > 0, ui, log)
    return time.monotonic() - started


def drop(tree: Path, name: str, stores: Stores, ui, log) -> dict[str, float]:
    """A copy of the sample run directory appears under `name`; seconds until it is in each
    store with all its scenes."""
    staged = tree.parent / "staging" / name
    shutil.copytree(tree / SAMPLE, staged)
    scenes = _items(staged)
    (tree / name).parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged, tree / name)
    return until(lambda store: getattr(stores, store)(name) == scenes, ui, log)


def change(tree: Path, name: str, stores: Stores, ui, log) -> dict[str, float]:
    """The folder's input_output.json loses its last item: seconds until each store has one
    scene fewer."""
    path = tree / name / "input_output.json"
    data = json.loads(path.read_text())
    items = data["results"] if isinstance(data, dict) else data
    del items[-1]
    scenes = len(items)
    tmp = path.with_name(".input_output.json.new")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
    return until(lambda store: getattr(stores, store)(name) == scenes, ui, log)


def remove(tree: Path, name: str, stores: Stores, ui, log) -> dict[str, float]:
    """The folder is deleted: seconds until no store holds any of its scenes."""
    shutil.rmtree(tree / name)
    return until(lambda store: getattr(stores, store)(name) == 0, ui, log)


def _row(label: str, seconds: dict[str, float]) -> str:
    return f"{label:<24}" + "".join(f"{seconds[s]:>9.1f}" for s in STORES)


def run(work: Path, drops: int) -> None:
    tree, data, log = work / "tree", work / "data", work / "dagster-ui.log"
    shutil.copytree(REPO / "examples" / "experiment-data", tree)
    (tree / "README.md").unlink(missing_ok=True)
    stores = Stores(data)
    print(f"load before: {_uptime()}")
    ui = start_ui(tree, data, log)
    try:
        print(f"initial ingest of the bundled tree: {initial_ingest(tree, stores, ui, log):.1f} s")
        time.sleep(10)  # let the automation's follow-ups (scene comparison, Aim index) pass
        print(f"{'seconds until in':<24}" + "".join(f"{s:>9}" for s in STORES))
        results = []
        for i in range(drops):
            results.append(drop(tree, f"latency_drops/drop-{i}", stores, ui, log))
            print(_row(f"new folder {i + 1}", results[-1]), flush=True)
        medians = {s: statistics.median(r[s] for r in results) for s in STORES}
        print(_row(f"median of {drops} drops", medians))
        print(_row("changed file", change(tree, "latency_drops/drop-0", stores, ui, log)))
        print(_row("removed folder", remove(tree, "latency_drops/drop-1", stores, ui, log)))
    finally:
        stop_ui(ui)
    print(f"load after: {_uptime()}")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drops", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args.keep, args.drops)
        return
    with tempfile.TemporaryDirectory(prefix="align-track-latency-") as work:
        run(Path(work), args.drops)


if __name__ == "__main__":
    main()
