"""`report`: pivot tables checked against pandas over the pyarrow rows, written by extension."""

from __future__ import annotations

import csv
import math
import re

import pandas as pd
import pytest
from openpyxl import load_workbook

from align_track_pipeline.core.analysis.connection import AnalysisError, open_tables
from align_track_pipeline.core.analysis.output import write_table
from align_track_pipeline.core.analysis.pivot import PivotSpec, pivot
from tests.core.analysis.expected import table_rows


def _cells(result) -> dict[tuple, float]:
    """(row key, col key) -> value: the row's label values and the column's cols values."""
    n = result.labels
    return {(row[0] if n == 1 else tuple(row[:n]), key if len(key) > 1 else key[0]): value
            for row in result.rows
            for key, value in zip(result.col_keys, row[n:], strict=True) if value is not None}


def _pandas(rows: list[dict], index, columns, values, aggfunc: str) -> dict:
    index, columns = ([c] if isinstance(c, str) else list(c) for c in (index, columns))
    frame = pd.DataFrame(rows).astype(object)
    frame["_value"] = frame[values] if isinstance(values, str) else frame.apply(values, axis=1)
    frame = frame.dropna(subset=["_value"])
    table = frame.groupby(index + columns, dropna=False)["_value"]
    n = len(index)

    def part(key: tuple) -> object:
        key = tuple(None if isinstance(v, float) and math.isnan(v) else v for v in key)
        return key[0] if len(key) == 1 else key

    return {(part(k[:n]), part(k[n:])): float(v) for k, v in table.agg(aggfunc).items()}


def _close(found: dict, expected: dict) -> bool:
    return found.keys() == expected.keys() and all(
        math.isclose(found[k], expected[k], rel_tol=1e-9) for k in found)


def test_the_default_is_mean_time_per_action_by_target_and_adm_and_llm(tables_dir):
    """An ADM run on two LLMs is two columns, never one average of both."""
    result = pivot(open_tables(tables_dir), PivotSpec())
    rows = table_rows(tables_dir, "experiments")
    assert result.header[0] == "alignment_target_id" and result.labels == 1
    pairs = {(r["adm"], r["llm_backbone"]) for r in rows}
    assert set(result.col_keys) == pairs
    assert len({adm for adm, _ in pairs}) < len(pairs)  # the sample has such an ADM
    assert result.header[1:] == [f"{a} | {'(none)' if m is None else m}"
                                 for a, m in result.col_keys]
    expected = _pandas(rows, "alignment_target_id", ["adm", "llm_backbone"],
                       "timing_avg_seconds", "mean")
    assert _close(_cells(result), expected)


def test_several_rows_and_cols_columns(tables_dir):
    spec = PivotSpec("scenes", ("adm", "llm_backbone"), ("scenario_id", "alignment_target_id"),
                     "timing_seconds", "max")
    result = pivot(open_tables(tables_dir), spec)
    assert result.header[:2] == ["adm", "llm_backbone"] and result.labels == 2
    expected = _pandas(table_rows(tables_dir, "scenes"), ["adm", "llm_backbone"],
                       ["scenario_id", "alignment_target_id"], "timing_seconds", "max")
    assert _close(_cells(result), expected) and len(expected) > 10


def test_a_map_entry_of_scenes_by_llm(tables_dir):
    spec = PivotSpec("scenes", ("adm",), ("llm_backbone",), "scenario_scores.score", "max")
    result = pivot(open_tables(tables_dir), spec)
    rows = table_rows(tables_dir, "scenes")
    expected = _pandas(rows, "adm", "llm_backbone",
                       lambda r: r["scenario_scores"].get("score"), "max")
    found = {(r, None if c == "(none)" else c): v for (r, c), v in _cells(result).items()}
    assert _close(found, expected)


def test_count_takes_any_column(tables_dir):
    result = pivot(open_tables(tables_dir),
                   PivotSpec("scenes", ("scenario_id",), ("adm",), "decision_text", "count"))
    rows = [r for r in table_rows(tables_dir, "scenes") if r["decision_text"] is not None]
    expected = pd.DataFrame(rows).groupby(["scenario_id", "adm"]).size().to_dict()
    assert {k: v for k, v in _cells(result).items() if v} == expected


@pytest.mark.parametrize(("spec", "message"), [
    (PivotSpec(rows=("nosuch",)), "--rows: no column 'nosuch'.*valid: partition_key"),
    (PivotSpec(cols=("adm", "kdma_values")), "--cols: no column 'kdma_values'"),
    (PivotSpec(rows=("adm",)), "each column at most once \\(repeated: adm\\)"),
    (PivotSpec(cols=()), "--cols: name at least one column"),
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


def test_numbers_are_right_aligned_and_rounded(tables_dir, tmp_path):
    """4 significant digits, no exponent, right-aligned in Markdown, HTML and the terminal;
    the number format in xlsx; full precision in CSV."""
    from align_track_pipeline.core.analysis.terminal import text_table

    spec = PivotSpec(rows=("adm",), cols=("llm_backbone",))
    result = pivot(open_tables(tables_dir), spec)
    values = [v for line in result.values() for v in line if v is not None]
    assert pytest.approx(min(values), abs=5e-7) == 0.002477  # random: milliseconds
    for suffix in (".md", ".html", ".csv", ".xlsx"):
        write_table(tmp_path / f"r{suffix}", spec.title, result.header, result.rows)

    lines = (tmp_path / "r.md").read_text().splitlines()
    assert lines[3] == "|" + "---|" + "---:|" * len(result.col_keys)
    md_numbers = [c.strip() for line in lines[4:] for c in line.strip("|").split(" | ")[1:]
                  if c.strip()]
    assert sorted(md_numbers) == sorted(f"{v:.4g}" if v >= 1000 or v < 1e-4 else
                                        _four(v) for v in values)
    assert "0.002477" in md_numbers and "48.71" in md_numbers and "4.602" in md_numbers

    page = (tmp_path / "r.html").read_text()
    assert page.count('<td class="n">') == len(values)
    assert "td.n{text-align:right" in page

    with (tmp_path / "r.csv").open() as f:
        read = [float(c) for row in list(csv.reader(f))[1:] for c in row[1:] if c]
    assert sorted(read) == sorted(values)  # every digit kept

    sheet = load_workbook(tmp_path / "r.xlsx").active
    formats = {round(c.value, 9): c.number_format for row in sheet.iter_rows(min_row=2)
               for c in row[1:] if isinstance(c.value, float)}
    assert formats[round(min(values), 9)] == "0.000000"
    assert formats[round(max(values), 9)] == "0.00"

    table = text_table(result.header, result.rows, numbers_right=True)[0].splitlines()
    widths = [len(c) for c in table[1].split("  ")]
    for line in table[2:]:  # each number ends where its column ends
        for value in (v for v in line.split() if re.fullmatch(r"[0-9.]+", v)):
            end = line.index(value) + len(value)
            assert any(end == sum(widths[:i + 1]) + 2 * i for i in range(len(widths)))


def _four(value: float) -> str:
    """4 significant digits written out (independent of the code under test)."""
    fraction = f"{abs(value):.12f}".split(".")[1]
    digits = (4 - len(str(int(abs(value)))) if abs(value) >= 1
              else 4 + len(fraction) - len(fraction.lstrip("0")))
    return f"{value:.{max(0, digits)}f}"
