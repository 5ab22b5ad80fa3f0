"""The analysis commands as pandas DataFrames, for notebooks and scripts.

    import align_track_pipeline as at
    at.search(adm="pipeline_*", sort="timing_seconds:desc")
    at.compare("DryRunEval.MJ1", scene="P1")
    at.report(rows="adm", cols="llm_backbone")
    at.tables().experiments

The same filters, rows and errors as `align-track search|compare|report` (an `AnalysisError`
says what is valid), read from the Parquet tables with DuckDB: no Dagster, MLflow or Aim is
imported, and `search` gives no tracker links (the command's `links` need the stores).
`data_dir` defaults like the commands: `ALIGN_TRACK_DATA_DIR`, else `./align-track-data`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

import pandas as pd

from align_track_pipeline.core.analysis import compare as _compare
from align_track_pipeline.core.analysis.connection import (
    AnalysisError,
    open_tables,
    tolerating_older_files,
)
from align_track_pipeline.core.analysis.filters import Filters, parse_min_score
from align_track_pipeline.core.analysis.pivot import PivotSpec, label, pivot, split_columns
from align_track_pipeline.core.analysis.search import parse_columns, parse_sort
from align_track_pipeline.core.analysis.search import search as _search
from align_track_pipeline.core.locations import default_data_dir
from align_track_pipeline.core.schema import TABLES

T = TypeVar("T")

__all__ = ["AnalysisError", "Tables", "compare", "report", "search", "tables"]

_DEFAULTS = PivotSpec()


class Tables(NamedTuple):
    """Both tables, every row and column (see the table schemas in the docs)."""

    experiments: pd.DataFrame
    scenes: pd.DataFrame


def search(table: str = "scenes", *, adm: str | None = None, llm: str | None = None,
           target: str | None = None, scenario: str | None = None, scene: str | None = None,
           min_score: Mapping[str, float] | Iterable[str] = (), where: str | None = None,
           sort: str | Sequence[str] = (), columns: str | Sequence[str] | None = None,
           limit: int | None = None, data_dir: str | Path | None = None) -> pd.DataFrame:
    """The rows `align-track search --json --limit 0` prints (every column, or `columns`),
    one per DataFrame row. `adm`, `llm`, `target`, `scenario`, `scene` match exactly, `*` a
    wildcard (`adm` also matches `adm_config`); `min_score` is {name: minimum} or
    ["name=minimum", ...]; `where` one SQL condition; `sort` "COL" or "COL:desc", or a list
    of them; `limit` at most that many (None or 0: all, as `--limit 0`)."""
    if limit is not None and limit < 0:
        raise AnalysisError(f"limit must be 0 (all) or more, not {limit}")
    if table not in TABLES:
        raise AnalysisError(f"no table {table!r}; valid: {', '.join(TABLES)}")
    scores = (tuple(min_score.items()) if isinstance(min_score, Mapping)
              else tuple(map(parse_min_score, min_score)))
    filters = Filters(adm=adm, llm=llm, target=target, scenario=scenario, scene=scene,
                      min_scores=tuple((k, float(v)) for k, v in scores), where=where)
    order = parse_sort([sort] if isinstance(sort, str) else list(sort), table)
    chosen = parse_columns(columns, table) if columns is not None else None
    found = _read(data_dir, lambda: _search(open_tables(_dir(data_dir), [table]), table,
                                            filters, limit or None, order))
    return _frame(table, found.rows, chosen or TABLES[table].names)


def compare(scenario: str, scene: str | None = None, *,
            data_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per run directory, alignment target and scene of `scenario` (one scene id with
    `scene`): what `align-track compare --json` prints, each row with its own probe and
    choices. Group by `["scene_id", "probe_text", "choices_text"]` to see which runs were
    shown the same thing."""
    rows = _read(data_dir, lambda: _compare.compare(_dir(data_dir), scenario, scene))
    return _frame("scenes", rows, _compare.COMPARE_COLUMNS)


def report(rows: str | Sequence[str] = _DEFAULTS.rows, cols: str | Sequence[str] = _DEFAULTS.cols,
           values: str = _DEFAULTS.values, agg: str = _DEFAULTS.agg, *,
           table: str = _DEFAULTS.table, data_dir: str | Path | None = None) -> pd.DataFrame:
    """The pivot `align-track report` writes: `values` (a numeric column, or MAP.KEY such as
    `scores.score`) aggregated with `agg`, indexed by the `rows` columns, a column per value
    (combination) of the `cols` columns (`(none)` for missing); NaN where no row falls.
    `rows`/`cols`: one column, `"adm,llm_backbone"` or a list; several give a MultiIndex."""
    spec = PivotSpec(table, _columns(rows), _columns(cols), values, agg)
    if table not in TABLES:
        raise AnalysisError(f"no table {table!r}; valid: {', '.join(TABLES)}")
    result = _read(data_dir, lambda: pivot(open_tables(_dir(data_dir), [table]), spec))
    frame = pd.DataFrame(result.rows, columns=result.header)
    frame = frame.set_index(list(spec.rows) if len(spec.rows) > 1 else spec.rows[0])
    if len(spec.cols) > 1:
        frame.columns = pd.MultiIndex.from_tuples(
            [tuple(map(label, key)) for key in result.col_keys], names=list(spec.cols))
    else:
        frame.columns.name = spec.cols[0]
    return frame.astype("Int64" if agg == "count" else "float64")


def tables(*, data_dir: str | Path | None = None) -> Tables:
    """Both tables whole, as DataFrames (for what the filters do not cover)."""
    def both() -> Tables:
        con = open_tables(_dir(data_dir))
        return Tables(*(_frame(t, _search(con, t, Filters(), None).rows, TABLES[t].names)
                        for t in Tables._fields))
    return _read(data_dir, both)


def _read(data_dir: str | Path | None, call: Callable[[], T]) -> T:
    """`call()`, reading table files of an earlier version too (a warning says so)."""
    return tolerating_older_files(_dir(data_dir), call, lambda text: warnings.warn(
        text, stacklevel=4))


def _dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir or default_data_dir()).resolve()


def _columns(columns: str | Sequence[str]) -> tuple[str, ...]:
    """An axis's grouping columns: `"adm"`, `"adm,llm_backbone"` or a list."""
    return split_columns(columns) if isinstance(columns, str) else tuple(columns)


def _frame(table: str, rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """Rows as DataFrame rows, the columns in order; whole numbers stay whole (nullable
    Int64), maps are dicts and lists lists, as in the commands' JSON."""
    frame = pd.DataFrame.from_records([{c: r[c] for c in columns} for r in rows],
                                      columns=columns)
    schema = TABLES[table]
    for name in columns:
        if name in schema.names and str(schema.field(name).type) == "int64":
            frame[name] = frame[name].astype("Int64")
    return frame
