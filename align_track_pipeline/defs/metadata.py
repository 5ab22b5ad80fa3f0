"""What a person wants to see in the UI about a table partition."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from align_track_pipeline.core.analysis.render import markdown_cell
from align_track_pipeline.core.schema import PREVIEW_COLUMNS, TABLES
from align_track_pipeline.core.tables.store import ParquetStore
from align_track_pipeline.core.tables.writer import TableWrite

TABLE_ROWS = "rows in table"


class TableRows:
    """The size of each table over all its partitions, kept current as a batch writes: the
    partition files' footers are read once per batch, then each write replaces its file's
    count. `dagster/row_count` is the partition's own size; this is the table's."""

    def __init__(self, store: ParquetStore, tables: tuple[str, ...]):
        self._files = {table: store.row_counts(table) for table in tables}
        self._totals = {table: sum(files.values()) for table, files in self._files.items()}

    def after(self, write: TableWrite) -> int:
        """The table's rows once this partition file holds `write.rows`."""
        files = self._files[write.table]
        name = Path(write.path).name
        self._totals[write.table] += write.rows - files.get(name, 0)
        files[name] = write.rows
        return self._totals[write.table]


def column_schema(table: str) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=f.name,
                type=str(f.type),
                description=(f.metadata or {}).get(b"doc", b"").decode() or None,
                constraints=dg.TableColumnConstraints(nullable=f.nullable),
            )
            for f in TABLES[table]
        ]
    )


def preview(table: str, rows: list[dict]) -> dg.MetadataValue:
    """A small markdown table; long texts are shortened for display only."""
    cols = PREVIEW_COLUMNS[table]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in cols) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _cell(value: object) -> str:
    """Shortened, then made inert: no raw HTML from the data reaches the UI's Markdown."""
    text = "" if value is None else str(value).replace("\n", " ")
    return markdown_cell(text if len(text) <= 60 else text[:57] + "...")


def partition_metadata(write: TableWrite, source_version: str, table_rows: int,
                       numbers: dict[str, float]) -> dict:
    """The partition's research numbers (`core.tables.numbers`) as floats, which the asset's
    Plots tab draws per partition; the whole table's size as text, which it does not (a
    running total says nothing about one experiment)."""
    return {
        "dagster/row_count": write.rows,
        TABLE_ROWS: dg.MetadataValue.text(str(table_rows)),
        **{name: dg.MetadataValue.float(value) for name, value in numbers.items()},
        "path": dg.MetadataValue.path(write.path),
        "source_version": source_version,
        "preview": preview(write.table, write.preview),
    }
