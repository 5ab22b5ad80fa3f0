"""The Dagster instance the CLI uses: `$DAGSTER_HOME`, else `<data dir>/dagster`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

# The project's instance settings. Kept in the package, not at the repository root, where
# `dagster dev` would warn that a dagster.yaml in the working directory "will not be used".
INSTANCE_CONFIG = Path(__file__).with_name("dagster.yaml")


def dagster_home(data_dir: Path) -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or Path(data_dir) / "dagster")


def seeded_home(data_dir: Path) -> Path:
    """The instance folder, created if needed and seeded with the project's dagster.yaml (an
    existing dagster.yaml there is left as it is)."""
    home = dagster_home(data_dir).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(INSTANCE_CONFIG, config)
    return home


def open_instance(data_dir: Path) -> dg.DagsterInstance:
    """Open (creating if needed) the instance, seeded with the project's dagster.yaml."""
    return dg.DagsterInstance.from_config(str(seeded_home(data_dir)))
