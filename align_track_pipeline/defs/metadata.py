"""What a person wants to see in the UI about a table partition."""

from __future__ import annotations

import dagster as dg

from align_track_pipeline.core.tables.schema import PREVIEW_COLUMNS, TABLES
from align_track_pipeline.core.tables.writer import TableWrite


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
    text = "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def partition_metadata(write: TableWrite, source_version: str) -> dict:
    return {
        "dagster/row_count": write.rows,
        "path": dg.MetadataValue.path(write.path),
        "source_version": source_version,
        "preview": preview(write.table, write.preview),
    }
