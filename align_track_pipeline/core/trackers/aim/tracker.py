"""Aim as a tracker: one flat run per scene, named `<scenario_id>_idx<scene_index>`, with its
texts inline, indexed as written so the Aim UI shows it at once."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from align_track_pipeline.core.atomic import write_text_atomically
from align_track_pipeline.core.locking import file_lock
from align_track_pipeline.core.secrets import without_credentials
from align_track_pipeline.core.trackers.aim.manifest import (
    complete_run_hashes,
    generation,
    manifest_path,
)
from align_track_pipeline.core.trackers.aim.plan import plan_scene_runs, scene_run_name
from align_track_pipeline.core.trackers.base import (
    FollowUp,
    Partition,
    Settings,
    TargetError,
    Tracker,
    WriteReport,
    preloaded,
)
from align_track_pipeline.core.trackers.owner import OWNER_FILE, claim
from align_track_pipeline.core.trackers.sqlite_value import NONE
from align_track_pipeline.core.versions import AIM_LAYOUT_VERSION, scene_key

if TYPE_CHECKING:
    from align_track_pipeline.core.trackers.aim.writer import AimWriter

UI_PORT = 43800  # where `align-track aim-ui` serves the repo by default
AIM_FOLDER = ".aim"  # the repo proper, beside the manifest (what `aim init` makes)
WITHOUT_REPO = "-without-repo"  # a manifest's generation while its repo is gone


@dataclass(frozen=True)
class AimTracker(Tracker):
    repo: str
    legacy_manifest: str | None = None  # where earlier versions kept the manifest (adopted once)
    ui_url: str | None = None  # e.g. http://127.0.0.1:43800, for links to the runs
    data_dir: str | None = None  # whose tree the repo must hold (`owner`)

    name = "aim"
    version_tag = "a"
    description = ("One flat Aim run per scene, named <scenario_id>_idx<scene_index>, with its "
                   "texts inline; indexed as written, so the Aim UI shows it at once.")

    def layout_version(self) -> str:
        return AIM_LAYOUT_VERSION

    def target_id(self) -> str:
        return self.repo

    def store(self) -> str:
        """The repo's real path: one pool for every tracker writing it, however named."""
        return f"aim:{Path(self.repo).resolve()}"

    def data_version(self, source_version: str) -> str:
        """Also the manifest's generation (`store_generation`)."""
        return f"{super().data_version(source_version)}-g{self.store_generation()}"

    def store_generation(self) -> str:
        """The manifest's generation: a manifest deleted (or rebuilt because it disagreed
        with the repo) no longer vouches for the runs, so every partition is stale until an
        upsert has checked them against the rebuilt one. So is a manifest whose repo is gone
        (`.aim` deleted, to reset Aim after a lock error): the writer then makes the repo
        again and rebuilds the manifest from it. Three stats when nothing changed."""
        found = generation(manifest_path(Path(self.repo)))
        if found != NONE and not (Path(self.repo) / AIM_FOLDER).is_dir():
            return f"{found}{WITHOUT_REPO}"
        return found

    def max_writers(self, cores: int) -> int:
        """Each run is its own chunk and the writer locks per partition, so run creation
        scales with processes; the shared index is written by one at a time, briefly. One
        more than the cores: a writer waits a fifth of its time for RocksDB's own threads
        (opening and flushing each run's databases), which another writer fills (3 writers
        on 2 cores wrote 1.8 cores' worth of runs, 2 writers 1.5: docs/performance.md)."""
        return cores + 1

    def ui_hint(self, options: str = "") -> str:
        return f"{self.repo}; open with `align-track aim-ui{options}`"

    def links(self, table: str, rows: Sequence[Mapping]) -> dict[str, str]:
        """Scenes rows only: Aim holds one run per scene and none per experiment row."""
        if not self.ui_url or table != "scenes":
            return {}
        keys = [scene_key(r["partition_key"], r["scene_index"]) for r in rows]
        hashes = complete_run_hashes(manifest_path(Path(self.repo)), keys)
        return {key: run_link(self.ui_url, run_hash) for key, run_hash in hashes.items()}

    def preload(self) -> None:
        """The writer imports Aim (about a second, more on a busy machine)."""
        importlib.import_module("align_track_pipeline.core.trackers.aim.writer")

    def open(self) -> _AimSession:
        preloaded()
        from align_track_pipeline.core.trackers.aim.writer import AimWriter

        self._claim()
        legacy = Path(self.legacy_manifest) if self.legacy_manifest else None
        return _AimSession(self, AimWriter(Path(self.repo), legacy))

    def _claim(self) -> None:
        """Mark the repo with the data dir's tree, or refuse another tree's (`owner`)."""
        mark_file = Path(self.repo) / OWNER_FILE
        claim(partial(_read_mark, mark_file),
              lambda mark: write_text_atomically(mark_file, mark + "\n"),
              partial(file_lock, mark_file.with_suffix(".lock")), self.data_dir,
              f"The Aim repo {self.repo}", "Give this tree its own repo (--aim-repo DIR).")

    def follow_up(self) -> FollowUp:
        """`aim_index`: the repo index (what Aim's runs table and queries read)."""
        return FollowUp("aim_index", "aim_reindex",
                        "The Aim repo index (what the runs table and queries read): brought up "
                        "to date after aim_runs materializations, or rebuilt with full=True.",
                        self._reindexed)

    def _reindexed(self, full: bool) -> dict[str, object]:
        return {"indexed_runs": self.reindex(full), "full": full, "repo": self.repo}

    def reindex(self, full: bool = False) -> int:
        """Index the runs whose index entry is missing or outdated (e.g. written while `aim up`
        held the index), or with `full` rebuild the whole index (slow); returns how many."""
        preloaded()
        from align_track_pipeline.core.trackers.aim import indexing, storage
        from align_track_pipeline.core.trackers.aim.writer import index_lock

        repo = storage.open_repo(Path(self.repo))
        with index_lock(Path(self.repo)):  # writers of other partitions may be indexing
            return indexing.rebuild_index(repo) if full else indexing.index_runs(
                repo, indexing.outdated_runs(repo))


def check_repo(repo: str) -> None:
    """Refuse anything but a local path: `aim://HOST:PORT` would otherwise be read as a folder
    named `aim:` in the working directory. A remote repo cannot be upserted (the writer checks
    the repo's files) nor indexed from here (`aim server` does not index)."""
    scheme = urlsplit(repo).scheme
    if len(scheme) > 1:
        raise TargetError(
            f"Aim repo {without_credentials(repo)!r}: remote repos ({scheme}://) are not "
            "supported. Give the local "
            "path of the repo (the folder `aim server` or `aim up` serves, on this host).")
    if not repo.strip():
        raise TargetError("the Aim repo path is empty")


@dataclass(frozen=True)
class _AimSession:
    tracker: AimTracker
    writer: AimWriter

    def upsert(self, partition: Partition) -> WriteReport:
        result = self.writer.upsert(partition.key,
                                    plan_scene_runs(partition.experiments, partition.scenes))
        return WriteReport(
            runs=len(partition.scenes), written=len(result.created),
            unchanged=result.unchanged, deleted=result.deleted,
            details={"indexed": result.indexed, "repo": self.tracker.repo,
                     "query": f'run.partition_key == "{partition.key}"'},
            links=self._links(partition.scenes))

    def _links(self, scenes: list[dict]) -> dict[str, str]:
        """Run name -> the run's page in the Aim UI, for each scene run of the partition."""
        urls = self.tracker.links("scenes", scenes)
        return {scene_run_name(row): urls[key]
                for row in scenes
                if (key := scene_key(row["partition_key"], row["scene_index"])) in urls}

    def remove(self, partition: str, archive: bool) -> int:
        if archive:
            return self.writer.archive_partition(partition)
        return self.writer.delete_partition(partition)

    def close(self) -> None:
        self.writer.close()


def _read_mark(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def run_link(ui_url: str, run_hash: str) -> str:
    """A run's page under the UI's address; a query the address carries stays after the path
    (`http://host:43800/?x=1` -> `http://host:43800/runs/HASH?x=1`)."""
    parts = urlsplit(ui_url)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/runs/{run_hash}"))


def aim_tracker(settings: Settings) -> AimTracker:
    """`--aim-repo`, then ALIGN_TRACK_AIM_REPO, then `<data dir>/aim`: a local directory. The
    UI's address, for links to runs: ALIGN_TRACK_AIM_UI_URL, else what `align-track aim-ui`
    serves."""
    data = Path(settings.data_dir).resolve()
    repo = settings.get("aim_repo", "ALIGN_TRACK_AIM_REPO", str(data / "aim"))
    check_repo(repo)
    return AimTracker(repo=str(Path(repo).resolve()),
                      legacy_manifest=str(data / "state" / "aim_manifest.sqlite"),
                      ui_url=without_credentials(settings.get(  # links are shown
                          "aim_ui_url", "ALIGN_TRACK_AIM_UI_URL", f"http://127.0.0.1:{UI_PORT}")),
                      data_dir=str(data))
