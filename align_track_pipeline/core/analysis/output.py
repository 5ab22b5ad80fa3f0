"""Result tables written to a file, the format chosen by its extension."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from align_track_pipeline.core.analysis.connection import AnalysisError
from align_track_pipeline.core.analysis.render import cell, html_page, html_table, markdown_table

TABLE_FORMATS = (".xlsx", ".csv", ".md", ".html")


def write_table(path: Path, title: str, header: list[str], rows: list[list[object]]) -> None:
    """`.xlsx` (numbers stay numbers), `.csv`, `.md` or `.html` (a self-contained page)."""
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
        path.write_text(f"# {title}\n\n{markdown_table(header, rows)}\n", encoding="utf-8")
    else:
        path.write_text(html_page(title, html_table(header, rows)), encoding="utf-8")


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
    sheet.freeze_panes = "B2"
    book.save(path)
