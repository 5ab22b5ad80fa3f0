"""The pipeline on one screen: the tree, the tables, the trackers, and what keeps them fresh."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from align_track_pipeline.core.locations import default_data_dir, default_experiments_dir
from align_track_pipeline.core.trackers.registry import Settings, create_all
from align_track_pipeline.defs.analysis import dashboard, scene_comparison
from align_track_pipeline.defs.automation import automation_sensor, comparison_automation_sensor
from align_track_pipeline.defs.cleanup import cleanup_removed
from align_track_pipeline.defs.dagster_compat import (
    silence_mixed_backfill_policy_warning,
    silence_owners_warning,
)
from align_track_pipeline.defs.folders import experiment_folders, observe_job
from align_track_pipeline.defs.follow_up import follow_up_defs
from align_track_pipeline.defs.freshness import INGEST_FOLDERS_JOB
from align_track_pipeline.defs.jobs import (
    analysis_job,
    ingest_folders_job,
    tables_job,
    tracker_job,
)
from align_track_pipeline.defs.resources import (
    DataStore,
    ExperimentTree,
    Trackers,
    env_or,
)
from align_track_pipeline.defs.schedules import nightly_observation
from align_track_pipeline.defs.sensors import experiment_folder_sensor
from align_track_pipeline.defs.tables import parse_run_dirs
from align_track_pipeline.defs.trackers import tracker_asset


def build_defs(
    experiments_dir: str | None = None,
    data_dir: str | None = None,
    options: dict[str, str] | None = None,
    loggers: dict[str, dg.LoggerDefinition] | None = None,
) -> dg.Definitions:
    """Definitions bound to a tree and a data dir (defaults: env vars, then embedded), with one
    asset and one job per registered tracker, plus its follow-up asset if it declares one
    (Aim's index); `options` are a user's explicit tracker choices (command-line flags), which
    win over the environment."""
    data = data_dir or default_data_dir()
    trackers = create_all(Settings(Path(data), options or {}))
    pipeline = dg.Definitions(
        assets=[experiment_folders, parse_run_dirs, *map(tracker_asset, trackers),
                scene_comparison, dashboard],
        jobs=[observe_job, tables_job, *map(tracker_job, trackers), cleanup_removed,
              analysis_job, ingest_folders_job],
        sensors=[experiment_folder_sensor, automation_sensor, comparison_automation_sensor],
        schedules=[nightly_observation],
        resources={
            "tree": ExperimentTree(root=experiments_dir or env_or(
                "ALIGN_TRACK_EXPERIMENTS_DIR", default_experiments_dir(Path(data)))),
            "store": DataStore(data_dir=data_dir or env_or("ALIGN_TRACK_DATA_DIR", data)),
            "trackers": Trackers(data_dir=data_dir or env_or("ALIGN_TRACK_DATA_DIR", data),
                                 options=options or {}),
        },
        loggers=loggers,
    )
    follow_ups = [d for d in map(follow_up_defs, trackers) if d is not None]
    return dg.Definitions.merge(pipeline, *follow_ups)


silence_owners_warning()  # before the code server binds the sensors' resources
silence_mixed_backfill_policy_warning(INGEST_FOLDERS_JOB)
defs = build_defs()
