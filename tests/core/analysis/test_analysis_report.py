"""`report`: pivot tables checked against pandas over the pyarrow rows, written by extension."""

from __future__ import annotations

import csv
import math

import pandas as pd
import pytest
from openpyxl import load_workbook

from align_track_pipeline.core.analysis.connection import AnalysisError, open_tables
from align_track_pipeline.core.analysis.output import write_table
from align_track_pipeline.core.analysis.pivot import PivotSpec, pivot
from tests.core.analysis.expected import table_rows


def _cells(result) -> dict[tuple, float]:
    return {(row[0], col): value for row in result.rows
            for col, value in zip(result.header[1:], row[1:], strict=True) if value is not None}


def _pandas(rows: list[dict], index: str, columns: str, values, aggfunc: str) -> dict:
    frame = pd.DataFrame(rows)
    frame["_value"] = frame[values] if isinstance(values, str) else frame.apply(values, axis=1)
    table = frame.dropna(subset=["_value"]).groupby([index, columns], dropna=False)["_value"]
    return {(r, c): v for (r, c), v in table.agg(aggfunc).items()}


def _close(found: dict, expected: dict) -> bool:
    return found.keys() == expected.keys() and all(
        math.isclose(found[k], expected[k], rel_tol=1e-9) for k in found)


def test_the_default_is_mean_time_per_action_by_target_and_adm(tables_dir):
    result = pivot(open_tables(tables_dir), PivotSpec())
    rows = table_rows(tables_dir, "experiments")
    assert result.header[0] == "alignment_target_id"
    assert result.header[1:] == sorted({r["adm"] for r in rows})
    expected = _pandas(rows, "alignment_target_id", "adm", "timing_avg_seconds", "mean")
    assert _close(_cells(result), expected)


def test_a_map_entry_of_scenes_by_llm(tables_dir):
    spec = PivotSpec("scenes", "adm", "llm_backbone", "scenario_scores.score", "max")
    result = pivot(open_tables(tables_dir), spec)
    rows = table_rows(tables_dir, "scenes")
    expected = _pandas(rows, "adm", "llm_backbone",
                       lambda r: r["scenario_scores"].get("score"), "max")
    found = {(r, None if c == "(none)" else c): v for (r, c), v in _cells(result).items()}
    assert _close(found, expected)


def test_count_takes_any_column(tables_dir):
    result = pivot(open_tables(tables_dir),
                   PivotSpec("scenes", "scenario_id", "adm", "decision_text", "count"))
    rows = [r for r in table_rows(tables_dir, "scenes") if r["decision_text"] is not None]
    expected = pd.DataFrame(rows).groupby(["scenario_id", "adm"]).size().to_dict()
    assert {k: v for k, v in _cells(result).items() if v} == expected


@pytest.mark.parametrize(("spec", "message"), [
    (PivotSpec(rows="nosuch"), "--rows: no column 'nosuch'.*valid: partition_key"),
    (PivotSpec(cols="kdma_values"), "--cols: no column 'kdma_values'"),
    (PivotSpec(values="adm"), "not a numeric column.*valid: num_scenes.*scores.<key>"),
    (PivotSpec(values="scores.nosuch"), "no key 'nosuch' in scores.*known: .*score"),
    (PivotSpec(agg="mode"), "unknown --agg 'mode'; valid: mean, median"),
])
def test_bad_columns_name_the_valid_ones(tables_dir, spec, message):
    with pytest.raises(AnalysisError, match=message):
        pivot(open_tables(tables_dir), spec)


def test_each_format_by_extension(tables_dir, tmp_path):
    spec = PivotSpec()
    result = pivot(open_tables(tables_dir), spec)
    for suffix in (".xlsx", ".csv", ".md", ".html"):
        write_table(tmp_path / f"report{suffix}", spec.title, result.header, result.rows)
    sheet = load_workbook(tmp_path / "report.xlsx").active
    read = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert read[0] == result.header and len(read) == len(result.rows) + 1
    for got, want in zip(read[1:], result.rows, strict=True):  # numbers stay numbers
        assert [type(v) for v in got] == [type(v) for v in want]
        assert all(g == w or math.isclose(g, w, rel_tol=1e-14)
                   for g, w in zip(got, want, strict=True))
    with (tmp_path / "report.csv").open() as f:
        assert list(csv.reader(f))[0] == result.header
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.count("\n|") == len(result.rows) + 2 and spec.title in markdown
    page = (tmp_path / "report.html").read_text()
    assert page.count("<tr>") == len(result.rows) + 1
    assert "<script" not in page and "http" not in page  # self-contained
    with pytest.raises(AnalysisError, match=r"must end in \.xlsx, \.csv, \.md, \.html"):
        write_table(tmp_path / "report.txt", spec.title, result.header, result.rows)
