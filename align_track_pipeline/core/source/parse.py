"""One run directory -> the rows of the `experiments` and `scenes` tables.

Tolerates every irregularity of real trees (both input_output shapes, missing optional files,
short `raw_times_s`, both scores shapes, mixed-target live runs, missing or int `scene_id`,
legacy configs). Malformed files raise `ParseError` naming the file and the problem.
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from align_track_pipeline.core.schema import EXPERIMENTS, SCENES
from align_track_pipeline.core.source.config import (
    UNALIGNED,
    RunConfig,
    kdma_values,
    read_run_config,
)
from align_track_pipeline.core.source.discovery import (
    INPUT_OUTPUT,
    TARGETS_DIR,
    RunDir,
    content_hash,
    source_paths,
)
from align_track_pipeline.core.source.files import ParseError, dig, number, read_json, read_yaml
from align_track_pipeline.core.source.results import Scores, Timing, parse_scores, parse_timing

_ID_SUFFIX = re.compile(r"-(?P<kdma>[A-Za-z][\w ]*?)-(?P<value>\d+(?:\.\d+)?)$")

@dataclass(frozen=True)
class ParsedRun:
    experiments: pa.Table
    scenes: pa.Table
    item_count: int  # items in input_output.json: what the row-count check compares against


@dataclass(frozen=True)
class _Run:
    """Everything read from one run directory, before it is shaped into rows."""

    run_dir: RunDir
    items: list[dict]
    version: str | None
    config: RunConfig
    timing: Timing
    scores: Scores
    target_kdmas: dict[str, dict[str, float]]


def parse_run_dir(run_dir: RunDir, root: Path, source_version: str | None = None) -> ParsedRun:
    """Parse one run directory; `source_version` defaults to a fresh content hash."""
    run = _read_run(run_dir, Path(root))
    scenes = _scene_rows(run)
    experiments = _experiment_rows(run, scenes, source_version or content_hash(run_dir.path))
    return ParsedRun(
        experiments=pa.Table.from_pylist(experiments, schema=EXPERIMENTS),
        scenes=pa.Table.from_pylist(scenes, schema=SCENES),
        item_count=len(run.items),
    )


def _read_run(run_dir: RunDir, root: Path) -> _Run:
    path = run_dir.path
    items, version = _items(read_json(path / INPUT_OUTPUT, root), path / INPUT_OUTPUT)
    config = _optional(path / ".hydra/config.yaml", root, read_yaml)
    hydra = _optional(path / ".hydra/hydra.yaml", root, read_yaml)
    meta = _optional(path / "meta.json", root, read_json)
    timing = _optional(path / "timing.json", root, read_json)
    scores = _optional(path / "scores.json", root, read_json)
    return _Run(
        run_dir=run_dir,
        items=items,
        version=_str(dig(meta, "version")) or version,
        config=read_run_config(config, hydra, run_dir.rel_path),
        timing=parse_timing(timing, path / "timing.json") if timing is not None else Timing(),
        scores=parse_scores(scores, path / "scores.json") if scores is not None else Scores(),
        target_kdmas=_target_files(path, root),
    )


def _optional(path: Path, root: Path, reader) -> Any:
    """The file read by `reader`, or None when it is absent. A file that cannot even be
    looked at (its folder unreadable, an I/O error) fails the run dir: it is not absent."""
    try:
        os.lstat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise ParseError(path, f"cannot read file: {exc.strerror}") from exc
    return reader(path, root)


def _items(data: Any, path: Path) -> tuple[list[dict], str | None]:
    """Accept a plain list and the 2026-04 `{"version", "results"}` wrapper."""
    version = None
    if isinstance(data, dict) and "results" in data:
        version, data = _str(data.get("version")), data["results"]
    if not isinstance(data, list):
        raise ParseError(
            path, f"expected a JSON list of items (or {{version, results}}), got {_kind(data)}"
        )
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("input"), dict):
            raise ParseError(path, f"item {index} has no `input` object ({_kind(item)})")
        if not isinstance(item["input"].get("scenario_id"), str | int):
            raise ParseError(path, f"item {index} has no input.scenario_id")
    return data, version


def _target_files(path: Path, root: Path) -> dict[str, dict[str, float]]:
    """KDMA values of `targets/<id>.json` files (written with save_alignment_targets)."""
    out = {}
    for name in source_paths(path):
        if name == TARGETS_DIR:  # listed only when the folder cannot be read
            raise ParseError(path / name, "cannot read folder")
        if name.startswith(TARGETS_DIR + "/"):
            data = read_json(path / name, root)
            target_id = dig(data, "id") or PurePosixPath(name).stem
            out[str(target_id)] = kdma_values(dig(data, "kdma_values"))
    return out


def _scene_rows(run: _Run) -> list[dict]:
    timings = run.timing.per_item(len(run.items))
    whole_dir = len({_target_of(run, item["input"]) for item in run.items}) == 1
    return [_scene_row(run, index, item, timings[index], whole_dir)
            for index, item in enumerate(run.items)]


def _scene_row(run: _Run, index: int, item: dict, seconds: float | None,
               whole_dir: bool) -> dict:
    inp = item["input"]
    output = item.get("output") if isinstance(item.get("output"), dict) else {}
    action = output.get("action") if isinstance(output.get("action"), dict) else {}
    choice = output.get("choice")
    choice = choice if isinstance(choice, int) and not isinstance(choice, bool) else None
    scenario_id = str(inp["scenario_id"])
    target = _target_of(run, inp)
    return {
        **_run_columns(run),
        "scene_index": index,
        "scenario_id": scenario_id,
        "scene_id": _str(dig(inp, "full_state", "meta_info", "scene_id")),
        "alignment_target_id": target,
        "probe_text": _str(inp.get("state")) or _str(dig(inp, "full_state", "unstructured")),
        "choices_text": _choices_text(inp.get("choices")),
        "choice_index": choice,
        "action_id": _str(action.get("action_id")),
        "action_type": _str(action.get("action_type")),
        "decision_text": _str(action.get("unstructured")),
        "justification": _str(action.get("justification")),
        "decision_kdma": _pairs(_decision_kdma(item, action, choice)),
        "timing_seconds": seconds,
        "scenario_scores": _pairs(run.scores.for_scenario(target, scenario_id, whole_dir)),
        "item_json": json.dumps(item, ensure_ascii=False),
    }


def _run_columns(run: _Run) -> dict:
    return {
        "partition_key": run.run_dir.key,
        "experiment_path": run.run_dir.rel_path,
        "adm": run.config.adm,
        "adm_config": run.config.adm_config,
        "llm_backbone": run.config.llm_backbone,
        "run_variant": _run_variant(run.run_dir.rel_path),
    }


def _run_variant(rel_path: str) -> str:
    parent = PurePosixPath(rel_path).parent.as_posix()
    return "default" if parent in (".", "") else parent


def _target_of(run: _Run, inp: dict) -> str:
    """The config's target (what the ADM aligned to), else the item's own (live runs,
    which have no target in their config), else unaligned."""
    return run.config.target_id or _str(inp.get("alignment_target_id")) or UNALIGNED


def _choices_text(choices: Any) -> str | None:
    if not isinstance(choices, list):
        return None
    return "\n".join(f"[{i}] {_str(dig(c, 'unstructured')) or ''}" for i, c in enumerate(choices))


def _decision_kdma(item: dict, action: dict, choice: int | None) -> dict:
    assoc = action.get("kdma_association")
    if not isinstance(assoc, dict) and choice is not None:
        labels = item.get("label")
        assoc = labels[choice] if isinstance(labels, list) and choice < len(labels) else None
    return assoc if isinstance(assoc, dict) else {}


def _experiment_rows(run: _Run, scenes: list[dict], source_version: str) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for scene in scenes:
        groups.setdefault(scene["alignment_target_id"], []).append(scene)
    if not groups:  # a run that wrote no item yet is still an experiment
        groups[run.config.target_id or UNALIGNED] = []
    return [
        _experiment_row(run, target, rows, len(groups) == 1, source_version)
        for target, rows in groups.items()
    ]


def _experiment_row(
    run: _Run, target: str, rows: list[dict], whole_dir: bool, source_version: str
) -> dict:
    return {
        **_run_columns(run),
        "alignment_target_id": target,
        "adm_source": run.config.adm_source,
        "kdma_values": _pairs(_target_kdmas(run, target)),
        "num_scenes": len(rows),
        "num_scenarios": len({r["scenario_id"] for r in rows}),
        **_timing_columns(run.timing, rows, whole_dir),
        "scores": _pairs(run.scores.for_target(target, whole_dir)),
        "has_hydra_config": run.config.redacted_yaml is not None,
        "align_system_version": run.version,
        "hydra_config": run.config.redacted_yaml,
        "hydra_overrides": list(run.config.overrides),
        "source_files": source_paths(run.run_dir.path),
        "source_version": source_version,
    }


def _target_kdmas(run: _Run, target: str) -> dict[str, float]:
    """The config's values; else a saved `targets/<id>.json`; else the id's `<kdma>-<value>`
    suffix (live runs name targets like `ADEPT-June2025-affiliation-0.5`)."""
    if target == run.config.target_id and run.config.target_kdmas:
        return run.config.target_kdmas
    if target in run.target_kdmas:
        return run.target_kdmas[target]
    match = _ID_SUFFIX.search(target)
    return {match["kdma"]: float(match["value"])} if match else {}


def _timing_columns(timing: Timing, rows: list[dict], whole_dir: bool) -> dict:
    """From aligned per-scene times when there are any, else the file's totals if they
    describe this group alone (a single-target directory)."""
    times = [r["timing_seconds"] for r in rows if r["timing_seconds"] is not None]
    if times:
        total, avg, low, high = sum(times), sum(times) / len(times), min(times), max(times)
    elif whole_dir:
        total, avg, low, high = timing.total, timing.avg, timing.min, timing.max
    else:
        total = avg = low = high = None
    return {
        "timing_total_seconds": total,
        "timing_avg_seconds": avg,
        "timing_min_seconds": low,
        "timing_max_seconds": high,
    }


def _pairs(mapping: dict) -> list[tuple[str, float]]:
    """A str->float dict as Arrow map entries; values that are not finite numbers are dropped."""
    return [(str(k), n) for k, v in mapping.items() if (n := number(v)) is not None]


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string"}
    return names.get(type(value), type(value).__name__)
