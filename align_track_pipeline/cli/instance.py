"""The Dagster instance the CLI uses: `$DAGSTER_HOME`, else `<data dir>/dagster`."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import dagster as dg

from align_track_pipeline.core.locations import REPO_ROOT
from align_track_pipeline.defs.dagster_compat import release_pool_slots

HOST_TAG, PID_TAG = "align_track/host", "align_track/pid"
_UNFINISHED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def dagster_home(data_dir: Path) -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or Path(data_dir) / "dagster")


def open_instance(data_dir: Path) -> dg.DagsterInstance:
    """Open (creating if needed) the instance, seeded with the project's dagster.yaml."""
    home = dagster_home(data_dir).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and (REPO_ROOT / "dagster.yaml").exists():
        shutil.copyfile(REPO_ROOT / "dagster.yaml", config)
    return dg.DagsterInstance.from_config(str(home))


def cli_run_tags() -> dict[str, str]:
    """Tags of the runs this process executes in-process: who runs them, to tell later whether
    that process is still there."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def fail_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the in-process runs of this machine whose process is gone (an `align-track`
    that was killed) and release their pool slots; returns their run ids.

    Such a run otherwise stays STARTED for ever and keeps its `mlflow` or `aim` pool slot, so
    every later run of that pool would wait for it. The daemon's run monitoring does this for
    the runs it launched; nobody does it for in-process runs.
    """
    records = instance.get_run_records(
        dg.RunsFilter(statuses=_UNFINISHED, tags={HOST_TAG: socket.gethostname()}))
    abandoned = [r.dagster_run for r in records
                 if not _alive(int(r.dagster_run.tags.get(PID_TAG, "0")))]
    for run in abandoned:
        instance.report_run_failed(run, "the align-track process running it is gone (killed)")
        release_pool_slots(instance, run.run_id)
    return [run.run_id for run in abandoned]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: gone all the same
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
