"""What to log for one partition: MLflow run specs built from its Parquet rows.

Pure data, no MLflow import: one parent per experiment row and one child per scene
(hierarchical), or one run per experiment row (flat). Every run has a deterministic key and a
content hash, so a writer can tell "already there, unchanged" from "must be replaced".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from align_track_pipeline.core.versions import MLFLOW_LAYOUT_VERSION, experiment_key, scene_key

HIERARCHICAL, FLAT = "hierarchical", "flat"
MAX_PARAM_CHARS, MAX_TAG_CHARS = 6000, 8000  # MLflow's limits; longer values go to artifacts

TAG_KEY = "align_track.key"
TAG_PARTITION = "align_track.partition"
TAG_HASH = "align_track.content_hash"


@dataclass
class RunSpec:
    key: str
    name: str
    parent_key: str | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: dict[str, bytes | Path] = field(default_factory=dict)  # relative path -> data

    @property
    def content_hash(self) -> str:
        return self.tags[TAG_HASH]


def plan_runs(
    experiments: list[dict], scenes: list[dict], run_dir: Path | None, mode: str = HIERARCHICAL
) -> list[RunSpec]:
    """Parents first, then their children; `run_dir` supplies the source-file artifacts."""
    specs = []
    for exp in experiments:
        parent = _parent(exp, run_dir, mode)
        specs.append(parent)
        if mode == HIERARCHICAL:
            specs += [_child(parent, s) for s in scenes
                      if s["alignment_target_id"] == exp["alignment_target_id"]]
    return specs


def _parent(exp: dict, run_dir: Path | None, mode: str) -> RunSpec:
    params = {
        "adm": exp["adm"],
        "llm_backbone": exp["llm_backbone"],
        "alignment_target_id": exp["alignment_target_id"],
        "num_scenarios": exp["num_scenarios"],
        "num_scenes": exp["num_scenes"],
        "run_variant": exp["run_variant"],
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
    }
    artifacts: dict[str, bytes | Path] = {}
    if exp["hydra_config"] is not None:
        artifacts["config/hydra_config.redacted.yaml"] = exp["hydra_config"].encode()
    for name in exp["source_files"]:
        if run_dir is not None and not name.startswith(".hydra/"):  # raw configs hold secrets
            artifacts[f"source/{name}"] = run_dir / name
    key = experiment_key(exp["partition_key"], exp["alignment_target_id"])
    name = f"{exp['experiment_path']} [{exp['alignment_target_id']}]"
    return _spec(key, name, None, params, metrics, tags, artifacts, exp["partition_key"], mode)


def _child(parent: RunSpec, scene: dict) -> RunSpec:
    index = scene["scene_index"]
    params = {**parent.params, "scene_id": scene["scene_id"], "scene_index": index,
              "scenario_id": scene["scenario_id"]}
    metrics = {"scene.timing_seconds": scene["timing_seconds"],
               **{f"scene.score.{k}": v for k, v in scene["scenario_scores"]}}
    inherited = {k: v for k, v in parent.tags.items() if not k.startswith("align_track.")}
    tags = {**inherited, "run_type": "scene", "scene_id": scene["scene_id"] or "",
            "scene_index": str(index)}
    artifacts = {f"scene_{index}/scene_data.json": scene["item_json"].encode()}
    key = scene_key(scene["partition_key"], index)
    name = f"{scene['scenario_id']}_idx{index}"
    return _spec(key, name, parent.key, params, metrics, tags, artifacts,
                 scene["partition_key"], HIERARCHICAL)


def _spec(key, name, parent_key, params, metrics, tags, artifacts, partition, mode) -> RunSpec:
    params = {k: str(v) for k, v in params.items() if v is not None}
    metrics = {k: float(v) for k, v in metrics.items() if v is not None}
    tags = {k: str(v) for k, v in tags.items() if v is not None}
    _spill(params, MAX_PARAM_CHARS, "params", artifacts)
    _spill(tags, MAX_TAG_CHARS, "tags", artifacts)
    tags |= {TAG_KEY: key, TAG_PARTITION: partition, "mlflow.runName": name}
    tags[TAG_HASH] = _hash(params, metrics, tags, artifacts, mode)
    return RunSpec(key, name, parent_key, params, metrics, tags, artifacts)


def _spill(values: dict[str, str], limit: int, kind: str, artifacts: dict) -> None:
    """Never cut silently: the full text goes to an artifact, the value says so."""
    for key, value in values.items():
        if len(value) > limit:
            path = f"{kind}/{key}.txt"
            artifacts[path] = value.encode()
            note = f" ... [truncated from {len(value)} chars; full text in artifact {path}]"
            values[key] = value[: limit - len(note)] + note


def _hash(params: dict, metrics: dict, tags: dict, artifacts: dict, mode: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    body = {"layout": MLFLOW_LAYOUT_VERSION, "mode": mode, "params": params,
            "metrics": metrics, "tags": tags, "artifacts": sorted(artifacts)}
    digest.update(json.dumps(body, sort_keys=True).encode())
    for path in sorted(artifacts):
        data = artifacts[path]
        digest.update(data if isinstance(data, bytes) else path.encode())
    return digest.hexdigest()
