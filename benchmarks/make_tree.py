"""Build a scale tree (default 335 run dirs x 20 scenes = 6,700 scenes) from the bundled samples.

Each generated run dir copies a real sample run dir's files (config, scores, meta) and gets an
input_output.json of real items cycled from the sample files, plus a matching timing.json.

    python -m benchmarks.make_tree OUT_DIR [--dirs 335] [--scenes-per-dir 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
from pathlib import Path

from align_track_pipeline.core.source.discovery import find_run_dirs

SAMPLE_TREE = Path(__file__).resolve().parents[1] / "examples" / "experiment-data"
KDMA_LEVELS = ["affiliation-0.0", "affiliation-0.5", "affiliation-1.0", "merit-0.0", "merit-1.0"]


def _items(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    return data["results"] if isinstance(data, dict) else data


def build(out: Path, dirs: int = 335, scenes_per_dir: int = 20, seed: int = 0) -> int:
    """Write the tree; returns the number of scenes written."""
    samples = [r for r in find_run_dirs(SAMPLE_TREE) if (r.path / ".hydra").is_dir()]
    pool = list(itertools.chain.from_iterable(_items(r.path / "input_output.json")
                                              for r in samples))
    rng = random.Random(seed)
    cursor = 0
    for n in range(dirs):
        sample = samples[n % len(samples)]
        run_dir = out / f"pipeline_batch_{n // len(KDMA_LEVELS):03d}" / KDMA_LEVELS[
            n % len(KDMA_LEVELS)]
        shutil.copytree(sample.path, run_dir, ignore=shutil.ignore_patterns(
            "input_output.json", "timing.json"))
        items = [pool[(cursor + i) % len(pool)] for i in range(scenes_per_dir)]
        cursor += scenes_per_dir
        (run_dir / "input_output.json").write_text(json.dumps(items, indent=2))
        times = [round(rng.uniform(0.5, 12.0), 3) for _ in items]
        (run_dir / "timing.json").write_text(json.dumps({
            "scenarios": [], "n_actions_taken": len(times), "total_time_s": sum(times),
            "avg_time_s": sum(times) / len(times), "max_time_s": max(times),
            "raw_times_s": times}))
    return dirs * scenes_per_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--dirs", type=int, default=335)
    parser.add_argument("--scenes-per-dir", type=int, default=20)
    args = parser.parse_args()
    scenes = build(args.out, args.dirs, args.scenes_per_dir)
    print(f"wrote {args.dirs} run dirs, {scenes} scenes under {args.out}")


if __name__ == "__main__":
    main()
