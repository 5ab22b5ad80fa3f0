"""Building new Aim runs outside the repo and moving them in whole.

Aim builds each new run as two RocksDB databases (`meta/chunks/<hash>` and
`seqs/chunks/<hash>`): some 70 files created and deleted and 26 fsyncs per run. On a disk where
a sync costs a journal commit that was most of a run's time, and two writer processes queued
behind each other's syncs. Built on a memory file system and moved in whole, a run costs a few
file copies; the writer syncs the file system once per partition instead. Each function wraps
one Aim internal (tests/core/test_aim_compat.py pins it); on an Aim version the writer was not
verified on there is no stage and runs are written in the repo by Aim itself. Aim's internals
are imported where they are used, so that this module imports on any Aim.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aim import Repo

from align_track_pipeline.core.faults import fault_point
from align_track_pipeline.core.scratch import owner_tag, sweep_dead
from align_track_pipeline.core.settings import current
from align_track_pipeline.core.trackers.aim.storage import RunRow, insert_run_row
from align_track_pipeline.core.verified import aim_internals

if TYPE_CHECKING:
    from aim.storage.rockscontainer import RocksContainer

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
    where there is none, it lacks room (`stage_has_room`) or Aim is not a verified version;
    folders of dead processes go on the way."""
    root = root or stage_root()
    if root is None or not aim_internals() or not (root.is_dir() and os.access(root, os.W_OK)):
        return None
    sweep_dead(root, _STAGE_PREFIX)
    if not stage_has_room(root, min_free):
        return None
    return Path(tempfile.mkdtemp(prefix=f"{_STAGE_PREFIX}{owner_tag()}-", dir=root))


def stage_root() -> Path | None:
    """Where new runs are staged: `ALIGN_TRACK_AIM_STAGE` (a folder, created if missing, e.g.
    a local disk's when /dev/shm is small; `off`: runs are written in the repo directly),
    else `STAGE_ROOT`."""
    value = current().get(STAGE_ENV) or ""
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


@contextmanager
def staged(repo: Repo, stage: Path, created: datetime | None = None) -> Iterator[None]:
    """While `Run()` opens them: a new run's databases under `stage`, no lock file, and its
    run-table row held in memory until `publish_run` (dated `created`, else when it is
    inserted). A new run's hash is known to no other process, so its lock guards nothing:
    Aim's lock file, created and removed in the repo's shared `locks` folder, was 4% of two
    writers' time. Wraps `Repo.request_container`/`request_run_lock`/`request_props`."""
    repo.request_container = _staged_containers(repo, stage)
    repo.request_run_lock = _new_run_lock
    repo.request_props = functools.partial(_row_later, stage=stage, created_at=created)
    held = set(_ROWS)
    try:
        yield
    except BaseException:
        for run_hash in set(_ROWS) - held:  # `Run()` failed: no run to publish
            del _ROWS[run_hash]
        raise
    finally:
        del repo.request_container, repo.request_run_lock, repo.request_props


def _row_later(hash_: str, read_only: bool, stage: Path,
               created_at: datetime | None = None) -> RunRow:
    """`Repo.request_props` for a staged run: its row, in memory until it is published."""
    assert not read_only, "a staged run is opened for writing"
    row = RunRow(hash_, created_at)
    _ROWS[hash_] = (stage, row)
    return row


# Staged runs' rows (and their stage), by hash, until published or discarded, or their
# stage removed.
_ROWS: dict[str, tuple[Path, RunRow]] = {}


@dataclass(frozen=True)
class RunRecords:
    """A run's meta records as the index takes them (Aim's `finalize`: the run's key range
    is cleared, then every record of its meta database copied), read while it was open."""
    prefix: bytes
    items: list[tuple[bytes, bytes]]


def publish_run(repo: Repo, run_hash: str, stage: Path) -> RunRecords | None:
    """Close a closed staged run's databases, copy them beside the repo's folders, insert
    the run's row, then rename the copies into place: Aim never sees half a run, nor a run
    without its row. Returns the run's meta records, so that `index_runs` need not open the
    run again."""
    from aim.sdk.repo import ContainerConfig

    incoming = Path(repo.path) / "align-track-incoming"
    records = None
    copies = []
    for name in ("meta", "seqs"):
        container = repo.container_pool.pop(ContainerConfig(name, run_hash, False), None)
        if container is not None:
            if name == "meta":
                records = _records(container, run_hash)
            container.close()  # flushes the memtable into the files copied next
        built = stage / name / "chunks" / run_hash
        if built.is_dir():
            copy = incoming / f"{name}-{run_hash}"
            shutil.rmtree(copy, ignore_errors=True)
            _copy_database(built, copy)
            copies.append((name, copy, built))
    held = _ROWS.get(run_hash)
    if held is not None:
        insert_run_row(repo, held[1])
        del _ROWS[run_hash]
        fault_point("aim.run_row_inserted")
    for name, copy, built in copies:
        chunks = Path(repo.path) / name / "chunks"
        chunks.mkdir(parents=True, exist_ok=True)
        os.rename(copy, chunks / run_hash)
        shutil.rmtree(built)
        (stage / name / "progress" / run_hash).unlink(missing_ok=True)
    return records


def _copy_database(built: Path, copy: Path) -> None:
    """Copy what a closed RocksDB database is opened from (`CURRENT`, its `MANIFEST`,
    tables, a write-ahead log that holds anything), without the files RocksDB makes again
    when it opens one for writing and does without when it opens one to read: its info
    `LOG`s, the `LOCK`, the `OPTIONS` it last opened with, an empty write-ahead log, the
    `IDENTITY` (a database id for backups and replication, which Aim never asks for). A
    third of the files: creating a file on the repo's disk is most of moving a run in."""
    copy.mkdir(parents=True)
    for entry in os.scandir(built):
        if entry.name in _NOT_READ or entry.name.startswith(("LOG.old.", "OPTIONS-")):
            continue
        if entry.name.endswith(".log") and entry.stat().st_size == 0:
            continue
        shutil.copyfile(entry.path, copy / entry.name)


_NOT_READ = frozenset({"LOG", "LOCK", "IDENTITY"})


def discard_run(repo: Repo, run_hash: str, stage: Path) -> None:
    """Close and remove a staged run cut short (never moved into the repo, no row)."""
    from aim.sdk.repo import ContainerConfig

    _ROWS.pop(run_hash, None)
    for name in ("meta", "seqs"):
        container = repo.container_pool.pop(ContainerConfig(name, run_hash, False), None)
        if container is not None:
            container.close()
        shutil.rmtree(stage / name / "chunks" / run_hash, ignore_errors=True)


def remove_stage(stage: Path) -> None:
    """Close every database still open in `stage`, forget the rows of its runs, then remove
    it. Aim closes what is left open at exit, and an exception there (the files are gone)
    makes its exit handler wait for ever: a worker process that never ends."""
    for container in list(_OPEN_IN_STAGES):
        if container.path.is_relative_to(stage):
            container.close()
    for run_hash in [h for h, (where, _row) in _ROWS.items() if where == stage]:
        del _ROWS[run_hash]
    shutil.rmtree(stage, ignore_errors=True)


def _records(container: RocksContainer, run_hash: str) -> RunRecords:
    """What `index_runs` gets from reopening the run, as in `_finalize`."""
    from aim.storage.utils import BLOB

    view = container.tree().subtree("meta").subtree("chunks").subtree(run_hash)
    items = list(container.items())
    for _key, value in items:
        if isinstance(value, BLOB):  # loaded lazily from the database: load it while open
            value.load()
    return RunRecords(view.container.absolute_path(), items)


class _NewRunLock:
    """The lock of a run that no other process can know of yet (Aim's `RunLock` protocol)."""

    def lock(self, force: bool = False) -> None:
        return None

    def release(self, force: bool = False) -> None:
        return None


def _new_run_lock(_run_hash: str, timeout: int = 10) -> _NewRunLock:
    return _NewRunLock()


def _staged_containers(repo: Repo, stage: Path):
    """`Repo.request_container` that opens a new run's writable databases under `stage`."""
    from aim.sdk.repo import ContainerConfig

    original = type(repo).request_container
    staged_container = _staged_container_class()

    def request_container(name, sub=None, *, read_only, skip_read_optimization=False):
        if sub is None or read_only or (Path(repo.path) / name / "chunks" / sub).exists():
            return original(repo, name, sub, read_only=read_only,
                            skip_read_optimization=skip_read_optimization)
        config = ContainerConfig(name, sub, read_only)
        container = repo.container_pool.get(config)
        if container is None:
            container = staged_container(str(stage / name / "chunks" / sub))
            repo.container_pool[config] = container
            _OPEN_IN_STAGES.add(container)
        return container

    return request_container


_OPEN_IN_STAGES: weakref.WeakSet = weakref.WeakSet()  # staged databases of this process


# Where a staged database's info log would go: a folder that cannot exist (below a file).
# RocksDB creates the database's own folder but not this one, finds no place for the log and
# opens without it ("No place suitable for logging", its `SanitizeOptions`).
_NO_INFO_LOG = "/dev/null/align-track-no-info-log"


@functools.cache
def _staged_container_class() -> type[RocksContainer]:
    """Aim's writable container with a small MANIFEST preallocation and no info log (in its
    `_db_opts`, the keyword arguments of the `aimrocks.Options` it opens with; it opens in
    `__init__`), and its writes (`commit`, through which Aim writes every batch) kept out of
    RocksDB's write-ahead log: a staged run is only kept once closed, its data flushed to a
    table, so the log guarded nothing and was a sixth of a run's time. The info log (every
    option written out at each open, 0.17 ms of a database's 1.2 ms open) was never copied
    into the repo (`_copy_database`)."""
    from aim.storage.rockscontainer import RocksContainer

    class StagedContainer(RocksContainer):
        @property
        def db(self):
            if self._db is None:
                self._db_opts["manifest_preallocation_size"] = _SMALL_MANIFEST
                self._db_opts["db_log_dir"] = _NO_INFO_LOG
            return RocksContainer.db.fget(self)

        def commit(self, batch) -> None:
            self.db.write(batch, disable_wal=True)

    return StagedContainer
