"""Run planning from Parquet rows: structure, limits, hashing."""

from align_track_pipeline.core.source.discovery import RunDir
from align_track_pipeline.core.source.parse import parse_run_dir
from align_track_pipeline.core.trackers.mlflow.plan import (
    FLAT,
    MAX_PARAM_CHARS,
    TAG_HASH,
    TAG_KEY,
    plan_runs,
)
from tests.conftest import SAMPLE_TREE

LIVE = "phase2_june_eval_live/baseline/2025-06-12__14-03-55"


def _rows(rel: str):
    parsed = parse_run_dir(RunDir(SAMPLE_TREE / rel, rel), SAMPLE_TREE)
    return parsed.experiments.to_pylist(), parsed.scenes.to_pylist()


def test_hierarchical_plan_has_a_parent_per_target_and_a_child_per_scene():
    exps, scenes = _rows(LIVE)
    specs = plan_runs(exps, scenes, SAMPLE_TREE / LIVE)
    parents = [s for s in specs if s.parent_key is None]
    children = [s for s in specs if s.parent_key is not None]
    assert len(parents) == len(exps) == 3 and len(children) == len(scenes)
    assert len({s.key for s in specs}) == len(specs)
    for child in children:
        parent = next(p for p in parents if p.key == child.parent_key)
        assert child.params["alignment_target_id"] == parent.params["alignment_target_id"]
        assert {k: child.params[k] for k in parent.params} == parent.params
        assert child.tags["run_type"] == "scene" and parent.tags["run_type"] == "parent"
        index = child.params["scene_index"]
        assert child.name == f"{child.params['scenario_id']}_idx{index}"
        assert f"scene_{index}/scene_data.json" in child.artifacts


def test_parent_params_metrics_tags():
    rel = "multi_kdma_comp_reg_icl/MJ-high_IO-low"
    exps, scenes = _rows(rel)
    parent = plan_runs(exps, scenes, SAMPLE_TREE / rel)[0]
    assert parent.params["kdma.Moral judgement"] == "0.8"
    assert parent.params["kdma.Ingroup Bias"] == "0.2"
    assert parent.params["llm_backbone"] == "mistralai/Mistral-7B-Instruct-v0.3"
    assert set(parent.metrics) >= {"timing.total_seconds", "timing.avg_seconds",
                                   "timing.min_seconds", "timing.max_seconds", "score.score"}
    assert parent.tags["experiment_path"] == rel and parent.tags["has_hydra_config"] == "true"
    assert "config/hydra_config.redacted.yaml" in parent.artifacts
    assert "source/input_output.json" in parent.artifacts
    assert not any(a.startswith("source/.hydra") for a in parent.artifacts)  # raw secrets


def test_flat_plan_has_one_run_per_experiment_row():
    exps, scenes = _rows(LIVE)
    specs = plan_runs(exps, scenes, SAMPLE_TREE / LIVE, FLAT)
    assert len(specs) == 3 and all(s.parent_key is None for s in specs)
    assert {s.tags["run_type"] for s in specs} == {"experiment"}


def test_long_values_spill_to_artifacts_never_silently_cut():
    exps, scenes = _rows("random/unaligned")
    long = "x" * 9000
    exps[0]["run_variant"] = long
    parent = plan_runs(exps, scenes, None)[0]
    assert len(parent.params["run_variant"]) <= MAX_PARAM_CHARS
    assert "truncated from 9000 chars" in parent.params["run_variant"]
    assert parent.artifacts["params/run_variant.txt"] == long.encode()


def test_hashes_are_stable_and_follow_content():
    exps, scenes = _rows("random/unaligned")
    first = {s.tags[TAG_KEY]: s.tags[TAG_HASH] for s in plan_runs(exps, scenes, None)}
    again = {s.tags[TAG_KEY]: s.tags[TAG_HASH] for s in plan_runs(exps, scenes, None)}
    assert first == again
    scenes[2]["justification"] = "changed"
    scenes[2]["item_json"] = scenes[2]["item_json"].replace("Random", "Changed")
    changed = {s.tags[TAG_KEY]: s.tags[TAG_HASH] for s in plan_runs(exps, scenes, None)}
    assert [k for k in first if first[k] != changed[k]] == [f"{exps[0]['partition_key']}::2"]
