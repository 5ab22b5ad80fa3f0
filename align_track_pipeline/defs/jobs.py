"""The jobs a person or the CLI launches by name: one per stage, in the order of the flow."""

from __future__ import annotations

import dagster as dg

from align_track_pipeline.core.trackers.base import Tracker
from align_track_pipeline.defs.automation import ANALYSIS, UPKEEP_TAGS
from align_track_pipeline.defs.freshness import FOLDERS, INGEST_FOLDERS_JOB
from align_track_pipeline.defs.tables import TABLE_ASSETS

TABLES_JOB = "tables"
ANALYSIS_JOB = "analysis"

# Parse run directories into the Parquet tables; one run covers a whole partition range.
tables_job = dg.define_asset_job(TABLES_JOB, selection=dg.AssetSelection.assets(*TABLE_ASSETS))


def tracker_job(tracker: Tracker) -> dg.JobDefinition:
    """Feed one tracker from the Parquet partitions, named after it. A run of its own: the
    tables log their partitions one by one, so a tracker step in the tables' run would see no
    upstream output."""
    return dg.define_asset_job(tracker.name, selection=dg.AssetSelection.assets(tracker.asset))


# Rebuild what is drawn from every table partition, the scene comparison and the dashboard
# (what the automation does after table partitions changed): an upkeep run.
analysis_job = dg.define_asset_job(ANALYSIS_JOB, tags=UPKEEP_TAGS,
                                   selection=dg.AssetSelection.assets(*ANALYSIS))

# What the discovery sensor launches for new or changed folders: observe them, parse them,
# feed every tracker (the tables' partitioned consumers), in one run and one process: steps in
# dependency order, not a process each (seconds of imports per step). Partitions already up to
# date are skipped, so a touched file writes nothing.
_TABLES = dg.AssetSelection.assets(*TABLE_ASSETS)
ingest_folders_job = dg.define_asset_job(
    INGEST_FOLDERS_JOB,
    selection=(dg.AssetSelection.assets(FOLDERS) | _TABLES.downstream(depth=1))
    - dg.AssetSelection.assets(*ANALYSIS),
    executor_def=dg.in_process_executor,
    description="Observe, parse and log to every tracker the folders the discovery sensor "
    "found new or changed (its fast path; the automation catches what it missed).")
