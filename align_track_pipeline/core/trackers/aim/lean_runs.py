"""Opening Aim runs for writing, without what a one-shot writer does not need, dated by the data.

Each function wraps one Aim internal (tests/core/test_aim_compat.py pins it), imported where it
is used; on an Aim version the writer was not verified on (`verified.aim_internals`) runs are
plain `Run`s, dated and ended when they are written.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from aim import Repo, Run

from align_track_pipeline.core.trackers.aim.staging import staged
from align_track_pipeline.core.trackers.aim.storage import read_end_time
from align_track_pipeline.core.verified import aim_internals


def lean_run(repo: Repo, experiment: str, stage: Path | None = None,
             created: float | None = None, name: str | None = None) -> Run:
    """A run without system tracking, terminal capture, system params or status reporting:
    it is written and closed within milliseconds. With a `stage` (see `staging.new_stage`),
    its two RocksDB folders are built there and `staging.publish_run` moves them into the
    repo. `created` (epoch seconds) is its date in the Aim UI, else the time it is made;
    `name` its name, written with its row in the run table (a staged run's row when it is
    published)."""
    if stage is None:
        return _open_run(created, name, repo=repo, experiment=experiment)
    with _PATCH, staged(repo, stage, _utc(created)):  # Aim shares one `Repo` per path
        return _open_run(None, name, repo=repo, experiment=experiment)


def close_at(run: Run, ended: float | None) -> None:
    """Close the run with `ended` (epoch seconds) as its end time, from which the Aim UI
    takes its duration (`end_time - creation_time`), else the time it is closed. Closing
    sets the meta tree's `end_time` to the clock (`set_run_end_time` of the run's cleanup,
    `run._resources`): on a verified Aim it sets `ended` instead."""
    if ended is not None and aim_internals():
        resources = run._resources
        resources.set_run_end_time = functools.partial(
            resources.meta_run_tree.__setitem__, "end_time", ended)
    run.close()


def set_archived(repo: Repo, run_hash: str) -> None:
    """Set Aim's own `archived` flag on an existing run (reopened for writing, no tracking),
    keeping its end time (reopening clears it and closing would set the clock)."""
    ended = read_end_time(repo, run_hash)
    run = _open_run(None, None, run_hash=run_hash, repo=repo)
    try:
        run.archived = True
    finally:
        close_at(run, ended)


def _open_run(created: float | None, name: str | None, **kwargs) -> Run:
    """A writable `Run` named `name` (None: left as it is); on a verified Aim without its
    status reporting, if new dated `created` (None: now), and its run-table writes in one
    commit."""
    options = {"system_tracking_interval": None, "capture_terminal_logs": False,
               "log_system_params": False, **kwargs}
    if not aim_internals():
        return _named(Run(**options), name)
    repo = kwargs["repo"]
    with _PATCH, _without_status_reporting(), _dated(repo, created), one_commit(repo):
        return _named(Run(**options), name)


def _named(run: Run, name: str | None) -> Run:
    if name is not None:
        run.name = name
    return run


@contextmanager
def one_commit(repo: Repo) -> Iterator[None]:
    """The run-table writes of the block in one transaction, committed when it ends (rolled
    back on an exception), as Aim's own `Repo.delete_run` groups its writes: a new run's row,
    its experiment (set twice by `Run()`) and its name were four commits, the largest part
    of Aim's SQLite time. Aim's session commits while its `autocommit` attribute is true,
    else only flushes; `DB` as a context sets it false for the block, and the thread's
    session (one per thread) is given back to committing after it (`get_session`), so a
    later write through a run opened here commits as before."""
    db = repo.structured_db
    try:
        with db:
            yield
    finally:
        db.get_session()


@contextmanager
def _without_status_reporting() -> Iterator[None]:
    """While `Run()` runs: no status reporter. Aim starts two threads per run and keeps two
    check-in files per run in one folder (`check_ins/`), which it lists with a glob each time
    a run opens or reports: the cost of a run grew from 29 to 75 ms as a repo went from 0 to
    7,000 runs. What they watch for, a run that never closes, the writer's manifest repairs;
    the run still gets its end time on close, so Aim shows it finished. Wraps the reporter
    classes `aim.sdk.run` builds in `Run.__init__`."""
    import aim.sdk.run as aim_run_module

    saved = {name: getattr(aim_run_module, name) for name in STATUS_REPORTERS}
    for name in STATUS_REPORTERS:
        setattr(aim_run_module, name, _no_reporter)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(aim_run_module, name, value)


@contextmanager
def _dated(repo: Repo, created: float | None) -> Iterator[None]:
    """While `Run()` runs: a new run's row in the run table (made by `Repo.request_props`,
    which `Run.__init__` calls) gets `created` as its `created_at`, the run's date in the Aim
    UI, as Aim's own `Repo.copy_runs` dates the copies it makes. The row's `updated_at` is
    still the time it is written."""
    if created is None:
        yield
        return
    repo.request_props = functools.partial(type(repo).request_props, repo,
                                           created_at=_utc(created))
    try:
        yield
    finally:
        del repo.request_props


def _utc(epoch: float | None) -> datetime | None:
    """Epoch seconds as the run table stores a date (naive UTC)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


STATUS_REPORTERS = ("RunStatusReporter", "ScheduledStatusReporter")  # built in `Run.__init__`
_PATCH = threading.RLock()  # one `Run()` at a time in a patched Aim (and repo)


def _no_reporter(*_args, **_kwargs) -> None:
    return None
