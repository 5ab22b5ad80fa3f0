"""The pipeline on one screen: the tree, the tables, the trackers, and what keeps them fresh."""

from __future__ import annotations

import dagster as dg

from align_track_pipeline.core.trackers.mlflow.plan import mlflow_code_version
from align_track_pipeline.defs.aim_assets import (
    aim_index,
    aim_reindex,
    aim_reindex_sensor,
    log_aim_runs,
)
from align_track_pipeline.defs.automation import automation_sensor
from align_track_pipeline.defs.cleanup import cleanup_removed
from align_track_pipeline.defs.folders import experiment_folders, observe_job
from align_track_pipeline.defs.jobs import aim_job, ingest_job, mlflow_job
from align_track_pipeline.defs.mlflow_assets import log_mlflow_runs
from align_track_pipeline.defs.resources import (
    AimTarget,
    DataStore,
    ExperimentTree,
    MlflowTarget,
    default_aim_target,
    default_data_dir,
    default_experiments_dir,
    default_mlflow_target,
)
from align_track_pipeline.defs.schedules import nightly_ingestion
from align_track_pipeline.defs.sensors import experiment_folder_sensor
from align_track_pipeline.defs.tables import parse_run_dirs


def build_defs(
    experiments_dir: str | None = None,
    data_dir: str | None = None,
    mlflow: MlflowTarget | None = None,
    aim: AimTarget | None = None,
    loggers: dict[str, dg.LoggerDefinition] | None = None,
) -> dg.Definitions:
    """Definitions bound to a tree and a data dir (defaults: env vars, then embedded)."""
    data_dir = data_dir or default_data_dir()
    mlflow = mlflow or default_mlflow_target(data_dir)
    mlflow_runs = log_mlflow_runs.map_asset_specs(
        lambda spec: spec.replace_attributes(code_version=mlflow_code_version(mlflow.mode)))
    return dg.Definitions(
        assets=[experiment_folders, parse_run_dirs, mlflow_runs, log_aim_runs, aim_index],
        jobs=[observe_job, ingest_job, mlflow_job, aim_job, aim_reindex, cleanup_removed],
        sensors=[experiment_folder_sensor, automation_sensor, aim_reindex_sensor],
        schedules=[nightly_ingestion],
        resources={
            "tree": ExperimentTree(root=experiments_dir or default_experiments_dir()),
            "store": DataStore(data_dir=data_dir),
            "mlflow": mlflow,
            "aim": aim or default_aim_target(data_dir),
        },
        loggers=loggers,
    )


defs = build_defs()
