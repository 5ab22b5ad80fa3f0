"""A partition's research numbers: what a person compares across experiments at a glance.

Computed from the two tables' rows of one run directory as they are written, so the UI can
plot them per partition (Dagster's Plots tab) without reading a table again.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc

SCENES = "scenes"
DECIDED = "decided share"  # scenes whose output names an action (choice or action id)
TIME_MEAN = "decision time mean (s)"  # seconds per action over all the run's actions
TIME_MAX = "decision time max (s)"
STATS = ("mean", "min", "max")


def research_numbers(experiments: pa.Table, scenes: pa.Table) -> dict[str, float]:
    """`scores.<name> mean|min|max` over the experiments rows (one per alignment target), the
    decision time, the scene count and the share of scenes with a decision; a number with
    nothing to measure is left out, never written as NaN."""
    numbers: dict[str, float | None] = {
        **_score_stats(experiments),
        TIME_MEAN: time_per_action(experiments["timing_total_seconds"].to_pylist(),
                                   experiments["timing_avg_seconds"].to_pylist()),
        TIME_MAX: pc.max(experiments["timing_max_seconds"]).as_py(),
        SCENES: float(scenes.num_rows),
        DECIDED: _decided(scenes),
    }
    return {k: float(v) for k, v in numbers.items() if v is not None and math.isfinite(v)}


def time_per_action(totals: list[float | None], means: list[float | None]) -> float | None:
    """Seconds per action over every action of the run: the targets' total time over their
    actions (a target's total over its mean is its action count), so a target with more
    actions weighs more; targets lacking either number are left out. With no totals, the
    mean of the means."""
    both = [(t, m) for t, m in zip(totals, means, strict=True) if t is not None and m]
    if both:
        return sum(t for t, _ in both) / sum(max(1, round(t / m)) for t, m in both)
    known = [m for m in means if m is not None]
    return sum(known) / len(known) if known else None


def _score_stats(experiments: pa.Table) -> dict[str, float | None]:
    pairs = [_entries(chunk) for chunk in experiments["scores"].chunks]
    if not sum(len(names) for names, _ in pairs):
        return {}
    names = pa.concat_arrays([n for n, _ in pairs])
    values = pa.concat_arrays([v for _, v in pairs])
    stats: dict[str, float | None] = {}
    for name in sorted(pc.unique(names).to_pylist()):
        mine = pc.filter(values, pc.equal(names, name))
        low, high = pc.min_max(mine).values()
        stats |= {f"scores.{name} mean": pc.mean(mine).as_py(),
                  f"scores.{name} min": low.as_py(), f"scores.{name} max": high.as_py()}
    return stats


def _entries(maps: pa.MapArray) -> tuple[pa.Array, pa.Array]:
    """The keys and values of a map array's entries (`keys`/`items` ignore a slice's bounds:
    the offsets give them)."""
    first, last = maps.offsets[0].as_py(), maps.offsets[-1].as_py()
    return maps.keys[first:last], maps.items[first:last]


def _decided(scenes: pa.Table) -> float | None:
    if not scenes.num_rows:
        return None
    decided = pc.or_(pc.is_valid(scenes["choice_index"]), pc.is_valid(scenes["action_id"]))
    return pc.sum(decided.cast(pa.int64())).as_py() / scenes.num_rows
