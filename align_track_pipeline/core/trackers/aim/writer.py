"""Idempotent upsert of one flat Aim run per scene, with a key -> run-hash manifest.

Aim 3.29 cannot create a run under a chosen hash, so a small SQLite manifest beside the repo
maps each scene key (`<partition>::<scene index>`) to its run hash and content hash, and is read
once per partition; a lock file beside it keeps one writer at a time. Unchanged scenes are
skipped, changed ones replaced, removed ones deleted. A run is entered in the manifest as
pending right after Aim creates it and marked complete only after it is closed, so a kill
mid-way leaves pending rows that the next upsert deletes and redoes. Before Aim creates a run,
a placeholder row records the time: a kill in the instant between Aim creating the run's folder
and the manifest learning its hash leaves a placeholder, and the next upsert deletes the
unknown runs created after it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aim import Text

from align_track_pipeline.core.faults import fault_point
from align_track_pipeline.core.locking import file_lock
from align_track_pipeline.core.trackers.aim import compat as aim_compat
from align_track_pipeline.core.trackers.aim.manifest import CREATING, Manifest, manifest_path
from align_track_pipeline.core.trackers.aim.plan import SceneRun


@dataclass(frozen=True)
class AimResult:
    created: list[str]
    unchanged: int
    deleted: int
    indexed: int


LOCK = "align-track.lock"


@contextmanager
def repo_lock(repo_path: Path) -> Iterator[None]:
    """One writer of the repo at a time, across processes (an exclusive `flock` on a file
    beside the repo): a second writer of the same partition then finds it done. Keep the repo
    on a local disk, as Aim itself requires."""
    with file_lock(Path(repo_path) / LOCK):
        yield


class AimWriter:
    def __init__(self, repo_path: Path, legacy_manifest: Path | None = None):
        self.path = Path(repo_path)
        self.path.mkdir(parents=True, exist_ok=True)
        with repo_lock(self.path):  # a repo created by two writers at once comes out broken
            self.repo = aim_compat.open_repo(self.path)
            _adopt(legacy_manifest, manifest_path(self.path))
            self.manifest = Manifest(manifest_path(self.path))

    def upsert(self, partition: str, runs: list[SceneRun]) -> AimResult:
        with repo_lock(self.path):
            return self._upsert(partition, runs)

    def _upsert(self, partition: str, runs: list[SceneRun]) -> AimResult:
        known = self.manifest.rows(partition)
        wanted = {r.key: r for r in runs}
        keep = {k for k, (run_hash, content, done) in known.items()
                if k in wanted and done and content == wanted[k].content_hash
                and aim_compat.run_exists(self.repo, run_hash)}
        drop = [k for k in known if k not in keep]
        since = [float(h[len(CREATING):]) for h, _, _ in known.values() if h.startswith(CREATING)]
        if since:
            self._delete(self._unknown_runs_since(min(since)))
        self._delete([known[k][0] for k in drop])  # old runs go first: no duplicates, ever
        self.manifest.forget(drop)
        created = [self._write(partition, r) for r in runs if r.key not in keep]
        self.manifest.complete([r.key for r in runs if r.key not in keep])
        indexed = self._index(created)
        fault_point("aim.partition_written")
        return AimResult(created, len(keep), len(drop), indexed)

    def delete_partition(self, partition: str) -> int:
        with repo_lock(self.path):
            known = self.manifest.rows(partition)
            self._delete([h for h, _, _ in known.values()])
            self.manifest.forget(list(known))
            return len(known)

    def archive_partition(self, partition: str) -> int:
        """Mark the partition's runs archived (Aim's own flag: hidden from the default views,
        kept, restorable in the UI) and forget them, so a folder put back gets new runs."""
        with repo_lock(self.path):
            known = self.manifest.rows(partition)
            hashes = [h for h, _, _ in known.values()
                      if not h.startswith(CREATING) and aim_compat.run_exists(self.repo, h)]
            for run_hash in hashes:
                aim_compat.set_archived(self.repo, run_hash)
            self._index(hashes)
            self.manifest.forget(list(known))
            return len(hashes)

    def close(self) -> None:
        self.manifest.close()
        self.repo.container_pool.clear()

    def _unknown_runs_since(self, since: float) -> list[str]:
        """Runs created after a placeholder that the manifest never learned about."""
        known = self.manifest.all_hashes()
        return [h for h in aim_compat.all_run_hashes(self.repo)
                if h not in known and aim_compat.run_created_at(self.repo, h) >= since - 1]

    def _write(self, partition: str, spec: SceneRun) -> str:
        self.manifest.placeholder(partition, spec.key, spec.content_hash)
        run = aim_compat.lean_run(self.repo, spec.experiment)
        try:
            fault_point("aim.run_created")
            self.manifest.pending(partition, spec.key, run.hash, spec.content_hash)
            run.name = spec.name
            for key, value in spec.params.items():
                run[key] = value
            for name, value in spec.metrics.items():
                run.track(value, name=name)
            for name, text in spec.texts.items():
                run.track(Text(text), name=name)
        finally:
            run.close()  # unclosed runs leak threads and file handles
        return run.hash

    def _delete(self, run_hashes: list[str]) -> None:
        present = [h for h in run_hashes
                   if not h.startswith(CREATING) and aim_compat.run_exists(self.repo, h)]
        if present:
            ok, remaining = self.repo.delete_runs(present)
            if not ok:
                raise RuntimeError(f"Aim could not delete runs {remaining}")

    def _index(self, run_hashes: list[str]) -> int:
        try:
            return aim_compat.index_runs(self.repo, run_hashes)
        except aim_compat.IndexBusy:
            return 0  # `aim up` holds the index: its own indexer picks the runs up


def _adopt(legacy: Path | None, manifest: Path) -> None:
    """Earlier versions kept the manifest in the data dir: take it over once, so the runs it
    lists are found (not written again). Rows naming runs this repo does not hold are
    harmless: those scenes are rewritten and the rows dropped."""
    if legacy is not None and legacy.exists() and not manifest.exists():
        shutil.copyfile(legacy, manifest)
