"""Trace benchmark: what a trace per scene costs on the MLflow writer's two paths.

    ./dev python -m benchmarks.traces [--dirs 335] [--scenes-per-dir 20] [--server-dirs 40]
                                      [--cold] [--server] [--backends sqlite,postgres]
                                      [--server-workers 1]

Builds the scale tree and its Parquet tables, then writes every partition's MLflow runs to a
fresh SQLite store without traces and, to another fresh store, with them: the difference is
the traces' cost (target: 6,700 traces <= 20 s on 2 cores). Then the same through a local
`mlflow server` for `--server-dirs` partitions (target: >= 80 traces/s). `--cold` also times
two cold `align-track ingest` runs of the whole tree, traces off and on (target: <= 15 %
more with traces). `--server` times the server alone (the tree is built for `--server-dirs`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds

from align_track_pipeline.core.trackers.mlflow.plan import plan_runs
from align_track_pipeline.core.trackers.mlflow.traces import plan_traces
from benchmarks.make_tree import build
from benchmarks.run import _core_only


def _partitions(data: Path) -> list[tuple[str, list, list]]:
    experiments = ds.dataset(data / "parquet" / "experiments").to_table().to_pylist()
    scenes = ds.dataset(data / "parquet" / "scenes").to_table().to_pylist()
    out: dict[str, tuple[list, list]] = {}
    for row in experiments:
        out.setdefault(row["partition_key"], ([], []))[0].append(row)
    for row in scenes:
        out.setdefault(row["partition_key"], ([], []))[1].append(row)
    return [(key, exps, scns) for key, (exps, scns) in sorted(out.items())]


def _write(uri: str, parts: list, traces: bool) -> tuple[float, int]:
    """Seconds to upsert every partition (runs, and traces when asked); traces read back."""
    from align_track_pipeline.core.trackers.mlflow.writer import MlflowWriter

    writer = MlflowWriter(uri, "bench", artifact_root=None)
    start, count = time.perf_counter(), 0
    for key, exps, scenes in parts:
        specs = plan_runs(exps, scenes, None)
        planned = plan_traces(exps, scenes, "hierarchical") if traces else None
        count += writer.upsert(key, specs, planned).traces
    return time.perf_counter() - start, count


def _cold(tree: Path, work: Path, traces: str) -> float:
    data = work / f"cold-{traces}"
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "align-track"), "ingest",
                    "--experiments-dir", str(tree), "--data-dir", str(data)],
                   check=True, capture_output=True,
                   env={**os.environ, "ALIGN_TRACK_MLFLOW_TRACES": traces})
    return time.perf_counter() - start


def _sqlite(work: Path, parts: list, scenes: int) -> None:
    runs_only, _ = _write(f"sqlite:///{work}/runs.db", parts, False)
    both, count = _write(f"sqlite:///{work}/traces.db", parts, True)
    assert count == scenes, (count, scenes)
    print(f"SQLite, {len(parts)} partitions, {scenes} scenes: runs {runs_only:.1f} s, "
          f"runs + traces {both:.1f} s: traces {both - runs_only:.1f} s "
          f"({count / max(both - runs_only, 1e-9):.0f} traces/s)")


def _server_traces(work: Path, parts: list, backend: str, workers: int) -> None:
    """A real `mlflow server` on `backend` (the one `mlflow_http` starts): the runs written
    first, then the upsert with traces timed, each partition's runs checked and its traces
    counted back as the writer always does; requests counted on the client, CPU of the writer
    and of the server side. The same upsert without traces (the runs' check alone, which an
    ingest makes with or without traces) is timed too: the traces' own rate is beyond it."""
    from align_track_pipeline.core.trackers.mlflow.writer import MlflowWriter
    from benchmarks.mlflow_http import CountedRequests, cpu_seconds, server

    with server(work / f"server-{backend}", backend, workers) as (url, pids):
        writer = MlflowWriter(url, "bench-traces")
        plans = [(key, plan_runs(e, s, None), plan_traces(e, s, "hierarchical"))
                 for key, e, s in parts]
        for key, runs, _ in plans:
            writer.upsert(key, runs, None)
        started = time.perf_counter()  # what the upsert costs without traces: the runs' check
        for key, runs, _ in plans:
            writer.upsert(key, runs, None)
        runs_check = time.perf_counter() - started
        counted = CountedRequests()
        with counted.counting():
            before = [cpu_seconds([pid]) for pid in pids]
            client_cpu = time.process_time()
            start = time.perf_counter()
            count = sum(writer.upsert(key, runs, traces).traces for key, runs, traces in plans)
            seconds = time.perf_counter() - start
            client_cpu = time.process_time() - client_cpu
            spent = [cpu_seconds([pid]) - b for pid, b in zip(pids, before, strict=True)]
        assert count == sum(len(t) for _, _, t in plans), count
        print(f"server on {backend} (--workers {workers}), {len(parts)} partitions: {count} "
              f"traces in {seconds:.1f} s ({count / seconds:.0f} traces/s, read back "
              f"included); CPU a trace: writer {client_cpu / count * 1000:.1f} ms, server "
              f"{spent[0] / count * 1000:.1f} ms, Postgres "
              f"{sum(spent[1:]) / count * 1000:.1f} ms")
        print(f"  the same upsert without traces (the partitions' runs checked): "
              f"{runs_check:.1f} s; the traces beyond it: {seconds - runs_check:.1f} s, "
              f"{count / (seconds - runs_check):.0f} traces/s")
        for kind, n in counted.by_kind.most_common():
            print(f"  {n:6d}  {kind}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dirs", type=int, default=335)
    parser.add_argument("--scenes-per-dir", type=int, default=20)
    parser.add_argument("--server-dirs", type=int, default=40)
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--server", action="store_true", help="time the server alone")
    parser.add_argument("--backends", default="sqlite", help="the server's: sqlite,postgres")
    parser.add_argument("--server-workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dirs = args.server_dirs if args.server else args.dirs
        scenes = build(work / "tree", dirs, args.scenes_per_dir)
        (work / "tables").mkdir()
        _core_only(work / "tree", work / "tables")  # the Parquet tables alone
        parts = _partitions(work / "tables")
        if not args.server:
            _sqlite(work, parts, scenes)
        for backend in args.backends.split(","):
            _server_traces(work, parts[: args.server_dirs], backend, args.server_workers)
        if args.cold:
            off, on = _cold(work / "tree", work, "off"), _cold(work / "tree", work, "on")
            print(f"cold ingest: traces off {off:.1f} s, on {on:.1f} s "
                  f"(+{(on - off) / off * 100:.0f} %)")

if __name__ == "__main__":
    main()
