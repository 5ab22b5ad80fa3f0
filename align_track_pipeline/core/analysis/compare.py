"""`compare`: what each run directory and alignment target decided on one scenario, and why;
and the same rows for every scenario, written as one Parquet file (`scene_comparison`).

Reading one scenario from the tables opens every partition file (about half a millisecond
each: seconds at thousands of partitions). The comparison file holds the same rows sorted by
scenario (and every other scenes column), so DuckDB reads one row group of it; `compare`
uses it while it is current (`snapshot`), and reads the tables otherwise: the same rows.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from align_track_pipeline.core.analysis.columns import columns_of
from align_track_pipeline.core.analysis.connection import open_tables, sql_literal, union_option
from align_track_pipeline.core.analysis.incremental import (
    changed_names,
    dropped_keys,
    merge,
    open_base,
    write_listing,
)
from align_track_pipeline.core.analysis.snapshot import (
    COMPARISON_FILE,
    FINGERPRINT_KEY,
    Listing,
    comparison_is_current,
    fingerprint_of,
    table_listing,
)
from align_track_pipeline.core.schema import TABLES
from align_track_pipeline.core.tables.store import ParquetStore

ROW_GROUP_ROWS = 16_384  # small row groups: one scenario's rows are read, little else

# One row per scene of a run: the scenes columns a comparison reads, with the target's KDMA
# values (`kdma_values`, from experiments) beside them.
COMPARE_COLUMNS = ["scenario_id", "scene_id", "scene_index", "partition_key", "experiment_path",
                   "adm", "llm_backbone", "alignment_target_id", "kdma_values", "choice_index",
                   "action_id", "action_type", "decision_text", "justification",
                   "decision_kdma", "timing_seconds", "scenario_scores", "probe_text",
                   "choices_text"]
ORDER = ["scenario_id", "scene_id", "adm", "llm_backbone", "alignment_target_id",
         "experiment_path", "scene_index"]
_SCENE_COLUMNS = [c for c in COMPARE_COLUMNS if c != "kdma_values"]
# The comparison file: compare's columns, then the rest of the scenes table, so that queries
# on scenes can read it instead of the partition files.
FILE_COLUMNS = COMPARE_COLUMNS + [c for c in columns_of("scenes") if c not in COMPARE_COLUMNS]
# What a comparison file's rows are: an update merges into a previous file of this layout only.
LAYOUT = hashlib.blake2b(repr((FILE_COLUMNS, ORDER, str(TABLES["scenes"]), str(
    TABLES["experiments"].field("kdma_values")))).encode(), digest_size=16).hexdigest()


def compare(data_dir: Path, scenario: str, scene: str | None = None) -> list[dict]:
    """The rows of one scenario (and scene id), sorted by scene, ADM, LLM and target."""
    data_dir = Path(data_dir).resolve()
    comparison = data_dir / COMPARISON_FILE
    current = comparison_is_current(data_dir)
    con = open_tables(data_dir, views=[] if current else ["scenes"], files=[comparison])
    where = "scenario_id = ?" + ("" if scene is None else " AND scene_id = ?")
    params = [scenario] if scene is None else [scenario, scene]
    order = ", ".join(ORDER)
    if current:
        return _dicts(COMPARE_COLUMNS, con.execute(
            f"SELECT {', '.join(COMPARE_COLUMNS)} FROM read_parquet(?) WHERE {where} "
            f"ORDER BY {order}", [str(comparison), *params]).fetchall())
    rows = _dicts(_SCENE_COLUMNS, con.execute(
        f"SELECT {', '.join(_SCENE_COLUMNS)} FROM scenes WHERE {where} ORDER BY {order}",
        params).fetchall())
    targets = _target_kdmas(con, data_dir, {r["partition_key"] for r in rows})
    return [{c: targets.get((r["partition_key"], r["alignment_target_id"])) if c == "kdma_values"
             else r[c] for c in COMPARE_COLUMNS} for r in rows]


def near_misses(data_dir: Path, scenario: str, scene: str | None = None) -> str:
    """For a compare that found nothing: the known scenario ids closest to `scenario` (or,
    where the scenario is known, its scene ids closest to `scene`), as a hint to print."""
    con = open_tables(Path(data_dir).resolve(), views=["scenes"])
    scenarios = [r[0] for r in con.execute(
        "SELECT DISTINCT scenario_id FROM scenes ORDER BY 1").fetchall()]
    if scenario not in scenarios:
        return _closest("scenario ids", scenario, scenarios)
    scenes = [r[0] for r in con.execute(
        "SELECT DISTINCT scene_id FROM scenes WHERE scenario_id = ? AND scene_id IS NOT NULL "
        "ORDER BY 1", [scenario]).fetchall()]
    return _closest(f"scene ids of {scenario}", scene or "", scenes)


def _closest(what: str, given: str, known: list[str]) -> str:
    if not known:
        return f"the tables hold no {what}"
    by_case = {k.lower(): k for k in known}
    close = [by_case[k] for k in get_close_matches(given.lower(), list(by_case), n=5,
                                                  cutoff=0.5)]
    if close:
        return f"closest {what}: {', '.join(close)}"
    shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
    return f"{len(known)} {what}: {shown}"


def _dicts(columns: list[str], values: list[tuple]) -> list[dict]:
    return [dict(zip(columns, v, strict=True)) for v in values]


def _target_kdmas(con: duckdb.DuckDBPyConnection, data_dir: Path,
                  partitions: set[str]) -> dict[tuple[str, str], dict]:
    """(partition, target) -> KDMA values, read from those partitions' files only (a join
    with the whole experiments view would open every partition's file)."""
    store = ParquetStore(Path(data_dir).resolve())
    files = [str(p) for p in map(lambda k: store.path("experiments", k), sorted(partitions))
             if p.exists()]
    if not files:
        return {}
    found = con.execute("SELECT partition_key, alignment_target_id, kdma_values "
                        f"FROM read_parquet(?{union_option()})", [files]).fetchall()
    return {(p, t): kdma for p, t, kdma in found}


@dataclass(frozen=True)
class Comparison:
    path: Path
    rows: int
    runs: int  # (run directory, alignment target) pairs
    scenarios: int
    preview: list[dict]  # the rows of one scene of the scenario most runs have
    changed_files: int | None  # partition files read to update it; None: rebuilt from all


def write_comparison(data_dir: Path, path: Path) -> Comparison:
    """Write every scenario's comparison rows to `path` (atomically), sorted like `compare`,
    with the fingerprint of the tables taken before they are read (a table changed meanwhile
    makes the file stale, never wrongly current). From the previous file and the changed
    partitions only when it can be trusted (`incremental`), else from every partition."""
    data_dir = Path(data_dir).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{uuid.uuid4().hex}.tmp"
    try:
        con = open_tables(data_dir, files=[tmp], from_comparison=False)
        listing = table_listing(data_dir)
        fingerprint = fingerprint_of(listing)
        changed = _update(con, data_dir, path, tmp, listing, fingerprint)
        if changed is None:
            con.execute(f"COPY ({_rows_sql('scenes', 'experiments')}) "
                        f"TO {sql_literal(str(tmp))} (FORMAT parquet, COMPRESSION zstd, "
                        f"ROW_GROUP_SIZE {ROW_GROUP_ROWS}, KV_METADATA "
                        f"{{{sql_literal(FINGERPRINT_KEY)}: {sql_literal(fingerprint)}}})")
        summary = _summary(con, tmp)
        con.close()
        write_listing(path, listing, LAYOUT)  # a crash before the next line: they disagree
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return Comparison(path, *summary, changed)


def _rows_sql(scenes: str, experiments: str) -> str:
    """Every row of the comparison, sorted, from these scenes and experiments sources."""
    select = ", ".join("e.kdma_values" if c == "kdma_values" else f"s.{c}"
                       for c in FILE_COLUMNS)
    return (f"SELECT {select} FROM {scenes} s LEFT JOIN {experiments} e "
            "ON s.partition_key = e.partition_key "
            "AND s.alignment_target_id = e.alignment_target_id "
            f"ORDER BY {', '.join(f's.{c}' for c in ORDER)}")


def _update(con: duckdb.DuckDBPyConnection, data_dir: Path, previous: Path, out: Path,
            listing: Listing, fingerprint: str) -> int | None:
    """Write `out` from the `previous` file and the partition files changed since it was
    built; returns how many changed, or None (nothing written) when a rebuild is needed."""
    base = open_base(previous, LAYOUT, FILE_COLUMNS)
    if base is None:
        return None
    source, built_from = base
    with source:
        return _merge_changes(con, ParquetStore(data_dir), source,
                              changed_names(built_from, listing), listing, out, fingerprint)


def _merge_changes(con: duckdb.DuckDBPyConnection, store: ParquetStore,
                   source: pq.ParquetFile, names: set[str] | None, listing: Listing,
                   out: Path, fingerprint: str) -> int | None:
    if names is None:
        return None  # so many changed that a rebuild costs no more
    files = {t: [str(store.table_dir(t) / n) for n, *_ in listing[t] if n in names]
             for t in TABLES}
    if files["scenes"] and not files["experiments"]:
        return None  # scenes without their experiments: the rebuild's join says what to do
    new_rows = con.sql(_rows_sql(f"read_parquet($scenes{union_option()})",
                                 f"read_parquet($experiments{union_option()})"),
                       params=files).to_arrow_table() if files["scenes"] else None
    merge(source, dropped_keys(source, names, store), new_rows, ORDER, out, fingerprint,
          ROW_GROUP_ROWS)
    return len(names)


def _summary(con: duckdb.DuckDBPyConnection, file: Path) -> tuple[int, int, int, list[dict]]:
    con.execute(f"CREATE VIEW comparison AS SELECT * FROM read_parquet({sql_literal(str(file))})")
    rows, runs, scenarios = con.execute(
        "SELECT count(*), count(DISTINCT (partition_key, alignment_target_id)), "
        "count(DISTINCT scenario_id) FROM comparison").fetchone()
    top = con.execute("SELECT scenario_id, min(scene_id) FROM comparison GROUP BY scenario_id "
                  "ORDER BY count(DISTINCT (partition_key, alignment_target_id)) DESC, "
                  "scenario_id LIMIT 1").fetchone()
    preview = []
    if top:
        cur = con.execute("SELECT * FROM comparison WHERE scenario_id = ? AND "
                          "scene_id IS NOT DISTINCT FROM ?", list(top))
        names = [d[0] for d in cur.description]
        preview = _dicts(names, cur.fetchall())
    return rows, runs, scenarios, preview
