"""Where the tree and the data live. Environment variables override the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from align_track_pipeline.core.locations import fingerprint_cache_path
from align_track_pipeline.core.settings import current
from align_track_pipeline.core.source.discovery import (
    FingerprintCache,
    RunDir,
    Scan,
    rel_path_of,
    scan_tree,
)
from align_track_pipeline.core.tables.health import VerifiedFiles
from align_track_pipeline.core.tables.store import ParquetStore
from align_track_pipeline.core.trackers.base import Tracker
from align_track_pipeline.core.trackers.registry import Settings, create, create_all, create_every


class ExperimentTree(dg.ConfigurableResource):
    """The experiment-data tree written by align-system."""

    root: str

    @property
    def root_path(self) -> Path:
        return Path(self.root)

    def scan(self) -> Scan:
        """The tree's run directories and its unreadable folders. Raises `TreeUnreadable` if
        the root cannot be listed: an unmounted or mistyped tree must never read as an empty
        one (whose partitions would all be cleaned up as removed)."""
        return scan_tree(self.root_path)

    def run_dirs(self) -> list[RunDir]:
        return self.scan().run_dirs

    def run_dir(self, partition_key: str) -> RunDir:
        rel = rel_path_of(partition_key)
        return RunDir(self.root_path / rel, rel)


class DataStore(dg.ConfigurableResource):
    """The data dir: Parquet tables; and where this host keeps its fingerprint cache."""

    data_dir: str

    @property
    def parquet(self) -> ParquetStore:
        return ParquetStore(Path(self.data_dir))

    def fingerprints(self) -> FingerprintCache:
        return FingerprintCache(fingerprint_cache_path(Path(self.data_dir)))

    def verified_files(self) -> VerifiedFiles:
        """The partition files last known good, kept beside the fingerprints."""
        return VerifiedFiles(fingerprint_cache_path(Path(self.data_dir)))


class Trackers(dg.ConfigurableResource):
    """The registered trackers (`core.trackers.registry`), configured for the data dir.

    Where each store is comes from the environment when a run starts (e.g.
    MLFLOW_TRACKING_URI), so a URI with credentials never lands in resource or run config.
    `options` holds only what a user chose explicitly on the command line.
    """

    data_dir: str
    options: dict[str, str] = {}

    def settings(self) -> Settings:
        return Settings(Path(self.data_dir), dict(self.options))

    def get(self, name: str) -> Tracker:
        return create(name, self.settings())

    def all(self) -> list[Tracker]:
        return create_all(self.settings())

    def every(self) -> list[Tracker]:
        """Every registered tracker, also those `ALIGN_TRACK_TRACKERS` leaves out."""
        return create_every(self.settings())


def env_or(name: str, default: str) -> str | dg.EnvVar:
    """`dg.EnvVar(name)` when the variable is set (the UI then shows its name, not its value),
    else the embedded default."""
    return dg.EnvVar(name) if current().is_set(name) else default
