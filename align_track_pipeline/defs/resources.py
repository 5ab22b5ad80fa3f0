"""Where the tree and the data live. Environment variables override the embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from align_track_pipeline.core.source.discovery import (
    FingerprintCache,
    RunDir,
    find_run_dirs,
    rel_path_of,
)
from align_track_pipeline.core.tables.store import ParquetStore

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
        """The tree's run directories. Raises if the root is not a readable directory: an
        unmounted or mistyped tree must never read as an empty one (whose partitions would
        all be cleaned up as removed)."""
        root = self.root_path
        if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
            raise FileNotFoundError(f"experiment-data tree not found or not readable: {root}")
        return find_run_dirs(root)

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


class MlflowTarget(dg.ConfigurableResource):
    """Where MLflow runs go. Default: SQLite in the data dir, artifacts beside it."""

    tracking_uri: str
    experiment: str = "align-system"
    flat: bool = False
    artifact_root: str | None = None
    ui_url: str | None = None  # e.g. http://127.0.0.1:5000, for links in the Dagster UI

    @property
    def mode(self) -> str:
        from align_track_pipeline.core.trackers.mlflow.plan import FLAT, HIERARCHICAL

        return FLAT if self.flat else HIERARCHICAL

    def writer(self):
        from align_track_pipeline.core.trackers.mlflow.writer import MlflowWriter

        return MlflowWriter(self.tracking_uri, self.experiment, self.artifact_root)


def default_mlflow_target(data_dir: str, tracking_uri: str | None = None,
                          experiment: str | None = None, flat: bool | None = None) -> MlflowTarget:
    """Arguments, then MLFLOW_TRACKING_URI / ALIGN_TRACK_MLFLOW_* variables, then SQLite."""
    data = Path(data_dir).resolve()
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data}/mlflow.db"
    return MlflowTarget(
        tracking_uri=uri,
        experiment=experiment or os.environ.get("ALIGN_TRACK_MLFLOW_EXPERIMENT", "align-system"),
        flat=flat if flat is not None else os.environ.get("ALIGN_TRACK_MLFLOW_FLAT") == "1",
        artifact_root=str(data / "mlflow-artifacts"),
        ui_url=os.environ.get("ALIGN_TRACK_MLFLOW_UI_URL"),
    )


class AimTarget(dg.ConfigurableResource):
    """The Aim repo scene runs go to, and the manifest of which run holds which scene."""

    repo: str
    manifest: str

    def writer(self):
        from align_track_pipeline.core.trackers.aim.writer import AimWriter

        return AimWriter(Path(self.repo), Path(self.manifest))


def default_aim_target(data_dir: str, repo: str | None = None) -> AimTarget:
    """Argument, then ALIGN_TRACK_AIM_REPO, then `<data dir>/aim`."""
    data = Path(data_dir).resolve()
    repo = repo or os.environ.get("ALIGN_TRACK_AIM_REPO") or str(data / "aim")
    return AimTarget(repo=str(Path(repo).resolve()),
                     manifest=str(data / "state" / "aim_manifest.sqlite"))
