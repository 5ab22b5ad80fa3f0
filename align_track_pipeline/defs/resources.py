"""Where the tree and the data live. Environment variables override the embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from ..core.discovery import FingerprintCache, RunDir, find_run_dirs, rel_path_of
from ..core.parquet_store import ParquetStore

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_TREE = REPO_ROOT / "examples" / "experiment-data"


def default_experiments_dir() -> str:
    return os.environ.get("ALIGN_TRACK_EXPERIMENTS_DIR") or str(BUNDLED_TREE)


def default_data_dir() -> str:
    return os.environ.get("ALIGN_TRACK_DATA_DIR") or str(Path.cwd() / "align-track-data")


class ExperimentTree(dg.ConfigurableResource):
    """The experiment-data tree written by align-system."""

    root: str

    @property
    def root_path(self) -> Path:
        return Path(self.root)

    def run_dirs(self) -> list[RunDir]:
        return find_run_dirs(self.root_path)

    def run_dir(self, partition_key: str) -> RunDir:
        rel = rel_path_of(partition_key)
        return RunDir(self.root_path / rel, rel)


class DataStore(dg.ConfigurableResource):
    """The data dir: Parquet tables and pipeline state (fingerprint cache)."""

    data_dir: str

    @property
    def parquet(self) -> ParquetStore:
        return ParquetStore(Path(self.data_dir))

    def fingerprints(self) -> FingerprintCache:
        return FingerprintCache(Path(self.data_dir) / "state" / "fingerprints.sqlite")
