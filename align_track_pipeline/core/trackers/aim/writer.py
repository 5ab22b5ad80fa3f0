"""Idempotent upsert of one flat Aim run per scene, with a key -> run-hash manifest.

Aim 3.29 cannot create a run under a chosen hash, so a small SQLite manifest beside the repo
maps each scene key (`<partition>::<scene index>`) to its run hash and content hash, and is read
once per partition. Unchanged scenes are skipped, changed ones replaced, removed ones deleted. A
run is entered in the manifest as pending right after Aim creates it and marked complete only
after it is closed, so a kill mid-way leaves pending rows that the next upsert deletes and
redoes. Before Aim creates a run, a placeholder row records the time: a kill in the instant
between Aim creating the run's folder and the manifest learning its hash leaves a placeholder,
and the next upsert deletes the unknown runs written after it (found by their folder's mtime
or their run-table row's `updated_at`: a run's `created_at` is its date in the data).

The manifest is checked against the repo when a writer opens (a folder listing, no run
opened): deleted, or disagreeing (complete runs it lists are gone, runs in the repo it does not
list), it is rebuilt from the runs, each of which carries its scene key and content hash. Runs
are listed as unindexed from the moment they are complete until the index took them, so a kill
in between is indexed by the next upsert of their partition.

New runs are built on a memory file system when there is one (`staging.new_stage`) and moved
into the repo whole, their run-table rows inserted just before (one insert a run, instead of
Aim's query and four flushes), one sync of the file system per partition before the manifest
calls them complete; a run cut short there leaves nothing in the repo, or, killed between
its row and its data, the row alone, which the repair deletes.

Many processes write one repo at once (each run is its own chunk, so creating runs scales with
processes), with three locks beside the repo, always taken in this order:
- a lock per partition (one of 64 stripes): one writer of a partition at a time, so a second
  writer of the same partition finds it converged;
- the repo lock, shared by every upsert; taken exclusively only to repair a placeholder, so
  that no live writer is between creating a run and recording its hash while unknown runs are
  deleted (a gate lock keeps new sharers from starving that exclusive holder);
- the index lock: Aim's index (a RocksDB that one process at a time may open for writing, also
  opened by `Repo.delete_runs`) is written by one process at a time, for milliseconds per
  partition.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from aim import Text

from align_track_pipeline.core.faults import fault_point
from align_track_pipeline.core.locking import file_lock
from align_track_pipeline.core.trackers.aim import indexing, lean_runs, staging, storage
from align_track_pipeline.core.trackers.aim.manifest import CREATING, Manifest, manifest_path
from align_track_pipeline.core.trackers.aim.plan import SceneRun
from align_track_pipeline.core.trackers.times import epoch_span
from align_track_pipeline.core.versions import scene_key


@dataclass(frozen=True)
class AimResult:
    created: list[str]
    unchanged: int
    deleted: int
    indexed: int


LOCK = "align-track.lock"
GATE = "align-track.gate.lock"
INDEX_LOCK = "align-track.index.lock"
PARTITION_LOCKS = "align-track-locks"
STRIPES = 64
CONTENT_PARAM = "align_track_content_hash"  # on each run: what `_rebuild` reads back


@contextmanager
def repo_lock(repo_path: Path, shared: bool = False) -> Iterator[None]:
    """The repo lock across processes (a `flock` beside the repo): `shared` for upserts, which
    run side by side, exclusive for creating the repo and repairing a placeholder. Keep the
    repo on a local disk, as Aim itself requires."""
    with ExitStack() as held:
        with file_lock(Path(repo_path) / GATE):  # queued behind a waiting exclusive holder
            held.enter_context(file_lock(Path(repo_path) / LOCK, shared))
        yield


def partition_lock(repo_path: Path, partition: str) -> AbstractContextManager[None]:
    """One writer of a partition at a time (a stripe of 64 lock files: bounded, and two
    partitions sharing a stripe only wait for each other)."""
    stripe = int.from_bytes(hashlib.blake2b(partition.encode(), digest_size=4).digest())
    return file_lock(Path(repo_path) / PARTITION_LOCKS / f"{stripe % STRIPES}.lock")


def index_lock(repo_path: Path) -> AbstractContextManager[None]:
    """One writer of Aim's index at a time among align-track's processes (`aim up`'s own
    indexer is waited for by `index_runs`)."""
    return file_lock(Path(repo_path) / INDEX_LOCK)


class AimWriter:
    def __init__(self, repo_path: Path, legacy_manifest: Path | None = None):
        self.path = Path(repo_path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, staging.RunRecords] = {}  # staged runs not indexed yet
        # A repo created by two writers at once comes out broken: exclusive until it exists.
        made = storage.repo_exists(self.path) and manifest_path(self.path).exists()
        with repo_lock(self.path, shared=made):
            self.repo = storage.open_repo(self.path)
            _adopt(legacy_manifest, manifest_path(self.path))
            self.manifest = Manifest(manifest_path(self.path))
            agrees = made and self._agrees()
        if not agrees:  # exclusive: no writer is between creating a run and recording it
            with repo_lock(self.path):
                if not self._agrees() and not self._note_others():
                    self._rebuild()
        self._index(self.manifest.unindexed_orphans())  # left by a kill: see `_index`
        self.stage = staging.new_stage()

    def upsert(self, partition: str, runs: list[SceneRun]) -> AimResult:
        with partition_lock(self.path, partition):
            with repo_lock(self.path, shared=True):
                known = self.manifest.rows(partition)
                if not _placeholders(known):
                    return self._upsert(partition, runs, known)
            with repo_lock(self.path):  # no live writer is between creating a run and its row
                return self._upsert(partition, runs, self.manifest.rows(partition))

    def _upsert(self, partition: str, runs: list[SceneRun],
                known: dict[str, tuple[str, str, bool]]) -> AimResult:
        wanted = {r.key: r for r in runs}
        keep = {k for k, (run_hash, content, done) in known.items()
                if k in wanted and done and content == wanted[k].content_hash
                and storage.run_exists(self.repo, run_hash)}
        drop = [k for k in known if k not in keep]
        since = _placeholders(known)
        if since:
            self._delete(self._unknown_runs_since(min(since)))
        self._delete([known[k][0] for k in drop])  # old runs go first: no duplicates, ever
        self.manifest.forget(drop)
        staged = self.stage is not None
        now = int(time.time() * 1000)  # one write time: what runs without a start count from
        created = [self._write(partition, r, now) for r in runs if r.key not in keep]
        if staged and created:
            sync_file_system(self.path)  # the moved runs are on disk before they count
        self.manifest.complete([r.key for r in runs if r.key not in keep])
        fault_point("aim.runs_complete")
        unindexed = set(self.manifest.unindexed())  # a kill before the index took them
        indexed = self._index([*created, *(known[k][0] for k in keep if known[k][0] in unindexed)])
        fault_point("aim.partition_written")
        return AimResult(created, len(keep), len(drop), indexed)

    def delete_partition(self, partition: str) -> int:
        with partition_lock(self.path, partition), repo_lock(self.path, shared=True):
            known = self.manifest.rows(partition)
            self._delete([h for h, _, _ in known.values()])
            self.manifest.forget(list(known))
            return len(known)

    def archive_partition(self, partition: str) -> int:
        """Mark the partition's runs archived (Aim's own flag: hidden from the default views,
        kept, restorable in the UI) and forget them, so a folder put back gets new runs."""
        with partition_lock(self.path, partition), repo_lock(self.path, shared=True):
            known = self.manifest.rows(partition)
            hashes = [h for h, _, _ in known.values()
                      if not h.startswith(CREATING) and storage.run_exists(self.repo, h)]
            self.manifest.to_index(hashes)
            for run_hash in hashes:
                lean_runs.set_archived(self.repo, run_hash)
            self._index(hashes)
            self.manifest.add_others(hashes)  # kept in the repo, no longer a scene's run
            self.manifest.forget(list(known))
            return len(hashes)

    def close(self) -> None:
        self.manifest.close()
        self.repo.container_pool.clear()
        if self.stage is not None:
            staging.remove_stage(self.stage)

    def _check_stage(self) -> None:
        """Stop staging once the memory file system runs short (other writers and programs
        share it; checked before each run, so N writers add at most N runs to it past the
        check): this run and the later ones are written in the repo directly."""
        if self.stage is not None and not staging.stage_has_room(self.stage):
            staging.remove_stage(self.stage)
            self.stage = None

    def _unknown_runs_since(self, since: float) -> list[str]:
        """Runs written after a placeholder that the manifest never learned about: their
        folders, or (a staged run) only their run-table rows."""
        known = self.manifest.all_hashes()
        folders = [h for h in storage.all_run_hashes(self.repo)
                   if storage.run_created_at(self.repo, h) >= since - 1]
        rows = [h for h in storage.rows_written_since(self.repo, since - 1)
                if not storage.run_exists(self.repo, h)]
        return [h for h in dict.fromkeys(folders + rows) if h not in known]

    def _write(self, partition: str, spec: SceneRun, now_ms: int) -> str:
        """One scene's run, dated and ended as the data says (`trackers/times.py`). Written in
        the repo, it is announced first (a placeholder: a kill before the manifest learns its
        hash leaves a run no row names, which the next upsert finds by its time); staged,
        nothing of it reaches the repo before its hash is in the manifest."""
        self._check_stage()
        if self.stage is None:
            self.manifest.placeholder(partition, spec.key, spec.content_hash)
        start, end = epoch_span(spec.base_ms, spec.span, now_ms)
        run = lean_runs.lean_run(self.repo, spec.experiment, self.stage, created=start / 1000,
                                 name=spec.name)
        try:
            fault_point("aim.run_created")
            self.manifest.pending(partition, spec.key, run.hash, spec.content_hash)
            for key, value in spec.params.items():
                run[key] = value
            for name, value in spec.metrics.items():
                run.track(value, name=name)
            for name, text in spec.texts.items():
                run.track(Text(text), name=name)
            run[CONTENT_PARAM] = spec.content_hash  # last: the run is whole (`_rebuild`)
        except BaseException:
            run.close()
            if self.stage is not None:  # cut short: nothing of it reaches the repo
                staging.discard_run(self.repo, run.hash, self.stage)
            raise
        lean_runs.close_at(run, end / 1000)  # unclosed runs leak file handles
        if self.stage is not None:
            records = staging.publish_run(self.repo, run.hash, self.stage)
            if records is not None:
                self._records[run.hash] = records
        return run.hash

    def _delete(self, run_hashes: list[str]) -> None:
        present = [h for h in run_hashes
                   if not h.startswith(CREATING) and storage.run_recorded(self.repo, h)]
        if present:
            with index_lock(self.path):  # deleting a run opens the index
                ok, remaining = self.repo.delete_runs(present)
            if not ok:
                raise RuntimeError(f"Aim could not delete runs {remaining}")

    def _index(self, run_hashes: list[str]) -> int:
        """Index these runs (those still in the repo) and strike them off the manifest's
        runs to index: a kill before that leaves them there, and the next upsert of their
        partition (or, for runs no scene holds, the next writer) indexes them."""
        records, self._records = self._records, {}
        if not run_hashes:
            return 0
        present = [h for h in run_hashes if storage.run_exists(self.repo, h)]
        try:
            with index_lock(self.path):
                count = indexing.index_runs(self.repo, present, records=records)
        except indexing.IndexBusy:
            return 0  # `aim up` holds the index: its own indexer picks the runs up
        self.manifest.indexed(run_hashes)
        return count

    def _agrees(self) -> bool:
        """Whether the manifest tells the repo's story (a folder listing and two queries,
        no run opened): every complete run it lists is in the repo, and every run in the
        repo is listed (bar those a killed writer's placeholder accounts for, which the
        repair of its partition deletes)."""
        unlisted = self._unlisted()
        if unlisted is None:
            return False
        return not unlisted or any(h.startswith(CREATING) for h in self.manifest.all_hashes())

    def _unlisted(self) -> set[str] | None:
        """The repo's runs the manifest does not list; None when a complete run it lists is
        gone from the repo."""
        folders = set(storage.all_run_hashes(self.repo))
        if not self.manifest.complete_hashes() <= folders:
            return None
        return folders - self.manifest.all_hashes()

    def _note_others(self) -> bool:
        """When the only runs the manifest does not list are not scene runs (someone's own
        run logged into the repo): note them as others, as a rebuild would, reading only
        those runs instead of every run of the repo. False: a rebuild is needed."""
        unknown = self._unlisted()
        if unknown is None:
            return False  # runs of ours are gone: the rebuild tells which scenes remain
        if any(_scene_params(self.repo, h) is not None for h in unknown):
            return False  # a scene run the manifest lost: the rebuild takes it back
        self.manifest.add_others(unknown)
        return True

    def _rebuild(self) -> None:
        """Make the manifest again from the runs themselves (deleted, or disagreeing with the
        repo): each scene run carries its partition, scene index and, once whole, its
        content hash. One row per scene (its newest whole run); the scene's other runs are
        deleted, so a scene never has two; archived runs and runs not ours are noted as
        others. The new generation makes every partition stale once (`AimTracker`)."""
        archived = storage.archived_runs(self.repo)
        scenes: dict[str, list[tuple[tuple[bool, float], tuple]]] = {}
        others = []
        for run_hash in storage.all_run_hashes(self.repo):
            found = None if run_hash in archived else _scene_params(self.repo, run_hash)
            if found is None:
                others.append(run_hash)
                continue
            partition, content = str(found["partition_key"]), found[CONTENT_PARAM]
            key = scene_key(partition, int(found["scene_index"]))
            whole = isinstance(content, str)
            row = (partition, key, run_hash, content if whole else "", whole)
            rank = (whole, storage.run_created_at(self.repo, run_hash))
            scenes.setdefault(key, []).append((rank, row))
        rows = [max(found)[1] for found in scenes.values()]
        extra = [row[2] for found in scenes.values() for _, row in sorted(found)[:-1]]
        self.manifest.replace(rows, others)
        self._delete(extra)
        self._index(indexing.outdated_runs(self.repo))


def _scene_params(repo, run_hash: str) -> dict | None:
    """A scene run's partition, scene index and content hash as stored; None for any other
    run (no partition or scene index: not written by this writer)."""
    found = storage.read_params(repo, run_hash, ("partition_key", "scene_index", CONTENT_PARAM))
    if None in (found["partition_key"], found["scene_index"]):
        return None
    return found


def sync_file_system(path: Path) -> None:
    """Write what the file system holding `path` has cached to disk: one `syncfs` for a
    partition's runs instead of one fsync per file, through `sync -f` (GNU coreutils' and
    BusyBox's; about a millisecond; the package makes no foreign calls); where that is missing
    or fails, `os.sync()`, every file system."""
    command = shutil.which("sync") if sys.platform.startswith("linux") else None
    if command is not None:
        done = subprocess.run([command, "-f", "--", os.fspath(path)], check=False,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        if done.returncode == 0:
            return
    os.sync()


def _placeholders(known: dict[str, tuple[str, str, bool]]) -> list[float]:
    """When the placeholders among a partition's rows were written (a kill left them)."""
    return [float(h[len(CREATING):]) for h, _, _ in known.values() if h.startswith(CREATING)]


def _adopt(legacy: Path | None, manifest: Path) -> None:
    """Earlier versions kept the manifest in the data dir: take it over once, so the runs it
    lists are found (not written again). Rows naming runs this repo does not hold are
    harmless: those scenes are rewritten and the rows dropped."""
    if legacy is not None and legacy.exists() and not manifest.exists():
        with closing(sqlite3.connect(legacy)) as old, closing(sqlite3.connect(manifest)) as new:
            old.backup(new)  # SQLite's own copy: with what its WAL holds, its locks kept
