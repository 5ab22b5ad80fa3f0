"""The filters of `search` and `export`: options matched exactly (`*` is a wildcard), minimum
scores, and one user SQL condition, all applied as DuckDB relation filters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb

from align_track_pipeline.core.analysis.columns import columns_of, valid_columns
from align_track_pipeline.core.analysis.connection import (
    AnalysisError,
    QueryError,
    map_keys,
    sql_literal,
)

# Option -> the column it matches.
OPTION_COLUMNS = {"adm": "adm", "llm": "llm_backbone", "target": "alignment_target_id",
                  "scenario": "scenario_id", "scene": "scene_id"}
# A column an option also matches: an ADM is named by its `adm.name`, which configs inherit,
# or by the Hydra config it came from.
ALSO_MATCHED = {"adm": "adm_config"}
# The map column `--min-score` reads, per table.
SCORE_COLUMNS = {"experiments": "scores", "scenes": "scenario_scores"}


@dataclass(frozen=True)
class Filters:
    adm: str | None = None
    llm: str | None = None
    target: str | None = None
    scenario: str | None = None
    scene: str | None = None
    min_scores: tuple[tuple[str, float], ...] = ()
    where: str | None = None


def parse_min_score(text: str) -> tuple[str, float]:
    """`NAME=VALUE` -> (name, value)."""
    name, sep, value = text.partition("=")
    try:
        if not (sep and name):
            raise ValueError
        return name, float(value)
    except ValueError:
        raise AnalysisError(
            f"--min-score takes NAME=VALUE (e.g. score=0.5), not {text!r}") from None


def apply(con: duckdb.DuckDBPyConnection, table: str, filters: Filters) -> duckdb.DuckDBPyRelation:
    """The table's rows that pass every filter (lazy: nothing is read yet). Run it, and
    build it, inside `user_sql`: DuckDB checks user SQL partly when the rows are read."""
    rel = con.table(table)
    for option, column in OPTION_COLUMNS.items():
        value = getattr(filters, option)
        if value is None:
            continue
        if column not in columns_of(table):
            raise AnalysisError(f"--{option} matches `{column}`, which the {table} table does "
                                f"not have ({valid_columns(table)}); try --table scenes")
        matched = _matches(column, value)
        if (other := ALSO_MATCHED.get(column)) in columns_of(table):
            matched = matched | _matches(other, value)
        rel = rel.filter(matched)
    for name, minimum in filters.min_scores:
        rel = rel.filter(_at_least(con, table, name, minimum))
    if filters.where is not None:
        rel = rel.filter(checked_where(filters.where))
    return rel


def _matches(column: str, value: str) -> duckdb.Expression:
    """Equality, or a LIKE pattern when the value holds `*` (SQL wildcards stay literal)."""
    col = duckdb.ColumnExpression(column)
    if "*" not in value:
        return col == duckdb.ConstantExpression(value)
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return duckdb.FunctionExpression("like_escape", col, duckdb.ConstantExpression(
        escaped.replace("*", "%")), duckdb.ConstantExpression("\\"))


def _at_least(con: duckdb.DuckDBPyConnection, table: str, name: str,
              minimum: float) -> duckdb.Expression:
    column = SCORE_COLUMNS[table]
    known = map_keys(con, table, column)
    if name not in known:
        raise AnalysisError(f"--min-score: no score named {name!r} in `{column}` of {table}; "
                            f"known: {', '.join(known) or 'none'}")
    return duckdb.SQLExpression(f"{column}[{sql_literal(name)}] >= {minimum!r}")


def checked_where(where: str) -> duckdb.Expression:
    """One SQL condition, parsed as an expression: a second statement cannot follow it."""
    if ";" in where:
        raise AnalysisError("--where takes one SQL condition over the table's columns, "
                            "without ';' or statements")
    return duckdb.SQLExpression(where)


@contextmanager
def user_sql(table: str, where: str | None) -> Iterator[None]:
    """Turn DuckDB's errors about user SQL into messages that say what is allowed. Without
    user SQL (`where` None) DuckDB's errors are about the files and pass through."""
    if where is None:
        yield
        return
    try:
        yield
    except duckdb.PermissionException as exc:
        raise AnalysisError(f"--where may read the tables only, no files or settings: "
                            f"{_first_line(exc)}") from None
    except duckdb.BinderException as exc:
        raise AnalysisError(f"--where: {_first_line(exc)}; {valid_columns(table)}") from None
    except duckdb.Error as exc:  # or a broken file: the command checks the files then
        raise QueryError(f"--where is not a valid SQL condition: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
