"""A tracker's store lost or rebuilt under the daemon (its SQLite file deleted, the Aim manifest
rebuilt) leaves every partition it held stale, and nothing else notices until a folder changes:
the automation reacts to new tables and code versions, not to a store that lost its runs.

The discovery sensor asks each tracker for its store's generation (a few stats) at every tick
and compares it with the one it saw last, kept in the data dir's `state/` folder. Only when
one changed does it read the partitions' recorded versions (two queries) and request runs that
write the stale ones again, over contiguous ranges of at most `partitions_per_run()`; the run
keys hold the generation, so each loss is repaired once, and `store_repairs` follows those
runs until each succeeded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import dagster as dg

from align_track_pipeline.core.secrets import without_credentials
from align_track_pipeline.core.trackers.base import TargetError, Tracker
from align_track_pipeline.core.trackers.sqlite_value import NONE
from align_track_pipeline.defs.freshness import latest_data_versions, observed_versions
from align_track_pipeline.defs.store_repairs import (
    follow_repair,
    keep_repairs,
    plan_repair,
    read_repairs,
)


def seen_path(data_dir: Path) -> Path:
    return Path(data_dir) / "state" / "store_generations.json"


def store_requests(instance: dg.DagsterInstance, trackers: Callable[[], list[Tracker]],
                   data_dir: Path, order: list[str],
                   clock: Callable[[], float] = time.time) -> list[dg.RunRequest]:
    """Runs that write again the partitions of the trackers (`trackers()`: the configured
    ones) whose store generation changed since the last call (`order`: the partitions in
    order), and again those of earlier repairs whose run ended badly (`store_repairs`); the
    generations are then kept. A tracker configuration that does not parse is left to the
    runs, which report it."""
    try:
        current = trackers()
    except TargetError:
        return []
    path = seen_path(data_dir)
    seen = _read(path)
    now = {_key(t): t.store_generation() for t in current}
    changed = [t for t in current if _changed(t, now[_key(t)], seen.get(_key(t)))]
    before = read_repairs(data_dir)
    repairs = json.loads(json.dumps(before))  # followed in place, compared with `before`
    if changed:
        observed = observed_versions(instance)
        for tracker in changed:
            stale = held_partitions(instance, tracker, observed, order)
            repairs[_key(tracker)] = plan_repair(now[_key(tracker)], stale, order)
    requests = [request for t in current if _key(t) in repairs for request in
                follow_repair(instance, t, _key(t), repairs[_key(t)], clock(), order)]
    _remember(path, seen, now)
    keep_repairs(data_dir, before, repairs)
    return requests


def remote_generations(trackers: list[Tracker]) -> dict[str, str]:
    """Tracker name -> its store's generation, for the trackers whose data versions do not
    tell it (a query or a request each)."""
    return {t.name: t.store_generation() for t in trackers if not t.generation_in_versions()}


def store_resets(trackers: list[Tracker], data_dir: Path, now: dict[str, str]) -> set[str]:
    """The trackers whose generation (`now`, from `remote_generations`) changed since it was
    last seen: `align-track ingest` writes their partitions again, as the sensor's runs do."""
    seen = _read(seen_path(data_dir))
    return {t.name for t in trackers
            if t.name in now and _changed(t, now[t.name], seen.get(_key(t)))}


def remember_generations(trackers: list[Tracker], data_dir: Path, start: dict[str, str],
                         settled: set[str]) -> None:
    """After an ingest, keep for each tracker in `settled` (every partition it had to write
    again was written) the generation the ingest started from, the one its partitions were
    checked against: a store made again meanwhile is told by the next ingest. After `NONE`
    (the ingest made the experiment) the one there now. A store that did not answer keeps
    what was seen."""
    kept = {}
    for tracker in trackers:
        generation = start.get(tracker.name, "") if tracker.name in settled else ""
        if generation == NONE:
            generation = tracker.store_generation()
        if generation:
            kept[_key(tracker)] = generation
    if kept:
        path = seen_path(data_dir)
        _remember(path, _read(path), kept)
        _drop_repairs(data_dir, {_key(t): start.get(t.name) for t in trackers
                                 if t.name in settled})


def _drop_repairs(data_dir: Path, written: dict[str, str | None]) -> None:
    """The sensor's repairs of the generations an ingest has just written in full."""
    before = read_repairs(data_dir)
    keep_repairs(data_dir, before, {key: repair for key, repair in before.items()
                                    if repair.get("generation") != written.get(key)})


def held_partitions(instance: dg.DagsterInstance, tracker: Tracker,
                    observed: dict[str, str], order: list[str]) -> list[str]:
    """The partitions the tracker's store held, in order, that a changed generation leaves
    stale: by their data versions where those tell the generation, else all of them (the
    writers keep what is there and write what is missing)."""
    recorded = latest_data_versions(instance, tracker.asset)
    held = [k for k in order if k in recorded and k in observed]
    if not tracker.generation_in_versions():
        return held
    return [k for k in held if recorded[k] != tracker.data_version(observed[k])]


def _key(tracker: Tracker) -> str:
    """Generations are kept per tracker and target (store and experiment, no credentials): a
    tracker pointed elsewhere sees its new target for the first time, not a reset of the old."""
    return f"{tracker.name} {without_credentials(tracker.target_id())}"


def _changed(tracker: Tracker, now: str, before: str | None) -> bool:
    """A generation that changed ("": the store did not answer, nothing is concluded). One
    told by the data versions: any other value (a first sight costs a comparison of
    versions). One that is not: anything else after a store that held an experiment (gone,
    `NONE`, or made again), never a first sight (all would be written again once)."""
    if not now or now == before:
        return False
    return tracker.generation_in_versions() or (bool(before) and before != NONE)


def _remember(path: Path, seen: dict[str, str], now: dict[str, str]) -> None:
    """Keep every answer of `now` over `seen` (a store that did not answer, "", keeps the
    generation seen last; after `NONE` a new experiment is no change: the partitions were
    asked for again when it went, and fail, to be retried, where they could not be
    written), writing the file only when that changes it. A read-only data dir: asked again
    at the next tick or ingest, and run keys dedupe."""
    kept = seen | {name: generation for name, generation in now.items() if generation}
    if kept != seen:
        with suppress(OSError):
            _write(path, kept)


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
