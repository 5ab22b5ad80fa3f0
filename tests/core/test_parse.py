"""The parser on every real variant of the bundled sample tree."""

import json
import shutil
from pathlib import Path

import pytest

from align_track_pipeline.core.schema import EXPERIMENTS, SCENES
from align_track_pipeline.core.source.discovery import RunDir, find_run_dirs
from align_track_pipeline.core.source.parse import parse_run_dir
from tests.conftest import SAMPLE_TREE, item_count

FAKE_SECRET = "FAKE-SECRET-DO-NOT-LOG"


def _parse(rel: str):
    return parse_run_dir(RunDir(SAMPLE_TREE / rel, rel), SAMPLE_TREE)


def _experiments(rel: str) -> list[dict]:
    return _parse(rel).experiments.to_pylist()


@pytest.mark.parametrize("run_dir", find_run_dirs(SAMPLE_TREE), ids=lambda r: r.rel_path)
def test_every_sample_parses_to_one_row_per_item(run_dir: RunDir):
    parsed = parse_run_dir(run_dir, SAMPLE_TREE)
    assert parsed.scenes.schema.equals(SCENES) and parsed.experiments.schema.equals(EXPERIMENTS)
    assert parsed.scenes.num_rows == item_count(run_dir.path) == parsed.item_count
    assert parsed.scenes.column("scene_index").to_pylist() == list(range(parsed.item_count))
    assert sum(parsed.experiments.column("num_scenes").to_pylist()) == parsed.item_count
    originals = json.loads((run_dir.path / "input_output.json").read_text())
    originals = originals["results"] if isinstance(originals, dict) else originals
    assert [json.loads(s) for s in parsed.scenes.column("item_json").to_pylist()] == originals


def test_scene_columns_follow_the_item():
    scene = _parse("pipeline_comparative_regression/moral_judgement-0.2").scenes.to_pylist()[0]
    item = json.loads(scene["item_json"])
    action = item["output"]["action"]
    assert scene["scenario_id"] == item["input"]["scenario_id"]
    assert scene["scene_id"] == item["input"]["full_state"]["meta_info"]["scene_id"]
    assert scene["choice_index"] == item["output"]["choice"]
    assert scene["decision_text"] == action["unstructured"]
    assert scene["justification"] == action["justification"]
    assert scene["action_type"] == action["action_type"]
    assert dict(scene["decision_kdma"]) == action["kdma_association"]
    assert scene["probe_text"] == item["input"]["state"]
    first_choice = item["input"]["choices"][0]["unstructured"]
    assert scene["choices_text"].splitlines()[0] == f"[0] {first_choice}"


def test_timing_aligns_per_scene_when_lengths_match():
    run = SAMPLE_TREE / "pipeline_comparative_regression/moral_judgement-0.2"
    raw = json.loads((run / "timing.json").read_text())["raw_times_s"]
    parsed = _parse("pipeline_comparative_regression/moral_judgement-0.2")
    assert parsed.scenes.column("timing_seconds").to_pylist() == raw
    exp = parsed.experiments.to_pylist()[0]
    assert exp["timing_total_seconds"] == pytest.approx(sum(raw))
    assert (exp["timing_min_seconds"], exp["timing_max_seconds"]) == (min(raw), max(raw))


def test_short_raw_times_leave_scene_timing_null_but_keep_totals():
    rel = "dry_run_2024_05/baseline_adept_high"
    timing = json.loads((SAMPLE_TREE / rel / "timing.json").read_text())
    parsed = _parse(rel)
    assert len(timing["raw_times_s"]) < parsed.item_count
    assert parsed.scenes.column("timing_seconds").null_count == parsed.item_count
    exp = parsed.experiments.to_pylist()[0]
    assert exp["timing_total_seconds"] == pytest.approx(timing["total_time_s"])
    assert exp["timing_min_seconds"] == min(timing["raw_times_s"])


def test_missing_timing_is_null():
    exp = _experiments("pipeline_comp_reg_icl_bert_sim_reverse/moral_judgement-0.2")[0]
    assert exp["timing_total_seconds"] is None


def test_mixed_target_live_dir_yields_one_experiment_per_target():
    rel = "phase2_june_eval_live/baseline/2025-06-12__14-03-55"
    parsed = _parse(rel)
    items = json.loads((SAMPLE_TREE / rel / "input_output.json").read_text())
    wanted = {i["input"]["alignment_target_id"] or "unaligned" for i in items}
    exps = {e["alignment_target_id"]: e for e in parsed.experiments.to_pylist()}
    assert set(exps) == wanted and len(wanted) == 3
    assert dict(exps["ADEPT-June2025-affiliation-1.0"]["kdma_values"]) == {"affiliation": 1.0}
    for target, exp in exps.items():
        n = sum((i["input"]["alignment_target_id"] or "unaligned") == target for i in items)
        assert exp["num_scenes"] == n
        assert exp["timing_total_seconds"] is not None  # per-scene times align in this dir


@pytest.mark.parametrize(
    ("rel", "kdmas"),
    [
        ("multi_kdma_comp_reg_icl/MJ-high_IO-low", {"Moral judgement": 0.8, "Ingroup Bias": 0.2}),
        ("pipeline_fewshot_comparative_regression/affiliation-0.5", {"affiliation": 0.5}),
        ("pipeline_fewshot_comparative_regression_feb2026/Feb2026-AF1-PS1", {
            "affiliation.intercept": 0.8875, "affiliation.attr_weight": -0.20313,
            "affiliation.medical_weight": 1.58125, "personal_safety.intercept": -2.8125,
            "personal_safety.attr_weight": 1.6475, "personal_safety.medical_weight": 1.05125}),
        ("comp_reg_icl_soartech/qol-high", {}),  # KDE blobs only: nothing numeric to copy
    ],
)
def test_alignment_target_variants(rel, kdmas):
    assert dict(_experiments(rel)[0]["kdma_values"]) == kdmas


def test_kde_blobs_never_reach_columns_other_than_the_config_text():
    exp = _experiments("comp_reg_icl_soartech/qol-high")[0]
    assert exp["alignment_target_id"] == "qol-synth-HighExtreme-ph1"
    assert all(len(str(v)) < 200 for k, v in exp.items() if k != "hydra_config")


def test_both_scores_shapes():
    plain = _parse("pipeline_comparative_regression/moral_judgement-0.2")
    raw = json.loads((SAMPLE_TREE / "pipeline_comparative_regression/moral_judgement-0.2"
                      / "scores.json").read_text())
    assert dict(plain.experiments.to_pylist()[0]["scores"])["score"] == pytest.approx(
        sum(e["score"] for e in raw) / len(raw))
    assert dict(plain.scenes.to_pylist()[0]["scenario_scores"])["score"] == raw[0]["score"]

    measured = _experiments("pipeline_fewshot_comparative_regression/affiliation-0.5")[0]
    scores = dict(measured["scores"])
    assert scores["accuracy"] == pytest.approx(scores["num_correct"] / scores["num_probes"])


def test_the_kdma_values_the_scorer_measured_are_kept_beside_the_score():
    """scores.json's `kdma_values` are the ADM's, as measured (0.15 against a target of 0.2):
    `kdma.<name>` in the scene's scenario scores and, their mean, in the experiment's."""
    rel = "multi_kdma_comp_reg_icl/MJ-high_IO-low"
    raw = json.loads((SAMPLE_TREE / rel / "scores.json").read_text())
    measured = {f"kdma.{v['kdma']}": v["value"] for v in raw[0]["kdma_values"]}
    assert len(raw) == 1 and len(measured) == 2
    parsed = _parse(rel)
    scenario = raw[0]["alignment_source"][0]["scenario_id"]
    for scene in parsed.scenes.to_pylist():
        expected = {"score": raw[0]["score"], **measured} if scene["scenario_id"] == scenario \
            else {}
        assert dict(scene["scenario_scores"]) == expected
    assert dict(parsed.experiments.to_pylist()[0]["scores"]) == {
        "score": raw[0]["score"], **measured, "num_scored": 1.0}


def test_measure_scores_are_cumulative_so_the_last_entry_wins(tmp_path):
    run = tmp_path / "pipeline_x" / "run"
    run.mkdir(parents=True)
    (run / "input_output.json").write_text(
        (SAMPLE_TREE / "random/unaligned/input_output.json").read_text())
    def entry(correct):
        return {"alignment_target": "t", "measures": {"S": {
            "num_correct": {"value": correct, "description": ""},
            "num_probes": {"value": 4, "description": ""}}}}
    (run / "scores.json").write_text(json.dumps([entry(1), entry(3)]))
    exp = parse_run_dir(RunDir(run, "pipeline_x/run"), tmp_path).experiments.to_pylist()[0]
    assert dict(exp["scores"]) == {"num_correct": 3.0, "num_probes": 4.0, "accuracy": 0.75}


@pytest.mark.parametrize("shape", ["measures", "plain"])
def test_a_scenario_scored_under_two_targets_keeps_each_targets_score(tmp_path, shape):
    """A live run folder (targets per item, none in its config) whose scores.json scores one
    scenario under two targets: each scene takes its own target's score, not the last one."""
    live = SAMPLE_TREE / "phase2_june_eval_live/baseline/2025-06-12__14-03-55"
    run = tmp_path / "live" / "two_targets"
    shutil.copytree(live / ".hydra", run / ".hydra")
    items = json.loads((live / "input_output.json").read_text())[:3]
    scenario = items[0]["input"]["scenario_id"]
    targets = {"ADEPT-June2025-affiliation-1.0": 1.0, "ADEPT-June2025-affiliation-0.0": 0.0}
    both = []
    for target in targets:
        for item in (copy := json.loads(json.dumps(items))):
            item["input"]["scenario_id"] = scenario
            item["input"]["alignment_target_id"] = target
        both += copy
    (run / "input_output.json").write_text(json.dumps(both))
    if shape == "measures":
        scores = [{"alignment_target": t, "measures": {scenario: {
            "num_correct": {"value": 3 * v}, "num_probes": {"value": 3},
            "accuracy": {"value": v}}}} for t, v in targets.items()]
        key = "accuracy"
    else:
        scores = [{"alignment_source": [{"scenario_id": scenario}], "alignment_target_id": t,
                   "score": v} for t, v in targets.items()]
        key = "score"
    (run / "scores.json").write_text(json.dumps(scores))
    parsed = parse_run_dir(RunDir(run, "live/two_targets"), tmp_path)
    got = [(s["alignment_target_id"], dict(s["scenario_scores"])[key])
           for s in parsed.scenes.to_pylist()]
    assert got == [(t, v) for t, v in targets.items() for _ in items]
    assert {e["alignment_target_id"]: dict(e["scores"])[key]
            for e in parsed.experiments.to_pylist()} == targets


def test_adm_name_sources():
    assert _experiments("pipeline_comparative_regression/moral_judgement-0.2")[0][
        "adm_source"] == "config"
    legacy = _experiments("pipeline_comp_reg_icl_test/moral_judgement-0.2")[0]
    assert (legacy["adm"], legacy["adm_source"]) == ("pipeline_comparative_regression", "hydra")
    export = _experiments("exports/pipeline_baseline/affiliation-0.5")[0]
    assert (export["adm"], export["adm_source"]) == ("pipeline_baseline", "path")
    assert export["has_hydra_config"] is False


def test_llm_backbone():
    exp = _experiments("pipeline_comparative_regression/moral_judgement-0.2")[0]
    assert exp["llm_backbone"] == "mistralai/Mistral-7B-Instruct-v0.3"
    assert _experiments("random/unaligned")[0]["llm_backbone"] is None


def test_wrapper_format_and_meta_versions():
    assert _experiments("wrapper_2026_04/random")[0]["align_system_version"] == "0.0.0"
    meta = json.loads((SAMPLE_TREE / "random/unaligned/meta.json").read_text())
    assert _experiments("random/unaligned")[0]["align_system_version"] == meta["version"]


def test_2024_format_without_target_or_scene_id():
    parsed = _parse("dry_run_2024_05/baseline_adept_high")
    assert set(parsed.scenes.column("alignment_target_id").to_pylist()) == {"unaligned"}
    assert parsed.scenes.column("scene_id").null_count == parsed.item_count


def test_int_scene_id_becomes_text(tmp_path):
    run = tmp_path / "pipeline_x" / "run"
    run.mkdir(parents=True)
    items = json.loads((SAMPLE_TREE / "random/unaligned/input_output.json").read_text())
    items[0]["input"]["full_state"]["meta_info"]["scene_id"] = 7
    del items[1]["input"]["full_state"]["meta_info"]["scene_id"]
    (run / "input_output.json").write_text(json.dumps(items))
    scenes = parse_run_dir(RunDir(run, "pipeline_x/run"), tmp_path).scenes
    assert scenes.column("scene_id").to_pylist()[:2] == ["7", None]


def test_credentials_are_redacted():
    rel = "phase2_june_eval_live/fewshot_comparative_regression_20icl/2025-06-13__09-12-01"
    assert FAKE_SECRET in (SAMPLE_TREE / rel / ".hydra/config.yaml").read_text()
    parsed = _parse(rel)
    for table in (parsed.experiments, parsed.scenes):
        for column in table.columns:
            assert FAKE_SECRET not in json.dumps(column.to_pylist(), default=str)
    config = parsed.experiments.to_pylist()[0]["hydra_config"]
    assert "***REDACTED***" in config and "darpaitm" not in config


def test_source_files_listed(tmp_path: Path):
    exp = _experiments("pipeline_comparative_regression/moral_judgement-0.2")[0]
    assert {"input_output.json", "timing.json", "scores.json", ".hydra/config.yaml"} <= set(
        exp["source_files"])
    assert not any(f.endswith(".log") for f in exp["source_files"])


def test_scores_of_one_target_are_not_copied_to_other_groups(tmp_path):
    rel = "phase2_june_eval_live/baseline/2025-06-12__14-03-55"
    run = tmp_path / rel
    run.mkdir(parents=True)
    (run / "input_output.json").write_text((SAMPLE_TREE / rel / "input_output.json").read_text())
    (run / "scores.json").write_text(json.dumps([{"alignment_target": "other", "measures": {
        "S": {"num_correct": {"value": 1}, "num_probes": {"value": 2}}}}]))
    exps = parse_run_dir(RunDir(run, rel), tmp_path).experiments.to_pylist()
    assert len(exps) == 3 and all(dict(e["scores"]) == {} for e in exps)


def test_the_runs_overrides_are_kept_with_credentials_masked():
    """What tells two runs of one ADM apart is often only what they were started with."""
    import yaml

    rel = "pipeline_fewshot_comparative_regression_feb2026/Feb2026-AF1-PS1"
    raw = yaml.safe_load((SAMPLE_TREE / rel / ".hydra/overrides.yaml").read_text())
    got = _parse(rel).experiments.to_pylist()[0]["hydra_overrides"]
    assert len(got) == len(raw) and got[0] == "adm=phase2_pipeline_fewshot_comparative_regression"
    user = next(g for g in got if g.startswith("interface.username="))
    assert "ALIGN-ADM" not in user and "ALIGN-ADM" in " ".join(raw)  # an account: masked
    assert _parse("exports/pipeline_baseline/affiliation-0.5").experiments.to_pylist()[0][
        "hydra_overrides"] == []  # no .hydra folder


def test_an_adm_named_after_the_config_it_extends_keeps_its_own_config_name():
    """Every few-shot run of 2025 has `adm.name: phase2_pipeline_zeroshot_...` (inherited): by
    `adm` alone few-shot and zero-shot runs are one ADM. `adm_config` is the Hydra choice."""
    rel = "pipeline_fewshot_comparative_regression/affiliation-0.5"
    parsed = _parse(rel)
    for row in parsed.experiments.to_pylist() + parsed.scenes.to_pylist():
        assert row["adm"] == "phase2_pipeline_zeroshot_comparative_regression"  # adm.name
        assert row["adm_config"] == "phase2_pipeline_fewshot_comparative_regression"
    assert _parse("exports/pipeline_baseline/affiliation-0.5").scenes.to_pylist()[0][
        "adm_config"] is None  # no .hydra folder
