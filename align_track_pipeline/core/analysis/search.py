"""`search`: the rows of one table that pass the filters, in table order."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from align_track_pipeline.core.analysis.columns import columns_of, nested_columns
from align_track_pipeline.core.analysis.connection import AnalysisError
from align_track_pipeline.core.analysis.filters import Filters, apply, user_sql

# What the terminal shows of a row (JSON has every column); texts are shortened there.
SHOWN_COLUMNS = {
    "scenes": ["experiment_path", "scenario_id", "scene_id", "scene_index", "adm",
               "llm_backbone", "alignment_target_id", "choice_index", "decision_text",
               "justification", "timing_seconds"],
    "experiments": ["experiment_path", "adm", "llm_backbone", "alignment_target_id",
                    "kdma_values", "num_scenes", "num_scenarios", "timing_avg_seconds",
                    "scores"],
}


# A row's identity: what breaks the ties of a sort, so that a sorted answer is the same each
# time (DuckDB's parallel sort keeps no order among equal keys).
KEY_COLUMNS = {"scenes": ["partition_key", "scene_index"],
               "experiments": ["partition_key", "alignment_target_id"]}


@dataclass(frozen=True)
class Found:
    rows: list[dict]  # every column of the table, by name
    more: bool  # more rows matched than the limit let through


def parse_sort(keys: list[str] | tuple[str, ...], table: str) -> tuple[tuple[str, bool], ...]:
    """`--sort COL[:desc]` (or `:asc`), repeatable -> ((column, descending), ...)."""
    nested = nested_columns(table)
    sortable = [c for c in columns_of(table) if c not in nested]
    order = []
    for key in keys:
        column, _, direction = key.partition(":")
        if column not in sortable:
            raise AnalysisError(f"--sort: no column {column!r} to sort {table} by; valid: "
                                f"{', '.join(sortable)}")
        if direction.lower() not in ("", "asc", "desc"):
            raise AnalysisError(f"--sort {key!r}: the direction after ':' is asc or desc")
        order.append((column, direction.lower() == "desc"))
    return tuple(order)


def parse_columns(text: str | list[str] | tuple[str, ...], table: str) -> list[str]:
    """`--columns a,b,c` (or a list) -> the columns, each checked against the table."""
    names = [c.strip() for c in text.split(",")] if isinstance(text, str) else list(text)
    unknown = [c for c in names if c not in columns_of(table)]
    if unknown or not names:
        raise AnalysisError(f"--columns: no column {', '.join(map(repr, unknown)) or 'given'} "
                            f"in {table}; valid: {', '.join(columns_of(table))}")
    return names


def search(con: duckdb.DuckDBPyConnection, table: str, filters: Filters,
           limit: int | None, order: tuple[tuple[str, bool], ...] = ()) -> Found:
    """Matching rows, every column, at most `limit` (None: all), sorted by `order`
    ((column, descending) pairs from `parse_sort`; nulls last; ties in the order of the
    rows' keys). Without it, rows come in the order they are stored (partition files, or the
    comparison file sorted by scenario), so a small limit stops reading early."""
    with user_sql(table, filters.where):
        rel = apply(con, table, filters)
        if order:
            ties = [(c, False) for c in KEY_COLUMNS[table] if c not in dict(order)]
            rel = rel.order(", ".join(f'"{c}" {"DESC" if desc else "ASC"} NULLS LAST'
                                      for c, desc in [*order, *ties]))
        if limit is not None:
            rel = rel.limit(limit + 1)
        columns = rel.columns
        rows = [dict(zip(columns, values, strict=True)) for values in rel.fetchall()]
    more = limit is not None and len(rows) > limit
    return Found(rows[:limit] if more else rows, more)
