"""The runs a store check asked for, followed until each succeeded.

A lost or rebuilt store (`store_checks`) is told once: the sensor keeps the new generation as
soon as it sees it. The ranges of partitions it asked to write again are kept here, in the
data dir's `state/store_repairs.json`, until the run of each succeeded. A range whose run
failed or was cancelled (the store still down, the run's process killed) is asked for again
under a new run key (Dagster launches a key once): 5 minutes after, then 10, 20, ... at most a
day apart. Without this a failed repair left those runs missing for good: by their versions
the partitions are fresh, and the automation never retries a failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from align_track_pipeline.core.atomic import write_text_atomically
from align_track_pipeline.core.trackers.base import Tracker
from align_track_pipeline.defs.folders import run_key
from align_track_pipeline.defs.freshness import INGEST_FOLDERS_JOB
from align_track_pipeline.defs.partitions import (
    RANGE_END,
    RANGE_START,
    contiguous_ranges,
    partitions_per_run,
)

REPAIR_TAG = "align_track/repair"  # what the run does, as the UI shows it
REPAIR_OF_TAG = "align_track/repair_of"  # which target and generation: one query finds its runs
RUN_KEY_TAG = "dagster/run_key"  # set by Dagster on a sensor's run
ATTEMPT_TAG = "align_track/repair_attempt"  # on the runs asked for again, from 1
FIRST_RETRY_SECONDS, LAST_RETRY_SECONDS = 300, 86_400
ENDED_BADLY = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)

Repair = dict  # {"generation": str, "stale": [key, ...], "ranges": [[first, last, attempt]]}


def repairs_path(data_dir: Path) -> Path:
    return Path(data_dir) / "state" / "store_repairs.json"


def read_state(path: Path) -> dict:
    """A state file's object; empty when the file is missing or does not parse."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def write_state(path: Path, state: dict) -> None:
    """Replaced whole: a reader never sees half of it."""
    write_text_atomically(path, json.dumps(state, sort_keys=True))


def read_repairs(data_dir: Path) -> dict[str, Repair]:
    """Target key -> its repair; none when the file is missing or does not parse, and no
    entry that is not a repair (a hand edit): it would fail every tick."""
    found = read_state(repairs_path(data_dir))
    return {key: repair for key, repair in found.items() if _well_formed(repair)}


def _well_formed(repair: object) -> bool:
    if not isinstance(repair, dict) or not isinstance(repair.get("generation"), str):
        return False
    stale, ranges = repair.get("stale"), repair.get("ranges")
    if not isinstance(stale, list) or not isinstance(ranges, list):
        return False
    if not all(isinstance(key, str) for key in stale):
        return False
    return all(isinstance(r, list) and len(r) == 3 and r[0] in stale and r[1] in stale
               and isinstance(r[2], int) for r in ranges)


def keep_repairs(data_dir: Path, before: dict[str, Repair], repairs: dict[str, Repair]) -> bool:
    """Write the repairs with ranges left, only when they differ from `before` (what was
    read); no file when none is left. False when that could not be written (a read-only
    data dir): the caller then keeps nothing it would be told again for."""
    left = {key: repair for key, repair in repairs.items() if repair["ranges"]}
    if left == before:
        return True
    path = repairs_path(data_dir)
    try:
        if left:
            write_state(path, left)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def repair_partitions(repair: Repair) -> set[str]:
    """The partitions of the ranges not written yet."""
    return {key for keys, _attempts in open_ranges(repair) for key in keys}


def open_ranges(repair: Repair) -> list[tuple[list[str], int]]:
    """Each range not written yet: its partitions, and how many of its runs ended badly
    since the first (the attempts asked for again)."""
    return [(_inside(repair["stale"], first, last), attempt)
            for first, last, attempt in repair["ranges"]]


def _inside(stale: list[str], first: str, last: str) -> list[str]:
    """The stale partitions of one range."""
    return stale[stale.index(first):stale.index(last) + 1]


def plan_repair(generation: str, stale: list[str], order: list[str]) -> Repair:
    """The stale partitions in contiguous ranges of at most `partitions_per_run()`."""
    ranges = contiguous_ranges(stale, order, most=partitions_per_run())
    wanted = set(stale)
    return {"generation": generation, "stale": [k for k in order if k in wanted],
            "ranges": [[first, last, 0] for first, last in ranges]}


def follow_repair(instance: dg.DagsterInstance, tracker: Tracker, target: str, repair: Repair,
                  now: float, order: list[str]) -> list[dg.RunRequest]:
    """Requests for the ranges of `repair` that have no run yet (or one never started: the
    daemon launches it), or whose run ended badly long enough ago; the ranges whose run
    succeeded leave `repair`. `order`: every partition now, in order."""
    _narrow(repair, order)
    runs = _repair_runs(instance, _repair_of(target, repair["generation"]))
    requests, left = [], []
    for first, last, attempt in repair["ranges"]:
        request = _request(tracker, target, repair["generation"], first, last, attempt)
        status, ended = runs.get(request.run_key, (None, 0.0))
        if status == dg.DagsterRunStatus.NOT_STARTED:
            status = None
        if status == dg.DagsterRunStatus.SUCCESS:
            continue
        if status in ENDED_BADLY and now >= ended + _wait(attempt):
            attempt += 1
            request = _request(tracker, target, repair["generation"], first, last, attempt)
            status = None
        if status is None:
            requests.append(request)
        left.append([first, last, attempt])
    repair["ranges"] = left
    return requests


def _narrow(repair: Repair, order: list[str]) -> None:
    """A range whose first or last partition was removed since (its run would fail on it)
    gives way to the ranges of its partitions still there."""
    partitions, stale, ranges = set(order), repair["stale"], []
    for first, last, attempt in repair["ranges"]:
        if first in partitions and last in partitions:
            ranges.append([first, last, attempt])
            continue
        ranges += [[start, end, attempt] for start, end in contiguous_ranges(
            [k for k in _inside(stale, first, last) if k in partitions], order,
            most=partitions_per_run())]
    repair["ranges"] = ranges


def _wait(attempt: int) -> float:
    return min(FIRST_RETRY_SECONDS * 2 ** attempt, LAST_RETRY_SECONDS)


def _repair_of(target: str, generation: str) -> str:
    return run_key("repair", [target, generation])


def _repair_runs(instance: dg.DagsterInstance,
                 repair_of: str) -> dict[str, tuple[dg.DagsterRunStatus, float]]:
    """Run key -> the status of its newest run (a re-execution keeps the key) and when it
    ended (or last changed)."""
    records = instance.get_run_records(filters=dg.RunsFilter(tags={REPAIR_OF_TAG: repair_of}))
    runs: dict[str, tuple[dg.DagsterRunStatus, float]] = {}
    for record in records:  # newest first
        runs.setdefault(record.dagster_run.tags.get(RUN_KEY_TAG, ""), (
            record.dagster_run.status,
            record.end_time or record.update_timestamp.timestamp()))
    return runs


def _request(tracker: Tracker, target: str, generation: str, first: str, last: str,
             attempt: int) -> dg.RunRequest:
    """The tracker's step of the `ingest_folders` job (alone) over one range; each attempt
    its own run key (the first one's as before attempts were counted)."""
    state = [generation, first, last] + ([str(attempt)] if attempt else [])
    return dg.RunRequest(
        job_name=INGEST_FOLDERS_JOB, asset_selection=[dg.AssetKey(tracker.asset)],
        run_key=run_key(f"store-{tracker.name}", state),
        tags={RANGE_START: first, RANGE_END: last,
              REPAIR_TAG: f"{tracker.name} store changed",
              REPAIR_OF_TAG: _repair_of(target, generation),
              **({ATTEMPT_TAG: str(attempt)} if attempt else {})})


def retry_note(request: dg.RunRequest) -> str | None:
    """What the sensor logs for a repair asked for again after its run ended badly."""
    attempt = request.tags.get(ATTEMPT_TAG)
    if attempt is None:
        return None
    return (f"{request.tags[REPAIR_TAG]}: asking again (attempt {int(attempt) + 1}) for "
            f"{request.tags[RANGE_START]} .. {request.tags[RANGE_END]}: the last run of that "
            "repair failed or was cancelled")
