"""MLflow runs through a real `mlflow server`: runs/s and HTTP requests per run of the writer.

    ./dev python -m benchmarks.mlflow_http [--dirs 20] [--scenes-per-dir 10]
                                           [--backends postgres,sqlite] [--server-workers 2]

Builds a tree and its Parquet tables, starts `mlflow server` on 127.0.0.1 over a throwaway
Postgres (Debian's `postgresql` package) and/or a SQLite file, and upserts every partition's
runs through the pipeline's writer (`MlflowWriter`, the HTTP path), client and server on the
same cores. Every request the writer sends is counted on the client (the real server answers
each); afterwards the runs are counted back: exactly one active run per planned key.
"""

from __future__ import annotations

import argparse
import itertools
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.make_tree import build
from benchmarks.postgres import server_binaries, throwaway_postgres


class CountedRequests:
    """Every HTTP request this process sends while open, by `METHOD /path` (requests'
    transport adapter, which MLflow's client uses), ids in paths folded to `*`."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    @contextmanager
    def counting(self) -> Iterator[CountedRequests]:
        from urllib.parse import urlsplit

        from requests.adapters import HTTPAdapter

        send = HTTPAdapter.send

        def counted(adapter, request, *args, **kwargs):
            path = re.sub(r"/tr-[0-9a-f]+", "/*", urlsplit(request.url).path)
            if "/mlflow-artifacts/artifacts/" in path:
                path = path.split("/mlflow-artifacts/artifacts/")[0] + "/mlflow-artifacts/*"
            with self._lock:
                self.by_kind[f"{request.method} {path}"] += 1
            return send(adapter, request, *args, **kwargs)

        HTTPAdapter.send = counted
        try:
            yield self
        finally:
            HTTPAdapter.send = send


@contextmanager
def postgres() -> Iterator[tuple[str, int]]:
    """A throwaway Postgres on 127.0.0.1 (trust auth, fsync off): its database's URI and the
    server's pid."""
    with throwaway_postgres(server_binaries()) as (database, pid):
        yield database(), pid


@contextmanager
def server(work: Path, backend: str, workers: int) -> Iterator[tuple[str, list[int]]]:
    """`mlflow server` on `backend` ("postgres" or "sqlite"): its URL and the pids of the
    server side (the server, the database server)."""
    from benchmarks.shared_stores import _server

    with postgres() if backend == "postgres" else _nothing() as (uri, database):
        proc, url = _server(work / "server", uri, workers)
        try:
            yield url, [proc.pid] + ([database] if database else [])
        finally:
            proc.terminate()
            proc.wait(30)


@contextmanager
def _nothing() -> Iterator[tuple[None, None]]:
    yield None, None


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes and all their descendants so far."""
    import psutil

    total = 0.0
    for pid in pids:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


@dataclass
class Measured:
    seconds: float  # wall time
    client_cpu: float  # this process (the writer), CPU seconds
    server_cpu: float  # the server and its database
    requests: CountedRequests


def write_all(url: str, server_pids: list[int], plans: list[tuple[str, list]]) -> Measured:
    """Upsert every partition's runs through the writer: wall and CPU time, requests."""
    from align_track_pipeline.core.trackers.mlflow.writer import MlflowWriter

    writer = MlflowWriter(url, "bench-http")  # the experiment exists before the clock starts
    counted = CountedRequests()
    with counted.counting():
        server_cpu, client_cpu = cpu_seconds(server_pids), time.process_time()
        start = time.perf_counter()
        for key, specs in plans:
            writer.upsert(key, specs, None)
        seconds = time.perf_counter() - start
        client_cpu = time.process_time() - client_cpu
        server_cpu = cpu_seconds(server_pids) - server_cpu
    _check(url, writer.experiment_id, plans)
    return Measured(seconds, client_cpu, server_cpu, counted)


def _check(url: str, experiment_id: str, plans: list[tuple[str, list]]) -> None:
    """Exactly one active, finished run per planned key."""
    from mlflow import MlflowClient

    from align_track_pipeline.core.trackers.mlflow.plan import TAG_KEY

    runs = MlflowClient(url).search_runs([experiment_id], max_results=50000)
    keys = sorted(r.data.tags[TAG_KEY] for r in runs)
    assert keys == sorted(s.key for _, specs in plans for s in specs), "runs differ from plan"
    assert {r.info.status for r in runs} == {"FINISHED"}


def main() -> None:
    from align_track_pipeline.core.trackers.mlflow.plan import plan_runs
    from benchmarks.run import _core_only
    from benchmarks.traces import _partitions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dirs", type=int, default=20)
    parser.add_argument("--scenes-per-dir", type=int, default=10)
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--server-workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build(work / "tree", args.dirs, args.scenes_per_dir)
        (work / "tables").mkdir()
        _core_only(work / "tree", work / "tables")
        plans = [(key, plan_runs(e, s, work / "tree" / e[0]["experiment_path"]))
                 for key, e, s in _partitions(work / "tables")]
        runs = sum(len(specs) for _, specs in plans)
        files = sum(len(s.artifacts) for _, specs in plans for s in specs)
        print(f"{len(plans)} partitions, {runs} runs, {files} artifact files "
              f"({files / runs:.2f} a run)")
        for n, backend in zip(itertools.count(), args.backends.split(",")):
            with server(work / f"{backend}-{n}", backend, args.server_workers) as (url, pids):
                got = write_all(url, pids, plans)
            cpu = (got.client_cpu + got.server_cpu) / runs * 1000
            print(f"server on {backend} (--workers {args.server_workers}): {runs} runs in "
                  f"{got.seconds:.1f} s, {runs / got.seconds:.1f} runs/s, "
                  f"{got.requests.total / runs:.2f} requests a run; CPU a run: writer "
                  f"{got.client_cpu / runs * 1000:.1f} ms, server and database "
                  f"{got.server_cpu / runs * 1000:.1f} ms (2 idle cores: at most "
                  f"{2000 / cpu:.0f} runs/s)")
            for kind, count in got.requests.by_kind.most_common():
                print(f"  {count / runs:6.2f} a run  {kind}")


if __name__ == "__main__":
    main()
