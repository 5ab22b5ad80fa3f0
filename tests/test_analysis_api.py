"""`import align_track_pipeline as at`: the commands' answers as DataFrames, row for row what
the commands print, without loading Dagster or MLflow."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

import align_track_pipeline as at
from align_track_pipeline.cli.main import main
from tests.core.analysis.expected import by_key, comparison_rows, table_rows


@pytest.fixture(autouse=True)
def _no_ui_addresses(monkeypatch):
    for name in ("ALIGN_TRACK_MLFLOW_UI_URL", "ALIGN_TRACK_AIM_UI_URL"):
        monkeypatch.delenv(name, raising=False)


def records(frame: pd.DataFrame) -> list[dict]:
    """DataFrame rows as the commands' JSON holds them (missing values as null)."""
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return json.loads(json.dumps(rows, default=str))


def cli_json(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("kwargs", "argv"), [
    ({}, []),
    ({"table": "experiments"}, ["--table", "experiments"]),
    ({"adm": "pipeline_*", "sort": ["timing_seconds:desc", "experiment_path"],
      "columns": "adm,timing_seconds,experiment_path,scenario_scores"},
     ["--adm", "pipeline_*", "--sort", "timing_seconds:desc", "--sort", "experiment_path",
      "--columns", "adm,timing_seconds,experiment_path,scenario_scores"]),
    ({"table": "experiments", "min_score": {"score": 0.9}, "where": "num_scenes >= 4"},
     ["--table", "experiments", "--min-score", "score=0.9", "--where", "num_scenes >= 4"]),
    ({"scenario": "DryRunEval.MJ1", "scene": "P1", "min_score": ["score=0.5"],
      "sort": "adm"},
     ["--scenario", "DryRunEval.MJ1", "--scene", "P1", "--min-score", "score=0.5",
      "--sort", "adm"]),
])
def test_search_is_the_rows_of_search_json_limit_0(capsys, tables_dir, kwargs, argv):
    expected = cli_json(capsys, "search", "--data-dir", str(tables_dir), "--json", "--limit",
                        "0", *argv)["rows"]
    frame = at.search(**kwargs, data_dir=tables_dir)
    assert len(frame) == len(expected) > 0
    assert records(frame) == expected
    assert list(frame.columns) == list(expected[0])


def test_a_limit_of_0_is_every_row_as_in_the_command(tables_dir):
    every = len(at.search(data_dir=tables_dir))
    assert len(at.search(limit=0, data_dir=tables_dir)) == every > 3
    assert len(at.search(limit=3, data_dir=tables_dir)) == 3
    with pytest.raises(at.AnalysisError, match="limit must be 0 \\(all\\) or more, not -1"):
        at.search(limit=-1, data_dir=tables_dir)


def test_whole_numbers_stay_whole_and_maps_are_dicts(tables_dir):
    frame = at.search(table="scenes", data_dir=tables_dir)
    assert str(frame["scene_index"].dtype) == "Int64"
    assert frame["choice_index"].isna().sum() == sum(
        r["choice_index"] is None for r in table_rows(tables_dir, "scenes"))
    assert all(isinstance(v, dict) for v in frame["scenario_scores"])


def test_compare_is_one_row_per_run(capsys, tables_dir):
    frame = at.compare("DryRunEval.MJ1", scene="P1", data_dir=tables_dir)
    expected = comparison_rows(tables_dir, "DryRunEval.MJ1", "P1")
    assert records(frame) == json.loads(json.dumps(expected, default=str))
    assert records(frame) == cli_json(capsys, "compare", "DryRunEval.MJ1", "--scene", "P1",
                                      "--data-dir", str(tables_dir), "--json")["rows"]
    assert len(frame) == len({(r["partition_key"], r["alignment_target_id"])
                              for r in expected}) == 14


def test_report_is_the_pivot_report_writes(capsys, tables_dir, tmp_path):
    out = tmp_path / "pivot.csv"
    assert main(["report", "--data-dir", str(tables_dir), "--rows", "adm", "--cols",
                 "llm_backbone", "-o", str(out)]) == 0
    written = pd.read_csv(out, index_col=0, keep_default_na=False, na_values=[""])
    for rows in ("adm", ["adm"]):
        frame = at.report(rows=rows, cols="llm_backbone", data_dir=tables_dir)
        pd.testing.assert_frame_equal(frame, written, check_names=False,
                                      check_column_type=False, check_index_type=False)
        assert frame.index.name == "adm" and frame.columns.name == "llm_backbone"


def test_report_counts_are_whole_numbers(tables_dir):
    frame = at.report(rows="adm", cols="alignment_target_id", values="adm", agg="count",
                      table="experiments", data_dir=tables_dir)
    assert int(frame.sum().sum()) == len(table_rows(tables_dir, "experiments"))
    assert all(str(t) == "Int64" for t in frame.dtypes)


def test_report_on_several_columns_is_the_commands_pivot(tables_dir, tmp_path):
    """The default keeps LLMs apart (targets by ADM and LLM), as `report` does."""
    out = tmp_path / "pivot.csv"
    assert main(["report", "--data-dir", str(tables_dir), "-o", str(out)]) == 0
    written = pd.read_csv(out, keep_default_na=False, na_values=[""])
    frame = at.report(data_dir=tables_dir)
    assert frame.columns.names == ["adm", "llm_backbone"]
    assert [" | ".join(c) for c in frame.columns] == list(written.columns[1:])
    assert frame.to_numpy().ravel() == pytest.approx(
        written.iloc[:, 1:].to_numpy(dtype=float).ravel(), nan_ok=True)
    two = at.report(rows="adm,llm_backbone", cols=["alignment_target_id"], data_dir=tables_dir)
    assert two.index.names == ["adm", "llm_backbone"]


def test_tables_are_every_row_of_both(tables_dir):
    both = at.tables(data_dir=tables_dir)
    assert isinstance(both, at.Tables)
    for name in ("experiments", "scenes"):
        expected = table_rows(tables_dir, name)
        frame = getattr(both, name)
        assert len(frame) == len(expected) > 0
        assert by_key(records(frame)) == by_key(json.loads(json.dumps(expected, default=str)))


def test_bad_requests_raise_saying_what_is_valid(tables_dir):
    with pytest.raises(at.AnalysisError, match="--columns: no column 'nosuch' in scenes; "
                                               "valid: partition_key"):
        at.search(columns=["adm", "nosuch"], data_dir=tables_dir)
    with pytest.raises(at.AnalysisError, match="try --table scenes"):
        at.search("experiments", scene="P1", data_dir=tables_dir)
    with pytest.raises(at.AnalysisError, match="run `align-track ingest` first"):
        at.tables(data_dir=tables_dir / "nothing")


def test_the_data_dir_defaults_like_the_commands(monkeypatch, tables_dir, tmp_path):
    monkeypatch.setenv("ALIGN_TRACK_DATA_DIR", str(tables_dir))
    assert len(at.search("experiments")) == len(table_rows(tables_dir, "experiments"))
    monkeypatch.delenv("ALIGN_TRACK_DATA_DIR")
    (tmp_path / "align-track-data").symlink_to(tables_dir)
    monkeypatch.chdir(tmp_path)
    assert len(at.compare("DryRunEval.MJ1")) == len(comparison_rows(tables_dir,
                                                                    "DryRunEval.MJ1"))


def test_importing_the_package_is_cheap_and_the_api_loads_no_dagster_or_mlflow(tables_dir):
    heavy = ("pandas", "duckdb", "dagster", "mlflow", "aim")
    script = (f"import sys; import align_track_pipeline as at; heavy = {heavy!r}; "
              "print([m for m in heavy if m in sys.modules]); "
              f"at.search(limit=1, data_dir={str(tables_dir)!r}); at.tables(data_dir="
              f"{str(tables_dir)!r}); at.report(data_dir={str(tables_dir)!r}); "
              "at.compare('DryRunEval.MJ1', data_dir=" f"{str(tables_dir)!r}); "
              "print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120).stdout.splitlines()
    assert out == ["[]", "['pandas', 'duckdb']"]
