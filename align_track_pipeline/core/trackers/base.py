"""What a tracker is: a store that receives each partition's rows as runs.

The pipeline knows trackers only through this class and the registry beside it: the Dagster
assets, the cleanup of removed folders, freshness, `align-track ingest`/`status` and the
benchmarks iterate the registered trackers. Adding a store means one module that subclasses
`Tracker` and one `register` call.

A tracker object is cheap and holds only where its store is; `open()` connects and returns a
`TrackerWriter`, closed after the batch.
"""

from __future__ import annotations

import importlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from align_track_pipeline.core import versions
from align_track_pipeline.core.pools import pool_name
from align_track_pipeline.core.secrets import without_credentials
from align_track_pipeline.core.settings import load_settings


class TargetError(ValueError):
    """A tracker target that is malformed or not supported: refused before anything is
    written (the CLI exits 2 with this message)."""


@dataclass(frozen=True)
class Settings:
    """What a factory builds its tracker from: the data dir, the options a user gave
    explicitly (command-line flags; absent = not given) and the environment, whose variables
    are read through the validated registry (`core/settings.py`)."""

    data_dir: Path
    options: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def get(self, option: str, env_var: str | None = None, default: Any = "") -> Any:
        """The option if given, else the variable's value if set (typed: a switch is a
        bool), else `default`."""
        if self.options.get(option):
            return self.options[option]
        values = load_settings(self.env)
        return values.get(env_var) if env_var and values.is_set(env_var) else default


@dataclass(frozen=True)
class Partition:
    """One partition's rows as the tables hold them (JSON is never parsed again), and its
    run directory for trackers that copy source files."""

    key: str
    run_dir: Path | None
    experiments: list[dict]
    scenes: list[dict]

    @property
    def source_version(self) -> str:
        return self.experiments[0]["source_version"]


@dataclass(frozen=True)
class WriteReport:
    """What one upsert did, shown with the partition's materialization."""

    runs: int  # runs the partition has in the store now
    written: int  # runs created (new, changed or repaired)
    unchanged: int  # runs kept as they were
    deleted: int  # old runs removed
    details: Mapping[str, object] = field(default_factory=dict)  # plain values for the UI
    links: Mapping[str, str] = field(default_factory=dict)  # label -> URL in the tracker's UI


@dataclass(frozen=True)
class FollowUp:
    """Upkeep a tracker's store needs after runs were written, as an asset of its own (Aim:
    its repo index): brought up to date after the tracker's materializations by a sensor, or by
    hand through its job. `run(full)` does it (`full`: from scratch) and returns plain values
    for the UI."""

    asset: str
    job: str
    description: str
    run: Callable[[bool], Mapping[str, object]]


class TrackerWriter(Protocol):
    """An open connection to a tracker's store. Every method is idempotent at the store."""

    def upsert(self, partition: Partition) -> WriteReport:
        """Make the store hold exactly this partition's runs: unchanged ones are kept,
        changed ones replaced, leftovers of an interrupted write repaired."""
        ...

    def remove(self, partition: str, archive: bool) -> int:
        """Delete the partition's runs, or with `archive` keep them out of every default
        view (restorable); returns how many runs."""
        ...

    def close(self) -> None: ...


class Tracker(ABC):
    """A store of runs fed from the tables. Subclasses set the three class attributes."""

    name: str  # "mlflow": the asset `<name>_runs`, its job and CLI phase
    version_tag: str  # one letter in data versions: "m" for MLflow, "a" for Aim
    description: str  # the asset's description in the Dagster UI

    @property
    def asset(self) -> str:
        return f"{self.name}_runs"

    @abstractmethod
    def layout_version(self) -> str:
        """The layout (and mode) of what is logged; a change re-writes every partition."""

    @abstractmethod
    def target_id(self) -> str:
        """Which store this is, without secrets (shown to users, part of reports)."""

    def store(self) -> str:
        """Which store this writes, as one normalised address without credentials, the same
        for every tracker that writes it (`mlflow:sqlite:////abs/mlflow.db`, `aim:/abs/repo`):
        what its pool is named after. By default the tracker's name and its target; a tracker
        whose store other trackers may share says which store it is."""
        return f"{self.name}:{without_credentials(self.target_id())}"

    @property
    def pool(self) -> str:
        """The Dagster pool of its store: trackers that write one store share it, so its
        limit (`max_writers`) holds for all of them together."""
        return pool_name(self.store())

    def check(self) -> None:
        """Raise `TargetError` if the target is malformed or unsupported (called whenever a
        tracker is created, so nothing is ever written to a place that was not asked for)."""
        return None

    @abstractmethod
    def open(self) -> TrackerWriter:
        """Connect to the store (creating it if needed)."""

    def preload(self) -> None:
        """Import what `open` needs ahead of it (`preload_writers`). Nothing by default."""
        return None

    def code_version(self) -> str:
        """The asset's code version: the layout and which store (a hash of `target_id`)."""
        return versions.tracker_code_version(self.layout_version(), self.target_id())

    def data_version(self, source_version: str) -> str:
        """The data version an up-to-date partition of this tracker records."""
        return versions.tracker_version(source_version, self.version_tag, self.code_version())

    def store_generation(self) -> str:
        """Which instance of the store holds the runs: it changes when the store is deleted
        or rebuilt, and then every partition it held is written again. "" when not told (the
        default, or a store that did not answer)."""
        return ""

    def generation_in_versions(self) -> bool:
        """Whether the generation is part of `data_version` (told cheaply, a few stats): a
        partition written into another generation is then stale by its version. Else a
        changed generation makes the store checks (`defs/store_checks.py`) write every
        partition the store held again."""
        return True

    def max_writers(self, cores: int) -> int:
        """How many processes may write this store at once, usefully: its pool's limit and
        the most workers its phase of `align-track ingest` uses. One unless the store says
        more (a store that serializes writers gains nothing from more)."""
        return 1

    def follow_up(self) -> FollowUp | None:
        """The upkeep asset this tracker's store needs after writes, if any (none by
        default)."""
        return None

    def ui_hint(self, options: str = "") -> str:
        """One line telling a user where the runs are and how to look at them; `options`:
        the command-line options (` --data-dir D`) that command needs to open the same store."""
        return self.target_id()

    def links(self, table: str, rows: Sequence[Mapping]) -> dict[str, str]:
        """Row key (`versions.scene_key` / `experiment_key`) -> the address of the row's run
        in this tracker's UI, for table rows (`experiments` or `scenes`) that have a run, in
        one lookup for all of them. Empty when the tracker has no UI address (the default for
        a tracker; MLflow's and Aim's default to what `align-track mlflow-ui`/`aim-ui`
        serve)."""
        return {}


_preloading: list[threading.Thread] = []

# Imported on the calling thread before the writers' imports start on another: SQLAlchemy's
# ORM, which MLflow and Aim import and Dagster's storage does not, registers a hook that every
# SQLAlchemy query then calls, Dagster's on the calling thread too; half-imported by the other
# thread, that hook fails the query ("partially initialized module 'sqlalchemy.orm.exc'").
SHARED_MODULES = ("sqlalchemy.orm",)


def preload_writers(trackers: Sequence[Tracker]) -> None:
    """Import the trackers' writers on a background thread (MLflow's and Aim's imports take a
    second or two each) while this one does other work, e.g. writes the tables. An import
    that fails here is left to the writer's own import, which reports it."""
    if not trackers:
        return
    for name in SHARED_MODULES:
        with suppress(ImportError):
            importlib.import_module(name)

    def imports() -> None:
        for tracker in trackers:
            try:
                tracker.preload()
            except Exception:  # noqa: BLE001 - the writer's own import reports it
                continue

    thread = threading.Thread(target=imports, name="align-track-preload", daemon=True)
    _preloading.append(thread)
    thread.start()


def preloaded() -> None:
    """Wait for the background imports, if any: a writer's modules are never imported by two
    threads at once (Python's import locks can deadlock on modules both threads import)."""
    for thread in list(_preloading):
        thread.join()
    _preloading[:] = [t for t in _preloading if t.is_alive()]


def scenario_metrics(scene: Mapping) -> dict[str, float | None]:
    """A scene's `scenario_scores` named `scenario.<name>` (`scenario.score`,
    `scenario.kdma.<KDMA>`): scores.json scores a scenario, not a scene, so every scene of the
    scenario carries the same numbers, and the name says whose they are."""
    return {f"scenario.{name}": value for name, value in scene["scenario_scores"]}


INCOMPLETE = "incomplete"  # tag (MLflow) and param (Aim) of a run dir's runs it has, and why


def incomplete(experiment: Mapping) -> str | None:
    """Why an experiment's run directory looks unfinished, None when it does not:
    align-system writes timing.json last, at the end of a run."""
    if "timing.json" in experiment["source_files"]:
        return None
    return "no timing.json: the run crashed, is still running, or was copied without it"
