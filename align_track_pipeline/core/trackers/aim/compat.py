"""The Aim internals the writer relies on, each in one small function (Aim is pinned).

Since Aim 3.28, `Run.close()` no longer adds a run to the repo index; only `aim up`'s background
indexer or `aim storage reindex` do, and a full reindex reopens the index per run. Indexing
just the new runs while holding the index container open once is what `index_runs` does, with
the same steps as Aim's own `RepoIndexManager.index`. tests/core/test_aim_compat.py fails
loudly if Aim changes any of this.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import aim.sdk.run as aim_run_module
import aimrocks
import aimrocks.errors
from aim import Repo, Run
from aim.sdk.index_manager import RepoIndexManager
from aim.sdk.repo import ContainerConfig
from aim.storage.locking import RunLock
from aim.storage.rockscontainer import RocksContainer
from aim.storage.utils import BLOB
from sqlalchemy import event

from align_track_pipeline.core.faults import fault_point
from align_track_pipeline.core.locking import file_lock
from align_track_pipeline.core.processes import process_alive

INDEX_BUSY = (aimrocks.errors.RocksIOError,)


class IndexBusy(RuntimeError):
    """Another process (typically `aim up`'s indexer) holds the repo index open."""


def repo_exists(path: Path) -> bool:
    return Repo.exists(str(path))


def open_repo(path: Path) -> Repo:
    path.mkdir(parents=True, exist_ok=True)
    if not Repo.exists(str(path)):
        Repo.from_path(str(path), init=True)
    repo = Repo.from_path(str(path))
    use_wal(Path(repo.path) / STRUCTURED_DB)
    _lighter_run_table(repo)
    return repo


def _lighter_run_table(repo: Repo) -> None:
    """Two changes to how this process writes Aim's run table, which every new run commits to
    four times:
    - Commits are not synced to disk one by one (`synchronous=NORMAL`, safe in WAL mode: a
      killed process loses nothing). The writer syncs the file system once per partition.
    - Aim guards run creation with a lock file that waiters poll every 50 ms; two writer
      processes spent 15% of their time asleep there. An `flock` wakes the waiter at once.
      Aim's own processes do not take it, and need not: SQLite orders the commits."""
    engine = repo.structured_db.engine
    if not event.contains(engine, "connect", _synchronous_normal):
        event.listen(engine, "connect", _synchronous_normal)
        engine.dispose()  # connections made before take the setting too
    if not isinstance(repo._sdb_lock, _Flock):
        repo._sdb_lock = _Flock(Path(repo.path) / "locks" / "align-track-run-table.lock")


def _synchronous_normal(dbapi_connection, _record) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


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


STRUCTURED_DB = "run_metadata.sqlite"  # Aim's run and experiment table (a SQLite file)


def use_wal(db: Path) -> bool:
    """Put Aim's run table in WAL mode (it persists in the file). Aim leaves it in rollback
    mode, where each run's commits wait for every reader and writer of the file, which is most
    of what two writer processes wait for (`benchmarks/workers.py`). A repo busy at that
    moment keeps its mode until a writer opens it again. True when the file is in WAL mode."""
    with closing(sqlite3.connect(db, timeout=1)) as conn:
        with suppress(sqlite3.OperationalError):
            conn.execute("PRAGMA journal_mode=WAL")
        return conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def lean_run(repo: Repo, experiment: str, stage: Path | None = None) -> Run:
    """A run without system tracking, terminal capture, system params or status reporting:
    it is written and closed within milliseconds. With a `stage` (see `new_stage`), its
    two RocksDB folders are built there and `publish_run` moves them into the repo."""
    if stage is None:
        return _open_run(repo=repo, experiment=experiment)
    # Only while Run() opens them: its databases, and its lock. A new run's hash is known to
    # no other process, so its lock guards nothing: Aim's lock file, created and removed in
    # the repo's shared `locks` folder, was 4% of two writers' time, waiting on each other
    # and the disk.
    repo.request_container = _staged_containers(repo, stage)
    repo.request_run_lock = _new_run_lock
    try:
        return _open_run(repo=repo, experiment=experiment)
    finally:
        del repo.request_container, repo.request_run_lock


# Staging. Aim builds each new run as two RocksDB databases (`meta/chunks/<hash>` and
# `seqs/chunks/<hash>`): some 70 files created and deleted and 26 fsyncs per run. On a disk
# where a sync costs a journal commit that was most of a run's time, and two writer processes
# queued behind each other's syncs. Built on a memory file system and moved in whole, a run
# costs a few file copies; the writer syncs the file system once per partition instead.
STAGE_ROOT = Path("/dev/shm")
STAGE_ENV = "ALIGN_TRACK_AIM_STAGE"
_STAGE_PREFIX = "align-track-aim-"
_SMALL_MANIFEST = 64 * 1024  # RocksDB preallocates 4 MiB per MANIFEST: memory, on tmpfs


# A writer's stage holds the run in progress: 2.4 MiB at most while ingesting the sample tree.
# Below this much free space (a container's 64 MiB /dev/shm shared with other programs) runs
# are written in the repo directly: RocksDB closing a run on a full file system waits for
# space for ever, a hung partition.
STAGE_MIN_FREE = 32 * 1024 * 1024


def new_stage(root: Path | None = None, min_free: int | None = None) -> Path | None:
    """A fresh folder for this process's runs under `root` (default `stage_root()`), or None
    where there is none or it lacks room (`stage_has_room`); folders of dead processes go on
    the way."""
    root = root or stage_root()
    if root is None or not (root.is_dir() and os.access(root, os.W_OK)):
        return None
    for old in root.glob(f"{_STAGE_PREFIX}*"):
        found = re.match(rf"{_STAGE_PREFIX}(\d+)-", old.name)
        if found and not process_alive(int(found.group(1))):
            shutil.rmtree(old, ignore_errors=True)
    if not stage_has_room(root, min_free):
        return None
    return Path(tempfile.mkdtemp(prefix=f"{_STAGE_PREFIX}{os.getpid()}-", dir=root))


def stage_root() -> Path | None:
    """Where new runs are staged: `ALIGN_TRACK_AIM_STAGE` (a folder, created if missing, e.g.
    a local disk's when /dev/shm is small; `off`: runs are written in the repo directly),
    else `STAGE_ROOT`."""
    value = os.environ.get(STAGE_ENV, "").strip()
    if not value:
        return STAGE_ROOT
    if value.lower() == "off":
        return None
    root = Path(value)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"{STAGE_ENV}={value}: cannot create the stage folder: {error}") from None
    return root


def stage_has_room(stage: Path, min_free: int | None = None) -> bool:
    """At least `min_free` bytes (default `STAGE_MIN_FREE`) free where `stage` lives."""
    return shutil.disk_usage(stage).free >= (STAGE_MIN_FREE if min_free is None else min_free)


@dataclass(frozen=True)
class RunRecords:
    """A run's meta records as the index takes them (Aim's `finalize`: the run's key range
    is cleared, then every record of its meta database copied), read while it was open."""
    prefix: bytes
    items: list[tuple[bytes, bytes]]


def publish_run(repo: Repo, run_hash: str, stage: Path) -> RunRecords | None:
    """Close a closed staged run's databases and move them into the repo: copied beside the
    repo's folders first, then renamed into place, so Aim never sees half a run. Returns
    the run's meta records, so that `index_runs` need not open the run again."""
    incoming = Path(repo.path) / "align-track-incoming"
    records = None
    for name in ("meta", "seqs"):
        container = repo.container_pool.pop(ContainerConfig(name, run_hash, False), None)
        if container is not None:
            if name == "meta":
                records = _records(container, run_hash)
            container.close()  # flushes the memtable into the files copied next
        built = stage / name / "chunks" / run_hash
        if not built.is_dir():
            continue
        copy = incoming / f"{name}-{run_hash}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(built, copy)
        chunks = Path(repo.path) / name / "chunks"
        chunks.mkdir(parents=True, exist_ok=True)
        os.rename(copy, chunks / run_hash)
        shutil.rmtree(built)
        (stage / name / "progress" / run_hash).unlink(missing_ok=True)
    return records


def discard_run(repo: Repo, run_hash: str, stage: Path) -> None:
    """Close and remove a staged run cut short (never moved into the repo)."""
    for name in ("meta", "seqs"):
        container = repo.container_pool.pop(ContainerConfig(name, run_hash, False), None)
        if container is not None:
            container.close()
        shutil.rmtree(stage / name / "chunks" / run_hash, ignore_errors=True)


def remove_stage(stage: Path) -> None:
    """Close every database still open in `stage`, then remove it. Aim closes what is left
    open at exit, and an exception there (the files are gone) makes its exit handler wait
    for ever: a worker process that never ends."""
    for container in list(_OPEN_IN_STAGES):
        if container.path.is_relative_to(stage):
            container.close()
    shutil.rmtree(stage, ignore_errors=True)


def _records(container: RocksContainer, run_hash: str) -> RunRecords:
    """What `index_runs` gets from reopening the run, as in `_finalize`."""
    view = container.tree().subtree("meta").subtree("chunks").subtree(run_hash)
    items = list(container.items())
    for _key, value in items:
        if isinstance(value, BLOB):  # loaded lazily from the database: load it while open
            value.load()
    return RunRecords(view.container.absolute_path(), items)


class _NewRunLock(RunLock):
    """The lock of a run that no other process can know of yet."""

    def lock(self, force: bool = False) -> None:
        return None

    def release(self, force: bool = False) -> None:
        return None


def _new_run_lock(_run_hash: str, timeout: int = 10) -> RunLock:
    return _NewRunLock()


def _staged_containers(repo: Repo, stage: Path):
    """`Repo.request_container` that opens a new run's writable databases under `stage`."""
    original = type(repo).request_container

    def request_container(name, sub=None, *, read_only, skip_read_optimization=False):
        if sub is None or read_only or (Path(repo.path) / name / "chunks" / sub).exists():
            return original(repo, name, sub, read_only=read_only,
                            skip_read_optimization=skip_read_optimization)
        config = ContainerConfig(name, sub, read_only)
        container = repo.container_pool.get(config)
        if container is None:
            container = _StagedContainer(str(stage / name / "chunks" / sub))
            repo.container_pool[config] = container
            _OPEN_IN_STAGES.add(container)
        return container

    return request_container


_OPEN_IN_STAGES: weakref.WeakSet = weakref.WeakSet()  # staged databases of this process


class _StagedContainer(RocksContainer):
    """Aim's writable container, opened lighter: a small MANIFEST preallocation, and one
    thread to open its table files (a new database has none, see `_OneOpenerOptions`)."""

    @property
    def db(self):
        if self._db is not None:  # read on every write: swap the options class only to open
            return self._db
        self._db_opts["manifest_preallocation_size"] = _SMALL_MANIFEST
        with _options_class(_OneOpenerOptions):
            return RocksContainer.db.fget(self)


# RocksDB opens a database's table files with `max_file_opening_threads` threads (16 by
# default), started and joined on every open, even of a new database with no table file: 30
# threads per run, 40% of the time spent opening a run's two databases, and half again as much
# with two writer processes, whose threads compete for the same cores. aimrocks has no setting
# for it; RocksDB's C API (in aimrocks' own librocksdb) sets it on the options' native object.
class _OneOpenerOptions(aimrocks.Options):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        set_file_opening_threads(self, 1)


_OPTIONS_SWAP = threading.Lock()


@contextmanager
def _options_class(cls: type) -> Iterator[None]:
    """`RocksContainer.db` builds `aimrocks.Options(...)`: make that `cls` meanwhile."""
    with _OPTIONS_SWAP:
        saved, aimrocks.Options = aimrocks.Options, cls
        try:
            yield
        finally:
            aimrocks.Options = saved


def set_file_opening_threads(options: aimrocks.Options, threads: int) -> bool:
    """Set `max_file_opening_threads` on `options`; False (left as it was, said once in the
    log) if its native object or RocksDB's library cannot be found: slower, never broken."""
    try:
        address = _native_options(options)
    except (OSError, AttributeError) as error:  # no library, or a symbol missing from it
        _say_once(f"RocksDB's C API is not usable ({error})")
        return False
    if address is None:
        _say_once("the native options of an aimrocks.Options were not found")
        return False
    _rocksdb().rocksdb_options_set_max_file_opening_threads(address, threads)
    return True


@functools.cache
def _say_once(why: str) -> None:
    logging.getLogger(__name__).warning(
        "Aim runs open with RocksDB's default file-opening threads: %s", why)


def _native_options(options: aimrocks.Options) -> int | None:
    """The address of the `rocksdb::Options` an `aimrocks.Options` holds. The object keeps it
    twice: as `opts`, and as `copts`, its ColumnFamilyOptions base (`opts` plus the size of
    DBOptions). The one such pair among the object's words is taken only once the C API
    reads back values set through aimrocks' own `max_open_files`."""
    size = type(options).__basicsize__ // ctypes.sizeof(ctypes.c_void_p)
    words = (ctypes.c_void_p * size).from_address(id(options))
    values = [w for w in words[2:] if w]  # after the reference count and the type
    found = [p for p in values if p > 0xFFFF and any(0 < q - p < 4096 for q in values)]
    if len(found) != 1:
        return None
    saved = options.max_open_files
    try:
        for probe in (12345, 54321):
            options.max_open_files = probe
            if _rocksdb().rocksdb_options_get_max_open_files(found[0]) != probe:
                return None
    finally:
        options.max_open_files = saved
    return found[0]


@functools.cache
def _rocksdb() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(Path(aimrocks.__file__).parent / "librocksdb.so"))
    for name in ("get_max_open_files", "get_max_file_opening_threads"):
        getattr(lib, f"rocksdb_options_{name}").argtypes = [ctypes.c_void_p]
    lib.rocksdb_options_set_max_file_opening_threads.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def set_archived(repo: Repo, run_hash: str) -> None:
    """Set Aim's own `archived` flag on an existing run (reopened for writing, no tracking)."""
    run = _open_run(run_hash=run_hash, repo=repo)
    try:
        run.archived = True
    finally:
        run.close()


def _open_run(**kwargs) -> Run:
    """A writable `Run` without Aim's status reporting. Aim starts two threads per run and
    keeps two check-in files per run in one folder (`check_ins/`), which it lists with a glob
    each time a run opens or reports: the cost of a run grew from 29 to 75 ms as a repo went
    from 0 to 7,000 runs. What they watch for, a run that never closes, the writer's manifest
    repairs; the run still gets its end time on close, so Aim shows it finished."""
    with _STATUS_PATCH:
        saved = {name: getattr(aim_run_module, name) for name in _STATUS_REPORTERS}
        for name in _STATUS_REPORTERS:
            setattr(aim_run_module, name, _no_reporter)
        try:
            return Run(system_tracking_interval=None, capture_terminal_logs=False,
                       log_system_params=False, **kwargs)
        finally:
            for name, value in saved.items():
                setattr(aim_run_module, name, value)


_STATUS_REPORTERS = ("RunStatusReporter", "ScheduledStatusReporter")  # built in `Run.__init__`
_STATUS_PATCH = threading.Lock()


def _no_reporter(*_args, **_kwargs) -> None:
    return None


def run_exists(repo: Repo, run_hash: str) -> bool:
    return (Path(repo.path) / "meta" / "chunks" / run_hash).is_dir()


def run_recorded(repo: Repo, run_hash: str) -> bool:
    """The run has data or a row in the run table (a staged run cut short has only the row)."""
    return run_exists(repo, run_hash) or repo.structured_db.find_run(run_hash) is not None


def rows_created_since(repo: Repo, since: float) -> list[str]:
    """Runs whose run-table row was created at or after `since` (epoch seconds)."""
    return [r.hash for r in repo.structured_db.runs()
            if r.created_at.replace(tzinfo=UTC).timestamp() >= since]


def run_created_at(repo: Repo, run_hash: str) -> float:
    """When the run's folder appeared (its mtime: Aim writes it only while the run is open)."""
    return (Path(repo.path) / "meta" / "chunks" / run_hash).stat().st_mtime


def read_params(repo: Repo, run_hash: str, names: Iterable[str]) -> dict[str, object]:
    """Some params of a run as it is stored (None where missing), read the way Aim's own
    indexer reads a run (its meta database, read-only): about 2 ms a run."""
    tree = (repo.request_tree("meta", run_hash, read_only=True, skip_read_optimization=True)
            .subtree("meta").subtree("chunks").subtree(run_hash).subtree("attrs"))
    try:
        return {name: tree.get(name) for name in names}
    finally:
        repo.container_pool.pop(ContainerConfig("meta", run_hash, True), None)


def archived_runs(repo: Repo) -> set[str]:
    """The runs archived in Aim (the run table's flag, as `Run.archived` reads it)."""
    return {r.hash for r in repo.structured_db.runs() if r.archived}


def all_run_hashes(repo: Repo) -> list[str]:
    chunks = Path(repo.path) / "meta" / "chunks"
    return sorted(p.name for p in chunks.iterdir() if p.is_dir()) if chunks.is_dir() else []


def outdated_runs(repo: Repo) -> list[str]:
    """Runs whose index entry is missing or older than their data (what `aim up` indexes)."""
    manager = RepoIndexManager.get_index_manager(repo)
    index = repo.request_tree("meta", read_only=True)
    try:
        return [h for h in all_run_hashes(repo)
                if manager._get_run_checksum(h) != index.get(("index_cache", h))]
    finally:
        repo.container_pool.clear()


def index_runs(repo: Repo, run_hashes: Iterable[str], wait_seconds: float = 30.0,
               records: Mapping[str, RunRecords] | None = None) -> int:
    """Add runs to the repo index, opening the index once; returns how many were indexed.
    A run with `records` (from `publish_run`) is not opened again: that was half the cost.

    Raises IndexBusy if the index stays locked by another process for `wait_seconds`.
    """
    hashes = list(run_hashes)
    if not hashes:
        return 0
    manager = RepoIndexManager.get_index_manager(repo)
    index = _open_index(repo, wait_seconds)
    try:
        target = index.container
        batch = target.batch()  # one write for every run with records, not one per record
        for run_hash in hashes:
            found = (records or {}).get(run_hash)
            if found is None:
                _finalize(repo, run_hash, index)
            else:
                target.delete_range(found.prefix, found.prefix + b"\xff", store_batch=batch)
                for key, value in found.items:
                    target.set(key, value, store_batch=batch)
        target.commit(batch)
        fault_point("aim.index_records_written")
        for run_hash in hashes:  # after the runs' records: a kill between leaves them outdated
            index["index_cache", run_hash] = manager._get_run_checksum(run_hash)
    finally:
        repo.container_pool.clear()  # release the index for `aim up`
    return len(hashes)


def _finalize(repo: Repo, run_hash: str, index) -> None:
    """Aim's own way (`RepoIndexManager.index`): reopen the run, copy it into the index."""
    tree = (repo.request_tree("meta", run_hash, read_only=True, skip_read_optimization=True)
            .subtree("meta").subtree("chunks").subtree(run_hash))
    tree.finalize(index=index)


def rebuild_index(repo: Repo) -> int:
    """Aim's own full rebuild (slow: superlinear in the number of runs)."""
    count = len(all_run_hashes(repo))
    repo._recreate_index()
    repo.container_pool.clear()
    return count


def _open_index(repo: Repo, wait_seconds: float):
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return repo._get_index_tree("meta", 0).view(())
        except INDEX_BUSY as exc:
            repo.container_pool.clear()
            if time.monotonic() >= deadline:
                raise IndexBusy(
                    f"the index of Aim repo {repo.path} is held by another process (is `aim up` "
                    "indexing?); its indexer will add the new runs, or re-run aim-reindex") from exc
            time.sleep(0.5)


# Aim 3.29 has no stored project name: `Project.__init__` sets "My awesome project", read by
# the UI from /api/projects/. `aim-ui` names it in its server process instead.
PROJECT_NAME = "align-track-pipeline"


def name_project(name: str) -> None:
    """Make the UI's project (`aim.web.api.projects.project.Project`) carry `name`."""
    from aim.web.api.projects.project import Project

    original = Project.__init__
    if getattr(original, "align_track_name", None) == name:
        return

    def init(self) -> None:
        original(self)
        self.name = name

    init.align_track_name = name  # type: ignore[attr-defined]
    Project.__init__ = init  # type: ignore[method-assign]


def run_aim_up(argv: list[str], app: str) -> None:
    """`aim up ARGV`, its uvicorn server loading the ASGI app `app` ("module:attr") instead of
    Aim's own `aim.web.run:app` (Aim starts the server as a subprocess from that string)."""
    from aim.cli.up import commands

    build = commands.build_uvicorn_command
    commands.build_uvicorn_command = lambda _app, **options: build(app, **options)
    commands.up.main(args=argv, prog_name="aim up")
