"""MLflow as a tracker: one parent run per experiment row with a nested child run per scene,
or one flat run per experiment row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from align_track_pipeline.core.trackers.base import Partition, TargetError, Tracker, WriteReport
from align_track_pipeline.core.trackers.mlflow.plan import FLAT, HIERARCHICAL, plan_runs
from align_track_pipeline.core.versions import MLFLOW_LAYOUT_VERSION, experiment_key, scene_key

if TYPE_CHECKING:
    from align_track_pipeline.core.trackers.mlflow.writer import MlflowWriter
    from align_track_pipeline.core.trackers.registry import Settings

DEFAULT_EXPERIMENT = "align-system"


@dataclass(frozen=True)
class MlflowTracker(Tracker):
    tracking_uri: str
    experiment: str = DEFAULT_EXPERIMENT
    flat: bool = False
    artifact_root: str | None = None
    ui_url: str | None = None  # e.g. http://127.0.0.1:5000, for links in the Dagster UI

    name = "mlflow"
    version_tag = "m"
    description = ("One MLflow parent run per experiment row with one nested child run per "
                   "scene (or one flat run per experiment row).")

    @property
    def mode(self) -> str:
        return FLAT if self.flat else HIERARCHICAL

    def layout_version(self) -> str:
        """The layout and the mode: switching `--flat` (ALIGN_TRACK_MLFLOW_FLAT for the
        daemon) re-logs every partition like a layout bump."""
        return f"{MLFLOW_LAYOUT_VERSION}-{self.mode}"

    def target_id(self) -> str:
        return f"{without_credentials(self.tracking_uri)} (experiment {self.experiment})"

    def check(self) -> None:
        check_tracking_uri(self.tracking_uri)
        if not self.experiment.strip():
            raise TargetError("the MLflow experiment name is empty")

    def max_writers(self, cores: int) -> int:
        """SQLite takes one writer at a time (each partition's transaction holds the database's
        write lock); Postgres (a lock per partition) and a server take one per core."""
        return 1 if self.tracking_uri.startswith("sqlite") else cores

    def ui_hint(self) -> str:
        return f"{self.target_id()}; open with `align-track mlflow-ui`"

    def links(self, table: str, rows: Sequence[Mapping]) -> dict[str, str]:
        """Parents for experiments rows, scene runs for scenes rows (none in flat mode)."""
        if not self.ui_url or (table == "scenes" and self.flat):
            return {}
        from align_track_pipeline.core.trackers.mlflow.lookup import find_runs

        if table == "scenes":
            keys = {scene_key(r["partition_key"], r["scene_index"]): r["partition_key"]
                    for r in rows}
        else:
            keys = {experiment_key(r["partition_key"], r["alignment_target_id"]):
                    r["partition_key"] for r in rows}
        runs = find_runs(self.tracking_uri, self.experiment, keys)
        return {key: run_url(self.ui_url, *ids) for key, ids in runs.items()}

    def open(self) -> _MlflowSession:
        from align_track_pipeline.core.trackers.mlflow.writer import MlflowWriter

        return _MlflowSession(self, MlflowWriter(self.tracking_uri, self.experiment,
                                                 self.artifact_root))


@dataclass(frozen=True)
class _MlflowSession:
    tracker: MlflowTracker
    writer: MlflowWriter

    def upsert(self, partition: Partition) -> WriteReport:
        specs = plan_runs(partition.experiments, partition.scenes, partition.run_dir,
                          self.tracker.mode)
        result = self.writer.upsert(partition.key, specs)
        parents = {s.name: result.run_ids[s.key] for s in specs if s.parent_key is None}
        ui_url = self.tracker.ui_url
        links = ({name: run_url(ui_url, self.writer.experiment_id, run_id)
                  for name, run_id in parents.items()} if ui_url else {})
        written = len(specs) if result.written else 0
        return WriteReport(
            runs=len(specs), written=written, unchanged=len(specs) - written,
            deleted=result.deleted, links=links,
            details={"parent_runs": len(parents), "parent_run_ids": list(parents.values()),
                     "experiment": self.tracker.experiment,
                     "tracking_uri": without_credentials(self.tracker.tracking_uri)})

    def remove(self, partition: str, archive: bool) -> int:
        if archive:
            return self.writer.archive_partition(partition)
        return self.writer.delete_partition(partition)

    def close(self) -> None:
        pass


SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
SUPPORTED = ("sqlite:///PATH, postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB, "
             "mysql+pymysql://..., or http(s)://HOST:PORT (an `mlflow server`)")


def check_tracking_uri(uri: str) -> None:
    """Refuse what MLflow would misread: a bare path or `file:` (MLflow's deprecated file
    store, a folder written wherever the process runs), a typo'd scheme, a server URI without
    a host, a SQLite URI without its three slashes."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0].lower()
    shown = without_credentials(uri)
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise TargetError(f"MLflow tracking URI {shown!r} has no host; use {SUPPORTED}")
    elif scheme == "sqlite":
        if not uri.split(":", 1)[1].startswith("///") or len(uri.split("///", 1)[1]) == 0:
            raise TargetError(f"MLflow tracking URI {shown!r}: write sqlite:///RELATIVE or "
                              "sqlite:////ABSOLUTE/path.db")
    elif scheme in SQL_SCHEMES:
        if not parts.hostname and not parts.path.strip("/"):
            raise TargetError(f"MLflow tracking URI {shown!r} names no database server")
    else:
        raise TargetError(f"unsupported MLflow tracking URI {shown!r}: use {SUPPORTED}")


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def without_credentials(uri: str) -> str:
    """The URI without a `user:password@` part: safe to show and to record."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def mlflow_tracker(settings: Settings) -> MlflowTracker:
    """Flags, then MLFLOW_TRACKING_URI / ALIGN_TRACK_MLFLOW_* variables, then SQLite in the
    data dir with artifacts beside it."""
    data = Path(settings.data_dir).resolve()
    return MlflowTracker(
        tracking_uri=settings.get("mlflow_uri", "MLFLOW_TRACKING_URI",
                                  f"sqlite:///{data}/mlflow.db"),
        experiment=settings.get("mlflow_experiment", "ALIGN_TRACK_MLFLOW_EXPERIMENT",
                                DEFAULT_EXPERIMENT),
        flat=settings.get("flat", "ALIGN_TRACK_MLFLOW_FLAT") == "1",
        artifact_root=str(data / "mlflow-artifacts"),
        ui_url=settings.get("mlflow_ui_url", "ALIGN_TRACK_MLFLOW_UI_URL") or None,
    )
