"""MLflow's telemetry is off in every process the project starts, as Dagster's and Aim's are:
the `align-track` command and its worker processes, the Dagster code location, daemon and run
processes (they import `align_track_pipeline.definitions`). `mlflow-ui`'s server inherits it
(tests/test_ui_servers.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# MLflow also stays quiet under pytest or CI (it looks for their variables): the processes
# here get a bare environment, as a user's shell would give them.
_CHECK = """
import json, sys
{imports}
from mlflow.telemetry.client import get_telemetry_client
from mlflow.telemetry.utils import is_telemetry_disabled
json.dump([is_telemetry_disabled(), get_telemetry_client() is None], sys.stdout)
"""


def _telemetry_off(tmp_path: Path, imports: str) -> list[bool]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}
    done = subprocess.run([sys.executable, "-c", _CHECK.format(imports=imports)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("module", [
    "align_track_pipeline.cli",  # the `align-track` entry point
    "align_track_pipeline.cli.workers",  # what a spawned worker process imports first
    "align_track_pipeline.definitions",  # the code location, daemon and run processes
])
def test_mlflow_telemetry_is_off_in_the_projects_processes(tmp_path, module):
    assert _telemetry_off(tmp_path, f"import {module}\nimport mlflow") == [True, True]
    assert not (tmp_path / "home" / ".config" / "mlflow").exists()  # no installation id


def test_without_the_project_the_same_environment_has_telemetry_on(tmp_path):
    """The check above is meaningful: plain MLflow in that environment would send."""
    assert _telemetry_off(tmp_path, "import mlflow") == [False, False]
