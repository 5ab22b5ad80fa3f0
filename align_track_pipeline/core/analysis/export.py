"""`export`: the filtered rows of a table, every column, to one file. DuckDB writes the file
itself (streaming, any size): the locked connection may write that one path only, a partial
file beside the target that then replaces it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from align_track_pipeline.core.analysis.columns import nested_columns, text_columns
from align_track_pipeline.core.analysis.connection import AnalysisError, open_tables, sql_literal
from align_track_pipeline.core.analysis.filters import Filters, apply, user_sql
from align_track_pipeline.core.analysis.output import FORMULA_STARTS
from align_track_pipeline.core.analysis.owned import refuse_output

# --format -> DuckDB COPY options. CSV and TSV hold maps and lists as JSON text.
FORMATS = {"csv": "FORMAT csv, HEADER", "tsv": "FORMAT csv, HEADER, DELIMITER '\t'",
           "json": "FORMAT json, ARRAY true", "jsonl": "FORMAT json",
           "parquet": "FORMAT parquet, COMPRESSION zstd"}


def export_format(path: Path, given: str | None) -> str:
    """`--format`, else the file's extension."""
    fmt = given or path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise AnalysisError(f"unknown export format {fmt!r} (from "
                            f"{'--format' if given else repr(path.name)}); valid: "
                            f"{', '.join(FORMATS)}")
    return fmt


def _csv_column(table: str, column: str) -> str:
    """A column as CSV/TSV holds it: maps and lists as JSON text; a text cell that a
    spreadsheet would take for a formula prefixed with `'` (as `output.csv_safe` does);
    numbers as they are."""
    if column in nested_columns(table):
        return f'to_json("{column}")::VARCHAR AS "{column}"'
    if column in text_columns(table):
        starts = ", ".join(sql_literal(c) for c in FORMULA_STARTS)
        return (f'CASE WHEN left("{column}", 1) IN ({starts}) THEN \'\'\'\' || "{column}" '
                f'ELSE "{column}" END AS "{column}"')
    return f'"{column}"'


def export(data_dir: Path, table: str, filters: Filters, path: Path, fmt: str) -> int:
    """Write the rows; returns how many. Refused (AnalysisError) when `path` is a file the
    pipeline owns in the data dir (`owned`)."""
    refuse_output(data_dir, path)
    path = path.resolve()
    if path.is_dir():
        raise AnalysisError(f"{path} is a folder: give the export a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside it, then moved over it: an export that fails leaves the earlier file as
    # it was (DuckDB's own temporary name for an existing file is not one it may write). Its
    # name ends as the target's: DuckDB compresses `.csv.gz` by the extension.
    partial = path.with_name(f".partial-{uuid.uuid4().hex[:8]}-{path.name}")
    con = open_tables(data_dir, [table], files=[partial])
    try:
        with user_sql(table, filters.where):
            rel = apply(con, table, filters)
            if fmt in ("csv", "tsv"):
                rel = rel.project(", ".join(_csv_column(table, c) for c in rel.columns))
            rel.create_view("export_rows")
            (count,) = con.execute(f"COPY export_rows TO {sql_literal(str(partial))} "
                                   f"({FORMATS[fmt]})").fetchone()
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return count
