"""Partitioned asset checks, evaluated on each partition as it is written."""

import dagster as dg

from align_track_pipeline.core.quiet import quiet_about
from align_track_pipeline.core.tables.checks import CONTRACT
from align_track_pipeline.core.tables.writer import TableWrite
from align_track_pipeline.defs.partitions import experiment_partitions

_DESCRIPTION = (
    "Row contract of the partition: no two rows share the table's key, no nulls in columns "
    "the schema marks required, and exactly one scene per item of input_output.json."
)

with quiet_about(dg.PreviewWarning):  # partitioned check specs are "preview" in Dagster 1.13
    # On `scenes` only: each check result is a stored event (~10 ms on SQLite storage), and
    # the experiments rows are derived from the same checked scenes.
    CHECKED_TABLES = ("scenes",)
    TABLE_CHECK_SPECS = [
        dg.AssetCheckSpec(CONTRACT, asset=table, description=_DESCRIPTION,
                          partitions_def=experiment_partitions)
        for table in CHECKED_TABLES
    ]


def check_event(key: str, write: TableWrite) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(write.table),
        check_name=write.check.name,
        passed=write.check.passed,
        partition=key,
        description=write.check.description,
        metadata=dict(write.check.details),
    )
