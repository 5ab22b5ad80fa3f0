"""`report`: one value aggregated over a table, rows by one column and columns by another."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from align_track_pipeline.core.analysis.columns import (
    columns_of,
    map_columns,
    nested_columns,
    numeric_columns,
)
from align_track_pipeline.core.analysis.connection import AnalysisError, map_keys, sql_literal

# --agg -> DuckDB aggregate.
AGGREGATES = {"mean": "avg", "median": "median", "min": "min", "max": "max", "sum": "sum",
              "count": "count"}


@dataclass(frozen=True)
class PivotSpec:
    """The defaults are align-track's: mean ADM time per action, targets by ADMs."""

    table: str = "experiments"
    rows: str = "alignment_target_id"
    cols: str = "adm"
    values: str = "timing_avg_seconds"
    agg: str = "mean"

    @property
    def title(self) -> str:
        return f"{self.agg} of {self.values} by {self.rows} and {self.cols} ({self.table})"


@dataclass(frozen=True)
class Pivot:
    header: list[str]  # the rows column's name, then one value of the cols column each
    rows: list[list[object]]  # a rows value, then the aggregate per column (None: no rows)


def grouping_columns(table: str) -> list[str]:
    nested = nested_columns(table)
    return [c for c in columns_of(table) if c not in nested]


def value_columns(table: str) -> list[str]:
    """Numeric columns, and `<map>.<key>` for the numeric maps (scores, KDMA values)."""
    return numeric_columns(table) + [f"{m}.<key>" for m in map_columns(table)]


def pivot(con: duckdb.DuckDBPyConnection, spec: PivotSpec) -> Pivot:
    if spec.agg not in AGGREGATES:
        raise AnalysisError(f"unknown --agg {spec.agg!r}; valid: {', '.join(AGGREGATES)}")
    groups = grouping_columns(spec.table)
    for option, column in (("--rows", spec.rows), ("--cols", spec.cols)):
        if column not in groups:
            raise AnalysisError(f"{option}: no column {column!r} to group by in {spec.table}; "
                                f"valid: {', '.join(groups)}")
    value = _value_sql(con, spec)
    found = con.sql(f'SELECT "{spec.rows}", "{spec.cols}", {AGGREGATES[spec.agg]}({value}) '
                    f"FROM {spec.table} GROUP BY ALL").fetchall()
    return _spread(spec.rows, found)


def _value_sql(con: duckdb.DuckDBPyConnection, spec: PivotSpec) -> str:
    """The aggregated expression: a numeric column (any column for count) or a map entry."""
    if spec.values in numeric_columns(spec.table) or (
            spec.agg == "count" and spec.values in columns_of(spec.table)):
        return f'"{spec.values}"'
    column, _, key = spec.values.partition(".")
    if key and column in map_columns(spec.table):
        known = map_keys(con, spec.table, column)
        if key not in known:
            raise AnalysisError(f"--values: no key {key!r} in {column} of {spec.table}; "
                                f"known: {', '.join(known) or 'none'}")
        return f'"{column}"[{sql_literal(key)}]'
    raise AnalysisError(f"--values: {spec.values!r} is not a numeric column of {spec.table}; "
                        f"valid: {', '.join(value_columns(spec.table))}"
                        + ("" if spec.agg == "count" else " (any column with --agg count)"))


def _spread(rows_name: str, found: list[tuple]) -> Pivot:
    """Long (row, col, value) triples -> a wide table, both axes sorted (nulls last)."""
    def order(value: object) -> tuple[bool, str]:
        return value is None, str(value)

    cols = sorted({c for _, c, _ in found}, key=order)
    cells = {(r, c): v for r, c, v in found}
    body = [[r, *(cells.get((r, c)) for c in cols)]
            for r in sorted({r for r, _, _ in found}, key=order)]
    return Pivot([rows_name, *("(none)" if c is None else str(c) for c in cols)], body)
