"""A tracker's store lost or rebuilt under the daemon (its SQLite file deleted, the Aim manifest
rebuilt) leaves every partition it held stale, and nothing else notices until a folder changes:
the automation reacts to new tables and code versions, not to a store that lost its runs.

The discovery sensor asks each tracker for its store's generation (a few stats) at every tick
and compares it with the one it saw last, kept in the data dir's `state/` folder. Only when
one changed does it read the partitions' recorded versions (two queries) and request runs that
write the stale ones again, over contiguous ranges of at most `partitions_per_run()`; the run
keys hold the generation, so each loss is repaired once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import dagster as dg

from align_track_pipeline.core.trackers.base import TargetError, Tracker
from align_track_pipeline.defs.folders import run_key
from align_track_pipeline.defs.freshness import (
    INGEST_FOLDERS_JOB,
    latest_data_versions,
    observed_versions,
)
from align_track_pipeline.defs.partitions import (
    RANGE_END,
    RANGE_START,
    contiguous_ranges,
    partitions_per_run,
)


def seen_path(data_dir: Path) -> Path:
    return Path(data_dir) / "state" / "store_generations.json"


def store_requests(instance: dg.DagsterInstance, trackers: Callable[[], list[Tracker]],
                   data_dir: Path, order: list[str]) -> list[dg.RunRequest]:
    """Runs that write again the partitions of the trackers (`trackers()`: the configured
    ones) whose store generation changed since the last call (`order`: the partitions in
    order); the generations are then kept. A tracker configuration that does not parse is
    left to the runs, which report it."""
    try:
        current = trackers()
    except TargetError:
        return []
    path = seen_path(data_dir)
    seen = _read(path)
    now = {t.name: t.store_generation() for t in current}
    changed = [t for t in current if now[t.name] and now[t.name] != seen.get(t.name)]
    if not changed:
        return []
    observed = observed_versions(instance)
    requests = []
    for tracker in changed:
        recorded = latest_data_versions(instance, tracker.asset)
        stale = [k for k in order if k in recorded and k in observed
                 and recorded[k] != tracker.data_version(observed[k])]
        requests += _requests(tracker, now[tracker.name], stale, order)
    with suppress(OSError):  # a read-only data dir: asked again next tick, run keys dedupe
        _write(path, seen | now)
    return requests


def _requests(tracker: Tracker, generation: str, stale: list[str],
              order: list[str]) -> list[dg.RunRequest]:
    """The tracker's step of the `ingest_folders` job (alone) over each contiguous range of
    the stale partitions, cut at `partitions_per_run()`."""
    selection = [dg.AssetKey(tracker.asset)]
    return [dg.RunRequest(
        job_name=INGEST_FOLDERS_JOB, asset_selection=selection,
        run_key=run_key(f"store-{tracker.name}", [generation, first, last]),
        tags={RANGE_START: first, RANGE_END: last,
              "align_track/repair": f"{tracker.name} store changed"})
        for first, last in contiguous_ranges(stale, order, most=partitions_per_run())]


def _read(path: Path) -> dict[str, str]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write(path: Path, generations: dict[str, str]) -> None:
    """Replaced whole (a temporary file renamed over it): a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(generations, sort_keys=True))
    os.replace(temporary, path)
