"""MLflow's process-wide switches, set in every process of the project before MLflow is
imported (the package's `__init__` applies them): the CLI, its worker processes, the Dagster
code location, daemon and run processes (all import the package), and the `mlflow server`
that `align-track mlflow-ui` becomes (it inherits the environment).

- `MLFLOW_DISABLE_TELEMETRY`: MLflow 3 otherwise sends usage events to its telemetry host
  from every client and server (Dagster's telemetry is off in the instance's dagster.yaml,
  Aim's in the servers `aim-ui` starts).
- `MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT`: MLflow otherwise prints "View run ... at: URL"
  and "View experiment at: URL" on stdout each time a run ends through a tracking server,
  after one extra `get_run` request per run, and the URL holds whatever credentials the
  tracking URI holds. The pipeline records its own links (`links` of a write).
- `MLFLOW_ENABLE_REMOTE_ASSISTANT`: the `mlflow-ui` server answers the assistant's API only
  from its own host (MLflow's default, pinned here). MLflow 3.17 has no switch that hides the
  assistant panel itself: its UI opens it once on a first visit from the same host; closed,
  the browser remembers.
"""

from __future__ import annotations

import os

SETTINGS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_REMOTE_ASSISTANT": "false",
}


def apply() -> None:
    """Set the switches in this process's environment (children inherit them)."""
    os.environ.update(SETTINGS)
