"""Aim write cost alone: cold `align-track ingest --trackers aim` of a small tree, repeated,
each into a fresh data dir, with one worker and with two; prints each attempt's Aim phase
and the median per worker count, with the load average.

    ./dev python -m benchmarks.aim_write [--dirs 60] [--scenes-per-dir 20] [--repeat 3]

Used to price a change to how runs are written (e.g. the options their databases open with).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks.make_tree import build
from benchmarks.workers import _ingest, _load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dirs", type=int, default=60)
    parser.add_argument("--scenes-per-dir", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="align-track-aim-write-"))
    try:
        scenes = build(work / "tree", args.dirs, args.scenes_per_dir)
        print(f"tree: {args.dirs} run dirs, {scenes} scenes; before: {_load()}", flush=True)
        for workers in (1, 2):
            seconds = []
            for attempt in range(args.repeat):
                data = work / f"data-{workers}-{attempt}"
                seconds.append(_ingest(work / "tree", data, workers, "--trackers", "aim")["aim"])
                shutil.rmtree(data, ignore_errors=True)
                print(f"  --workers {workers}, attempt {attempt + 1}: aim {seconds[-1]:.1f} s "
                      f"({_load()})", flush=True)
            median = statistics.median(seconds)
            print(f"--workers {workers}: median aim phase {median:.1f} s, "
                  f"{median / scenes * 1000:.1f} ms per run", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
