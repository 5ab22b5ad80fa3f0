"""What to log for one partition: MLflow run specs built from its Parquet rows.

Pure data, no MLflow import: one parent per experiment row and one child per scene
(hierarchical), or one run per experiment row (flat). Every run has a deterministic key and a
content hash, so a writer can tell "already there, unchanged" from "must be replaced".

A scene run is named after what it is, what differs first (`scenario scene | ADM | target |
idxN | run dir`, unique within the experiment: the UI cuts long names at the end), and carries
what the ADM was shown and decided as params (`probe` and `choices` excerpts, `choice_index`,
`action_type`, `action_id`, `decision`, a `justification` excerpt), so scenes compare across
ADMs in the runs table. Start and end times come from the data (`trackers/times.py`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from align_track_pipeline.core.trackers.base import INCOMPLETE, incomplete, scenario_metrics
from align_track_pipeline.core.trackers.times import RunTimes, Span, run_times
from align_track_pipeline.core.versions import MLFLOW_LAYOUT_VERSION, experiment_key, scene_key

HIERARCHICAL, FLAT = "hierarchical", "flat"
MAX_PARAM_CHARS, MAX_TAG_CHARS = 6000, 8000  # MLflow's limits; longer values go to artifacts
MAX_NAME_CHARS = 250  # the runs table's name column
JUSTIFICATION_EXCERPT = 500  # enough to read in the runs table; the full text is an artifact

TAG_KEY = "align_track.key"
TAG_PARTITION = "align_track.partition"
TAG_HASH = "align_track.content_hash"
# Tags of a scene run left out of its content hash: the folder's version changes with any of
# its files, and a scene whose own data did not change keeps its run, these tags updated
# (`writer._SqlBackend._update_kept`). A parent run hashes it: its source-file artifacts are
# hashed by name.
CURRENT_TAGS = ("source_version",)


@dataclass
class RunSpec:
    key: str
    name: str
    parent_key: str | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: dict[str, bytes | Path] = field(default_factory=dict)  # relative path -> data
    base_ms: int | None = None  # epoch ms the span counts from; None: the write time
    span: Span = Span(0, 0)  # start and end, ms after base_ms
    timed: bool = True  # its duration is in the data; else the run gets no end time

    @property
    def content_hash(self) -> str:
        return self.tags[TAG_HASH]


def plan_runs(
    experiments: list[dict], scenes: list[dict], run_dir: Path | None, mode: str = HIERARCHICAL
) -> list[RunSpec]:
    """Parents first, then their children; `run_dir` supplies the source-file artifacts."""
    specs = []
    times = run_times(experiments[0]["experiment_path"] if experiments else "", scenes)
    for exp in experiments:
        own = [s for s in scenes if s["alignment_target_id"] == exp["alignment_target_id"]]
        parent = _parent(exp, run_dir, mode, times, [s["scene_index"] for s in own])
        specs.append(parent)
        if mode == HIERARCHICAL:
            specs += [_child(parent, s, times) for s in own]
    return specs


def _parent(exp: dict, run_dir: Path | None, mode: str, times: RunTimes,
            indices: list[int]) -> RunSpec:
    params = {
        "adm": exp["adm"],
        "adm_config": exp["adm_config"],
        "llm_backbone": exp["llm_backbone"],
        "alignment_target_id": exp["alignment_target_id"],
        "num_scenarios": exp["num_scenarios"],
        "num_scenes": exp["num_scenes"],
        "run_variant": exp["run_variant"],
        "overrides": "; ".join(exp["hydra_overrides"]) or None,
        **{f"kdma.{k}": v for k, v in exp["kdma_values"]},
    }
    metrics = {
        "timing.total_seconds": exp["timing_total_seconds"],
        "timing.avg_seconds": exp["timing_avg_seconds"],
        "timing.min_seconds": exp["timing_min_seconds"],
        "timing.max_seconds": exp["timing_max_seconds"],
        **{f"score.{k}": v for k, v in exp["scores"]},
    }
    tags = {
        "run_type": "parent" if mode == HIERARCHICAL else "experiment",
        "adm": exp["adm"],
        "llm": exp["llm_backbone"] or "none",
        "experiment_path": exp["experiment_path"],
        "partition_key": exp["partition_key"],
        "has_hydra_config": str(exp["has_hydra_config"]).lower(),
        "source_version": exp["source_version"],
        "start_time_source": times.source,
        INCOMPLETE: incomplete(exp),  # inherited by the scene runs
    }
    artifacts: dict[str, bytes | Path] = {}
    if exp["hydra_config"] is not None:
        artifacts["config/hydra_config.redacted.yaml"] = exp["hydra_config"].encode()
    for name in exp["source_files"]:
        if run_dir is not None and not name.startswith(".hydra/"):  # raw configs hold secrets
            artifacts[f"source/{name}"] = run_dir / name
    key = experiment_key(exp["partition_key"], exp["alignment_target_id"])
    name = f"{exp['experiment_path']} [{exp['alignment_target_id']}]"
    span = times.span(indices, exp["timing_total_seconds"])
    return _spec(key, name, None, params, metrics, tags, artifacts, exp["partition_key"], mode,
                 times.base_ms, span, timed=exp["timing_total_seconds"] is not None)


def _child(parent: RunSpec, scene: dict, times: RunTimes) -> RunSpec:
    index = scene["scene_index"]
    artifacts = {f"scene_{index}/scene_data.json": scene["item_json"].encode(),
                 # the full text of a parent param too long for MLflow, which its note names
                 **{k: v for k, v in parent.artifacts.items() if k.startswith("params/")}}
    params = {**parent.params, "scene_id": scene["scene_id"], "scene_index": index,
              "scenario_id": scene["scenario_id"], **_decision(scene, artifacts)}
    metrics = {"scene.timing_seconds": scene["timing_seconds"],
               **scenario_metrics(scene)}
    inherited = {k: v for k, v in parent.tags.items() if not k.startswith("align_track.")}
    tags = {**inherited, "run_type": "scene", "scene_id": scene["scene_id"] or "",
            "scene_index": str(index)}
    key = scene_key(scene["partition_key"], index)
    return _spec(key, scene_run_name(scene), parent.key, params, metrics, tags, artifacts,
                 scene["partition_key"], HIERARCHICAL, times.base_ms, times.scenes[index],
                 unhashed=CURRENT_TAGS, timed=scene["timing_seconds"] is not None)


def scene_run_name(scene: dict) -> str:
    """`<scenario> <scene id> | <adm> | <target> | idx<i> | <run dir>`: what tells the runs
    of an experiment apart comes first; the run directory makes it unique."""
    name = (f"{scene['scenario_id']} {scene['scene_id'] or '-'} | {scene['adm']} | "
            f"{scene['alignment_target_id']} | idx{scene['scene_index']} | "
            f"{scene['experiment_path']}")
    if len(name) <= MAX_NAME_CHARS:
        return name
    tail = f"...{hashlib.blake2b(name.encode(), digest_size=4).hexdigest()}"
    return name[: MAX_NAME_CHARS - len(tail)] + tail


def _decision(scene: dict, artifacts: dict[str, bytes | Path]) -> dict:
    """What the ADM was shown and decided; long texts are cut to an excerpt that says where
    the full text is."""
    texts = {"probe": scene["probe_text"], "choices": scene["choices_text"],
             "justification": scene["justification"]}
    excerpts = {name: _excerpt(scene["scene_index"], name, text, artifacts)
                for name, text in texts.items()}
    return {"choice_index": scene["choice_index"], "action_type": scene["action_type"],
            "action_id": scene["action_id"], "decision": scene["decision_text"], **excerpts}


def _excerpt(index: int, name: str, text: str | None,
             artifacts: dict[str, bytes | Path]) -> str | None:
    if text is None or len(text) <= JUSTIFICATION_EXCERPT:
        return text
    path = f"scene_{index}/{name}.txt"
    artifacts[path] = text.encode()
    return text[:JUSTIFICATION_EXCERPT] + f" ... [{len(text)} chars; full text in artifact {path}]"


def _spec(key, name, parent_key, params, metrics, tags, artifacts, partition, mode, base_ms,
          span, unhashed: tuple[str, ...] = (), timed: bool = True) -> RunSpec:
    params = {k: str(v) for k, v in params.items() if v is not None}
    metrics = {k: float(v) for k, v in metrics.items() if v is not None}
    tags = {k: str(v) for k, v in tags.items() if v is not None}
    _spill(params, MAX_PARAM_CHARS, "params", artifacts)
    _spill(tags, MAX_TAG_CHARS, "tags", artifacts)
    tags |= {TAG_KEY: key, TAG_PARTITION: partition, "mlflow.runName": name}
    hashed = {k: v for k, v in tags.items() if k not in unhashed}
    tags[TAG_HASH] = _hash(params, metrics, hashed, artifacts, mode,
                           [base_ms, span.start, span.end, timed])
    return RunSpec(key, name, parent_key, params, metrics, tags, artifacts, base_ms, span,
                   timed)


def _spill(values: dict[str, str], limit: int, kind: str, artifacts: dict) -> None:
    """Never cut silently: the full text goes to an artifact, the value says so."""
    for key, value in values.items():
        if len(value) > limit:
            path = f"{kind}/{key}.txt"
            artifacts[path] = value.encode()
            note = f" ... [truncated from {len(value)} chars; full text in artifact {path}]"
            values[key] = value[: limit - len(note)] + note


def _hash(params: dict, metrics: dict, tags: dict, artifacts: dict, mode: str,
          times: list) -> str:
    digest = hashlib.blake2b(digest_size=16)
    body = {"layout": MLFLOW_LAYOUT_VERSION, "mode": mode, "params": params,
            "metrics": metrics, "tags": tags, "artifacts": sorted(artifacts), "times": times}
    digest.update(json.dumps(body, sort_keys=True).encode())
    for path in sorted(artifacts):
        data = artifacts[path]
        digest.update(data if isinstance(data, bytes) else path.encode())
    return digest.hexdigest()
