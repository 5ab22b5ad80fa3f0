"""Dead writers never block: in-process runs carry a heartbeat, and a run whose heartbeat
stopped (its process was killed, on this host or any other) is failed and frees its pool slot.

The daemon's runs are watched by Dagster's run monitoring (`dagster.yaml`); nothing watches the
runs `align-track` executes in its own process, so it does it here: each run is tagged with its
host and pid, and a background thread refreshes a heartbeat tag while the process lives. Any
`align-track` then fails the runs of this host whose process is gone (at once) and the runs of
other hosts whose heartbeat is older than `ALIGN_TRACK_DEAD_WRITER_SECONDS` (default 120).
Before a phase starts, it waits for the phase's pool saying for what, and gives up after
`ALIGN_TRACK_POOL_WAIT_SECONDS` (default 600) with an error naming the holder.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg

from align_track_pipeline.cli.exits import PoolTimeout
from align_track_pipeline.core.processes import process_alive
from align_track_pipeline.core.settings import current
from align_track_pipeline.defs.dagster_compat import pool_holders, release_pool_slots

HOST_TAG, PID_TAG, HEARTBEAT_TAG = "align_track/host", "align_track/pid", "align_track/heartbeat"
_UNFINISHED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def dead_after() -> float:
    return current().get("ALIGN_TRACK_DEAD_WRITER_SECONDS")


def cli_run_tags() -> dict[str, str]:
    """Tags of the runs this process executes in-process: who runs them, and a first beat."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            HEARTBEAT_TAG: str(time.time())}


@contextmanager
def heartbeat(instance: dg.DagsterInstance) -> Iterator[None]:
    """Refresh the heartbeat of this process's unfinished runs while the block runs."""
    stop = threading.Event()
    every = max(1.0, min(15.0, dead_after() / 4))

    def beat() -> None:
        while not stop.wait(every):
            mine = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
            for record in instance.get_run_records(dg.RunsFilter(statuses=_UNFINISHED,
                                                                 tags=mine)):
                instance.add_run_tags(record.dagster_run.run_id,
                                      {HEARTBEAT_TAG: str(time.time())})

    thread = threading.Thread(target=beat, name="align-track-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def fail_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the in-process runs whose writer is gone and release their pool slots;
    returns their run ids. Gone: on this host, its pid no longer runs; on another host, its
    heartbeat is older than `ALIGN_TRACK_DEAD_WRITER_SECONDS`."""
    records = instance.get_run_records(dg.RunsFilter(statuses=_UNFINISHED))
    abandoned = [r.dagster_run for r in records if _gone(r.dagster_run.tags)]
    for run in abandoned:
        instance.report_run_failed(run, f"its align-track process is gone ({_who(run.tags)})")
        release_pool_slots(instance, run.run_id)
    return [run.run_id for run in abandoned]


def wait_for_pool(instance: dg.DagsterInstance, pool: str,
                  progress: Callable[[str], None]) -> None:
    """Return once `pool` has a free slot; say what holds it meanwhile."""
    limit = current().get("ALIGN_TRACK_POOL_WAIT_SECONDS")
    started = time.monotonic()
    while True:
        size, holders = pool_holders(instance, pool)
        if size is None or len(holders) < size:
            return
        fail_abandoned_runs(instance)
        runs = [instance.get_run_by_id(run_id) for run_id in holders]
        who = "; ".join(f"run {r.run_id[:8]} ({_who(r.tags)})" for r in runs if r)
        waited = time.monotonic() - started
        if waited >= limit:
            raise PoolTimeout(f"gave up after {waited:.0f} s waiting for pool {pool!r}, held by "
                              f"{who} (ALIGN_TRACK_POOL_WAIT_SECONDS={limit:.0f})")
        progress(f"waiting for pool {pool!r}, held by {who}")
        time.sleep(min(5.0, max(0.5, limit / 10)))


def _gone(tags: dict[str, str]) -> bool:
    if HOST_TAG not in tags:
        return False  # not an in-process run of ours: the daemon's monitoring watches it
    if tags[HOST_TAG] == socket.gethostname():  # here the process table is the truth
        return not process_alive(int(tags.get(PID_TAG, "0")))
    return time.time() - float(tags.get(HEARTBEAT_TAG, "0")) > dead_after()


def _who(tags: dict[str, str]) -> str:
    beat = float(tags.get(HEARTBEAT_TAG, "0"))
    return (f"host {tags.get(HOST_TAG, '?')}, pid {tags.get(PID_TAG, '?')}, "
            f"last heartbeat {time.time() - beat:.0f} s ago" if beat else "no heartbeat")
