"""The Dagster instance the CLI uses: `$DAGSTER_HOME`, else `<data dir>/dagster`."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from align_track_pipeline.cli.sizing import seeded_config
from align_track_pipeline.core.locations import REPO_ROOT


def dagster_home(data_dir: Path) -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or Path(data_dir) / "dagster")


def open_instance(data_dir: Path) -> dg.DagsterInstance:
    """Open (creating if needed) the instance, seeded with the project's dagster.yaml (one
    concurrent run per core)."""
    home = dagster_home(data_dir).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and (REPO_ROOT / "dagster.yaml").exists():
        config.write_text(seeded_config((REPO_ROOT / "dagster.yaml").read_text()))
    return dg.DagsterInstance.from_config(str(home))
