"""Many writers, one store: N concurrent `align-track ingest`s, each with its own data dir (so
its own Dagster instance), into one MLflow store and one Aim repo. Prints wall time and the
counts that must be exact: runs, duplicate keys, orphaned children, Aim runs.

    ./dev python -m benchmarks.shared_stores [--dirs 30] [--scenes-per-dir 10] [--writers 2]

Stores: a real `mlflow server` (SQLite backend) on 127.0.0.1, and a shared SQLite store with a
shared Aim repo.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow import MlflowClient

from benchmarks.make_tree import build

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(root: Path, backend: str | None = None,
            workers: int = 1) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on 127.0.0.1 (a SQLite file in `root` unless `backend` is given),
    proxied artifacts in `root`."""
    port = _free_port()
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port",
                             str(port), "--workers", str(workers), "--backend-store-uri",
                             backend or f"sqlite:///{root}/server.db", "--artifacts-destination",
                             str(root / "artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            # no job runner: 7 more processes a benchmark never uses
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("mlflow server did not start")


def _ingest_at_once(tree: Path, data_dirs: list[Path], *extra: str) -> float:
    started = time.perf_counter()
    procs = [subprocess.Popen([str(BIN / "align-track"), "ingest", "--json", "--experiments-dir",
                               str(tree), "--data-dir", str(d), *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for d in data_dirs]
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0 or json.loads(out)["failed"]:
            sys.exit(f"ingest failed ({proc.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - started


def _mlflow_counts(uri: str, experiment: str) -> str:
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              max_results=50000)
    keys = [r.data.tags["align_track.key"] for r in runs]
    parents = {r.info.run_id for r in runs if r.data.tags["run_type"] == "parent"}
    orphans = sum(r.data.tags["run_type"] == "scene"
                  and r.data.tags.get("mlflow.parentRunId") not in parents for r in runs)
    return (f"{len(runs)} MLflow runs, {len(keys) - len(set(keys))} duplicate keys, "
            f"{orphans} orphaned children")


def _expected(data: Path) -> str:
    """What exactly one run per key means for these tables."""
    import pyarrow.dataset as ds

    parents = ds.dataset(data / "parquet" / "experiments").count_rows()
    scenes = ds.dataset(data / "parquet" / "scenes").count_rows()
    return (f"{parents + scenes} MLflow runs ({parents} parents, one per experiment row; "
            f"{scenes} children, one per scene), {scenes} Aim runs")


def _aim_count(repo: Path) -> int:
    out = subprocess.run([sys.executable, "-c", "import sys, aim; print(len(list("
                          "aim.Repo(sys.argv[1]).iter_runs())))", str(repo)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dirs", type=int, default=30)
    parser.add_argument("--scenes-per-dir", type=int, default=10)
    parser.add_argument("--writers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="align-track-shared-"))
    scenes = build(work / "tree", args.dirs, args.scenes_per_dir)
    print(f"tree: {args.dirs} run dirs, {scenes} scenes")

    server, url = _server(work / "server")
    try:
        dirs = [work / f"server-writer-{n}" for n in range(args.writers)]
        wall = _ingest_at_once(work / "tree", dirs, "--mlflow-uri", url)
        print(f"expected: {_expected(dirs[0])}")
        print(f"{args.writers} writers, one mlflow server: {wall:.1f} s; "
              f"{_mlflow_counts(url, 'align-system')}")
    finally:
        server.terminate()
        server.wait()

    uri = f"sqlite:///{work}/shared/mlflow.db"
    dirs = [work / f"sqlite-writer-{n}" for n in range(args.writers)]
    wall = _ingest_at_once(work / "tree", dirs, "--mlflow-uri", uri, "--aim-repo",
                           str(work / "shared" / "aim"))
    print(f"{args.writers} writers, one SQLite store and one Aim repo: {wall:.1f} s; "
          f"{_mlflow_counts(uri, 'align-system')}; {_aim_count(work / 'shared' / 'aim')} "
          "Aim runs")


if __name__ == "__main__":
    main()
