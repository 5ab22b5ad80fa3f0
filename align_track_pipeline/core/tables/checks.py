"""The row contract of a written partition, driven by the table schemas.

One check per table and partition covers unique keys, no nulls where the schema forbids them,
and one scene per source item: each check result is a stored Dagster event, so one rich check
keeps ingestion fast where three would triple its cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from align_track_pipeline.core.schema import ROW_KEYS, TABLES, non_null_columns

CONTRACT = "row_contract"


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    description: str
    details: dict[str, int]


def row_contract(table: str, data: pa.Table, item_count: int) -> CheckOutcome:
    keys = ROW_KEYS[table]
    duplicates = data.num_rows - data.group_by(list(keys)).aggregate([]).num_rows
    nulls = {c: data.column(c).null_count for c in non_null_columns(TABLES[table])}
    null_total = sum(nulls.values())
    covered = data.num_rows if table == "scenes" else pc.sum(data.column("num_scenes")).as_py()
    covered = covered or 0
    problems = []
    if duplicates:
        problems.append(f"{duplicates} duplicate rows on ({', '.join(keys)})")
    if null_total:
        problems.append("nulls in " + ", ".join(f"{c} ({n})" for c, n in nulls.items() if n))
    if covered != item_count:
        problems.append(f"{covered} scenes for {item_count} items in input_output.json")
    summary = (f"unique ({', '.join(keys)}); no nulls in required columns; "
               f"{covered} scenes = {item_count} source items")
    return CheckOutcome(
        name=CONTRACT,
        passed=not problems,
        description="; ".join(problems) if problems else summary,
        details={"duplicate_keys": duplicates, "null_values": null_total,
                 "scenes": covered, "source_items": item_count},
    )
