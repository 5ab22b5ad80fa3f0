"""Parallel partitions: the cold ingest of the scale tree (default 335 run dirs x 20 scenes =
6,700 scenes) with `--workers 1` and with `--workers 2`, each into a fresh data dir, in one go;
then the same with Aim alone (`--trackers aim`). Prints each phase's time (tables, mlflow, aim),
the speedups, and estimates for more cores.

    ./dev python -m benchmarks.workers [--dirs 335] [--scenes-per-dir 20] [--keep DIR]

Targets on 2 cores: Aim phase at least 1.7x faster with 2 workers, whole ingest at least 1.6x.
MLflow on its default SQLite store keeps one writer: with workers it runs in the main process
while the Aim phase runs in the workers, so in the whole ingest the Aim phase shares the two
cores with MLflow's ~20 core-seconds, which caps its speedup near 1.7x even if the workers
wasted nothing. The Aim phase's own speedup is measured with Aim alone.

Estimates for 4 and 8 cores come from the measured per-run costs: from the times with 1 and 2
workers, each phase's cost per run is split into a part that did not shrink with a second
worker (serial: the index and structured-DB writes, Dagster's event writes, starting the
worker) and a part that halved (parallel); with n workers on n free cores a phase then takes
runs x (serial + parallel / n) (Amdahl's law, fitted on the two measurements, scaled from the
2-worker time so that a change of load between the two runs does not skew it). The rest of the
ingest (discovery, observation, the comparison file) and the MLflow phase on SQLite are kept
as measured. Optimistic for many cores: contention on the shared parts grows with n.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from align_track_pipeline.core.cores import usable_cores
from benchmarks.make_tree import build
from benchmarks.run import _phase_seconds

PHASES = ("tables", "mlflow", "aim")
TARGETS = {"aim": 1.7, "ingest": 1.6}


def _ingest(tree: Path, data: Path, workers: int, *extra: str) -> dict[str, float]:
    """Wall time of a cold `align-track ingest --workers N` and its phases' times."""
    cmd = [str(Path(sys.executable).parent / "align-track"), "ingest", "--json", "--workers",
           str(workers), "--experiments-dir", str(tree), "--data-dir", str(data), *extra]
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or json.loads(proc.stdout)["failed"]:
        sys.exit(f"ingest --workers {workers} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"ingest": wall} | _phase_seconds(proc.stderr)


def _scaled(one: float, two: float, n: int) -> float:
    """Seconds with n workers: the serial fraction f is fitted on 1 and 2 workers (T1 = S + P,
    T2 = S + P/2), and the 2-worker time scaled: T(n) = T2 (f + (1-f)/n) / (f + (1-f)/2)."""
    serial = min(1.0, max(0.0, (2 * two - one) / one))
    return two * (serial + (1 - serial) / n) / (serial + (1 - serial) / 2)


def _estimate(one: dict[str, float], two: dict[str, float], alone: tuple[float, float],
              n: int) -> dict[str, float]:
    """Seconds with n workers, per phase: tables from the whole ingests, Aim from Aim alone
    (its own serial fraction, not MLflow's share of the cores). With workers, MLflow on
    SQLite runs in the main process beside the Aim workers, one writer whatever n: the
    trackers take the longer of the two, and at least their work spread over n cores."""
    out = {"tables": _scaled(one["tables"], two["tables"], n),
           "aim": _scaled(*alone, n), "mlflow": two["mlflow"]}
    trackers = max(out["aim"], one["mlflow"], (out["aim"] * n + one["mlflow"]) / n)
    rest = two["ingest"] - two["tables"] - max(two["aim"], two["mlflow"])
    out["ingest"] = rest + out["tables"] + trackers
    return out


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + (
        f" on {usable_cores()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dirs", type=int, default=335)
    parser.add_argument("--scenes-per-dir", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="build and keep the tree and data here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="align-track-workers-"))
    shutil.rmtree(work, ignore_errors=True)
    scenes = build(work / "tree", args.dirs, args.scenes_per_dir)
    print(f"tree: {args.dirs} run dirs, {scenes} scenes; before: {_load()}", flush=True)
    times = {}
    for label, extra in (("", ()), ("aim alone, ", ("--trackers", "aim"))):
        for workers in (1, 2):
            data = work / f"data-{'aim-' if extra else ''}{workers}"
            times[label, workers] = _ingest(work / "tree", data, workers, *extra)
            print(f"{label}--workers {workers}: " + ", ".join(
                f"{k} {v:.1f} s" for k, v in times[label, workers].items() if k != "observe")
                + f"  ({_load()})", flush=True)
    one, two = times["", 1], times["", 2]
    alone = (times["aim alone, ", 1]["aim"], times["aim alone, ", 2]["aim"])
    print("whole ingest, every tracker:")
    for phase in (*PHASES, "ingest"):
        note = " (beside MLflow, sharing its cores)" if phase == "aim" else ""
        _speedup(phase + note, one[phase], two[phase], TARGETS.get(phase))
    # With one worker the trackers run one after the other; with two, side by side.
    _speedup("trackers (MLflow + Aim)", one["mlflow"] + one["aim"],
             max(two["mlflow"], two["aim"]), None)
    print("Aim alone (--trackers aim):")
    _speedup("aim", *alone, TARGETS["aim"])
    print(f"  Aim per run: {alone[0] / scenes * 1000:.1f} ms with 1 worker, "
          f"{alone[1] / scenes * 1000:.1f} ms of wall time with 2")
    for n in (4, 8):
        est = _estimate(one, two, alone, n)
        print(f"estimate, {n} cores / --workers {n}: aim {est['aim']:.1f} s "
              f"({alone[0] / est['aim']:.1f}x alone), tables {est['tables']:.1f} s, whole ingest "
              f"{est['ingest']:.1f} s ({one['ingest'] / est['ingest']:.1f}x); MLflow on SQLite "
              "as measured (one writer)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def _speedup(label: str, one: float, two: float, target: float | None) -> None:
    speedup = one / two
    met = f" (target >= {target}x: {'met' if speedup >= target else 'NOT met'})" if target else ""
    print(f"  {label:7} {one:7.1f} s -> {two:7.1f} s  {speedup:.2f}x{met}")


if __name__ == "__main__":
    main()
