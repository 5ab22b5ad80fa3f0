"""MLflow as a tracker: one parent run per experiment row with a nested child run per scene,
or one flat run per experiment row."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from align_track_pipeline.core.secrets import mask_text, unencoded_message, without_credentials
from align_track_pipeline.core.trackers.base import (
    Partition,
    Settings,
    TargetError,
    Tracker,
    WriteReport,
    preloaded,
)
from align_track_pipeline.core.trackers.mlflow.plan import FLAT, HIERARCHICAL, plan_runs
from align_track_pipeline.core.trackers.mlflow.traces import ENV as ENV_TRACES
from align_track_pipeline.core.trackers.mlflow.traces import plan_traces
from align_track_pipeline.core.versions import MLFLOW_LAYOUT_VERSION, experiment_key, scene_key

if TYPE_CHECKING:
    from align_track_pipeline.core.trackers.mlflow.writer import MlflowWriter

DEFAULT_EXPERIMENT = "align-system"
PARENTS_ONLY_LABEL = "experiments, one row each"
UI_PORT = 5000  # where `align-track mlflow-ui` serves the store by default


@dataclass(frozen=True)
class MlflowTracker(Tracker):
    tracking_uri: str
    experiment: str = DEFAULT_EXPERIMENT
    flat: bool = False
    artifact_root: str | None = None
    # True when the artifact root was chosen (ALIGN_TRACK_MLFLOW_ARTIFACTS): a tracking server
    # then puts new experiments there too, instead of its own default.
    shared_artifacts: bool = False
    ui_url: str | None = None  # e.g. http://127.0.0.1:5000: links in the Dagster UI and search
    traces: bool = True  # a trace per scene (ALIGN_TRACK_MLFLOW_TRACES=off: none)
    data_dir: str | None = None  # whose tree the experiment must hold (`owner`)

    name = "mlflow"
    version_tag = "m"
    description = ("One MLflow parent run per experiment row with one nested child run per "
                   "scene (or one flat run per experiment row).")

    @property
    def mode(self) -> str:
        return FLAT if self.flat else HIERARCHICAL

    def layout_version(self) -> str:
        """The layout, the mode and whether traces are written: switching `--flat`
        (ALIGN_TRACK_MLFLOW_FLAT for the daemon) or ALIGN_TRACK_MLFLOW_TRACES re-logs every
        partition like a layout bump."""
        return f"{MLFLOW_LAYOUT_VERSION}-{self.mode}" + ("" if self.traces else "-notraces")

    def target_id(self) -> str:
        return f"{without_credentials(self.tracking_uri)} (experiment {self.experiment})"

    def data_version(self, source_version: str) -> str:
        """Also which instance of a SQLite store holds the runs (`store_generation`)."""
        version = super().data_version(source_version)
        generation = self.store_generation() if self.generation_in_versions() else ""
        return f"{version}-s{generation}" if generation else version

    def store_generation(self) -> str:
        """The experiment's id and creation time: a store deleted or replaced, or its
        experiment removed for good and made again, gets another. A SQLite store's is read
        from its file (`lookup.store_generation`, two stats when nothing changed) and is part
        of every partition's data version; a database server's or a tracking server's costs
        a query or a request (`lookup.remote_generation`), so it is compared where the store
        checks run (`defs/store_checks.py`)."""
        from align_track_pipeline.core.trackers.mlflow.lookup import (
            remote_generation,
            store_generation,
        )

        path = self._generation_file
        if path is None:
            return remote_generation(self.tracking_uri, self.experiment)
        return store_generation(path, self.experiment)

    def generation_in_versions(self) -> bool:
        return self._generation_file is not None

    @cached_property
    def _generation_file(self) -> Path | None:
        """Decided once per tracker: `data_version` asks for every partition."""
        from align_track_pipeline.core.trackers.mlflow.lookup import generation_file

        return generation_file(self.tracking_uri)

    def store(self) -> str:
        """The tracking store (whichever experiment): the database's file or server, or the
        `mlflow server`, without credentials."""
        return f"mlflow:{store_address(self.tracking_uri)}"

    def check(self) -> None:
        check_tracking_uri(self.tracking_uri)
        if not self.experiment.strip():
            raise TargetError("the MLflow experiment name is empty")

    def max_writers(self, cores: int) -> int:
        """SQLite takes one writer at a time (each partition's transaction holds the database's
        write lock); Postgres (a lock per partition) and a server take one per core."""
        return 1 if self.tracking_uri.startswith("sqlite") else cores

    def ui_hint(self, options: str = "") -> str:
        return f"{self.target_id()}; open with `align-track mlflow-ui{options}`"

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

    def preload(self) -> None:
        """The writer imports MLflow (about a second, more on a busy machine), and either of
        its stores MLflow's SQL store (`compat`: about half a second more)."""
        importlib.import_module("align_track_pipeline.core.trackers.mlflow.writer")
        importlib.import_module("align_track_pipeline.core.trackers.mlflow.compat")

    def open(self) -> _MlflowSession:
        preloaded()
        from align_track_pipeline.core.trackers.mlflow.writer import MlflowWriter

        writer = MlflowWriter(self.tracking_uri, self.experiment, self.artifact_root,
                              self.shared_artifacts)
        try:
            writer.claim(self.data_dir, f"The MLflow experiment {self.experiment!r} in "
                         f"{without_credentials(self.tracking_uri)}")
            writer.follow_a_moved_data_dir()  # once the experiment is this tree's
        except BaseException:
            writer.close()
            raise
        return _MlflowSession(self, writer)


@dataclass(frozen=True)
class _MlflowSession:
    tracker: MlflowTracker
    writer: MlflowWriter

    def upsert(self, partition: Partition) -> WriteReport:
        specs = plan_runs(partition.experiments, partition.scenes, partition.run_dir,
                          self.tracker.mode)
        traces = (plan_traces(partition.experiments, partition.scenes, self.tracker.mode)
                  if self.tracker.traces else None)
        result = self.writer.upsert(partition.key, specs, traces)
        parents = {s.name: result.run_ids[s.key] for s in specs if s.parent_key is None}
        links = self._links(parents)
        written = min(result.written, len(specs))  # a round that wrote again counts once
        return WriteReport(
            runs=len(specs), written=written, unchanged=len(specs) - written,
            deleted=result.deleted, links=links,
            details={"parent_runs": len(parents), "parent_run_ids": list(parents.values()),
                     "traces": result.traces, "traces_written": result.traces_written,
                     "experiment": self.tracker.experiment,
                     "experiment_id": self.writer.experiment_id,  # for parents_only_url
                     "tracking_uri": without_credentials(self.tracker.tracking_uri)})

    def _links(self, parents: dict[str, str]) -> dict[str, str]:
        """Each parent run's page, and the experiment's parents-only view (hierarchical mode:
        a flat experiment holds nothing else)."""
        ui_url, experiment = self.tracker.ui_url, self.writer.experiment_id
        if not ui_url:
            return {}
        links = {name: run_url(ui_url, experiment, run_id) for name, run_id in parents.items()}
        if not self.tracker.flat:
            links[PARENTS_ONLY_LABEL] = parents_only_url(ui_url, experiment)
        return links

    def remove(self, partition: str, archive: bool) -> int:
        if archive:
            return self.writer.archive_partition(partition)
        return self.writer.delete_partition(partition)

    def close(self) -> None:
        self.writer.close()


SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
SUPPORTED = ("sqlite:///PATH, postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB, "
             "mysql+pymysql://... (with pymysql installed), "
             "or http(s)://HOST:PORT (an `mlflow server`)")


def check_tracking_uri(uri: str) -> None:
    """Refuse what MLflow would misread: a bare path or `file:` (MLflow's deprecated file
    store, a folder written wherever the process runs), a typo'd scheme, a server URI without
    a host, a SQLite URI without its three slashes."""
    shown = without_credentials(uri)
    if unencoded := unencoded_message("MLflow tracking URI", uri):
        raise TargetError(unencoded)
    try:
        parts = urlsplit(uri)
    except ValueError as wrong:  # a `[` that opens no IPv6 address
        raise TargetError(f"MLflow tracking URI {shown!r} does not parse: {wrong}") from None
    scheme = parts.scheme.split("+")[0].lower()
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number, or out of range
    except ValueError:
        raise TargetError(f"MLflow tracking URI {shown!r}: its port is not a number from 0 "
                          "to 65535") from None
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
        _check_driver(uri, shown)
    else:
        raise TargetError(f"unsupported MLflow tracking URI {shown!r}: use {SUPPORTED}")


def _check_driver(uri: str, shown: str) -> None:
    """A database driver this install lacks would fail only at the first write, with `No module
    named ...`; say so before anything is written. SQLAlchemy 2.1 reads a bare `postgresql://`
    as psycopg 3, which is not installed: psycopg2 is. Then the arguments the driver would
    connect with are built (no connection): a query argument it cannot take, such as
    `?port=x`, is refused here too, not by every partition's write."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)
        dialect = url.get_dialect()
        dialect.import_dbapi()
    except ArgumentError:
        raise TargetError(f"MLflow tracking URI {shown!r} names a database driver SQLAlchemy "
                          f"does not know; use {SUPPORTED}") from None
    except ValueError:  # what make_url cannot read
        raise TargetError(f"MLflow tracking URI {shown!r} does not parse; use "
                          f"{SUPPORTED}") from None
    except ImportError as missing:
        spelling = {"postgresql": "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB"}.get(
            urlsplit(uri).scheme.lower())
        fix = f"write {spelling}" if spelling else "install the package that provides it"
        raise TargetError(f"MLflow tracking URI {shown!r}: its database driver "
                          f"{missing.name!r} is not installed; {fix}") from None
    try:
        with warnings.catch_warnings():  # pyodbc's "no driver name": MLflow's to tell
            warnings.simplefilter("ignore")
            dialect().create_connect_args(url)
    except Exception as wrong:  # noqa: BLE001  any driver's own complaint, told masked
        raise TargetError(f"MLflow tracking URI {shown!r}: {mask_text(str(wrong))}") from None


DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}


def store_address(uri: str) -> str:
    """One spelling per store of a (checked) tracking URI: SQLite by its file's real path,
    a database or server by scheme (no driver), host, port (the default one written out)
    and path; never the credentials, query or fragment."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0].lower()
    if scheme == "sqlite":
        path = uri.split(":///", 1)[1].split("?", 1)[0]
        return f"sqlite:///{Path(path).resolve()}"
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6
    port = parts.port or DEFAULT_PORTS.get(scheme)
    netloc = f"{host}:{port}" if host and port else host
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def runs_url(ui_url: str, experiment_id: str) -> str:
    """The experiment's runs list: every run, scene runs nested under their experiment's."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs"


def traces_url(ui_url: str, experiment_id: str) -> str:
    """The experiment's Traces tab: one trace per scene, filtered with `tag.<column>`."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/traces"


# Parents (hierarchical) and flat runs: every run that is not a scene.
PARENTS_FILTER = 'tags.run_type != "scene"'


def parents_only_url(ui_url: str, experiment_id: str) -> str:
    """The experiment's runs page filtered to its parent runs: one row per experiment row, so
    paging counts experiments, not scenes (the UI reads `searchFilter` from the URL)."""
    return (f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?searchFilter={quote(PARENTS_FILTER, safe='')}")


def mlflow_tracker(settings: Settings) -> MlflowTracker:
    """Flags, then MLFLOW_TRACKING_URI / ALIGN_TRACK_MLFLOW_* variables, then SQLite in the
    data dir with artifacts beside it; the UI's address for links, then `default_ui_url`.

    ALIGN_TRACK_MLFLOW_ARTIFACTS (a shared folder or any artifact URI MLflow accepts) is where
    experiments this tracker creates keep their artifacts; without it they go to this writer's
    data dir, which other hosts cannot read. Credentials of a tracking server are never
    options here: MLflow's client reads MLFLOW_TRACKING_USERNAME / _PASSWORD (or _TOKEN)
    from the environment itself, and nothing of ours copies them anywhere."""
    data = Path(settings.data_dir).resolve()
    uri = settings.get("mlflow_uri", "MLFLOW_TRACKING_URI", f"sqlite:///{data}/mlflow.db")
    artifacts = settings.get("mlflow_artifacts", "ALIGN_TRACK_MLFLOW_ARTIFACTS")
    return MlflowTracker(
        tracking_uri=uri,
        experiment=settings.get("mlflow_experiment", "ALIGN_TRACK_MLFLOW_EXPERIMENT",
                                DEFAULT_EXPERIMENT),
        flat=settings.get("flat", "ALIGN_TRACK_MLFLOW_FLAT", False) in (True, "1"),
        artifact_root=artifacts or str(data / "mlflow-artifacts"),
        shared_artifacts=bool(artifacts),
        ui_url=without_credentials(settings.get("mlflow_ui_url", "ALIGN_TRACK_MLFLOW_UI_URL",
                                                default_ui_url(uri))),  # links are shown
        traces=settings.get("mlflow_traces", ENV_TRACES, True) in (True, "1"),
        data_dir=str(data),
    )


def default_ui_url(tracking_uri: str) -> str:
    """Where the runs are seen unless ALIGN_TRACK_MLFLOW_UI_URL says otherwise: an `mlflow
    server` serves its own UI; any other store is what `align-track mlflow-ui` serves."""
    if tracking_uri.split(":", 1)[0].lower() in ("http", "https"):  # parsed by the check
        return without_credentials(tracking_uri).rstrip("/")
    return f"http://127.0.0.1:{UI_PORT}"
