"""The pipeline on one screen: assets, checks, jobs and resources."""

from __future__ import annotations

import dagster as dg

from .defs.assets import parse_run_dirs
from .defs.jobs import ingest_job
from .defs.resources import DataStore, ExperimentTree, default_data_dir, default_experiments_dir


def build_defs(
    experiments_dir: str | None = None,
    data_dir: str | None = None,
    loggers: dict[str, dg.LoggerDefinition] | None = None,
) -> dg.Definitions:
    """Definitions bound to a tree and a data dir (defaults: env vars, then embedded)."""
    return dg.Definitions(
        loggers=loggers,
        assets=[parse_run_dirs],
        jobs=[ingest_job],
        resources={
            "tree": ExperimentTree(root=experiments_dir or default_experiments_dir()),
            "store": DataStore(data_dir=data_dir or default_data_dir()),
        },
    )


defs = build_defs()
