"""Expected answers, computed independently of DuckDB: the tables read with pyarrow."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds

from align_track_pipeline.core.analysis.columns import map_columns
from align_track_pipeline.core.analysis.compare import COMPARE_COLUMNS, ORDER


def table_rows(data_dir: Path, table: str) -> list[dict]:
    """Every row of a table as pyarrow reads it, maps as dicts (as DuckDB returns them)."""
    rows = ds.dataset(data_dir / "parquet" / table).to_table().to_pylist()
    maps = map_columns(table)
    return [{k: dict(v) if k in maps else v for k, v in row.items()} for row in rows]


def by_key(rows: list[dict]) -> dict[tuple, dict]:
    """Rows by their identity: (partition, scene index) or (partition, target)."""
    second = "scene_index" if "scene_index" in rows[0] else "alignment_target_id"
    return {(r["partition_key"], r[second]): r for r in rows}


def comparison_rows(data, scenario=None, scene=None) -> list[dict]:
    """Scenes rows with their target's KDMA values, sorted as documented (nulls last)."""
    targets = {(e["partition_key"], e["alignment_target_id"]): e["kdma_values"]
               for e in table_rows(data, "experiments")}
    rows = [{c: targets.get((s["partition_key"], s["alignment_target_id"]))
             if c == "kdma_values" else s[c] for c in COMPARE_COLUMNS}
            for s in table_rows(data, "scenes")
            if scenario in (None, s["scenario_id"]) and scene in (None, s["scene_id"])]
    return sorted(rows, key=lambda r: [(r[c] is None, r[c] or 0 if c == "scene_index" else
                                        r[c] or "") for c in ORDER])
