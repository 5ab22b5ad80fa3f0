"""Result tables written to a file, the format chosen by its extension."""

from __future__ import annotations

import csv
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
            csv.writer(f).writerows([header, *rows])
    elif suffix == ".md":
        path.write_text(f"# {title}\n\n{markdown_table(header, rows)}\n", encoding="utf-8")
    else:
        path.write_text(html_page(title, html_table(header, rows)), encoding="utf-8")


def _xlsx(path: Path, title: str, header: list[str], rows: list[list[object]]) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "report"
    book.properties.title = title
    sheet.append(header)
    for row in rows:
        sheet.append([v if isinstance(v, int | float) or v is None else cell(v) for v in row])
    sheet.freeze_panes = "B2"
    book.save(path)
