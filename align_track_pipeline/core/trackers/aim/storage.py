"""Aim's repo and its run table: opening them for many writers, and reading what is stored.

Each function wraps one Aim internal (tests/core/test_aim_compat.py pins it); on an Aim
version the writer was not verified on (`verified.aim_internals`) only public APIs are used.
Aim's internals are imported where they are used, so that this module imports on any Aim.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aim import Repo, Run
from sqlalchemy import event

from align_track_pipeline.core.locking import file_lock
from align_track_pipeline.core.verified import aim_internals

STRUCTURED_DB = "run_metadata.sqlite"  # Aim's run and experiment table (a SQLite file)


def repo_exists(path: Path) -> bool:
    return Repo.exists(str(path))


def open_repo(path: Path) -> Repo:
    """The repo at `path`, created if missing or if its creation was cut short (a kill left
    its folder without its run table's schema: every write would fail with "no such table");
    on a verified Aim its run table is set up for several writer processes (`use_wal`,
    `sync_normal`, `flock_run_creation`)."""
    path.mkdir(parents=True, exist_ok=True)
    if not Repo.exists(str(path)) or not created_whole(path):
        Repo.from_path(str(path), init=True)
    repo = Repo.from_path(str(path))
    if aim_internals():
        use_wal(Path(repo.path) / STRUCTURED_DB)
        sync_normal(repo)
        flock_run_creation(repo)
    return repo


def created_whole(path: Path) -> bool:
    """Aim records the repo's data version last when it creates one, after the run table's
    schema; without it (version 0.0, which only repos of Aim 2 could have) the creation was
    cut short, and Aim's own `init` finishes it (each of its steps can run again)."""
    return Repo.get_version(str(path)) != (0, 0)


def use_wal(db: Path) -> bool:
    """Put Aim's run table in WAL mode (it persists in the file). Aim leaves it in rollback
    mode, where each run's commits wait for every reader and writer of the file, which is most
    of what two writer processes wait for (`benchmarks/workers.py`). A repo busy at that
    moment keeps its mode until a writer opens it again. True when the file is in WAL mode."""
    with closing(sqlite3.connect(db, timeout=1)) as conn:
        with suppress(sqlite3.OperationalError):
            conn.execute("PRAGMA journal_mode=WAL")
        return conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def sync_normal(repo: Repo) -> None:
    """This process's commits to the run table (one per new run) are not synced to disk one
    by one (`synchronous=NORMAL`, safe in WAL mode: a killed process loses nothing); the
    writer syncs the file system once per partition. Wraps `Repo.structured_db.engine`."""
    engine = repo.structured_db.engine
    if not event.contains(engine, "connect", _synchronous_normal):
        event.listen(engine, "connect", _synchronous_normal)
        engine.dispose()  # connections made before take the setting too


def _synchronous_normal(dbapi_connection, _record) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def flock_run_creation(repo: Repo) -> None:
    """Aim guards run creation with a lock file (`Repo._sdb_lock`) that waiters poll every
    50 ms; two writer processes spent 15% of their time asleep there. An `flock` wakes the
    waiter at once. Aim's own processes do not take it, and need not: SQLite orders the
    commits."""
    if not isinstance(repo._sdb_lock, _Flock):
        repo._sdb_lock = _Flock(Path(repo.path) / "locks" / "align-track-run-table.lock")


class _Flock:
    """Aim's lock protocol (one object, entered again for each run) over the project's
    `file_lock`, which is single-use."""

    def __init__(self, path: Path):
        self.path = path
        self._held: AbstractContextManager[None] | None = None

    def __enter__(self) -> _Flock:
        self._held = file_lock(self.path)
        self._held.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        held, self._held = self._held, None
        held.__exit__(*exc)


@dataclass(slots=True)
class RunRow:
    """A new run's row in the run table, held in memory while the run is built (`Run()` and
    the run's setters write it through `Run.props`) and inserted by `insert_run_row`.
    Setting anything else through the run (tags, notes) fails loudly: it has no column
    here."""

    hash: str
    created_at: datetime | None = None  # naive UTC, as Aim stores it; None: when inserted
    name: str | None = None
    description: str | None = None
    experiment: str | None = None
    archived: bool = False


def insert_run_row(repo: Repo, row: RunRow) -> None:
    """Insert a new run's row (and its experiment's, if new) in one transaction, where Aim's
    ORM makes a query and four flushes or commits (about 4 ms a run). Columns left unset
    take the defaults of Aim's own model."""
    statements = _row_statements()
    now = datetime.now(UTC).replace(tzinfo=None)
    values = {"hash": row.hash, "name": row.name, "description": row.description,
              "is_archived": row.archived, "created_at": row.created_at or now,
              "updated_at": now}
    with repo.structured_db.engine.begin() as conn:
        if row.experiment is not None:
            values["experiment_id"] = _experiment_id(conn, statements, row.experiment)
        conn.execute(statements.run, {k: v for k, v in values.items() if v is not None})


def _experiment_id(conn, statements: _RowStatements, name: str) -> int:
    """The experiment's id, the experiment made first if it is new (another process may
    make it at the same moment: the insert then does nothing)."""
    found = conn.execute(statements.experiment_id, {"name": name}).scalar()
    if found is None:
        conn.execute(statements.experiment, {"name": name})
        found = conn.execute(statements.experiment_id, {"name": name}).scalar_one()
    return found


@dataclass(frozen=True)
class _RowStatements:
    run: Any
    experiment: Any
    experiment_id: Any


@functools.cache
def _row_statements() -> _RowStatements:
    """The statements on Aim's run and experiment tables, built once (from Aim's models)."""
    from aim.storage.structured.sql_engine.models import Experiment
    from aim.storage.structured.sql_engine.models import Run as RunModel
    from sqlalchemy import bindparam, select
    from sqlalchemy.dialects.sqlite import insert

    return _RowStatements(
        run=insert(RunModel.__table__),
        experiment=insert(Experiment.__table__).on_conflict_do_nothing(index_elements=["name"]),
        experiment_id=select(Experiment.id).where(Experiment.name == bindparam("name")))


def run_exists(repo: Repo, run_hash: str) -> bool:
    return (Path(repo.path) / "meta" / "chunks" / run_hash).is_dir()


def run_recorded(repo: Repo, run_hash: str) -> bool:
    """The run has data or a row in the run table (a run cut short between its row and
    its data may have only the row)."""
    return run_exists(repo, run_hash) or bool(repo.structured_db.find_run(run_hash))


def rows_written_since(repo: Repo, since: float) -> list[str]:
    """Runs whose run-table row was written (made or changed) at or after `since` (epoch
    seconds): its `updated_at`, which Aim sets to the clock; `created_at` is the run's date
    in the data (`lean_runs.lean_run`)."""
    return [r.hash for r in repo.structured_db.runs()
            if r.updated_at.replace(tzinfo=UTC).timestamp() >= since]


def run_created_at(repo: Repo, run_hash: str) -> float:
    """When the run's folder appeared (its mtime: Aim writes it only while the run is open)."""
    return (Path(repo.path) / "meta" / "chunks" / run_hash).stat().st_mtime


def read_params(repo: Repo, run_hash: str, names: Iterable[str]) -> dict[str, object]:
    """Some params of a run as it is stored (None where missing), read the way Aim's own
    indexer reads a run (its meta database, read-only, about 2 ms a run); on an unverified
    Aim through a read-only `Run`."""
    if not aim_internals():
        run = Run(run_hash, repo=repo, read_only=True)
        return {name: run.get(name) for name in names}
    with _run_tree(repo, run_hash) as tree:
        attrs = tree.subtree("attrs")
        return {name: attrs.get(name) for name in names}


def read_end_time(repo: Repo, run_hash: str) -> float | None:
    """When the run ended (epoch seconds, None: not recorded), as its meta database holds it;
    on an unverified Aim as its index entry does."""
    if not aim_internals():
        return Run(run_hash, repo=repo, read_only=True).end_time
    with _run_tree(repo, run_hash) as tree:
        return tree.get("end_time")


@contextmanager
def _run_tree(repo: Repo, run_hash: str) -> Iterator[Any]:
    """The run's own meta tree, read-only, opened as Aim's indexer opens it and closed after."""
    from aim.sdk.repo import ContainerConfig

    tree = (repo.request_tree("meta", run_hash, read_only=True, skip_read_optimization=True)
            .subtree("meta").subtree("chunks").subtree(run_hash))
    try:
        yield tree
    finally:
        repo.container_pool.pop(ContainerConfig("meta", run_hash, True), None)


def archived_runs(repo: Repo) -> set[str]:
    """The runs archived in Aim (the run table's flag, as `Run.archived` reads it)."""
    return {r.hash for r in repo.structured_db.runs() if r.archived}


def all_run_hashes(repo: Repo) -> list[str]:
    chunks = Path(repo.path) / "meta" / "chunks"
    return sorted(p.name for p in chunks.iterdir() if p.is_dir()) if chunks.is_dir() else []
