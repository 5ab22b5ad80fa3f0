"""Cold-ingest benchmark: build the 335-dir / 6,700-scene tree, run `align-track ingest` on it
in a fresh process, and print scenes/s, wall time and peak memory (RSS of the ingest process).

    ./dev python -m benchmarks.run [--dirs 335] [--scenes-per-dir 20] [--keep DIR]

Targets (2 cores): cold Parquet ingest <= 10 s wall, peak RSS <= 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from align_track_pipeline.core.source.discovery import FingerprintCache, find_run_dirs
from align_track_pipeline.core.tables.writer import PartitionJob, write_partition
from benchmarks.make_tree import build


def _core_only(tree: Path, data: Path) -> float:
    """Discovery, fingerprints, parsing and Parquet writes alone, in this one process:
    the pipeline's own cost, without Dagster's per-event bookkeeping."""
    start = time.perf_counter()
    run_dirs = find_run_dirs(tree)
    cache = FingerprintCache(data / "fingerprints.sqlite")
    versions = cache.versions(run_dirs)
    cache.close()
    for r in run_dirs:
        write = write_partition(PartitionJob(r.key, str(tree), str(data), versions[r.key]))
        assert write.error is None, write.error
    return time.perf_counter() - start


def _aim_numbers(data: Path, work: Path, full_reindex: bool) -> list[str]:
    """Index cost per run, Aim's own run-creation cost for the same runs, `aim storage
    reindex` on the same repo."""
    import pyarrow.dataset as ds

    from align_track_pipeline.core.trackers.aim import indexing, lean_runs, storage
    from align_track_pipeline.core.trackers.aim.plan import plan_scene_runs

    repo = storage.open_repo(data / "aim")
    hashes = storage.all_run_hashes(repo)
    start = time.perf_counter()
    indexing.index_runs(repo, hashes)
    index_ms = (time.perf_counter() - start) * 1000 / len(hashes)
    lines = [f"  Aim incremental index, index opened once: {index_ms:.2f} ms per run "
             f"({len(hashes)} runs)"]

    experiments = ds.dataset(data / "parquet" / "experiments").to_table().to_pylist()
    scenes = ds.dataset(data / "parquet" / "scenes").to_table().to_pylist()
    plan = plan_scene_runs(experiments, scenes)
    bare = storage.open_repo(work / "aim-baseline")
    start = time.perf_counter()
    for spec in plan:  # Aim alone: the same lean runs, no manifest, no index
        run = lean_runs.lean_run(bare, spec.experiment)
        run.name = spec.name
        for key, value in spec.params.items():
            run[key] = value
        for name, value in spec.metrics.items():
            run.track(value, name=name)
        run.close()
    baseline = time.perf_counter() - start
    lines.append(f"  Aim's own run creation (same {len(plan)} lean runs): {baseline:.1f} s, "
                 f"{len(plan) / baseline:.1f} runs/s")
    if full_reindex:
        start = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "aim"), "storage", "--repo",
                        str(data / "aim"), "reindex", "--yes"], check=True,
                       capture_output=True)
        lines.append(f"  `aim storage reindex` on the same repo: "
                     f"{time.perf_counter() - start:.1f} s")
    return lines, baseline


def _phase_seconds(stderr: str) -> dict[str, float]:
    """`<phase>: N partitions in X s` lines that ingest prints on stderr."""
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\w+): \d+ partitions in ([\d.]+) s$",
                                                    stderr, re.MULTILINE)}


def _ingest(tree: Path, data: Path) -> tuple[float, dict]:
    cmd = [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
           "--experiments-dir", str(tree), "--data-dir", str(data)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"ingest failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout) | {"phases": _phase_seconds(proc.stderr)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dirs", type=int, default=335)
    parser.add_argument("--scenes-per-dir", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="build and keep the tree and data here")
    parser.add_argument("--no-full-reindex", action="store_true",
                        help="skip timing `aim storage reindex` (minutes on 6,700 runs)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="align-track-bench-"))
    tree, data = work / "tree", work / "data"
    shutil.rmtree(work, ignore_errors=True)
    scenes = build(tree, args.dirs, args.scenes_per_dir)

    cold, report = _ingest(tree, data)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    warm, again = _ingest(tree, data)
    core = _core_only(tree, work / "core-data")
    print(f"tree: {args.dirs} run dirs, {scenes} scenes")
    print(f"cold ingest: {cold:.2f} s wall, {scenes / cold:.0f} scenes/s, "
          f"{len(report['materialized'])} partitions materialized")
    print(f"peak RSS of the ingest process: {peak_mib:.0f} MiB")
    runs = args.dirs + scenes  # one parent per (single-target) run dir, one child per scene
    for phase, seconds in report["phases"].items():
        rate = {"mlflow": f", {runs / seconds:.0f} MLflow runs/s",
                "aim": f", {scenes / seconds:.1f} Aim runs/s (indexing included)"}.get(phase, "")
        print(f"  phase {phase}: {seconds:.2f} s{rate}")
    aim_lines, aim_baseline = _aim_numbers(data, work, not args.no_full_reindex)
    print("\n".join(aim_lines))
    print(f"  aim phase / Aim's own creation cost: {report['phases']['aim'] / aim_baseline:.2f}x")
    print(f"no-change ingest: {warm:.2f} s wall, {len(again['fresh'])} partitions fresh, "
          f"{len(again['materialized'])} materialized")
    print(f"core only (parse + Parquet, 1 process, no Dagster): {core:.2f} s, "
          f"{scenes / core:.0f} scenes/s")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
