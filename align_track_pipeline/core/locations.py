"""Where the tree and the data dir are unless a command says otherwise: the environment,
then the bundled sample tree and `./align-track-data`. Plain Python, so the commands that only
read the tables start without loading Dagster."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_TREE = REPO_ROOT / "examples" / "experiment-data"


def default_experiments_dir() -> str:
    return os.environ.get("ALIGN_TRACK_EXPERIMENTS_DIR") or str(BUNDLED_TREE)


def default_data_dir() -> str:
    return os.environ.get("ALIGN_TRACK_DATA_DIR") or str(Path.cwd() / "align-track-data")
