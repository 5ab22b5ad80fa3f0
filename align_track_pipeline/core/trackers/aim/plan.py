"""What to log in Aim for one partition: one flat run per scene, its texts inline.

Pure data, no Aim import; the content hash lets the writer skip unchanged scenes. The texts
(probe, choices, decision, justification) are params, as the layout names them, and also
`Text` sequences of the same names: the run's Texts tab shows them with their line breaks,
where the params view shows one JSON string with literal `\n`. A run's start and end come
from the data (`trackers/times.py`): the Aim UI shows them as its date and duration.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from align_track_pipeline.core.trackers.base import INCOMPLETE, incomplete, scenario_metrics
from align_track_pipeline.core.trackers.times import RunTimes, Span, run_times
from align_track_pipeline.core.versions import AIM_LAYOUT_VERSION, scene_key

TEXT_PARAMS = ("probe_text", "choices_text", "decision_text", "justification")


@dataclass(frozen=True)
class SceneRun:
    key: str
    name: str
    experiment: str
    params: dict[str, Any]
    metrics: dict[str, float]
    texts: dict[str, str]
    base_ms: int | None = None  # epoch ms the span counts from; None: the write time
    span: Span = Span(0, 0)  # start and end, ms after base_ms

    @property
    def content_hash(self) -> str:
        body = {"v": AIM_LAYOUT_VERSION, "name": self.name, "experiment": self.experiment,
                "params": self.params, "metrics": self.metrics, "texts": self.texts,
                "times": [self.base_ms, self.span.start, self.span.end]}
        return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(),
                               digest_size=16).hexdigest()


def plan_scene_runs(experiments: list[dict], scenes: list[dict]) -> list[SceneRun]:
    rows = {e["alignment_target_id"]: e for e in experiments}
    times = run_times(scenes[0]["experiment_path"] if scenes else "", scenes)
    return [_scene_run(s, rows.get(s["alignment_target_id"]), times) for s in scenes]


def _scene_run(scene: dict, experiment: dict | None, times: RunTimes) -> SceneRun:
    kdmas = dict(experiment["kdma_values"]) if experiment else {}
    params = {
        "adm": scene["adm"],
        "adm_config": scene["adm_config"],
        "llm_backbone": scene["llm_backbone"],
        "alignment_target_id": scene["alignment_target_id"],
        "kdma": kdmas,
        "run_variant": scene["run_variant"],
        "scenario_id": scene["scenario_id"],
        "scene_id": scene["scene_id"],
        "scene_index": scene["scene_index"],
        "experiment_path": scene["experiment_path"],
        "partition_key": scene["partition_key"],
        "start_time_source": times.source,  # where the run's date comes from
        INCOMPLETE: incomplete(experiment) if experiment else None,
        "overrides": (list(experiment["hydra_overrides"]) or None) if experiment else None,
        **{name: scene[name] for name in TEXT_PARAMS},
    }
    metrics = {"timing_seconds": scene["timing_seconds"],
               **scenario_metrics(scene)}
    return SceneRun(
        key=scene_key(scene["partition_key"], scene["scene_index"]),
        name=scene_run_name(scene),
        experiment=scene["experiment_path"],
        params={k: v for k, v in params.items() if v is not None},
        metrics={k: v for k, v in metrics.items() if v is not None},
        texts={name: scene[name] for name in TEXT_PARAMS if scene[name] is not None},
        base_ms=times.base_ms,
        span=times.scenes[scene["scene_index"]],
    )


def scene_run_name(scene: dict) -> str:
    """`<scenario> <scene id> | <adm> | <target> | idx<i>`: the runs of one scene differ by ADM
    and target, so those are in the name (the run directory is the run's `experiment`)."""
    return (f"{scene['scenario_id']} {scene['scene_id'] or '-'} | {scene['adm']} | "
            f"{scene['alignment_target_id']} | idx{scene['scene_index']}")
