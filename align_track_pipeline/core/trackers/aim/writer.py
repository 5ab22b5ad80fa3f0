"""Idempotent upsert of one flat Aim run per scene, with a key -> run-hash manifest.

Aim 3.29 cannot create a run under a chosen hash, so a small SQLite manifest maps each scene key
(`<partition>::<scene index>`) to its run hash and content hash, and is read once per
partition. Unchanged scenes are skipped, changed ones replaced, removed ones deleted. A run is
entered in the manifest as pending right after Aim creates it and marked complete only after it
is closed, so a kill mid-way leaves pending rows that the next upsert deletes and redoes.
Before Aim creates a run, a placeholder row records the time: a kill in the instant between
Aim creating the run's folder and the manifest learning its hash leaves a placeholder, and the
next upsert deletes the unknown runs created after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from align_track_pipeline.core.trackers.aim import compat as aim_compat
from align_track_pipeline.core.trackers.aim.manifest import CREATING, Manifest
from align_track_pipeline.core.trackers.aim.plan import SceneRun


@dataclass(frozen=True)
class AimResult:
    created: list[str]
    unchanged: int
    deleted: int
    indexed: int


class AimWriter:
    def __init__(self, repo_path: Path, manifest_path: Path):
        self.repo = aim_compat.open_repo(Path(repo_path))
        self.manifest = Manifest(manifest_path)

    def upsert(self, partition: str, runs: list[SceneRun]) -> AimResult:
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
        return AimResult(created, len(keep), len(drop), indexed)

    def delete_partition(self, partition: str) -> int:
        known = self.manifest.rows(partition)
        self._delete([h for h, _, _ in known.values()])
        self.manifest.forget(list(known))
        return len(known)

    def archive_partition(self, partition: str) -> int:
        """Mark the partition's runs archived (Aim's own flag: hidden from the default views,
        kept, restorable in the UI) and forget them, so a folder put back gets new runs."""
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
            self.manifest.pending(partition, spec.key, run.hash, spec.content_hash)
            run.name = spec.name
            for key, value in spec.params.items():
                run[key] = value
            for name, value in spec.metrics.items():
                run.track(value, name=name)
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
