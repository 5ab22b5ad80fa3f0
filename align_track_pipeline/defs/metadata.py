"""What a person wants to see in the UI about a table partition."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa

from ..core.tables import TABLES

PREVIEW_COLUMNS = {
    "experiments": ["alignment_target_id", "adm", "llm_backbone", "num_scenes",
                    "timing_total_seconds"],
    "scenes": ["scene_index", "scenario_id", "scene_id", "alignment_target_id", "decision_text"],
}


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


def preview(table: str, data: pa.Table, rows: int = 5) -> dg.MetadataValue:
    """A small markdown table; long texts are shortened for display only."""
    cols = PREVIEW_COLUMNS[table]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in data.slice(0, rows).select(cols).to_pylist():
        cells = [_cell(row[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def _cell(value: object) -> str:
    text = "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def partition_metadata(table: str, data: pa.Table, path: Path, source_version: str) -> dict:
    return {
        "dagster/row_count": data.num_rows,
        "dagster/column_schema": column_schema(table),
        "path": dg.MetadataValue.path(str(path)),
        "source_version": source_version,
        "preview": preview(table, data),
    }
