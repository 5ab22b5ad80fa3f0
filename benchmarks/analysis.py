"""Query benchmark: `align-track search` and `compare` on a generated 1,000,000-scene table.

    ./dev python -m benchmarks.analysis [--scenes 1000000] [--scenes-per-partition 200]
                                        [--keep DIR]

The tables are written straight to Parquet (the project's `ParquetStore`, with the schemas of
`core/schema.py`), one file per partition as an ingest writes them: 10 ADMs x 4 LLMs,
12 alignment targets, 2,000 scenarios of 5 scenes each, texts of a few hundred characters and
an item JSON of about 1.2 KB per scene. The comparison file is built as the `scene_comparison`
asset builds it, then updated after one partition changed and rebuilt whole, each in a
fresh process (wall time, peak RSS). Each command then runs in a fresh process, as a user
runs it, and its wall time and peak RSS are printed; `compare` once more without the
comparison file. About 2.5 minutes; `--keep DIR` keeps the tables for the next run.

Targets (2 cores): each command under 1 s, peak RSS under 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from align_track_pipeline.core.analysis.compare import write_comparison
from align_track_pipeline.core.analysis.incremental import listing_path
from align_track_pipeline.core.analysis.snapshot import COMPARISON_FILE, comparison_is_current
from align_track_pipeline.core.schema import EXPERIMENTS, SCENES
from align_track_pipeline.core.tables.store import ParquetStore

ADMS = [f"pipeline_{name}" for name in (
    "baseline", "comparative_regression", "fewshot_regression", "kaleido", "prompt_based",
    "zeroshot_comparative", "random", "outlines_structured", "bert_sim", "single_kdma")]
LLMS = ["mistralai/Mistral-7B-Instruct-v0.3", "meta-llama/Llama-3.2-3B-Instruct",
        "Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"]
KDMAS = ["affiliation", "merit", "personal_safety", "search"]
TARGETS = [(f"ADEPT-June2025-{k}-{v}", {k: v}) for k in KDMAS for v in (0.0, 0.5, 1.0)]
SCENARIOS = 2000
SCENES_PER_SCENARIO = 5
TARGETS_PER_PARTITION = 2
WORDS = ["patient", "medic", "casualty", "bleeding", "airway", "triage", "evacuate", "tourniquet",
         "helicopter", "convoy", "civilian", "soldier", "shrapnel", "burn", "fracture",
         "unconscious", "breathing", "pulse", "supplies", "morphine", "blanket", "stretcher",
         "village", "checkpoint", "ambush", "explosion", "shelter", "radio", "wound", "pressure",
         "chest", "leg", "arm", "head", "treat", "assess", "transport", "wait", "priority",
         "severe", "minor", "stable"]


def _texts(rng: np.random.Generator, count: int, words: int) -> pa.Array:
    """`count` distinct sentences of about `words` words (no quotes: safe inside JSON)."""
    picks = rng.integers(0, len(WORDS), size=(count, words))
    vocab = np.array(WORDS)
    return pa.array([" ".join(vocab[row]).capitalize() + "." for row in picks])


class Pools:
    """Texts shared by the scenes of one scenario scene (probe, choices) and varied per
    decision (justifications), as in real runs."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        scenes = SCENARIOS * SCENES_PER_SCENARIO
        self.rng = rng
        self.probes = _texts(rng, scenes, 60)  # ~400 chars
        self.choices = [_texts(rng, scenes, 8) for _ in range(4)]
        self.justifications = _texts(rng, 20_000, 45)  # ~300 chars

    def choices_text(self, scene: np.ndarray) -> pa.Array:
        parts = [pc.binary_join_element_wise(f"[{i}] ", c.take(scene), "")
                 for i, c in enumerate(self.choices)]
        return pc.binary_join_element_wise(*parts, "\n")


def _partition(pools: Pools, n: int, scenes: int) -> tuple[str, pa.Table, pa.Table]:
    rng = pools.rng
    key = f"batch_{n // 100:04d}/run_{n:06d}"
    adm, llm = ADMS[n % len(ADMS)], LLMS[(n // len(ADMS)) % len(LLMS)]
    targets = [TARGETS[(n + t * 5) % len(TARGETS)] for t in range(TARGETS_PER_PARTITION)]
    per_target = scenes // len(targets)
    first = int(rng.integers(0, SCENARIOS))
    span = -(-per_target // SCENES_PER_SCENARIO)
    scenario = np.repeat((first + np.arange(span)) % SCENARIOS, SCENES_PER_SCENARIO)[:per_target]
    scenario = np.tile(scenario, len(targets))
    scene_no = np.tile(np.arange(per_target) % SCENES_PER_SCENARIO, len(targets))
    global_scene = scenario * SCENES_PER_SCENARIO + scene_no
    count = len(scenario)
    choice = rng.integers(0, 4, size=count)
    decision = pc.choose(pa.array(choice), *[c.take(global_scene) for c in pools.choices])
    target_of_row = np.repeat(np.arange(len(targets)), per_target)
    scenario_ids = pa.array([f"June2025-{s:04d}-eval" for s in scenario])
    probe = pools.probes.take(global_scene)
    justification = pools.justifications.take(rng.integers(0, len(pools.justifications), count))
    choices_text = pools.choices_text(global_scene)
    item_json = pc.binary_join_element_wise(
        '{"input": {"scenario_id": "', scenario_ids, '", "state": "', probe,
        '", "choices": "', choices_text, '"}, "output": {"choice": ', pa.array(choice).cast(
            pa.string()), ', "justification": "', justification, '"}}', "")
    timing = rng.uniform(0.5, 60.0, size=count)
    kdma = [{k: float(v) for k, v in targets[t][1].items()} for t in target_of_row]
    scenes_table = pa.table({
        "partition_key": [key] * count, "experiment_path": [key] * count,
        "scene_index": np.arange(count), "scenario_id": scenario_ids,
        "scene_id": [f"P{s + 1}" for s in scene_no],
        "alignment_target_id": [targets[t][0] for t in target_of_row],
        "adm": [adm] * count, "llm_backbone": [llm] * count,
        "run_variant": [key.split("/")[0]] * count, "probe_text": probe,
        "choices_text": choices_text, "choice_index": choice,
        "action_id": [f"action_{c}" for c in choice],
        "action_type": ["APPLY_TREATMENT"] * count, "decision_text": decision,
        "justification": justification,
        "decision_kdma": [list(k.items()) for k in kdma],
        "timing_seconds": timing,
        "scenario_scores": [[("score", float(s))] for s in rng.uniform(0, 1, count)],
        "item_json": item_json.cast(pa.string()),
    }, schema=SCENES)
    experiments = pa.table({
        "partition_key": [key] * len(targets), "experiment_path": [key] * len(targets),
        "alignment_target_id": [t[0] for t in targets], "adm": [adm] * len(targets),
        "adm_source": ["config"] * len(targets), "llm_backbone": [llm] * len(targets),
        "run_variant": [key.split("/")[0]] * len(targets),
        "kdma_values": [list(t[1].items()) for t in targets],
        "num_scenes": [per_target] * len(targets), "num_scenarios": [span] * len(targets),
        "timing_total_seconds": [float(timing[target_of_row == t].sum())
                                 for t in range(len(targets))],
        "timing_avg_seconds": [float(timing[target_of_row == t].mean())
                               for t in range(len(targets))],
        "timing_min_seconds": [float(timing[target_of_row == t].min())
                               for t in range(len(targets))],
        "timing_max_seconds": [float(timing[target_of_row == t].max())
                               for t in range(len(targets))],
        "scores": [[("score", float(rng.uniform(0, 1)))] for _ in targets],
        "has_hydra_config": [True] * len(targets), "align_system_version": ["0.5.9"] * len(
            targets), "hydra_config": ["adm:\n  name: " + adm] * len(targets),
        "source_files": [["input_output.json", "timing.json"]] * len(targets),
        "source_version": [f"v{n}"] * len(targets),
    }, schema=EXPERIMENTS)
    return key, experiments, scenes_table


def build_tables(data: Path, scenes: int, per_partition: int) -> int:
    """Write the tables under `data` (skipped when they are there); returns the partitions."""
    partitions = scenes // per_partition
    marker = data / f".built-{scenes}-{per_partition}"
    if marker.exists():
        return partitions
    shutil.rmtree(data / "parquet", ignore_errors=True)
    store, pools = ParquetStore(data), Pools()
    started = time.perf_counter()
    for n in range(partitions):
        key, experiments, scenes_table = _partition(pools, n, per_partition)
        store.write("experiments", key, experiments)
        store.write("scenes", key, scenes_table)
    size = sum(f.stat().st_size for f in (data / "parquet").rglob("*.parquet"))
    print(f"wrote {partitions} partitions, {partitions * per_partition} scenes, "
          f"{size / 2**20:.0f} MiB of Parquet in {time.perf_counter() - started:.0f} s")
    marker.touch()
    return partitions


# Runs a command and reports its wall time and peak RSS. A small process of its own forks
# the command: a child's peak RSS starts from its parent's size at fork, and this benchmark's
# own process is large after generating the tables.
_MEASURE = """
import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"wall": time.perf_counter() - start, "rss_kib": usage.ru_maxrss,
                  "code": os.waitstatus_to_exitcode(status)}), file=sys.stderr)
"""


def timed(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MiB) of `align-track ARGV` in a fresh process, and its
    output."""
    cmd = [str(Path(sys.executable).parent / "align-track"), *argv]
    proc = subprocess.run([sys.executable, "-S", "-c", _MEASURE, *cmd], capture_output=True,
                          text=True, check=False)
    measured = json.loads(proc.stderr.splitlines()[-1])
    if measured["code"] != 0:
        sys.exit(f"{' '.join(argv)} failed ({measured['code']}):\n{proc.stderr[-3000:]}")
    return measured["wall"], measured["rss_kib"] / 1024, proc.stdout


# The comparison file written as the asset writes it, in a fresh process: prints how many
# partition files it read (None: every one) and its wall time inside the process.
_WRITE = """
import sys, time
from pathlib import Path
from align_track_pipeline.core.analysis.compare import write_comparison
from align_track_pipeline.core.analysis.incremental import listing_path
from align_track_pipeline.core.analysis.snapshot import COMPARISON_FILE
started = time.perf_counter()
result = write_comparison(Path(sys.argv[1]), Path(sys.argv[1]) / COMPARISON_FILE)
print(result.changed_files, round(time.perf_counter() - started, 2))
"""


def comparison_update(data: Path) -> None:
    """One partition rewritten (same rows, a new file): the comparison file updated from
    its previous version, then rebuilt whole for comparison (its listing removed)."""
    store = ParquetStore(data)
    n = 2500
    key, listing = f"batch_{n // 100:04d}/run_{n:06d}", listing_path(data / COMPARISON_FILE)
    for label in ("updated, one partition changed", "rebuilt (no listing)"):
        store.write("scenes", key, store.read("scenes", key))
        if label.startswith("rebuilt"):
            listing.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, "-S", "-c", _MEASURE, sys.executable, "-c",
                               _WRITE, str(data)], capture_output=True, text=True, check=True)
        measured = json.loads(proc.stderr.splitlines()[-1])
        changed, inside = proc.stdout.split()
        print(f"scene_comparison {label}: {measured['wall']:.2f} s wall ({inside} s writing), "
              f"peak RSS {measured['rss_kib'] / 1024:.0f} MiB, partition files read: "
              f"{'all' if changed == 'None' else changed}")


def _report(label: str, wall: float, rss: float, out: str) -> None:
    print(f"{label}: {wall:.2f} s, peak RSS {rss:.0f} MiB, {len(out.splitlines())} lines "
          "of output (targets: < 1 s, < 1024 MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=1_000_000)
    parser.add_argument("--scenes-per-partition", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="build (once) and keep the tables here")
    args = parser.parse_args()
    data = args.keep or Path(tempfile.mkdtemp(prefix="align-track-analysis-"))
    try:
        build_tables(data, args.scenes, args.scenes_per_partition)
        comparison = data / COMPARISON_FILE
        if not comparison_is_current(data) or not listing_path(comparison).exists():
            started = time.perf_counter()
            result = write_comparison(data, comparison)
            print(f"scene_comparison (what the asset writes): {result.rows} rows in "
                  f"{time.perf_counter() - started:.1f} s")
        comparison_update(data)
        where = ["--data-dir", str(data)]
        scenario = f"June2025-{SCENARIOS // 3:04d}-eval"
        for label, argv in [
            ("search, two filters (ADM, target)",
             ["search", *where, "--adm", ADMS[3], "--target", TARGETS[4][0]]),
            ("search, two filters, --json", ["search", *where, "--adm", ADMS[3], "--target",
                                             TARGETS[4][0], "--json"]),
            ("search, two rare filters (scenario, ADM)",
             ["search", *where, "--scenario", scenario, "--adm", ADMS[5]]),
            (f"compare {scenario}", ["compare", scenario, *where]),
            (f"compare {scenario} --scene P1 --json",
             ["compare", scenario, "--scene", "P1", "--json", *where]),
        ]:
            _report(label, *timed(argv))
        stale = comparison.with_suffix(".set-aside")
        comparison.rename(stale)  # as before the asset ran: compare reads the tables
        try:
            _report(f"compare {scenario}, from the tables (no current comparison file)",
                    *timed(["compare", scenario, *where]))
        finally:
            stale.rename(comparison)
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
