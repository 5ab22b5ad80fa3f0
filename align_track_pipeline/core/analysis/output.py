"""Result tables written to a file, the format chosen by its extension."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from align_track_pipeline.core.analysis.charts import CHART_FORMATS, Grid, inline_svg, write_chart
from align_track_pipeline.core.analysis.connection import AnalysisError
from align_track_pipeline.core.analysis.pivot import Pivot
from align_track_pipeline.core.analysis.render import (
    cell,
    decimals,
    html_page,
    html_table,
    markdown_table,
)

TABLE_FORMATS = (".xlsx", ".csv", ".md", ".html")
REPORT_FORMATS = (*TABLE_FORMATS, *CHART_FORMATS)


def pivot_grid(pivot: Pivot, title: str, value_name: str) -> Grid:
    return Grid(title, value_name, pivot.row_labels(), pivot.col_labels, pivot.values())


def write_report(path: Path, title: str, pivot: Pivot, value_name: str) -> None:
    """A table format (`write_table`), a chart (`.svg`, `.png`), and in `.html` both: the
    chart (inline SVG) above the table."""
    suffix = path.suffix.lower()
    if suffix not in REPORT_FORMATS:
        raise AnalysisError(f"cannot write {path.name!r}: the file name must end in "
                            f"{', '.join(REPORT_FORMATS)}")
    grid = pivot_grid(pivot, title, value_name)
    if suffix in CHART_FORMATS:
        write_chart(path, grid)
    elif suffix == ".html" and grid.cells():
        path.parent.mkdir(parents=True, exist_ok=True)
        table = html_table(pivot.header, pivot.rows, numbers_right=True)
        body = f"<figure>{inline_svg(grid)}</figure>\n{table}"
        path.write_text(html_page(title, body), encoding="utf-8")
    else:
        write_table(path, title, pivot.header, pivot.rows)


def write_table(path: Path, title: str, header: list[str], rows: list[list[object]]) -> None:
    """`.xlsx` (numbers stay numbers), `.csv`, `.md` or `.html` (a self-contained page);
    numbers right-aligned."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise AnalysisError(f"cannot write {path.name!r}: the file name must end in "
                            f"{', '.join(TABLE_FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".xlsx":
        _xlsx(path, title, header, rows)
    elif suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([map(csv_safe, line) for line in [header, *rows]])
    elif suffix == ".md":
        table = markdown_table(header, rows, numbers_right=True)
        path.write_text(f"# {title}\n\n{table}\n", encoding="utf-8")
    else:
        table = html_table(header, rows, numbers_right=True)
        path.write_text(html_page(title, table), encoding="utf-8")


# What a spreadsheet may read as the start of a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    """A text cell that a spreadsheet would take for a formula, prefixed with `'`; numbers
    (a negative one included) and empty cells as they are."""
    if value is None or isinstance(value, int | float):
        return value
    text = cell(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _code(match: re.Match) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def _xlsx(path: Path, title: str, header: list[str], rows: list[list[object]]) -> None:
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    book = Workbook()
    sheet = book.active
    sheet.title = "report"
    book.properties.title = title
    for line in [header, *rows]:
        # Control characters, which xlsx cannot hold, are written as their codes (`\x1b`).
        sheet.append([v if isinstance(v, int | float) or v is None
                      else ILLEGAL_CHARACTERS_RE.sub(_code, cell(v)) for v in line])
        for written in sheet[sheet.max_row]:
            if isinstance(written.value, str):
                written.data_type = "s"  # openpyxl takes a leading "=" for a formula
            elif isinstance(written.value, float) and 1e-4 <= abs(written.value) < 1e15:
                # Shown as the other formats show it (4 significant digits); kept whole.
                places = decimals(written.value)
                written.number_format = "0." + "0" * places if places else "0"
    sheet.freeze_panes = "B2"
    book.save(path)
