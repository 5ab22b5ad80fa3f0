"""Freshness benchmark: what a tick costs on a large unchanged tree, and how fast one changed
run directory reaches every store.

    ./dev python -m benchmarks.freshness [--dirs 10000] [--changed-among 335] [--keep DIR]

It takes about 15 minutes on 2 cores, most of it the cold Aim ingest of part 2.

1. A 10,000-dir tree (1 scene each: the tick's cost is per directory, not per scene) is
   registered and observed once; then, with nothing changed, a discovery-sensor tick and
   the observation `align-track ingest` makes (stat signatures against the fingerprint cache:
   no Dagster run when nothing changed) are timed, 5 times each alternately (the daemon ticks
   every few seconds: the medians are the steady state), then a forced observation run (the nightly
   schedule's), and the events each wrote are counted.
2. A 335-dir / 6,700-scene tree is ingested cold into Parquet, MLflow and Aim (minutes: Aim);
   then one file of one run directory changes and `align-track ingest` brings all three stores
   up to date; its wall time is printed (a fresh process: imports included). With `--keep
   DIR`, a later run starts from the tree and stores kept there (no cold ingest): each run
   changes the same file again.

Targets (2 cores): first registration of 10,000 dirs <= 30 s; no-change tick + observation
<= 1 s with zero events written; one changed dir among 335 re-ingested into all stores <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from align_track_pipeline.cli.fast_path import peek_versions
from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.core.source.discovery import scan_tree
from align_track_pipeline.definitions import build_defs
from align_track_pipeline.defs.dagster_compat import last_event_id
from align_track_pipeline.defs.freshness import FOLDERS
from align_track_pipeline.defs.sensors import experiment_folder_sensor
from benchmarks.make_tree import build


def _asset_events_since(instance: dg.DagsterInstance, storage_id: int) -> int:
    """Observations and materializations stored after `storage_id` (run bookkeeping aside)."""
    count = len(instance.fetch_observations(
        dg.AssetRecordsFilter(dg.AssetKey(FOLDERS), after_storage_id=storage_id),
        limit=10_000).records)
    for asset in ("experiments", "scenes", "mlflow_runs", "aim_runs"):
        count += len(instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey(asset), after_storage_id=storage_id),
            limit=10_000).records)
    return count


_REPEATS = 5


def _seconds(times: list[float]) -> str:
    return " / ".join(f"{t:.2f}" for t in times)


def no_change_tick(work: Path, dirs: int) -> None:
    tree, data = work / "tree", work / "data"
    started = time.perf_counter()
    build(tree, dirs, 1)
    print(f"built {dirs} run dirs in {time.perf_counter() - started:.1f} s")
    defs = build_defs(str(tree), str(data))
    observe = defs.resolve_job_def("observe_experiment_folders")
    with open_instance(data) as instance:

        def tick():
            context = dg.build_sensor_context(instance=instance, definitions=defs)
            return experiment_folder_sensor(context, tree=defs.resources["tree"],
                                            store=defs.resources["store"],
                                            trackers=defs.resources["trackers"])

        started = time.perf_counter()
        first = tick()
        for request in first.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        observe.execute_in_process(instance=instance)
        print(f"first tick + observation (register and hash {dirs} dirs): "
              f"{time.perf_counter() - started:.2f} s, "
              f"{_asset_events_since(instance, 0)} observations (target <= 30 s)")

        before_records = last_event_id(instance)
        ticks, observations = [], []
        for _ in range(_REPEATS):  # the daemon ticks every few seconds: steady state, 5 each
            started = time.perf_counter()
            result = tick()
            ticks.append(time.perf_counter() - started)
            started = time.perf_counter()
            peeked = peek_versions(instance, scan_tree(tree).run_dirs, defs.resources["store"])
            observations.append(time.perf_counter() - started)
        tick_s, observe_s = statistics.median(ticks), statistics.median(observations)
        print(f"no-change sensor tick: median {tick_s:.2f} s ({_seconds(ticks)}), launches "
              f"{'nothing' if isinstance(result, dg.SkipReason) else result.run_requests}")
        print(f"no-change observation as `ingest` makes it (stat signatures, no run): median "
              f"{observe_s:.2f} s ({_seconds(observations)}), {len(peeked.changed)} changed")
        print(f"event-log rows written by the {_REPEATS} ticks and observations: "
              f"{last_event_id(instance) - before_records}")
        print(f"tick + observation: {tick_s + observe_s:.2f} s (target <= 1 s)")
        started = time.perf_counter()
        observe.execute_in_process(instance=instance)
        print(f"forced observation run (the nightly schedule's): "
              f"{time.perf_counter() - started:.2f} s, "
              f"{_asset_events_since(instance, before_records)} asset events written")


def _ingest(tree: Path, data: Path) -> tuple[float, dict, list[str]]:
    cmd = [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
           "--experiments-dir", str(tree), "--data-dir", str(data)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"ingest failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    runs = [line.strip() for line in proc.stderr.splitlines()
            if line.lstrip().startswith(("ingest_folders:", "analysis:"))]
    return time.perf_counter() - started, json.loads(proc.stdout), runs


def one_changed_dir(work: Path, dirs: int, scenes_per_dir: int) -> None:
    tree, data = work / "tree", work / "data"
    ingested = work / f".ingested-{dirs}-{scenes_per_dir}"  # kept from an earlier --keep run
    if not ingested.exists():
        shutil.rmtree(work, ignore_errors=True)
        build(tree, dirs, scenes_per_dir)
        cold, _, _ = _ingest(tree, data)
        print(f"cold ingest of {dirs} dirs / {dirs * scenes_per_dir} scenes, all stores: "
              f"{cold:.1f} s")
        ingested.touch()
    changed = sorted(tree.rglob("timing.json"))[dirs // 2]
    timing = json.loads(changed.read_text())
    timing["raw_times_s"][0] += 1.0
    changed.write_text(json.dumps(timing))
    wall, report, runs = _ingest(tree, data)
    print(f"one changed dir among {dirs}: {wall:.2f} s wall (target <= 5 s), "
          f"materialized {report['materialized']}, {len(report['fresh'])} fresh; "
          + "; ".join(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dirs", type=int, default=10_000,
                        help="run dirs of the no-change tree (0: skip part 1)")
    parser.add_argument("--changed-among", type=int, default=335,
                        help="run dirs of the tree with one change (0: skip part 2)")
    parser.add_argument("--scenes-per-dir", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="build and keep the trees and data here; "
                        "a later run with the same DIR starts part 2 from the kept ingest")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="align-track-fresh-"))
    try:
        if args.dirs:
            shutil.rmtree(work / "tick", ignore_errors=True)
            no_change_tick(work / "tick", args.dirs)
        if args.changed_among:
            one_changed_dir(work / "changed", args.changed_among, args.scenes_per_dir)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
