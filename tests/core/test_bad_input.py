"""Each kind of bad input: a ParseError naming the file and the problem (nothing executed)."""

import json
import math
import os
from pathlib import Path

import pytest

from align_track_pipeline.core.source.discovery import RunDir, content_hash
from align_track_pipeline.core.source.files import ParseError
from align_track_pipeline.core.source.parse import parse_run_dir
from tests.conftest import make_run_dir


def _parse(root: Path, rel: str = "pipeline_x/run"):
    return parse_run_dir(RunDir(root / rel, rel), root)


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run_dir(tmp_path, "pipeline_x/run")


def _error(root: Path) -> ParseError:
    with pytest.raises(ParseError) as info:
        _parse(root)
    return info.value


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b'[{"input": {"scenario_id": "S1"', "truncated"),
        (b'{"not": "a list"}', "expected a JSON list of items"),
        (b'"just a string"', "expected a JSON list of items"),
        (b'[1, 2]', "item 0 has no `input` object"),
        (b'[{"input": {}}]', "item 0 has no input.scenario_id"),
        (b'[{"input": {"scenario_id": "caf\xe9"}}]', "not UTF-8 text (byte 0xe9"),
    ],
)
def test_bad_input_output_json(tmp_path, run, content, problem):
    (run / "input_output.json").write_bytes(content)
    err = _error(tmp_path)
    assert err.path.endswith("pipeline_x/run/input_output.json")
    assert problem in err.problem
    assert "input_output.json" in str(err)


def test_invalid_yaml_names_the_config(tmp_path, run):
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("adm:\n  name: [unclosed\n")
    err = _error(tmp_path)
    assert err.path.endswith(".hydra/config.yaml")
    assert "invalid YAML" in err.problem and "line" in err.problem


def test_yaml_python_tags_are_refused_and_never_executed(tmp_path, run):
    marker = tmp_path / "executed"
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        f"adm: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    err = _error(tmp_path)
    assert err.path.endswith(".hydra/config.yaml") and "tag not allowed" in err.problem
    assert not marker.exists()


def test_yaml_that_is_not_a_mapping(tmp_path, run):
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("- just\n- a list\n")
    assert "expected a YAML mapping" in _error(tmp_path).problem


def test_wrong_timing_shape_names_timing_json(tmp_path, run):
    (run / "timing.json").write_text("[1, 2, 3]")
    err = _error(tmp_path)
    assert err.path.endswith("timing.json") and "expected a JSON object" in err.problem


def test_nan_in_timing_becomes_null(tmp_path, run):
    n = len(json.loads((run / "input_output.json").read_text()))
    times = [1.5] * n
    times[1] = float("nan")
    (run / "timing.json").write_text(
        json.dumps({"total_time_s": float("nan"), "raw_times_s": times}, allow_nan=True)
    )
    parsed = _parse(tmp_path)
    per_scene = parsed.scenes.column("timing_seconds").to_pylist()
    assert per_scene[0] == 1.5 and per_scene[1] is None
    total = parsed.experiments.column("timing_total_seconds")[0].as_py()
    assert total == pytest.approx(1.5 * (n - 1)) and not math.isnan(total)


def test_input_symlinked_out_of_the_tree_is_refused(tmp_path):
    outside = make_run_dir(tmp_path / "outside", "src")
    tree = tmp_path / "tree"
    run = tree / "pipeline_x" / "run"
    run.mkdir(parents=True)
    os.symlink(outside / "input_output.json", run / "input_output.json")
    with pytest.raises(ParseError, match="symlink leaves the experiment tree"):
        _parse(tree)


def test_a_fifo_named_like_a_source_file_fails_instead_of_blocking(tmp_path, run):
    """A FIFO (or device) would block the read, and the ingest with it, for good."""
    (run / "input_output.json").unlink()
    os.mkfifo(run / "input_output.json")
    assert content_hash(run)  # a version of its own, told without reading
    error = _error(tmp_path)
    assert error.path == str(run / "input_output.json")
    assert error.problem == "cannot read file: not a regular file (a FIFO, device or socket)"


def test_a_folder_named_like_a_source_file_is_called_a_folder(tmp_path, run):
    (run / "timing.json").unlink(missing_ok=True)
    (run / "timing.json").mkdir()
    error = _error(tmp_path)
    assert (error.path, error.problem) == (str(run / "timing.json"),
                                           "cannot read file: a folder, not a file")


def test_missing_hydra_config_still_parses_with_adm_from_path(tmp_path, run):
    parsed = _parse(tmp_path)
    row = parsed.experiments.to_pylist()[0]
    assert row["adm"] == "pipeline_x" and row["adm_source"] == "path"
    assert row["has_hydra_config"] is False and row["hydra_config"] is None


def test_long_and_unicode_texts_are_kept_whole(tmp_path, run):
    items = json.loads((run / "input_output.json").read_text())
    long_text = "é名" + "x" * 50_000 + "🚑"
    items[0]["output"]["action"]["justification"] = long_text
    items[0]["input"]["state"] = long_text
    (run / "input_output.json").write_text(json.dumps(items, ensure_ascii=False))
    scene = _parse(tmp_path).scenes.to_pylist()[0]
    assert scene["justification"] == long_text and scene["probe_text"] == long_text
    assert json.loads(scene["item_json"]) == items[0]
