"""align-track-pipeline: experiment-data trees to Parquet tables, MLflow runs and Aim runs.

Every process of the project imports this package first, so MLflow's telemetry and its
"View run" prints are switched off here, before anything imports MLflow."""

from align_track_pipeline.core.trackers.mlflow import environment as _mlflow_environment

_mlflow_environment.apply()
