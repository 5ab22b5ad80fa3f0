"""`report`: one value aggregated over a table, rows by some columns and columns by others."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """The defaults are align-track's: mean ADM time per action, targets by ADM and LLM (an
    ADM run on two LLMs is two experiments, never averaged into one cell)."""

    table: str = "experiments"
    rows: tuple[str, ...] = ("alignment_target_id",)
    cols: tuple[str, ...] = ("adm", "llm_backbone")
    values: str = "timing_avg_seconds"
    agg: str = "mean"

    @property
    def title(self) -> str:
        return (f"{self.agg} of {self.values} by {', '.join(self.rows)} and "
                f"{', '.join(self.cols)} ({self.table})")


# Between the values of several --cols columns in one column label.
LABEL_JOIN = " | "
NONE_LABEL = "(none)"


@dataclass(frozen=True)
class Pivot:
    header: list[str]  # the rows columns' names, then one label per column (values joined)
    rows: list[list[object]]  # the rows columns' values, then the aggregate per column
    labels: int = 1  # how many leading columns are row labels (the rows columns)
    col_keys: list[tuple] = field(default_factory=list)  # each column's cols values

    @property
    def col_labels(self) -> list[str]:
        return self.header[self.labels:]

    def values(self) -> list[list[float | None]]:
        """The aggregates alone, one list per row (None: no rows in that cell)."""
        return [row[self.labels:] for row in self.rows]

    def row_labels(self) -> list[str]:
        return [LABEL_JOIN.join(label(v) for v in row[:self.labels]) for row in self.rows]


def label(value: object) -> str:
    return NONE_LABEL if value is None else str(value)


def split_columns(text: str) -> tuple[str, ...]:
    """`--rows adm,llm_backbone` -> ("adm", "llm_backbone")."""
    return tuple(c.strip() for c in text.split(",") if c.strip())


def grouping_columns(table: str) -> list[str]:
    nested = nested_columns(table)
    return [c for c in columns_of(table) if c not in nested]


def value_columns(table: str) -> list[str]:
    """Numeric columns, and `<map>.<key>` for the numeric maps (scores, KDMA values)."""
    return numeric_columns(table) + [f"{m}.<key>" for m in map_columns(table)]


def pivot(con: duckdb.DuckDBPyConnection, spec: PivotSpec) -> Pivot:
    if spec.agg not in AGGREGATES:
        raise AnalysisError(f"unknown --agg {spec.agg!r}; valid: {', '.join(AGGREGATES)}")
    _check_groups(spec)
    value = _value_sql(con, spec)
    names = ", ".join(f'"{c}"' for c in (*spec.rows, *spec.cols))
    found = con.sql(f"SELECT {names}, {AGGREGATES[spec.agg]}({value}) "
                    f"FROM {spec.table} GROUP BY ALL").fetchall()
    n = len(spec.rows)
    return _spread(list(spec.rows), [(r[:n], r[n:-1], r[-1]) for r in found])


def _check_groups(spec: PivotSpec) -> None:
    groups = grouping_columns(spec.table)
    for option, columns in (("--rows", spec.rows), ("--cols", spec.cols)):
        if not columns:
            raise AnalysisError(f"{option}: name at least one column; valid: {', '.join(groups)}")
        for column in columns:
            if column not in groups:
                raise AnalysisError(f"{option}: no column {column!r} to group by in "
                                    f"{spec.table}; valid: {', '.join(groups)}")
    both = [c for c in spec.rows if c in spec.cols]
    if both or len(set(spec.rows)) < len(spec.rows) or len(set(spec.cols)) < len(spec.cols):
        raise AnalysisError(f"--rows and --cols: each column at most once "
                            f"(repeated: {', '.join(both) or 'within one option'})")


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


def _spread(rows_names: list[str], found: list[tuple[tuple, tuple, object]]) -> Pivot:
    """Long (row key, col key, value) triples -> a wide table, both axes sorted (nulls last
    within each column)."""
    def order(key: tuple) -> list[tuple[bool, str]]:
        return [(v is None, str(v)) for v in key]

    cols = sorted({c for _, c, _ in found}, key=order)
    cells = {(r, c): v for r, c, v in found}
    body = [[*r, *(cells.get((r, c)) for c in cols)]
            for r in sorted({r for r, _, _ in found}, key=order)]
    header = [*rows_names, *(LABEL_JOIN.join(map(label, c)) for c in cols)]
    return Pivot(header, body, len(rows_names), cols)
