"""Dagster event writes on SQLite: one run logging 200 partition materializations (as the
batch assets do), with Dagster's own event log and with the CLI's (connections kept open,
`cli/event_log.py`), alternating, each in a fresh process and instance; prints the median
wall time and CPU of each.

    ./dev python -m benchmarks.events [--events 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

parts = dg.DynamicPartitionsDefinition(name="bench_parts")


@dg.asset(partitions_def=parts)
def bench(context) -> None:
    for key in context.partition_keys:
        context.log_event(dg.AssetMaterialization(asset_key="bench", partition=key,
                                                  metadata={"rows": 20}, tags={"v": key}))


def one(kept: bool, events: int) -> tuple[float, float]:
    """In this process: (wall, CPU) of a run logging `events` materializations."""
    from align_track_pipeline.cli.instance import dagster_home, open_instance

    data = Path(tempfile.mkdtemp(prefix="align-track-events-"))
    open_instance(data).dispose()  # the home and its dagster.yaml
    instance = (open_instance(data) if kept
                else dg.DagsterInstance.from_config(str(dagster_home(data))))
    keys = [f"p{i:05}" for i in range(events)]
    instance.add_dynamic_partitions(parts.name, keys)
    wall, cpu = time.perf_counter(), time.process_time()
    dg.materialize([bench], instance=instance, tags={
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1]})
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", choices=("dagster", "kept"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(*one(args.one == "kept", args.events))
        return
    found: dict[str, list[tuple[float, float]]] = {"dagster": [], "kept": []}
    for _ in range(args.repeat):
        for label in found:
            out = subprocess.run([sys.executable, "-m", "benchmarks.events", "--one", label,
                                  "--events", str(args.events)], capture_output=True,
                                 text=True, check=True).stdout.split()
            found[label].append((float(out[-2]), float(out[-1])))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{args.events} materializations in one run, median of {args.repeat} "
          f"(load average {load}):")
    for label, times in found.items():
        wall = statistics.median(t[0] for t in times)
        cpu = statistics.median(t[1] for t in times)
        print(f"  {label:8} event log: {wall:6.2f} s wall, {cpu:5.2f} s CPU, "
              f"{cpu / args.events * 1000:.1f} ms CPU per event")


if __name__ == "__main__":
    main()
