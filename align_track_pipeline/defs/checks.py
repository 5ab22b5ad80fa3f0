"""Partitioned asset checks, evaluated on each partition as it is written."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from ..core.table_checks import CheckOutcome, non_null_ids, row_count_matches, unique_keys
from .partitions import experiment_partitions

_CHECKS = {
    "experiments": ["unique_keys", "non_null_ids"],
    "scenes": ["unique_keys", "non_null_ids", "row_count_matches_source"],
}
_DESCRIPTIONS = {
    "unique_keys": "No two rows share the table's key.",
    "non_null_ids": "Columns the schema marks non-nullable hold no nulls.",
    "row_count_matches_source": "One row per item of the source input_output.json.",
}

with warnings.catch_warnings():  # partitioned check specs are "preview" in Dagster 1.13
    warnings.simplefilter("ignore", dg.PreviewWarning)
    TABLE_CHECK_SPECS = [
        dg.AssetCheckSpec(name, asset=table, description=_DESCRIPTIONS[name],
                          partitions_def=experiment_partitions)
        for table, names in _CHECKS.items()
        for name in names
    ]


def outcomes(table: str, data: pa.Table, item_count: int) -> list[CheckOutcome]:
    results = [unique_keys(table, data), non_null_ids(table, data)]
    if table == "scenes":
        results.append(row_count_matches(data, item_count, "items in input_output.json"))
    return results


def check_events(
    table: str, key: str, data: pa.Table, item_count: int
) -> Iterator[dg.AssetCheckEvaluation]:
    for outcome in outcomes(table, data, item_count):
        yield dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(table),
            check_name=outcome.name,
            passed=outcome.passed,
            partition=key,
            description=outcome.description,
        )
