"""What to log as MLflow traces for one partition: one trace per scene, built from its rows.

Pure data, no MLflow import. A trace shows one decision the way MLflow's trace views read it:
its root span's inputs are what the ADM was shown (probe, choices with their action ids, types
and KDMA associations, the alignment target and its KDMA values), its outputs what it decided
(the chosen action, its justification and KDMA association). Tags carry the tables' column
names, so a trace is found as its rows are; the scene's scores become feedback assessments.
A trace belongs to the run holding its experiment row (the parent run, or the flat run), and
its start and duration are the scene's (`trackers/times.py`), as the scene run's are.

Every trace has the scene's key and a content hash, so a writer can tell "already there,
unchanged" from "must be replaced", as for runs. Its id is derived from the experiment, the key
the run it links to and the hash: writing the same trace twice names the same trace.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from align_track_pipeline.core.trackers.base import scenario_metrics
from align_track_pipeline.core.trackers.times import Span, run_times
from align_track_pipeline.core.versions import MLFLOW_LAYOUT_VERSION, experiment_key, scene_key

ENV = "ALIGN_TRACK_MLFLOW_TRACES"
TAG_PARTITION = "partition_key"  # the tables' column: the partition's traces are found by it
TAG_KEY = "align_track.key"
TAG_HASH = "align_track.content_hash"
TAG_ARCHIVED = "archived"  # "true" on the traces of an archived (removed) partition
TAG_ARCHIVED_PARTITION = "align_track.archived_partition"  # replaces their partition_key
PREVIEW_CHARS = 1000  # MLflow's own preview length (open-source server)
SCORE_SOURCE = "align-track"  # the assessments' source id (source type CODE)


@dataclass(frozen=True)
class TraceSpec:
    key: str  # the scene's key
    run_key: str  # the key of the run it links to (its experiment row's run)
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    tags: dict[str, str]
    feedback: dict[str, float]  # score name -> value
    base_ms: int | None  # as RunSpec.base_ms: None counts from the write time
    span: Span
    request_preview: str
    response_preview: str

    @property
    def content_hash(self) -> str:
        return self.tags[TAG_HASH]

    def trace_id(self, experiment_id: str, run_id: str) -> str:
        """`tr-<32 hex>`, MLflow's form: the same trace of the same run, the same id."""
        ident = f"{experiment_id}\0{run_id}\0{self.key}\0{self.content_hash}"
        digest = hashlib.blake2b(ident.encode(), digest_size=16).hexdigest()
        return f"tr-{digest}"


def plan_traces(experiments: list[dict], scenes: list[dict], mode: str) -> list[TraceSpec]:
    """One trace per scene, in scene order."""
    times = run_times(experiments[0]["experiment_path"] if experiments else "", scenes)
    targets = {e["alignment_target_id"]: e for e in experiments}
    return [_trace(scene, targets.get(scene["alignment_target_id"]), times.base_ms,
                   times.scenes[scene["scene_index"]], mode)
            for scene in sorted(scenes, key=lambda s: s["scene_index"])]


def _trace(scene: dict, exp: dict | None, base_ms: int | None, span: Span,
           mode: str) -> TraceSpec:
    from align_track_pipeline.core.trackers.mlflow.plan import scene_run_name

    item = _item(scene)
    kdmas = dict(exp["kdma_values"]) if exp else {}
    inputs = {"scenario_id": scene["scenario_id"], "scene_id": scene["scene_id"],
              "probe": scene["probe_text"], "choices": choices(item),
              "alignment_target": {"id": scene["alignment_target_id"], "kdma_values": kdmas}}
    outputs = {"choice_index": scene["choice_index"], "action_id": scene["action_id"],
               "action_type": scene["action_type"], "text": scene["decision_text"],
               "justification": scene["justification"],
               "kdma_association": dict(scene["decision_kdma"]), **_reasoning(item)}
    tags = {"adm": scene["adm"], "llm_backbone": scene["llm_backbone"] or "none",
            "alignment_target_id": scene["alignment_target_id"],
            "scenario_id": scene["scenario_id"], "scene_id": scene["scene_id"] or "",
            "scene_index": str(scene["scene_index"]),
            "experiment_path": scene["experiment_path"],
            TAG_PARTITION: scene["partition_key"],
            TAG_KEY: scene_key(scene["partition_key"], scene["scene_index"])}
    feedback = {k: float(v) for k, v in scenario_metrics(scene).items() if v is not None}
    name = scene_run_name(scene)
    run_key = experiment_key(scene["partition_key"], scene["alignment_target_id"])
    tags[TAG_HASH] = _hash(name, run_key, inputs, outputs, tags, feedback, mode,
                           [base_ms, span.start, span.end])
    return TraceSpec(tags[TAG_KEY], run_key, name, inputs, outputs, tags, feedback, base_ms,
                     span, _request_preview(scene), _response_preview(scene))


# What an ADM records of why it chose (`choice_info`, keys vary by ADM): the KDMA values it
# predicted for each choice and the ones it aligned to. Its other keys (ICL examples, step
# timings) are long and stay in the run's scene_data.json.
REASONING = ("predicted_kdma_values", "true_kdma_values")


def _reasoning(item: dict) -> dict:
    info = item.get("choice_info")
    if not isinstance(info, dict):
        return {}
    return {name: info[name] for name in REASONING if info.get(name) not in (None, {}, [])}


def _item(scene: dict) -> dict:
    try:
        item = json.loads(scene["item_json"])
    except (TypeError, ValueError):
        return {}
    return item if isinstance(item, dict) else {}


def choices(item: dict) -> list[dict]:
    """Each choice's text, action id and type, and KDMA association (the choice's own, else
    its label: `label[i]` belongs to `choices[i]`)."""
    found = (item.get("input") or {}).get("choices") if isinstance(item.get("input"), dict) \
        else None
    labels = item.get("label") if isinstance(item.get("label"), list) else []
    out = []
    for i, choice in enumerate(found if isinstance(found, list) else []):
        choice = choice if isinstance(choice, dict) else {}
        assoc = choice.get("kdma_association")
        if not isinstance(assoc, dict):
            assoc = labels[i] if i < len(labels) and isinstance(labels[i], dict) else {}
        out.append({"index": i, "text": choice.get("unstructured"),
                    "action_id": choice.get("action_id"),
                    "action_type": choice.get("action_type"), "kdma_association": assoc})
    return out


def _request_preview(scene: dict) -> str:
    """What the trace list shows as the request: where the scene is, then the probe."""
    head = f"{scene['scenario_id']} {scene['scene_id'] or '-'}: "
    return _cut(head + (scene["probe_text"] or ""))


def _response_preview(scene: dict) -> str:
    """What the trace list shows as the response: the choice, then the justification."""
    choice = "-" if scene["choice_index"] is None else scene["choice_index"]
    text = f"[{choice}] {scene['decision_text'] or scene['action_type'] or ''}"
    if scene["justification"]:
        text += f" | {scene['justification']}"
    return _cut(text)


def _cut(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def _hash(*parts: Any) -> str:
    body = json.dumps([MLFLOW_LAYOUT_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()
