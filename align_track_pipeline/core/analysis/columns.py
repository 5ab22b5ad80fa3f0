"""The tables' columns by kind, from the one schema (`core/schema.py`)."""

from __future__ import annotations

import pyarrow as pa

from align_track_pipeline.core.schema import TABLES


def columns_of(table: str) -> list[str]:
    return TABLES[table].names


def valid_columns(table: str) -> str:
    """The end of an error message about an unknown column."""
    return f"valid columns of {table}: {', '.join(columns_of(table))}"


def nested_columns(table: str) -> list[str]:
    """Maps and lists: not groupable, written as JSON text to CSV."""
    return [f.name for f in TABLES[table]
            if pa.types.is_map(f.type) or pa.types.is_list(f.type)]


def numeric_columns(table: str) -> list[str]:
    return [f.name for f in TABLES[table]
            if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]


def map_columns(table: str) -> list[str]:
    """The `name -> number` maps (scores, KDMA values)."""
    return [f.name for f in TABLES[table] if pa.types.is_map(f.type)]


def text_columns(table: str) -> list[str]:
    return [f.name for f in TABLES[table]
            if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
