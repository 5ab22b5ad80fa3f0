"""`report` charts: valid SVG/PNG drawn from the pivot's numbers, checked against the numbers
computed with pandas over the pyarrow rows (the SVG's data attributes and the drawn bars'
lengths), and the HTML page with the chart above the table, naming no address."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from align_track_pipeline.core.analysis.charts import figure
from align_track_pipeline.core.analysis.connection import open_tables
from align_track_pipeline.core.analysis.output import pivot_grid, write_report
from align_track_pipeline.core.analysis.pivot import PivotSpec, pivot
from tests.core.analysis.expected import table_rows
from tests.core.analysis.test_analysis_report import _pandas

BARS = PivotSpec(rows=("adm",), cols=("llm_backbone",))  # 9 x 4: grouped bars
HEAT = PivotSpec()  # 8 targets x 11 ADM | LLM: a heat map
SVG = "{http://www.w3.org/2000/svg}"


def _label(key) -> str:
    return " | ".join("(none)" if v is None else str(v)
                      for v in (key if isinstance(key, tuple) else (key,)))


def _expected(tables_dir, spec: PivotSpec) -> dict[tuple[str, str], float]:
    rows = table_rows(tables_dir, spec.table)
    column, _, key = spec.values.partition(".")
    values = (lambda r: r[column].get(key)) if key else spec.values  # noqa: E731
    found = _pandas(rows, list(spec.rows), list(spec.cols), values, spec.agg)
    return {(_label(r), _label(c)): v for (r, c), v in found.items()}


def _svg_cells(svg: str) -> dict[tuple[str, str], float]:
    root = ET.fromstring(svg)  # well-formed XML, an <svg> root
    assert root.tag == f"{SVG}svg"
    cells = {(g.get("data-row"), g.get("data-col")): float(g.get("data-value"))
             for g in root.iter(f"{SVG}g") if g.get("data-value") is not None}
    titles = [g.find(f"{SVG}title").text for g in root.iter(f"{SVG}g")
              if g.get("data-value") is not None]
    assert len(titles) == len(cells) and all(": " in t for t in titles)  # hover text
    return cells


def _same(found: dict, expected: dict) -> bool:
    return found.keys() == expected.keys() and all(
        math.isclose(found[k], expected[k], rel_tol=1e-12) for k in found)


@pytest.mark.parametrize(("spec", "heat_map"), [(BARS, False), (HEAT, True)])
def test_svg_holds_the_pivots_numbers(tables_dir, tmp_path, spec, heat_map):
    result = pivot(open_tables(tables_dir), spec)
    grid = pivot_grid(result, spec.title, "seconds")
    assert grid.heat_map is heat_map
    write_report(tmp_path / "chart.svg", spec.title, result, "seconds")
    svg = (tmp_path / "chart.svg").read_text()
    assert svg.startswith("<?xml")
    assert _same(_svg_cells(svg), _expected(tables_dir, spec))


def test_the_bars_drawn_are_the_values(tables_dir):
    result = pivot(open_tables(tables_dir), BARS)
    grid = pivot_grid(result, BARS.title, "seconds")
    (ax,) = figure(grid).axes
    bars = [p for p in ax.patches if (p.get_gid() or "").startswith("cell-")]
    drawn = {grid.cells()[int(p.get_gid()[5:])][:2]: p.get_width() for p in bars}
    assert _same(drawn, _expected(tables_dir, BARS))


def test_png_is_a_picture_of_the_same_chart(tables_dir, tmp_path):
    result = pivot(open_tables(tables_dir), BARS)
    write_report(tmp_path / "chart.png", BARS.title, result, "seconds")
    data = (tmp_path / "chart.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(tmp_path / "chart.png") as image:
        image.verify()
        width, height = image.size
    grid = pivot_grid(result, BARS.title, "seconds")
    expected = figure(grid).get_size_inches() * 150
    assert (width, height) == pytest.approx(tuple(expected), abs=2)


def test_html_puts_the_chart_above_the_table_and_fetches_nothing(tables_dir, tmp_path):
    result = pivot(open_tables(tables_dir), HEAT)
    write_report(tmp_path / "report.html", HEAT.title, result, "seconds")
    page = (tmp_path / "report.html").read_text()
    assert page.index("<svg") < page.index("<table")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "http" not in page and "<script" not in page
    svg = page[page.index("<svg"):page.index("</svg>") + 6]
    # Read as a standalone SVG: the namespaces an HTML parser supplies, declared.
    declared = f'<svg xmlns="{SVG[1:-1]}" xmlns:xlink="http://www.w3.org/1999/xlink"'
    cells = _svg_cells(svg.replace("<svg", declared, 1))
    assert _same(cells, _expected(tables_dir, HEAT))
    assert page.count("<tr>") == len(result.rows) + 1


def test_charts_are_drawn_only_when_asked(tables_dir, tmp_path):
    """matplotlib is imported by a chart, never by a table: the commands start fast."""
    import subprocess
    import sys

    script = ("import sys; from align_track_pipeline.cli.main import main; "
              f"code = main(['report', '--data-dir', {str(tables_dir)!r}, '-o', "
              f"{str(tmp_path / 'r.md')!r}]); print('matplotlib' in sys.modules, code); "
              f"code = main(['report', '--data-dir', {str(tables_dir)!r}, '-o', "
              f"{str(tmp_path / 'r.svg')!r}]); print('matplotlib' in sys.modules, code)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert [line for line in out.splitlines() if line.endswith(" 0")] == ["False 0", "True 0"]


def test_axis_labels_that_differ_at_their_end_stay_apart(tables_dir):
    """The heat map's columns are `LLM | target`: cut at their end, the two Mistral versions
    (and the two Moral judgement targets) read alike."""
    result = pivot(open_tables(tables_dir), HEAT_BY_LLM)
    grid = pivot_grid(result, HEAT_BY_LLM.title, "seconds")
    assert grid.heat_map
    ax = figure(grid).axes[0]  # the other one is the color bar
    shown = [t.get_text() for t in ax.get_xticklabels()]
    assert len(shown) == len(set(shown)) == len(grid.cols)
    assert max(map(len, shown)) < max(map(len, grid.cols))  # still shortened
    assert any(s.startswith("mistralai") and "-v0.2 | " in s for s in shown)
    assert all(grid.cols[i].split(" | ")[1].endswith(s.split(" | ")[1].split("...")[-1])
               for i, s in enumerate(shown))  # each part keeps its end


HEAT_BY_LLM = PivotSpec(rows=("adm",), cols=("llm_backbone", "alignment_target_id"))


def test_labels_alike_but_for_their_spaces_are_shortened_once():
    """Shortening folds whitespace: widening could never tell `adm` from `adm ` apart."""
    from align_track_pipeline.core.analysis.charts import shorts

    assert shorts(["adm", "adm "]) == ["adm", "adm"]
    assert shorts(["x" * 100 + " a", "x" * 100 + "  a"])[0].startswith("x")
