"""A/B of cold ingests on a loaded machine: this checkout against another commit (`--base`),
with `--workers 1` and `--workers 2`, alternating so that both see the same load, repeated
(`--repeat`, median reported). Each ingest is a fresh data dir; its wall time, user + sys CPU
(the ingest and every process under it) and phase times are printed as it ends, with the load
average, then the medians and the speedups.

    ./dev python -m benchmarks.ab --base HEAD~3 [--head HEAD] [--dirs 60] [--repeat 3]
                                  [--workers 1 2]    (0: no `--workers`, the default)

The base (and `--head`, else this checkout) is `git archive`d into a temporary folder and run
with the same interpreter and packages (put first on `PYTHONPATH`, which the workers inherit).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from benchmarks.make_tree import build
from benchmarks.run import _phase_seconds

ROOT = Path(__file__).resolve().parents[1]
CLI = "from align_track_pipeline.cli.main import main; sys.exit(main())"


def export(rev: str, into: Path) -> Path:
    """The package as of `rev`, unpacked under `into`."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "align_track_pipeline"],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def ingest(code: Path | None, tree: Path, data: Path, workers: int) -> dict[str, float]:
    """One cold ingest: wall, CPU of the whole process tree, phases."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    chosen = ["--workers", str(workers)] if workers else []
    cmd = [sys.executable, "-c", f"import sys; {CLI}", "ingest", "--json", *chosen,
           "--experiments-dir", str(tree), "--data-dir", str(data)]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=tree.parent)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if os.waitstatus_to_exitcode(status) != 0 or json.loads(stdout)["failed"]:
        sys.exit(f"ingest --workers {workers} failed:\n{stderr[-3000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime} | _phase_seconds(stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="git commit to compare against (default: none)")
    parser.add_argument("--head", help="git commit to measure (default: this checkout)")
    parser.add_argument("--dirs", type=int, default=60)
    parser.add_argument("--scenes-per-dir", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="each ingest's --workers; 0: the default (no --workers)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="align-track-ab-"))
    try:
        codes = {"head": export(args.head, work / "head") if args.head else None}
        if args.base:
            codes = {"base": export(args.base, work / "base")} | codes
        scenes = build(work / "tree", args.dirs, args.scenes_per_dir)
        print(f"tree: {args.dirs} run dirs, {scenes} scenes; {_load()}", flush=True)
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        for n in range(args.repeat):
            for label, code in codes.items():
                for workers in args.workers:
                    data = work / f"data-{label}-{workers}-{n}"
                    got = ingest(code, work / "tree", data, workers)
                    shutil.rmtree(data, ignore_errors=True)
                    runs.setdefault((label, workers), []).append(got)
                    print(f"[{n + 1}/{args.repeat}] {label} --workers {workers}: "
                          + ", ".join(f"{k} {v:.1f} s" for k, v in got.items()
                                      if k != "observe") + f"  ({_load()})", flush=True)
        _summary(runs, codes, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _summary(runs: dict, codes: dict, workers: list[int]) -> None:
    med = {key: {k: statistics.median(r[k] for r in found) for k in found[0]}
           for key, found in runs.items()}
    print("medians:")
    for (label, n), m in med.items():
        print(f"  {label} --workers {n}: " + ", ".join(f"{k} {v:.1f} s" for k, v in m.items()
                                                        if k != "observe"))
    for label in codes:
        if len(workers) == 2 and all((label, n) in med for n in workers):
            one, two = (med[label, n] for n in workers)
            print(f"  {label}: --workers {workers[1]} vs {workers[0]}: "
                  f"{one['wall'] / two['wall']:.2f}x faster, "
                  f"{(two['cpu'] / one['cpu'] - 1) * 100:+.0f}% CPU")
    if "base" in codes:
        for n in workers:
            base, head = med["base", n], med["head", n]
            print(f"  --workers {n}: head vs base {base['wall'] / head['wall']:.2f}x faster, "
                  f"{(head['cpu'] / base['cpu'] - 1) * 100:+.0f}% CPU")


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
