"""Run planning from Parquet rows: structure, limits, hashing."""

from datetime import UTC, datetime

from align_track_pipeline.core.source.discovery import RunDir, find_run_dirs
from align_track_pipeline.core.source.parse import parse_run_dir
from align_track_pipeline.core.trackers.mlflow.plan import (
    FLAT,
    JUSTIFICATION_EXCERPT,
    MAX_NAME_CHARS,
    MAX_PARAM_CHARS,
    TAG_HASH,
    TAG_KEY,
    plan_runs,
)
from align_track_pipeline.core.trackers.times import started_at_ms
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
        assert child.name == (f"{child.params['scenario_id']} {child.params['scene_id']} | "
                              f"{child.params['adm']} | {child.params['alignment_target_id']} | "
                              f"idx{index} | {LIVE}")
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
    for child in plan_runs(exps, scenes, None)[1:]:  # they inherit the param and its note
        assert child.params["run_variant"] == parent.params["run_variant"]
        assert child.artifacts["params/run_variant.txt"] == long.encode()


def test_hashes_are_stable_and_follow_content():
    exps, scenes = _rows("random/unaligned")
    first = {s.tags[TAG_KEY]: s.tags[TAG_HASH] for s in plan_runs(exps, scenes, None)}
    again = {s.tags[TAG_KEY]: s.tags[TAG_HASH] for s in plan_runs(exps, scenes, None)}
    assert first == again
    scenes[2]["justification"] = "changed"
    scenes[2]["item_json"] = scenes[2]["item_json"].replace("Random", "Changed")
    changed = {s.tags[TAG_KEY]: s.tags[TAG_HASH] for s in plan_runs(exps, scenes, None)}
    assert [k for k in first if first[k] != changed[k]] == [f"{exps[0]['partition_key']}::2"]


def test_scene_runs_carry_the_decision():
    exps, scenes = _rows(LIVE)
    children = [s for s in plan_runs(exps, scenes, None) if s.parent_key]
    for child, scene in zip(children, sorted(scenes, key=lambda s: (
            [e["alignment_target_id"] for e in exps].index(s["alignment_target_id"]),
            s["scene_index"])), strict=True):
        assert child.params["scene_index"] == str(scene["scene_index"])
        assert child.params["choice_index"] == str(scene["choice_index"])
        assert child.params["action_type"] == scene["action_type"]
        assert child.params["action_id"] == scene["action_id"]
        assert child.params["decision"] == scene["decision_text"]
        assert child.params["justification"] == scene["justification"]
    assert {c.params["action_type"] for c in children} >= {"TREAT_PATIENT", "END_SCENE"}


def test_a_long_justification_is_an_excerpt_with_the_full_text_beside_it():
    exps, scenes = _rows("random/unaligned")
    scenes[1]["justification"] = "why " * 400
    child = [s for s in plan_runs(exps, scenes, None) if s.parent_key][1]
    assert child.params["justification"].startswith(("why " * 400)[:JUSTIFICATION_EXCERPT])
    assert "1600 chars; full text in artifact scene_1/justification.txt" in (
        child.params["justification"])
    assert child.artifacts["scene_1/justification.txt"] == ("why " * 400).encode()


def test_scene_run_names_are_unique_in_the_experiment():
    names = []
    for run_dir in find_run_dirs(SAMPLE_TREE):
        exps, scenes = _rows(run_dir.rel_path)
        names += [s.name for s in plan_runs(exps, scenes, None)]
    assert len(names) == len(set(names)) and max(map(len, names)) <= MAX_NAME_CHARS


def test_live_runs_start_when_their_directory_says_and_scenes_follow_in_order():
    exps, scenes = _rows(LIVE)
    specs = plan_runs(exps, scenes, None)
    start = int(datetime(2025, 6, 12, 14, 3, 55, tzinfo=UTC).timestamp() * 1000)
    assert {s.base_ms for s in specs} == {start}
    assert {s.tags["start_time_source"] for s in specs} == {"run_dir_name"}
    children = sorted((s for s in specs if s.parent_key), key=lambda s: s.span.start)
    assert [int(c.params["scene_index"]) for c in children] == list(range(len(scenes)))
    timing = {s["scene_index"]: s["timing_seconds"] for s in scenes}
    for child in children:
        assert child.span.end - child.span.start == round(
            timing[int(child.params["scene_index"])] * 1000)
    for parent in (s for s in specs if s.parent_key is None):
        own = [c for c in children if c.parent_key == parent.key]
        assert parent.span.start == min(c.span.start for c in own)
        assert parent.span.end >= max(c.span.end for c in own)
        total = next(e for e in exps if e["alignment_target_id"] == parent.params[
            "alignment_target_id"])["timing_total_seconds"]
        assert parent.span.end - parent.span.start >= round(total * 1000)


def test_runs_without_a_start_in_the_data_count_from_the_write_time():
    exps, scenes = _rows("random/unaligned")
    for scene in scenes:
        scene["timing_seconds"] = None  # untimed scenes still keep their order
    specs = plan_runs(exps, scenes, None)
    assert {s.base_ms for s in specs} == {None}
    assert {s.tags["start_time_source"] for s in specs} == {"write_time"}
    starts = [s.span.start for s in specs if s.parent_key]
    assert starts == sorted(set(starts))


def test_runs_without_a_start_in_the_data_end_at_the_write_time_never_after_it():
    """Counted forward from the write time, a run of 67 min of ADM time would show its last
    scenes 67 min in the future; it ended when it was written, so its spans count back."""
    exps, scenes = _rows("random/unaligned")
    for scene in scenes:
        scene["timing_seconds"] = 200.0
    for exp in exps:
        exp["timing_total_seconds"] = 200.0 * len(scenes) + 60  # more than its scenes took
    specs = plan_runs(exps, scenes, None)
    assert max(s.span.end for s in specs) == 0
    children = sorted((s for s in specs if s.parent_key), key=lambda s: s.span.start)
    assert [c.span.end - c.span.start for c in children] == [200_000] * len(children)
    assert children[0].span.start == -200_000 * len(children)
    parent = next(s for s in specs if s.parent_key is None)
    assert parent.span.end - parent.span.start == (200 * len(scenes) + 60) * 1000


def test_directory_names_with_a_start_time():
    assert started_at_ms("a/2025-06-12__14-03-55") == 1749737035000
    assert started_at_ms("outputs/2025-06-12/14-03-55/x") == 1749737035000
    assert started_at_ms("pipeline_baseline/moral_judgement-0.2") is None
    assert started_at_ms("a/2025-13-45__99-00-00") is None


def test_scene_run_names_start_with_what_tells_them_apart_and_carry_probe_and_choices():
    exps, scenes = _rows("random/unaligned")
    scenes[0]["probe_text"] = "situation " * 100
    children = [s for s in plan_runs(exps, scenes, None) if s.parent_key]
    first, scene = children[0], scenes[0]
    assert first.name.startswith(
        f"{scene['scenario_id']} {scene['scene_id'] or '-'} | {scene['adm']} | "
        f"{scene['alignment_target_id']} | idx0 | ")
    assert first.params["probe"].startswith(("situation " * 100)[:JUSTIFICATION_EXCERPT])
    assert "1000 chars; full text in artifact scene_0/probe.txt" in first.params["probe"]
    assert first.artifacts["scene_0/probe.txt"] == ("situation " * 100).encode()
    assert children[1].params["choices"] == scenes[1]["choices_text"][:JUSTIFICATION_EXCERPT] + (
        "" if len(scenes[1]["choices_text"]) <= JUSTIFICATION_EXCERPT else children[1].params[
            "choices"][JUSTIFICATION_EXCERPT:])


def test_the_runs_of_a_run_dir_without_timing_json_say_it_is_incomplete():
    """align-system writes timing.json last: without it the run crashed or is still running,
    which MLflow's 'Finished' and Aim's runs did not tell (a tag and a param now do)."""
    from align_track_pipeline.core.trackers.aim.plan import plan_scene_runs

    unfinished = "pipeline_comp_reg_icl_bert_sim_reverse/moral_judgement-0.2"
    for rel, said in ((unfinished, True), ("random/unaligned", False)):
        exps, scenes = _rows(rel)
        assert ("timing.json" not in exps[0]["source_files"]) is said
        specs = plan_runs(exps, scenes, SAMPLE_TREE / rel)
        aim = plan_scene_runs(exps, scenes)
        if said:
            assert all(s.tags["incomplete"].startswith("no timing.json") for s in specs)
            assert all(r.params["incomplete"].startswith("no timing.json") for r in aim)
        else:
            assert not any("incomplete" in s.tags for s in specs)
            assert not any("incomplete" in r.params for r in aim)


def test_a_trace_holds_the_kdma_values_the_adm_predicted_for_each_choice():
    """The ADM's own reason for a choice (`choice_info.predicted_kdma_values`, and the
    values it aligned to) was only in the run's scene_data.json artifact."""
    import json

    from align_track_pipeline.core.trackers.mlflow.traces import plan_traces

    rel = "comp_reg_icl_adept/moral_judgement-0.2"
    exps, scenes = _rows(rel)
    items = json.loads((SAMPLE_TREE / rel / "input_output.json").read_text())
    for trace in plan_traces(exps, scenes, "hierarchical"):
        info = items[int(trace.tags["scene_index"])]["choice_info"]
        assert trace.outputs["predicted_kdma_values"] == info["predicted_kdma_values"]
        assert trace.outputs["true_kdma_values"] == info["true_kdma_values"]
    random = plan_traces(*_rows("random/unaligned"), "hierarchical")[0]  # choice_info {}
    assert "predicted_kdma_values" not in random.outputs
