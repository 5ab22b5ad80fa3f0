"""What a stopped command tells: SIGTERM is an interrupt named as such (also when a shell
started the process with SIGINT ignored, and after Dagster re-bound the handlers), and a
"disk I/O error" is called a full disk only when the disk is full."""

import errno
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from align_track_pipeline.cli import workers
from align_track_pipeline.cli.batches import InProcess
from align_track_pipeline.cli.failures import describe
from align_track_pipeline.cli.signals import interrupts_recorded

# Starts with SIGINT ignored (as a shell's background job does), runs the block as `main`
# does, copies SIGINT's handler to SIGTERM as Dagster does after a run, then sends itself
# SIGINT (to be ignored) and SIGTERM (to stop it).
BACKGROUND_JOB = textwrap.dedent("""
    import os, signal, time
    from align_track_pipeline.cli.signals import interrupts_recorded

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with interrupts_recorded() as received:
        try:
            signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            print("SIGINT ignored", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt as exc:
            print(exc, received.first().name)
    print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
""")


def test_sigterm_stops_a_background_job_that_ignores_sigint():
    done = subprocess.run([sys.executable, "-c", BACKGROUND_JOB], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.stdout.split("\n") == ["SIGINT ignored", "SIGTERM SIGTERM", "True", ""]


def test_the_signal_that_came_through_another_handler_is_named():
    """Dagster's handler during a run does not say which signal it got: the wakeup fd does."""
    with interrupts_recorded() as received:
        previous = signal.signal(signal.SIGTERM, lambda *_: None)  # as Dagster's
        signal.raise_signal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, previous)
        told = describe(KeyboardInterrupt("tables run 1234"), [], received.first())
    assert (told.error, told.code) == ("interrupted by SIGTERM (tables run 1234)", 143)
    assert told.as_json()["signal"] == "SIGTERM"


def _wrapped(message: str) -> Exception:
    """As SQLAlchemy raises a SQLite error: its own exception, the driver's as the cause."""
    try:
        try:
            raise sqlite3.OperationalError(message)
        except sqlite3.OperationalError as exc:
            raise RuntimeError(f"(sqlite3.OperationalError) {message}") from exc
    except RuntimeError as outer:
        return outer


def test_disk_io_error_with_room_left_is_not_called_a_full_disk(tmp_path):
    told = describe(_wrapped("disk I/O error"), [tmp_path])
    assert told.error == "RuntimeError: (sqlite3.OperationalError) disk I/O error"
    assert not told.expected


@pytest.mark.parametrize("exc", [_wrapped("database or disk is full"),
                                 OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_named_by_the_store(exc, tmp_path):
    told = describe(exc, [tmp_path / "data"])
    assert (told.error, told.code) == (f"no space left on {tmp_path / 'data'}", 1)


def test_a_full_disk_named_by_the_file_python_names(tmp_path):
    exc = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.parquet"))
    assert describe(exc, [Path("/elsewhere")]).error == f"no space left on {tmp_path}/x.parquet"


# `align-track ingest --json` as the installed script runs it, with SIGTERM sent while the
# command's modules are imported (a hook at the start of `cli.main`'s import sends it).
STOPPED_WHILE_STARTING = textwrap.dedent("""
    import os, signal, sys

    class SignalOnImport:
        def find_spec(self, name, path=None, target=None):
            if name == "align_track_pipeline.cli.main":
                os.kill(os.getpid(), signal.SIGTERM)
            return None

    sys.meta_path.insert(0, SignalOnImport())
    sys.argv = ["align-track", "ingest", "--json", "--data-dir", sys.argv[1]]
    from align_track_pipeline.cli import main
    sys.exit(main())
""")


def test_sigterm_while_the_command_starts_is_told_with_its_json(tmp_path):
    done = subprocess.run([sys.executable, "-c", STOPPED_WHILE_STARTING, str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 143, done.stderr
    assert json.loads(done.stdout) == {
        "error": "interrupted by SIGTERM (while starting: nothing was read or written)",
        "signal": "SIGTERM"}
    assert "interrupted by SIGTERM" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()


class _SignalAtRunEnd(logging.Handler):
    """Sends this process a signal when the run logs its success: after its last step, where
    Dagster only remembers a signal for a next step that never comes."""

    def __init__(self, signum: int):
        super().__init__()
        self.signum = signum

    def emit(self, record: logging.LogRecord) -> None:
        if "RUN_SUCCESS" in record.getMessage():
            os.kill(os.getpid(), self.signum)


def _signal_at_run_end(signum: int) -> dg.LoggerDefinition:
    @dg.logger
    def at_run_end(_context) -> logging.Logger:
        log = logging.getLogger(f"signal_{signum}_at_run_end")
        log.setLevel(logging.DEBUG)
        log.handlers = [_SignalAtRunEnd(signum)]
        return log

    return at_run_end


_term_at_run_end = _signal_at_run_end(signal.SIGTERM)


@dg.op
def _nothing() -> None:
    pass


@dg.job(logger_defs={"term": _term_at_run_end})
def _one_step():
    _nothing()


def test_a_signal_between_a_runs_steps_still_stops_the_command(tmp_path):
    """Before, such a run ended as if no signal had come and the ingest went on to exit 0."""
    runner = InProcess(dg.Definitions(jobs=[_one_step]), dg.DagsterInstance.local_temp(
        str(tmp_path)), {"loggers": {"term": {}}})
    with interrupts_recorded() as received, pytest.raises(KeyboardInterrupt) as raised:
        runner.run("_one_step")
    assert received.first() == signal.SIGTERM
    assert str(raised.value).startswith("_one_step run ")


@dg.job(logger_defs={"int": _signal_at_run_end(signal.SIGINT)})
def _one_step_interrupted():
    _nothing()


def test_a_worker_stops_its_batch_at_an_interrupt_that_landed_after_a_runs_last_step(
        tmp_path, monkeypatch):
    """The ingest passes Ctrl-C on to each worker as SIGINT. Before, one that landed after a
    run's last step was dropped there, and the worker went on with the rest of its batch."""
    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    monkeypatch.setattr(workers, "_runner", InProcess(
        dg.Definitions(jobs=[_one_step_interrupted]), instance, {"loggers": {"int": {}}}))
    monkeypatch.setattr(workers, "_stopping", False)
    kept = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt) as raised:  # two ranges: (a, a) and (c, c)
            workers._run_batch("_one_step_interrupted", ["a", "c"], ["a", "b", "c"])
    finally:
        signal.signal(signal.SIGINT, kept)
    assert str(raised.value).startswith("_one_step_interrupted run ")
    assert len(instance.get_run_records()) == 1  # the second range never ran


def test_a_worker_interrupted_starts_no_further_batch(tmp_path, monkeypatch):
    """Before, a batch queued behind another (several phases' batches on the same workers)
    ran in full after Ctrl-C: the worker ignored the interrupt while idle, and the one its
    running batch took was used up."""
    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    monkeypatch.setattr(workers, "_runner", InProcess(dg.Definitions(jobs=[_one_step]),
                                                      instance))
    monkeypatch.setattr(workers, "_stopping", False)
    kept = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, workers._stop_later)  # as a started worker waits
        os.kill(os.getpid(), signal.SIGINT)  # the ingest's interrupt, between batches
        with pytest.raises(KeyboardInterrupt, match="interrupted before it began"):
            workers._run_batch("_one_step", ["a"], ["a"])
        with pytest.raises(KeyboardInterrupt):  # nor the one after
            workers._run_batch("_one_step", ["b"], ["b"])
        assert signal.getsignal(signal.SIGINT) is workers._stop_later
    finally:
        signal.signal(signal.SIGINT, kept)
    assert instance.get_run_records() == []


def test_a_full_disk_under_an_output_file_names_that_file(tmp_path):
    """`export -o /full/x.csv`: the file told to write is named first, not the data dir."""
    import argparse

    from align_track_pipeline.cli.main import _stores

    args = argparse.Namespace(data_dir=tmp_path / "data", output=tmp_path / "full" / "x.csv")
    stores = _stores(args)  # (the file stdout goes to, if any, follows the output)
    assert stores[0] == tmp_path / "full" / "x.csv" and tmp_path / "data" in stores
    told = describe(OSError(errno.ENOSPC, "No space left on device"), _stores(args))
    assert told.error == f"no space left on {tmp_path / 'full' / 'x.csv'}"


def test_a_full_disk_under_redirected_stdout_names_that_file(tmp_path):
    """`search --json > /full/rows.json`: before, a traceback, then 'no space left on' the
    data dir; the file stdout goes to is now among the places named first."""
    target = tmp_path / "rows.json"
    code = ("import sys; from align_track_pipeline.cli.main import _stdout_file; "
            "sys.stderr.write(str(_stdout_file()))")
    with target.open("w") as out:
        done = subprocess.run([sys.executable, "-c", code], stdout=out, stderr=subprocess.PIPE,
                              text=True, timeout=120, check=True)
    assert done.stderr == str(target)
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120, check=True)
    assert piped.stderr == "None"  # a pipe is no file to name
