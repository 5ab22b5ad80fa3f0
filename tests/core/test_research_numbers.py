"""Each partition's research numbers equal those computed from its two Parquet files, read
back with pyarrow and counted in plain Python, over every run directory of the sample tree."""

from __future__ import annotations

import pyarrow.parquet as pq

from align_track_pipeline.core.source.discovery import FingerprintCache, find_run_dirs
from align_track_pipeline.core.tables.store import ParquetStore
from align_track_pipeline.core.tables.writer import PartitionJob, write_partition
from tests.conftest import SAMPLE_TREE


def expected_numbers(experiments: list[dict], scenes: list[dict]) -> dict[str, float]:
    scores: dict[str, list[float]] = {}
    for row in experiments:
        for name, value in row["scores"]:
            scores.setdefault(name, []).append(value)
    numbers = {}
    for name, values in scores.items():
        numbers |= {f"scores.{name} mean": sum(values) / len(values),
                    f"scores.{name} min": min(values), f"scores.{name} max": max(values)}
    timed = [r for r in experiments if r["timing_total_seconds"] is not None
             and r["timing_avg_seconds"]]
    highs = [r["timing_max_seconds"] for r in experiments if r["timing_max_seconds"] is not None]
    if timed:  # every action of the run counts once: total time over the number of actions
        actions = sum(round(r["timing_total_seconds"] / r["timing_avg_seconds"]) for r in timed)
        numbers["decision time mean (s)"] = sum(r["timing_total_seconds"] for r in timed) / (
            actions)
    if highs:
        numbers["decision time max (s)"] = max(highs)
    numbers["scenes"] = len(scenes)
    if scenes:
        decided = [s for s in scenes if s["choice_index"] is not None or s["action_id"]]
        numbers["decided share"] = len(decided) / len(scenes)
    return numbers


def test_numbers_equal_those_of_the_written_tables(tmp_path):
    run_dirs = find_run_dirs(SAMPLE_TREE)
    cache = FingerprintCache(tmp_path / "fingerprints.sqlite")
    versions = cache.versions(run_dirs)
    cache.close()
    store = ParquetStore(tmp_path)
    seen_scores = set()
    for run_dir in run_dirs:
        write = write_partition(PartitionJob(run_dir.key, str(SAMPLE_TREE), str(tmp_path),
                                             versions[run_dir.key]))
        tables = {t: pq.read_table(store.path(t, run_dir.key)).to_pylist()
                  for t in ("experiments", "scenes")}
        expected = expected_numbers(tables["experiments"], tables["scenes"])
        assert write.numbers.keys() == expected.keys(), run_dir.key
        assert all(abs(write.numbers[k] - v) <= 1e-12 * max(1, abs(v))
                   for k, v in expected.items()), run_dir.key
        seen_scores |= {k for k in expected if k.startswith("scores.")}
    # The sample tree has both shapes of scores.json and runs without one.
    assert {"scores.score mean", "scores.accuracy max", "scores.num_probes min"} <= seen_scores
    assert len(run_dirs) == 20


def test_the_decision_time_mean_weighs_each_target_by_its_actions():
    """A live run dir of three targets with 6, 10 and 3 actions: 84.551 s over 19 actions
    (4.4501 s), not the mean of the three targets' means (4.2831 s)."""
    from align_track_pipeline.core.tables.numbers import time_per_action

    totals, means = [23.794, 48.724, 12.034], [23.794 / 6, 48.724 / 10, 12.034 / 3]
    assert abs(time_per_action(totals, means) - 84.552 / 19) < 1e-9
    assert time_per_action([None, None], [2.0, 4.0]) == 3.0
    assert time_per_action([None], [None]) is None
