"""`search`: the rows of one table that pass the filters, in table order."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

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


@dataclass(frozen=True)
class Found:
    rows: list[dict]  # every column of the table, by name
    more: bool  # more rows matched than the limit let through


def search(con: duckdb.DuckDBPyConnection, table: str, filters: Filters,
           limit: int | None) -> Found:
    """Matching rows, every column, at most `limit` (None: all). No sort: rows come in the
    order they are stored (partition files, or the comparison file sorted by scenario), so a
    small limit stops reading early."""
    with user_sql(table, filters.where):
        rel = apply(con, table, filters)
        if limit is not None:
            rel = rel.limit(limit + 1)
        columns = rel.columns
        rows = [dict(zip(columns, values, strict=True)) for values in rel.fetchall()]
    more = limit is not None and len(rows) > limit
    return Found(rows[:limit] if more else rows, more)
