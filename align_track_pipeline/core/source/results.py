"""timing.json and scores.json: the run's measured results, in both shapes that exist."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align_track_pipeline.core.source.config import kdma_values
from align_track_pipeline.core.source.files import ParseError, dig, number


@dataclass(frozen=True)
class Timing:
    """Directory-level timing; `per_action` has one entry per timed ADM call."""

    total: float | None = None
    avg: float | None = None
    max: float | None = None
    per_action: list[float | None] = field(default_factory=list)

    def per_item(self, n_items: int) -> list[float | None]:
        """Per-item seconds, only when the lengths match (untimed actions make it shorter)."""
        return self.per_action if len(self.per_action) == n_items else [None] * n_items

    @property
    def min(self) -> float | None:
        values = [v for v in self.per_action if v is not None]
        return min(values) if values else None


def parse_timing(data: Any, path: Path) -> Timing:
    if not isinstance(data, dict):
        raise ParseError(path, f"expected a JSON object, got {type(data).__name__}")
    raw = data.get("raw_times_s") or []
    if not isinstance(raw, list):
        raise ParseError(path, f"raw_times_s must be a list, got {type(raw).__name__}")
    return Timing(
        total=number(data.get("total_time_s")),
        avg=number(data.get("avg_time_s")),
        max=number(data.get("max_time_s")),
        per_action=[number(v) for v in raw],
    )


@dataclass(frozen=True)
class Scores:
    """Scores per alignment target (None = the entry names no target), and per target and
    scenario: a run scoring one scenario under several targets has a score for each."""

    by_target: dict[str | None, dict[str, float]] = field(default_factory=dict)
    by_scenario: dict[str | None, dict[str, dict[str, float]]] = field(default_factory=dict)

    def for_target(self, target_id: str, whole_dir: bool) -> dict[str, float]:
        """The target's own scores; else those naming no target; else, for a directory with a
        single group, the only scores there are (items that do not name the scored target)."""
        return _pick(self.by_target, target_id, whole_dir and len(self.by_target) == 1)

    def for_scenario(self, target_id: str, scenario_id: str, whole_dir: bool,
                     ) -> dict[str, float]:
        """One scenario's scores under the scene's target, by the rules of `for_target`:
        never those another target's loop scored."""
        scored = {t: s[scenario_id] for t, s in self.by_scenario.items() if scenario_id in s}
        return _pick(scored, target_id, whole_dir and len(self.by_scenario) == 1)


def _pick(by_target: dict[str | None, dict[str, float]], target_id: str,
          single: bool) -> dict[str, float]:
    """The target's own; else those naming no target; else, where the file scores a `single`
    target, the only ones there are."""
    if target_id in by_target or None in by_target:
        return by_target.get(target_id) or by_target.get(None) or {}
    return next(iter(by_target.values()), {}) if single else {}


def parse_scores(data: Any, path: Path) -> Scores:
    entries = [data] if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ParseError(path, "expected a JSON list of score objects")
    if any("measures" in e for e in entries):
        return _measure_scores(entries)
    return _plain_scores(entries)


def _plain_scores(entries: list[dict]) -> Scores:
    """Shape 1: one `score` per scenario loop, with the KDMA values the scorer measured in
    the ADM's choices (`kdma.<name>`: how close it came to the target's); the experiment's
    are their means."""
    per_target: dict[str | None, list[dict[str, float]]] = defaultdict(list)
    by_scenario: dict[str | None, dict[str, dict[str, float]]] = defaultdict(dict)
    for entry in entries:
        score = number(entry.get("score"))
        if score is None:
            continue
        target = entry.get("alignment_target_id")
        measured = {f"kdma.{k}": v for k, v in kdma_values(entry.get("kdma_values")).items()}
        loop = {"score": score, **measured}
        per_target[target].append(loop)
        for source in entry.get("alignment_source") or []:
            if isinstance(dig(source, "scenario_id"), str):
                by_scenario[target][source["scenario_id"]] = loop
    by_target = {}
    for target, loops in per_target.items():
        means = _means(loops)  # score first, then the measured KDMA values
        by_target[target] = {"score": means.pop("score"), "num_scored": float(len(loops)),
                             **means}
    return Scores(by_target, dict(by_scenario))


def _means(loops: list[dict[str, float]]) -> dict[str, float]:
    """Each name's mean over the loops that have it (`score`: every loop)."""
    values: dict[str, list[float]] = defaultdict(list)
    for loop in loops:
        for name, value in loop.items():
            values[name].append(value)
    return {name: sum(v) / len(v) for name, v in values.items()}


def _measure_scores(entries: list[dict]) -> Scores:
    """Shape 2: cumulative measures per scenario; the last entry per target holds the totals."""
    last: dict[str | None, dict] = {}
    for entry in entries:
        if isinstance(entry.get("measures"), dict):
            last[entry.get("alignment_target")] = entry["measures"]
    by_target, by_scenario = {}, {}
    for target, measures in last.items():
        totals: dict[str, float] = defaultdict(float)
        by_scenario[target] = {}
        for scenario_id, values in measures.items():
            flat = {k: number(dig(v, "value")) for k, v in (values or {}).items()}
            flat = {k: v for k, v in flat.items() if v is not None}
            by_scenario[target][scenario_id] = flat
            for k in ("num_correct", "num_probes"):
                totals[k] += flat.get(k, 0.0)
        if totals["num_probes"]:
            totals["accuracy"] = totals["num_correct"] / totals["num_probes"]
        by_target[target] = dict(totals)
    return Scores(by_target, by_scenario)
