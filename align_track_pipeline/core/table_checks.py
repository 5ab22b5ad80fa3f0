"""Data-quality checks on a written partition, driven by the table schemas."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from .tables import ROW_KEYS, TABLES, non_null_columns


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    description: str


def unique_keys(table_name: str, data: pa.Table) -> CheckOutcome:
    keys = ROW_KEYS[table_name]
    distinct = data.group_by(list(keys)).aggregate([]).num_rows
    dupes = data.num_rows - distinct
    return CheckOutcome(
        "unique_keys", dupes == 0, f"{dupes} duplicate rows on ({', '.join(keys)})"
    )


def non_null_ids(table_name: str, data: pa.Table) -> CheckOutcome:
    nulls = {
        col: data.column(col).null_count
        for col in non_null_columns(TABLES[table_name])
        if data.column(col).null_count
    }
    detail = ", ".join(f"{c}: {n}" for c, n in nulls.items()) or "no nulls"
    return CheckOutcome("non_null_ids", not nulls, f"nulls in required columns: {detail}")


def row_count_matches(data: pa.Table, expected: int, what: str) -> CheckOutcome:
    return CheckOutcome(
        "row_count_matches_source",
        data.num_rows == expected,
        f"{data.num_rows} rows written, {expected} {what}",
    )

