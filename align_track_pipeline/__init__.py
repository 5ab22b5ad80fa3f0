"""align-track-pipeline: experiment-data trees to Parquet tables, MLflow runs and Aim runs.

`search`, `compare`, `report` and `tables` answer from the tables as pandas DataFrames
(`align_track_pipeline.api`), imported on first use so that importing the package stays cheap.

Every process of the project imports this package first, so MLflow's telemetry and its
"View run" prints are switched off here, before anything imports MLflow."""

from align_track_pipeline.core.trackers.mlflow import environment as _mlflow_environment

_mlflow_environment.apply()

_API = frozenset({"AnalysisError", "Tables", "compare", "report", "search", "tables"})


def __getattr__(name: str):
    """The analysis API, imported on first use (pandas and DuckDB only when asked for)."""
    if name in _API:
        from align_track_pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
