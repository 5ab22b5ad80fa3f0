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

import copy
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import dagster as dg

from align_track_pipeline.core.locking import file_lock
from align_track_pipeline.core.trackers.base import TargetError, Tracker
from align_track_pipeline.core.trackers.sqlite_value import NONE
from align_track_pipeline.defs.freshness import latest_data_versions, observed_versions
from align_track_pipeline.defs.store_repairs import (
    Repair,
    follow_repair,
    keep_repairs,
    plan_repair,
    read_repairs,
    read_state,
    repair_partitions,
    write_state,
)


def seen_path(data_dir: Path) -> Path:
    return Path(data_dir) / "state" / "store_generations.json"


def store_requests(instance: dg.DagsterInstance, trackers: Callable[[], list[Tracker]],
                   data_dir: Path, order: list[str], present: set[str] | None = None,
                   clock: Callable[[], float] = time.time) -> list[dg.RunRequest]:
    """Runs that write again the partitions of the trackers (`trackers()`: the configured
    ones) whose store generation changed since the last call (`order`: every partition in
    order; `present`: those whose folder is there, None: all), and again those of earlier
    repairs whose run ended badly (`store_repairs`). The repairs are kept first, then the
    generations: a repair that could not be kept is told again. A tracker configuration that
    does not parse is left to the runs, which report it."""
    try:
        current = trackers()
    except TargetError:
        return []
    keys = {t.name: target_key(t) for t in current}
    now = {keys[t.name]: t.store_generation() for t in current}  # a request each, unlocked
    with _state_lock(data_dir):
        path = seen_path(data_dir)
        seen = read_state(path)
        changed = [t for t in current if _changed(t, now[keys[t.name]], seen.get(keys[t.name]))]
        before = read_repairs(data_dir)
        repairs = _current(copy.deepcopy(before), keys)
        if changed:
            observed = observed_versions(instance)
            held = [k for k in order if present is None or k in present]
            for tracker in changed:
                stale = held_partitions(instance, tracker, observed, held)
                repairs[keys[tracker.name]] = plan_repair(now[keys[tracker.name]], stale, order)
        requests = [request for t in current if keys[t.name] in repairs for request in
                    follow_repair(instance, t, keys[t.name], repairs[keys[t.name]], clock(),
                                  order)]
        if keep_repairs(data_dir, before, repairs):
            _remember(path, seen, now)
    return requests


def _current(repairs: dict[str, Repair], keys: dict[str, str]) -> dict[str, Repair]:
    """Without the repairs of a tracker's earlier target (`keys`: tracker name -> its target
    now; pointed elsewhere since, its partitions are stale by their code version); a tracker
    left out for now keeps its own."""
    return {key: repair for key, repair in repairs.items()
            if keys.get(key.split(" ", 1)[0], key) == key}


def pending_repairs(trackers: list[Tracker], data_dir: Path) -> dict[str, Repair]:
    """Tracker name -> the sensor's repair of its store not finished yet, for an ingest to
    write those partitions too (`end_repairs` after)."""
    repairs = read_repairs(data_dir)
    return {t.name: repairs[target_key(t)] for t in trackers if target_key(t) in repairs}


def end_repairs(trackers: list[Tracker], data_dir: Path, taken: dict[str, Repair],
                settled: set[str], written: set[str], order: list[str]) -> None:
    """After an ingest wrote (`written`: the partitions it brought up to date or found
    fresh) the repairs it took (`pending_repairs`) for the trackers in `settled`: what is
    left of each (a partition whose folder could not be read) goes on, in ranges of `order`;
    one of another generation (the sensor saw the store made again meanwhile) goes on whole."""
    done = {target_key(t): taken[t.name] for t in trackers
            if t.name in taken and t.name in settled}
    if not done:
        return
    with _state_lock(data_dir):
        before = read_repairs(data_dir)
        after = {}
        for key, repair in before.items():
            if key in done and done[key]["generation"] == repair["generation"]:
                left = repair_partitions(repair) - written  # as the sensor left it
                repair = plan_repair(repair["generation"], [k for k in order if k in left],
                                     order)
            after[key] = repair
        keep_repairs(data_dir, before, after)


def remote_generations(trackers: list[Tracker]) -> dict[str, str]:
    """Tracker name -> its store's generation, for the trackers whose data versions do not
    tell it (a query or a request each)."""
    return {t.name: t.store_generation() for t in trackers if not t.generation_in_versions()}


def store_resets(trackers: list[Tracker], data_dir: Path, now: dict[str, str]) -> set[str]:
    """The trackers whose generation (`now`, from `remote_generations`) changed since it was
    last seen: `align-track ingest` writes their partitions again, as the sensor's runs do."""
    seen = read_state(seen_path(data_dir))
    return {t.name for t in trackers
            if t.name in now and _changed(t, now[t.name], seen.get(target_key(t)))}


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
            kept[target_key(tracker)] = generation
    if kept:
        with _state_lock(data_dir):
            path = seen_path(data_dir)
            _remember(path, read_state(path), kept)


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


def target_key(tracker: Tracker) -> str:
    """What generations and repairs are kept under: the tracker, its store (no credentials)
    and a digest of its whole target (the experiment; a URI's query, which may hold a
    password, only digested). A tracker pointed elsewhere sees its new target for the first
    time, not a reset of the old."""
    digest = hashlib.blake2b(tracker.target_id().encode(), digest_size=6).hexdigest()
    return f"{tracker.name} {tracker.store()} {digest}"


@contextmanager
def _state_lock(data_dir: Path) -> Iterator[None]:
    """The sensor and an ingest read, change and write the same files: one at a time (a
    read-only data dir, where nothing is written anyway: without the lock)."""
    with ExitStack() as stack:
        with suppress(OSError):
            stack.enter_context(file_lock(Path(data_dir) / "state" / "store_checks.lock"))
        yield


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
    at the next tick or ingest, and run keys dedupe. Entries keyed by a tracker's name
    alone (before generations were kept per target) go: nothing reads them."""
    kept = {key: generation for key, generation in seen.items() if " " in key}
    kept |= {key: generation for key, generation in now.items() if generation}
    if kept != seen:
        with suppress(OSError):
            write_state(path, kept)
