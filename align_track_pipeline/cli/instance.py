"""The Dagster instance the CLI uses: `$DAGSTER_HOME`, else `<data dir>/dagster`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

from align_track_pipeline.core.locations import REPO_ROOT
from align_track_pipeline.core.locking import file_lock


def dagster_home(data_dir: Path) -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or Path(data_dir) / "dagster")


def open_instance(data_dir: Path) -> dg.DagsterInstance:
    """Open (creating if needed) the instance, seeded with the project's dagster.yaml.

    Under a lock beside it: two processes creating one SQLite instance at once each stamp its
    schema version, and the instance then cannot be opened ("more than one head present")."""
    home = dagster_home(data_dir).resolve()
    home.mkdir(parents=True, exist_ok=True)
    with file_lock(home / ".align-track-open.lock"):
        config = home / "dagster.yaml"
        if not config.exists() and (REPO_ROOT / "dagster.yaml").exists():
            shutil.copyfile(REPO_ROOT / "dagster.yaml", config)
        return dg.DagsterInstance.from_config(str(home))
