"""Opening Aim runs for writing, without what a one-shot writer does not need.

Each function wraps one Aim internal (tests/core/test_aim_compat.py pins it); on an Aim
version the writer was not verified on (`verified.aim_internals`) runs are plain `Run`s.
"""

from __future__ import annotations

import threading
from pathlib import Path

import aim.sdk.run as aim_run_module
from aim import Repo, Run

from align_track_pipeline.core.trackers.aim.staging import staged
from align_track_pipeline.core.verified import aim_internals


def lean_run(repo: Repo, experiment: str, stage: Path | None = None) -> Run:
    """A run without system tracking, terminal capture, system params or status reporting:
    it is written and closed within milliseconds. With a `stage` (see `staging.new_stage`),
    its two RocksDB folders are built there and `staging.publish_run` moves them into the
    repo."""
    if stage is None:
        return _open_run(repo=repo, experiment=experiment)
    with staged(repo, stage):
        return _open_run(repo=repo, experiment=experiment)


def set_archived(repo: Repo, run_hash: str) -> None:
    """Set Aim's own `archived` flag on an existing run (reopened for writing, no tracking)."""
    run = _open_run(run_hash=run_hash, repo=repo)
    try:
        run.archived = True
    finally:
        run.close()


def _open_run(**kwargs) -> Run:
    """A writable `Run`; on a verified Aim without its status reporting. Aim starts two
    threads per run and keeps two check-in files per run in one folder (`check_ins/`), which
    it lists with a glob each time a run opens or reports: the cost of a run grew from 29 to
    75 ms as a repo went from 0 to 7,000 runs. What they watch for, a run that never closes,
    the writer's manifest repairs; the run still gets its end time on close, so Aim shows it
    finished. Wraps the reporter classes `aim.sdk.run` builds in `Run.__init__`."""
    options = {"system_tracking_interval": None, "capture_terminal_logs": False,
               "log_system_params": False, **kwargs}
    if not aim_internals():
        return Run(**options)
    with _STATUS_PATCH:
        saved = {name: getattr(aim_run_module, name) for name in STATUS_REPORTERS}
        for name in STATUS_REPORTERS:
            setattr(aim_run_module, name, _no_reporter)
        try:
            return Run(**options)
        finally:
            for name, value in saved.items():
                setattr(aim_run_module, name, value)


STATUS_REPORTERS = ("RunStatusReporter", "ScheduledStatusReporter")  # built in `Run.__init__`
_STATUS_PATCH = threading.Lock()


def _no_reporter(*_args, **_kwargs) -> None:
    return None
